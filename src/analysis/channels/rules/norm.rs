//! Per-channel normalisations and parameters: BatchNormalization, InstanceNormalization,
//! GroupNormalization, LayerNormalization.

use super::*;

pub(super) fn per_channel_params(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let c = cx.ch.spaces[s].len as i64;
    for i in 1..cx.node().inputs.len() {
        if let Some(v) = cx.input(i) {
            if !cx.is_const(v) {
                return Err("per-channel parameters are not constant".into());
            }
            // One value per channel, or the surgery would cut past them (an invalid file).
            if let Some(d) = cx.shape(v).filter(|d| d.iter().product::<i64>() != c) {
                return Err(format!(
                    "per-channel parameter #{i} has shape {d:?} for {c} channels"
                ));
            }
        }
    }
    if cx.extra_outputs_used() {
        return Err("training-mode outputs".into());
    }
    cx.alias(0);
    Ok(())
}

/// GroupNormalization: statistics run over each group of C/G consecutive channels, so the
/// channels of one group are one atom (all go or none stay) and removing whole groups is exact.
/// `scale`/`bias` (per channel from opset 21, per group in opset 18) must be constant.
/// <https://onnx.ai/onnx/operators/onnx__GroupNormalization.html>
pub(super) fn group_norm(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    if cx.ch.spaces[s].axis != 1 {
        return Err("channels are not on GroupNormalization's axis 1".into());
    }
    for i in 1..cx.node().inputs.len() {
        if let Some(v) = cx.input(i) {
            if !cx.is_const(v) {
                return Err("group-norm scale/bias are not constant".into());
            }
        }
    }
    let g = cx.node().attr_i("num_groups").ok_or("no num_groups")?;
    let c = cx.ch.spaces[s].len as i64;
    if g <= 0 || c % g != 0 {
        return Err(format!("{c} channels in {g} norm groups"));
    }
    let k = (c / g) as usize;
    for gi in 0..g as usize {
        for j in 1..k {
            let (u, v) = (cx.ch.slot(s, gi * k), cx.ch.slot(s, gi * k + j));
            cx.ch.union(u, v);
        }
    }
    cx.alias(0);
    Ok(())
}

/// LayerNormalization normalises over axes `axis..rank`. Over the channel axis (ConvNeXt's
/// Transpose → LayerNormalization → …) its mean and variance mix channels: removing one changes
/// every other channel's output, so the masked original is not the pruned model. That is not
/// exact, so it is declined with that reason (recovery could correct it, but this tool rewrites
/// only what is exact). Over other axes the channels pass through unchanged.
/// <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
pub(super) fn layer_norm(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let rank = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?
        .len() as i64;
    let a = cx.node().attr_i("axis").unwrap_or(-1);
    let first = if a < 0 { a + rank } else { a };
    if cx.ch.spaces[s].axis as i64 >= first {
        return Err(
            "LayerNormalization over the channel axis: its statistics mix channels, so removing \
             one changes the others (not exact)"
                .into(),
        );
    }
    if cx.extra_outputs_used() {
        return Err("LayerNormalization's mean/inv-std outputs are used".into());
    }
    cx.alias(0);
    Ok(())
}
