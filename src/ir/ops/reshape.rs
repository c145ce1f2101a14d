//! Shape-only ops.
//! - <https://onnx.ai/onnx/operators/onnx__Reshape.html>: target is an attribute before opset 5,
//!   input 1 after; 0 copies the input dim (unless `allowzero`, opset 14), -1 is inferred.
//! - <https://onnx.ai/onnx/operators/onnx__Flatten.html>: 2-D [∏d[..axis], ∏d[axis..]].
//! - <https://onnx.ai/onnx/operators/onnx__Squeeze.html>,
//!   <https://onnx.ai/onnx/operators/onnx__Unsqueeze.html>: `axes` attribute before opset 13,
//!   input 1 from 13.

use super::{axis, eval, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Dim;
use std::sync::Arc;

/// Product of dims: known, a single symbol times ones, or unknown.
pub fn product(dims: &[Dim]) -> Dim {
    let mut k = 1i64;
    let mut sym: Option<&Dim> = None;
    for d in dims {
        match d {
            Dim::Known(v) => k = k.saturating_mul(*v),
            s @ Dim::Sym(_) if sym.is_none() => sym = Some(s),
            _ => return Dim::Unknown,
        }
    }
    match sym {
        None => Dim::Known(k),
        Some(s) if k == 1 => s.clone(),
        _ => Dim::Unknown,
    }
}

/// Resolves a Reshape target against the input shape.
pub fn reshape_target(input: &[Dim], target: &[Dim], allowzero: bool) -> OpResult<Vec<Dim>> {
    let mut out: Vec<Dim> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.iter().enumerate() {
        match t {
            Dim::Known(0) if !allowzero => out.push(
                input
                    .get(i)
                    .cloned()
                    .ok_or("0 in target beyond the input rank")?,
            ),
            Dim::Known(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err("more than one -1 in the Reshape target".into());
                }
                out.push(Dim::Unknown);
            }
            Dim::Known(v) if *v < -1 => return Err(format!("bad Reshape target value {v}")),
            d => out.push(d.clone()),
        }
    }
    if let Some(at) = infer_at {
        // Cancel identical symbols between input and the other target dims, then divide.
        let mut num: Vec<Dim> = input.to_vec();
        let mut den: Vec<Dim> = vec![];
        for (i, d) in out.iter().enumerate() {
            if i == at {
                continue;
            }
            if let Some(p) = num.iter().position(|n| matches!(n, Dim::Sym(_)) && n == d) {
                num.remove(p);
            } else {
                den.push(d.clone());
            }
        }
        out[at] = match (product(&num), product(&den)) {
            (Dim::Known(n), Dim::Known(d)) if d > 0 && n % d == 0 => Dim::Known(n / d),
            (Dim::Known(n), Dim::Known(d)) => {
                return Err(format!(
                    "cannot reshape {n} elements into a multiple of {d}"
                ))
            }
            (s @ Dim::Sym(_), Dim::Known(1)) => s,
            _ => Dim::Unknown,
        };
    } else if let (Dim::Known(a), Dim::Known(b)) = (product(input), product(&out)) {
        if a != b {
            return Err(format!("cannot reshape {a} elements into {b}"));
        }
    }
    Ok(out)
}

fn finish(cx: &InferCx, out: Vec<Dim>) -> OpResult<Vec<Fact>> {
    if cx.all_const() {
        if let (Some(v), Some(shape)) = (cx.value(0), super::concrete(&out)) {
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            if let Some(r) = eval::reshape(&v, &shape) {
                return Ok(vec![Fact::from_tensor(Arc::new(r.to_tensor()))]);
            }
        }
    }
    let x = cx.input(0)?;
    let mut f = Fact::new(x.dtype, Some(out.clone()));
    if out.len() <= 1 {
        f.sym = x.sym.clone();
    }
    Ok(vec![f])
}

pub struct Reshape;
impl Op for Reshape {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let target: Vec<Dim> = if cx.opset < 5 {
            cx.attr_ints("shape")
                .ok_or("no shape attribute")?
                .into_iter()
                .map(Dim::Known)
                .collect()
        } else {
            match cx.input(1)?.dims_value() {
                Some(t) => t,
                None => {
                    let n = cx.input(1)?.concrete().and_then(|s| s.first().copied());
                    return match n {
                        Some(n) if (0..=64).contains(&n) => Ok(vec![Fact::new(
                            cx.dtype(0),
                            Some(vec![Dim::Unknown; n as usize]),
                        )]),
                        _ => Ok(vec![Fact::new(cx.dtype(0), None)]),
                    };
                }
            }
        };
        let out = reshape_target(x, &target, cx.attr_i("allowzero", 0) != 0)?;
        finish(cx, out)
    }
}

pub struct Flatten;
impl Op for Flatten {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let a = cx.attr_i("axis", 1);
        let a = if a < 0 {
            a.saturating_add(x.len() as i64)
        } else {
            a
        };
        if a < 0 || a as usize > x.len() {
            return Err(format!("axis {a} out of range for rank {}", x.len()));
        }
        let (l, r) = x.split_at(a as usize);
        finish(cx, vec![product(l), product(r)])
    }
}

fn axes_of(cx: &InferCx) -> Option<Vec<i64>> {
    if cx.opset < 13 {
        cx.attr_ints("axes")
    } else {
        cx.const_ints(1)
    }
}

pub struct Squeeze;
impl Op for Squeeze {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let axes: Vec<usize> = match axes_of(cx) {
            Some(a) => a
                .iter()
                .map(|&a| axis(a, x.len()))
                .collect::<OpResult<_>>()?,
            None if cx.opset >= 13 && cx.opt_input(1).is_some() => {
                return Ok(vec![Fact::new(cx.dtype(0), None)]);
            }
            None => {
                if x.iter().any(|d| !matches!(d, Dim::Known(_))) {
                    return Ok(vec![Fact::new(cx.dtype(0), None)]);
                }
                x.iter()
                    .enumerate()
                    .filter(|(_, d)| **d == Dim::Known(1))
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        for &a in &axes {
            if let Dim::Known(d) = x[a] {
                if d != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {d}"));
                }
            }
        }
        let out = x
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        finish(cx, out)
    }
}

pub struct Unsqueeze;
impl Op for Unsqueeze {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let Some(axes) = axes_of(cx) else {
            return Ok(vec![Fact::new(cx.dtype(0), None)]);
        };
        let r = x.len() + axes.len();
        let mut axes: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<OpResult<_>>()?;
        axes.sort();
        axes.dedup();
        if axes.len() + x.len() != r {
            return Err("repeated axes".into());
        }
        let mut it = x.iter();
        let out = (0..r)
            .map(|i| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    it.next().cloned().unwrap_or(Dim::Unknown)
                }
            })
            .collect();
        finish(cx, out)
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const RESHAPE: &str = "Reshape";
pub const FLATTEN: &str = "Flatten";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(RESHAPE, &Reshape)
        .channels(Channels::Reshape)
        .zeros(Zeros::Spread),
    OpDef::new(FLATTEN, &Flatten)
        .channels(Channels::Flatten)
        .zeros(Zeros::Spread),
    OpDef::new("Squeeze", &Squeeze)
        .channels(Channels::SqueezeUnsqueeze)
        .zeros(Zeros::Preserves),
    OpDef::new("Unsqueeze", &Unsqueeze)
        .channels(Channels::SqueezeUnsqueeze)
        .zeros(Zeros::Preserves),
];
