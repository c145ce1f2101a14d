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

mod cached;
pub use cached::FastCache;

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

/// How a target computes its output from its input rows.
#[derive(Clone, Debug)]
enum Kernel {
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

struct Target {
    node: NodeId,
    /// The channel space the target reads.
    space: crate::analysis::channels::SpaceId,
    label: String,
    kernel: Kernel,
    /// Kept output channel indices of the original output (all when the output is unpruned).
    kout: Vec<usize>,
    /// Output channels of the original node.
    cout_orig: usize,
    /// Kept input elements per row of the original input: channels (conv), or feature
    /// indices (dense; a flattened channel covers several).
    kin: Vec<usize>,
    /// Original input/output values (in O) and the pruned model's input / output values (in P).
    o_in: ValueId,
    o_out: ValueId,
    p_in: ValueId,
    p_out: ValueId,
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

/// Seeded output positions of sample `g` for the target with node index `ti` (the same in
/// both models, whatever else is pruned).
fn positions(seed: u64, ti: usize, g: usize, hw: usize, m: usize) -> Vec<usize> {
    if m >= hw {
        return (0..hw).collect();
    }
    let s = seed ^ (ti as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (g as u64).rotate_left(32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let mut v = rand::seq::index::sample(&mut rng, hw, m).into_vec();
    v.sort_unstable();
    v
}

#[derive(Default)]
struct Moments {
    sum: Vec<f64>,
    sq: Vec<f64>,
    count: f64,
}

impl Moments {
    /// Adds one sample `[C, hw]`, keeping the channels `keep` (in that order).
    fn add(&mut self, img: &[f32], keep: &[usize], hw: usize) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; keep.len()];
            self.sq = vec![0.0; keep.len()];
        }
        for (j, &k) in keep.iter().enumerate() {
            let row = &img[k * hw..(k + 1) * hw];
            let (s, q) = row.iter().fold((0f64, 0f64), |(s, q), &v| {
                let v = v as f64;
                (s + v, q + v * v)
            });
            self.sum[j] += s;
            self.sq[j] += q;
        }
        self.count += hw as f64;
    }
    fn mean_var(&self, j: usize) -> (f64, f64) {
        let n = self.count.max(1.0);
        let m = self.sum[j] / n;
        (m, (self.sq[j] / n - m * m).max(0.0))
    }
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

/// The consumers of pruned channels, matched between the original and the pruned model.
/// The consumers of pruned channels in `pruned` (made by `p.apply(keep)`); with `all`, every
/// consumer of a channel space (with `keep` all true and `pruned` the original model: the
/// targets whose statistics rank channels in [`FastCache::ls_importance`]).
fn find_targets(
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
        let Some(w) = pn.inputs.get(1).copied().flatten() else {
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
        let out_axis = match (pn.op_type.as_str(), pn.attr_i("transB").unwrap_or(0)) {
            ("Conv", _) | ("Gemm", 1) => 0,
            ("ConvTranspose", _) | ("MatMul", _) | ("Gemm", _) => 1,
            _ => {
                skipped.push(why("not a Conv/ConvTranspose/Gemm/MatMul"));
                continue;
            }
        };
        let Some(ow) = on
            .inputs
            .get(1)
            .copied()
            .flatten()
            .and_then(|w| og.foldable_const(w))
        else {
            skipped.push(why("weight is not a constant"));
            continue;
        };
        let cout_orig = ow.dims.get(out_axis).copied().unwrap_or(0) as usize;
        let kin_ch = p.ch.kept(space, keep);
        let kin = if matches!(pn.op_type.as_str(), "Gemm" | "MatMul") {
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
        let mut kernel = kernel_of(pn, &wt.dims);
        let out_rank = p.analysis.facts[o_out.0].shape.as_ref().map(|s| s.len());
        if matches!(kernel, Kernel::Dense { .. }) && out_rank != Some(2) {
            kernel = Kernel::Other;
        }
        let group = pn.attr_i("group").unwrap_or(1);
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
                if pn.op_type == "MatMul"
                    || (pn.op_type == "ConvTranspose" && group != 1)
                    || (pn.op_type == "Gemm" && out_rank != Some(2)) =>
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

fn kernel_of(n: &crate::ir::Node, wdims: &[i64]) -> Kernel {
    match n.op_type.as_str() {
        "Conv" if wdims.len() == 4 && n.attr_i("group").unwrap_or(1) == 1 => {
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
        "Gemm"
            if n.attr_f("alpha").unwrap_or(1.0) == 1.0
                && n.attr_f("beta").unwrap_or(1.0) == 1.0
                && n.attr_i("transA").unwrap_or(0) == 0 =>
        {
            Kernel::Dense {
                trans: n.attr_i("transB").unwrap_or(0) == 1,
                bias: true,
            }
        }
        "MatMul" if wdims.len() == 2 => Kernel::Dense {
            trans: false,
            bias: false,
        },
        _ => Kernel::Other,
    }
}

/// Rows of the design matrix for one batch of the target's input `v`.
#[allow(clippy::too_many_arguments)]
fn lhs_rows(
    t: &Target,
    v: &HostTensor,
    kin: Option<&[usize]>,
    seed: u64,
    ti: usize,
    first: usize,
    m: usize,
    out_hw: usize,
    out_hw2: [usize; 2],
    cols: usize,
) -> Result<Vec<f64>> {
    let (b, c, in_hw) = dims3(v, &t.label)?;
    let mut rows = Vec::with_capacity(b * m * cols);
    match &t.kernel {
        Kernel::Conv {
            k,
            stride,
            dil,
            pad,
            auto_upper,
        } => {
            if v.shape.len() != 4 {
                return Err(Error::Usage(format!("{}: conv input is not 4-D", t.label)));
            }
            let (h, w) = (v.shape[2], v.shape[3]);
            let (ho, wo) = (out_hw2[0], out_hw2[1]);
            if ho * wo != out_hw {
                return Err(Error::Usage(format!("{}: output is not 2-D", t.label)));
            }
            let pads = match pad {
                Some(p) => *p,
                None => {
                    let same = |i: usize, o: usize, ax: usize| {
                        let total =
                            ((o - 1) * stride[ax] + (k[ax] - 1) * dil[ax] + 1).saturating_sub(i);
                        if *auto_upper {
                            total / 2
                        } else {
                            total - total / 2
                        }
                    };
                    [same(h, ho, 0), same(w, wo, 1)]
                }
            };
            let all: Vec<usize>;
            let chans = match kin {
                Some(k) => k,
                None => {
                    all = (0..c).collect();
                    &all
                }
            };
            if chans.iter().any(|&ci| ci >= c) {
                return Err(Error::Usage(format!("{}: input has {c} channels", t.label)));
            }
            let bias = cols == chans.len() * k[0] * k[1] + 1;
            for bi in 0..b {
                let img = &v.data[bi * c * in_hw..(bi + 1) * c * in_hw];
                for pos in positions(seed, ti, first + bi, out_hw, m) {
                    let (oy, ox) = (pos / wo, pos % wo);
                    for &ci in chans {
                        for ky in 0..k[0] {
                            let y = (oy * stride[0] + ky * dil[0]) as isize - pads[0] as isize;
                            for kx in 0..k[1] {
                                let xx = (ox * stride[1] + kx * dil[1]) as isize - pads[1] as isize;
                                let val =
                                    if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                                        img[ci * in_hw + y as usize * w + xx as usize] as f64
                                    } else {
                                        0.0
                                    };
                                rows.push(val);
                            }
                        }
                    }
                    if bias {
                        rows.push(1.0);
                    }
                }
            }
        }
        Kernel::Dense { bias, .. } => {
            let per = v.data.len() / b.max(1);
            let width = kin.map(|k| k.len()).unwrap_or(per);
            if v.shape.len() != 2
                || width + usize::from(*bias) != cols
                || kin.is_some_and(|k| k.iter().any(|&i| i >= per))
            {
                return Err(Error::Usage(format!(
                    "{}: dense input {:?} does not match its weight",
                    t.label, v.shape
                )));
            }
            for bi in 0..b {
                let row = &v.data[bi * per..(bi + 1) * per];
                match kin {
                    Some(k) => rows.extend(k.iter().map(|&i| row[i] as f64)),
                    None => rows.extend(row.iter().map(|&x| x as f64)),
                }
                if *bias {
                    rows.push(1.0);
                }
            }
        }
        Kernel::Other => unreachable!("least squares only runs on Conv/Dense targets"),
    }
    Ok(rows)
}

/// A node's weights (and bias row) as a [cols, k] matrix (k output channels).
fn weights_of(m: &Model, node: NodeId, kernel: &Kernel, k: usize, label: &str) -> Result<Mat<f64>> {
    let n = m.graph.node(node);
    let wt = n
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|w| m.graph.foldable_const(w))
        .ok_or_else(|| Error::Usage(format!("{label}: weight is not a constant")))?;
    let w = wt
        .as_f32s()
        .ok_or_else(|| Error::Usage(format!("{label}: weight is not float32")))?;
    let wd = &wt.dims;
    let bias: Option<Vec<f32>> = n
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| m.graph.foldable_const(b))
        .and_then(|b| b.as_f32s());
    if k == 0 || w.len() % k != 0 {
        return Err(Error::Usage(format!(
            "{label}: weight does not have {k} outputs"
        )));
    }
    let b = |o: usize| bias.as_ref().map(|b| b[o % b.len()] as f64).unwrap_or(0.0);
    match *kernel {
        Kernel::Conv { .. } => {
            let per = w.len() / k;
            Ok(Mat::from_fn(per + 1, k, |i, o| {
                if i < per {
                    w[o * per + i] as f64
                } else {
                    b(o)
                }
            }))
        }
        Kernel::Dense { trans, bias: hb } => {
            let kin = (wd[0] * wd[1]) as usize / k;
            Ok(Mat::from_fn(kin + usize::from(hb), k, |i, o| {
                if i < kin {
                    (if trans { w[o * kin + i] } else { w[i * k + o] }) as f64
                } else {
                    b(o)
                }
            }))
        }
        Kernel::Other => Err(Error::Usage(format!(
            "{label}: least squares supports Conv (group 1), Gemm and MatMul"
        ))),
    }
}

/// max |A·W₀ − y| / max(max |y|, 1) on the sampled rows of the first batch, where y is the
/// runtime's output of the target.
#[allow(clippy::too_many_arguments)]
fn patch_mismatch(
    t: &Target,
    rows: &[f64],
    w0: &Mat<f64>,
    out: &HostTensor,
    seed: u64,
    ti: usize,
    m: usize,
) -> f64 {
    let cols = w0.nrows();
    let Ok((b, ch, hw)) = dims3(out, &t.label) else {
        return f64::INFINITY;
    };
    if ch != w0.ncols() {
        return f64::INFINITY;
    }
    let (mut worst, mut scale) = (0f64, 1f64);
    let mut r = 0;
    for bi in 0..b {
        let img = &out.data[bi * ch * hw..(bi + 1) * ch * hw];
        for pos in positions(seed, ti, bi, hw, m) {
            let row = &rows[r * cols..(r + 1) * cols];
            for o in 0..ch {
                let pred: f64 = row.iter().enumerate().map(|(i, a)| a * w0[(i, o)]).sum();
                let y = img[o * hw + pos] as f64;
                worst = worst.max((pred - y).abs());
                scale = scale.max(y.abs());
            }
            r += 1;
        }
    }
    worst / scale
}

/// Ridge solution towards `w0`; returns the weights and the relative fit error before/after.
fn solve_ridge(
    g: &Mat<f64>,
    cy: &Mat<f64>,
    yy: f64,
    w0: &Mat<f64>,
    ridge: f64,
    label: &str,
) -> Result<(Mat<f64>, f64, f64)> {
    let n = g.nrows();
    let mean_diag = (0..n).map(|i| g[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let err = |w: &Mat<f64>| {
        // ‖AW − Y‖² = tr(WᵀGW) − 2·tr(WᵀC) + ‖Y‖²
        let gw = g * w;
        let mut e = yy;
        for j in 0..w.ncols() {
            for i in 0..n {
                e += w[(i, j)] * (gw[(i, j)] - 2.0 * cy[(i, j)]);
            }
        }
        e.max(0.0) / yy.max(1e-30)
    };
    let mut lambda = ridge * mean_diag.max(1e-12);
    for _ in 0..6 {
        let mut a = g.clone();
        for i in 0..n {
            a[(i, i)] += lambda;
        }
        let mut rhs = cy + w0 * faer::Scale(lambda);
        if let Ok(llt) = a.llt(Side::Lower) {
            llt.solve_in_place(&mut rhs);
            if rhs.col_iter().all(|c| c.iter().all(|v| v.is_finite())) {
                return Ok((rhs.clone(), err(w0), err(&rhs)));
            }
        }
        lambda *= 10.0;
    }
    Err(Error::Usage(format!(
        "{label}: least-squares system is singular even with ridge"
    )))
}

fn replace_const(m: &mut Model, node: NodeId, slot: usize, t: Tensor, hint: &str) {
    let v = m.graph.add_const(hint, t);
    while m.graph.node(node).inputs.len() <= slot {
        m.graph.node_mut(node).inputs.push(None);
    }
    m.graph.set_input(node, slot, Some(v));
}

fn write_weights(m: &mut Model, t: &Target, w: &Mat<f64>) -> Result<()> {
    let n = m.graph.node(t.node);
    let wv = n.inputs[1].unwrap();
    let wname = m.graph.value(wv).name.clone();
    let dims = m.graph.foldable_const(wv).unwrap().dims.clone();
    let k = t.kout.len();
    let (wdata, bias): (Vec<f32>, Option<Vec<f32>>) = match t.kernel {
        Kernel::Conv { .. } => {
            let per = w.nrows() - 1;
            let mut d = vec![0f32; k * per];
            for o in 0..k {
                for i in 0..per {
                    d[o * per + i] = w[(i, o)] as f32;
                }
            }
            (d, Some((0..k).map(|o| w[(per, o)] as f32).collect()))
        }
        Kernel::Dense { trans, bias } => {
            let kin = w.nrows() - usize::from(bias);
            let mut d = vec![0f32; k * kin];
            for o in 0..k {
                for i in 0..kin {
                    d[if trans { o * kin + i } else { i * k + o }] = w[(i, o)] as f32;
                }
            }
            (
                d,
                bias.then(|| (0..k).map(|o| w[(kin, o)] as f32).collect()),
            )
        }
        Kernel::Other => unreachable!(),
    };
    replace_const(
        m,
        t.node,
        1,
        Tensor::f32(&dims, wdata),
        &format!("{wname}_ls"),
    );
    if let Some(b) = bias {
        replace_const(
            m,
            t.node,
            2,
            Tensor::f32(&[k as i64], b),
            &format!("{wname}_ls_bias"),
        );
    }
    Ok(())
}

/// Moments a target's output should have during re-calibration: the following BN's running
/// mean/variance (and its epsilon), or the original output's moments (BN folded).
fn reference_moments(m: &Model, t: &Target, orig: &Moments) -> (Vec<f32>, Vec<f32>, f32) {
    if let Some(bn) = following_bn(m, t.p_out) {
        let n = m.graph.node(bn);
        let get = |i: usize| {
            n.inputs[i]
                .and_then(|v| m.graph.foldable_const(v))
                .and_then(|t| t.as_f32s())
        };
        if let (Some(mean), Some(var)) = (get(3), get(4)) {
            let eps = n.attr_f("epsilon").unwrap_or(1e-5);
            return (mean, var, eps);
        }
    }
    let k = orig.sum.len();
    let (mean, var) = (0..k)
        .map(|j| {
            let (mu, v) = orig.mean_var(j);
            (mu as f32, v as f32)
        })
        .unzip();
    (mean, var, 1e-5)
}

fn new_node(op: &str, name: String, inputs: Vec<Option<ValueId>>, order: u64) -> crate::ir::Node {
    crate::ir::Node {
        name,
        op_type: op.into(),
        domain: String::new(),
        inputs,
        outputs: vec![],
        implicit_inputs: vec![],
        attrs: vec![],
        doc_string: String::new(),
        residue: Default::default(),
        order,
    }
}

/// A copy of `model` where every target output y is replaced, for its readers, by
/// (y − μ_batch) / √(σ²_batch + ε) · √(v_ref + ε) + m_ref; returns it and the batch mean and
/// variance values of each target.
fn with_normalizers(
    model: &Model,
    targets: &[Target],
    refs: &[(Vec<f32>, Vec<f32>, f32)],
) -> Result<(Model, Vec<(ValueId, ValueId)>)> {
    let mut m = model.clone();
    let opset = m.opset();
    let mut stats = vec![];
    for (t, (mref, vref, eps)) in targets.iter().zip(refs) {
        let g = &mut m.graph;
        let y = t.p_out;
        let rank = p_rank(model, t);
        if g.is_graph_output(y) || rank < 2 {
            return Err(Error::Usage(format!(
                "{}: cannot re-calibrate a graph output or a rank-{rank} value",
                t.label
            )));
        }
        let readers: Vec<crate::ir::Use> = g.value(y).uses.clone();
        let order = g.node(t.node).order;
        let c = mref.len() as i64;
        let mut shape = vec![1i64; rank];
        shape[1] = c;
        let axes: Vec<i64> = (0..rank as i64).filter(|&a| a != 1).collect();
        let base = g.fresh_name("recal");
        let mut e = Emit {
            g,
            base,
            order,
            opset,
            axes,
        };
        let mean = e.reduce_mean(y);
        let d = e.op("Sub", vec![y, mean], vec![]);
        let d2 = e.op("Mul", vec![d, d], vec![]);
        let var = e.reduce_mean(d2);
        let ev = e.g.add_const("recal_eps", Tensor::f32(&[], vec![*eps]));
        let ve = e.op("Add", vec![var, ev], vec![]);
        let sd = e.op("Sqrt", vec![ve], vec![]);
        let z = e.op("Div", vec![d, sd], vec![]);
        let scale: Vec<f32> = vref.iter().map(|v| (v + eps).sqrt()).collect();
        let sc = e.g.add_const("recal_scale", Tensor::f32(&shape, scale));
        let mc =
            e.g.add_const("recal_shift", Tensor::f32(&shape, mref.clone()));
        let zs = e.op("Mul", vec![z, sc], vec![]);
        let out = e.op("Add", vec![zs, mc], vec![]);
        let g = e.g;
        for u in readers {
            if let crate::ir::Slot::Input(i) = u.slot {
                g.set_input(u.node, i, Some(out));
            }
        }
        stats.push((mean, var));
    }
    Ok((m, stats))
}

/// Emits the nodes of one normaliser.
struct Emit<'a> {
    g: &'a mut crate::ir::Graph,
    base: String,
    order: u64,
    opset: i64,
    axes: Vec<i64>,
}

impl Emit<'_> {
    fn op(&mut self, ty: &str, ins: Vec<ValueId>, attrs: Vec<crate::ir::Attribute>) -> ValueId {
        let name = self.g.fresh_name(&format!("{}_{ty}", self.base));
        let mut n = new_node(
            ty,
            name.clone(),
            ins.into_iter().map(Some).collect(),
            self.order,
        );
        n.attrs = attrs;
        let id = self.g.add_node(n, &[name]);
        self.g.node(id).outputs[0].unwrap()
    }

    /// Mean over every axis but 1, kept as size-1 dims (axes as attribute before opset 18).
    fn reduce_mean(&mut self, v: ValueId) -> ValueId {
        use crate::ir::{AttrValue, Attribute};
        let attr = |name: &str, value| Attribute {
            name: name.into(),
            value,
            residue: Default::default(),
        };
        let keep = attr("keepdims", AttrValue::Int(1));
        if self.opset >= 18 {
            let t = Tensor::i64(&[self.axes.len() as i64], self.axes.clone());
            let ax = self.g.add_const("recal_axes", t);
            self.op("ReduceMean", vec![v, ax], vec![keep])
        } else {
            let a = attr("axes", AttrValue::Ints(self.axes.clone()));
            self.op("ReduceMean", vec![v], vec![a, keep])
        }
    }
}

fn p_rank(m: &Model, t: &Target) -> usize {
    let n = m.graph.node(t.node);
    match n.op_type.as_str() {
        "Gemm" | "MatMul" => 2,
        _ => n
            .inputs
            .get(1)
            .copied()
            .flatten()
            .and_then(|w| m.graph.foldable_const(w))
            .map(|w| w.dims.len())
            .unwrap_or(0),
    }
}

/// Level of each target: 0 when no other target is upstream of its input, else one more than
/// the deepest target upstream.
fn dependency_levels(m: &Model, targets: &[Target]) -> Vec<usize> {
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

/// The BatchNormalization reading `v` when it is `v`'s only reader.
fn following_bn(m: &Model, v: ValueId) -> Option<NodeId> {
    let val = m.graph.value(v);
    if val.uses.len() != 1 || m.graph.is_graph_output(v) {
        return None;
    }
    let u = val.uses[0];
    let n = m.graph.node(u.node);
    (n.op_type == "BatchNormalization"
        && u.slot == crate::ir::Slot::Input(0)
        && n.outputs.len() == 1
        && n.inputs.len() == 5)
        .then_some(u.node)
}

fn write_bn_stats(m: &mut Model, bn: NodeId, mp: &Moments) -> Result<()> {
    let c = mp.sum.len();
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|j| {
            let (mu, v) = mp.mean_var(j);
            (mu as f32, v as f32)
        })
        .unzip();
    let name = m.graph.node(bn).label(bn);
    replace_const(
        m,
        bn,
        3,
        Tensor::f32(&[c as i64], mean),
        &format!("{name}_mean_recal"),
    );
    replace_const(
        m,
        bn,
        4,
        Tensor::f32(&[c as i64], var),
        &format!("{name}_var_recal"),
    );
    Ok(())
}

/// Scales and shifts the target's output channels so their mean/std match the original's.
fn moment_match(m: &mut Model, t: &Target, mp: &Moments, mo: &Moments) -> Result<()> {
    let n = m.graph.node(t.node);
    let wv = n.inputs[1].unwrap();
    let wt = m.graph.foldable_const(wv).unwrap().clone();
    let Some(Arr::F32(mut w)) = wt.to_arr() else {
        return Err(Error::Usage(format!("{}: weight is not float32", t.label)));
    };
    let k = t.kout.len();
    if mp.sum.len() != k || mo.sum.len() != k {
        return Err(Error::Usage(format!("{}: channel count mismatch", t.label)));
    }
    let axis = match (n.op_type.as_str(), n.attr_i("transB").unwrap_or(0)) {
        ("Conv", _) | ("Gemm", 1) => 0,
        _ => 1,
    };
    let old_b: Vec<f32> = n
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| m.graph.foldable_const(b))
        .and_then(|b| b.as_f32s())
        .map(|b| if b.len() == k { b } else { vec![b[0]; k] })
        .unwrap_or_else(|| vec![0.0; k]);
    let mut new_b = vec![0f32; k];
    for j in 0..k {
        let (mu_p, var_p) = mp.mean_var(j);
        let (mu_o, var_o) = mo.mean_var(j);
        let a = if var_p > 1e-12 {
            (var_o / var_p).sqrt()
        } else {
            1.0
        };
        w.index_axis_mut(ndarray::Axis(axis), j)
            .mapv_inplace(|x| (x as f64 * a) as f32);
        new_b[j] = (a * (old_b[j] as f64 - mu_p) + mu_o) as f32;
    }
    let name = m.graph.value(wv).name.clone();
    replace_const(m, t.node, 1, Arr::F32(w).to_tensor(), &format!("{name}_mm"));
    replace_const(
        m,
        t.node,
        2,
        Tensor::f32(&[k as i64], new_b),
        &format!("{name}_mm_bias"),
    );
    Ok(())
}
