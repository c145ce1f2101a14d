//! The targets of recovery: the consumers of pruned channels, matched between the original
//! and the pruned model, with how each computes its output (its kernel) and their dependency
//! levels.

use super::*;
use crate::ir::ops::{self, Linear, WeightLayout};

/// How a target computes its output from its input rows.
#[derive(Clone, Debug)]
pub(super) enum Kernel {
    /// 2-D convolution, group 1.
    Conv {
        k: [usize; 2],
        stride: [usize; 2],
        dil: [usize; 2],
        /// Padding at the start of each spatial axis (None: from auto_pad SAME_*).
        pad: Option<[usize; 2]>,
        auto_upper: bool,
    },
    /// Gemm with transB (weight [N, K]) or not ([K, N]); MatMul is `Dense { trans: false }`
    /// without bias.
    Dense { trans: bool, bias: bool },
    /// Only moment matching / BN (grouped convs, ConvTranspose, …).
    Other,
}

pub(super) struct Target {
    pub(super) node: NodeId,
    /// The channel space the target reads.
    pub(super) space: crate::analysis::channels::SpaceId,
    pub(super) label: String,
    pub(super) kernel: Kernel,
    /// Kept output channel indices of the original output (all when the output is unpruned).
    pub(super) kout: Vec<usize>,
    /// Output channels of the original node.
    pub(super) cout_orig: usize,
    /// Kept input elements per row of the original input: channels (conv), or feature
    /// indices (dense; a flattened channel covers several).
    pub(super) kin: Vec<usize>,
    /// Original input/output values (in O) and the pruned model's input / output values (in P).
    pub(super) o_in: ValueId,
    pub(super) o_out: ValueId,
    pub(super) p_in: ValueId,
    pub(super) p_out: ValueId,
}

/// The consumers of pruned channels, matched between the original and the pruned model.
/// The consumers of pruned channels in `pruned` (made by `p.apply(keep)`); with `all`, every
/// consumer of a channel space (with `keep` all true and `pruned` the original model: the
/// targets whose statistics rank channels in [`FastCache::ls_importance`]).
pub(super) fn find_targets(
    p: &Pruner,
    keep: &[bool],
    pruned: &Model,
    mode: Mode,
    skipped: &mut Vec<String>,
    all: bool,
) -> Vec<Target> {
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    for r in &p.ch.roles {
        let Role::Consumer { node, space } = *r else {
            continue;
        };
        if (!all && p.ch.kept(space, keep).len() == p.ch.spaces[space].len) || !seen.insert(node) {
            continue;
        }
        let og = &p.model.graph;
        let on = og.node(node);
        let label = on.label(node);
        let why = |s: &str| format!("{label}: {s}");
        // Node ids survive pruning (surgery edits in place; removed nodes leave holes).
        let Some(Some(pn)) = pruned.graph.nodes.get(node.0) else {
            skipped.push(why("not found in the pruned model"));
            continue;
        };
        let (Some(Some(o_in)), Some(Some(o_out)), Some(Some(p_in)), Some(Some(p_out))) = (
            on.inputs.first().copied(),
            on.outputs.first().copied(),
            pn.inputs.first().copied(),
            pn.outputs.first().copied(),
        ) else {
            skipped.push(why("missing input or output"));
            continue;
        };
        if pn.op_type != on.op_type || pruned.graph.value(p_out).name != og.value(o_out).name {
            skipped.push(why("does not match the pruned model's node"));
            continue;
        }
        let Some(w) = pn.inputs.get(WeightLayout::INPUT).copied().flatten() else {
            continue;
        };
        let Some(wt) = pruned.graph.foldable_const(w) else {
            skipped.push(why("weight is not a constant"));
            continue;
        };
        if wt.dtype != crate::ir::DataType::FLOAT {
            skipped.push(why("weight is not float32"));
            continue;
        }
        let Some(layout) = ops::weight_layout(pn) else {
            skipped.push(why("not a Conv/ConvTranspose/Gemm/MatMul"));
            continue;
        };
        let out_axis = layout.out_axis;
        let Some(ow) = on
            .inputs
            .get(WeightLayout::INPUT)
            .copied()
            .flatten()
            .and_then(|w| og.foldable_const(w))
        else {
            skipped.push(why("weight is not a constant"));
            continue;
        };
        let cout_orig = ow.dims.get(out_axis).copied().unwrap_or(0) as usize;
        let kin_ch = p.ch.kept(space, keep);
        let kin = if layout.is_dense() {
            // Dense: a flattened channel covers `per` consecutive features.
            let k_orig = ow.dims.get(1 - out_axis).copied().unwrap_or(0) as usize;
            let per = k_orig / p.ch.spaces[space].len.max(1);
            kin_ch
                .iter()
                .flat_map(|&c| c * per..(c + 1) * per)
                .collect()
        } else {
            kin_ch
        };
        let kout = match p.ch.space_of.get(&o_out) {
            Some(&s) => p.ch.kept(s, keep),
            None => (0..cout_orig).collect(),
        };
        if wt.dims.get(out_axis).copied() != Some(kout.len() as i64) {
            skipped.push(why("output channels do not match the plan"));
            continue;
        }
        let mut kernel = kernel_of(pn, &layout, &wt.dims);
        let out_rank = p.analysis.facts[o_out.0].shape.as_ref().map(|s| s.len());
        if matches!(kernel, Kernel::Dense { .. }) && out_rank != Some(2) {
            kernel = Kernel::Other;
        }
        let group = layout.group;
        match (mode, &kernel) {
            (Mode::Ls, Kernel::Other) => {
                skipped.push(why(
                    "least squares handles Conv (group 1, 2-D), Gemm and 2-D MatMul",
                ));
                continue;
            }
            (Mode::Bn, _) if pruned.graph.is_graph_output(p_out) => {
                skipped.push(why("writes a graph output (not re-calibrated)"));
                continue;
            }
            (Mode::Bn, _)
                if layout.kind == Linear::MatMul
                    || (layout.kind == Linear::ConvTranspose && group != 1)
                    || (matches!(layout.kind, Linear::Gemm { .. }) && out_rank != Some(2)) =>
            {
                skipped.push(why("no per-channel bias to re-calibrate"));
                continue;
            }
            _ => {}
        }
        out.push(Target {
            node,
            space,
            label,
            kernel,
            kout,
            cout_orig,
            kin,
            o_in,
            o_out,
            p_in,
            p_out,
        });
    }
    out
}

/// The maps feature distillation matches (`--feature-kd`): the output of every 2-D
/// convolution that reads pruned channels (the maps least squares fits), as (its value in
/// `pruned`, made by `p.apply(keep)` with node ids intact; its value in the original `p.model`;
/// the original's output channels the plan keeps).
pub fn feature_taps(
    p: &Pruner,
    keep: &[bool],
    pruned: &Model,
) -> Vec<(ValueId, ValueId, Vec<usize>)> {
    find_targets(p, keep, pruned, Mode::Ls, &mut vec![], false)
        .into_iter()
        .filter(|t| matches!(t.kernel, Kernel::Conv { .. }))
        .map(|t| (t.p_out, t.o_out, t.kout))
        .collect()
}

pub(super) fn kernel_of(n: &crate::ir::Node, layout: &WeightLayout, wdims: &[i64]) -> Kernel {
    match layout.kind {
        Linear::Conv if wdims.len() == 4 && layout.group == 1 => {
            let two = |name: &str, d: usize| -> [usize; 2] {
                let v = n.attr_ints(name).unwrap_or(&[]);
                [
                    v.first().map(|&x| x.max(0) as usize).unwrap_or(d),
                    v.get(1).map(|&x| x.max(0) as usize).unwrap_or(d),
                ]
            };
            let auto = n.attr_s("auto_pad").unwrap_or("NOTSET");
            let pad = match auto {
                "SAME_UPPER" | "SAME_LOWER" => None,
                "VALID" => Some([0, 0]),
                _ => Some(two("pads", 0)),
            };
            Kernel::Conv {
                k: [wdims[2] as usize, wdims[3] as usize],
                stride: two("strides", 1),
                dil: two("dilations", 1),
                pad,
                auto_upper: auto == "SAME_UPPER",
            }
        }
        Linear::Gemm {
            trans_a: false,
            trans_b,
            alpha,
            beta,
        } if alpha == 1.0 && beta == 1.0 => Kernel::Dense {
            trans: trans_b,
            bias: true,
        },
        Linear::MatMul if wdims.len() == 2 => Kernel::Dense {
            trans: false,
            bias: false,
        },
        _ => Kernel::Other,
    }
}

pub(super) fn p_rank(m: &Model, t: &Target) -> usize {
    let n = m.graph.node(t.node);
    if ops::weight_layout(n).is_some_and(|l| l.is_dense()) {
        return 2;
    }
    n.inputs
        .get(WeightLayout::INPUT)
        .copied()
        .flatten()
        .and_then(|w| m.graph.foldable_const(w))
        .map(|w| w.dims.len())
        .unwrap_or(0)
}

/// Level of each target: 0 when no other target is upstream of its input, else one more than
/// the deepest target upstream.
pub(super) fn dependency_levels(m: &Model, targets: &[Target]) -> Vec<usize> {
    let g = &m.graph;
    let order = g.topo_order().unwrap_or_default();
    let tidx: std::collections::HashMap<NodeId, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.node, i))
        .collect();
    // depth[v]: deepest target level + 1 among producers upstream of value v (0: none).
    let mut depth = vec![0usize; g.values.len()];
    let mut level = vec![0usize; targets.len()];
    for id in order {
        let n = g.node(id);
        let inp = n
            .inputs
            .iter()
            .flatten()
            .chain(&n.implicit_inputs)
            .map(|v| depth[v.0])
            .max()
            .unwrap_or(0);
        let out = match tidx.get(&id) {
            Some(&ti) => {
                // The target's own level comes from its data input.
                level[ti] = n
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .map(|v| depth[v.0])
                    .unwrap_or(0);
                inp.max(level[ti] + 1)
            }
            None => inp,
        };
        for v in n.outputs.iter().flatten() {
            depth[v.0] = out;
        }
    }
    level
}
