//! The optimisers ([`Optim`]: SGD with momentum, Adam) and one update of a [`Net`]'s
//! parameters from their gradients: global-norm clipping, weight decay, the optimiser's step.

use super::TrainOptions;
use crate::net::Net;
use burn::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optim {
    /// PyTorch-style SGD: v ← μ·v + g; p ← p − lr·v (Nesterov: p ← p − lr·(g + μ·v)).
    Sgd { momentum: f64, nesterov: bool },
    /// Adam with L2 weight decay added to the gradient (PyTorch's `Adam(weight_decay=…)`).
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

impl Optim {
    /// `--optimizer sgd`: momentum 0.9, Nesterov.
    pub const SGD: Optim = Optim::Sgd {
        momentum: 0.9,
        nesterov: true,
    };
    /// `--optimizer adam`: PyTorch's defaults.
    pub const ADAM: Optim = Optim::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    pub fn parse(s: &str) -> Option<Optim> {
        match s {
            "sgd" => Some(Optim::SGD),
            "adam" => Some(Optim::ADAM),
            _ => None,
        }
    }
    /// The name `--optimizer` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Optim::Sgd { .. } => "sgd",
            Optim::Adam { .. } => "adam",
        }
    }
    pub(super) fn slots(&self) -> usize {
        match self {
            Optim::Sgd { .. } => 1,
            Optim::Adam { .. } => 2,
        }
    }
    pub(super) fn code(&self) -> u8 {
        match self {
            Optim::Sgd { .. } => 1,
            Optim::Adam { .. } => 2,
        }
    }
}

/// The parameters after one optimiser step from `grads` (global-norm clipping, weight decay on
/// weights of rank ≥ 2, SGD with momentum or Adam), as (parameter index, new value); `state`
/// (the optimiser's buffers) is advanced.
pub(super) fn updated(
    o: &TrainOptions,
    state: &mut [Vec<Tensor<6>>],
    net: &Net,
    grads: &burn::tensor::Gradients,
    lr: f64,
    t: usize,
) -> Vec<(usize, Tensor<6>)> {
    let mut out = Vec::new();
    let gs: Vec<Option<Tensor<6>>> = (0..net.params().len())
        .map(|i| net.param(i).t.grad(grads))
        .collect();
    let scale = if o.clip_norm > 0.0 {
        // One device reduction and one read-back for the global norm.
        let sq = gs
            .iter()
            .flatten()
            .map(|g| (g.clone() * g.clone()).sum())
            .reduce(|a, b| a + b);
        let norm = sq.map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt());
        if norm > o.clip_norm {
            o.clip_norm / norm
        } else {
            1.0
        }
    } else {
        1.0
    };
    for (i, g) in gs.into_iter().enumerate() {
        let p = net.param(i);
        let Some(g) = g else { continue };
        let g = if scale < 1.0 { g * scale } else { g };
        let w = p.t.inner();
        let g = if o.weight_decay > 0.0 && p.rank >= 2 {
            g + w.clone() * o.weight_decay
        } else {
            g
        };
        let st = &mut state[i];
        let new = match o.optim {
            Optim::Sgd { momentum, nesterov } => {
                let v = st[0].clone() * momentum + g.clone();
                st[0] = v.clone();
                let d = if nesterov { g + v * momentum } else { v };
                w - d * lr
            }
            Optim::Adam { beta1, beta2, eps } => {
                let m = st[0].clone() * beta1 + g.clone() * (1.0 - beta1);
                let v = st[1].clone() * beta2 + g.clone() * g * (1.0 - beta2);
                st[0] = m.clone();
                st[1] = v.clone();
                let k = (t + 1) as i32;
                let mh = m / (1.0 - beta1.powi(k));
                let vh = v / (1.0 - beta2.powi(k));
                w - mh / (vh.sqrt() + eps) * lr
            }
        };
        out.push((i, new));
    }
    out
}
