//! The transfer rule of each op type: how the op relates the channel slots of its inputs and
//! outputs (see the parent module). An op not in [`RULES`] blocks its inputs, so a missing rule
//! can only decline, never mis-prune.

use super::{Cx, Role, SpaceId};
use crate::ir::ValueId;

mod layout;
mod linear;
mod norm;
mod pointwise;

use layout::{concat, flatten, reduce, reshape, shape, slice, split, squeeze_unsqueeze, transpose};
use linear::{conv, conv_transpose, gemm, matmul};
use norm::{group_norm, layer_norm, per_channel_params};
use pointwise::{elementwise, pad, passthrough, resize};

pub(super) type Rule = fn(&mut Cx) -> Result<(), String>;

/// Transfer rules by op type (default domain). Ops not listed block their inputs.
pub(super) static RULES: &[(&str, Rule)] = &[
    ("Conv", conv),
    ("ConvTranspose", conv_transpose),
    ("Gemm", gemm),
    ("MatMul", matmul),
    ("BatchNormalization", per_channel_params),
    ("InstanceNormalization", per_channel_params),
    ("GroupNormalization", group_norm),
    ("LayerNormalization", layer_norm),
    ("PRelu", elementwise),
    ("Relu", passthrough),
    ("LeakyRelu", passthrough),
    ("Clip", passthrough),
    ("Sigmoid", passthrough),
    ("HardSigmoid", passthrough),
    ("HardSwish", passthrough),
    ("Tanh", passthrough),
    ("Elu", passthrough),
    ("Selu", passthrough),
    ("Celu", passthrough),
    ("Softplus", passthrough),
    ("Softsign", passthrough),
    ("Gelu", passthrough),
    ("Erf", passthrough),
    ("Mish", passthrough),
    ("Exp", passthrough),
    ("Neg", passthrough),
    ("Abs", passthrough),
    ("Sqrt", passthrough),
    ("Identity", passthrough),
    ("Dropout", passthrough),
    ("Cast", passthrough),
    ("MaxPool", passthrough),
    ("AveragePool", passthrough),
    ("LpPool", passthrough),
    ("GlobalAveragePool", passthrough),
    ("GlobalMaxPool", passthrough),
    ("Resize", resize),
    ("Upsample", resize),
    ("Add", elementwise),
    ("Sub", elementwise),
    ("Mul", elementwise),
    ("Div", elementwise),
    ("Max", elementwise),
    ("Min", elementwise),
    ("Sum", elementwise),
    ("Concat", concat),
    ("Slice", slice),
    ("Split", split),
    ("Pad", pad),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("Squeeze", squeeze_unsqueeze),
    ("Unsqueeze", squeeze_unsqueeze),
    ("Transpose", transpose),
    ("Shape", shape),
    ("ReduceMean", reduce),
    ("ReduceMax", reduce),
    ("ReduceMin", reduce),
    ("ReduceSum", reduce),
];

/// The channel space of input 0 and its concrete shape; `None` when input 0 carries no traced
/// channels (the rule then has nothing to do).
fn traced_input(cx: &Cx) -> Result<Option<(SpaceId, Vec<i64>)>, String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(None);
    };
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    Ok(Some((s, x)))
}

fn out_shape(cx: &Cx, i: usize) -> Result<Vec<i64>, String> {
    let o = cx.output(i).ok_or("missing output")?;
    cx.shape(o)
        .ok_or_else(|| "output shape unknown".to_string())
}

/// Space of input `i` on `axis` (blocked-new one when the input carries none, e.g. graph inputs).
fn input_space(cx: &mut Cx, i: usize, axis: usize, why_new: &str) -> Result<SpaceId, String> {
    let v = cx.input(i).ok_or("missing input")?;
    if let Some(s) = cx.space(Some(v)) {
        if cx.ch.spaces[s].axis != axis {
            return Err(format!(
                "channels of '{}' are on axis {} but the op uses axis {axis}",
                cx.g.value(v).name,
                cx.ch.spaces[s].axis
            ));
        }
        return Ok(s);
    }
    let shape = cx.shape(v).ok_or("input shape unknown")?;
    let len = *shape.get(axis).ok_or("rank too small")? as usize;
    let s = cx.ch.new_space(v, axis, len);
    cx.ch.block_space(s, why_new);
    cx.ch.space_of.remove(&v);
    Ok(s)
}
