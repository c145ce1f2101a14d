//! <https://onnx.ai/onnx/operators/onnx__ConstantOfShape.html>: a tensor of the shape given by
//! input 0 filled with the one-element `value` attribute (default float32 0).

use super::{eval, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::{AttrValue, Dim, Tensor};
use std::sync::Arc;

pub struct ConstantOfShape;
impl Op for ConstantOfShape {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let fill = match cx.node.attr("value") {
            Some(AttrValue::Tensor(t)) => t.clone(),
            _ => Tensor::f32(&[1], vec![0.0]),
        };
        if fill.numel() != 1 {
            return Err("value must have exactly one element".into());
        }
        let Some(dims) = cx.input(0)?.dims_value() else {
            return Ok(vec![Fact::new(Some(fill.dtype), None)]);
        };
        if dims.iter().any(|d| matches!(d, Dim::Known(v) if *v < 0)) {
            return Err("negative dimension".into());
        }
        if cx.all_const() {
            if let (Some(shape), Some(raw), Some(_)) =
                (super::concrete(&dims), fill.raw(), fill.dtype.byte_size())
            {
                let us: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                if eval::fits(&us) {
                    let n: usize = us.iter().product();
                    let data = raw.repeat(n);
                    let t = Tensor {
                        dtype: fill.dtype,
                        dims: shape,
                        data: crate::ir::TensorData::Raw(data.into()),
                    };
                    return Ok(vec![Fact::from_tensor(Arc::new(t))]);
                }
            }
        }
        Ok(vec![Fact::new(Some(fill.dtype), Some(dims))])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("ConstantOfShape", &ConstantOfShape)];
