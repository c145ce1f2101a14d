//! Small MLPs for the agents, with seeded initialisation and soft (Polyak) target updates.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::{Rng, SeedableRng};

/// A fully connected layer `[in] → [out]` initialised U(−s, s) from `rng`.
pub(crate) fn dense(
    inp: usize,
    out: usize,
    s: f32,
    rng: &mut rand::rngs::StdRng,
    device: &Device,
) -> Linear {
    let w: Vec<f32> = (0..inp * out).map(|_| rng.random_range(-s..s)).collect();
    let b: Vec<f32> = (0..out).map(|_| rng.random_range(-s..s)).collect();
    Linear {
        weight: Param::from_data(TensorData::new(w, [inp, out]), device),
        bias: Some(Param::from_data(TensorData::new(b, [out]), device)),
    }
}

/// in → hidden → hidden → out, ReLU between (the last layer is linear).
#[derive(Module, Debug)]
pub struct Mlp {
    l1: Linear,
    l2: Linear,
    l3: Linear,
}

impl Mlp {
    /// DDPG-style init: fan-in uniform for hidden layers, ±`last` for the output layer.
    pub fn new(
        inp: usize,
        hidden: usize,
        out: usize,
        last: f32,
        seed: u64,
        device: &Device,
    ) -> Mlp {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Mlp {
            l1: dense(inp, hidden, 1.0 / (inp as f32).sqrt(), &mut rng, device),
            l2: dense(
                hidden,
                hidden,
                1.0 / (hidden as f32).sqrt(),
                &mut rng,
                device,
            ),
            l3: dense(hidden, out, last, &mut rng, device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.l1.forward(x));
        let h = relu(self.l2.forward(h));
        self.l3.forward(h)
    }

    /// τ·self + (1−τ)·target, as a new network without gradient history.
    pub fn soft_update(&self, target: &Mlp, tau: f32) -> Mlp {
        // Rebuilt from data: the new parameters are fresh leaves with no gradient history.
        fn leaf<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
            let device = t.device();
            Param::from_data(t.into_data(), &device)
        }
        let mix = |a: &Linear, b: &Linear| {
            let w = a.weight.val().detach() * tau + b.weight.val().detach() * (1.0 - tau);
            let bias = match (&a.bias, &b.bias) {
                (Some(x), Some(y)) => Some(leaf(
                    x.val().detach() * tau + y.val().detach() * (1.0 - tau),
                )),
                _ => None,
            };
            Linear {
                weight: leaf(w),
                bias,
            }
        };
        Mlp {
            l1: mix(&self.l1, &target.l1),
            l2: mix(&self.l2, &target.l2),
            l3: mix(&self.l3, &target.l3),
        }
    }

    /// A copy without gradient history (a target network).
    pub fn detached(&self) -> Mlp {
        self.soft_update(self, 1.0)
    }
}

/// A standard normal draw by Box–Muller (one pair of uniforms per draw, the cosine branch).
pub fn std_normal(rng: &mut rand::rngs::StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Rows of f32 features → a `[rows, dim]` tensor.
pub fn batch(rows: &[Vec<f32>], device: &Device) -> Tensor<2> {
    let dim = rows.first().map(|r| r.len()).unwrap_or(0);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), dim]), device)
}

/// All values of a tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap_or_default()
}
