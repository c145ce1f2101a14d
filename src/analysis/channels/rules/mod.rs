//! The transfer rule of each kind of channel behaviour: how an op relates the channel slots of
//! its inputs and outputs (see the parent module). An op whose registry row says
//! `Channels::Blocks` (the default) blocks its inputs, so a missing rule can only decline,
//! never mis-prune.

use super::{Cx, Role, SpaceId};
use crate::ir::ops::Channels;
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

/// The transfer rule of each kind of channel behaviour (an op's kind is in its registry row,
/// `ir::ops::OpDef::channels`). `Blocks` has none: the op blocks its inputs.
pub(super) fn rule(c: Channels) -> Option<Rule> {
    Some(match c {
        Channels::Blocks => return None,
        Channels::Passthrough => passthrough,
        Channels::Elementwise => elementwise,
        Channels::PerChannelParams => per_channel_params,
        Channels::Conv => conv,
        Channels::ConvTranspose => conv_transpose,
        Channels::Gemm => gemm,
        Channels::MatMul => matmul,
        Channels::GroupNorm => group_norm,
        Channels::LayerNorm => layer_norm,
        Channels::Resize => resize,
        Channels::Concat => concat,
        Channels::Slice => slice,
        Channels::Split => split,
        Channels::Pad => pad,
        Channels::Flatten => flatten,
        Channels::Reshape => reshape,
        Channels::SqueezeUnsqueeze => squeeze_unsqueeze,
        Channels::Transpose => transpose,
        Channels::Shape => shape,
        Channels::Reduce => reduce,
    })
}

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
