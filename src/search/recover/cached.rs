//! Fast least-squares recovery for the search, from cached statistics.
//!
//! ThiNet-style recovery (`Options { sequential: false }`) fits every target on the *original*
//! model's activations restricted to the kept channels. Its normal equations are therefore
//! sub-blocks of one pair of matrices per target that do not depend on the plan: the Gram
//! matrix G = AᵀA of the full im2col rows (every input channel, plus a bias column) and
//! C = AᵀY against every original output channel. [`FastCache`] accumulates them once, in one
//! run of the original model, and every later candidate is recovered by slicing
//! G[kin, kin], C[kin, kout] and solving — no model run at all. The result is the same as
//! [`super::recover`] with `sequential: false` on the same images and options (the sampled
//! positions are seeded by node, not by the plan).
//!
//! Invariant: a cache belongs to one pruner, one calibration set and one set of options.

use super::{
    dims3, export_with_outputs, find_targets, lhs_rows, patch_mismatch, positions, solve_ridge,
    weights_of, write_weights, Kernel, Mode, Options, Report, Target,
};
use crate::error::{Error, Result};
use crate::eval::runtime;
use crate::ir::{Model, NodeId};
use crate::search::datafree::Pruner;
use faer::linalg::solvers::Solve;
use faer::Mat;
use rayon::prelude::*;
use std::collections::HashMap;

/// Targets wider than this (im2col columns) are not cached: their Gram matrix would take more
/// than ~50 MB. They are left unrecovered in the search (the final recovery still fits them).
const MAX_COLS: usize = 2500;

/// Plan-independent normal equations of one target.
struct Stats {
    g: Mat<f64>,
    cy: Mat<f64>,
    /// Σ y² per original output channel.
    yy: Vec<f64>,
    /// Relative difference between the patch model and the runtime (first batch).
    mismatch: f64,
}

/// Cached statistics for [`FastCache::recover`]; see the module docs.
pub struct FastCache {
    stats: HashMap<NodeId, std::result::Result<Stats, String>>,
    /// Original-model runs made so far (one per batch of newly seen targets).
    pub runs: usize,
}

impl Default for FastCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FastCache {
    pub fn new() -> FastCache {
        FastCache {
            stats: HashMap::new(),
            runs: 0,
        }
    }

    /// Least-squares recovery of `pruned` (made by `p.apply(keep)`), ThiNet-style, from the
    /// cached statistics of the calibration images `x` (computed on first use of a target).
    /// `o.mode` must be [`Mode::Ls`]; `o.sequential` is ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        &mut self,
        p: &Pruner,
        keep: &[bool],
        pruned: &mut Model,
        x: &[f32],
        n: usize,
        chw: (usize, usize, usize),
        o: &Options,
    ) -> Result<Report> {
        let t0 = std::time::Instant::now();
        let mut report = Report {
            mode: "ls".into(),
            samples: n,
            ..Default::default()
        };
        if o.mode != Mode::Ls || n == 0 {
            return Err(Error::Usage(
                "cached recovery is least squares with calibration data".into(),
            ));
        }
        let targets = find_targets(p, keep, pruned, Mode::Ls, &mut report.skipped, false);
        report.targets = targets.len() + report.skipped.len();
        let missing: Vec<&Target> = targets
            .iter()
            .filter(|t| !self.stats.contains_key(&t.node))
            .collect();
        if !missing.is_empty() {
            self.fill(p, &missing, x, n, chw, o)?;
        }
        let mut fits = vec![];
        for t in &targets {
            let st = match &self.stats[&t.node] {
                Ok(st) => st,
                Err(why) => {
                    report.skipped.push(format!("{}: {why}", t.label));
                    continue;
                }
            };
            if st.mismatch > 1e-3 || !st.mismatch.is_finite() {
                report.skipped.push(format!(
                    "{}: internal check failed (patch model differs from the runtime by {:.2e})",
                    t.label, st.mismatch
                ));
                continue;
            }
            let w0 = weights_of(pruned, t.node, &t.kernel, t.kout.len(), &t.label)?;
            let full = st.g.nrows();
            let mut idx: Vec<usize> = match t.kernel {
                Kernel::Conv { k, .. } => {
                    let kk = k[0] * k[1];
                    t.kin.iter().flat_map(|&c| c * kk..(c + 1) * kk).collect()
                }
                _ => t.kin.clone(),
            };
            if w0.nrows() == idx.len() + 1 {
                idx.push(full - 1);
            }
            if w0.nrows() != idx.len() || idx.iter().any(|&i| i >= full) {
                report.skipped.push(format!(
                    "{}: weight layout does not match the cache",
                    t.label
                ));
                continue;
            }
            let g = Mat::<f64>::from_fn(idx.len(), idx.len(), |i, j| st.g[(idx[i], idx[j])]);
            let cy =
                Mat::<f64>::from_fn(idx.len(), t.kout.len(), |i, j| st.cy[(idx[i], t.kout[j])]);
            let yy: f64 = t.kout.iter().map(|&k| st.yy[k]).sum();
            let (w, before, after) = solve_ridge(&g, &cy, yy, &w0, o.ridge, &t.label)?;
            write_weights(pruned, t, &w)?;
            fits.push((before, after));
            report.refit += 1;
        }
        if !fits.is_empty() {
            let k = fits.len() as f64;
            report.fit_error_before = Some(fits.iter().map(|f| f.0).sum::<f64>() / k);
            report.fit_error_after = Some(fits.iter().map(|f| f.1).sum::<f64>() / k);
        }
        crate::rewrite::simplify(pruned, &crate::rewrite::PassOptions::default())?;
        pruned
            .graph
            .check()
            .map_err(|e| Error::Invalid(format!("internal error after recovery: {e}")))?;
        report.seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Data-aware channel importance (`--method ls`), from the same cached statistics.
    ///
    /// Per group, channels are removed greedily (backward elimination, as ThiNet and He et
    /// al.'s channel pruning select channels): each time, the channel whose removal the least-
    /// squares refit of the group's consumers absorbs best — the smallest increase of
    /// Σ_consumers ‖A·W − Y‖² / ‖Y‖² when its im2col columns B are dropped and the rest refit,
    /// which is tr(β_Bᵀ H_BB⁻¹ β_B) with H = (AᵀA + λI)⁻¹ and β = H·AᵀY (the classical result
    /// for dropping regressors; H and β are downdated after each removal, so correlated
    /// channels are not both kept for the same work). Large groups drop 1/32 of what is left
    /// per round. The result per atom is its place in that order (later removed = more
    /// important, compare only within a group); groups with no usable consumer (wider than
    /// the cache, not Conv/Gemm/MatMul) keep `fallback`'s values. Also returns how many groups
    /// fell back.
    #[allow(clippy::too_many_arguments)]
    pub fn ls_importance(
        &mut self,
        p: &Pruner,
        x: &[f32],
        n: usize,
        chw: (usize, usize, usize),
        o: &Options,
        fallback: &[f64],
    ) -> Result<(Vec<f64>, usize)> {
        if n == 0 {
            return Err(Error::Usage(
                "the least-squares channel criterion needs calibration data".into(),
            ));
        }
        let all = vec![true; p.ch.atoms.len()];
        let mut skipped = vec![];
        let targets = find_targets(p, &all, &p.model, Mode::Ls, &mut skipped, true);
        let missing: Vec<&Target> = targets
            .iter()
            .filter(|t| !self.stats.contains_key(&t.node))
            .collect();
        if !missing.is_empty() {
            self.fill(p, &missing, x, n, chw, o)?;
        }
        let free = p.free_atoms();
        let jobs: Vec<(&[usize], Vec<Lsq>)> =
            p.ch.groups
                .iter()
                .zip(&free)
                .filter(|(_, f)| f.len() > 1)
                .map(|(g, f)| {
                    let ts = targets
                        .iter()
                        .filter(|t| g.spaces.contains(&t.space))
                        .filter_map(|t| match &self.stats[&t.node] {
                            Ok(st) if st.mismatch <= 1e-3 => Lsq::new(p, t, st, f, o.ridge),
                            _ => None,
                        })
                        .collect();
                    (f.as_slice(), ts)
                })
                .collect();
        let orders: Vec<Option<Vec<usize>>> = jobs
            .into_par_iter()
            .map(|(f, mut ts)| (!ts.is_empty()).then(|| removal_order(f, &mut ts)))
            .collect();
        let mut imp = fallback.to_vec();
        let mut fell_back = 0;
        for order in orders {
            match order {
                Some(order) => {
                    for (i, a) in order.into_iter().enumerate() {
                        imp[a] = (i + 1) as f64;
                    }
                }
                None => fell_back += 1,
            }
        }
        Ok((imp, fell_back))
    }

    /// One run of the original model: the full normal equations of `targets`.
    fn fill(
        &mut self,
        p: &Pruner,
        targets: &[&Target],
        x: &[f32],
        n: usize,
        chw: (usize, usize, usize),
        o: &Options,
    ) -> Result<()> {
        let tmp = crate::eval::TempDir::new("recover")?;
        let batch = crate::eval::fixed_batch(&p.model).unwrap_or(o.batch);
        // Original weights (with a bias column for convs) give the width of the full rows.
        let mut work: Vec<(&Target, Mat<f64>)> = vec![];
        for &t in targets {
            match weights_of(&p.model, t.node, &t.kernel, t.cout_orig, &t.label) {
                Ok(w) if w.nrows() <= MAX_COLS => work.push((t, w)),
                Ok(w) => {
                    self.stats.insert(
                        t.node,
                        Err(format!(
                            "{} im2col columns: too wide for the search's cached fit",
                            w.nrows()
                        )),
                    );
                }
                Err(e) => {
                    self.stats.insert(t.node, Err(e.to_string()));
                }
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        let vals: Vec<_> = work.iter().flat_map(|(t, _)| [t.o_out, t.o_in]).collect();
        let path = tmp.0.join("original.onnx");
        let idx = export_with_outputs(&p.model, &vals, &path)?;
        let mut acc: Vec<Stats> = work
            .iter()
            .map(|(t, w)| Stats {
                g: Mat::zeros(w.nrows(), w.nrows()),
                cy: Mat::zeros(w.nrows(), t.cout_orig),
                yy: vec![0.0; t.cout_orig],
                mismatch: f64::INFINITY,
            })
            .collect();
        let mut rt = runtime::open(o.runtime, &path, batch, chw, o.threads)?;
        rt.for_each_batch(x, n, &mut |s, outs| {
            acc.par_iter_mut()
                .zip(&work)
                .enumerate()
                .try_for_each(|(i, (st, (t, w)))| {
                    let (y, xin) = (&outs[idx[2 * i]], &outs[idx[2 * i + 1]]);
                    let (b, ch, hw) = dims3(y, &t.label)?;
                    if ch != t.cout_orig {
                        return Err(Error::Usage(format!(
                            "{}: output has {ch} channels, the weight {}",
                            t.label, t.cout_orig
                        )));
                    }
                    let hw2 = if y.shape.len() == 4 {
                        [y.shape[2], y.shape[3]]
                    } else {
                        [hw, 1]
                    };
                    let m = match t.kernel {
                        Kernel::Conv { .. } => o.positions.min(hw).max(1),
                        _ => hw,
                    };
                    let key = t.node.0;
                    let cols = w.nrows();
                    let rows = lhs_rows(t, xin, None, o.seed, key, s, m, hw, hw2, cols)?;
                    if s == 0 {
                        st.mismatch = patch_mismatch(t, &rows, w, y, o.seed, key, m);
                    }
                    let r = rows.len() / cols;
                    let mut ys = Vec::with_capacity(r * ch);
                    for bi in 0..b {
                        let img = &y.data[bi * ch * hw..(bi + 1) * ch * hw];
                        for pos in positions(o.seed, key, s + bi, hw, m) {
                            ys.extend((0..ch).map(|k| img[k * hw + pos] as f64));
                        }
                    }
                    let am = Mat::<f64>::from_fn(r, cols, |i, j| rows[i * cols + j]);
                    let ym = Mat::<f64>::from_fn(r, ch, |i, j| ys[i * ch + j]);
                    st.g += am.transpose() * &am;
                    st.cy += am.transpose() * &ym;
                    for (k, v) in st.yy.iter_mut().enumerate() {
                        *v += (0..r).map(|i| ys[i * ch + k] * ys[i * ch + k]).sum::<f64>();
                    }
                    Ok::<(), Error>(())
                })
        })?;
        self.runs += 1;
        for ((t, _), st) in work.into_iter().zip(acc) {
            self.stats.insert(t.node, Ok(st));
        }
        Ok(())
    }
}

/// One consumer's least-squares problem during the greedy channel elimination: the inverse
/// regularised Gram matrix and the solution on the columns still active.
struct Lsq {
    /// Columns (original im2col indices) per removable atom.
    cols: HashMap<usize, Vec<usize>>,
    /// Original column index of every active row of `h`.
    active: Vec<usize>,
    /// (AᵀA + λI)⁻¹ on the active columns.
    h: Mat<f64>,
    /// h · AᵀY on the active columns.
    beta: Mat<f64>,
    /// ‖Y‖².
    yy: f64,
}

impl Lsq {
    fn new(p: &Pruner, t: &Target, st: &Stats, free: &[usize], ridge: f64) -> Option<Lsq> {
        let d = st.g.nrows();
        let len = p.ch.spaces[t.space].len;
        let per = match t.kernel {
            Kernel::Conv { k, .. } => k[0] * k[1],
            _ => t.kin.len() / len.max(1),
        };
        let main = len * per;
        if per == 0 || main > d || d - main > 1 {
            return None;
        }
        let free: std::collections::HashSet<usize> = free.iter().copied().collect();
        let mut cols: HashMap<usize, Vec<usize>> = HashMap::new();
        for c in 0..len {
            let a = p.ch.atom(t.space, c);
            if free.contains(&a) {
                cols.entry(a).or_default().extend(c * per..(c + 1) * per);
            }
        }
        let mean_diag = (0..d).map(|i| st.g[(i, i)]).sum::<f64>() / d.max(1) as f64;
        let lambda = ridge.max(1e-9) * mean_diag.max(1e-12);
        let mut a = st.g.clone();
        for i in 0..d {
            a[(i, i)] += lambda;
        }
        let llt = a.llt(faer::Side::Lower).ok()?;
        let h = llt.solve(Mat::<f64>::identity(d, d));
        let beta = &h * &st.cy;
        let yy: f64 = st.yy.iter().sum();
        if yy.is_nan() || yy <= 0.0 || !h.col_iter().all(|c| c.iter().all(|v| v.is_finite())) {
            return None;
        }
        Some(Lsq {
            cols,
            active: (0..d).collect(),
            h,
            beta,
            yy,
        })
    }

    /// Positions in `active` of atom `a`'s columns.
    fn block(&self, a: usize) -> Vec<usize> {
        let Some(c) = self.cols.get(&a) else {
            return vec![];
        };
        self.active
            .iter()
            .enumerate()
            .filter(|(_, x)| c.binary_search(x).is_ok())
            .map(|(i, _)| i)
            .collect()
    }

    /// Relative increase of the fit error when atom `a`'s columns are dropped.
    fn cost(&self, a: usize) -> f64 {
        let b = self.block(a);
        if b.is_empty() {
            return 0.0;
        }
        let hbb = Mat::<f64>::from_fn(b.len(), b.len(), |i, j| self.h[(b[i], b[j])]);
        let bb = Mat::<f64>::from_fn(b.len(), self.beta.ncols(), |i, j| self.beta[(b[i], j)]);
        let Ok(llt) = hbb.llt(faer::Side::Lower) else {
            return f64::INFINITY;
        };
        let z = llt.solve(&bb);
        let mut e = 0.0;
        for j in 0..bb.ncols() {
            for i in 0..bb.nrows() {
                e += bb[(i, j)] * z[(i, j)];
            }
        }
        e.max(0.0) / self.yy
    }

    /// Drops the columns of `atoms` and downdates `h` and `beta` (the refit on the rest).
    fn remove(&mut self, atoms: &[usize]) {
        let mut b: Vec<usize> = atoms.iter().flat_map(|&a| self.block(a)).collect();
        b.sort_unstable();
        if b.is_empty() {
            return;
        }
        let d = self.active.len();
        let m = self.beta.ncols();
        let hbb = Mat::<f64>::from_fn(b.len(), b.len(), |i, j| self.h[(b[i], b[j])]);
        // [H_B: | β_B] solved against H_BB.
        let rhs = Mat::<f64>::from_fn(b.len(), d + m, |i, j| {
            if j < d {
                self.h[(b[i], j)]
            } else {
                self.beta[(b[i], j - d)]
            }
        });
        let Ok(llt) = hbb.llt(faer::Side::Lower) else {
            return;
        };
        let x = llt.solve(&rhs);
        let hcol = Mat::<f64>::from_fn(d, b.len(), |i, j| self.h[(i, b[j])]);
        let upd = &hcol * &x;
        let rest: Vec<usize> = (0..d).filter(|i| b.binary_search(i).is_err()).collect();
        self.h = Mat::from_fn(rest.len(), rest.len(), |i, j| {
            self.h[(rest[i], rest[j])] - upd[(rest[i], rest[j])]
        });
        self.beta = Mat::from_fn(rest.len(), m, |i, j| {
            self.beta[(rest[i], j)] - upd[(rest[i], d + j)]
        });
        self.active = rest.iter().map(|&i| self.active[i]).collect();
        for a in atoms {
            self.cols.remove(a);
        }
    }
}

/// The greedy elimination order of a group's removable atoms `free` (first removed first).
fn removal_order(free: &[usize], ts: &mut [Lsq]) -> Vec<usize> {
    let mut remaining = free.to_vec();
    let mut order = Vec::with_capacity(free.len());
    while remaining.len() > 1 {
        let mut scored: Vec<(f64, usize)> = remaining
            .iter()
            .map(|&a| (ts.iter().map(|t| t.cost(a)).sum::<f64>(), a))
            .collect();
        scored.sort_by(|x, y| crate::order::fcmp(x.0, y.0).then(x.1.cmp(&y.1)));
        let k = (remaining.len() / 32).clamp(1, remaining.len() - 1);
        let drop: Vec<usize> = scored[..k].iter().map(|&(_, a)| a).collect();
        ts.iter_mut().for_each(|t| t.remove(&drop));
        remaining.retain(|a| !drop.contains(a));
        order.extend(drop);
    }
    order.extend(remaining);
    order
}
