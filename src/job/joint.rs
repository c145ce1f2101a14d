//! `--agent joint`: joint training and pruning (Ganjdanesh, Gao and Huang, CVPR 2024). Instead
//! of searching on frozen weights, the full network trains on the training samples while an
//! agent (`learn::joint`) picks per-group keep ratios every round; a plan is rewarded by its
//! sub-network's score on the validation probe, measured by masking the burn network (the
//! weights the surgery would remove set to zero: [`Pruner::removal_masks`], no surgery per
//! candidate), and the weights are aligned to the plan the agent currently selects (the
//! trainer shrinks the weights that plan removes, with a strength that ramps up). After the
//! exploring rounds the structure is held and training goes on aligned to it; then that
//! structure is cut by the real surgery from the trained weights, recovered by least squares
//! and fine-tuned for the rest of the limit like every other plan (`flow.rs`).
//!
//! A round is `round_steps` training steps (the paper's epoch; CIFAR epochs are too long for a
//! CPU budget). The phase's length is planned from a measured step like fine-tuning's (or
//! fixed by `steps`), so a seed and a step count give the same bytes.

use super::flow::Cx;
use super::masked::{eval_net, masked_logits, masks};
use super::phases::Phases;
use super::subnet::{sub_checked, try_cut};
use super::usage;
use crate::budget;
use crate::error::{Error, Result};
use crate::learn::joint::{Config, JointAgent, GROUP_FEATURES};
use crate::learn::train::{Schedule, Trainer};
use crate::net::Net;
use crate::search::datafree::Pruner;
use crate::search::env::Env;
use crate::search::rl::{Episode, FAIR_SPAN};
use burn::prelude::*;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::time::Instant;

/// `--agent joint`'s options; `Default` gives the command line's.
#[derive(Clone, Debug)]
pub struct JointOptions {
    /// The share of the time left after the preparation (less the final reserve) that joint
    /// training takes; fine-tuning the cut model gets the rest.
    pub share: f64,
    /// Training steps per round of the agent.
    pub round_steps: usize,
    /// Plans measured per round: the agent's greedy plan and noisy ones around it.
    pub candidates: usize,
    /// The alignment's strength per step at its peak (the fraction of a weight to be removed
    /// taken off it each step), reached by a linear ramp over the first `ramp` of the phase.
    pub align: f64,
    pub ramp: f64,
    /// The agent explores for this fraction of the phase; the rest trains aligned to the
    /// structure it chose last.
    pub explore: f64,
    /// The phase's rate after its warm-up: held at the peak (the default, `--joint-lr hold`),
    /// so the cut's fine-tuning makes the only decay (one schedule across the cut;
    /// docs/benchmarks.md: resnet56 at 60 minutes 0.8674 → 0.8778), or a cosine decay to 0
    /// by the cut, after which the fine-tuning warms up and decays again.
    pub schedule: Schedule,
    /// What trains between the agent's rounds: the whole network with the removed weights
    /// shrinking, or the cut network of the current structure (`subnet.rs`).
    pub training: JointTraining,
    /// A fixed length of the phase in steps (else planned from the time).
    pub steps: Option<usize>,
    /// Re-initialise the weights first (the paper's setting; off: start from the input's).
    pub from_scratch: bool,
    /// Validation images a plan is scored on.
    pub probe: usize,
}

impl Default for JointOptions {
    fn default() -> Self {
        JointOptions {
            share: 0.5,
            round_steps: 100,
            candidates: 4,
            align: 0.01,
            ramp: 0.5,
            explore: 0.75,
            schedule: Schedule::Hold,
            training: JointTraining::Sub,
            steps: None,
            from_scratch: false,
            probe: 500,
        }
    }
}

/// `--joint-train`: what trains between the agent's rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JointTraining {
    /// The whole network; the weights the current structure removes shrink each step
    /// (`--joint-train full`).
    Whole,
    /// The current structure's cut network, at its own cost, written back into the whole
    /// network after each stretch (`--joint-train sub`).
    Sub,
}

/// What the joint phase hands to the recovery: the structure, the pruner of the trained model
/// (the cut is made from its weights) and the curve of the rounds.
pub(crate) struct Joint {
    pub(crate) keep: Vec<bool>,
    pub(crate) pruner: Pruner,
    pub(crate) curve: Vec<Episode>,
}

/// The agent's features of each group, in the environment's order.
fn features(env: &Env) -> Vec<Vec<f32>> {
    let n = env.groups.len().max(1) as f32;
    let max_ch = env.groups.iter().map(|g| g.channels).max().unwrap_or(1) as f32;
    let max_macs = env.groups.iter().map(|g| g.macs).max().unwrap_or(1).max(1) as f64;
    env.groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let f = vec![
                i as f32 / n,
                g.channels as f32 / max_ch,
                (g.macs as f64 / max_macs) as f32,
                (g.kernel / 7.0) as f32,
                (g.stride / 2.0) as f32,
                f32::from(g.coupled),
            ];
            debug_assert_eq!(f.len(), GROUP_FEATURES);
            f
        })
        .collect()
}

/// Plays per-group actions (relative to the fair share, as ddpg's) through the environment:
/// the plan and the actions as applied after its budget clipping.
fn play(env: &mut Env, actions: &[f64]) -> (Vec<bool>, Vec<f64>) {
    env.reset();
    let mut applied = vec![];
    for &a in actions {
        if env.done() {
            break;
        }
        let fair = env.fair_ratio();
        let used = env.step(fair * (1.0 - FAIR_SPAN + 2.0 * FAIR_SPAN * a));
        applied
            .push(((used / fair.max(1e-9) - 1.0 + FAIR_SPAN) / (2.0 * FAIR_SPAN)).clamp(0.0, 1.0));
    }
    (env.keep(), applied)
}

/// Re-initialises the weights (`--from-scratch`): He-normal for weights of rank ≥ 2 (fan-in:
/// all but the first axis), ones for BatchNormalization scales, zeros for other vectors.
fn reinit(net: &mut Net, seed: u64) {
    use crate::ir::ops::names::BATCH_NORMALIZATION;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5c7a);
    let inner = net.device().clone().inner();
    for i in 0..net.params().len() {
        let s = net.params()[i].clone();
        let g = &net.model().graph;
        let n: usize = s.dims.iter().product();
        let scale = g.value(s.value).uses.iter().any(|u| {
            g.node(u.node).op_type == BATCH_NORMALIZATION && u.slot == crate::ir::Slot::Input(1)
        });
        let v: Vec<f32> = if s.dims.len() >= 2 {
            let fan: usize = s.dims[1..].iter().product();
            let sd = (2.0 / fan.max(1) as f64).sqrt();
            (0..n)
                .map(|_| (sd * crate::learn::nets::std_normal(&mut rng)) as f32)
                .collect()
        } else {
            vec![if scale { 1.0 } else { 0.0 }; n]
        };
        let dims = net.param(i).t.dims();
        net.set_param(i, Tensor::<6>::from_data(TensorData::new(v, dims), &inner));
    }
}

/// The joint phase: trains the full network with the agent, then returns the structure it
/// chose and the pruner of the trained model. `select` ranks channels within a group (the
/// job's channel criterion), as for the other agents.
pub(crate) fn run(
    cx: &Cx,
    jo: &JointOptions,
    select: &[f64],
    extra: &mut serde_json::Map<String, Value>,
    job: &mut Phases,
) -> Result<Joint> {
    let (p, c, o, out) = (cx.p, cx.c, cx.o, cx.out);
    let t0 = Instant::now();
    if c.val.n == 0 {
        return Err(usage(
            "--agent joint is rewarded on validation samples: give --val-size > 0",
        ));
    }
    let Some(train) = c.train.as_ref().filter(|t| t.n > 0) else {
        return Err(usage(
            "--agent joint trains the network: it needs samples beyond the validation subset",
        ));
    };
    let unsupported = crate::net::unsupported(&p.model);
    if !unsupported.is_empty() {
        return Err(usage(format!(
            "--agent joint trains the network, and these nodes cannot be trained on burn: {}",
            unsupported.join(", ")
        )));
    }
    let mut data = train.clone();
    let labels = data.y.is_some() && !o.label_free;
    if !labels {
        data.y = None;
    }
    // The probe: the first validation images, against the original's outputs and the labels.
    let probe = c
        .val
        .subset(&(0..c.val.n.min(jo.probe.max(1))).collect::<Vec<_>>());
    let (orig, k) = c.original_logits(p)?;
    let reference = &orig[..probe.n * k];
    let reward_of =
        cx.o.reward
            .unwrap_or(crate::eval::metrics::Reward::Soft)
            .with_labels(labels);
    let y = probe.y.as_deref().filter(|_| labels);

    let mut env = Env::new(p, o.target_flops, o.round_to.rounding(), 0.05);
    if let Some((cost, ms)) = cx.lat.map(|f| f.cost()) {
        env = env.with_latency(cost, ms);
    }
    env.set_select(select.to_vec());
    let teacher_needed = !labels || o.train.kd_weight.is_some_and(|w| w > 0.0);
    let teacher = match teacher_needed {
        true => Some(c.teacher(p)?),
        false => None,
    };
    let deadline = job.finetune_deadline();
    let phase_deadline = match deadline.left() {
        Some(l) => deadline.within(l.mul_f64(jo.share.clamp(0.0, 1.0))),
        None => deadline.clone(),
    };
    let max = crate::learn::train::steps_for(budget::MAX_EPOCHS, data.n, o.train.batch_size);
    let mut to = o.train.options(
        jo.steps.unwrap_or(max),
        o.seed,
        teacher.is_some(),
        labels,
        true,
    )?;
    // After the options: they select the training device (`--train-device`), which the
    // network and the agent use.
    let (device, line) = crate::net::device();
    let mut net = Net::new(&p.model, &device)?;
    if jo.from_scratch {
        reinit(&mut net, o.seed);
    }
    let mut trainer = Trainer::new(&net, to.clone());
    trainer.schedule = jo.schedule;
    let round_steps = jo.round_steps.max(1);
    let candidates = jo.candidates.max(1);
    // `--joint-train sub`: the cut network of the fair plan, checked against the masked whole
    // network; its step (and the cut before each stretch) is what the plan is made from.
    let checked = match jo.training {
        JointTraining::Sub => {
            let fair = vec![0.5; env.groups.len()];
            let (keep, _) = play(&mut env, &fair);
            sub_checked(p, &net, &keep, &device, &probe, out, job.clock.as_ref())?
        }
        JointTraining::Whole => None,
    };
    // Whether the cut network trains (until a plan's cut cannot be mapped back).
    let mut sub = checked.is_some();
    if jo.steps.is_none() {
        // Planned: a step and a plan's evaluation measured, the rounds' evaluations counted in
        // (and under `sub` a cut per round, timed without the first cut's check).
        let per = match &checked {
            Some((s, cut)) => {
                let full = s.enter(&mut trainer);
                let per = trainer.time_step(&s.net, teacher, &data, 3);
                trainer.swap_state(full);
                per? + cut.div_f64(round_steps.max(1) as f64)
            }
            None => trainer.time_step(&net, teacher, &data, 3)?,
        };
        let te = job.clock.now();
        let mut ev = eval_net(&net)?;
        let m0 = masks(p, &ev, &env.keep())?;
        masked_logits(&mut ev, &m0, &probe)?;
        let eval = job.clock.now().saturating_sub(te);
        let per_step = per + eval.mul_f64(candidates as f64 / round_steps as f64);
        let left = phase_deadline.left().unwrap_or_default();
        let steps = budget::steps_within(left, per_step, max);
        let frac = to.warmup as f64 / to.steps.max(1) as f64;
        to.steps = steps;
        to.warmup = (frac * steps as f64).round() as usize;
        trainer.o = to.clone();
        trainer.max_steps = Some(steps);
        trainer.deadline = Some(phase_deadline.clone());
        out.line(&format!(
            "joint plan: {steps} step(s) of {} at {:.0} ms/step and {:.0} ms per plan measured, {:.0}s until the phase's deadline",
            to.batch,
            per.as_secs_f64() * 1e3,
            eval.as_secs_f64() * 1e3,
            left.as_secs_f64()
        ));
    } else {
        trainer.deadline = Some(deadline.clone());
    }
    // The checked cut network served the plan; each stretch cuts its own.
    drop(checked);
    out.line(&format!(
        "joint training and pruning: {} groups, a round every {round_steps} steps with {candidates} plans on {} validation images (reward {}), alignment up to {} per step over the first {:.0}% of the phase, exploring for {:.0}%{}; {line}",
        env.steps(),
        probe.n,
        reward_of.name(),
        jo.align,
        jo.ramp * 100.0,
        jo.explore * 100.0,
        if jo.from_scratch { ", from re-initialised weights" } else { "" }
    ));

    let mut agent = JointAgent::new(features(&env), Config::default(), o.seed, &device);
    let mut current: Option<(f64, Vec<bool>, Vec<f64>)> = None;
    let mut rounds: Vec<Value> = vec![];
    let mut curve: Vec<Episode> = vec![];
    let mut best_all = f64::NEG_INFINITY;
    let mut round = 0usize;
    let mut steps_between = 0usize;
    let mut interrupted = false;
    // `sub`: the time spent cutting.
    let mut cutting = std::time::Duration::ZERO;
    loop {
        let frac = trainer.step as f64 / trainer.o.steps.max(1) as f64;
        if round == 0 || (frac < jo.explore && !interrupted && !job.stopped()) {
            // A round of the agent on the current weights.
            let mut best: Option<(f64, Vec<bool>, Vec<f64>)> = None;
            let mut ev = eval_net(&net)?;
            for a in agent.propose(round, candidates) {
                let (keep, applied) = play(&mut env, &a);
                let fits = env.fits(&keep);
                let reward = if fits {
                    let m = masks(p, &ev, &keep)?;
                    let lo = masked_logits(&mut ev, &m, &probe)?;
                    reward_of.score(reference, &lo, *k, y)
                } else {
                    0.0
                };
                agent.observe(round, &applied, reward);
                if fits && best.as_ref().is_none_or(|b| reward > b.0) {
                    best = Some((reward, keep, env.step_ratios()));
                }
            }
            let new_error = agent.reconstruction_error(Some(round));
            let (_, error) = agent.update(round);
            if let Some(b) = best {
                best_all = best_all.max(b.0);
                let macs = p.macs(&b.1) as f64 / p.base_macs.max(1) as f64;
                out.line(&format!(
                    "joint round {} at step {}/{}: best plan {:.4} ({:.1}% MACs), reward model error {:.5} on this round before its update, {:.5} on all after",
                    round + 1,
                    trainer.step,
                    trainer.o.steps,
                    b.0,
                    macs * 100.0,
                    new_error,
                    error
                ));
                rounds.push(json!({
                    "round": round + 1, "step": trainer.step, "reward": b.0,
                    "ratios": b.2, "macs_ratio": macs,
                    "reconstruction_error_new": new_error, "reconstruction_error": error,
                    "align_strength": trainer.align_strength,
                }));
                curve.push(Episode {
                    episode: round + 1,
                    reward: b.0,
                    best: best_all,
                    macs_ratio: macs,
                    seconds: t0.elapsed().as_secs_f64(),
                });
                current = Some(b);
            }
            round += 1;
        }
        let Some((_, keep, _)) = &current else {
            return Err(Error::Invalid(
                "--agent joint: no plan met the budget in the first round".into(),
            ));
        };
        if interrupted
            || trainer.step >= trainer.o.steps
            || job.stopped()
            || phase_deadline.passed()
        {
            break;
        }
        // Train to the next round, aligned to the current structure: the whole network, or
        // the structure's cut network with the optimiser's state cut alike.
        let align = masks(p, &net, keep)?;
        let mut stretch = None;
        if sub {
            // A plan whose cut cannot be mapped back (checked on the fair plan's only):
            // the whole network trains from here on.
            match try_cut(p, &net, keep, &device, out, job.clock.as_ref())? {
                Some((s, took)) => {
                    cutting += took;
                    let full = s.enter(&mut trainer);
                    stretch = Some((s, full));
                }
                None => sub = false,
            }
        }
        trainer.align = match stretch {
            Some(_) => vec![],
            None => align.clone(),
        };
        trainer.align_strength = jo.align * (frac / jo.ramp.max(1e-9)).min(1.0);
        trainer.pause_at = Some(trainer.step + round_steps);
        let before = trainer.step;
        let steps = trainer.o.steps;
        // About 20 progress lines over the phase where the terminal does not redraw.
        let every = (steps / 20).max(10);
        let rep = trainer.run(
            match &mut stretch {
                Some((s, _)) => &mut s.net,
                None => &mut net,
            },
            teacher,
            &data,
            job.stop,
            &mut |s| {
                if s.step.is_multiple_of(every) || s.step == s.steps {
                    out.bar(
                        s.step,
                        s.steps,
                        &format!(
                            "joint step {}/{} loss {:.4} lr {:.2e} {:.0} img/s ETA {:.0}s",
                            s.step, s.steps, s.loss, s.lr, s.images_per_s, s.eta_s
                        ),
                    )
                }
            },
            &mut |_, _| Ok(()),
        )?;
        if let Some((s, full)) = stretch {
            s.leave(&mut trainer, full, &mut net);
            // The alignment of the steps run, at once: (1 − s)^steps on the removed weights.
            let done = (trainer.step - before) as i32;
            let shrink = 1.0 - (1.0 - trainer.align_strength).powi(done);
            for (i, m) in align {
                let w = net.param(i).t.inner();
                net.set_param(i, w.clone() - w * m * shrink);
            }
        }
        steps_between += trainer.step - before;
        if rep.interrupted || rep.deadline_hit {
            interrupted = rep.interrupted;
        }
        if trainer.step == before && trainer.o.steps == steps {
            break;
        }
    }
    out.end_bar();
    interrupted |= job.stopped();
    let (reward, keep, ratios) = current.expect("checked in the loop");
    // The final structure's removed weights: how far the alignment took them.
    let removed_norm = {
        let (mut r, mut all) = (0.0f64, 0.0f64);
        for (i, m) in masks(p, &net, &keep)? {
            let w = net.param(i).t.inner();
            r += (w.clone() * m).powf_scalar(2.0).sum().into_scalar::<f32>() as f64;
            all += w.powf_scalar(2.0).sum().into_scalar::<f32>() as f64;
        }
        (r / all.max(1e-30)).sqrt()
    };
    let trained = net.write_back();
    let pruner = Pruner::new(&trained, &p.shapes)?;
    if pruner.free_atoms().iter().map(|a| a.len()).sum::<usize>()
        != p.free_atoms().iter().map(|a| a.len()).sum::<usize>()
        || pruner.macs(&keep) != p.macs(&keep)
    {
        return Err(Error::Invalid(
            "--agent joint: the trained model's channel groups differ from the input's".into(),
        ));
    }
    out.line(&format!(
        "joint: {} round(s), {steps_between} training step(s) in {:.1}s ({:.2}s of it cutting); the structure of round {} ({:.4}, {:.1}% MACs) is cut; its removed weights hold {:.2e} of the consumers' weight norm",
        round,
        t0.elapsed().as_secs_f64(),
        cutting.as_secs_f64(),
        rounds.len(),
        reward,
        100.0 * p.macs(&keep) as f64 / p.base_macs.max(1) as f64,
        removed_norm
    ));
    extra.insert(
        "joint".into(),
        json!({
            "rounds": rounds,
            "steps": steps_between,
            "planned_steps": trainer.o.steps,
            "round_steps": round_steps,
            "candidates": candidates,
            "align": jo.align,
            "ramp": jo.ramp,
            "explore": jo.explore,
            "decay": jo.schedule == Schedule::Cosine,
            "train": if sub { "sub" } else { "full" },
            "share": jo.share,
            "from_scratch": jo.from_scratch,
            "reward": reward,
            "ratios": ratios,
            "removed_weight_norm": removed_norm,
            "reconstruction_error": agent.reconstruction_error(None),
            "seconds": t0.elapsed().as_secs_f64(),
            "cut_seconds": cutting.as_secs_f64(),
            "interrupted": interrupted,
        }),
    );
    job.end(
        "joint",
        Value::Null,
        json!({"plan": format!("joint round {}", rounds.len()), "reward": reward}),
    );
    if job.stopped() {
        job.interrupted = Some("joint");
    }
    Ok(Joint {
        keep,
        pruner,
        curve,
    })
}
