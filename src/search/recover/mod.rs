//! Fast recovery of a pruned model from calibration data, without training.
//!
//! The *targets* are the consumers of pruned channels: the nodes whose weights read a channel
//! space that lost channels (ThiNet / AMC / AIMET channel pruning reconstruct exactly these).
//! For each target we compare the pruned model `P` with the original (simplified) model `O` on
//! the same calibration images:
//!
//! - [`Mode::Ls`], least-squares reconstruction: refit the target's weights (and bias) on the
//!   kept input channels so that its output in `P` matches the original output in `O`,
//!   min ‖A·W − Y‖² + λ‖W − W₀‖² (ridge towards the current weights, λ = `ridge` × mean diagonal
//!   of AᵀA), solved by Cholesky (`faer`). Rows of A are im2col patches at a few seeded spatial
//!   positions per image. Conv (group 1, 2-D), Gemm (alpha = beta = 1) and MatMul targets.
//! - [`Mode::Bn`], re-calibration: where a target's output feeds a BatchNormalization, that
//!   node's running mean/variance are re-estimated from `P`'s activations (what "BN
//!   re-calibration" does); where BN was folded into the conv (no BN node), the target's output
//!   channels get the same per-channel correction directly: they are scaled and shifted so their
//!   mean and standard deviation match the original model's.
//!
//! Inputs of later targets change when earlier ones are corrected. Least squares therefore
//! runs level by level (`sequential`): targets with no corrected target upstream are fit on the
//! original run, then each dependency level on one forward run of `P` as corrected so far
//! (fitting all levels at once on `P`'s uncorrected activations over-compensates and diverges).
//! Re-calibration does it in a single run of `P`, with batch-statistics normalisers inserted
//! after every target, as BatchNorm in training mode does. `O` runs once; its outputs at the
//! targets are cached.
//!
//! Files: `targets.rs` (what is fit and in which order), `fit.rs` (least squares), `bn.rs`
//! (re-calibration), `cached.rs` (the search's one-round fit from cached normal equations).

use crate::analysis::channels::Role;
use crate::error::{Error, Result};
use crate::eval::runtime::{self, Kind};
use crate::eval::HostTensor;
use crate::ir::{Arr, Model, NodeId, Tensor, ValueId, ValueInfo, ValueType};
use crate::onnx::{self, ExternalData, SaveOptions};
use crate::search::datafree::Pruner;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::Path;

mod bn;
mod cached;
mod fit;
mod targets;
use bn::*;
use fit::*;
use targets::*;

pub use cached::FastCache;
pub use targets::feature_taps;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    Bn,
    Ls,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "none" => Some(Mode::None),
            "bn" => Some(Mode::Bn),
            "ls" => Some(Mode::Ls),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Bn => "bn",
            Mode::Ls => "ls",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Ridge strength relative to the mean diagonal of AᵀA.
    pub ridge: f64,
    /// Least squares: refit level by level on the pruned model's own activations (one forward
    /// run of the pruned model per dependency level; AIMET-style). `false`: one round on the
    /// original model's activations only (ThiNet-style; no run of the pruned model, fastest).
    pub sequential: bool,
    /// Sampled output positions per image and target (least squares).
    pub positions: usize,
    pub batch: usize,
    pub seed: u64,
    pub runtime: Kind,
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: Mode::Ls,
            ridge: 1e-3,
            sequential: true,
            positions: 16,
            batch: 64,
            seed: 0,
            runtime: if cfg!(feature = "tract") {
                Kind::Tract
            } else {
                Kind::Ort
            },
            threads: runtime::all_threads(),
        }
    }
}

/// What recovery did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub mode: String,
    pub samples: usize,
    /// Forward runs of the pruned model (the original runs once).
    pub passes: usize,
    /// Consumers of pruned channels.
    pub targets: usize,
    /// Targets whose weights were refit by least squares.
    pub refit: usize,
    /// BatchNormalization nodes whose statistics were re-estimated.
    pub bn_recalibrated: usize,
    /// Targets whose output channels were moment-matched (BN folded).
    pub moment_matched: usize,
    /// Targets left as they were, with the reason.
    pub skipped: Vec<String>,
    /// Least squares, last pass: mean over targets of ‖AW−Y‖²/‖Y‖² with the weights before
    /// and after the refit.
    pub fit_error_before: Option<f64>,
    pub fit_error_after: Option<f64>,
    pub seconds: f64,
    /// `--recover ft:STEPS`: the short fine-tune after least squares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneInfo>,
}

/// The fine-tune part of `--recover ft:STEPS`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FinetuneInfo {
    pub steps: usize,
    pub batch: usize,
    pub samples: usize,
    pub seconds: f64,
    /// Mean loss over the first and the last 10% of the steps.
    pub loss_first: f32,
    pub loss_last: f32,
}

/// Recovers `pruned` (made by `p.apply(keep)`) in place on the calibration images `x`
/// (`n` samples of `chw`).
pub fn recover(
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
        mode: o.mode.name().into(),
        samples: n,
        passes: 0,
        ..Default::default()
    };
    if o.mode == Mode::None || n == 0 {
        return Ok(report);
    }
    let ls = o.mode == Mode::Ls;
    let targets = find_targets(p, keep, pruned, o.mode, &mut report.skipped, false);
    report.targets = targets.len() + report.skipped.len();
    if targets.is_empty() {
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    let tmp = crate::eval::TempDir::new("recover")?;
    // A model with a fixed batch dim takes batches of exactly that size.
    let o = &Options {
        batch: crate::eval::fixed_batch(&p.model).unwrap_or(o.batch),
        ..o.clone()
    };
    let m = |t: &Target, hw: usize| match t.kernel {
        Kernel::Conv { .. } => o.positions.min(hw).max(1),
        _ => hw,
    };
    // One run of the original model: the targets' outputs are cached (rows at the sampled
    // positions, or channel moments); with least squares, the first round is fit right away on
    // the original inputs restricted to the kept channels (ThiNet), which does not depend on
    // the other targets' corrections.
    let mut o_vals: Vec<ValueId> = targets.iter().map(|t| t.o_out).collect();
    if ls {
        o_vals.extend(targets.iter().map(|t| t.o_in));
    }
    let o_path = tmp.0.join("original.onnx");
    let o_idx = export_with_outputs(&p.model, &o_vals, &o_path)?;
    let (o_out_idx, o_in_idx) = o_idx.split_at(targets.len());
    let levels = if ls && o.sequential {
        dependency_levels(pruned, &targets)
    } else {
        vec![0; targets.len()]
    };
    let mut cache: Vec<TargetCache> = targets.iter().map(|_| TargetCache::default()).collect();
    let mut acc: Vec<Acc> = targets
        .iter()
        .zip(&levels)
        .map(|(t, &l)| {
            if l == 0 {
                Acc::new(t, pruned, o.mode)
            } else {
                Ok(Acc::Idle)
            }
        })
        .collect::<Result<_>>()?;
    let o_weights: Vec<Option<Mat<f64>>> = targets
        .iter()
        .map(|t| {
            ls.then(|| weights_of(&p.model, t.node, &t.kernel, t.cout_orig, &t.label).ok())
                .flatten()
        })
        .collect();
    {
        let mut rt = runtime::open(o.runtime, &o_path, o.batch, chw, o.threads)?;
        rt.for_each_batch(x, n, &mut |s, outs| {
            cache
                .par_iter_mut()
                .zip(acc.par_iter_mut())
                .zip(&targets)
                .enumerate()
                .try_for_each(|(ti, ((c, a), t))| {
                    let y = &outs[o_out_idx[ti]];
                    let (b, ch, hw) = dims3(y, &t.label)?;
                    c.hw = hw;
                    if y.shape.len() == 4 {
                        c.hw2 = [y.shape[2], y.shape[3]];
                    }
                    for bi in 0..b {
                        let img = &y.data[bi * ch * hw..(bi + 1) * ch * hw];
                        if ls {
                            for pos in positions(o.seed, t.node.0, s + bi, hw, m(t, hw)) {
                                c.rows.extend(t.kout.iter().map(|&k| img[k * hw + pos]));
                            }
                        } else {
                            c.moments.add(img, &t.kout, hw);
                        }
                    }
                    if ls {
                        let xin = &outs[o_in_idx[ti]];
                        if s == 0 {
                            // Check the patch model against the runtime on the first batch.
                            c.mismatch = match &o_weights[ti] {
                                Some(w) => {
                                    let rows = lhs_rows(
                                        t,
                                        xin,
                                        None,
                                        o.seed,
                                        t.node.0,
                                        0,
                                        m(t, hw),
                                        c.hw,
                                        c.hw2,
                                        w.nrows(),
                                    )?;
                                    patch_mismatch(t, &rows, w, y, o.seed, t.node.0, m(t, hw))
                                }
                                None => f64::INFINITY,
                            };
                        }
                        a.add(t, c, xin, Some(&t.kin), o.seed, t.node.0, s, m(t, c.hw))?;
                    }
                    Ok::<(), Error>(())
                })
        })?;
    }
    let mut fits: Vec<(f64, f64)> = vec![];
    // Least squares, sequential: targets by dependency level. Level 0 (no corrected target
    // upstream) sees the same kept inputs in both models, so its round-0 fit is final; every
    // further level is fit on the pruned model's inputs with all upstream levels corrected.
    let rounds = levels.iter().max().map(|l| l + 1).unwrap_or(1);
    report.passes = 0;
    for pass in 0..rounds {
        let active: Vec<bool> = levels.iter().map(|&l| !ls || l == pass).collect();
        if ls && pass > 0 {
            let p_vals: Vec<ValueId> = targets
                .iter()
                .zip(&active)
                .filter(|(_, &a)| a)
                .map(|(t, _)| t.p_in)
                .collect();
            let p_path = tmp.0.join(format!("pruned{pass}.onnx"));
            let p_idx_active = export_with_outputs(pruned, &p_vals, &p_path)?;
            let mut p_idx = vec![usize::MAX; targets.len()];
            let mut it = p_idx_active.into_iter();
            for (i, &a) in active.iter().enumerate() {
                if a {
                    p_idx[i] = it.next().unwrap();
                }
            }
            acc = targets
                .iter()
                .zip(&active)
                .map(|(t, &a)| {
                    if a {
                        Acc::new(t, pruned, o.mode)
                    } else {
                        Ok(Acc::Idle)
                    }
                })
                .collect::<Result<_>>()?;
            let mut rt = runtime::open(o.runtime, &p_path, o.batch, chw, o.threads)?;
            rt.for_each_batch(x, n, &mut |s, outs| {
                acc.par_iter_mut()
                    .zip(&targets)
                    .zip(&cache)
                    .enumerate()
                    .filter(|(ti, _)| p_idx[*ti] != usize::MAX)
                    .try_for_each(|(ti, ((a, t), c))| {
                        a.add(
                            t,
                            c,
                            &outs[p_idx[ti]],
                            None,
                            o.seed,
                            t.node.0,
                            s,
                            m(t, c.hw),
                        )
                    })
            })?;
            report.passes += 1;
        } else if !ls {
            // Re-calibration, as BatchNorm in training mode does it: every target's output is
            // normalised with the statistics of the current batch and given its reference
            // moments (the following BN's running statistics, or the original output's), so
            // each layer sees already-corrected inputs within one forward run. The per-batch
            // statistics are averaged (cumulative, like PyTorch's momentum=None).
            let refs: Vec<(Vec<f32>, Vec<f32>, f32)> = targets
                .iter()
                .zip(&cache)
                .map(|(t, c)| reference_moments(pruned, t, &c.moments))
                .collect();
            let (norm, stat_vals) = with_normalizers(pruned, &targets, &refs)?;
            let p_path = tmp.0.join(format!("pruned{pass}.onnx"));
            let flat: Vec<ValueId> = stat_vals.iter().flat_map(|&(a, b)| [a, b]).collect();
            let idx = export_with_outputs(&norm, &flat, &p_path)?;
            // Full batches only: batch statistics must not see padding.
            let bb = o.batch.min(n).max(1);
            let used = n - n % bb;
            // Per target: Σ batch means, Σ batch variances, Σ squared batch means, batches.
            type Sums = (Vec<f64>, Vec<f64>, Vec<f64>, f64);
            let mut sums: Vec<Sums> = targets
                .iter()
                .map(|_| (vec![], vec![], vec![], 0.0))
                .collect();
            let mut rt = runtime::open(o.runtime, &p_path, bb, chw, o.threads)?;
            rt.for_each_batch(&x[..used * chw.0 * chw.1 * chw.2], used, &mut |_, outs| {
                for (ti, acc) in sums.iter_mut().enumerate() {
                    let (mean, var) = (&outs[idx[2 * ti]].data, &outs[idx[2 * ti + 1]].data);
                    if acc.0.is_empty() {
                        acc.0 = vec![0.0; mean.len()];
                        acc.1 = vec![0.0; var.len()];
                        acc.2 = vec![0.0; mean.len()];
                    }
                    for ((a, q), &v) in acc.0.iter_mut().zip(acc.2.iter_mut()).zip(mean) {
                        *a += v as f64;
                        *q += v as f64 * v as f64;
                    }
                    for (a, &v) in acc.1.iter_mut().zip(var) {
                        *a += v as f64;
                    }
                    acc.3 += 1.0;
                }
                Ok(())
            })?;
            // Population moments by the law of total variance: E[var_b] + Var[mean_b].
            acc = sums
                .into_iter()
                .map(|(m, v, m2, k)| {
                    let k = k.max(1.0);
                    Acc::Moments(Moments {
                        sum: m.iter().map(|x| x / k).collect(),
                        sq: v
                            .iter()
                            .zip(&m2)
                            .map(|(var, sq)| var / k + sq / k)
                            .collect(),
                        count: 1.0,
                    })
                })
                .collect();
        }
        if !ls {
            report.passes += 1;
        }
        for (((t, a), c), &on) in targets
            .iter()
            .zip(std::mem::take(&mut acc))
            .zip(&cache)
            .zip(&active)
        {
            if !on {
                continue;
            }
            match a {
                Acc::Idle => {}
                Acc::Ls { g, cy, yy, w0, .. } => {
                    if c.mismatch > 1e-3 || !c.mismatch.is_finite() {
                        report.skipped.push(format!(
                            "{}: internal check failed (patch model differs from the runtime by {:.2e})",
                            t.label, c.mismatch
                        ));
                        continue;
                    }
                    let (w, before, after) = solve_ridge(&g, &cy, yy, &w0, o.ridge, &t.label)?;
                    write_weights(pruned, t, &w)?;
                    fits.push((before, after));
                    report.refit += 1;
                }
                Acc::Moments(mp) => {
                    if let Some(bn) = following_bn(pruned, t.p_out) {
                        write_bn_stats(pruned, bn, &mp)?;
                        report.bn_recalibrated += 1;
                    } else {
                        moment_match(pruned, t, &mp, &c.moments)?;
                        report.moment_matched += 1;
                    }
                }
            }
        }
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

/// Writes `model` with `extra` values appended to the graph outputs; returns each extra
/// value's output index.
pub fn export_with_outputs(model: &Model, extra: &[ValueId], path: &Path) -> Result<Vec<usize>> {
    let mut m = model.clone();
    let mut idx = vec![];
    for &v in extra {
        if let Some(i) = m.graph.outputs.iter().position(|&o| o == v) {
            idx.push(i);
            continue;
        }
        let val = m.graph.value_mut(v);
        if val.info.as_ref().and_then(|i| i.ty.as_ref()).is_none() {
            val.info = Some(ValueInfo {
                ty: Some(ValueType::Tensor {
                    elem: crate::ir::DataType::FLOAT,
                    shape: None,
                }),
                orig_ty: None,
                residue: Default::default(),
            });
        }
        idx.push(m.graph.outputs.len());
        m.graph.outputs.push(v);
    }
    onnx::save(
        &m,
        path,
        &SaveOptions {
            external: ExternalData::None,
        },
        &[],
    )?;
    Ok(idx)
}

/// `[B, C, spatial…]` or `[B, …, C]` (dense) viewed as (B, C, positions per sample) for
/// conv-like outputs; dense outputs `[B, N]` are (B, N, 1).
fn dims3(t: &HostTensor, label: &str) -> Result<(usize, usize, usize)> {
    if t.shape.len() < 2 {
        return Err(Error::Usage(format!(
            "{label}: activation of rank {} (expected [N, C, …])",
            t.shape.len()
        )));
    }
    let b = t.shape[0];
    let c = t.shape[1];
    let hw = t.shape[2..].iter().product::<usize>().max(1);
    Ok((b, c, hw))
}

#[derive(Default)]
struct TargetCache {
    /// Least squares: original outputs at the sampled positions, row-major [rows, kout].
    rows: Vec<f32>,
    /// Bn: moments of the original outputs (kept channels).
    moments: Moments,
    hw: usize,
    /// Spatial output shape of conv targets.
    hw2: [usize; 2],
    /// Least squares: relative difference between the patch model and the runtime.
    mismatch: f64,
}

enum Acc {
    Ls {
        g: Mat<f64>,
        cy: Mat<f64>,
        yy: f64,
        /// Current weights as [cols, kout].
        w0: Mat<f64>,
        cols: usize,
    },
    Moments(Moments),
    /// Not fit in this round.
    Idle,
}

impl Acc {
    fn new(t: &Target, m: &Model, mode: Mode) -> Result<Acc> {
        if mode == Mode::Bn {
            return Ok(Acc::Moments(Moments::default()));
        }
        let w0 = weights_of(m, t.node, &t.kernel, t.kout.len(), &t.label)?;
        let cols = w0.nrows();
        Ok(Acc::Ls {
            g: Mat::zeros(cols, cols),
            cy: Mat::zeros(cols, t.kout.len()),
            yy: 0.0,
            w0,
            cols,
        })
    }

    /// Adds one batch: `v` is the target's input (least squares; `kin` selects the kept
    /// channels when `v` comes from the original model) or output (moments).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        t: &Target,
        c: &TargetCache,
        v: &HostTensor,
        kin: Option<&[usize]>,
        seed: u64,
        ti: usize,
        s: usize,
        mt: usize,
    ) -> Result<()> {
        match self {
            Acc::Ls {
                g, cy, yy, cols, ..
            } => {
                let (b, _, _) = dims3(v, &t.label)?;
                let rows = lhs_rows(t, v, kin, seed, ti, s, mt, c.hw, c.hw2, *cols)?;
                let r = b * mt;
                let k = t.kout.len();
                let off = s * mt * k;
                let y = &c.rows[off..off + r * k];
                let am = Mat::<f64>::from_fn(r, *cols, |i, j| rows[i * *cols + j]);
                let ym = Mat::<f64>::from_fn(r, k, |i, j| y[i * k + j] as f64);
                *g += am.transpose() * &am;
                *cy += am.transpose() * &ym;
                *yy += y.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
            }
            Acc::Idle => {}
            Acc::Moments(mo) => {
                let (b, ch, hw) = dims3(v, &t.label)?;
                let all: Vec<usize> = (0..ch).collect();
                for bi in 0..b {
                    mo.add(&v.data[bi * ch * hw..(bi + 1) * ch * hw], &all, hw);
                }
            }
        }
        Ok(())
    }
}
