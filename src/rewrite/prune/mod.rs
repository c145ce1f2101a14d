//! Channel surgery: given which atoms of a [`ChannelAnalysis`] to keep, slice every weight,
//! bias, normalisation parameter and per-channel constant, and fix depthwise `group`, channel
//! `Pad` amounts, `Split` sizes, `Slice` bounds and constant `Reshape` targets. New constants are
//! created (originals may be shared); what became unused is removed by dead-code elimination.
//!
//! This file walks the graph and holds the shared cutting ([`Rw`]); `weights.rs` cuts the ops
//! that hold weights or per-channel constants, `shape.rs` the ops whose constant operands
//! count channels.

use crate::analysis::channels::{ChannelAnalysis, SpaceId};
use crate::analysis::Analysis;
use crate::error::{Error, Result};
use crate::ir::ops::{self, Channels, WeightLayout};
use crate::ir::{Dim, Model, NodeId, Tensor, ValueId, ValueType};
use ndarray::Axis;
use shape::{pad, reshape, resize_sizes, slice, split};
use weights::{conv, elementwise, gemm, group_norm};

mod shape;
mod weights;

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
