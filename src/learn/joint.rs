//! The networks of `--agent joint` (Ganjdanesh, Gao and Huang, CVPR 2024, "Jointly Training
//! and Pruning CNNs via Learnable Agent Guidance and Alignment"): the pruning agent and the
//! model of its changing environment. The weights train between the agent's rounds, so the
//! reward of a plan drifts; the agent sees the drift through a learnable embedding per round
//! passed through a GRU, whose state a decoder must turn (with the plan) into the reward that
//! was observed. The actor maps that state and a group's features to the group's action and is
//! trained to maximise the decoder's prediction (the decoder is its critic).
//!
//! Actions are per group, in [0, 1], relative to the group's fair share of the remaining
//! budget as for ddpg (`search::rl::FAIR_SPAN`); the driver that plays them through the
//! environment, evaluates the plans and aligns the weights is `job/joint.rs`.

use super::nets::{batch, dense, values, Mlp};
use burn::module::Param;
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use rand::{Rng, SeedableRng};

/// Rounds with an embedding of their own (later rounds share the last).
pub const MAX_ROUNDS: usize = 1024;
/// Features per group the actor reads besides the environment state.
pub const GROUP_FEATURES: usize = 6;

#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    /// Size of a round's embedding and of the GRU's state.
    pub embed: usize,
    pub state: usize,
    pub model_lr: f64,
    pub actor_lr: f64,
    /// Optimiser steps of the environment model and of the actor per round.
    pub model_updates: usize,
    pub actor_updates: usize,
    /// Exploration noise of the candidates after the greedy one, decayed per round.
    pub sigma: f64,
    pub sigma_decay: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hidden: 64,
            embed: 8,
            state: 16,
            model_lr: 3e-3,
            actor_lr: 1e-3,
            model_updates: 20,
            actor_updates: 10,
            sigma: 0.25,
            sigma_decay: 0.97,
        }
    }
}

/// A GRU cell (Cho et al. 2014) from seeded dense layers.
#[derive(Module, Debug)]
struct Gru {
    z: Linear,
    r: Linear,
    nx: Linear,
    nh: Linear,
}

impl Gru {
    fn new(inp: usize, hid: usize, rng: &mut rand::rngs::StdRng, device: &Device) -> Gru {
        let s = 1.0 / (hid as f32).sqrt();
        Gru {
            z: dense(inp + hid, hid, s, rng, device),
            r: dense(inp + hid, hid, s, rng, device),
            nx: dense(inp, hid, s, rng, device),
            nh: dense(hid, hid, s, rng, device),
        }
    }

    /// h' = (1 − z)·n + z·h, z = σ(W_z[x, h]), r = σ(W_r[x, h]), n = tanh(W_x x + r·(W_h h)).
    fn step(&self, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let xh = Tensor::cat(vec![x.clone(), h.clone()], 1);
        let z = sigmoid(self.z.forward(xh.clone()));
        let r = sigmoid(self.r.forward(xh));
        let n = tanh(self.nx.forward(x) + r * self.nh.forward(h.clone()));
        (z.clone().neg() + 1.0) * n + z * h
    }
}

/// The environment model: an embedding per round, the GRU over them, and the decoder from
/// (GRU state, plan's actions) to the reward.
#[derive(Module, Debug)]
pub struct EnvModel {
    embeddings: Param<Tensor<2>>,
    gru: Gru,
    decoder: Mlp,
}

impl EnvModel {
    fn new(cfg: &Config, groups: usize, seed: u64, device: &Device) -> EnvModel {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let e: Vec<f32> = (0..MAX_ROUNDS * cfg.embed)
            .map(|_| rng.random_range(-0.1..0.1))
            .collect();
        EnvModel {
            embeddings: Param::from_data(TensorData::new(e, [MAX_ROUNDS, cfg.embed]), device),
            gru: Gru::new(cfg.embed, cfg.state, &mut rng, device),
            decoder: Mlp::new(
                cfg.state + groups,
                cfg.hidden,
                1,
                3e-3,
                seed ^ 0xdec,
                device,
            ),
        }
    }

    /// The GRU's state after rounds 0..=`last`, one row per round: `[last + 1, state]`.
    fn states(&self, last: usize) -> Tensor<2> {
        let emb = self.embeddings.val();
        let hid = self.gru.nh.weight.val().dims()[0];
        let mut h = Tensor::<2>::zeros([1, hid], &emb.device());
        let mut rows = vec![];
        for t in 0..=last {
            let r = t.min(MAX_ROUNDS - 1);
            h = self.gru.step(emb.clone().slice(r..r + 1), h);
            rows.push(h.clone());
        }
        Tensor::cat(rows, 0)
    }

    /// Predicted rewards of plans `actions` (`[m, groups]`) in environments `states` (`[m, state]`).
    fn predict(&self, states: Tensor<2>, actions: Tensor<2>) -> Tensor<2> {
        self.decoder.forward(Tensor::cat(vec![states, actions], 1))
    }
}

/// One observed plan: its round, the actions applied and the reward measured.
#[derive(Clone, Debug)]
struct Seen {
    round: usize,
    actions: Vec<f32>,
    reward: f32,
}

/// The joint agent: actor, environment model, their optimisers and what it has seen.
pub struct JointAgent {
    pub cfg: Config,
    model: EnvModel,
    actor: Mlp,
    model_opt: ModuleOptimizer,
    actor_opt: ModuleOptimizer,
    /// Per group (in the environment's order): its features.
    features: Vec<Vec<f32>>,
    seen: Vec<Seen>,
    rng: rand::rngs::StdRng,
    device: Device,
}

impl JointAgent {
    /// An agent for groups with these features ([`GROUP_FEATURES`] each).
    pub fn new(features: Vec<Vec<f32>>, cfg: Config, seed: u64, device: &Device) -> JointAgent {
        let g = features.len();
        JointAgent {
            model: EnvModel::new(&cfg, g, seed ^ 0xe1, device),
            actor: Mlp::new(
                cfg.state + GROUP_FEATURES,
                cfg.hidden,
                1,
                3e-3,
                seed ^ 0xac7,
                device,
            ),
            model_opt: AdamConfig::new().init(),
            actor_opt: AdamConfig::new().init(),
            features,
            seen: vec![],
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x101),
            device: device.clone(),
            cfg,
        }
    }

    /// The actor's actions for the environment state `state` (`[1, state]`, on `device`),
    /// as `[1, groups]`.
    fn actions_at(&self, actor: &Mlp, state: Tensor<2>, device: &Device) -> Tensor<2> {
        let g = self.features.len();
        let rows = batch(&self.features, device);
        let s = state.repeat_dim(0, g);
        let a = sigmoid(actor.forward(Tensor::cat(vec![s, rows], 1)));
        a.reshape([1, g])
    }

    /// The networks without autodiff, and their device: what every pass that is not
    /// differentiated runs on (a pass on the autodiff device that is never differentiated
    /// leaves its graph for every later backward pass to sweep).
    fn plain(&self) -> (EnvModel, Mlp, Device) {
        (
            self.model.valid(),
            self.actor.valid(),
            self.device.clone().inner(),
        )
    }

    /// The GRU's state in `round`, without autodiff.
    fn state_at(&self, model: &EnvModel, round: usize) -> Tensor<2> {
        model.states(round).slice(round..round + 1)
    }

    /// The greedy actions of `round`.
    pub fn greedy(&self, round: usize) -> Vec<f64> {
        let (model, actor, device) = self.plain();
        let h = self.state_at(&model, round);
        values(self.actions_at(&actor, h, &device))
            .into_iter()
            .map(|v| v as f64)
            .collect()
    }

    /// `n` plans to try in `round`: the greedy one first, then the greedy one with Gaussian
    /// noise (σ decayed per round), each action within [0, 1].
    pub fn propose(&mut self, round: usize, n: usize) -> Vec<Vec<f64>> {
        let g = self.greedy(round);
        let sigma = self.cfg.sigma * self.cfg.sigma_decay.powi(round as i32);
        let mut out = vec![g.clone()];
        for _ in 1..n {
            out.push(
                g.iter()
                    .map(|&m| {
                        let z = super::nets::std_normal(&mut self.rng);
                        (m + sigma * z).clamp(0.0, 1.0)
                    })
                    .collect(),
            );
        }
        out
    }

    /// Records the actions applied in `round` (after the environment's clipping) and the
    /// reward they measured.
    pub fn observe(&mut self, round: usize, applied: &[f64], reward: f64) {
        self.seen.push(Seen {
            round,
            actions: applied.iter().map(|&a| a as f32).collect(),
            reward: reward as f32,
        });
    }

    /// Mean squared error of the decoder on every observation so far (or on those of `only`).
    pub fn reconstruction_error(&self, only: Option<usize>) -> f64 {
        let seen: Vec<&Seen> = self
            .seen
            .iter()
            .filter(|s| only.is_none_or(|r| s.round == r))
            .collect();
        if seen.is_empty() {
            return 0.0;
        }
        let last = seen.iter().map(|s| s.round).max().unwrap_or(0);
        let (model, _, device) = self.plain();
        let pred = values(self.predict(&model, &device, &seen, last));
        pred.iter()
            .zip(&seen)
            .map(|(p, s)| ((p - s.reward) as f64).powi(2))
            .sum::<f64>()
            / seen.len() as f64
    }

    /// `model`'s predicted rewards of `seen` (on `device`, `model`'s).
    fn predict(&self, model: &EnvModel, device: &Device, seen: &[&Seen], last: usize) -> Tensor<2> {
        let states = model.states(last);
        let idx: Vec<i64> = seen.iter().map(|s| s.round as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [seen.len()]), device);
        let h = states.select(0, idx);
        let a = batch(
            &seen.iter().map(|s| s.actions.clone()).collect::<Vec<_>>(),
            device,
        );
        model.predict(h, a)
    }

    /// After `round`'s observations: the environment model learns to reconstruct every reward
    /// seen, then the actor learns to maximise the decoder's prediction in `round`'s state.
    /// Returns the reconstruction error before and after.
    pub fn update(&mut self, round: usize) -> (f64, f64) {
        let before = self.reconstruction_error(None);
        if self.seen.is_empty() {
            return (before, before);
        }
        let seen: Vec<Seen> = self.seen.clone();
        let refs: Vec<&Seen> = seen.iter().collect();
        let target = batch(
            &seen.iter().map(|s| vec![s.reward]).collect::<Vec<_>>(),
            &self.device,
        );
        for _ in 0..self.cfg.model_updates {
            let loss = (self.predict(&self.model, &self.device, &refs, round) - target.clone())
                .powf_scalar(2.0)
                .mean();
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            self.model = self
                .model_opt
                .step(self.cfg.model_lr, self.model.clone(), grads);
        }
        // The actor's loss goes through the decoder (its critic), whose own gradient is dropped.
        let (plain, _, _) = self.plain();
        let h = Tensor::<2>::from_data(self.state_at(&plain, round).into_data(), &self.device);
        for _ in 0..self.cfg.actor_updates {
            let a = self.actions_at(&self.actor, h.clone(), &self.device);
            let loss = -self.model.predict(h.clone(), a).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &self.actor);
            self.actor = self
                .actor_opt
                .step(self.cfg.actor_lr, self.actor.clone(), grads);
        }
        (before, self.reconstruction_error(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reward that drifts with the round: the best action moves from 0.2 to 0.8 over 30
    /// rounds (R = 1 − 4·(mean action − c_round)²). The environment model must learn to
    /// reconstruct it (its error falls), and the greedy actions must follow the drift.
    #[test]
    fn the_environment_model_learns_a_drifting_reward() {
        let (device, _) = crate::net::device();
        let groups = 4;
        let features: Vec<Vec<f32>> = (0..groups)
            .map(|g| {
                let mut f = vec![0f32; GROUP_FEATURES];
                f[0] = g as f32 / groups as f32;
                f
            })
            .collect();
        let mut agent = JointAgent::new(features, Config::default(), 7, &device);
        let rounds = 30;
        let centre = |r: usize| 0.2 + 0.6 * r as f64 / (rounds - 1) as f64;
        let reward = |a: &[f64], r: usize| {
            let m = a.iter().sum::<f64>() / a.len() as f64;
            1.0 - 4.0 * (m - centre(r)).powi(2)
        };
        let mut first = None;
        let mut errors = vec![];
        for r in 0..rounds {
            for a in agent.propose(r, 6) {
                let v = reward(&a, r);
                agent.observe(r, &a, v);
            }
            let (before, after) = agent.update(r);
            first.get_or_insert(before.max(after));
            errors.push(after);
        }
        let first = first.unwrap();
        let last = *errors.last().unwrap();
        let tail = errors[rounds - 5..].iter().sum::<f64>() / 5.0;
        eprintln!(
            "reconstruction MSE: first {first:.4}, last five rounds {tail:.4}, last {last:.4}"
        );
        // Measured: 0.554 -> below 1e-4 (the decoder without the GRU's state: 0.015).
        assert!(tail < first * 0.01, "error did not fall: {first} -> {tail}");
        assert!(last < 0.005, "{last}");
        let g = agent.greedy(rounds - 1);
        let m = g.iter().sum::<f64>() / g.len() as f64;
        eprintln!(
            "greedy mean action at the last round {m:.3} (best {:.3})",
            centre(rounds - 1)
        );
        assert!(m > 0.5, "the actor did not follow the drift: {m}");
    }
}
