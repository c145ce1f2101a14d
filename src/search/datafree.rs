//! Data-free pruning to a MAC target: importance per channel atom (L1/L2 of the producing
//! filters, or random), allocated uniformly (same keep ratio in every group) or globally (one
//! threshold over normalised importances), with a fast exact MAC model.

use crate::analysis::channels::{self, ChannelAnalysis, Role, SpaceId};
use crate::analysis::{self, Analysis, ShapeMode};
use crate::error::{Error, Result};
use crate::ir::ops::{self, Linear, WeightLayout};
use crate::ir::{Model, NodeId, Tensor};
use crate::rewrite::{self, PassOptions};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    L1,
    L2,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    Uniform,
    Global,
}

/// One MAC-carrying node: MACs scale with kept/len of its output and input spaces.
#[derive(Clone, Debug)]
struct MacTerm {
    node: NodeId,
    macs: u64,
    out: Option<SpaceId>,
    inp: Option<SpaceId>,
}

/// What a plan removes from one consumer weight ([`Pruner::removal_masks`]).
#[derive(Clone, Debug)]
pub struct RemovalMask {
    /// The weight's initializer name in the simplified model.
    pub weight: String,
    pub dims: Vec<usize>,
    /// Per element: 1 where the surgery removes it, else 0.
    pub mask: Vec<f32>,
}

/// One channel space a group reaches (`Pruner::group_spaces`), with the group's atoms that
/// reach it and no space before it in the group's order (the atoms that can align its count
/// without changing an earlier one's), each with its number of slots here.
#[derive(Clone, Debug)]
pub(super) struct GroupSpace {
    pub(super) space: SpaceId,
    pub(super) fresh: Vec<(usize, usize)>,
}

/// A model prepared for pruning: simplified, analysed, with its channel groups.
pub struct Pruner {
    pub model: Model,
    pub analysis: Analysis,
    pub ch: ChannelAnalysis,
    pub base_macs: u64,
    pub base_params: u64,
    terms: Vec<MacTerm>,
    /// (space, number of its slots) per atom.
    pub(super) atom_spaces: Vec<Vec<(SpaceId, usize)>>,
    /// Per group, the spaces its atoms reach, narrowest first (ties by id): the order a
    /// capped `Rounding` aligns them in (the first is what it is capped by).
    pub(super) group_spaces: Vec<Vec<GroupSpace>>,
    pub shapes: HashMap<String, Vec<i64>>,
}

impl Pruner {
    pub fn new(model: &Model, shapes: &HashMap<String, Vec<i64>>) -> Result<Pruner> {
        let mut m = model.clone();
        rewrite::simplify(&mut m, &PassOptions::default())?;
        let a = analysis::infer(&m, ShapeMode::Bound, shapes)?;
        let cost = analysis::cost(&m, &a)?;
        let ch = channels::analyse(&m, &a);
        super::safety::check_finite_weights(&m, &ch)?;
        let mut terms = vec![];
        for &(id, macs) in &cost.per_node {
            let n = m.graph.node(id);
            let out = n
                .outputs
                .first()
                .copied()
                .flatten()
                .and_then(|v| ch.space_of.get(&v).copied());
            let consumer = ch
                .roles
                .iter()
                .any(|r| matches!(r, Role::Consumer { node, .. } if *node == id));
            let inp = if consumer {
                n.inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|v| ch.space_of.get(&v).copied())
            } else {
                None
            };
            terms.push(MacTerm {
                node: id,
                macs,
                out,
                inp,
            });
        }
        let mut atom_spaces: Vec<HashMap<SpaceId, usize>> = vec![HashMap::new(); ch.atoms.len()];
        for (s, sp) in ch.spaces.iter().enumerate() {
            for i in 0..sp.len {
                *atom_spaces[ch.atom(s, i)].entry(s).or_default() += 1;
            }
        }
        let atom_spaces: Vec<Vec<(SpaceId, usize)>> = atom_spaces
            .into_iter()
            .map(|h| h.into_iter().collect())
            .collect();
        let group_spaces = ch
            .groups
            .iter()
            .map(|g| {
                let mut spaces: Vec<SpaceId> = g
                    .atoms
                    .iter()
                    .flat_map(|&a| atom_spaces[a].iter().map(|&(s, _)| s))
                    .collect();
                spaces.sort_by_key(|&s| (ch.spaces[s].len, s));
                spaces.dedup();
                // Each atom is fresh in the first of these spaces it reaches.
                spaces
                    .iter()
                    .map(|&s| GroupSpace {
                        space: s,
                        fresh: g
                            .atoms
                            .iter()
                            .filter_map(|&a| {
                                let first = spaces
                                    .iter()
                                    .find(|&&t| atom_spaces[a].iter().any(|&(u, _)| u == t))?;
                                let n = atom_spaces[a].iter().find(|&&(u, _)| u == s)?.1;
                                (*first == s).then_some((a, n))
                            })
                            .collect(),
                    })
                    .collect()
            })
            .collect();
        let mut p = Pruner {
            base_macs: cost.macs,
            base_params: cost.params,
            model: m,
            analysis: a,
            ch,
            terms,
            atom_spaces,
            group_spaces,
            shapes: shapes.clone(),
        };
        p.decline_failing_surgery();
        Ok(p)
    }

    /// Kept channel count of every space.
    pub(super) fn counts(&self, keep: &[bool]) -> Vec<usize> {
        let mut c = vec![0usize; self.ch.spaces.len()];
        for (a, k) in keep.iter().enumerate() {
            if *k {
                for &(s, n) in &self.atom_spaces[a] {
                    c[s] += n;
                }
            }
        }
        c
    }

    pub(super) fn macs_from_counts(&self, c: &[usize]) -> u64 {
        let frac = |s: Option<SpaceId>| {
            s.map(|s| c[s] as f64 / self.ch.spaces[s].len.max(1) as f64)
                .unwrap_or(1.0)
        };
        self.terms
            .iter()
            .map(|t| (t.macs as f64 * frac(t.out) * frac(t.inp)).round() as u64)
            .sum()
    }

    /// Kept channel count of every space (what [`crate::latency::LatencyModel`] predicts from).
    pub fn space_counts(&self, keep: &[bool]) -> Vec<usize> {
        self.counts(keep)
    }

    /// Every MAC-carrying node with the channel spaces of its input and output (those pruning
    /// can shrink), in topological order.
    pub fn node_spaces(&self) -> Vec<(NodeId, Option<SpaceId>, Option<SpaceId>)> {
        self.terms.iter().map(|t| (t.node, t.inp, t.out)).collect()
    }

    /// MACs of the model pruned with `keep` (exact for Conv/ConvTranspose/Gemm/MatMul).
    pub fn macs(&self, keep: &[bool]) -> u64 {
        self.macs_from_counts(&self.counts(keep))
    }

    /// Importance of every atom: sum over its producer channels of the filter magnitude.
    pub fn importance(&self, method: Method, seed: u64) -> Vec<f64> {
        let mut imp = vec![0f64; self.ch.atoms.len()];
        if method == Method::Random {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            return imp.iter().map(|_| rng.random::<f64>()).collect();
        }
        for r in &self.ch.roles {
            let Role::Producer { node, space } = *r else {
                continue;
            };
            let Some(scores) = filter_scores(&self.model, node, method) else {
                continue;
            };
            for (c, s) in scores.iter().enumerate().take(self.ch.spaces[space].len) {
                imp[self.ch.atom(space, c)] += s;
            }
        }
        imp
    }

    /// Atoms that may be removed, per group (groups that are not declined).
    pub fn free_atoms(&self) -> Vec<Vec<usize>> {
        self.ch
            .groups
            .iter()
            .map(|g| {
                if g.declined.is_some() {
                    vec![]
                } else {
                    g.atoms
                        .iter()
                        .copied()
                        .filter(|&a| self.ch.atoms[a].blocked.is_none())
                        .collect()
                }
            })
            .collect()
    }

    /// Groups that can lose channels (not declined, with at least one free atom).
    pub fn prunable_groups(&self) -> Vec<usize> {
        self.free_atoms()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_empty())
            .map(|(g, _)| g)
            .collect()
    }

    /// The pruned model.
    pub fn apply(&self, keep: &[bool]) -> Result<Model> {
        self.apply_to(&self.model, keep)
    }

    /// `model` pruned: `model` is this pruner's model with other constant values (the same
    /// graph), e.g. trained weights.
    pub fn apply_to(&self, model: &Model, keep: &[bool]) -> Result<Model> {
        let mut m = model.clone();
        rewrite::prune::apply(&mut m, &self.analysis, &self.ch, keep)?;
        rewrite::simplify(&mut m, &PassOptions::default())?;
        m.graph
            .check()
            .map_err(|e| Error::Invalid(format!("internal error after pruning: {e}")))?;
        Ok(m)
    }

    /// Per consumer of a pruned channel: the node, its weight and the input channels the plan
    /// removes from it (the weights `masked` zeroes and the surgery cuts).
    pub fn removed_inputs(&self, keep: &[bool]) -> Vec<(NodeId, Vec<usize>)> {
        let mut out = vec![];
        for r in &self.ch.roles {
            let Role::Consumer { node, space } = *r else {
                continue;
            };
            let removed: Vec<usize> = (0..self.ch.spaces[space].len)
                .filter(|&i| !keep[self.ch.atom(space, i)])
                .collect();
            if !removed.is_empty() && ops::weight_layout(self.model.graph.node(node)).is_some() {
                out.push((node, removed));
            }
        }
        out
    }

    /// The weight of consumer `node`: its value, the constant and its layout.
    fn consumer_weight(&self, node: NodeId) -> Result<(crate::ir::ValueId, &Tensor, WeightLayout)> {
        let n = self.model.graph.node(node);
        let layout = ops::weight_layout(n)
            .ok_or_else(|| Error::Invalid("consumer without layout".into()))?;
        let w = n.inputs[WeightLayout::INPUT]
            .ok_or_else(|| Error::Invalid("consumer without weight".into()))?;
        let t = self
            .model
            .graph
            .foldable_const(w)
            .ok_or_else(|| Error::Invalid("consumer weight not constant".into()))?;
        Ok((w, t, layout))
    }

    /// The original (simplified) model with every removed channel zeroed at its consumers:
    /// what the pruned model must compute (used by `verify`).
    pub fn masked(&self, keep: &[bool]) -> Result<Model> {
        let mut m = self.model.clone();
        for (node, removed) in self.removed_inputs(keep) {
            let (w, t, layout) = self.consumer_weight(node)?;
            let zeroed = zero_inputs(t, &layout, &removed)?;
            let name = format!("{}_masked", m.graph.value(w).name);
            let v = m.graph.add_const(&name, zeroed);
            m.graph.set_input(node, WeightLayout::INPUT, Some(v));
        }
        rewrite::simplify(&mut m, &PassOptions::default())?;
        Ok(m)
    }

    /// Per consumer weight a plan cuts into, by initializer name: its dims and a mask of its
    /// shape, 1 on the weights the surgery removes and 0 elsewhere (a weight read by several
    /// consumers gets the union). Zeroing them gives [`Pruner::masked`]'s function: how
    /// `--agent joint` evaluates and aligns a plan on the burn network without surgery.
    pub fn removal_masks(&self, keep: &[bool]) -> Result<Vec<RemovalMask>> {
        let mut out: Vec<RemovalMask> = vec![];
        for (node, removed) in self.removed_inputs(keep) {
            let (w, t, layout) = self.consumer_weight(node)?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            let n: usize = dims.iter().product();
            let ones = Tensor::f32(&t.dims, vec![1.0; n]);
            let Some(crate::ir::Arr::F32(k)) = zero_inputs(&ones, &layout, &removed)?.to_arr()
            else {
                return Err(Error::Usage("only float32 weights can be masked".into()));
            };
            let mask: Vec<f32> = k.iter().map(|v| 1.0 - v).collect();
            let name = self.model.graph.value(w).name.clone();
            match out.iter_mut().find(|r| r.weight == name) {
                Some(r) => r
                    .mask
                    .iter_mut()
                    .zip(&mask)
                    .for_each(|(a, b)| *a = a.max(*b)),
                None => out.push(RemovalMask {
                    weight: name,
                    dims,
                    mask,
                }),
            }
        }
        Ok(out)
    }
}

/// `t` (a consumer's weight with `layout`) with its input channels `removed` set to zero.
fn zero_inputs(t: &Tensor, layout: &WeightLayout, removed: &[usize]) -> Result<Tensor> {
    let group = layout.group.max(1) as usize;
    if layout.kind == Linear::Conv && group > 1 {
        zero_grouped(t, group, removed)
    } else {
        zero_along(t, layout.in_axis, removed)
    }
}

/// Grouped conv weight: input channel c is column c mod (Cin/g) of the filters of group c div (Cin/g).
fn zero_grouped(t: &Tensor, g: usize, idx: &[usize]) -> Result<Tensor> {
    let Some(crate::ir::Arr::F32(mut a)) = t.to_arr() else {
        return Err(Error::Usage("only float32 weights can be masked".into()));
    };
    let (cout, cin_g) = (a.shape()[0], a.shape()[1]);
    let cout_g = cout / g;
    for &c in idx {
        let (p, col) = (c / cin_g, c % cin_g);
        for j in p * cout_g..(p + 1) * cout_g {
            a.index_axis_mut(ndarray::Axis(0), j)
                .index_axis_mut(ndarray::Axis(0), col)
                .fill(0.0);
        }
    }
    Ok(crate::ir::Arr::F32(a).to_tensor())
}

fn zero_along(t: &Tensor, axis: usize, idx: &[usize]) -> Result<Tensor> {
    let mut a = t.to_arr().and_then(|a| match a {
        crate::ir::Arr::F32(x) => Some(x),
        _ => None,
    });
    let arr = a
        .as_mut()
        .ok_or_else(|| Error::Usage("only float32 weights can be masked".into()))?;
    for &i in idx {
        arr.index_axis_mut(ndarray::Axis(axis), i).fill(0.0);
    }
    Ok(crate::ir::Arr::F32(a.unwrap()).to_tensor())
}

/// Magnitude of each output channel's filter of a producing node.
fn filter_scores(m: &Model, node: NodeId, method: Method) -> Option<Vec<f64>> {
    let n = m.graph.node(node);
    let w = m
        .graph
        .foldable_const(n.inputs.get(WeightLayout::INPUT).copied().flatten()?)?;
    let a = match w.to_arr()? {
        crate::ir::Arr::F32(x) => x.mapv(|v| v as f64),
        crate::ir::Arr::F64(x) => x,
        _ => return None,
    };
    let layout = ops::weight_layout(n)?;
    let axis = layout.out_axis;
    let scores: Vec<f64> = a
        .axis_iter(ndarray::Axis(axis))
        .map(|f| {
            let cnt = f.len().max(1) as f64;
            match method {
                Method::L1 => f.iter().map(|v| v.abs()).sum::<f64>() / cnt,
                _ => (f.iter().map(|v| v * v).sum::<f64>() / cnt).sqrt(),
            }
        })
        .collect();
    if layout.kind == Linear::ConvTranspose && layout.group > 1 {
        return None;
    }
    Some(scores)
}

/// The small option-A residual network of `onnx::builder::tiny_resnet(seed)` (16- and
/// 32-channel stages), prepared for pruning: the unit tests' model.
#[cfg(test)]
pub(crate) fn tiny_pruner(seed: u64) -> Pruner {
    let proto = crate::onnx::builder::tiny_resnet(seed);
    let bytes = prost::Message::encode_to_vec(&proto);
    let model = crate::onnx::decode_model(bytes.into(), None).unwrap();
    Pruner::new(&model, &HashMap::new()).unwrap()
}
