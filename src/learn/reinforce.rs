//! The per-layer pruning policy of Huang, Zhou, You, Neumann 2018 ("Learning to Prune Filters
//! in Convolutional Neural Networks"): a small network reads one row of features per filter
//! (channel) of a layer and outputs the probability of keeping it. Masks are sampled from the
//! Bernoulli outputs, each sampled mask is rewarded, and the policy is trained by REINFORCE
//! with the mean reward of the batch of samples as baseline.

use super::nets::{batch, values, Mlp};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    pub lr: f64,
    /// Logit added to the network's output: the keep probability of an untrained policy is
    /// sigmoid(prior) (the caller sets it from the layer's budget).
    pub prior: f32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hidden: 32,
            lr: 1e-2,
            prior: 0.0,
        }
    }
}

pub struct Policy {
    pub cfg: Config,
    net: Mlp,
    opt: ModuleOptimizer,
    rng: rand::rngs::StdRng,
    device: Device,
    /// Fixed per-row logit offsets (a prior over the rows; empty: none).
    offsets: Vec<f32>,
}

impl Policy {
    pub fn new(features: usize, cfg: Config, seed: u64, device: &Device) -> Policy {
        Policy {
            net: Mlp::new(features, cfg.hidden, 1, 3e-3, seed, device),
            opt: AdamConfig::new().init(),
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x4e1),
            device: device.clone(),
            cfg,
            offsets: vec![],
        }
    }

    /// Adds a fixed logit offset per row (the rows of every later call must match).
    pub fn with_offsets(mut self, offsets: Vec<f32>) -> Policy {
        self.offsets = offsets;
        self
    }

    fn logits(&self, x: &[Vec<f32>]) -> Tensor<2> {
        let l = self.net.forward(batch(x, &self.device)) + self.cfg.prior;
        if self.offsets.len() == x.len() {
            let col: Vec<Vec<f32>> = self.offsets.iter().map(|&o| vec![o]).collect();
            l + batch(&col, &self.device)
        } else {
            l
        }
    }

    /// Keep probability of every row (filter).
    pub fn probs(&self, x: &[Vec<f32>]) -> Vec<f32> {
        values(sigmoid(self.logits(x)))
    }

    /// A mask sampled from the Bernoulli outputs.
    pub fn sample(&mut self, probs: &[f32]) -> Vec<bool> {
        probs
            .iter()
            .map(|&p| self.rng.random::<f32>() < p)
            .collect()
    }

    /// One REINFORCE step on the masks applied and their rewards: minimise
    /// −Σᵢ (Rᵢ − R̄)·log π(maskᵢ) / M.
    pub fn update(&mut self, x: &[Vec<f32>], masks: &[Vec<bool>], rewards: &[f64]) {
        let m = masks.len();
        if m == 0 {
            return;
        }
        let mean = rewards.iter().sum::<f64>() / m as f64;
        let logit = self.logits(x); // [C, 1]
        let p = sigmoid(logit).clamp(1e-6, 1.0 - 1e-6);
        let lp = p.clone().log();
        let lq = (p.neg() + 1.0).log();
        // Σᵢ advᵢ·(maskᵢ·log p + (1−maskᵢ)·log(1−p)) = Σ_c (A_c·log p_c + B_c·log(1−p_c)).
        let c = x.len();
        let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
        for (mask, &r) in masks.iter().zip(rewards) {
            let adv = (r - mean) as f32 / m as f32;
            for (j, &k) in mask.iter().enumerate() {
                if k {
                    a[j] += adv;
                } else {
                    b[j] += adv;
                }
            }
        }
        let col = |v: Vec<f32>| {
            batch(
                &v.into_iter().map(|x| vec![x]).collect::<Vec<_>>(),
                &self.device,
            )
        };
        let objective = (lp * col(a) + lq * col(b)).sum();
        let loss = objective.neg();
        let grads = GradientsParams::from_grads(loss.backward(), &self.net);
        self.net = self.opt.step(self.cfg.lr, self.net.clone(), grads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer of 32 filters with two features each; a filter is "useful" when its first
    /// feature is positive. The reward of a mask is (useful kept − useless kept)/32, so the
    /// optimum keeps exactly the useful filters. After training the policy's keep
    /// probabilities must separate them.
    #[test]
    fn reinforce_learns_which_filters_to_keep() {
        let (device, _) = crate::net::device();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x: Vec<Vec<f32>> = (0..32)
            .map(|_| vec![rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)])
            .collect();
        let useful: Vec<bool> = x.iter().map(|r| r[0] > 0.0).collect();
        let mut pol = Policy::new(2, Config::default(), 5, &device);
        let correct = |pol: &Policy| {
            pol.probs(&x)
                .iter()
                .zip(&useful)
                .filter(|(&p, &u)| (p > 0.5) == u)
                .count()
        };
        let before = correct(&pol);
        for _ in 0..60 {
            let p = pol.probs(&x);
            let masks: Vec<Vec<bool>> = (0..8).map(|_| pol.sample(&p)).collect();
            let rewards: Vec<f64> = masks
                .iter()
                .map(|m| {
                    m.iter()
                        .zip(&useful)
                        .map(|(&k, &u)| match (k, u) {
                            (true, true) => 1.0,
                            (true, false) => -1.0,
                            _ => 0.0,
                        })
                        .sum::<f64>()
                        / 32.0
                })
                .collect();
            pol.update(&x, &masks, &rewards);
        }
        let after = correct(&pol);
        eprintln!("reinforce toy: {before}/32 -> {after}/32 filters right");
        assert!(
            before < 24,
            "untrained policy already separates: {before}/32"
        );
        assert!(
            after >= 30,
            "keep probabilities right for {after}/32 filters"
        );
    }
}
