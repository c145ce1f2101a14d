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

/// Training options from the flags: `steps` in all, distillation weight by what is there.
pub(crate) fn train_options(
    t: &TrainArgs,
    steps: usize,
    seed: u64,
    teacher: bool,
    labels: bool,
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
        None if teacher => 0.5,
        None => 0.0,
    };
    if t.lr <= 0.0 || !t.lr.is_finite() {
        bail!("--lr must be positive");
    }
    if t.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..1.0).contains(&t.warmup) {
        bail!("--warmup is a fraction of the steps in [0, 1)");
    }
    if let Some(b) = onnx_prune::learn::Backend::parse(&t.train_device) {
        onnx_prune::learn::select(b);
    }
    Ok(TrainOptions {
        optim: Optim::parse(&t.optimizer).expect("clap checked"),
        lr: t.lr,
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

/// `--finetune-epochs` of the main command: trains the recovered model (teacher: the
/// original), measures it again and reports both.
#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn finetune_pruned(
    p: &onnx_prune::search::datafree::Pruner,
    pruned: Model,
    c: &DataCtx,
    args: &PruneArgs,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Model> {
    use onnx_prune::learn::train;
    let mut data = c.train.clone().expect("loaded with --finetune-epochs");
    if args.label_free {
        data.y = None;
    }
    let steps = steps_for(args.finetune_epochs, data.n, args.train.batch_size);
    let o = train_options(&args.train, steps, args.opts.seed, true, data.y.is_some())?;
    let line = onnx_prune::learn::device().1;
    eprintln!(
        "fine-tuning on {} sample(s): {steps} step(s) of {} ({} epoch(s)), {line}",
        data.n, o.batch, args.finetune_epochs
    );
    let before: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "top1_after" | "agreement" | "kl" | "rel_mse"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ckpt = args.output.as_deref().map(train::Checkpoint::beside);
    let f = train::finetune(
        &pruned,
        Some(c.teacher(p)?),
        &data,
        &o,
        ckpt.as_ref(),
        false,
        stop_flag(),
    )?;
    print_train_summary(&f);
    if f.report.interrupted {
        let out = args.output.as_deref().expect("checked");
        onnx::save(&f.model, out, &Default::default(), &[])?;
        bail!(
            "interrupted at step {}/{}: the model so far is in {} (checkpoint {})",
            f.report.steps_done,
            steps,
            out.display(),
            ckpt.map(|c| c.model.display().to_string())
                .unwrap_or_default()
        );
    }
    if let Some(c) = &ckpt {
        c.remove();
    }
    // Measure the fine-tuned model (the recovery report stays the recovery's).
    let recover_json = extra.get("recover").cloned();
    measure(p, &f.model, &Default::default(), c, args, None, extra)?;
    if let Some(r) = recover_json {
        extra.insert("recover".into(), r);
    }
    let mut j = train_json(&f, &o);
    j["before"] = serde_json::Value::Object(before);
    extra.insert("finetune".into(), j);
    Ok(f.model)
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
pub(crate) fn finetune_pruned(
    _: &onnx_prune::search::datafree::Pruner,
    _: Model,
    _: &DataCtx,
    _: &PruneArgs,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Model> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// `onnx-prune finetune`.
pub(crate) fn finetune_cmd(a: FinetuneArgs) -> Result<()> {
    use onnx_prune::eval::{self, data, metrics, runtime};
    use onnx_prune::learn::train;
    let model = onnx::load(&a.model)?;
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    }
    // Fail on untrainable ops before loading any data.
    let mut simplified = model.clone();
    onnx_prune::rewrite::simplify(&mut simplified, &Default::default())?;
    let bad = onnx_prune::learn::net::unsupported(&simplified);
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
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s.max(1),
        (None, e) => steps_for(e.unwrap_or(1.0), trainset.n, a.train.batch_size),
    };
    let o = train_options(&a.train, steps, a.seed, teacher.is_some(), labels)?;
    let (kind, rt_line) = runtime::choose(&a.runtime)?;
    eprintln!("{rt_line}");
    eprintln!("{}", onnx_prune::learn::device().1);
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
            onnx_prune::learn::net::Net::new(t, &onnx_prune::learn::infer_device().0)
                .map_err(|e| anyhow::anyhow!("teacher: {e}"))?,
        ),
        None => None,
    };
    let f = train::finetune(
        &model,
        teacher_net.as_ref(),
        &trainset,
        &o,
        Some(&ckpt),
        a.resume,
        stop_flag(),
    )?;
    print_train_summary(&f);
    onnx::save(
        &f.model,
        &a.output,
        &Default::default(),
        std::slice::from_ref(&a.model),
    )?;
    if f.report.interrupted {
        bail!(
            "interrupted at step {}/{steps}: the model so far is in {}; continue with --resume \
             (checkpoint {})",
            f.report.steps_done,
            a.output.display(),
            ckpt.model.display()
        );
    }
    ckpt.remove();
    let after = score(&f.model, "after.onnx")?;
    if val.n > 0 {
        eprintln!("after:  {after}");
    }
    eprintln!("wrote {}", a.output.display());
    if let Some(r) = &a.report {
        let mut j = train_json(&f, &o);
        j["val_samples"] = json!(val.n);
        j["before"] = before;
        j["after"] = after;
        j["input"] = json!(a.model.display().to_string());
        j["output"] = json!(a.output.display().to_string());
        write_json(r, &j)?;
    }
    Ok(())
}
