//! <https://onnx.ai/onnx/operators/onnx__Split.html>: `split` sizes are an attribute before
//! opset 13 and input 1 from 13; opset 18 adds `num_outputs` (last chunk may be smaller).
//! Without sizes the axis is split evenly between the outputs.

use super::{axis, Channels, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::Dim;

pub fn split_sizes(cx: &InferCx, dim: &Dim) -> OpResult<Option<Vec<i64>>> {
    let n = cx.n_outputs() as i64;
    if n == 0 {
        return Err("Split has no outputs".into());
    }
    let given = if cx.opset < 13 {
        cx.attr_ints("split")
    } else {
        cx.const_ints(1)
    };
    if let Some(s) = given.filter(|s| !s.is_empty()) {
        if s.len() as i64 != n {
            return Err(format!("split has {} sizes for {n} outputs", s.len()));
        }
        return Ok(Some(s));
    }
    if cx.opset < 13 && cx.opt_input(1).is_some() || cx.opset >= 13 && cx.opt_input(1).is_some() {
        return Ok(None); // non-constant sizes
    }
    let Dim::Known(d) = dim else { return Ok(None) };
    let chunk = super::dim_i64((*d as i128 + n as i128 - 1) / n as i128)?;
    if cx.node.attr_i("num_outputs").is_some() {
        let mut v = vec![chunk; n as usize];
        let last = super::dim_i64(*d as i128 - chunk as i128 * (n as i128 - 1))?;
        if let Some(l) = v.last_mut() {
            *l = last;
        }
        return Ok(Some(v));
    }
    if d % n != 0 {
        return Err(format!("cannot split {d} evenly into {n}"));
    }
    Ok(Some(vec![d / n; n as usize]))
}

pub struct Split;
impl Op for Split {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let a = axis(cx.attr_i("axis", 0), x.len())?;
        let sizes = split_sizes(cx, &x[a])?;
        Ok((0..cx.n_outputs())
            .map(|i| {
                let mut s = x.to_vec();
                s[a] = sizes
                    .as_ref()
                    .map(|v| Dim::Known(v[i]))
                    .unwrap_or(Dim::Unknown);
                Fact::new(cx.dtype(0), Some(s))
            })
            .collect())
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("Split", &Split).channels(Channels::Split)];
