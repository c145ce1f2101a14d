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
    macs: u64,
    out: Option<SpaceId>,
    inp: Option<SpaceId>,
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
    atom_spaces: Vec<Vec<(SpaceId, usize)>>,
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
            terms.push(MacTerm { macs, out, inp });
        }
        let mut atom_spaces: Vec<HashMap<SpaceId, usize>> = vec![HashMap::new(); ch.atoms.len()];
        for (s, sp) in ch.spaces.iter().enumerate() {
            for i in 0..sp.len {
                *atom_spaces[ch.atom(s, i)].entry(s).or_default() += 1;
            }
        }
        let mut p = Pruner {
            base_macs: cost.macs,
            base_params: cost.params,
            model: m,
            analysis: a,
            ch,
            terms,
            atom_spaces: atom_spaces
                .into_iter()
                .map(|h| h.into_iter().collect())
                .collect(),
            shapes: shapes.clone(),
        };
        p.decline_failing_surgery();
        Ok(p)
    }

    /// Kept channel count of every space.
    fn counts(&self, keep: &[bool]) -> Vec<usize> {
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

    fn macs_from_counts(&self, c: &[usize]) -> u64 {
        let frac = |s: Option<SpaceId>| {
            s.map(|s| c[s] as f64 / self.ch.spaces[s].len.max(1) as f64)
                .unwrap_or(1.0)
        };
        self.terms
            .iter()
            .map(|t| (t.macs as f64 * frac(t.out) * frac(t.inp)).round() as u64)
            .sum()
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

    /// Chooses what to keep so that MACs ≤ `target` (or as close as declined groups allow).
    pub fn allocate(
        &self,
        target: u64,
        imp: &[f64],
        alloc: Allocation,
        round_to: usize,
    ) -> Vec<bool> {
        let free = self.free_atoms();
        let mut keep = match alloc {
            Allocation::Uniform => self.uniform(target, imp, &free, round_to.max(1)),
            Allocation::Global => self.global(target, imp, &free, round_to.max(1)),
        };
        self.fix_parts(&mut keep, imp);
        self.fix_empty_spaces(&mut keep, imp);
        keep
    }

    fn keep_top(&self, keep: &mut [bool], group_free: &[usize], imp: &[f64], k: usize) {
        let mut sorted = group_free.to_vec();
        sorted.sort_by(|&a, &b| crate::order::fcmp(imp[b], imp[a]).then(a.cmp(&b)));
        for (i, &a) in sorted.iter().enumerate() {
            keep[a] = i < k;
        }
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

    /// What is kept when group `g` keeps the fraction `ratio[g]` of its free channels (the
    /// most important ones; at least one; the group total rounded up to a multiple of
    /// `round_to`). Groups with ratio ≥ 1 keep everything.
    pub fn keep_from_ratios(&self, ratio: &[f64], imp: &[f64], round_to: usize) -> Vec<bool> {
        let free = self.free_atoms();
        self.keep_ratios(ratio, imp, &free, round_to.max(1))
    }

    fn keep_ratios(
        &self,
        ratio: &[f64],
        imp: &[f64],
        free: &[Vec<usize>],
        round_to: usize,
    ) -> Vec<bool> {
        let mut keep = vec![true; self.ch.atoms.len()];
        for (gi, f) in free.iter().enumerate() {
            let rho = ratio.get(gi).copied().unwrap_or(1.0);
            if f.is_empty() || rho >= 1.0 {
                continue;
            }
            let blocked = self.ch.groups[gi].atoms.len() - f.len();
            let mut k = (rho.max(0.0) * f.len() as f64).ceil() as usize;
            if blocked == 0 {
                k = k.max(1);
            }
            let total = blocked + k;
            let rounded = total.div_ceil(round_to) * round_to;
            k = rounded.saturating_sub(blocked).min(f.len());
            self.keep_top(&mut keep, f, imp, k);
        }
        // The search must see the MACs of what will really be kept.
        self.fix_parts(&mut keep, imp);
        self.fix_empty_spaces(&mut keep, imp);
        keep
    }

    fn uniform(&self, target: u64, imp: &[f64], free: &[Vec<usize>], round_to: usize) -> Vec<bool> {
        let build = |rho: f64| {
            let ratio = vec![rho; free.len()];
            self.keep_ratios(&ratio, imp, free, round_to)
        };
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        if self.macs(&build(1.0)) <= target {
            return build(1.0);
        }
        for _ in 0..40 {
            let mid = (lo + hi) / 2.0;
            if self.macs(&build(mid)) <= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut keep = build(lo);
        self.fill(&mut keep, target, imp, free, round_to);
        keep
    }

    /// Spends what is left of the budget: repeatedly gives the group with the lowest keep ratio
    /// back its best removed channel, while MACs stay ≤ `target`.
    /// Channels come back `chunk` at a time (the `--round-to` multiple).
    fn fill(&self, keep: &mut [bool], target: u64, imp: &[f64], free: &[Vec<usize>], chunk: usize) {
        let mut counts = self.counts(keep);
        loop {
            let mut order: Vec<(f64, usize)> = free
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.is_empty())
                .map(|(gi, f)| {
                    (
                        f.iter().filter(|&&a| keep[a]).count() as f64 / f.len() as f64,
                        gi,
                    )
                })
                .collect();
            order.sort_by(|a, b| crate::order::fcmp(a.0, b.0).then(a.1.cmp(&b.1)));
            let mut added = false;
            for (_, gi) in order {
                let mut removed: Vec<usize> =
                    free[gi].iter().copied().filter(|&a| !keep[a]).collect();
                if removed.len() < chunk {
                    continue;
                }
                removed.sort_by(|&a, &b| crate::order::fcmp(imp[b], imp[a]).then(a.cmp(&b)));
                let back = &removed[..chunk];
                if !self.ch.equal_parts.is_empty() {
                    // Grouped convs: evaluate the repaired trial (partitions kept equal).
                    let mut trial = keep.to_vec();
                    for &a in back {
                        trial[a] = true;
                    }
                    self.fix_parts(&mut trial, imp);
                    if self.macs(&trial) <= target {
                        keep.copy_from_slice(&trial);
                        counts = self.counts(keep);
                        added = true;
                        break;
                    }
                    continue;
                }
                for &a in back {
                    for &(s, n) in &self.atom_spaces[a] {
                        counts[s] += n;
                    }
                }
                if self.macs_from_counts(&counts) <= target {
                    for &a in back {
                        keep[a] = true;
                    }
                    added = true;
                    break;
                }
                for &a in back {
                    for &(s, n) in &self.atom_spaces[a] {
                        counts[s] -= n;
                    }
                }
            }
            if !added {
                break;
            }
        }
    }

    /// Global allocation; rounding and grouped-conv repairs can add channels back, so the
    /// greedy pass is repeated with its internal target lowered by the overshoot until it fits.
    fn global(&self, target: u64, imp: &[f64], free: &[Vec<usize>], round_to: usize) -> Vec<bool> {
        let mut t = target;
        let mut keep = self.global_once(t, imp, free, round_to);
        for _ in 0..40 {
            let m = self.macs(&keep);
            if m <= target || t == 0 {
                break;
            }
            t = t.saturating_sub(m - target);
            keep = self.global_once(t, imp, free, round_to);
        }
        // Spend what the repairs left of the budget.
        if self.macs(&keep) <= target {
            self.fill(&mut keep, target, imp, free, round_to);
        }
        keep
    }

    fn global_once(
        &self,
        target: u64,
        imp: &[f64],
        free: &[Vec<usize>],
        round_to: usize,
    ) -> Vec<bool> {
        let mut keep = vec![true; self.ch.atoms.len()];
        // Normalise within each group so groups with larger weights are not favoured.
        let mut cand: Vec<(f64, usize, usize)> = vec![];
        for (gi, f) in free.iter().enumerate() {
            if f.is_empty() {
                continue;
            }
            let mean = f.iter().map(|&a| imp[a]).sum::<f64>() / f.len() as f64 + 1e-12;
            cand.extend(f.iter().map(|&a| (imp[a] / mean, a, gi)));
        }
        cand.sort_by(|x, y| crate::order::fcmp(x.0, y.0).then(x.1.cmp(&y.1)));
        let mut counts = self.counts(&keep);
        let mut left: Vec<usize> = self.ch.groups.iter().map(|g| g.atoms.len()).collect();
        for &(_, a, gi) in &cand {
            if self.macs_from_counts(&counts) <= target {
                break;
            }
            if left[gi] <= round_to.max(1) {
                continue;
            }
            // Never empty a space.
            if self.atom_spaces[a].iter().any(|&(s, n)| counts[s] <= n) {
                continue;
            }
            keep[a] = false;
            left[gi] -= 1;
            for &(s, n) in &self.atom_spaces[a] {
                counts[s] -= n;
            }
        }
        if round_to > 1 {
            // Round each group's kept count up to a multiple of `round_to` (best atoms back first).
            for (gi, f) in free.iter().enumerate() {
                if f.is_empty() {
                    continue;
                }
                let total = self.ch.groups[gi]
                    .atoms
                    .iter()
                    .filter(|&&a| keep[a])
                    .count();
                let want = total.div_ceil(round_to) * round_to;
                let blocked = self.ch.groups[gi].atoms.len() - f.len();
                let k = want.saturating_sub(blocked).min(f.len());
                self.keep_top(&mut keep, f, imp, k);
            }
        }
        self.fix_parts(&mut keep, imp);
        self.fix_empty_spaces(&mut keep, imp);
        keep
    }

    /// Grouped-conv spaces: re-adds the best removed channels of partitions that keep fewer than
    /// the others, until all partitions keep the same count.
    fn fix_parts(&self, keep: &mut [bool], imp: &[f64]) {
        for _ in 0..64 {
            let mut changed = false;
            for &(s, g) in &self.ch.equal_parts {
                let len = self.ch.spaces[s].len;
                let part = len / g.max(1);
                if part == 0 {
                    continue;
                }
                let kept_in = |keep: &[bool], p: usize| {
                    (p * part..(p + 1) * part)
                        .filter(|&i| keep[self.ch.atom(s, i)])
                        .count()
                };
                let t = (0..g).map(|p| kept_in(keep, p)).max().unwrap_or(0);
                for p in 0..g {
                    while kept_in(keep, p) < t {
                        let best = (p * part..(p + 1) * part)
                            .map(|i| self.ch.atom(s, i))
                            .filter(|&a| !keep[a])
                            .max_by(|&a, &b| crate::order::fcmp(imp[a], imp[b]).then(b.cmp(&a)));
                        match best {
                            Some(a) => {
                                keep[a] = true;
                                changed = true;
                            }
                            None => break,
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Re-adds the best atom of any space that lost all its channels.
    fn fix_empty_spaces(&self, keep: &mut [bool], imp: &[f64]) {
        loop {
            let counts = self.counts(keep);
            let Some(s) =
                (0..self.ch.spaces.len()).find(|&s| counts[s] == 0 && self.ch.spaces[s].len > 0)
            else {
                break;
            };
            let best = (0..self.ch.spaces[s].len)
                .map(|i| self.ch.atom(s, i))
                .max_by(|&a, &b| crate::order::fcmp(imp[a], imp[b]))
                .unwrap();
            keep[best] = true;
        }
    }

    /// The pruned model.
    pub fn apply(&self, keep: &[bool]) -> Result<Model> {
        let mut m = self.model.clone();
        rewrite::prune::apply(&mut m, &self.analysis, &self.ch, keep)?;
        rewrite::simplify(&mut m, &PassOptions::default())?;
        m.graph
            .check()
            .map_err(|e| Error::Invalid(format!("internal error after pruning: {e}")))?;
        Ok(m)
    }

    /// The original (simplified) model with every removed channel zeroed at its consumers:
    /// what the pruned model must compute (used by `verify`).
    pub fn masked(&self, keep: &[bool]) -> Result<Model> {
        let mut m = self.model.clone();
        for r in &self.ch.roles {
            let Role::Consumer { node, space } = *r else {
                continue;
            };
            let removed: Vec<usize> = (0..self.ch.spaces[space].len)
                .filter(|&i| !keep[self.ch.atom(space, i)])
                .collect();
            if removed.is_empty() {
                continue;
            }
            let n = m.graph.node(node);
            let Some(layout) = ops::weight_layout(n) else {
                continue;
            };
            let w = n.inputs[WeightLayout::INPUT]
                .ok_or_else(|| Error::Invalid("consumer without weight".into()))?;
            let t = m
                .graph
                .foldable_const(w)
                .ok_or_else(|| Error::Invalid("consumer weight not constant".into()))?;
            let group = layout.group.max(1) as usize;
            let zeroed = if layout.kind == Linear::Conv && group > 1 {
                zero_grouped(t, group, &removed)?
            } else {
                zero_along(t, layout.in_axis, &removed)?
            };
            let name = format!("{}_masked", m.graph.value(w).name);
            let v = m.graph.add_const(&name, zeroed);
            m.graph.set_input(node, WeightLayout::INPUT, Some(v));
        }
        rewrite::simplify(&mut m, &PassOptions::default())?;
        Ok(m)
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
