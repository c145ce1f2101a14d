//! <https://onnx.ai/onnx/operators/onnx__Slice.html>: attributes starts/ends/axes before opset
//! 10; inputs starts, ends, axes?, steps? from 10. Out-of-range bounds are clamped.

use super::{axis, eval, Channels, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::{Arr, Dim};
use std::sync::Arc;

/// Resolved (axis, start, end, step) with clamped bounds, for one sliced axis of length `dim`.
pub fn clamp(start: i64, end: i64, step: i64, dim: i64) -> (i64, i64, i64) {
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let step_ = step as i128;
    let dim = dim.max(0);
    if step > 0 {
        let s = norm(start).clamp(0, dim);
        let e = norm(end).clamp(0, dim);
        let len = if e > s {
            (e as i128 - s as i128 + step_ - 1) / step_
        } else {
            0
        };
        (s, e, len as i64)
    } else {
        let s = norm(start).clamp(0, (dim - 1).max(0));
        let e = norm(end).clamp(-1, (dim - 1).max(-1));
        let st = -step_;
        let len = if s > e {
            (s as i128 - e as i128 + st - 1) / st
        } else {
            0
        };
        (s, e, len as i64)
    }
}

/// Slice parameters: (axes, starts, ends, steps).
pub type SliceParams = (Vec<usize>, Vec<i64>, Vec<i64>, Vec<i64>);

/// Slice parameters, when constant.
pub fn params(cx: &InferCx, rank: usize) -> OpResult<Option<SliceParams>> {
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        (
            cx.attr_ints("starts"),
            cx.attr_ints("ends"),
            cx.attr_ints("axes"),
            None,
        )
    } else {
        let axes = match cx.opt_input(3) {
            Some(_) => match cx.const_ints(3) {
                Some(a) => Some(a),
                None => return Ok(None),
            },
            None => None,
        };
        let steps = match cx.opt_input(4) {
            Some(_) => match cx.const_ints(4) {
                Some(s) => Some(s),
                None => return Ok(None),
            },
            None => None,
        };
        (cx.const_ints(1), cx.const_ints(2), axes, steps)
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Ok(None);
    };
    if starts.len() != ends.len() {
        return Err("starts and ends differ in length".into());
    }
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| axis(a, rank)).collect::<OpResult<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or(vec![1; starts.len()]);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("axes/steps do not match starts".into());
    }
    if steps.contains(&0) {
        return Err("slice step is 0".into());
    }
    Ok(Some((axes, starts, ends, steps)))
}

pub struct Slice;
impl Op for Slice {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let Some((axes, starts, ends, steps)) = params(cx, x.len())? else {
            return Ok(vec![Fact::new(
                cx.dtype(0),
                Some(vec![Dim::Unknown; x.len()]),
            )]);
        };
        let mut out = x.to_vec();
        let mut ranges = vec![];
        for i in 0..axes.len() {
            let a = axes[i];
            match &x[a] {
                Dim::Known(d) => {
                    let (s, e, len) = clamp(starts[i], ends[i], steps[i], *d);
                    out[a] = Dim::Known(len);
                    ranges.push((a, s, e, steps[i]));
                }
                _ if starts[i] == 0 && steps[i] == 1 && ends[i] >= i64::MAX / 2 => {}
                _ => out[a] = Dim::Unknown,
            }
        }
        if cx.all_const()
            && ranges.len() == axes.len()
            && ranges.iter().all(|r| r.3.unsigned_abs() < 1 << 40)
        {
            if let Some(v) = cx.value(0) {
                let r = slice_arr(&v, &ranges);
                eval::check_size(r.shape())?;
                return Ok(vec![Fact::from_tensor(Arc::new(r.to_tensor()))]);
            }
        }
        let mut f = Fact::new(cx.dtype(0), Some(out));
        if x.len() == 1 && ranges.len() == 1 {
            if let Some(v) = cx.input(0)?.sym.as_ref() {
                let (_, s, e, st) = ranges[0];
                let mut picked = vec![];
                let mut i = s;
                while (st > 0 && i < e) || (st < 0 && i > e) {
                    if let Some(d) = v.get(i as usize) {
                        picked.push(d.clone());
                    }
                    match i.checked_add(st) {
                        Some(n) => i = n,
                        None => break,
                    }
                }
                f.sym = Some(picked);
            }
        }
        Ok(vec![f])
    }
}

pub fn slice_arr(v: &Arr, ranges: &[(usize, i64, i64, i64)]) -> Arr {
    crate::arr_map!(v, a => {
        let mut view = a.view();
        for &(ax, s, e, st) in ranges {
                        let sl = if st > 0 {
                ndarray::Slice::new(s as isize, Some(e.max(s) as isize), st as isize)
            } else {
                // ndarray walks a negative step from the end of [start, end).
                ndarray::Slice::new((e + 1) as isize, Some((s + 1).max(e + 1) as isize), st as isize)
            };
            view.slice_axis_inplace(ndarray::Axis(ax), sl);
        }
        view.to_owned()
    })
}

/// Op types other passes name (when they build or recognise such nodes).
pub const SLICE: &str = "Slice";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new(SLICE, &Slice).channels(Channels::Slice)];
