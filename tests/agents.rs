//! The search agents on a synthetic environment whose better plan is known to be non-uniform:
//! the real channel groups and MAC budget of a chain of eight convolutions, scored by a formula
//! instead of surgery and evaluation. The first half of the groups (in the agents' order) are
//! nearly free to prune, the second half costly, so the best plans prune the early groups hard
//! and keep more of the late ones; the uniform plan (every group at its fair share) is beaten
//! by a hand-made skewed plan, and every agent must beat the uniform plan too.

use onnx_prune::search::datafree::Pruner;
use onnx_prune::search::env::{Env, Measure};
use onnx_prune::search::rl::{self, Agent};
use std::collections::HashMap;

/// Score = 1 − 0.2 · Σ_g w_g (1 − k_g)² / Σ_g w_g, with k_g the kept fraction of group g's free
/// channels and w_g = 0.05 for the first half of the groups, 1 for the rest.
struct Synthetic {
    groups: Vec<(Vec<usize>, f64)>,
    evaluations: usize,
}

impl Synthetic {
    fn new(env: &Env) -> Synthetic {
        let n = env.groups.len();
        let groups = env
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.free.clone(), if i < n / 2 { 0.05 } else { 1.0 }))
            .collect();
        Synthetic {
            groups,
            evaluations: 0,
        }
    }

    fn score(&self, keep: &[bool]) -> f64 {
        let (mut loss, mut total) = (0.0, 0.0);
        for (free, w) in &self.groups {
            let k = free.iter().filter(|&&a| keep[a]).count() as f64 / free.len().max(1) as f64;
            loss += w * (1.0 - k) * (1.0 - k);
            total += w;
        }
        1.0 - 0.2 * loss / total
    }
}

impl Measure for Synthetic {
    fn measure_on(&mut self, keep: &[bool], _n: usize) -> onnx_prune::Result<f64> {
        self.evaluations += 1;
        Ok(self.score(keep))
    }
    fn original_on(&self, _n: usize) -> f64 {
        1.0
    }
    fn original(&self) -> f64 {
        1.0
    }
    fn val_len(&self) -> usize {
        500
    }
    fn evaluations(&self) -> usize {
        self.evaluations
    }
}

/// Plays `ratio(step, env)` at every step; returns the plan.
fn play(env: &mut Env, ratio: &dyn Fn(usize, &Env) -> f64) -> Vec<bool> {
    env.reset();
    while !env.done() {
        let r = ratio(env.step_index(), env);
        env.step(r);
    }
    env.keep()
}

#[test]
fn every_agent_beats_the_uniform_plan_where_a_skewed_plan_is_better() {
    let model = chain(8);
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let mut env = Env::new(&p, 0.5, 1, 0.05);
    let steps = env.steps();
    assert_eq!(steps, 8);
    let oracle = Synthetic::new(&env);
    let uniform_plan = play(&mut env, &|_, e| e.fair_ratio());
    let uniform = oracle.score(&uniform_plan);
    // A skewed plan: the cheap half at the minimum, the costly half at what the budget leaves.
    let skewed_plan = play(&mut env, &|t, e| {
        if t < steps / 2 {
            0.05
        } else {
            e.max_ratio()
        }
    });
    let skewed = oracle.score(&skewed_plan);
    assert!(p.macs(&uniform_plan) <= env.target && p.macs(&skewed_plan) <= env.target);
    let pct = |k: &[bool]| 100.0 * p.macs(k) as f64 / p.base_macs as f64;
    println!(
        "{steps} groups: uniform plan {uniform:.4} at {:.1}% MACs, skewed plan {skewed:.4} at {:.1}%",
        pct(&uniform_plan),
        pct(&skewed_plan)
    );
    assert!(
        skewed > uniform + 0.01,
        "the environment must favour a non-uniform plan ({skewed} vs {uniform})"
    );
    for agent in [Agent::Ddpg, Agent::Dqn, Agent::Reinforce] {
        let mut o = Synthetic::new(&env);
        let opts = rl::Options {
            episodes: agent.default_episodes(steps),
            seed: 1,
            ..Default::default()
        };
        let out = rl::search(agent, &mut env, &mut o, &opts, &mut |_| {}).unwrap();
        assert!(p.macs(&out.keep) <= env.target, "{}", agent.name());
        let gain = (out.best - uniform) / (skewed - uniform);
        println!(
            "{}: best {:.4} at {:.1}% MACs after {} evaluations ({:.0}% of the skewed plan's gain over uniform); ratios {:?}",
            agent.name(),
            out.best,
            100.0 * p.macs(&out.keep) as f64 / p.base_macs as f64,
            out.evaluations,
            100.0 * gain,
            out.ratios
                .iter()
                .map(|r| (r * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        assert_eq!(out.best, oracle.score(&out.keep), "{}", agent.name());
        assert!(
            gain > 0.25,
            "{}: best {} is not clearly better than the uniform plan's {uniform}",
            agent.name(),
            out.best
        );
    }
}

/// Huang et al.'s reward ψ·φ, pinned: ψ = (b − drop)/b, φ = ln(c/kept).
#[test]
fn reinforce_reward_is_psi_times_phi() {
    let r = rl::reinforce_reward(0.02, 0.01, 64, 16);
    assert!((r - 0.5 * 4f64.ln()).abs() < 1e-12, "{r}");
    // No drop: ψ = 1; past the bound: negative; keeping everything: φ = 0.
    assert!((rl::reinforce_reward(0.02, 0.0, 32, 8) - 4f64.ln()).abs() < 1e-12);
    assert!(rl::reinforce_reward(0.02, 0.03, 32, 8) < 0.0);
    assert_eq!(rl::reinforce_reward(0.02, 0.01, 32, 32), 0.0);
    // At equal drop, fewer kept filters earn more.
    assert!(rl::reinforce_reward(0.02, 0.01, 32, 4) > rl::reinforce_reward(0.02, 0.01, 32, 8));
}

/// `--dqn-spread`: exploring actions stay within the spread of the fair-share action and cover
/// it; the demonstration episode plays the fair-share action; a spread of 12 or more is PuRL's
/// uniform ε-greedy over every α.
#[test]
fn dqn_spread_bounds_exploration_around_the_fair_share() {
    use onnx_prune::learn::dqn::{Config, Dqn};
    let (device, _) = onnx_prune::net::device();
    let s = vec![0f32; onnx_prune::search::env::STATE_DIM];
    let cfg = Config {
        total_steps: 1_000_000,
        ..Default::default()
    };
    let n = rl::ALPHAS.len();
    // ε is 1 at the start of the schedule, so every action below is exploration.
    let mut ag = Dqn::new(s.len(), n, cfg, 3, &device);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        seen.insert(rl::dqn_explore(&mut ag, &s, 6, 2, false));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        seen.insert(rl::dqn_explore(&mut ag, &s, 1, 3, false));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(rl::dqn_explore(&mut ag, &s, 9, 3, true), 9);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        seen.insert(rl::dqn_explore(&mut ag, &s, 6, n, true));
    }
    assert_eq!(seen.len(), n, "spread {n}: uniform over all actions");
}

/// A plain chain of `n` prunable 3×3 convolutions (3→16, then 16→16) with ReLUs, and a last
/// 16→10 convolution whose output is the graph's (not prunable): `n` groups of 16 channels.
fn chain(n: usize) -> onnx_prune::ir::Model {
    let mut b = onnx_prune::onnx::builder::ModelBuilder::new(17, 5);
    let mut x = b.input("x", &[1, 3, 16, 16]);
    for i in 0..n {
        let c = b.conv(&x, if i == 0 { 3 } else { 16 }, 16, 3, 1, 1);
        x = b.op("Relu", &[&c], vec![]);
    }
    b.conv(&x, 16, 10, 3, 1, 1);
    b.rename_last_output("y");
    b.output("y", &[1, 10, 16, 16]);
    onnx_prune::onnx::decode_model(b.to_bytes().into(), None).unwrap()
}
