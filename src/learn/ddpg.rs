//! DDPG as AMC uses it (He et al. 2018, "AMC: AutoML for Model Compression"): an actor maps the
//! layer embedding to a keep ratio, a critic scores (state, ratio); exploration by truncated
//! normal noise around the actor's output with σ decaying per episode after random warm-up
//! episodes; a replay buffer; the episode's reward is given to every step of the episode,
//! minus a moving-average baseline; soft target updates.
//!
//! Departures from AMC's defaults, measured on resnet20 at 50% MACs (150 episodes): no
//! bootstrapping (γ = 0: every step's target is the episode's advantage, which the AMC reward
//! already is) and actor learning rate 1e-3: search best 0.62 vs 0.46 with γ = 1, lr 1e-4.

use super::nets::{batch, values, Mlp};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub tau: f32,
    pub gamma: f32,
    pub buffer: usize,
    pub batch: usize,
    /// Episodes with uniformly random actions before the actor is used.
    pub warmup: usize,
    /// Initial σ of the exploration noise and its decay per episode after warm-up.
    pub sigma: f64,
    pub sigma_decay: f64,
    /// Moving-average baseline: b ← (1−α)·b + α·R.
    pub baseline_alpha: f64,
    /// Action range.
    pub lo: f64,
    pub hi: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hidden: 300,
            actor_lr: 1e-3,
            critic_lr: 1e-3,
            tau: 0.01,
            gamma: 0.0,
            buffer: 2000,
            batch: 64,
            warmup: 10,
            sigma: 0.5,
            sigma_decay: 0.95,
            baseline_alpha: 0.05,
            lo: 0.05,
            hi: 1.0,
        }
    }
}

#[derive(Clone, Debug)]
struct Transition {
    s: Vec<f32>,
    a: f32,
    r: f32,
    s2: Vec<f32>,
    done: bool,
}

pub struct Ddpg {
    pub cfg: Config,
    actor: Mlp,
    critic: Mlp,
    actor_t: Mlp,
    critic_t: Mlp,
    actor_opt: ModuleOptimizer,
    critic_opt: ModuleOptimizer,
    buffer: Vec<Transition>,
    next: usize,
    baseline: Option<f64>,
    episode: usize,
    rng: rand::rngs::StdRng,
    device: Device,
    episode_steps: Vec<(Vec<f32>, f32)>,
}

impl Ddpg {
    pub fn new(state_dim: usize, cfg: Config, seed: u64, device: &Device) -> Ddpg {
        let actor = Mlp::new(state_dim, cfg.hidden, 1, 3e-3, seed, device);
        let critic = Mlp::new(state_dim + 1, cfg.hidden, 1, 3e-3, seed ^ 0x5eed, device);
        Ddpg {
            actor_t: actor.detached(),
            critic_t: critic.detached(),
            actor,
            critic,
            actor_opt: AdamConfig::new().init(),
            critic_opt: AdamConfig::new().init(),
            buffer: Vec::new(),
            next: 0,
            baseline: None,
            episode: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0xacd),
            device: device.clone(),
            cfg,
            episode_steps: Vec::new(),
        }
    }

    /// Deterministic action of the actor (in [lo, hi]).
    pub fn greedy(&self, s: &[f32]) -> f64 {
        let out = values(sigmoid(
            self.actor.forward(batch(&[s.to_vec()], &self.device)),
        ));
        let a = out.first().copied().unwrap_or(0.5) as f64;
        self.cfg.lo + (self.cfg.hi - self.cfg.lo) * a
    }

    /// Exploring action: random during warm-up, then the actor's action plus truncated normal
    /// noise (σ decayed per episode), within [lo, hi].
    pub fn act(&mut self, s: &[f32]) -> f64 {
        let (lo, hi) = (self.cfg.lo, self.cfg.hi);
        if self.episode < self.cfg.warmup {
            return self.rng.random_range(lo..=hi);
        }
        let mu = self.greedy(s);
        let sigma = self.cfg.sigma
            * self
                .cfg
                .sigma_decay
                .powi((self.episode - self.cfg.warmup) as i32);
        // Truncated normal on [lo, hi] by rejection (Box–Muller), as AMC samples it.
        for _ in 0..100 {
            let z = super::nets::std_normal(&mut self.rng);
            let a = mu + sigma * z;
            if (lo..=hi).contains(&a) {
                return a;
            }
        }
        mu.clamp(lo, hi)
    }

    /// Records a step (state and the action actually applied, in [lo, hi]).
    pub fn record(&mut self, s: Vec<f32>, applied: f64) {
        let (lo, hi) = (self.cfg.lo, self.cfg.hi);
        let a = ((applied - lo) / (hi - lo)).clamp(0.0, 1.0) as f32;
        self.episode_steps.push((s, a));
    }

    /// Ends the episode with its reward: stores the transitions (reward minus the moving
    /// baseline for every step) and, after warm-up, runs one update per step.
    pub fn end_episode(&mut self, reward: f64) {
        let b = *self.baseline.get_or_insert(reward);
        let adv = (reward - b) as f32;
        self.baseline =
            Some((1.0 - self.cfg.baseline_alpha) * b + self.cfg.baseline_alpha * reward);
        let steps = std::mem::take(&mut self.episode_steps);
        let n = steps.len();
        for i in 0..n {
            let s2 = if i + 1 < n {
                steps[i + 1].0.clone()
            } else {
                steps[i].0.clone()
            };
            let t = Transition {
                s: steps[i].0.clone(),
                a: steps[i].1,
                r: adv,
                s2,
                done: i + 1 == n,
            };
            if self.buffer.len() < self.cfg.buffer {
                self.buffer.push(t);
            } else {
                self.buffer[self.next] = t;
                self.next = (self.next + 1) % self.cfg.buffer;
            }
        }
        self.episode += 1;
        if self.episode > self.cfg.warmup {
            for _ in 0..n {
                self.update();
            }
        }
    }

    fn update(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let idx: Vec<usize> = (0..self.cfg.batch)
            .map(|_| self.rng.random_range(0..self.buffer.len()))
            .collect();
        let pick = |f: &dyn Fn(&Transition) -> Vec<f32>| -> Vec<Vec<f32>> {
            idx.iter().map(|&i| f(&self.buffer[i])).collect()
        };
        let d = &self.device;
        let s = batch(&pick(&|t| t.s.clone()), d);
        let a = batch(&pick(&|t| vec![t.a]), d);
        let r = batch(&pick(&|t| vec![t.r]), d);
        let s2 = batch(&pick(&|t| t.s2.clone()), d);
        let not_done = batch(&pick(&|t| vec![if t.done { 0.0 } else { 1.0 }]), d);
        // Critic: y = r + γ·(1−done)·Q'(s', μ'(s')).
        let a2 = sigmoid(self.actor_t.forward(s2.clone())).detach();
        let q2 = self.critic_t.forward(Tensor::cat(vec![s2, a2], 1)).detach();
        let y = (r + q2 * not_done * self.cfg.gamma).detach();
        let q = self.critic.forward(Tensor::cat(vec![s.clone(), a], 1));
        let critic_loss = (q - y).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(critic_loss.backward(), &self.critic);
        self.critic = self
            .critic_opt
            .step(self.cfg.critic_lr, self.critic.clone(), grads);
        // Actor: maximise Q(s, μ(s)).
        let mu = sigmoid(self.actor.forward(s.clone()));
        let actor_loss = -self.critic.forward(Tensor::cat(vec![s, mu], 1)).mean();
        let grads = GradientsParams::from_grads(actor_loss.backward(), &self.actor);
        self.actor = self
            .actor_opt
            .step(self.cfg.actor_lr, self.actor.clone(), grads);
        self.actor_t = self.actor.soft_update(&self.actor_t, self.cfg.tau);
        self.critic_t = self.critic.soft_update(&self.critic_t, self.cfg.tau);
    }

    pub fn episodes(&self) -> usize {
        self.episode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy with a known optimum: 4 steps, state = one-hot step index; the episode reward is
    /// 1 − mean (a_t − target_t)², given at the end (as in AMC). The greedy policy must learn
    /// the targets (mean absolute error).
    #[test]
    fn ddpg_learns_per_step_targets_from_an_episode_reward() {
        let targets = [0.2, 0.8, 0.5, 0.35];
        let (device, _) = crate::net::device();
        let cfg = Config {
            hidden: 64,
            actor_lr: 1e-3,
            critic_lr: 1e-3,
            warmup: 20,
            sigma: 0.3,
            sigma_decay: 0.99,
            ..Default::default()
        };
        let mut agent = Ddpg::new(4, cfg, 1, &device);
        let state = |t: usize| {
            let mut s = vec![0f32; 4];
            s[t] = 1.0;
            s
        };
        let error = |agent: &Ddpg| {
            (0..4)
                .map(|t| (agent.greedy(&state(t)) - targets[t]).abs())
                .sum::<f64>()
                / 4.0
        };
        let before = error(&agent);
        for _ in 0..300 {
            let mut sq = 0.0;
            for (t, target) in targets.iter().enumerate() {
                let a = agent.act(&state(t));
                agent.record(state(t), a);
                sq += (a - target) * (a - target);
            }
            agent.end_episode(1.0 - sq / 4.0);
        }
        let after = error(&agent);
        // Measured (deterministic seeds): 0.200 → 0.052 after 300 episodes (mean absolute error
        // of the greedy ratios); it wanders between 0.02 and 0.08 with more episodes.
        assert!(
            after < 0.08,
            "greedy actions off by {after} on average (before: {before})"
        );
        assert!(
            before > 0.15,
            "the untrained actor should be far off ({before})"
        );
    }
}
