//! <https://onnx.ai/onnx/operators/onnx__Transpose.html>: `perm` defaults to reversing the axes.

use super::{eval, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use std::sync::Arc;

pub fn perm(cx: &InferCx, rank: usize) -> OpResult<Vec<usize>> {
    let p: Vec<usize> = match cx.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format!("bad perm value {v}")))
            .collect::<OpResult<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if p.len() != rank
        || p.iter()
            .any(|&i| i >= rank || std::mem::replace(&mut seen[i], true))
    {
        return Err(format!("perm {p:?} is not a permutation of {rank} axes"));
    }
    Ok(p)
}

pub struct Transpose;
impl Op for Transpose {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let p = perm(cx, x.len())?;
        if cx.all_const() {
            if let Some(v) = cx.value(0) {
                eval::check_size(v.shape())?;
                let t = crate::arr_map!(v, a => a.permuted_axes(p.clone()).as_standard_layout().to_owned());
                return Ok(vec![Fact::from_tensor(Arc::new(t.to_tensor()))]);
            }
        }
        Ok(vec![Fact::new(
            cx.dtype(0),
            Some(p.iter().map(|&i| x[i].clone()).collect()),
        )])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("Transpose", &Transpose)
    .channels(Channels::Transpose)
    .zeros(Zeros::Preserves)];
