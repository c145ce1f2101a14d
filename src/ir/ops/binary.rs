//! Broadcasting elementwise ops (numpy rules, opset ≥ 7):
//! <https://onnx.ai/onnx/operators/onnx__Add.html>, Sub, Mul, Div, Pow, Mod, Max/Min/Sum/Mean
//! (variadic), PRelu (slope broadcast to X), comparisons and logic (bool output),
//! <https://onnx.ai/onnx/operators/onnx__Where.html>.

use super::{broadcast, eval, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::DataType;
use std::sync::Arc;

fn out_shape(cx: &InferCx) -> OpResult<Option<Vec<crate::ir::Dim>>> {
    let mut s: Option<Vec<crate::ir::Dim>> = Some(vec![]);
    for f in cx.inputs.iter().flatten() {
        s = match (s, &f.shape) {
            (Some(a), Some(b)) => Some(broadcast(&a, b)?),
            _ => None,
        };
    }
    Ok(s)
}

pub struct Binary;
impl Op for Binary {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        let dtype = cx.dtype(0).or(cx.dtype(1));
        if cx.all_const() && cx.node.op_type != "Mean" && cx.node.op_type != "PRelu" {
            let mut acc = cx.value(0);
            for i in 1..cx.inputs.len() {
                acc = match (acc, cx.value(i)) {
                    (Some(a), Some(b)) => eval::arith(&cx.node.op_type, &a, &b),
                    _ => None,
                };
            }
            if let Some(v) = acc {
                return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
            }
        }
        Ok(vec![Fact::new(dtype, shape)])
    }
}

pub struct Compare;
impl Op for Compare {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        if cx.all_const() {
            if let (Some(a), Some(b)) = (cx.value(0), cx.value(1)) {
                if let Some(v) = eval::compare(&cx.node.op_type, &a, &b) {
                    return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
                }
            }
        }
        Ok(vec![Fact::new(Some(DataType::BOOL), shape)])
    }
}

pub struct Where;
impl Op for Where {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        if cx.all_const() {
            if let (Some(c), Some(x), Some(y)) = (cx.value(0), cx.value(1), cx.value(2)) {
                if let Some(v) = eval::where_(&c, &x, &y) {
                    return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
                }
            }
        }
        Ok(vec![Fact::new(cx.dtype(1).or(cx.dtype(2)), shape)])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new("Add", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Sub", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Mul", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AnyOperand),
    OpDef::new("Div", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::Numerator),
    OpDef::new("Pow", &Binary),
    OpDef::new("Mod", &Binary),
    OpDef::new("Max", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Min", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Sum", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Mean", &Binary),
    OpDef::new("Equal", &Compare),
    OpDef::new("Less", &Compare),
    OpDef::new("Greater", &Compare),
    OpDef::new("LessOrEqual", &Compare),
    OpDef::new("GreaterOrEqual", &Compare),
    OpDef::new("And", &Compare),
    OpDef::new("Or", &Compare),
    OpDef::new("Xor", &Compare),
    OpDef::new("Where", &Where),
];
