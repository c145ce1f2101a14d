//! Channel surgery: given which atoms of a [`ChannelAnalysis`] to keep, slice every weight,
//! bias, normalisation parameter and per-channel constant, and fix depthwise `group`, channel
//! `Pad` amounts, `Split` sizes, `Slice` bounds and constant `Reshape` targets. New constants are
//! created (originals may be shared); what became unused is removed by dead-code elimination.

use crate::analysis::channels::{ChannelAnalysis, SpaceId};
use crate::analysis::Analysis;
use crate::error::{Error, Result};
use crate::ir::ops::{self, Channels, Linear, WeightLayout};
use crate::ir::{AttrValue, Dim, Model, NodeId, Tensor, ValueId, ValueType};
use ndarray::Axis;

/// Applies the keep decision (`keep[atom]`) in place. Blocked atoms must be kept.
pub fn apply(model: &mut Model, a: &Analysis, ch: &ChannelAnalysis, keep: &[bool]) -> Result<()> {
    for (i, atom) in ch.atoms.iter().enumerate() {
        if !keep[i] && atom.blocked.is_some() {
            return Err(Error::Invalid(format!(
                "internal: blocked channel atom {i} marked for removal"
            )));
        }
    }
    // Every space keeps at least one channel.
    for (s, sp) in ch.spaces.iter().enumerate() {
        if sp.len > 0 && ch.kept(s, keep).is_empty() {
            return Err(Error::Usage(format!(
                "the plan removes every channel of '{}'",
                model.graph.value(sp.value).name
            )));
        }
    }
    let order = model
        .graph
        .topo_order()
        .map_err(|_| Error::Invalid("cycle".into()))?;
    for id in order {
        rewrite_node(model, a, ch, keep, id)?;
    }
    // Declared shapes of values whose channels changed.
    for (s, sp) in ch.spaces.iter().enumerate() {
        let n = ch.kept(s, keep).len() as i64;
        if n as usize == sp.len {
            continue;
        }
        for v in spaces_values(ch, s) {
            let val = model.graph.value_mut(v);
            if let Some(info) = val.info.as_mut() {
                if let Some(ValueType::Tensor {
                    shape: Some(shape), ..
                }) = info.ty.as_mut()
                {
                    if let Some(d) = shape.get_mut(sp.axis) {
                        if matches!(d, Dim::Known(_)) {
                            *d = Dim::Known(n);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Values that carry space `s` (the space's own value plus aliases).
fn spaces_values(ch: &ChannelAnalysis, s: SpaceId) -> Vec<ValueId> {
    ch.space_of
        .iter()
        .filter(|(_, &sp)| sp == s)
        .map(|(&v, _)| v)
        .collect()
}

fn select(t: &Tensor, axis: usize, idx: &[usize], what: &str) -> Result<Tensor> {
    let a = t.to_arr().ok_or_else(|| {
        Error::Usage(format!(
            "{what}: cannot slice a {} constant",
            t.dtype.name()
        ))
    })?;
    if axis >= a.shape().len() {
        return Err(Error::Invalid(format!("{what}: axis {axis} out of range")));
    }
    // A parameter shorter than the channels it is cut with (an invalid file: found by the
    // fuzzer in a BatchNormalization) is an error, not an index panic.
    let len = a.shape()[axis];
    if let Some(&i) = idx.iter().find(|&&i| i >= len) {
        return Err(Error::Invalid(format!(
            "{what}: a constant with {len} entries along axis {axis} is cut as if it had \
             channel {i}: its size does not match the channels it goes with"
        )));
    }
    Ok(crate::arr_map!(&a, x => x.select(Axis(axis), idx)).to_tensor())
}

struct Rw<'a> {
    m: &'a mut Model,
    a: &'a Analysis,
    ch: &'a ChannelAnalysis,
    keep: &'a [bool],
    id: NodeId,
}

impl Rw<'_> {
    fn input(&self, i: usize) -> Option<ValueId> {
        self.m.graph.node(self.id).inputs.get(i).copied().flatten()
    }
    fn output(&self, i: usize) -> Option<ValueId> {
        self.m.graph.node(self.id).outputs.get(i).copied().flatten()
    }
    fn space(&self, v: Option<ValueId>) -> Option<SpaceId> {
        v.and_then(|v| self.ch.space_of.get(&v).copied())
    }
    /// Kept indices of the value's channels, or `None` when nothing changes.
    fn kept(&self, v: Option<ValueId>) -> Option<(SpaceId, Vec<usize>)> {
        let s = self.space(v)?;
        let k = self.ch.kept(s, self.keep);
        (k.len() != self.ch.spaces[s].len).then_some((s, k))
    }
    fn layout(&self) -> Result<WeightLayout> {
        ops::weight_layout(self.m.graph.node(self.id))
            .ok_or_else(|| Error::Invalid(format!("{}: no weight layout", self.label())))
    }
    fn label(&self) -> String {
        self.m.graph.node(self.id).label(self.id)
    }
    fn const_input(&self, i: usize) -> Result<Tensor> {
        let v = self
            .input(i)
            .ok_or_else(|| Error::Invalid(format!("{}: missing input {i}", self.label())))?;
        self.m
            .graph
            .foldable_const(v)
            .map(|t| (**t).clone())
            .ok_or_else(|| Error::Invalid(format!("{}: input {i} is not constant", self.label())))
    }
    /// Replaces input `i` by a new constant (the original may be shared).
    fn set_const(&mut self, i: usize, t: Tensor) {
        let base = self
            .input(i)
            .map(|v| self.m.graph.value(v).name.clone())
            .unwrap_or_else(|| "c".into());
        let v = self.m.graph.add_const(&format!("{base}_pruned"), t);
        self.m.graph.set_input(self.id, i, Some(v));
    }
    fn slice_input(&mut self, i: usize, axis: usize, idx: &[usize]) -> Result<()> {
        let t = self.const_input(i)?;
        let what = self.label();
        let t = select(&t, axis, idx, &what)?;
        self.set_const(i, t);
        Ok(())
    }
}

fn rewrite_node(
    m: &mut Model,
    a: &Analysis,
    ch: &ChannelAnalysis,
    keep: &[bool],
    id: NodeId,
) -> Result<()> {
    let Some(def) = ops::def(m.graph.node(id)) else {
        return Ok(());
    };
    let mut rw = Rw { m, a, ch, keep, id };
    match def.channels {
        Channels::Conv | Channels::ConvTranspose => conv(&mut rw),
        Channels::Gemm | Channels::MatMul => gemm(&mut rw),
        Channels::PerChannelParams => {
            if let Some((_, k)) = rw.kept(rw.input(0)) {
                let n = rw.m.graph.node(id).inputs.len();
                for i in 1..n {
                    if rw.input(i).is_some() {
                        rw.slice_input(i, 0, &k)?;
                    }
                }
            }
            Ok(())
        }
        Channels::Elementwise => elementwise(&mut rw),
        Channels::Pad => pad(&mut rw),
        Channels::Slice => slice(&mut rw),
        Channels::Split => split(&mut rw),
        Channels::Reshape => reshape(&mut rw),
        Channels::Resize => resize_sizes(&mut rw),
        Channels::GroupNorm => group_norm(&mut rw),
        Channels::Blocks
        | Channels::Passthrough
        | Channels::LayerNorm
        | Channels::Concat
        | Channels::Flatten
        | Channels::SqueezeUnsqueeze
        | Channels::Transpose
        | Channels::Shape
        | Channels::Reduce => Ok(()),
    }
}

fn conv(rw: &mut Rw) -> Result<()> {
    let out = rw.kept(rw.output(0));
    let inp = rw.kept(rw.input(0));
    if out.is_none() && inp.is_none() {
        return Ok(());
    }
    let layout = rw.layout()?;
    let (group, transpose) = (layout.group, layout.kind == Linear::ConvTranspose);
    let w = rw.const_input(WeightLayout::INPUT)?;
    let label = rw.label();
    let mut w2 = w.clone();
    if group == 1 {
        if let Some((_, o)) = &out {
            w2 = select(&w2, layout.out_axis, o, &label)?;
        }
        if let Some((_, i)) = &inp {
            w2 = select(&w2, layout.in_axis, i, &label)?;
        }
    } else if !transpose && w.dims[1] == 1 {
        // Depthwise: output channels follow the kept input channels (the analysis joined them).
        let o = out
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| (0..w.dims[0] as usize).collect());
        let cin_kept = inp.as_ref().map(|(_, i)| i.len() as i64).unwrap_or(group);
        w2 = select(&w2, 0, &o, &label)?;
        rw.m.graph
            .node_mut(rw.id)
            .set_attr("group", AttrValue::Int(cin_kept));
    } else if !transpose {
        w2 = grouped_weight(
            &w,
            group as usize,
            out.as_ref().map(|(_, o)| o.as_slice()),
            inp.as_ref().map(|(_, i)| i.as_slice()),
            &label,
        )?;
    } else {
        return Err(Error::Invalid(format!(
            "{label}: grouped ConvTranspose channels cannot be pruned"
        )));
    }
    rw.set_const(WeightLayout::INPUT, w2);
    if let (Some((_, o)), Some(_)) = (&out, rw.input(2)) {
        rw.slice_input(2, 0, o)?;
    }
    Ok(())
}

/// Grouped conv weight [Cout, Cin/g, k..]: keeps rows `out` and, for each kept row, the kept
/// input channels of its own group (every group must keep the same number of each).
fn grouped_weight(
    w: &Tensor,
    g: usize,
    out: Option<&[usize]>,
    inp: Option<&[usize]>,
    label: &str,
) -> Result<Tensor> {
    let cout = w.dims[0] as usize;
    let cin_g = w.dims[1] as usize;
    let cout_g = cout / g.max(1);
    let all_out: Vec<usize> = (0..cout).collect();
    let all_in: Vec<usize> = (0..cin_g * g).collect();
    let (o, i) = (out.unwrap_or(&all_out), inp.unwrap_or(&all_in));
    let cols: Vec<Vec<usize>> = (0..g)
        .map(|p| {
            i.iter()
                .filter(|&&c| c / cin_g == p)
                .map(|&c| c - p * cin_g)
                .collect()
        })
        .collect();
    let rows_per: Vec<usize> = (0..g)
        .map(|p| o.iter().filter(|&&j| j / cout_g == p).count())
        .collect();
    if cols.iter().any(|c| c.len() != cols[0].len()) || rows_per.iter().any(|&r| r != rows_per[0]) {
        return Err(Error::Invalid(format!(
            "{label}: groups of a grouped conv keep different channel counts"
        )));
    }
    let Some(crate::ir::Arr::F32(a)) = w.to_arr() else {
        return Err(Error::Usage(format!(
            "{label}: only float32 grouped conv weights can be pruned"
        )));
    };
    let rows: Vec<_> = o
        .iter()
        .map(|&j| a.index_axis(Axis(0), j).select(Axis(0), &cols[j / cout_g]))
        .collect();
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let stacked =
        ndarray::stack(Axis(0), &views).map_err(|e| Error::Invalid(format!("{label}: {e}")))?;
    Ok(crate::ir::Arr::F32(stacked).to_tensor())
}

/// Gemm (`transB` decides B's layout) and MatMul (B is [K, N]): B loses the removed input
/// features (K) and output features (N); a per-feature bias C is sliced too.
fn gemm(rw: &mut Rw) -> Result<()> {
    let out = rw.kept(rw.output(0));
    let inp = rw.kept(rw.input(0));
    if out.is_none() && inp.is_none() {
        return Ok(());
    }
    let layout = rw.layout()?;
    let is_gemm = matches!(layout.kind, Linear::Gemm { .. });
    let label = rw.label();
    let mut b = rw.const_input(WeightLayout::INPUT)?;
    if let Some((_, i)) = &inp {
        b = select(&b, layout.in_axis, i, &label)?;
    }
    if let Some((_, o)) = &out {
        b = select(&b, layout.out_axis, o, &label)?;
    }
    rw.set_const(WeightLayout::INPUT, b);
    if let (true, Some((_, o)), Some(_)) = (is_gemm, &out, rw.input(2)) {
        let c = rw.const_input(2)?;
        let n = c.dims.last().copied().unwrap_or(1);
        if n > 1 {
            let t = select(&c, c.dims.len() - 1, o, &label)?;
            rw.set_const(2, t);
        }
    }
    Ok(())
}

/// Per-channel constant operands are sliced along the channel axis.
fn elementwise(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.output(0)) else {
        return Ok(());
    };
    let full = rw.ch.spaces[s].len as i64;
    let y =
        rw.a.fact(rw.output(0).unwrap())
            .concrete()
            .unwrap_or_default();
    let axis = rw.ch.spaces[s].axis;
    let n = rw.m.graph.node(rw.id).inputs.len();
    for i in 0..n {
        let Some(v) = rw.input(i) else { continue };
        if rw.space(Some(v)).is_some() || rw.m.graph.foldable_const(v).is_none() {
            continue;
        }
        let t = rw.const_input(i)?;
        let off = y.len() as i64 - t.dims.len() as i64;
        let ax = axis as i64 - off;
        if ax >= 0 && t.dims.get(ax as usize) == Some(&full) && full > 1 {
            rw.slice_input(i, ax as usize, &k)?;
        }
    }
    Ok(())
}

fn pad(rw: &mut Rw) -> Result<()> {
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

fn slice(rw: &mut Rw) -> Result<()> {
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

fn split(rw: &mut Rw) -> Result<()> {
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

fn reshape(rw: &mut Rw) -> Result<()> {
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
fn resize_sizes(rw: &mut Rw) -> Result<()> {
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

/// GroupNormalization keeps whole groups (the analysis made each group one atom): `num_groups`
/// becomes the kept count; `scale`/`bias` are cut per channel (opset 21: C values) or per group
/// (opset 18: one value per group).
fn group_norm(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.input(0)) else {
        return Ok(());
    };
    let c = rw.ch.spaces[s].len;
    let label = rw.label();
    let g =
        rw.m.graph
            .node(rw.id)
            .attr_i("num_groups")
            .unwrap_or(1)
            .max(1) as usize;
    // The analysis made each norm group of `per` channels one atom (and checked c % g == 0).
    let per = (c / g).max(1);
    let groups: Vec<usize> = k.iter().step_by(per).map(|&i| i / per).collect();
    if k.len() != groups.len() * per {
        return Err(Error::Invalid(format!(
            "internal: {label}: kept channels are not whole norm groups"
        )));
    }
    rw.m.graph
        .node_mut(rw.id)
        .set_attr("num_groups", AttrValue::Int(groups.len() as i64));
    for i in 1..3 {
        if rw.input(i).is_none() {
            continue;
        }
        let n = rw.const_input(i)?.numel() as usize;
        if n == c {
            rw.slice_input(i, 0, &k)?;
        } else if n == g {
            rw.slice_input(i, 0, &groups)?;
        } else {
            return Err(Error::Invalid(format!(
                "{label}: scale/bias of {n} values for {c} channels in {g} groups"
            )));
        }
    }
    Ok(())
}
