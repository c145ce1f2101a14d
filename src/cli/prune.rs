//! The main command without its search: data subsets, data-free and least-squares channel
//! ranking, recovery, writing the pruned model and its report; also `apply`, `verify` and
//! `shrink`.

#![cfg_attr(not(any(feature = "tract", feature = "ort")), allow(unused_imports))]

use super::*;
use anyhow::{bail, Context, Result};
use onnx_prune::analysis::{self, ShapeMode};
use onnx_prune::ir::Model;
use onnx_prune::onnx::{self, SaveOptions};
use onnx_prune::report::group_digits;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

pub(crate) fn load_pruner(
    input: &Path,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<(Model, onnx_prune::search::datafree::Pruner)> {
    let model = onnx::load(input)?;
    let p =
        onnx_prune::search::datafree::Pruner::new(&model, shapes).map_err(|e| e.in_file(input))?;
    Ok((model, p))
}

pub(crate) fn prune(input: &Path, output: &Path, ratio: f64, args: &PruneArgs) -> Result<()> {
    use onnx_prune::search::datafree::{Allocation, Method};
    let o = &args.opts;
    // The job's clock starts before anything is loaded; Ctrl-C is honoured from here on.
    let clock: std::sync::Arc<dyn onnx_prune::budget::Clock> =
        std::sync::Arc::new(onnx_prune::budget::SystemClock::new());
    let stop = if args.data.is_some() {
        stop_flag()
    } else {
        &STOP
    };
    let job = &mut Job::new(args, clock, stop);
    let (_, p) = load_pruner(input, &o.shapes.map())?;
    let method = match o.method.as_str() {
        "l2" => Method::L2,
        "random" => Method::Random,
        _ => Method::L1,
    };
    let ls = o.method == "ls"
        || (o.method == "auto" && args.data.is_some() && o.allocation == "uniform");
    let method_name = match o.method.as_str() {
        "auto" if ls => "ls",
        "auto" => "l1",
        m => m,
    };
    let alloc = if o.allocation == "global" {
        Allocation::Global
    } else {
        Allocation::Uniform
    };
    let target = (p.base_macs as f64 * ratio).floor() as u64;
    let mut extra = serde_json::Map::new();
    let ctx = match &args.data {
        Some(d) => Some(DataCtx::load(&p, d, args)?),
        None => None,
    };
    // With ls, the statistics it was computed from (the search's recovery reuses them).
    let (imp, fast) = match &ctx {
        Some(c) if ls => {
            let (imp, fast) = ls_importance(&p, c)?;
            (imp, Some(fast))
        }
        _ => (p.importance(method, o.seed), None),
    };
    let data_free = || p.allocate(target, &imp, alloc, o.round_to);
    // The plan the search competes against (and its label in the re-ranking).
    let baseline = format!(
        "{}-{method_name} ({})",
        o.allocation,
        if ls { "no search" } else { "data-free" }
    );
    let (keep, pruned, curve) = match &ctx {
        Some(c) => with_data(
            &p,
            c,
            ratio,
            args,
            (data_free(), &baseline),
            (&imp, fast),
            &mut extra,
            job,
        )?,
        None => {
            let keep = data_free();
            let m = p.apply(&keep)?;
            (keep, m, None)
        }
    };
    if let Some(c) = &ctx {
        // The measured speed-up of what is written (skipped after Ctrl-C: the user wants out).
        #[cfg(any(feature = "tract", feature = "ort"))]
        if job.interrupted.is_none() {
            super::search::speedup(input, &pruned, c, &mut extra)?;
        }
        let _ = c;
        extra.insert("time".into(), job.report());
    }
    let predicted = p.macs(&keep);
    finish_pruned(
        input,
        output,
        &p,
        &keep,
        &pruned,
        Some((ratio, target, predicted)),
        o.emit_plan.as_deref(),
        o.report.as_deref(),
        o.strict,
        extra,
        curve.as_deref(),
    )?;
    if let Some(phase) = job.interrupted {
        return Err(Interrupted(format!(
            "interrupted during {phase}: the best model so far is in {}{}",
            output.display(),
            match phase {
                "search" => " (the search's best plan, recovered; not re-ranked, not fine-tuned)",
                "recover" => " (recovered; not fine-tuned)",
                _ => " (fine-tuned up to the interruption, unless the recovered model scored higher on the validation subset: see the report)",
            }
        ))
        .into());
    }
    Ok(())
}

/// `--method ls`: channels ranked by their least-squares removal cost on the calibration
/// images the search's recovery uses (the first 512), with the search's fit options; also
/// returns the statistics gathered, for the search's oracle.
pub(crate) fn ls_importance(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
) -> Result<(Vec<f64>, onnx_prune::search::recover::FastCache)> {
    use onnx_prune::search::{datafree::Method, env, recover};
    let t0 = std::time::Instant::now();
    let sc = c.calib.subset(&(0..c.calib.n.min(512)).collect::<Vec<_>>());
    let mut fast = recover::FastCache::new();
    let (imp, fell_back) = fast.ls_importance(
        p,
        &sc.x,
        sc.n,
        c.chw,
        &env::cached_fit_options(c.kind),
        &p.importance(Method::L1, 0),
    )?;
    eprintln!(
        "channels ranked by least-squares removal cost on {} calibration images in {:.1}s{}",
        sc.n,
        t0.elapsed().as_secs_f64(),
        if fell_back > 0 {
            format!(" ({fell_back} group(s) without a usable consumer ranked by L1)")
        } else {
            String::new()
        }
    );
    Ok((imp, fast))
}

/// The data of the main command: seeded disjoint calibration and validation subsets, and the
/// runtime that runs them.
pub(crate) struct DataCtx {
    pub(crate) calib: onnx_prune::data::Dataset,
    pub(crate) val: onnx_prune::data::Dataset,
    #[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
    pub(crate) kind: onnx_prune::eval::runtime::Kind,
    pub(crate) chw: (usize, usize, usize),
    /// With fine-tuning (or --recover ft:STEPS): every sample not in `val`.
    pub(crate) train: Option<onnx_prune::data::Dataset>,
    /// The original model's outputs on `val` (computed once, for re-ranking and the report).
    #[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
    pub(crate) original: std::cell::OnceCell<(Vec<f32>, usize)>,
    /// The original model as a burn network: the distillation teacher of `--recover ft:STEPS`
    /// (search candidates and recovered plans share it).
    pub(crate) teacher: std::cell::OnceCell<onnx_prune::net::Net>,
}

impl DataCtx {
    /// The original model's outputs on the validation subset, and outputs per sample.
    #[cfg(any(feature = "tract", feature = "ort"))]
    pub(crate) fn original_logits(
        &self,
        p: &onnx_prune::search::datafree::Pruner,
    ) -> Result<&(Vec<f32>, usize)> {
        if self.original.get().is_none() {
            let tmp = onnx_prune::eval::TempDir::new("original")?;
            let l = onnx_prune::eval::runtime::logits(
                self.kind,
                &p.model,
                &tmp,
                "original.onnx",
                &self.val,
            )?;
            let _ = self.original.set(l);
        }
        Ok(self.original.get().unwrap())
    }

    /// The original model as a burn network on the inference device, built once.
    pub(crate) fn teacher(
        &self,
        p: &onnx_prune::search::datafree::Pruner,
    ) -> Result<&onnx_prune::net::Net> {
        if self.teacher.get().is_none() {
            let dev = onnx_prune::net::infer_device().0;
            let _ = self.teacher.set(onnx_prune::net::Net::new(&p.model, &dev)?);
        }
        Ok(self.teacher.get().unwrap())
    }

    pub(crate) fn load(
        p: &onnx_prune::search::datafree::Pruner,
        data: &Path,
        args: &PruneArgs,
    ) -> Result<DataCtx> {
        use onnx_prune::data;
        use onnx_prune::eval::{self, runtime};
        let shapes = eval::input_shapes(&p.model, &p.shapes)?;
        let chw = match shapes.first().map(|s| s.as_slice()) {
            Some([_, c, h, w]) => (*c, *h, *w),
            _ => bail!("--data needs an image model with one input [N,C,H,W]"),
        };
        let ds = data::load(data, chw, &args.data_opts.options())?;
        let (mut calib_n, mut val_n) = (args.calib_size, args.val_size);
        if calib_n + val_n > ds.n {
            // Small data: split what there is, calibration first.
            calib_n = calib_n.min(ds.n.div_ceil(2));
            val_n = val_n.min(ds.n - calib_n);
            eprintln!(
                "note: {} has {} samples: using {calib_n} for calibration and {val_n} for validation",
                data.display(),
                ds.n
            );
        }
        let (ci, vi) = data::split(ds.n, args.opts.seed, calib_n, val_n)?;
        let (kind, line) = runtime::choose(&args.runtime)?;
        eprintln!("{line}");
        // Training samples (all but the validation subset) for --finetune-epochs and
        // --recover ft:STEPS.
        let train = (finetune_length(args) != Length::Off || recover_ft_steps(args) > 0)
            .then(|| ds.subset(&data::complement(ds.n, &vi)));
        Ok(DataCtx {
            calib: ds.subset(&ci),
            val: ds.subset(&vi),
            kind,
            chw,
            train,
            original: Default::default(),
            teacher: Default::default(),
        })
    }
}

/// The fine-tune steps of `--recover ft:STEPS` (0 for the other modes).
pub(crate) fn recover_ft_steps(args: &PruneArgs) -> usize {
    args.recover
        .as_deref()
        .and_then(|r| r.strip_prefix("ft:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Surgery and recovery (`--recover`) of a plan on the calibration subset.
pub(crate) fn recover_model(
    p: &onnx_prune::search::datafree::Pruner,
    keep: &[bool],
    c: &DataCtx,
    args: &PruneArgs,
) -> Result<(Model, onnx_prune::search::recover::Report)> {
    use onnx_prune::search::recover::{self, Mode};
    let mut pruned = p.apply(keep)?;
    let ft_steps = recover_ft_steps(args);
    let mode = Mode::parse(args.recover.as_deref().unwrap_or("ls")).unwrap_or(Mode::Ls);
    let ro = recover::Options {
        mode,
        ridge: args.ridge,
        sequential: !args.recover_fast,
        seed: args.opts.seed,
        runtime: c.kind,
        ..Default::default()
    };
    let mut rep = recover::recover(p, keep, &mut pruned, &c.calib.x, c.calib.n, c.chw, &ro)?;
    print_recover(mode, &rep);
    if ft_steps > 0 {
        // ft:STEPS: least squares, then a short fine-tune on the training samples.
        let data = c.train.as_ref().expect("loaded with --recover ft");
        let labels = data.y.is_some() && !args.label_free;
        let o = train_options(&args.train, ft_steps, args.opts.seed, true, labels, false)?;
        let (m, r) = onnx_prune::learn::train::quick(&pruned, Some(c.teacher(p)?), data, &o)?;
        pruned = m;
        eprintln!(
            "recover ft: {} step(s) of {} from {} training sample(s), loss {:.4} -> {:.4} in {:.1}s",
            r.steps_done, o.batch, data.n, r.loss_first, r.loss_last, r.seconds
        );
        rep.mode = format!("ft:{ft_steps}");
        rep.seconds += r.seconds;
        rep.finetune = Some(recover::FinetuneInfo {
            steps: r.steps_done,
            batch: o.batch,
            samples: data.n,
            seconds: r.seconds,
            loss_first: r.loss_first,
            loss_last: r.loss_last,
        });
    }
    Ok((pruned, rep))
}

/// The line (and skipped layers) of a recovery.
pub(crate) fn print_recover(
    mode: onnx_prune::search::recover::Mode,
    rep: &onnx_prune::search::recover::Report,
) {
    if mode != onnx_prune::search::recover::Mode::None {
        let fit = match (rep.fit_error_before, rep.fit_error_after) {
            (Some(b), Some(a)) => format!(", relative fit error {b:.4} -> {a:.4}"),
            _ => String::new(),
        };
        eprintln!(
            "recover {}: {} sample(s), {} run(s) of the pruned model, {} layer(s) refit, {} BN re-calibrated, {} moment-matched, {} skipped{fit} in {:.1}s",
            mode.name(), rep.samples, rep.passes, rep.refit, rep.bn_recalibrated, rep.moment_matched, rep.skipped.len(), rep.seconds
        );
        for s in &rep.skipped {
            eprintln!("  not recovered: {s}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_pruned(
    input: &Path,
    output: &Path,
    p: &onnx_prune::search::datafree::Pruner,
    keep: &[bool],
    pruned: &Model,
    target: Option<(f64, u64, u64)>,
    plan_path: Option<&Path>,
    report_path: Option<&Path>,
    strict: bool,
    extra: serde_json::Map<String, serde_json::Value>,
    curve: Option<&[onnx_prune::search::rl::Episode]>,
) -> Result<()> {
    use onnx_prune::report::{self, GroupLine};
    use onnx_prune::search::plan::Plan;
    let a = analysis::infer(pruned, ShapeMode::Bound, &p.shapes)?;
    let cost = analysis::cost(pruned, &a)?;
    let plan = Plan::from_keep(p, keep, &input.display().to_string());
    let protect = input_files(input);
    onnx::save(pruned, output, &SaveOptions::default(), &protect)?;
    if let Some(pp) = plan_path {
        write_json(pp, &serde_json::to_value(&plan)?)?;
    }
    let ratio_kept = cost.macs as f64 / p.base_macs.max(1) as f64;
    let groups: Vec<_> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let kept = g.atoms.iter().filter(|&&a| keep[a]).count();
            json!({"key": g.key, "channels": g.atoms.len(), "kept": kept, "declined": g.declined})
        })
        .collect();
    // The human table and the plots: per group, channels kept and the MACs of its members.
    let before: HashMap<_, u64> = analysis::cost(&p.model, &p.analysis)?
        .per_node
        .into_iter()
        .collect();
    let after: HashMap<_, u64> = cost.per_node.iter().copied().collect();
    let lines: Vec<GroupLine> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let members = g.members();
            let sum =
                |m: &HashMap<_, u64>| members.iter().map(|n| m.get(n).copied().unwrap_or(0)).sum();
            GroupLine {
                key: g.key.clone(),
                kept: g.atoms.iter().filter(|&&a| keep[a]).count(),
                channels: g.atoms.len(),
                macs_before: sum(&before),
                macs_after: sum(&after),
                declined: g.declined.clone(),
            }
        })
        .collect();
    let table = report::table(&lines);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("{table}");
    }
    if let Some(rp) = report_path {
        let side = |ext: &str| rp.with_extension(ext);
        onnx::write_atomic(&side("groups.md"), table.as_bytes())?;
        let ratios: Vec<f64> = lines
            .iter()
            .filter(|l| l.declined.is_none())
            .map(|l| l.kept as f64 / l.channels.max(1) as f64)
            .collect();
        let name = input
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        report::plot_keep_ratios(
            &side("keep.svg"),
            &format!("{name}: keep ratio per group"),
            &ratios,
        )?;
        if let Some(c) = curve {
            report::plot_curve(&side("curve.svg"), &format!("{name}: search"), c)?;
        }
    }
    if let Some(rp) = report_path {
        let r = json!({
            "input": input.display().to_string(), "output": output.display().to_string(),
            "macs_before": p.base_macs, "macs_after": cost.macs, "macs_ratio": ratio_kept,
            "params_before": p.base_params, "params_after": cost.params,
            "target_flops": target.map(|t| t.0),
            "groups": groups,
        });
        let mut r = r;
        for (k, v) in extra {
            r[k] = v;
        }
        write_json(rp, &r)?;
    }
    eprintln!(
        "pruned {} -> {}: MACs {} -> {} ({:.1}%), params {} -> {}",
        input.display(),
        output.display(),
        group_digits(p.base_macs),
        group_digits(cost.macs),
        100.0 * ratio_kept,
        group_digits(p.base_params),
        group_digits(cost.params)
    );
    if let Some((ratio, t, predicted)) = target {
        if cost.macs != predicted {
            eprintln!(
                "warning: MAC model predicted {predicted}, the pruned model has {}",
                cost.macs
            );
        }
        if cost.macs > t {
            let declined: Vec<&str> =
                p.ch.groups
                    .iter()
                    .filter(|g| g.declined.is_some() && !g.producers.is_empty())
                    .map(|g| g.key.as_str())
                    .collect();
            let msg = format!(
                "target {:.3} not reachable: pruned as far as possible to {:.3} of the MACs; groups that cannot be pruned: {}",
                ratio,
                ratio_kept,
                if declined.is_empty() { "none (every prunable group is at its minimum)".to_string() } else { declined.join(", ") }
            );
            if strict {
                return Err(ToleranceExceeded(msg).into());
            }
            eprintln!("note: {msg}");
        }
    }
    Ok(())
}

pub(crate) fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v)? + "\n";
    Ok(onnx::write_atomic(path, s.as_bytes())?)
}

pub(crate) fn read_plan(path: &Path) -> Result<onnx_prune::search::plan::Plan> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid plan", path.display()))
}
