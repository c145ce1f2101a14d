//! The surgery of the ops whose constant operands count channels: `Pad` amounts, `Slice`
//! bounds, `Split` sizes, constant `Reshape` targets and `Resize` sizes.

use super::Rw;
use crate::error::{Error, Result};
use crate::ir::ops;
use crate::ir::{AttrValue, Tensor, ValueId};

pub(super) fn pad(rw: &mut Rw) -> Result<()> {
    let Some(os) = rw.space(rw.output(0)) else {
        return Ok(());
    };
    let Some(is) = rw.space(rw.input(0)) else {
        return Ok(());
    };
    if os == is {
        return Ok(());
    }
    let pads_t = rw.const_input(1)?;
    let mut pads = pads_t.as_i64s().unwrap_or_default();
    let r = pads.len() / 2;
    let axis = rw.ch.spaces[os].axis;
    let (b, cin) = (pads[axis] as usize, rw.ch.spaces[is].len);
    let kept = rw.ch.kept(os, rw.keep);
    let nb = kept.iter().filter(|&&j| j < b).count() as i64;
    let ne = kept.iter().filter(|&&j| j >= b + cin).count() as i64;
    if nb == pads[axis] && ne == pads[axis + r] {
        return Ok(());
    }
    pads[axis] = nb;
    pads[axis + r] = ne;
    rw.set_const(1, Tensor::i64(&pads_t.dims, pads));
    Ok(())
}

pub(super) fn slice(rw: &mut Rw) -> Result<()> {
    let Some(os) = rw.space(rw.output(0)) else {
        return Ok(());
    };
    let Some(is) = rw.space(rw.input(0)) else {
        return Ok(());
    };
    if os == is {
        return Ok(());
    }
    let in_kept = rw.ch.kept(is, rw.keep);
    if in_kept.len() == rw.ch.spaces[is].len
        && rw.ch.kept(os, rw.keep).len() == rw.ch.spaces[os].len
    {
        return Ok(());
    }
    let label = rw.label();
    let axes_t = rw.input(3).map(|_| rw.const_input(3)).transpose()?;
    let rank = rw.a.fact(rw.input(0).unwrap()).rank().unwrap_or(0);
    let axes: Vec<usize> = match &axes_t {
        Some(t) => t
            .as_i64s()
            .unwrap_or_default()
            .iter()
            .map(|&x| {
                if x < 0 {
                    (x + rank as i64) as usize
                } else {
                    x as usize
                }
            })
            .collect(),
        None => (0..rw.const_input(1)?.numel() as usize).collect(),
    };
    let axis = rw.ch.spaces[is].axis;
    let k = axes
        .iter()
        .position(|&x| x == axis)
        .ok_or_else(|| Error::Invalid(format!("{label}: channel axis not sliced")))?;
    // Output channel j is input channel first + j·step of the original slice (found by
    // channel, not by atom: a depthwise conv's input and output share atoms, so a GhostNet
    // concat holds each atom twice).
    let at = |i: usize| -> Result<i64> {
        rw.const_input(i)?
            .as_i64s()
            .and_then(|v| v.get(k).copied())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{label}: slice parameter {i} is not an integer list"
                ))
            })
    };
    let step0 = if rw.input(4).is_some() { at(4)? } else { 1 };
    let len = rw.ch.spaces[is].len as i64;
    let (first, _, _) = crate::ir::ops::slice_clamp(at(1)?, at(2)?, step0, len);
    // New positions (in the pruned input) of the kept output channels.
    let pos: Vec<i64> = rw
        .ch
        .kept(os, rw.keep)
        .iter()
        .map(|&j| {
            let c = (first + j as i64 * step0) as usize;
            in_kept
                .iter()
                .position(|&i| i == c)
                .map(|p| p as i64)
                .unwrap_or(-1)
        })
        .collect();
    let step = if pos.len() > 1 { pos[1] - pos[0] } else { 1 };
    if pos.contains(&-1) || step <= 0 || pos.windows(2).any(|w| w[1] - w[0] != step) {
        return Err(Error::Invalid(format!(
            "internal: {label}: kept channels of a channel Slice are not evenly spaced"
        )));
    }
    let mut starts = rw.const_input(1)?;
    let mut ends = rw.const_input(2)?;
    let mut sv = starts.as_i64s().unwrap_or_default();
    let mut ev = ends.as_i64s().unwrap_or_default();
    sv[k] = pos[0];
    ev[k] = pos[pos.len() - 1] + 1;
    starts = Tensor::i64(&starts.dims, sv);
    ends = Tensor::i64(&ends.dims, ev);
    rw.set_const(1, starts);
    rw.set_const(2, ends);
    if rw.input(4).is_some() {
        let st = rw.const_input(4)?;
        let mut v = st.as_i64s().unwrap_or_default();
        v[k] = step;
        rw.set_const(4, Tensor::i64(&st.dims, v));
    } else if step != 1 {
        return Err(Error::Usage(format!(
            "{label}: pruning would need a slice step"
        )));
    }
    Ok(())
}

pub(super) fn split(rw: &mut Rw) -> Result<()> {
    let outs: Vec<Option<ValueId>> = rw.m.graph.node(rw.id).outputs.clone();
    let Some(is) = rw.space(rw.input(0)) else {
        return Ok(());
    };
    let sizes: Vec<i64> = outs
        .iter()
        .map(|o| {
            rw.space(*o)
                .map(|s| rw.ch.kept(s, rw.keep).len() as i64)
                .unwrap_or(0)
        })
        .collect();
    if outs.iter().any(|o| rw.space(*o) == Some(is)) {
        return Ok(()); // split along another axis
    }
    let opset = rw.m.opset();
    if opset >= 13 {
        let t = Tensor::i64(&[sizes.len() as i64], sizes);
        if rw.m.graph.node(rw.id).inputs.len() < 2 {
            rw.m.graph.node_mut(rw.id).inputs.push(None);
        }
        rw.set_const(1, t);
        rw.m.graph
            .node_mut(rw.id)
            .attrs
            .retain(|a| a.name != "num_outputs");
    } else {
        rw.m.graph
            .node_mut(rw.id)
            .set_attr("split", AttrValue::Ints(sizes));
    }
    Ok(())
}

pub(super) fn reshape(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.output(0)) else {
        return Ok(());
    };
    let Some(tv) = rw.input(1) else { return Ok(()) };
    let axis = rw.ch.spaces[s].axis;
    let full = rw.ch.spaces[s].len as i64;
    if let Some(t) = rw.m.graph.foldable_const(tv).map(|t| (**t).clone()) {
        let mut v = t.as_i64s().unwrap_or_default();
        if v.get(axis) == Some(&full) {
            v[axis] = k.len() as i64;
            rw.set_const(1, Tensor::i64(&t.dims, v));
        }
        return Ok(());
    }
    // A computed target whose entry sits in a constant piece of a Concat (the analysis
    // accepted nothing else): that piece is replaced.
    let len = |p| {
        let d = rw.a.fact(p).concrete()?;
        (d.len() == 1).then(|| d[0] as usize)
    };
    let Some((cat, slot, piece, off)) = ops::concat_piece(&rw.m.graph, tv, axis, len) else {
        return Ok(());
    };
    let Some(t) = rw.m.graph.foldable_const(piece).map(|t| (**t).clone()) else {
        return Ok(());
    };
    let mut v = t.as_i64s().unwrap_or_default();
    if v.get(off) == Some(&full) {
        v[off] = k.len() as i64;
        let name = format!("{}_pruned", rw.m.graph.value(piece).name);
        let nv = rw.m.graph.add_const(&name, Tensor::i64(&t.dims, v));
        rw.m.graph.set_input(cat, slot, Some(nv));
    }
    Ok(())
}

/// A constant `sizes` of `Resize` states the channel count: set it to the kept count. (A
/// computed one passed the analysis only when read from the input's own shape, which follows.)
pub(super) fn resize_sizes(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.output(0)) else {
        return Ok(());
    };
    match rw.input(3) {
        None => return Ok(()),
        Some(v)
            if rw.m.graph.foldable_const(v).is_none()
                && ops::sizes_follow_input(&rw.m.graph, rw.id, rw.ch.spaces[s].axis) =>
        {
            return Ok(())
        }
        // Anything else must be a constant (an error otherwise: the trial rewrite declines).
        Some(_) => {}
    }
    let t = rw.const_input(3)?;
    let mut v = t.as_i64s().unwrap_or_default();
    let axis = rw.ch.spaces[s].axis;
    if let Some(d) = v.get_mut(axis) {
        *d = k.len() as i64;
        rw.set_const(3, Tensor::i64(&t.dims, v));
    }
    Ok(())
}
