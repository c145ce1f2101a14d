//! <https://onnx.ai/onnx/operators/onnx__Shape.html> (start/end from opset 15) and
//! <https://onnx.ai/onnx/operators/onnx__Size.html>. The value is constant when the input shape
//! is fully known; otherwise the (partly symbolic) dims travel in `Fact::sym`.

use super::{concrete, numel, Channels, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::{DataType, Dim, Tensor};
use std::sync::Arc;

pub struct Shape;
impl Op for Shape {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let r = x.len() as i64;
        let norm = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
        let s = norm(cx.attr_i("start", 0));
        let e = norm(cx.attr_i("end", r));
        let dims: Vec<Dim> = if s < e { x[s..e].to_vec() } else { vec![] };
        if let Some(c) = concrete(&dims) {
            return Ok(vec![Fact::from_tensor(Arc::new(Tensor::i64(
                &[c.len() as i64],
                c,
            )))]);
        }
        let mut f = Fact::known(Some(DataType::INT64), &[dims.len() as i64]);
        f.sym = Some(dims);
        Ok(vec![f])
    }
}

pub struct Size;
impl Op for Size {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        if let Some(n) = numel(x) {
            return Ok(vec![Fact::from_tensor(Arc::new(Tensor::i64(&[], vec![n])))]);
        }
        Ok(vec![Fact::known(Some(DataType::INT64), &[])])
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const SHAPE: &str = "Shape";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(SHAPE, &Shape).channels(Channels::Shape),
    OpDef::new("Size", &Size),
];
