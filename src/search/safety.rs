//! What keeps a valid model from ending in a failed job: weights that cannot be scored are
//! refused up front, and every group's surgery is tried once before any plan is made.
//!
//! Invariant: after [`Pruner::new`], every group that is not declined can lose channels (at half
//! its free atoms, the probe plan) without the pruned model failing shape inference or changing
//! its output shapes. A group whose trial rewrite fails is declined with the reason, so the
//! allocators fill the budget from the other groups; the job never exits on one group.

use super::datafree::{Method, Pruner};
use crate::analysis::channels::{ChannelAnalysis, Role};
use crate::analysis::{self, ShapeMode};
use crate::error::{Error, Result};
use crate::ir::Model;

/// Refuses weights that are NaN or infinite in the nodes whose channels are scored and cut (a
/// damaged file, or a training run that diverged): their importances and least-squares fits
/// would be meaningless. Names the initializer and the node.
pub(super) fn check_finite_weights(m: &Model, ch: &ChannelAnalysis) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for r in &ch.roles {
        let (Role::Producer { node, .. } | Role::Consumer { node, .. }) = *r;
        if !seen.insert(node) {
            continue;
        }
        let n = m.graph.node(node);
        for v in n.inputs.iter().flatten() {
            let Some(t) = m.graph.foldable_const(*v) else {
                continue;
            };
            // (count of non-finite values, index of the first)
            let (bad, first) = match t.to_arr() {
                Some(crate::ir::Arr::F32(x)) => non_finite(x.iter().map(|v| v.is_finite())),
                Some(crate::ir::Arr::F64(x)) => non_finite(x.iter().map(|v| v.is_finite())),
                _ => continue,
            };
            if let Some(first) = first {
                return Err(Error::Node {
                    node: n.label(node),
                    msg: format!(
                        "weight '{}' has {} non-finite value(s) (NaN or ±Inf; the first at flat \
                         index {first} of {}): the file is damaged or its training diverged, and \
                         pruning needs finite weights",
                        m.graph.value(*v).name,
                        bad,
                        t.numel()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// How many of the flags are false, and where the first is.
fn non_finite(finite: impl Iterator<Item = bool>) -> (usize, Option<usize>) {
    finite
        .enumerate()
        .filter(|(_, ok)| !ok)
        .fold((0, None), |(n, first), (i, _)| (n + 1, first.or(Some(i))))
}

impl Pruner {
    /// Tries the surgery of a plan that keeps half of every group's free atoms; when it fails,
    /// finds the groups whose rewrite fails (bisection over groups, each tried alone at the
    /// end) and declines them with the reason. Repeats until the probe passes.
    pub(super) fn decline_failing_surgery(&mut self) {
        let imp = self.importance(Method::L1, 0);
        for _ in 0..8 {
            let groups = self.prunable_groups();
            if groups.is_empty() {
                return;
            }
            let half = vec![0.5; self.ch.groups.len()];
            let keep = self.keep_from_ratios(&half, &imp, 1);
            let cut: Vec<usize> = groups
                .into_iter()
                .filter(|&g| self.ch.groups[g].atoms.iter().any(|&a| !keep[a]))
                .collect();
            let mut failing = vec![];
            self.find_failing(&keep, &cut, &mut failing);
            if failing.is_empty() {
                return;
            }
            for (g, why) in failing {
                let why = format!("its channel surgery failed a trial rewrite: {why}");
                for &a in &self.ch.groups[g].atoms {
                    self.ch.atoms[a].blocked.get_or_insert_with(|| why.clone());
                }
                self.ch.groups[g].declined = Some(why);
            }
        }
    }

    fn find_failing(&self, keep: &[bool], groups: &[usize], out: &mut Vec<(usize, String)>) {
        if groups.is_empty() {
            return;
        }
        let mut only = vec![true; keep.len()];
        for &g in groups {
            for &a in &self.ch.groups[g].atoms {
                only[a] = keep[a];
            }
        }
        let Err(why) = self.try_surgery(&only) else {
            return;
        };
        if groups.len() == 1 {
            out.push((groups[0], why));
            return;
        }
        let before = out.len();
        let (l, r) = groups.split_at(groups.len() / 2);
        self.find_failing(keep, l, out);
        self.find_failing(keep, r, out);
        if out.len() == before {
            // Only together do they fail: decline them all rather than guess.
            out.extend(groups.iter().map(|&g| (g, why.clone())));
        }
    }

    /// The pruned model of `keep` builds, its shapes infer, and its outputs keep their shapes.
    fn try_surgery(&self, keep: &[bool]) -> std::result::Result<(), String> {
        let m = self.apply(keep).map_err(|e| e.to_string())?;
        let a = analysis::infer(&m, ShapeMode::Bound, &self.shapes).map_err(|e| e.to_string())?;
        for (&o, &p) in self.model.graph.outputs.iter().zip(&m.graph.outputs) {
            let (before, after) = (self.analysis.fact(o).concrete(), a.fact(p).concrete());
            if before != after {
                return Err(format!(
                    "output '{}' changes shape ({before:?} -> {after:?})",
                    m.graph.value(p).name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::names;
    use crate::onnx::builder;
    use crate::search::datafree::Allocation;
    use std::collections::HashMap;

    fn unet() -> Model {
        let bytes = prost::Message::encode_to_vec(&builder::unet_decoder());
        crate::onnx::decode_model(bytes.into(), None).unwrap()
    }

    /// A group whose rewrite fails (simulated: the Resize's `sizes` made non-constant after
    /// the analysis accepted it, so the rewrite cannot resize it) is declined with the reason,
    /// the other stays prunable, and a plan at 75% MACs is met from it and applies.
    #[test]
    fn a_group_whose_surgery_fails_is_declined_and_the_budget_refilled() {
        let mut p = Pruner::new(&unet(), &HashMap::new()).unwrap();
        // Two groups: the encoder's (its convs share the concat) and the decoder conv's.
        let before = p.prunable_groups();
        assert_eq!(before.len(), 2, "{before:?}");
        let g = &mut p.model.graph;
        let rz = g
            .live_nodes()
            .find(|(_, n)| n.op_type == names::RESIZE)
            .unwrap()
            .0;
        let sizes = g.node(rz).inputs[3];
        let id = crate::ir::Node {
            name: "id".into(),
            op_type: names::IDENTITY.into(),
            domain: String::new(),
            inputs: vec![sizes],
            outputs: vec![],
            implicit_inputs: vec![],
            attrs: vec![],
            doc_string: String::new(),
            residue: Default::default(),
            order: g.node(rz).order,
        };
        let idn = g.add_node(id, &["sizes_id".into()]);
        let out = g.node(idn).outputs[0];
        g.set_input(rz, 3, out);
        let space = p.ch.space_of[&g.node(rz).inputs[0].unwrap()];
        let cut = p.ch.atoms[p.ch.atom(space, 0)].group;
        p.decline_failing_surgery();
        let why = p.ch.groups[cut].declined.clone().unwrap_or_default();
        assert!(
            why.contains("trial rewrite") && why.contains("not constant"),
            "{why}"
        );
        let after = p.prunable_groups();
        assert_eq!(after.len(), before.len() - 1, "only the failing group goes");
        let imp = p.importance(Method::L1, 0);
        let target = (p.base_macs as f64 * 0.75) as u64;
        let keep = p.allocate(target, &imp, Allocation::Uniform, 1);
        assert!(p.macs(&keep) <= target, "{} > {target}", p.macs(&keep));
        assert!(p.ch.groups[cut].atoms.iter().all(|&a| keep[a]));
        p.apply(&keep).unwrap();
    }
}
