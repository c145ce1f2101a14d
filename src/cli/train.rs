//! Fine-tuning: `--finetune-epochs` of the main command and `onnx-prune finetune`.

use super::*;
use anyhow::{bail, Result};
use onnx_prune::ir::Model;
use onnx_prune::onnx;
use serde_json::json;

/// Set by Ctrl-C: training stops after the current step and leaves its last good model.
pub(crate) static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the Ctrl-C handler (once): the first Ctrl-C asks training to stop cleanly, a
/// second one exits at once.
pub(crate) fn stop_flag() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::Ordering;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: finishing the current step and saving (Ctrl-C again to abort)"
            );
        });
    });
    &STOP
}

/// The main job's fine-tuning defaults where the flags leave them open (`cargo bench --bench
/// timelimit -- --sweep`, docs/benchmarks.md "The fine-tuning recipe": resnet20 at 50%,
/// 4 minutes each, equal time): SGD at 3e-3 with labels only beat 1e-3 and distillation — the
/// teacher's forward pass costs a third of a step on a CPU, and the steps it costs bought more.
pub(crate) const JOB_LR: f64 = 3e-3;

/// Training options from the flags: `steps` in all, distillation weight by what is there.
/// `job`: the main command's fine-tuning, whose defaults differ ([`JOB_LR`], and labels only
/// when there are labels); `finetune` and `--recover ft:STEPS` keep lr 1e-3 and w = 0.5.
pub(crate) fn train_options(
    t: &TrainArgs,
    steps: usize,
    seed: u64,
    teacher: bool,
    labels: bool,
    job: bool,
) -> Result<onnx_prune::learn::train::TrainOptions> {
    use onnx_prune::learn::train::{Optim, TrainOptions};
    let kd = match t.kd_weight {
        Some(w) if !(0.0..=1.0).contains(&w) => bail!("--kd-weight must be in [0, 1]"),
        Some(w) if w > 0.0 && !teacher => bail!("--kd-weight > 0 needs a teacher model"),
        Some(w) if w < 1.0 && !labels => {
            bail!("the data has no labels (or --label-free): only distillation (--kd-weight 1) can train")
        }
        Some(w) => w,
        None if !labels && !teacher => {
            bail!("the data has no labels (or --label-free): give a teacher model to distil from")
        }
        None if !labels => 1.0,
        None if teacher && !job => 0.5,
        None => 0.0,
    };
    let lr = t.lr.unwrap_or(if job { JOB_LR } else { 1e-3 });
    if lr <= 0.0 || !lr.is_finite() {
        bail!("--lr must be positive");
    }
    if t.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..1.0).contains(&t.warmup) {
        bail!("--warmup is a fraction of the steps in [0, 1)");
    }
    if let Some(b) = onnx_prune::net::Backend::parse(&t.train_device) {
        onnx_prune::net::select(b);
    }
    Ok(TrainOptions {
        optim: Optim::parse(&t.optimizer).expect("clap checked"),
        lr,
        warmup: (t.warmup * steps as f64).round() as usize,
        weight_decay: t.weight_decay,
        batch: t.batch_size,
        steps,
        augment: !t.no_augment,
        pad: 4,
        kd_weight: kd,
        temperature: t.temperature,
        clip_norm: t.clip_grad,
        seed,
        checkpoint_every: t.checkpoint_every,
    })
}

/// Steps for `epochs` passes over `n` samples.
pub(crate) fn steps_for(epochs: f64, n: usize, batch: usize) -> usize {
    ((epochs * n as f64) / batch.min(n).max(1) as f64)
        .ceil()
        .max(1.0) as usize
}

pub(crate) fn print_train_summary(f: &onnx_prune::learn::train::Finetuned) {
    let r = &f.report;
    eprintln!(
        "fine-tuned {} parameter(s) for {} step(s) in {:.1}s ({:.0} images/s); loss {:.4} -> {:.4}",
        f.params,
        r.steps_done - r.started_at,
        r.seconds,
        r.images_per_s,
        r.loss_first,
        r.loss_last
    );
}

pub(crate) fn train_json(
    f: &onnx_prune::learn::train::Finetuned,
    o: &onnx_prune::learn::train::TrainOptions,
) -> serde_json::Value {
    let r = &f.report;
    json!({
        "steps": r.steps_done,
        "resumed_at": r.started_at,
        "interrupted": r.interrupted,
        "seconds": r.seconds,
        "images_per_s": r.images_per_s,
        "loss_first": r.loss_first,
        "loss_last": r.loss_last,
        "params": f.params,
        "backend": f.device_line,
        "optimizer": format!("{:?}", o.optim),
        "lr": o.lr,
        "batch_size": o.batch,
        "kd_weight": o.kd_weight,
        "temperature": o.temperature,
        "augment": o.augment,
    })
}

/// Fine-tuning in the main command: trains the recovered model on `train` (teacher: the
/// original) for `length` — planned to end by `deadline`, or a fixed length that still stops
/// there — measures it again, and keeps it only if it scores at least as well on the
/// validation subset as the recovered model (else the recovered one is shipped and the report
/// says so). Returns the model to ship and whether Ctrl-C stopped the training.
#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn finetune_pruned(
    p: &onnx_prune::search::datafree::Pruner,
    pruned: Model,
    c: &DataCtx,
    train: &onnx_prune::data::Dataset,
    args: &PruneArgs,
    extra: &mut serde_json::Map<String, serde_json::Value>,
    (length, deadline): (Length, &onnx_prune::budget::Deadline),
) -> Result<(Model, bool)> {
    use onnx_prune::learn::train;
    let mut data = train.clone();
    if args.label_free {
        data.y = None;
    }
    let batch = args.train.batch_size;
    let (steps, plan) = match length {
        Length::Epochs(e) => (steps_for(e, data.n, batch), false),
        Length::Steps(n) => (n, false),
        _ => (
            steps_for(onnx_prune::budget::MAX_EPOCHS, data.n, batch),
            true,
        ),
    };
    let o = train_options(
        &args.train,
        steps,
        args.opts.seed,
        true,
        data.y.is_some(),
        true,
    )?;
    let line = onnx_prune::net::device().1;
    let what = match length {
        Length::Epochs(e) => format!("{steps} step(s) of {} ({e} epoch(s))", o.batch),
        Length::Steps(_) => format!("{steps} step(s) of {}", o.batch),
        _ => format!(
            "until {:.0}s from now (at most {} epochs)",
            deadline.left().unwrap_or_default().as_secs_f64(),
            onnx_prune::budget::MAX_EPOCHS
        ),
    };
    eprintln!("fine-tuning on {} sample(s): {what}, {line}", data.n);
    let before = score_fields(extra);
    let ckpt = args.output.as_deref().map(train::Checkpoint::beside);
    let pace = train::Pace {
        deadline: deadline.clone(),
        plan,
        max_steps: steps,
    };
    let teacher = match o.kd_weight > 0.0 {
        true => Some(c.teacher(p)?),
        false => None,
    };
    let f = train::finetune(
        &pruned,
        teacher,
        &data,
        &o,
        ckpt.as_ref(),
        false,
        stop_flag(),
        Some(&pace),
    )?;
    print_train_summary(&f);
    if f.report.deadline_hit {
        eprintln!(
            "fine-tuning stopped at its deadline after {} of {} step(s)",
            f.report.steps_done, f.options.steps
        );
    } else if let Some(n) = f.report.replanned_from {
        eprintln!(
            "fine-tuning ran {} than measured: the plan went from {n} to {} step(s)",
            if f.options.steps > n {
                "faster"
            } else {
                "slower"
            },
            f.options.steps
        );
    }
    let interrupted = f.report.interrupted;
    // The main command does not resume: its checkpoints only guard a run that is killed.
    if let Some(c) = &ckpt {
        c.remove();
    }
    // Measure the fine-tuned model (the recovery report stays the recovery's).
    let recover_json = extra.get("recover").cloned();
    measure(p, &f.model, &Default::default(), c, args, None, extra)?;
    if let Some(r) = recover_json {
        extra.insert("recover".into(), r);
    }
    let mut j = train_json(&f, &f.options);
    j["before"] = serde_json::Value::Object(before.clone());
    j["deadline_hit"] = json!(f.report.deadline_hit);
    j["planned_steps"] = json!(f.options.steps);
    j["step_seconds_measured"] = json!(f.step_seconds);
    j["replanned_from"] = json!(f.report.replanned_from);
    // Ship whichever of the recovered and the fine-tuned model scores better on the
    // validation subset (top-1 with labels, else relative MSE to the original).
    let worse = match (before.get("top1_after"), extra.get("top1_after")) {
        (Some(b), Some(a)) => a.as_f64() < b.as_f64(),
        _ => match (before.get("rel_mse"), extra.get("rel_mse")) {
            (Some(b), Some(a)) => a.as_f64().unwrap_or(f64::MAX) > b.as_f64().unwrap_or(f64::MAX),
            _ => false,
        },
    };
    let model = if worse {
        eprintln!(
            "note: the fine-tuned model scores lower on the validation subset than the recovered one: the recovered model is written"
        );
        j["after"] = json!(score_fields(extra));
        for (k, v) in before {
            extra.insert(k, v);
        }
        j["shipped"] = json!("recovered");
        pruned
    } else {
        j["shipped"] = json!("fine-tuned");
        f.model
    };
    extra.insert("finetune".into(), j);
    Ok((model, interrupted))
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
pub(crate) fn finetune_pruned(
    _: &onnx_prune::search::datafree::Pruner,
    _: Model,
    _: &DataCtx,
    _: &onnx_prune::data::Dataset,
    _: &PruneArgs,
    _: &mut serde_json::Map<String, serde_json::Value>,
    _: (Length, &onnx_prune::budget::Deadline),
) -> Result<(Model, bool)> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// `onnx-prune finetune`.
pub(crate) fn finetune_cmd(a: FinetuneArgs) -> Result<()> {
    use onnx_prune::budget::{self, Clock};
    use onnx_prune::data;
    use onnx_prune::eval::{self, metrics, runtime};
    use onnx_prune::learn::train;
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(budget::SystemClock::new());
    let model = onnx::load(&a.model)?;
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    }
    // Fail on untrainable ops before loading any data.
    let mut simplified = model.clone();
    onnx_prune::rewrite::simplify(&mut simplified, &Default::default())?;
    let bad = onnx_prune::net::unsupported(&simplified);
    if !bad.is_empty() {
        bail!(
            "{}: these nodes cannot be trained on burn: {}",
            a.model.display(),
            bad.join(", ")
        );
    }
    let teacher = match &a.teacher {
        Some(t) => Some(onnx::load(t)?),
        None => None,
    };
    if a.label_free && teacher.is_none() {
        bail!("--label-free needs --teacher ORIGINAL.onnx to distil from");
    }
    let shapes =
        eval::input_shapes(&model, &Default::default()).map_err(|e| e.in_file(&a.model))?;
    let chw = match shapes.first().map(|s| s.as_slice()) {
        Some([_, c, h, w]) => (*c, *h, *w),
        _ => bail!(
            "{}: finetune needs an image model with one input [N,C,H,W]",
            a.model.display()
        ),
    };
    let ds = data::load(&a.data, chw, &a.data_opts.options())?;
    let val_n = a.val_size.min(ds.n / 2);
    let (_, vi) = data::split(ds.n, a.seed, 0, val_n)?;
    let mut trainset = ds.subset(&data::complement(ds.n, &vi));
    let val = ds.subset(&vi);
    drop(ds);
    if a.label_free {
        trainset.y = None;
    }
    let labels = trainset.y.is_some();
    let planned = a.time_limit.is_some() && a.steps.is_none() && a.epochs.is_none();
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s.max(1),
        (None, e) if !planned => steps_for(e.unwrap_or(1.0), trainset.n, a.train.batch_size),
        _ => steps_for(budget::MAX_EPOCHS, trainset.n, a.train.batch_size),
    };
    let o = train_options(&a.train, steps, a.seed, teacher.is_some(), labels, false)?;
    let (kind, rt_line) = runtime::choose(&a.runtime)?;
    eprintln!("{rt_line}");
    eprintln!("{}", onnx_prune::net::device().1);
    eprintln!(
        "training on {} sample(s), {} held out: {steps} step(s) of {} ({:.2} epoch(s)), {} lr {}, {}",
        trainset.n,
        val.n,
        o.batch,
        (steps * o.batch) as f64 / trainset.n as f64,
        a.train.optimizer,
        o.lr,
        match (o.kd_weight, labels) {
            (w, _) if w >= 1.0 => format!("distillation (T = {})", o.temperature),
            (w, true) if w > 0.0 => format!("cross-entropy + distillation (w = {w}, T = {})", o.temperature),
            _ => "cross-entropy".to_string(),
        }
    );
    // Before.
    let tmp = eval::TempDir::new("finetune")?;
    // The teacher's outputs on the held-out samples, computed once for before and after.
    let teacher_logits: std::cell::OnceCell<(Vec<f32>, usize)> = Default::default();
    let score = |m: &Model, name: &str| -> Result<serde_json::Value> {
        if val.n == 0 {
            return Ok(json!(null));
        }
        let (l, k) = runtime::logits(kind, m, &tmp, name, &val)?;
        let mut j = json!({});
        if let Some(y) = val.y.as_ref().filter(|_| !a.label_free) {
            j["top1"] = json!(metrics::accuracy(&l, k, y).top1);
        }
        if let Some(t) = &teacher {
            if teacher_logits.get().is_none() {
                let _ = teacher_logits.set(runtime::logits(kind, t, &tmp, "teacher.onnx", &val)?);
            }
            let (tl, tk) = teacher_logits.get().expect("set above");
            if *tk == k {
                let f = metrics::fidelity(tl, &l, k);
                j["agreement"] = json!(f.agreement);
                j["rel_mse"] = json!(f.rel_mse);
            }
        }
        Ok(j)
    };
    let before = score(&model, "before.onnx")?;
    if val.n > 0 {
        eprintln!("before: {before}");
    }
    let ckpt = train::Checkpoint::beside(&a.output);
    let teacher_net = match &teacher {
        Some(t) => Some(
            onnx_prune::net::Net::new(t, &onnx_prune::net::infer_device().0)
                .map_err(|e| anyhow::anyhow!("teacher: {e}"))?,
        ),
        None => None,
    };
    // With --time-limit: the deadline less a reserve for the "after" measurement and the write.
    let pace = a.time_limit.map(|l| {
        let reserve = budget::reserve(l, std::time::Duration::ZERO).min(l / 2);
        train::Pace {
            deadline: budget::Deadline::at(clock.clone(), l.saturating_sub(reserve)),
            plan: planned,
            max_steps: steps,
        }
    });
    let f = train::finetune(
        &model,
        teacher_net.as_ref(),
        &trainset,
        &o,
        Some(&ckpt),
        a.resume,
        stop_flag(),
        pace.as_ref(),
    )?;
    print_train_summary(&f);
    onnx::save(
        &f.model,
        &a.output,
        &Default::default(),
        std::slice::from_ref(&a.model),
    )?;
    if f.report.interrupted {
        // Exit 130, as the main job's Ctrl-C.
        return Err(super::Interrupted(format!(
            "interrupted at step {}/{steps}: the model so far is in {}; continue with --resume \
             (checkpoint {})",
            f.report.steps_done,
            a.output.display(),
            ckpt.model.display()
        ))
        .into());
    }
    ckpt.remove();
    let after = score(&f.model, "after.onnx")?;
    if val.n > 0 {
        eprintln!("after:  {after}");
    }
    eprintln!("wrote {}", a.output.display());
    if let Some(r) = &a.report {
        let mut j = train_json(&f, &f.options);
        j["val_samples"] = json!(val.n);
        j["before"] = before;
        j["after"] = after;
        j["input"] = json!(a.model.display().to_string());
        j["output"] = json!(a.output.display().to_string());
        write_json(r, &j)?;
    }
    Ok(())
}
