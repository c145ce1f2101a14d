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
        let targets = find_targets(p, keep, pruned, Mode::Ls, &mut report.skipped);
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
