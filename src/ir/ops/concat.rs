//! <https://onnx.ai/onnx/operators/onnx__Concat.html>: joins inputs along `axis` (negative
//! allowed from opset 11). Folded for constants; propagates symbolic shape vectors.

use super::{axis, eval, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::{Arr, Dim};
use ndarray::{concatenate, Axis};
use std::sync::Arc;

pub struct Concat;
impl Op for Concat {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let first = cx.shape(0)?;
        let r = first.len();
        let a = axis(cx.attr_i("axis", 0), r)?;
        let mut out = first.to_vec();
        let mut total = Some(0i64);
        let mut syms = vec![];
        for i in 0..cx.inputs.len() {
            let s = cx.shape(i)?;
            if s.len() != r {
                return Err(format!(
                    "input #{i} has rank {} but input #0 has rank {r}",
                    s.len()
                ));
            }
            match &s[a] {
                Dim::Known(n) => total = total.and_then(|t| t.checked_add(*n)),
                d => {
                    total = None;
                    syms.push(d.clone());
                }
            }
        }
        out[a] = match total {
            Some(t) => Dim::Known(t),
            None if cx.inputs.len() == 1 => syms[0].clone(),
            None => Dim::Unknown,
        };
        if cx.all_const() {
            let vals: Option<Vec<Arr>> = (0..cx.inputs.len()).map(|i| cx.value(i)).collect();
            if let Some(v) = vals.and_then(|v| concat_arrs(&v, a)) {
                eval::check_size(v.shape())?;
                return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
            }
        }
        let mut f = Fact::new(cx.dtype(0), Some(out));
        if r == 1 {
            let parts: Option<Vec<Vec<Dim>>> = cx
                .inputs
                .iter()
                .map(|f| f.and_then(|f| f.dims_value()))
                .collect();
            f.sym = parts.map(|p| p.concat());
        }
        Ok(vec![f])
    }
}

fn concat_arrs(v: &[Arr], a: usize) -> Option<Arr> {
    macro_rules! cat {
        ($ctor:path) => {{
            let views: Option<Vec<_>> = v
                .iter()
                .map(|x| match x {
                    $ctor(y) => Some(y.view()),
                    _ => None,
                })
                .collect();
            Some($ctor(concatenate(Axis(a), &views?).ok()?))
        }};
    }
    match v.first()? {
        Arr::F32(_) => cat!(Arr::F32),
        Arr::F64(_) => cat!(Arr::F64),
        Arr::I64(_) => cat!(Arr::I64),
        Arr::I32(_) => cat!(Arr::I32),
        Arr::I8(_) => cat!(Arr::I8),
        Arr::U8(_) => cat!(Arr::U8),
        Arr::Bool(_) => cat!(Arr::Bool),
    }
}

/// For a 1-D value made by a standard `Concat` (axis 0) and read by one node only: the input
/// slot, value and offset of the piece holding element `i`, given each piece's length. Lets a
/// pass rewrite one entry of a computed shape vector (torch's dynamic-batch `view(n, g, c/g,
/// h, w)` concatenates the batch read from `Shape` with constants).
pub fn concat_piece(
    g: &crate::ir::Graph,
    v: crate::ir::ValueId,
    i: usize,
    len: impl Fn(crate::ir::ValueId) -> Option<usize>,
) -> Option<(crate::ir::NodeId, usize, crate::ir::ValueId, usize)> {
    let node = g.producer(v, CONCAT)?;
    let n = g.node(node);
    if n.attr_i("axis") != Some(0) || g.value(v).uses.len() != 1 || g.is_graph_output(v) {
        return None;
    }
    let mut off = 0usize;
    for (k, p) in n.inputs.iter().enumerate() {
        let p = (*p)?;
        let l = len(p)?;
        if i < off + l {
            return Some((node, k, p, i - off));
        }
        off += l;
    }
    None
}

/// Op types other passes name (when they build or recognise such nodes).
pub const CONCAT: &str = "Concat";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new(CONCAT, &Concat)
    .channels(Channels::Concat)
    .zeros(Zeros::Concat)];
