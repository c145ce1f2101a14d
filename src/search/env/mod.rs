//! The pruning environment the agents act in (AMC / PuRL style).
//!
//! An episode walks the prunable channel groups in topological order; one step decides one
//! group's keep ratio. Actions are clipped, as AMC does, so that the episode always ends at
//! ≤ the target MACs: a step may keep at most what still lets every later group, pruned to
//! the minimum ratio, meet the budget. The state is AMC's layer embedding plus PuRL's dense
//! terms (accuracy so far, fraction pruned so far).
//!
//! Rewards come from an [`Oracle`] (`oracle.rs`): the candidate is built by surgery, recovered by least
//! squares on a calibration subset (and, with `--recover ft:STEPS`, a short fine-tune on the
//! training samples) and evaluated on a validation subset by a [`crate::eval::metrics::Reward`] (the CLI's
//! default: soft top-1, the mean probability of the true label; or top-1; label-free,
//! 1/(1 + relative MSE) to the original model's outputs). Evaluations of identical plans are
//! cached.
//!
//! Agents act relative to [`Env::fair_ratio`], the unsearched uniform plan scaled to the budget
//! that is left: playing it at every step reproduces that plan.

use crate::search::allocate::{Budget, Rounding, SpaceCost};
use crate::search::datafree::{Method, Pruner};
use std::collections::HashMap;

mod oracle;

pub use oracle::{cached_fit_options, Measure, Oracle};

/// Features per step (see [`Env::state`]).
pub const STATE_DIM: usize = 12;

/// One prunable group as the agent sees it.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Index into `Pruner::ch.groups`.
    pub group: usize,
    pub channels: usize,
    /// MACs of the nodes producing or consuming the group's channels.
    pub macs: u64,
    pub kernel: f64,
    pub stride: f64,
    /// Members beyond one producer and one consumer (residual streams, concats).
    pub coupled: bool,
    /// Atoms that may be removed.
    pub free: Vec<usize>,
}

#[derive(Clone)]
pub struct Env<'a> {
    pub p: &'a Pruner,
    pub groups: Vec<GroupInfo>,
    /// Filter magnitude (L1) per atom: the agents' features and PuRL's thresholds.
    pub imp: Vec<f64>,
    /// What decides which channels a group keeps for a given ratio (the highest first): L1
    /// unless [`Env::set_select`] gave another criterion (`--method ls`).
    pub select: Vec<f64>,
    pub target: u64,
    /// A latency budget as well (`--target-latency`): the predicted cost and its limit.
    latency: Option<(&'a dyn SpaceCost, f64)>,
    pub min_keep: f64,
    pub round_to: Rounding,
    /// Keep ratio per entry of `p.ch.groups` (1.0 = undecided/keep all).
    ratios: Vec<f64>,
    /// Per entry of `p.ch.groups`: the keep ratio the unsearched uniform plan
    /// ([`Pruner::allocate`] with `select`) gives it — the shape of [`Env::fair_ratio`].
    uniform: Vec<f64>,
    t: usize,
    prev: f64,
}

impl<'a> Env<'a> {
    /// `target_ratio`: fraction of the MACs the result may keep.
    pub fn new(
        p: &'a Pruner,
        target_ratio: f64,
        round_to: impl Into<Rounding>,
        min_keep: f64,
    ) -> Env<'a> {
        let imp = p.importance(Method::L1, 0);
        let g = &p.model.graph;
        let order: HashMap<_, usize> = g
            .topo_order()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let node_macs: HashMap<_, u64> = crate::analysis::cost(&p.model, &p.analysis)
            .map(|c| c.per_node.into_iter().collect())
            .unwrap_or_default();
        let free = p.free_atoms();
        let mut groups: Vec<GroupInfo> = p
            .prunable_groups()
            .into_iter()
            .map(|gi| {
                let gr = &p.ch.groups[gi];
                let first = gr.producers.first().copied();
                let attr = |name: &str| {
                    first
                        .and_then(|n| g.node(n).attr_ints(name).map(|v| v.to_vec()))
                        .and_then(|v| v.first().copied())
                        .unwrap_or(1) as f64
                };
                let macs = gr
                    .members()
                    .iter()
                    .map(|n| node_macs.get(n).copied().unwrap_or(0))
                    .sum();
                GroupInfo {
                    group: gi,
                    channels: gr.atoms.len(),
                    macs,
                    kernel: attr("kernel_shape"),
                    stride: attr("strides"),
                    coupled: gr.producers.len() + gr.consumers.len() > 2,
                    free: free[gi].clone(),
                }
            })
            .collect();
        groups.sort_by_key(|gi| {
            p.ch.groups[gi.group]
                .producers
                .iter()
                .filter_map(|n| order.get(n))
                .min()
                .copied()
                .unwrap_or(usize::MAX)
        });
        let n = p.ch.groups.len();
        let mut e = Env {
            p,
            groups,
            select: imp.clone(),
            imp,
            target: (p.base_macs as f64 * target_ratio).floor() as u64,
            latency: None,
            min_keep,
            round_to: round_to.into(),
            ratios: vec![1.0; n],
            uniform: vec![1.0; n],
            t: 0,
            prev: 1.0,
        };
        e.uniform = e.uniform_ratios();
        e
    }

    /// Every episode must also fit `ms` of the predicted `cost` (`--target-latency`).
    pub fn with_latency(mut self, cost: &'a dyn SpaceCost, ms: f64) -> Env<'a> {
        self.latency = Some((cost, ms));
        self.uniform = self.uniform_ratios();
        self
    }

    fn budget(&self) -> Budget<'a> {
        Budget {
            macs: self.target,
            latency: self.latency,
        }
    }

    /// Whether the plan `keep` fits the budget (MACs, and the latency budget when set).
    pub fn fits(&self, keep: &[bool]) -> bool {
        self.p.fits_keep(keep, &self.budget())
    }

    /// Whether the plan of these ratios fits the budget.
    fn fits_ratios(&self, ratios: &[f64]) -> bool {
        let keep = self.p.keep_from_ratios(ratios, &self.select, self.round_to);
        self.p.fits_keep(&keep, &self.budget())
    }

    /// Per group, the kept fraction of its free atoms in the uniform plan by `select`, as a
    /// ratio that [`Pruner::keep_from_ratios`] turns back into exactly that count (half an atom
    /// below it, so rounding up lands on it).
    fn uniform_ratios(&self) -> Vec<f64> {
        let keep = self.p.allocate_within(
            &self.budget(),
            &self.select,
            crate::search::datafree::Allocation::Uniform,
            self.round_to,
        );
        let mut u = vec![1.0; self.p.ch.groups.len()];
        for gi in &self.groups {
            let len = gi.free.len();
            let kept = gi.free.iter().filter(|&&a| keep[a]).count();
            if len > 0 && kept < len {
                u[gi.group] = (kept as f64 - 0.5).max(0.0) / len as f64;
            }
        }
        u
    }

    /// Chooses channels within a group by `select` (one value per atom, higher kept first)
    /// instead of L1. A vector of another length (not this pruner's atoms) is ignored.
    pub fn set_select(&mut self, select: Vec<f64>) {
        debug_assert_eq!(select.len(), self.select.len());
        if select.len() == self.select.len() {
            self.select = select;
            self.uniform = self.uniform_ratios();
        }
    }

    pub fn steps(&self) -> usize {
        self.groups.len()
    }

    pub fn reset(&mut self) {
        self.ratios.iter_mut().for_each(|r| *r = 1.0);
        self.t = 0;
        self.prev = 1.0;
    }

    pub fn done(&self) -> bool {
        self.t >= self.groups.len()
    }

    pub fn step_index(&self) -> usize {
        self.t
    }

    /// Keep decision for the current ratios (undecided groups keep everything).
    pub fn keep(&self) -> Vec<bool> {
        self.p
            .keep_from_ratios(&self.ratios, &self.select, self.round_to)
    }

    fn macs_with(&self, ratios: &[f64]) -> u64 {
        self.p
            .macs(&self.p.keep_from_ratios(ratios, &self.select, self.round_to))
    }

    /// Largest keep ratio for the current group that still lets the remaining groups (at the
    /// minimum ratio) meet the target; the minimum when even that is over budget.
    pub fn max_ratio(&self) -> f64 {
        let mut r = self.ratios.clone();
        for gi in &self.groups[self.t + 1..] {
            r[gi.group] = self.min_keep;
        }
        let cur = self.groups[self.t].group;
        let fits = |x: f64, r: &mut Vec<f64>| {
            r[cur] = x;
            self.fits_ratios(r)
        };
        if fits(1.0, &mut r) {
            return 1.0;
        }
        if !fits(self.min_keep, &mut r) {
            return self.min_keep;
        }
        let (mut lo, mut hi) = (self.min_keep, 1.0);
        for _ in 0..14 {
            let mid = (lo + hi) / 2.0;
            if fits(mid, &mut r) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The current group's "fair share" of the rest of the budget: the remaining groups keep
    /// the uniform plan's ratios scaled by one factor, the largest that meets the target given
    /// the decisions so far; this is the current group's scaled ratio. Playing it at every step
    /// reproduces the unsearched uniform plan (invariant, tested); a group that kept more
    /// shrinks the shares of the later ones in proportion, and one that kept less grows them.
    pub fn fair_ratio(&self) -> f64 {
        let mut r = self.ratios.clone();
        let cur = self.groups[self.t.min(self.groups.len().saturating_sub(1))].group;
        let share = |c: f64| (c * self.uniform[cur]).clamp(self.min_keep, 1.0);
        let set = |c: f64, r: &mut Vec<f64>| {
            for gi in &self.groups[self.t..] {
                r[gi.group] = (c * self.uniform[gi.group]).clamp(self.min_keep, 1.0);
            }
            self.fits_ratios(r)
        };
        // A factor at which every remaining group keeps everything.
        let top = self.groups[self.t.min(self.groups.len())..]
            .iter()
            .map(|gi| 1.0 / self.uniform[gi.group].max(1e-6))
            .fold(1.0f64, f64::max);
        if set(top, &mut r) {
            return 1.0;
        }
        if !set(0.0, &mut r) {
            return self.min_keep;
        }
        let (mut lo, mut hi) = (0.0, top);
        for _ in 0..24 {
            let mid = (lo + hi) / 2.0;
            if set(mid, &mut r) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        share(lo)
    }

    /// Share of the groups' MACs decided so far (groups before the current step).
    pub fn decided_share(&self) -> f64 {
        let all: u64 = self.groups.iter().map(|g| g.macs).sum();
        let done: u64 = self.groups[..self.t.min(self.groups.len())]
            .iter()
            .map(|g| g.macs)
            .sum();
        done as f64 / all.max(1) as f64
    }

    /// The group decided by the current step.
    pub fn current(&self) -> &GroupInfo {
        &self.groups[self.t.min(self.groups.len().saturating_sub(1))]
    }

    /// The state of the current step (all features roughly in [0, 1]). `acc` is the accuracy
    /// of the model pruned so far relative to the original (PuRL's dense state; 1 when unknown).
    pub fn state(&self, acc: f64) -> Vec<f32> {
        let n = self.groups.len().max(1) as f64;
        let gi = &self.groups[self.t.min(self.groups.len().saturating_sub(1))];
        let max_ch = self.groups.iter().map(|g| g.channels).max().unwrap_or(1) as f64;
        let max_macs = self.groups.iter().map(|g| g.macs).max().unwrap_or(1).max(1) as f64;
        let base = self.p.base_macs.max(1) as f64;
        let now = self.macs_with(&self.ratios) as f64;
        let removed = (base - now) / base;
        let rest: u64 = self.groups[self.t..].iter().map(|g| g.macs).sum();
        vec![
            self.t as f32 / n as f32,
            gi.channels as f32 / max_ch as f32,
            (gi.macs as f64 / max_macs) as f32,
            (gi.kernel / 7.0) as f32,
            (gi.stride / 2.0) as f32,
            f32::from(gi.coupled),
            removed as f32,
            (rest as f64 / base).min(1.0) as f32,
            self.prev as f32,
            acc as f32,
            ((base - self.target as f64) / base - removed).max(0.0) as f32,
            self.fair_ratio() as f32,
        ]
    }

    /// Applies a keep ratio to the current group (clipped to [min_keep, max_ratio]) and
    /// returns the ratio used.
    pub fn step(&mut self, ratio: f64) -> f64 {
        let hi = self.max_ratio();
        let r = ratio.clamp(self.min_keep, hi.max(self.min_keep));
        let g = self.groups[self.t].group;
        self.ratios[g] = r;
        self.prev = r;
        self.t += 1;
        r
    }

    /// Keep ratio per step of the episode so far.
    pub fn step_ratios(&self) -> Vec<f64> {
        self.groups.iter().map(|g| self.ratios[g.group]).collect()
    }

    /// MACs of the current decision.
    pub fn macs(&self) -> u64 {
        self.macs_with(&self.ratios)
    }
}
