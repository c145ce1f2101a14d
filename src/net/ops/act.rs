//! Element-wise activations and their kin.
//! - <https://onnx.ai/onnx/operators/onnx__Relu.html>, LeakyRelu, Sigmoid, HardSigmoid, HardSwish,
//!   Tanh, Elu, Selu, Celu, Softplus, Softsign, Gelu (opset 20, `approximate`), Erf, Mish, Exp,
//!   Log, Sqrt, Reciprocal, Neg, Abs, Identity, Dropout (inference: identity)
//! - Clip: <https://onnx.ai/onnx/operators/onnx__Clip.html> (bounds as attributes before opset
//!   11, as inputs after)
//! - PRelu: <https://onnx.ai/onnx/operators/onnx__PRelu.html> (slope broadcast; a weight)
//! - Softmax / LogSoftmax: <https://onnx.ai/onnx/operators/onnx__Softmax.html> (opset < 13
//!   flattens to 2-D at `axis`, default 1; opset ≥ 13 works on `axis`, default −1)
//! - Cast: <https://onnx.ai/onnx/operators/onnx__Cast.html> (float to float only)

use super::Entry;
use super::{axis, one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};
use burn::tensor::activation as a;

pub struct Act;
pub struct Cast;
pub struct Clip;
pub struct PRelu;
pub struct Softmax;

impl BurnOp for Act {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        let t = x.t;
        let f = |k: &str, d: f32| cx.attr_f(k, d) as f64;
        let y = match cx.node.op_type.as_str() {
            "Relu" => crate::net::fastew::relu(t),
            "LeakyRelu" => a::leaky_relu(t, f("alpha", 0.01)),
            // 1/(1 + e^−x): accurate for very negative x, where burn's sigmoid loses the
            // relative precision (measured: 13% off at σ ≈ 1e-6 on PP-OCR's detector).
            "Sigmoid" => (t.neg().exp() + 1.0).recip(),
            "HardSigmoid" => a::hard_sigmoid(t, f("alpha", 0.2), f("beta", 0.5)),
            "HardSwish" => t.clone() * a::hard_sigmoid(t, 1.0 / 6.0, 0.5),
            "Tanh" => t.tanh(),
            "Elu" | "Selu" | "Celu" => {
                let (alpha, gamma) = match cx.node.op_type.as_str() {
                    "Elu" => (f("alpha", 1.0), 1.0),
                    "Selu" => (f("alpha", 1.673_263_2), f("gamma", 1.050_701)),
                    _ => (f("alpha", 1.0), 1.0),
                };
                // max(0,x) + alpha·(exp(min(0,x)/c) − 1), c = alpha for Celu, 1 otherwise.
                let c = if cx.node.op_type == "Celu" {
                    alpha
                } else {
                    1.0
                };
                let neg = t.clone().clamp_max(0.0);
                (a::relu(t) + ((neg / c).exp() - 1.0) * alpha) * gamma
            }
            "Softplus" => a::softplus(t, 1.0),
            "Softsign" => t.clone() / (t.abs() + 1.0),
            "Gelu" => match cx.attr_s("approximate", "none").as_str() {
                "tanh" => a::gelu_approximate(t),
                _ => a::gelu(t),
            },
            "Erf" => t.erf(),
            "Mish" => a::mish(t),
            "Exp" => t.exp(),
            "Log" => t.log(),
            "Sqrt" => t.sqrt(),
            "Reciprocal" => t.recip(),
            "Neg" => t.neg(),
            "Abs" => t.abs(),
            "Identity" | "Dropout" => {
                if cx.node.op_type == "Dropout"
                    && cx.node.outputs.get(1).is_some_and(|o| o.is_some())
                {
                    return Err("Dropout's mask output is not supported".into());
                }
                t
            }
            other => return Err(format!("{other} has no burn implementation")),
        };
        one(Dt::new(y, r))
    }
}

impl BurnOp for Cast {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let to = cx.attr_i("to", 1);
        // FLOAT, FLOAT16, DOUBLE, BFLOAT16: computed in f32 here.
        if !matches!(to, 1 | 10 | 11 | 16) {
            return Err(format!(
                "Cast to {} of a tensor computed from the image input is not supported",
                crate::ir::DataType(to as i32).name()
            ));
        }
        one(cx.f(ins, 0)?)
    }
}

impl BurnOp for Clip {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let (lo, hi) = if cx.opset < 11 {
            (
                cx.node.attr_f("min").unwrap_or(f32::NEG_INFINITY),
                cx.node.attr_f("max").unwrap_or(f32::INFINITY),
            )
        } else {
            let s = |i: usize, d: f32| -> OpResult<f32> {
                Ok(cx
                    .floats(ins, i)?
                    .and_then(|v| v.first().copied())
                    .unwrap_or(d))
            };
            (s(1, f32::NEG_INFINITY)?, s(2, f32::INFINITY)?)
        };
        let mut t = x.t;
        if lo.is_finite() {
            t = t.clamp_min(lo);
        }
        if hi.is_finite() {
            t = t.clamp_max(hi);
        }
        one(Dt::new(t, x.rank))
    }
}

impl BurnOp for PRelu {
    fn weights(&self) -> &'static [usize] {
        &[1]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let s = cx.f(ins, 1)?;
        let r = x.rank.max(s.rank);
        // relu(x) − slope·relu(−x)
        let y = a::relu(x.t.clone()) - s.t * a::relu(x.t.neg());
        one(Dt::new(y, r))
    }
}

impl BurnOp for Softmax {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let log = cx.node.op_type == "LogSoftmax";
        let apply = |t, ax: usize| {
            if log {
                a::log_softmax(t, ax)
            } else {
                a::softmax(t, ax)
            }
        };
        if cx.opset >= 13 {
            let ax = axis(cx.attr_i("axis", -1), x.rank)?;
            let p = x.ax(ax);
            return one(Dt::new(apply(x.t, p), x.rank));
        }
        let ax = axis(cx.attr_i("axis", 1), x.rank)?;
        let dims = x.dims();
        let outer: usize = dims[..ax].iter().product();
        let inner: usize = dims[ax..].iter().product();
        let flat = x.reshape(&[outer, inner])?;
        let y = Dt::new(apply(flat.t, 5), 2);
        one(y.reshape(&dims)?)
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("Relu", &Act),
    ("LeakyRelu", &Act),
    ("Sigmoid", &Act),
    ("HardSigmoid", &Act),
    ("HardSwish", &Act),
    ("Tanh", &Act),
    ("Elu", &Act),
    ("Selu", &Act),
    ("Celu", &Act),
    ("Softplus", &Act),
    ("Softsign", &Act),
    ("Gelu", &Act),
    ("Erf", &Act),
    ("Mish", &Act),
    ("Exp", &Act),
    ("Log", &Act),
    ("Sqrt", &Act),
    ("Reciprocal", &Act),
    ("Neg", &Act),
    ("Abs", &Act),
    ("Identity", &Act),
    ("Dropout", &Act),
    ("Cast", &Cast),
    ("Clip", &Clip),
    ("PRelu", &PRelu),
    ("Softmax", &Softmax),
    ("LogSoftmax", &Softmax),
];
