//! The pruning environment the agents act in (AMC / PuRL style).
//!
//! An episode walks the prunable channel groups in topological order; one step decides one
//! group's keep ratio. Actions are clipped, as AMC does, so that the episode always ends at
//! ≤ the target MACs: a step may keep at most what still lets every later group, pruned to
//! the minimum ratio, meet the budget. The state is AMC's layer embedding plus PuRL's dense
//! terms (accuracy so far, fraction pruned so far).
//!
//! Rewards come from an [`Oracle`]: the candidate is built by surgery, recovered by least
//! squares on a calibration subset (and, with `--recover ft:STEPS`, a short fine-tune on the
//! training samples) and evaluated on a validation subset by a [`metrics::Reward`] (the CLI's
//! default: soft top-1, the mean probability of the true label; or top-1; label-free,
//! 1/(1 + relative MSE) to the original model's outputs). Evaluations of identical plans are
//! cached.
//!
//! Agents act relative to [`Env::fair_ratio`], the unsearched uniform plan scaled to the budget
//! that is left: playing it at every step reproduces that plan.

use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{metrics, runtime, TempDir};
use crate::search::allocate::{Budget, Rounding, SpaceCost};
use crate::search::datafree::{Method, Pruner};
use crate::search::recover;
use std::collections::HashMap;

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

/// Options of the search's cached one-round least-squares fit (and of the `--method ls`
/// channel criterion computed from the same statistics).
pub fn cached_fit_options(kind: runtime::Kind) -> recover::Options {
    recover::Options {
        mode: recover::Mode::Ls,
        sequential: false,
        positions: 16,
        runtime: kind,
        ..Default::default()
    }
}

/// What the search agents ask of whoever scores their candidates: [`Oracle`] on a real model
/// (surgery, recovery, evaluation); a test can score plans synthetically.
pub trait Measure {
    /// The score of the candidate `keep` on the first `n` validation samples.
    fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64>;
    /// The score of `keep` on the whole validation subset.
    fn measure(&mut self, keep: &[bool]) -> Result<f64> {
        let n = self.val_len();
        self.measure_on(keep, n)
    }
    /// The original model's score on the first `n` validation samples.
    fn original_on(&self, n: usize) -> f64;
    /// The original model's score on the whole validation subset.
    fn original(&self) -> f64;
    /// Samples in the validation subset.
    fn val_len(&self) -> usize;
    /// Candidates measured so far (not counting cache hits).
    fn evaluations(&self) -> usize;
}

impl Measure for Oracle<'_> {
    fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64> {
        Oracle::measure_on(self, keep, n)
    }
    fn original_on(&self, n: usize) -> f64 {
        Oracle::original_on(self, n)
    }
    fn original(&self) -> f64 {
        self.original
    }
    fn val_len(&self) -> usize {
        Oracle::val_len(self)
    }
    fn evaluations(&self) -> usize {
        self.evaluations
    }
}

/// Measures candidates: surgery, fast recovery, evaluation; cached by plan.
pub struct Oracle<'a> {
    p: &'a Pruner,
    calib: &'a Dataset,
    val: &'a Dataset,
    kind: runtime::Kind,
    pub recover: recover::Options,
    label_free: bool,
    /// What a candidate scores ([`Oracle::set_reward`]; top-1, or fidelity label-free).
    reward: metrics::Reward,
    reference: Vec<f32>,
    k: usize,
    /// Accuracy (or agreement) of the original model on the validation subset.
    pub original: f64,
    cache: HashMap<(Vec<bool>, usize), f64>,
    /// Leading validation subsets for [`Oracle::measure_on`].
    probes: HashMap<usize, Dataset>,
    /// Normal equations of the ThiNet-style recovery, accumulated once.
    fast: recover::FastCache,
    pub evaluations: usize,
    /// Seconds spent in surgery, recovery and evaluation (summed over evaluations).
    pub seconds: [f64; 3],
    /// `--recover ft:STEPS`: a short fine-tune after the least-squares recovery.
    finetune: Option<FtRecovery<'a>>,
    /// Some(n): least squares level by level on the pruned model's own activations from the
    /// first n calibration images (as the final recovery does) instead of the cached one-round
    /// fit on the original's ([`Oracle::set_sequential`]).
    sequential: Option<(usize, recover::Options)>,
    tmp: TempDir,
}

/// The fine-tune part of `--recover ft:STEPS` in the oracle: options, the original model as
/// the distillation teacher and the training samples.
struct FtRecovery<'a> {
    o: crate::learn::train::TrainOptions,
    teacher: Option<&'a crate::net::Net>,
    data: &'a Dataset,
}

impl<'a> Oracle<'a> {
    pub fn new(
        p: &'a Pruner,
        calib: &'a Dataset,
        val: &'a Dataset,
        kind: runtime::Kind,
        label_free: bool,
    ) -> Result<Oracle<'a>> {
        let tmp = TempDir::new("search")?;
        let (reference, k) = runtime::logits(kind, &p.model, &tmp, "original.onnx", val)?;
        let label_free = label_free || val.y.is_none();
        let original = if label_free {
            1.0
        } else {
            metrics::accuracy(&reference, k, val.y.as_ref().unwrap()).top1
        };
        let recover = cached_fit_options(kind);
        Ok(Oracle {
            p,
            calib,
            val,
            kind,
            recover,
            label_free,
            reward: metrics::Reward::Top1.with_labels(!label_free),
            reference,
            k,
            original,
            cache: HashMap::new(),
            probes: HashMap::new(),
            fast: recover::FastCache::new(),
            evaluations: 0,
            seconds: [0.0; 3],
            finetune: None,
            sequential: None,
            tmp,
        })
    }

    /// Scores candidates (and the original) by `reward` (fidelity whatever it says when there
    /// are no labels or the oracle is label-free). Evaluations cached so far are dropped.
    pub fn set_reward(&mut self, reward: metrics::Reward) {
        self.reward = reward.with_labels(!self.label_free);
        self.original = self.original_on(self.val.n);
        self.cache.clear();
    }

    /// What candidates score.
    pub fn reward(&self) -> metrics::Reward {
        self.reward
    }

    /// Takes statistics of the cached fit gathered elsewhere — with [`cached_fit_options`] on
    /// this oracle's calibration images (the `--method ls` criterion gathers exactly these) —
    /// so the original model is not run again for them.
    pub fn set_fast_cache(&mut self, fast: recover::FastCache) {
        self.fast = fast;
        self.cache.clear();
    }

    /// Recovers every candidate as the final `ls` recovery does, level by level on the pruned
    /// model's own activations, from the first `n` calibration images (one forward run of the
    /// candidate per dependency level; slower than the cached one-round fit, but it ranks plans
    /// as the final recovery does). Evaluations cached so far are dropped.
    ///
    /// `ridge` and `seed` (the sampled positions) as for the final recovery: with
    /// n ≥ 512 (16 positions per image) a candidate scores exactly what the final recovery on
    /// the same images gives it.
    pub fn set_sequential(&mut self, n: usize, ridge: f64, seed: u64) {
        let n = n.clamp(1, self.calib.n.max(1));
        // As many rows per target as the cached fit's 512 images × 16 positions, up to 64
        // positions per image.
        let o = recover::Options {
            sequential: true,
            ridge,
            seed,
            positions: (self.recover.positions * 512)
                .div_ceil(n)
                .clamp(self.recover.positions, 64),
            ..self.recover.clone()
        };
        self.sequential = Some((n, o));
        self.cache.clear();
    }

    /// Recovers every candidate by least squares and then `o.steps` steps of fine-tuning on
    /// `data` (`--recover ft:STEPS`; samples disjoint from the validation subset): labels
    /// plus distillation from `teacher` (the original model as a burn network on
    /// [`crate::net::infer_device`]) when `o.kd_weight` is in (0, 1), distillation only at 1
    /// (label-free), labels only at 0. Evaluations cached so far are dropped.
    pub fn set_finetune(
        &mut self,
        o: crate::learn::train::TrainOptions,
        data: &'a Dataset,
        teacher: Option<&'a crate::net::Net>,
    ) {
        self.finetune = Some(FtRecovery { o, teacher, data });
        self.cache.clear();
    }

    /// The reward ([`Oracle::set_reward`]: top-1 by default, or, label-free, 1/(1 + relative
    /// MSE) to the original) of the candidate `keep` after recovery, on the validation subset.
    pub fn measure(&mut self, keep: &[bool]) -> Result<f64> {
        self.measure_on(keep, self.val.n)
    }

    /// Samples in the validation subset.
    pub fn val_len(&self) -> usize {
        self.val.n
    }

    /// The original model's score on the first `n` validation samples (1 label-free).
    pub fn original_on(&self, n: usize) -> f64 {
        let n = n.clamp(1, self.val.n.max(1));
        let r = &self.reference[..n * self.k];
        let labels = self.val.y.as_deref().filter(|_| !self.label_free);
        self.reward.score(r, r, self.k, labels.map(|y| &y[..n]))
    }

    /// [`Oracle::measure`] on the first `n` validation samples only (a cheaper, noisier
    /// probe: PuRL's per-step rewards).
    pub fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64> {
        let n = n.clamp(1, self.val.n.max(1));
        let key = (keep.to_vec(), n);
        if let Some(&v) = self.cache.get(&key) {
            return Ok(v);
        }
        if n < self.val.n && !self.probes.contains_key(&n) {
            let idx: Vec<usize> = (0..n).collect();
            self.probes.insert(n, self.val.subset(&idx));
        }
        let val = if n < self.val.n {
            &self.probes[&n]
        } else {
            self.val
        };
        let t0 = std::time::Instant::now();
        let mut m = self.p.apply(keep)?;
        let chw = (val.c, val.h, val.w);
        let t1 = std::time::Instant::now();
        match &self.sequential {
            Some((n, o)) => {
                let len = n * chw.0 * chw.1 * chw.2;
                recover::recover(self.p, keep, &mut m, &self.calib.x[..len], *n, chw, o)?;
            }
            None => {
                self.fast.recover(
                    self.p,
                    keep,
                    &mut m,
                    &self.calib.x,
                    self.calib.n,
                    chw,
                    &self.recover,
                )?;
            }
        }
        if let Some(ft) = &self.finetune {
            m = crate::learn::train::quick(&m, ft.teacher, ft.data, &ft.o)?.0;
        }
        let t2 = std::time::Instant::now();
        let (l, k) = runtime::logits(self.kind, &m, &self.tmp, "candidate.onnx", val)?;
        self.seconds[0] += (t1 - t0).as_secs_f64();
        self.seconds[1] += (t2 - t1).as_secs_f64();
        self.seconds[2] += t2.elapsed().as_secs_f64();
        let labels = val.y.as_deref().filter(|_| !self.label_free);
        let v = self
            .reward
            .score(&self.reference, &l, self.k.max(k), labels);
        self.evaluations += 1;
        self.cache.insert(key, v);
        Ok(v)
    }
}
