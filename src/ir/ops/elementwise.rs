//! Shape-preserving ops.
//! - Activations: <https://onnx.ai/onnx/operators/onnx__Relu.html> and siblings (LeakyRelu,
//!   Sigmoid, HardSigmoid, HardSwish, Tanh, Elu, Selu, Softplus, Gelu (opset 20), Erf, Mish, ...).
//! - Clip: <https://onnx.ai/onnx/operators/onnx__Clip.html> (min/max are attributes before
//!   opset 11, optional inputs after).
//! - Identity, Dropout (<https://onnx.ai/onnx/operators/onnx__Dropout.html>: optional `mask`
//!   output), Cast/CastLike, Softmax/LogSoftmax, InstanceNormalization, GroupNormalization, LRN.

use super::{Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Arr;
use crate::ir::DataType;
use std::sync::Arc;

fn same(cx: &InferCx) -> OpResult<Fact> {
    let x = cx.input(0)?;
    Ok(Fact::new(x.dtype, x.shape.clone()))
}

/// Output 0 has input 0's type and shape; extra outputs unknown.
pub struct SameShape;
impl Op for SameShape {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let mut out = vec![same(cx)?];
        out.resize(cx.n_outputs(), Fact::default());
        Ok(out)
    }
}

/// Elementwise unary, folded for a few float functions.
pub struct Unary;
impl Op for Unary {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let mut f = same(cx)?;
        if cx.all_const() {
            if let Some(v) = cx.value(0).and_then(|a| unary(&cx.node.op_type, &a)) {
                f = Fact::from_tensor(Arc::new(v.to_tensor()));
            }
        }
        if cx.node.op_type == "Not" {
            f.dtype = Some(DataType::BOOL);
        }
        Ok(vec![f])
    }
}

pub struct Clip;
impl Op for Clip {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        Ok(vec![same(cx)?])
    }
}

pub struct Identity;
impl Op for Identity {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        Ok(vec![x.clone()])
    }
}

pub struct Dropout;
impl Op for Dropout {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        let mut out = vec![Fact::new(x.dtype, x.shape.clone())];
        if cx.n_outputs() > 1 {
            out.push(Fact::new(Some(DataType::BOOL), x.shape.clone()));
        }
        Ok(out)
    }
}

pub struct Cast;
impl Op for Cast {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        let to = DataType(cx.attr_i("to", 0) as i32);
        cast_to(cx, x, to)
    }
}

pub struct CastLike;
impl Op for CastLike {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        match cx.dtype(1) {
            Some(to) => cast_to(cx, x, to),
            None => Ok(vec![Fact::new(None, x.shape.clone())]),
        }
    }
}

fn cast_to(cx: &InferCx, x: &Fact, to: DataType) -> OpResult<Vec<Fact>> {
    if cx.all_const() {
        if let Some(v) = cx.value(0).and_then(|a| a.cast(to)) {
            return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
        }
    }
    let mut f = Fact::new(Some(to), x.shape.clone());
    if matches!(to, DataType::INT64 | DataType::INT32) {
        f.sym = x.sym.clone();
    }
    Ok(vec![f])
}

/// Float unary functions used in folding.
fn unary(op: &str, a: &Arr) -> Option<Arr> {
    macro_rules! fl {
        ($x:expr, $ctor:path) => {{
            Some($ctor(match op {
                "Neg" => $x.mapv(|v| -v),
                "Abs" => $x.mapv(|v| v.abs()),
                "Sqrt" => $x.mapv(|v| v.sqrt()),
                "Floor" => $x.mapv(|v| v.floor()),
                "Ceil" => $x.mapv(|v| v.ceil()),
                "Round" => $x.mapv(|v| v.round_ties_even()),
                "Exp" => $x.mapv(|v| v.exp()),
                "Log" => $x.mapv(|v| v.ln()),
                "Reciprocal" => $x.mapv(|v| 1.0 / v),
                "Relu" => $x.mapv(|v| if v > 0.0 { v } else { 0.0 }),
                "Sigmoid" => $x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
                "Tanh" => $x.mapv(|v| v.tanh()),
                "Sin" => $x.mapv(|v| v.sin()),
                "Cos" => $x.mapv(|v| v.cos()),
                _ => return None,
            }))
        }};
    }
    match a {
        Arr::F32(x) => fl!(x, Arr::F32),
        Arr::F64(x) => fl!(x, Arr::F64),
        Arr::I64(x) => match op {
            "Neg" => Some(Arr::I64(x.mapv(|v| v.wrapping_neg()))),
            "Abs" => Some(Arr::I64(x.mapv(|v| v.wrapping_abs()))),
            "Relu" => Some(Arr::I64(x.mapv(|v| v.max(0)))),
            _ => None,
        },
        Arr::I32(x) => match op {
            "Neg" => Some(Arr::I32(x.mapv(|v| v.wrapping_neg()))),
            "Abs" => Some(Arr::I32(x.mapv(|v| v.wrapping_abs()))),
            "Relu" => Some(Arr::I32(x.mapv(|v| v.max(0)))),
            _ => None,
        },
        Arr::Bool(x) if op == "Not" => Some(Arr::Bool(x.mapv(|v| !v))),
        _ => None,
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const SQRT: &str = "Sqrt";
pub const IDENTITY: &str = "Identity";
pub const DROPOUT: &str = "Dropout";
pub const PRELU: &str = "PRelu";
pub const RELU: &str = "Relu";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new("Softmax", &SameShape),
    OpDef::new("LogSoftmax", &SameShape),
    OpDef::new("Hardmax", &SameShape),
    OpDef::new(RELU, &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("LeakyRelu", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new(PRELU, &super::binary::Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::Preserves),
    OpDef::new("Clip", &Clip)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Clip),
    OpDef::new("Sigmoid", &Unary).channels(Channels::Passthrough),
    OpDef::new("HardSigmoid", &Unary).channels(Channels::Passthrough),
    OpDef::new("HardSwish", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Tanh", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Elu", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Selu", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Celu", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Softplus", &Unary).channels(Channels::Passthrough),
    OpDef::new("Softsign", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("ThresholdedRelu", &Unary).zeros(Zeros::Preserves),
    OpDef::new("Gelu", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Erf", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Mish", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Exp", &Unary).channels(Channels::Passthrough),
    OpDef::new("Log", &Unary),
    OpDef::new(SQRT, &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Reciprocal", &Unary),
    OpDef::new("Neg", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Abs", &Unary)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Floor", &Unary),
    OpDef::new("Ceil", &Unary),
    OpDef::new("Round", &Unary),
    OpDef::new("Sign", &Unary),
    OpDef::new("Sin", &Unary),
    OpDef::new("Cos", &Unary),
    OpDef::new("Not", &Unary),
    OpDef::new(IDENTITY, &Identity)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new(DROPOUT, &Dropout)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("Cast", &Cast)
        .channels(Channels::Passthrough)
        .zeros(Zeros::Preserves),
    OpDef::new("CastLike", &CastLike),
];
