//! Output-preserving graph rewrites. Passes are plain data ([`DEFAULT_PASSES`]) run to a capped
//! fixed point by [`simplify`].
//!
//! Invariant: every pass leaves the graph passing [`crate::ir::Graph::check`], and never changes
//! what the model computes for any input the model accepts (folding only uses facts that hold
//! for every input size; a constant read by several nodes is never modified in place — passes
//! create new constants).

mod bn_fold;
mod dce;
mod fold;
mod identity;
pub mod prune;

use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, Model, NodeId, ValueDef, ValueId, ValueType};
use std::collections::HashMap;

/// Options shared by passes.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Fold BatchNormalization into the preceding Conv.
    pub fold_bn: bool,
}

pub trait Pass: Sync {
    fn name(&self) -> &'static str;
    /// Runs once; returns how many rewrites it made.
    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize>;
}

/// The simplification pipeline, in order.
pub static DEFAULT_PASSES: &[&dyn Pass] = &[
    &identity::EliminateIdentity,
    &fold::FoldConstants,
    &bn_fold::FoldBatchNorm,
    &dce::DeadCode,
];

/// Upper bound on pipeline rounds.
pub const MAX_ROUNDS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct SimplifyReport {
    pub rounds: usize,
    /// Rewrites per pass name.
    pub rewrites: Vec<(&'static str, usize)>,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Runs [`DEFAULT_PASSES`] until nothing changes (at most [`MAX_ROUNDS`] rounds).
pub fn simplify(model: &mut Model, opts: &PassOptions) -> Result<SimplifyReport> {
    let mut rep = SimplifyReport {
        nodes_before: model.graph.live_nodes().count(),
        ..Default::default()
    };
    let mut totals: HashMap<&'static str, usize> = HashMap::new();
    for round in 1..=MAX_ROUNDS {
        rep.rounds = round;
        let mut changed = 0;
        for p in DEFAULT_PASSES {
            let n = p.run(model, opts)?;
            if cfg!(debug_assertions) {
                model.graph.check().map_err(|e| {
                    Error::Invalid(format!("internal error after pass {}: {e}", p.name()))
                })?;
            }
            *totals.entry(p.name()).or_default() += n;
            changed += n;
        }
        if changed == 0 {
            break;
        }
    }
    rep.rewrites = DEFAULT_PASSES
        .iter()
        .map(|p| (p.name(), totals.get(p.name()).copied().unwrap_or(0)))
        .collect();
    rep.nodes_after = model.graph.live_nodes().count();
    Ok(rep)
}

/// Fixes graph input shapes to the given dims (`simplify --input-shape`), so folding may use
/// them. Fails for an unknown input or a rank/known-dim mismatch.
pub fn set_input_shapes(model: &mut Model, shapes: &HashMap<String, Vec<i64>>) -> Result<()> {
    let g = &mut model.graph;
    for (name, dims) in shapes {
        let v = g
            .inputs
            .iter()
            .copied()
            .find(|&v| g.value(v).name == *name && matches!(g.value(v).def, ValueDef::Input))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--input-shape names '{name}', which is not a graph input"
                ))
            })?;
        let val = g.value_mut(v);
        let info = val
            .info
            .as_mut()
            .ok_or_else(|| Error::Usage(format!("input '{name}' has no declared type")))?;
        match &mut info.ty {
            Some(ValueType::Tensor { shape, .. }) => {
                crate::analysis::shapes::check_input_shape(name, shape.as_deref(), dims)?;
                *shape = Some(dims.iter().map(|&d| Dim::Known(d)).collect());
            }
            _ => return Err(Error::Usage(format!("input '{name}' is not a tensor"))),
        }
    }
    Ok(())
}

/// Removes single-input/single-output `node` whose output `out` equals its input `inp`, making
/// every reader of `out` read `inp`. When `out` is a graph output, `inp` takes over its name
/// (only possible when `inp` is produced by a node and is not itself an output or read by a
/// subgraph). Returns false, changing nothing, when that is impossible.
pub(crate) fn bypass(g: &mut Graph, node: NodeId, inp: ValueId, out: ValueId) -> bool {
    if g.value(out)
        .uses
        .iter()
        .any(|u| u.slot == crate::ir::Slot::Implicit)
    {
        return false;
    }
    if g.is_graph_output(out) {
        let inp_ok = matches!(g.value(inp).def, ValueDef::Node { .. })
            && !g.is_graph_output(inp)
            && !g
                .value(inp)
                .uses
                .iter()
                .any(|u| u.slot == crate::ir::Slot::Implicit);
        if !inp_ok {
            return false;
        }
        let out_name = g.value(out).name.clone();
        let info = g.value(out).info.clone();
        let in_vi = g.value(out).in_value_info;
        if !g.replace_all_uses(out, inp) {
            return false;
        }
        g.remove_node(node); // releases `out`'s name
        let old_name = g.value(inp).name.clone();
        g.release_name(&old_name);
        g.claim_name(&out_name);
        let v = g.value_mut(inp);
        v.name = out_name;
        v.info = info;
        v.in_value_info = in_vi;
        return true;
    }
    if !g.replace_all_uses(out, inp) {
        return false;
    }
    g.remove_node(node);
    true
}
