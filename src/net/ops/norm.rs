//! Normalisations.
//! - BatchNormalization: <https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>
//!   (opset 9, 14, 15). Evaluation mode normalises with the running statistics; training mode
//!   with the batch's (biased variance), and updates the running ones as
//!   `running·momentum + batch·(1 − momentum)` (unbiased variance, as PyTorch does).
//! - InstanceNormalization: <https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html>
//!   (opset 6, 22): `scale·(x − mean)/√(var + ε) + B` with mean and biased variance per sample
//!   and channel over the spatial axes, the same in training and evaluation (torch's opset < 18
//!   GroupNorm export runs it on `[N, G, (C/G)·H·W]`).
//! - GroupNormalization: <https://onnx.ai/onnx/operators/onnx__GroupNormalization.html>
//!   (opset 18: `scale`/`bias` one per group; opset 21: one per channel): statistics per sample
//!   over each group of C/G channels and the spatial axes.
//! - LayerNormalization: <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
//!   (opset 17): statistics over the axes from `axis` on; `Scale`/`B` broadcast against them.
//!   Only output Y is computed (the optional Mean and InvStdDev outputs are refused).

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

/// Input 0 (of rank ≥ `min_rank`), the per-channel scale (input 1) and bias (input 2) shaped
/// to broadcast against it, and `epsilon`.
fn per_channel_affine(
    cx: &Fx,
    ins: &[Option<Val>],
    min_rank: usize,
) -> OpResult<(Dt, Dt, Dt, f64)> {
    let x = cx.f(ins, 0)?;
    let r = x.rank;
    if r < min_rank {
        return Err(format!("{} needs rank ≥ {min_rank}", cx.node.op_type));
    }
    let scale = per_channel(cx.f(ins, 1)?, r)?;
    let bias = per_channel(cx.f(ins, 2)?, r)?;
    Ok((x, scale, bias, cx.attr_f("epsilon", 1e-5) as f64))
}

impl BurnOp for BatchNorm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn buffers(&self) -> &'static [usize] {
        &[3, 4]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let (x, scale, bias, eps) = per_channel_affine(cx, ins, 2)?;
        let r = x.rank;
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
        let (x, scale, bias, eps) = per_channel_affine(cx, ins, 3)?;
        let r = x.rank;
        let y = standardise(x, 2, eps);
        one(Dt::new(y.t * scale.t + bias.t, r))
    }
}

/// Mean and biased variance over the (logical) axes `from..rank` of `t`, then
/// `(t − mean)/√(var + ε)`.
fn standardise(x: Dt, from: usize, eps: f64) -> Dt {
    let r = x.rank;
    let axes: Vec<usize> = (from..r).map(|a| x.ax(a)).collect();
    let mut m = x.t.clone();
    for &a in &axes {
        m = m.mean_dim(a);
    }
    let centred = x.t - m;
    let mut v = centred.clone() * centred.clone();
    for &a in &axes {
        v = v.mean_dim(a);
    }
    Dt::new(centred * (v + eps).sqrt().recip(), r)
}

pub struct GroupNorm;

impl BurnOp for GroupNorm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        if r < 3 {
            return Err("GroupNormalization needs rank ≥ 3".into());
        }
        let dims = x.dims();
        let (n, c) = (dims[0], dims[1]);
        let g = cx.attr_i("num_groups", 0);
        if g <= 0 || c % g as usize != 0 {
            return Err(format!("num_groups {g} does not divide {c} channels"));
        }
        let g = g as usize;
        let eps = cx.attr_f("epsilon", 1e-5) as f64;
        let (scale, bias) = (cx.f(ins, 1)?, cx.f(ins, 2)?);
        let per: usize = dims[1..].iter().product::<usize>() / g;
        let grouped = standardise(x.reshape(&[n, g, per])?, 2, eps);
        let y = if scale.dims().iter().product::<usize>() == g && g != c {
            // Opset 18: one scale and bias per group, applied before ungrouping.
            let (s, b) = (scale.reshape(&[g, 1])?, bias.reshape(&[g, 1])?);
            Dt::new(grouped.t * s.t + b.t, 3).reshape(&dims)?
        } else {
            let y = grouped.reshape(&dims)?;
            let (s, b) = (per_channel(scale, r)?, per_channel(bias, r)?);
            Dt::new(y.t * s.t + b.t, r)
        };
        one(y)
    }
}

pub struct LayerNorm;

impl BurnOp for LayerNorm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        if cx.node.outputs.iter().skip(1).any(|o| o.is_some()) {
            return Err("LayerNormalization's Mean/InvStdDev outputs cannot be trained".into());
        }
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        let a = super::axis(cx.attr_i("axis", -1), r)?;
        let eps = cx.attr_f("epsilon", 1e-5) as f64;
        let y = standardise(x, a, eps);
        // Scale and B have X's trailing shape: numpy broadcasting against Y.
        let mut t = y.t * cx.f(ins, 1)?.t;
        if let Some(b) = cx.opt_f(ins, 2)? {
            t = t + b.t;
        }
        one(Dt::new(t, r))
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("BatchNormalization", &BatchNorm),
    ("InstanceNormalization", &InstanceNorm),
    ("GroupNormalization", &GroupNorm),
    ("LayerNormalization", &LayerNorm),
];
