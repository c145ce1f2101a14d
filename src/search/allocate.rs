//! Allocation of a MAC budget over the channel groups (the `Pruner`'s data-free plans and the
//! agents' per-group ratios): uniform (one keep ratio everywhere, bisected), global (one
//! threshold over importances normalised per group), the fill that spends what rounding left,
//! and the repairs every plan gets (equal grouped-conv partitions, no empty space).

use super::datafree::{Allocation, Pruner};
use super::rounding::Rounded;
pub use super::rounding::Rounding;

/// A cost predicted from the kept channel count of every space (`crate::latency`'s model).
pub trait SpaceCost: std::fmt::Debug + Sync {
    fn predict(&self, counts: &[usize]) -> f64;
}

/// What a plan must fit: MACs at most `macs`, and with `latency` the predicted cost (ms) at
/// most the given budget (both hold).
#[derive(Clone, Copy, Debug)]
pub struct Budget<'a> {
    pub macs: u64,
    pub latency: Option<(&'a dyn SpaceCost, f64)>,
}

impl Budget<'_> {
    pub fn macs(macs: u64) -> Budget<'static> {
        Budget {
            macs,
            latency: None,
        }
    }
}

impl Pruner {
    /// Whether kept channel counts per space fit `b`.
    fn fits(&self, counts: &[usize], b: &Budget) -> bool {
        self.macs_from_counts(counts) <= b.macs
            && b.latency.is_none_or(|(m, ms)| m.predict(counts) <= ms)
    }

    /// Whether the plan `keep` fits `b`.
    pub fn fits_keep(&self, keep: &[bool], b: &Budget) -> bool {
        self.fits(&self.counts(keep), b)
    }

    /// Chooses what to keep so that MACs ≤ `target` (or as close as declined groups allow).
    pub fn allocate(
        &self,
        target: u64,
        imp: &[f64],
        alloc: Allocation,
        round_to: impl Into<Rounding>,
    ) -> Vec<bool> {
        self.allocate_within(&Budget::macs(target), imp, alloc, round_to)
    }

    /// Chooses what to keep within `b` (or as close as declined groups allow).
    pub fn allocate_within(
        &self,
        target: &Budget,
        imp: &[f64],
        alloc: Allocation,
        round_to: impl Into<Rounding>,
    ) -> Vec<bool> {
        let free = self.free_atoms();
        let r = self.rounded(round_to.into());
        let mut keep = match alloc {
            Allocation::Uniform => self.uniform(target, imp, &free, &r),
            Allocation::Global => self.global(target, imp, &free, &r),
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

    /// What is kept when group `g` keeps the fraction `ratio[g]` of its free channels (the
    /// most important ones; at least one; the group total rounded up to a multiple of
    /// `round_to`). Groups with ratio ≥ 1 keep everything.
    pub fn keep_from_ratios(
        &self,
        ratio: &[f64],
        imp: &[f64],
        round_to: impl Into<Rounding>,
    ) -> Vec<bool> {
        let free = self.free_atoms();
        self.keep_ratios(ratio, imp, &free, &self.rounded(round_to.into()))
    }

    pub(super) fn keep_ratios(
        &self,
        ratio: &[f64],
        imp: &[f64],
        free: &[Vec<usize>],
        r: &Rounded,
    ) -> Vec<bool> {
        let round_to = &r.group;
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
            let rounded = total.div_ceil(round_to[gi]) * round_to[gi];
            k = rounded.saturating_sub(blocked).min(f.len());
            self.keep_top(&mut keep, f, imp, k);
        }
        // The search must see the MACs of what will really be kept.
        self.align_spaces(&mut keep, imp, free, r);
        self.fix_parts(&mut keep, imp);
        self.fix_empty_spaces(&mut keep, imp);
        keep
    }

    fn uniform(&self, target: &Budget, imp: &[f64], free: &[Vec<usize>], r: &Rounded) -> Vec<bool> {
        let build = |rho: f64| {
            let ratio = vec![rho; free.len()];
            self.keep_ratios(&ratio, imp, free, r)
        };
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        if self.fits_keep(&build(1.0), target) {
            return build(1.0);
        }
        for _ in 0..40 {
            let mid = (lo + hi) / 2.0;
            if self.fits_keep(&build(mid), target) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut keep = build(lo);
        self.fill(&mut keep, target, imp, free, r);
        keep
    }

    /// Spends what is left of the budget: repeatedly gives the group with the lowest keep ratio
    /// back its best removed channel, while the plan stays within `target`.
    /// Channels come back `chunk[group]` at a time (the `--round-to` multiple).
    fn fill(
        &self,
        keep: &mut [bool],
        target: &Budget,
        imp: &[f64],
        free: &[Vec<usize>],
        r: &Rounded,
    ) {
        let chunk = &r.group;
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
                if removed.len() < chunk[gi] {
                    continue;
                }
                removed.sort_by(|&a, &b| crate::order::fcmp(imp[b], imp[a]).then(a.cmp(&b)));
                let back = &removed[..chunk[gi]];
                if !self.ch.equal_parts.is_empty() || r.spaces.is_some() {
                    // Grouped convs or aligned spaces: evaluate the repaired trial (partitions
                    // kept equal, spaces aligned).
                    let mut trial = keep.to_vec();
                    for &a in back {
                        trial[a] = true;
                    }
                    self.align_spaces(&mut trial, imp, free, r);
                    self.fix_parts(&mut trial, imp);
                    if self.fits_keep(&trial, target) {
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
                if self.fits(&counts, target) {
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
    fn global(&self, target: &Budget, imp: &[f64], free: &[Vec<usize>], r: &Rounded) -> Vec<bool> {
        let mut t = *target;
        let mut keep = self.global_once(&t, imp, free, r);
        for _ in 0..40 {
            let counts = self.counts(&keep);
            if self.fits(&counts, target) || (t.macs == 0 && target.latency.is_none()) {
                break;
            }
            // Lower each internal target by its overshoot.
            let m = self.macs_from_counts(&counts);
            if m > target.macs {
                t.macs = t.macs.saturating_sub(m - target.macs);
            }
            if let (Some((lm, goal)), Some((_, ms))) = (target.latency, t.latency.as_mut()) {
                let over = lm.predict(&counts) - goal;
                if over > 0.0 {
                    *ms = (*ms - over).max(0.0);
                }
            }
            if t.macs == 0 && t.latency.is_some_and(|(_, ms)| ms == 0.0) {
                break;
            }
            keep = self.global_once(&t, imp, free, r);
        }
        // Spend what the repairs left of the budget.
        if self.fits_keep(&keep, target) {
            self.fill(&mut keep, target, imp, free, r);
        }
        keep
    }

    fn global_once(
        &self,
        target: &Budget,
        imp: &[f64],
        free: &[Vec<usize>],
        r: &Rounded,
    ) -> Vec<bool> {
        let round_to = &r.group;
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
            if self.fits(&counts, target) {
                break;
            }
            if left[gi] <= round_to[gi] {
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
        if round_to.iter().any(|&m| m > 1) {
            // Round each group's kept count up to a multiple of `round_to` (best atoms back first).
            for (gi, f) in free.iter().enumerate() {
                if f.is_empty() || round_to[gi] <= 1 {
                    continue;
                }
                let total = self.ch.groups[gi]
                    .atoms
                    .iter()
                    .filter(|&&a| keep[a])
                    .count();
                let want = total.div_ceil(round_to[gi]) * round_to[gi];
                let blocked = self.ch.groups[gi].atoms.len() - f.len();
                let k = want.saturating_sub(blocked).min(f.len());
                self.keep_top(&mut keep, f, imp, k);
            }
        }
        self.align_spaces(&mut keep, imp, free, r);
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
}
