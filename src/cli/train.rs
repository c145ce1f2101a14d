//! `onnx-prune finetune`, and the Ctrl-C flag every long command shares.

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

impl TrainArgs {
    /// The library's training settings from these flags.
    pub(crate) fn settings(&self) -> onnx_prune::learn::train::Settings {
        onnx_prune::learn::train::Settings {
            optim: self
                .optimizer
                .as_deref()
                .map(|o| onnx_prune::learn::train::Optim::parse(o).expect("clap checked")),
            lr: self.lr,
            clip_grad: self.clip_grad,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            kd_weight: self.kd_weight,
            temperature: self.temperature,
            augment: !self.no_augment,
            checkpoint_every: self.checkpoint_every,
            device: onnx_prune::net::Backend::parse(&self.train_device).expect("clap checked"),
        }
    }
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
        (None, e) if !planned => train::steps_for(e.unwrap_or(1.0), trainset.n, a.train.batch_size),
        _ => train::steps_for(budget::MAX_EPOCHS, trainset.n, a.train.batch_size),
    };
    let o = a
        .train
        .settings()
        .options(steps, a.seed, teacher.is_some(), labels, false)?;
    let (kind, rt_line) = runtime::choose(&a.runtime)?;
    eprintln!("{rt_line}");
    eprintln!("{}", onnx_prune::net::device().1);
    eprintln!(
        "training on {} sample(s), {} held out: {steps} step(s) of {} ({:.2} epoch(s)), {} lr {}, {}",
        trainset.n,
        val.n,
        o.batch,
        (steps * o.batch) as f64 / trainset.n as f64,
        o.optim.name(),
        o.lr,
        o.loss_name(labels)
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
        None,
    )?;
    eprintln!("{}", f.summary());
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
        let mut j = f.json();
        j["val_samples"] = json!(val.n);
        j["before"] = before;
        j["after"] = after;
        j["input"] = json!(a.model.display().to_string());
        j["output"] = json!(a.output.display().to_string());
        write_json(r, &j)?;
    }
    Ok(())
}
