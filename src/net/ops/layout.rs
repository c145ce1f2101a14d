//! Layout ops (no arithmetic).
//! - Reshape: <https://onnx.ai/onnx/operators/onnx__Reshape.html> (shape from a host input;
//!   0 copies, −1 infers unless `allowzero`)
//! - Flatten: <https://onnx.ai/onnx/operators/onnx__Flatten.html>
//! - Transpose: <https://onnx.ai/onnx/operators/onnx__Transpose.html>
//! - Squeeze / Unsqueeze: <https://onnx.ai/onnx/operators/onnx__Squeeze.html> (axes as an
//!   attribute before opset 13, as an input after)
//! - Shape / Size: <https://onnx.ai/onnx/operators/onnx__Shape.html> (host outputs; `start`,
//!   `end` from opset 15)

use super::Entry;
use super::{axis, one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};
use std::sync::Arc;

pub struct Reshape;
pub struct Flatten;
pub struct Transpose;
pub struct Squeeze;
pub struct Unsqueeze;
pub struct Shape;

impl BurnOp for Reshape {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let target = cx.ints(ins, 1)?.ok_or("missing shape")?;
        let dims = x.dims();
        let allow_zero = cx.attr_i("allowzero", 0) != 0;
        let mut out: Vec<i64> = target
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if t == 0 && !allow_zero {
                    dims.get(i)
                        .map(|&d| d as i64)
                        .ok_or("0 copies a missing dim")
                } else {
                    Ok(t)
                }
            })
            .collect::<Result<_, _>>()?;
        let total: usize = dims.iter().product();
        if let Some(p) = out.iter().position(|&v| v == -1) {
            let known: i64 = out.iter().filter(|&&v| v != -1).product();
            if known <= 0 || total as i64 % known != 0 {
                return Err(format!("cannot reshape {dims:?} to {target:?}"));
            }
            out[p] = total as i64 / known;
        }
        if out.iter().any(|&v| v < 0) {
            return Err(format!("invalid shape {target:?}"));
        }
        let out: Vec<usize> = out.iter().map(|&v| v as usize).collect();
        one(x.reshape(&out)?)
    }
}

impl BurnOp for Flatten {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let a = cx.attr_i("axis", 1);
        let a = if a < 0 { a + dims.len() as i64 } else { a };
        if a < 0 || a as usize > dims.len() {
            return Err(format!("axis {a} is out of range"));
        }
        let a = a as usize;
        let outer: usize = dims[..a].iter().product();
        let inner: usize = dims[a..].iter().product();
        one(x.reshape(&[outer, inner])?)
    }
}

impl BurnOp for Transpose {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        let perm: Vec<usize> = match cx.attr_ints("perm") {
            Some(p) => p
                .iter()
                .map(|&v| axis(v, r))
                .collect::<OpResult<Vec<usize>>>()?,
            None => (0..r).rev().collect(),
        };
        let mut seen = perm.clone();
        seen.sort();
        if seen != (0..r).collect::<Vec<_>>() {
            return Err(format!("perm {perm:?} is not a permutation of {r} axes"));
        }
        let off = 6 - r;
        let full: [usize; 6] =
            std::array::from_fn(|i| if i < off { i } else { off + perm[i - off] });
        one(Dt::new(x.t.permute(full), r))
    }
}

fn axes_of(cx: &Fx, ins: &[Option<Val>]) -> OpResult<Option<Vec<i64>>> {
    if cx.opset < 13 {
        Ok(cx.attr_ints("axes"))
    } else {
        cx.ints(ins, 1)
    }
}

impl BurnOp for Squeeze {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let drop: Vec<usize> = match axes_of(cx, ins)? {
            Some(a) => a
                .iter()
                .map(|&v| axis(v, dims.len()))
                .collect::<OpResult<_>>()?,
            None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
        };
        if drop.iter().any(|&i| dims[i] != 1) {
            return Err(format!("cannot squeeze axes {drop:?} of {dims:?}"));
        }
        let out: Vec<usize> = (0..dims.len())
            .filter(|i| !drop.contains(i))
            .map(|i| dims[i])
            .collect();
        one(x.reshape(&out)?)
    }
}

impl BurnOp for Unsqueeze {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let axes = axes_of(cx, ins)?.ok_or("missing axes")?;
        let r = dims.len() + axes.len();
        let mut add: Vec<usize> = axes.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?;
        add.sort();
        let mut out = Vec::with_capacity(r);
        let mut it = dims.iter();
        for i in 0..r {
            if add.contains(&i) {
                out.push(1);
            } else {
                out.push(*it.next().ok_or("axes repeat")?);
            }
        }
        one(x.reshape(&out)?)
    }
}

impl BurnOp for Shape {
    fn host_output(&self) -> bool {
        true
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let dims: Vec<i64> = match ins.first().and_then(|v| v.as_ref()) {
            Some(Val::F(d)) => d.dims().iter().map(|&v| v as i64).collect(),
            Some(Val::H(t)) => t.dims.clone(),
            None => return Err("missing input".into()),
        };
        let t = if cx.node.op_type == "Size" {
            crate::ir::Tensor::i64(&[], vec![dims.iter().product()])
        } else {
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let s = clampi(cx.attr_i("start", 0));
            let e = clampi(cx.attr_i("end", r));
            let v: Vec<i64> = if s < e { dims[s..e].to_vec() } else { vec![] };
            crate::ir::Tensor::i64(&[v.len() as i64], v)
        };
        Ok(vec![Val::H(Arc::new(t))])
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("Reshape", &Reshape),
    ("Flatten", &Flatten),
    ("Transpose", &Transpose),
    ("Squeeze", &Squeeze),
    ("Unsqueeze", &Unsqueeze),
    ("Shape", &Shape),
    ("Size", &Shape),
];
