//! Ops that select or arrange parts of tensors.
//! - Concat: <https://onnx.ai/onnx/operators/onnx__Concat.html>
//! - Split: <https://onnx.ai/onnx/operators/onnx__Split.html> (sizes as an attribute before opset
//!   13, as an input after; `num_outputs` from 18; else equal parts)
//! - Slice: <https://onnx.ai/onnx/operators/onnx__Slice.html> (attributes before opset 10;
//!   negative steps)
//! - Pad: <https://onnx.ai/onnx/operators/onnx__Pad.html> (attributes before opset 11; `axes`
//!   from 18; constant/reflect/edge; negative pads crop)
//! - Gather: <https://onnx.ai/onnx/operators/onnx__Gather.html> (device data, host indices)

use super::Entry;
use super::{axis, one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};
use burn::prelude::*;
use burn::tensor::ops::PadMode;

pub struct Concat;
pub struct Split;
pub struct Slice;
pub struct Pad;
pub struct Gather;

impl BurnOp for Concat {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let parts: Vec<Dt> = (0..ins.len())
            .filter_map(|i| cx.opt_f(ins, i).transpose())
            .collect::<OpResult<_>>()?;
        let first = parts.first().ok_or("no inputs")?;
        let r = first.rank;
        if parts.iter().any(|p| p.rank != r) {
            return Err("inputs have different ranks".into());
        }
        let a = axis(cx.attr_i("axis", 0), r)?;
        let p = first.ax(a);
        let parts: Vec<Tensor<6>> = parts
            .into_iter()
            .filter(|d| d.dims()[a] > 0)
            .map(|d| d.t)
            .collect();
        one(Dt::new(Tensor::cat(parts, p), r))
    }
}

impl BurnOp for Split {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let a = axis(cx.attr_i("axis", 0), x.rank)?;
        let n = cx.node.outputs.len();
        let sizes: Vec<usize> = match if cx.opset < 13 {
            cx.attr_ints("split")
        } else {
            cx.ints(ins, 1)?
        } {
            Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
            None => {
                let k = (cx.attr_i("num_outputs", n as i64).max(1)) as usize;
                let each = dims[a].div_ceil(k);
                (0..k)
                    .map(|i| each.min(dims[a].saturating_sub(i * each)))
                    .collect()
            }
        };
        if sizes.iter().sum::<usize>() != dims[a] {
            return Err(format!("split {sizes:?} does not add up to {}", dims[a]));
        }
        let p = x.ax(a);
        let mut start = 0;
        let mut outs = Vec::new();
        for s in sizes {
            outs.push(Val::F(Dt::new(x.t.clone().narrow(p, start, s), x.rank)));
            start += s;
        }
        Ok(outs)
    }
}

impl BurnOp for Slice {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let r = x.rank;
        let (starts, ends, axes, steps) = if cx.opset < 10 {
            (
                cx.attr_ints("starts").ok_or("missing starts")?,
                cx.attr_ints("ends").ok_or("missing ends")?,
                cx.attr_ints("axes"),
                None,
            )
        } else {
            (
                cx.ints(ins, 1)?.ok_or("missing starts")?,
                cx.ints(ins, 2)?.ok_or("missing ends")?,
                cx.ints(ins, 3)?,
                cx.ints(ins, 4)?,
            )
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; axes.len()]);
        if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
            return Err("starts, ends, axes and steps differ in length".into());
        }
        let mut t = x.t;
        for i in 0..axes.len() {
            let a = axes[i];
            let step = steps[i];
            if step == 0 {
                return Err("step 0".into());
            }
            let (s, e, len) = crate::ir::ops::slice_clamp(starts[i], ends[i], step, dims[a] as i64);
            let p = 6 - r + a;
            if step == 1 {
                t = t.narrow(p, s as usize, len.max(0) as usize);
            } else if step > 0 && len > 0 {
                // A strided view: its gradient is one strided assignment into zeros (a
                // `select` here cost a scatter per element in every backward pass).
                let mut sl: Vec<burn::tensor::Slice> = t
                    .dims()
                    .iter()
                    .map(|&d| burn::tensor::Slice::new(0, Some(d as isize), 1))
                    .collect();
                sl[p] = burn::tensor::Slice::new(
                    s as isize,
                    Some((s + (len - 1) * step + 1) as isize),
                    step as isize,
                );
                t = t.slice(&sl);
            } else {
                let _ = e;
                let idx: Vec<i64> = (0..len).map(|k| s + k * step).collect();
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(idx.clone(), [idx.len()]),
                    cx.device,
                );
                t = t.select(p, idx);
            }
        }
        one(Dt::new(t, r))
    }
}

impl BurnOp for Pad {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        let (pads, value, axes) = if cx.opset < 11 {
            (
                cx.attr_ints("pads").ok_or("missing pads")?,
                cx.attr_f("value", 0.0),
                None,
            )
        } else {
            (
                cx.ints(ins, 1)?.ok_or("missing pads")?,
                cx.floats(ins, 2)?
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0.0),
                cx.ints(ins, 3)?,
            )
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
            None => (0..r).collect(),
        };
        let k = axes.len();
        if pads.len() != 2 * k {
            return Err(format!("pads {pads:?} do not fit {k} axes"));
        }
        let mode = match cx.attr_s("mode", "constant").as_str() {
            "constant" => PadMode::Constant(value),
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            m => return Err(format!("Pad mode {m} is not supported")),
        };
        let mut t = x.t;
        // Crop negative pads first.
        for (i, &a) in axes.iter().enumerate() {
            let p = 6 - r + a;
            let (b, e) = (pads[i], pads[i + k]);
            if b < 0 || e < 0 {
                let d = t.dims()[p] as i64;
                let s = (-b).max(0);
                let len = (d - s - (-e).max(0)).max(0);
                t = t.narrow(p, s as usize, len as usize);
            }
        }
        let mut pairs = [(0usize, 0usize); 6];
        for (i, &a) in axes.iter().enumerate() {
            pairs[6 - r + a] = (pads[i].max(0) as usize, pads[i + k].max(0) as usize);
        }
        if pairs.iter().any(|&(b, e)| b > 0 || e > 0) {
            t = t.pad(pairs, mode);
        }
        one(Dt::new(t, r))
    }
}

impl BurnOp for Gather {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        let a = axis(cx.attr_i("axis", 0), x.rank)?;
        let (idx, idims) = match ins.get(1).and_then(|v| v.as_ref()) {
            Some(Val::H(t)) => (
                t.as_i64s().ok_or("indices are not integers")?,
                t.dims.clone(),
            ),
            _ => return Err("indices computed from the image input are not supported".into()),
        };
        let n = dims[a] as i64;
        let idx: Vec<i64> = idx.iter().map(|&i| if i < 0 { i + n } else { i }).collect();
        if idx.iter().any(|&i| i < 0 || i >= n) {
            return Err(format!("index out of range for dim {n}"));
        }
        let len = idx.len();
        let it = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), cx.device);
        let p = x.ax(a);
        let y = Dt::new(x.t.select(p, it), x.rank);
        let mut out: Vec<usize> = dims[..a].to_vec();
        out.extend(idims.iter().map(|&v| v as usize));
        out.extend(&dims[a + 1..]);
        one(y.reshape(&out)?)
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("Concat", &Concat),
    ("Split", &Split),
    ("Slice", &Slice),
    ("Pad", &Pad),
    ("Gather", &Gather),
];
