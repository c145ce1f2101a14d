//! Ops that keep every channel where it is: activations and pools, broadcasting elementwise
//! ops, Resize, Pad.

use super::*;
use crate::ir::ops::names;

pub(super) fn passthrough(cx: &mut Cx) -> Result<(), String> {
    if cx.space(cx.input(0)).is_some() {
        // Pools keep channels on axis 1; everything here is elementwise or per-channel.
        if cx.node().op_type == names::DROPOUT && cx.output(1).is_some() {
            if let Some(m) = cx.output(1) {
                if !cx.g.value(m).uses.is_empty() || cx.g.is_graph_output(m) {
                    return Err("Dropout mask is used".into());
                }
            }
        }
        cx.alias(0);
    }
    Ok(())
}

pub(super) fn resize(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let y = out_shape(cx, 0)?;
    if x.get(axis) != y.get(axis) {
        return Err("resize changes the channel axis".into());
    }
    // `sizes` names the channel count: the rewrite resizes a constant one; a computed one
    // would keep the old count, unless it is read from the input's own shape.
    if let Some(sz) = cx.input(3).filter(|_| cx.node().op_type == names::RESIZE) {
        if !cx.is_const(sz) && !crate::ir::ops::sizes_follow_input(cx.g, cx.id, axis) {
            return Err("resize output sizes are computed at run time".into());
        }
    }
    cx.alias(0);
    Ok(())
}

/// Broadcasting elementwise ops: operands with spaces are joined; constants must be scalar or
/// per-channel along the channel axis.
pub(super) fn elementwise(cx: &mut Cx) -> Result<(), String> {
    let y = out_shape(cx, 0)?;
    let r = y.len();
    let mut out_space: Option<SpaceId> = None;
    let n_in = cx.node().inputs.len();
    // Channel axis, in output coordinates, of the first operand that has a space.
    let mut axis_out = None;
    for i in 0..n_in {
        let Some(v) = cx.input(i) else { continue };
        if let Some(s) = cx.space(Some(v)) {
            let rank = cx.shape(v).ok_or("operand shape unknown")?.len();
            let ax = cx.ch.spaces[s].axis + (r - rank);
            match axis_out {
                None => axis_out = Some(ax),
                Some(a) if a != ax => {
                    return Err("operands carry channels on different axes".into())
                }
                _ => {}
            }
        }
    }
    let Some(axis) = axis_out else { return Ok(()) };
    for i in 0..n_in {
        let Some(v) = cx.input(i) else { continue };
        let shape = cx.shape(v).ok_or("operand shape unknown")?;
        let off = r - shape.len();
        let dim = if axis >= off { shape[axis - off] } else { 1 };
        match cx.space(Some(v)) {
            Some(s) => match out_space {
                None => out_space = Some(s),
                Some(o) => {
                    if !cx.ch.union_spaces(o, s) {
                        return Err("operands have different channel counts".into());
                    }
                }
            },
            None if dim == 1 => {}
            None if cx.is_const(v) => {} // per-channel constant, sliced by the rewrite
            None => {
                return Err(format!(
                    "operand '{}' has channels the analysis cannot trace",
                    cx.g.value(v).name
                ))
            }
        }
    }
    let s = out_space.unwrap();
    if y[axis] as usize != cx.ch.spaces[s].len {
        return Err("output channel count differs from the operands'".into());
    }
    let rank_s = cx
        .shape(cx.ch.spaces[s].value)
        .map(|v| v.len())
        .unwrap_or(0);
    if let Some(o) = cx.output(0) {
        if rank_s == r && cx.ch.spaces[s].axis == axis {
            cx.ch.space_of.insert(o, s);
        } else {
            let ns = cx.ch.new_space(o, axis, y[axis] as usize);
            cx.ch.union_spaces(ns, s);
        }
    }
    Ok(())
}

pub(super) fn pad(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let pads = cx
        .input(1)
        .and_then(|v| cx.g.foldable_const(v))
        .and_then(|t| t.as_i64s())
        .ok_or("pads are not constant (or opset < 11)")?;
    if cx.node().inputs.get(3).copied().flatten().is_some() {
        return Err("Pad with axes input".into());
    }
    if pads.len() != 2 * x.len() {
        return Err("pads do not match the rank".into());
    }
    let (b, e) = (pads[axis], pads[axis + x.len()]);
    let o = cx.output(0).unwrap();
    if b == 0 && e == 0 {
        cx.ch.space_of.insert(o, s);
        return Ok(());
    }
    let mode = cx.node().attr_s("mode").unwrap_or("constant");
    if mode != "constant" || b < 0 || e < 0 {
        return Err(format!("channel-axis Pad in mode '{mode}' or cropping"));
    }
    let value_zero = match cx.input(2) {
        None => true,
        Some(v) => {
            cx.g.foldable_const(v)
                .and_then(|t| t.as_f32s())
                .is_some_and(|v| v.iter().all(|&x| x == 0.0))
        }
    };
    let len = x[axis] as usize + b as usize + e as usize;
    let os = cx.ch.new_space(o, axis, len);
    for j in 0..len {
        let sl = cx.ch.slot(os, j);
        if j < b as usize || j >= b as usize + x[axis] as usize {
            cx.ch.zero_slot[sl] = value_zero;
            if !value_zero {
                cx.ch.blocked[sl] = Some("channel padding with a non-zero value".into());
            }
        } else {
            let src = cx.ch.slot(s, j - b as usize);
            cx.ch.union(sl, src);
        }
    }
    Ok(())
}
