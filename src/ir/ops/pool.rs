//! Pooling.
//! - <https://onnx.ai/onnx/operators/onnx__MaxPool.html>, AveragePool, LpPool: sliding windows
//!   with kernel_shape, strides, pads, dilations (MaxPool ≥ 10, AveragePool ≥ 19), ceil_mode
//!   (≥ 10), auto_pad. MaxPool's optional second output holds int64 indices.
//! - <https://onnx.ai/onnx/operators/onnx__GlobalAveragePool.html>, GlobalMaxPool, GlobalLpPool:
//!   spatial dims become 1.

use super::conv::{geometry, window_out};
use super::{Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::{DataType, Dim};

pub struct Pool;
impl Op for Pool {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        if x.len() < 3 {
            return Err(format!("pooling needs rank ≥ 3, got {}", x.len()));
        }
        let sp = x.len() - 2;
        let g = geometry(cx, sp, None)?;
        let ceil = cx.attr_i("ceil_mode", 0) != 0;
        let mut out = vec![x[0].clone(), x[1].clone()];
        for i in 0..sp {
            out.push(window_out(&x[2 + i], &g, i, ceil)?);
        }
        let mut facts = vec![Fact::new(cx.dtype(0), Some(out.clone()))];
        if cx.n_outputs() > 1 {
            facts.push(Fact::new(Some(DataType::INT64), Some(out)));
        }
        Ok(facts)
    }
}

pub struct GlobalPool;
impl Op for GlobalPool {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        if x.len() < 2 {
            return Err(format!("global pooling needs rank ≥ 2, got {}", x.len()));
        }
        let mut out = x[..2].to_vec();
        out.extend(std::iter::repeat_n(Dim::Known(1), x.len() - 2));
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new("MaxPool", &Pool)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("AveragePool", &Pool)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("LpPool", &Pool)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("GlobalAveragePool", &GlobalPool)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("GlobalMaxPool", &GlobalPool)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("GlobalLpPool", &GlobalPool),
];
