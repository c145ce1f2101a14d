//! Normalisations.
//! - BatchNormalization: <https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>
//!   (opset 9, 14, 15). Evaluation mode normalises with the running statistics; training mode
//!   with the batch's (biased variance), and updates the running ones as
//!   `running·momentum + batch·(1 − momentum)` (unbiased variance, as PyTorch does).
//! - InstanceNormalization: <https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html>
//!   (opset 6, 22): `scale·(x − mean)/√(var + ε) + B` with mean and biased variance per sample
//!   and channel over the spatial axes, the same in training and evaluation (torch's opset < 18
//!   GroupNorm export runs it on `[N, G, (C/G)·H·W]`).

use super::Entry;
use super::{one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};

pub struct BatchNorm;

/// A per-channel vector `[C]` shaped to broadcast against a rank-`rank` `[N, C, …]` tensor.
pub fn per_channel(v: Dt, rank: usize) -> OpResult<Dt> {
    let c: usize = v.dims().iter().product();
    let mut dims = vec![c];
    dims.resize(rank.max(2) - 1, 1);
    v.reshape(&dims)
}

impl BurnOp for BatchNorm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn buffers(&self) -> &'static [usize] {
        &[3, 4]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        if r < 2 {
            return Err("BatchNormalization needs rank ≥ 2".into());
        }
        let scale = per_channel(cx.f(ins, 1)?, r)?;
        let bias = per_channel(cx.f(ins, 2)?, r)?;
        let eps = cx.attr_f("epsilon", 1e-5) as f64;
        let train = cx.train || cx.attr_i("training_mode", 0) == 1;
        let (centred, var) = if train {
            let axes: Vec<usize> = std::iter::once(0).chain(2..r).map(|a| x.ax(a)).collect();
            let mut m = x.t.clone();
            for &a in &axes {
                m = m.mean_dim(a);
            }
            let centred = x.t.clone() - m.clone();
            let mut v = centred.clone() * centred.clone();
            for &a in &axes {
                v = v.mean_dim(a);
            }
            let dims = x.dims();
            let count: usize = dims[0] * dims[2..].iter().product::<usize>();
            let mom = cx.attr_f("momentum", 0.9) as f64;
            let c = dims[1];
            let rm = cx.f(ins, 3)?;
            let rv = cx.f(ins, 4)?;
            let bm = Dt::new(m.clone(), r).reshape(&[c])?.t.detach();
            let unbiased = if count > 1 {
                count as f64 / (count - 1) as f64
            } else {
                1.0
            };
            let bv = Dt::new(v.clone(), r).reshape(&[c])?.t.detach() * unbiased;
            let rm_dims = rm.dims();
            let new_m = rm.reshape(&[c])?.t * mom + bm * (1.0 - mom);
            let new_v = rv.reshape(&[c])?.t * mom + bv * (1.0 - mom);
            cx.updates
                .borrow_mut()
                .push((3, Dt::new(new_m, 1).reshape(&rm_dims)?));
            cx.updates
                .borrow_mut()
                .push((4, Dt::new(new_v, 1).reshape(&rm_dims)?));
            (centred, v)
        } else {
            (
                x.t - per_channel(cx.f(ins, 3)?, r)?.t,
                per_channel(cx.f(ins, 4)?, r)?.t,
            )
        };
        let inv = (var + eps).sqrt().recip();
        let y = centred * inv * scale.t + bias.t;
        one(Dt::new(y, r))
    }
}

pub struct InstanceNorm;

impl BurnOp for InstanceNorm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        if r < 3 {
            return Err("InstanceNormalization needs rank ≥ 3".into());
        }
        let scale = per_channel(cx.f(ins, 1)?, r)?;
        let bias = per_channel(cx.f(ins, 2)?, r)?;
        let eps = cx.attr_f("epsilon", 1e-5) as f64;
        let axes: Vec<usize> = (2..r).map(|a| x.ax(a)).collect();
        let mut m = x.t.clone();
        for &a in &axes {
            m = m.mean_dim(a);
        }
        let centred = x.t - m;
        let mut v = centred.clone() * centred.clone();
        for &a in &axes {
            v = v.mean_dim(a);
        }
        let y = centred * (v + eps).sqrt().recip() * scale.t + bias.t;
        one(Dt::new(y, r))
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("BatchNormalization", &BatchNorm),
    ("InstanceNormalization", &InstanceNorm),
];
