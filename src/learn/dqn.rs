//! DQN as PuRL uses it (Gupta et al. 2020, "Learning to Prune Deep Neural Networks via
//! Reinforcement Learning"): a Q-network scores a small set of discrete actions per step, an
//! ε-greedy policy explores (ε falls linearly from 1 over the first `explore_fraction` of the
//! training steps, then stays at `eps_end`), transitions go to a replay buffer, one update per
//! environment step on a random minibatch, and the target network is copied every
//! `target_update` steps. Rewards are dense (one per step).

use super::nets::{batch, values, Mlp};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    pub lr: f64,
    pub gamma: f32,
    pub buffer: usize,
    pub batch: usize,
    /// Hard copy of the Q-network into the target network every this many steps.
    pub target_update: usize,
    pub eps_start: f64,
    pub eps_end: f64,
    /// Fraction of `total_steps` over which ε falls from `eps_start` to `eps_end`.
    pub explore_fraction: f64,
    /// Training steps planned (episodes × steps per episode), for the ε schedule.
    pub total_steps: usize,
}

impl Default for Config {
    /// PuRL's settings: buffer 400, γ 0.982, target update every 15 steps, exploration
    /// fraction 0.7.
    fn default() -> Config {
        Config {
            hidden: 128,
            lr: 1e-3,
            gamma: 0.982,
            buffer: 400,
            batch: 32,
            target_update: 15,
            eps_start: 1.0,
            eps_end: 0.05,
            explore_fraction: 0.7,
            total_steps: 1000,
        }
    }
}

#[derive(Clone, Debug)]
struct Transition {
    s: Vec<f32>,
    a: usize,
    r: f32,
    s2: Vec<f32>,
    done: bool,
}

pub struct Dqn {
    pub cfg: Config,
    actions: usize,
    q: Mlp,
    q_t: Mlp,
    opt: ModuleOptimizer,
    buffer: Vec<Transition>,
    next: usize,
    steps: usize,
    rng: rand::rngs::StdRng,
    device: Device,
}

impl Dqn {
    pub fn new(state_dim: usize, actions: usize, cfg: Config, seed: u64, device: &Device) -> Dqn {
        let q = Mlp::new(state_dim, cfg.hidden, actions, 3e-3, seed, device);
        Dqn {
            q_t: q.detached(),
            q,
            opt: AdamConfig::new().init(),
            buffer: Vec::new(),
            next: 0,
            steps: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0xd9),
            device: device.clone(),
            actions,
            cfg,
        }
    }

    /// The current ε of the schedule.
    pub fn epsilon(&self) -> f64 {
        let span = (self.cfg.explore_fraction * self.cfg.total_steps as f64).max(1.0);
        let f = (self.steps as f64 / span).min(1.0);
        self.cfg.eps_start + f * (self.cfg.eps_end - self.cfg.eps_start)
    }

    pub fn q_values(&self, s: &[f32]) -> Vec<f32> {
        values(self.q.forward(batch(&[s.to_vec()], &self.device)))
    }

    /// argmax_a Q(s, a).
    pub fn greedy(&self, s: &[f32]) -> usize {
        argmax(&self.q_values(s))
    }

    /// ε-greedy action with the given ε.
    pub fn act_with(&mut self, s: &[f32], eps: f64) -> usize {
        if self.rng.random::<f64>() < eps {
            self.rng.random_range(0..self.actions)
        } else {
            self.greedy(s)
        }
    }

    /// ε-greedy action on the schedule.
    pub fn act(&mut self, s: &[f32]) -> usize {
        let eps = self.epsilon();
        self.act_with(s, eps)
    }

    /// ε-greedy on the schedule, exploring only the actions within `spread` of `center` (a
    /// prior: the pruning search explores around the action that keeps the fair share).
    pub fn act_around(&mut self, s: &[f32], center: usize, spread: usize) -> usize {
        if self.rng.random::<f64>() < self.epsilon() {
            let lo = center.saturating_sub(spread);
            let hi = (center + spread).min(self.actions - 1);
            self.rng.random_range(lo..=hi)
        } else {
            self.greedy(s)
        }
    }

    /// Stores a transition, runs one update (once the buffer holds a minibatch) and syncs the
    /// target network on schedule.
    pub fn observe(&mut self, s: Vec<f32>, a: usize, r: f64, s2: Vec<f32>, done: bool) {
        let t = Transition {
            s,
            a,
            r: r as f32,
            s2,
            done,
        };
        if self.buffer.len() < self.cfg.buffer {
            self.buffer.push(t);
        } else {
            self.buffer[self.next] = t;
            self.next = (self.next + 1) % self.cfg.buffer;
        }
        self.steps += 1;
        if self.buffer.len() >= self.cfg.batch {
            self.update();
        }
        if self.steps.is_multiple_of(self.cfg.target_update.max(1)) {
            self.q_t = self.q.detached();
        }
    }

    fn update(&mut self) {
        let idx: Vec<usize> = (0..self.cfg.batch)
            .map(|_| self.rng.random_range(0..self.buffer.len()))
            .collect();
        let d = &self.device;
        let tr: Vec<&Transition> = idx.iter().map(|&i| &self.buffer[i]).collect();
        let s = batch(&tr.iter().map(|t| t.s.clone()).collect::<Vec<_>>(), d);
        let s2 = batch(&tr.iter().map(|t| t.s2.clone()).collect::<Vec<_>>(), d);
        // Targets on the host: y = r + γ·(1−done)·max_a' Q'(s', a').
        let q2 = values(self.q_t.forward(s2));
        let y: Vec<Vec<f32>> = tr
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let row = &q2[i * self.actions..(i + 1) * self.actions];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                vec![t.r + if t.done { 0.0 } else { self.cfg.gamma * max }]
            })
            .collect();
        let onehot: Vec<Vec<f32>> = tr
            .iter()
            .map(|t| {
                let mut v = vec![0f32; self.actions];
                v[t.a] = 1.0;
                v
            })
            .collect();
        let q_sa = (self.q.forward(s) * batch(&onehot, d)).sum_dim(1);
        let diff = q_sa - batch(&y, d);
        // Huber loss (δ = 1), as DQN uses.
        let abs = diff.clone().abs();
        let quad = abs.clone().clamp_max(1.0);
        let loss = (quad.clone().powf_scalar(2.0) * 0.5 + (abs - quad)).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &self.q);
        self.q = self.opt.step(self.cfg.lr, self.q.clone(), grads);
    }

    pub fn steps(&self) -> usize {
        self.steps
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chain with a known optimum: 4 steps, state = one-hot step index, 12 actions; each
    /// step is rewarded at once with −|a − target_t|/11 (dense, as PuRL's reward). Returns
    /// how many steps the greedy policy gets right before and after training, and ε at the end.
    pub(crate) fn chain_toy(device: &Device) -> (usize, usize, f64) {
        let targets = [2usize, 9, 5, 0];
        let episodes = 150;
        let cfg = Config {
            hidden: 64,
            total_steps: episodes * targets.len(),
            ..Default::default()
        };
        let mut agent = Dqn::new(5, 12, cfg, 7, device);
        let state = |t: usize| {
            let mut s = vec![0f32; 5];
            s[t] = 1.0;
            s
        };
        let hits = |agent: &Dqn| {
            (0..4)
                .filter(|&t| agent.greedy(&state(t)) == targets[t])
                .count()
        };
        let before = hits(&agent);
        for _ in 0..episodes {
            for (t, &target) in targets.iter().enumerate() {
                let s = state(t);
                let a = agent.act(&s);
                let r = -(a as f64 - target as f64).abs() / 11.0;
                agent.observe(s, a, r, state(t + 1), t == 3);
            }
        }
        (before, hits(&agent), agent.epsilon())
    }

    /// A chain whose transitions depend on the action, so that only bootstrapping finds the
    /// optimum: at steps 0..3, action 0 cashes out (reward 0.1, the episode ends and the next
    /// state is the start, as an auto-resetting environment reports it), action 1 moves on
    /// (reward 0; at step 3 it ends the episode with reward 1). Optimal: always move on, with
    /// Q*(t, move on) = γ^(3−t) and Q*(t, cash out) = 0.1. A myopic learner (γ = 0), a target
    /// network that is never synced, or a missing done mask (cashing out would bootstrap from
    /// the start state and pay 0.1/(1−γ) ≈ 5.5) all make the greedy policy cash out.
    /// Returns the greedy episode's undiscounted return and Q(start) per action.
    pub(crate) fn cash_out_toy(device: &Device) -> (f64, Vec<f32>) {
        let cfg = Config {
            hidden: 64,
            total_steps: 2400,
            ..Default::default()
        };
        let mut agent = Dqn::new(4, 2, cfg, 11, device);
        let state = |t: usize| {
            let mut s = vec![0f32; 4];
            s[t] = 1.0;
            s
        };
        let mut steps = 0;
        while steps < 2400 {
            for t in 0..4 {
                let s = state(t);
                let a = agent.act(&s);
                steps += 1;
                if a == 0 {
                    agent.observe(s, 0, 0.1, state(0), true);
                    break;
                }
                let last = t == 3;
                let r = if last { 1.0 } else { 0.0 };
                agent.observe(s, 1, r, state(if last { 0 } else { t + 1 }), last);
            }
        }
        let mut ret = 0.0;
        for t in 0..4 {
            if agent.greedy(&state(t)) == 0 {
                ret = 0.1;
                break;
            }
            if t == 3 {
                ret = 1.0;
            }
        }
        (ret, agent.q_values(&state(0)))
    }

    /// The greedy policy reaches the end of the chain (return 1, the optimum), and Q at the
    /// start is near its true values (γ³ for moving on, 0.1 for cashing out).
    #[test]
    fn dqn_bootstraps_through_action_dependent_transitions() {
        let (device, _) = crate::net::device();
        let (ret, q) = cash_out_toy(&device);
        let g3 = Config::default().gamma.powi(3);
        eprintln!("dqn cash-out toy: greedy return {ret}, Q(start) = {q:?} (true: [0.1, {g3}])");
        assert_eq!(
            ret, 1.0,
            "the greedy policy cashes out early: Q(start) = {q:?}"
        );
        assert!(
            (q[1] - g3).abs() < 0.15,
            "Q(start, move on) = {} vs {g3}",
            q[1]
        );
        assert!(
            (q[0] - 0.1).abs() < 0.15,
            "Q(start, cash out) = {} vs 0.1",
            q[0]
        );
    }

    /// The greedy policy must find every target of the chain.
    #[test]
    fn dqn_learns_per_step_targets_from_dense_rewards() {
        let (device, _) = crate::net::device();
        let (before, after, eps) = chain_toy(&device);
        eprintln!("dqn toy: {before}/4 -> {after}/4 greedy actions right");
        assert!(before <= 1, "untrained: {before} of 4 right");
        assert_eq!(after, 4, "greedy actions right for {after} of 4 steps");
        assert!(eps < 0.06);
    }
}
