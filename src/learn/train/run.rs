//! A whole fine-tuning run: [`finetune`] (a planned pace against a deadline, progress,
//! checkpoints, Ctrl-C) and [`quick`] (the search's short recovery fine-tune).

use super::*;

/// The result of [`finetune`].
pub struct Finetuned {
    /// The model with the trained weights (the simplified model the network was built from).
    pub model: crate::ir::Model,
    pub report: TrainReport,
    pub device_line: String,
    pub params: usize,
    /// The options as run (with a planned pace: the planned step count and warm-up).
    pub options: TrainOptions,
    /// With a planned pace: the measured seconds of one step the plan was made from.
    pub step_seconds: Option<f64>,
}

impl Finetuned {
    /// One line: parameters, steps, time, speed and the loss from first to last step.
    pub fn summary(&self) -> String {
        let r = &self.report;
        format!(
            "fine-tuned {} parameter(s) for {} step(s) in {:.1}s ({:.0} images/s); loss {:.4} -> {:.4}",
            self.params,
            r.steps_done - r.started_at,
            r.seconds,
            r.images_per_s,
            r.loss_first,
            r.loss_last
        )
    }

    /// The report's object of a fine-tuning run: what ran and with which options.
    pub fn json(&self) -> serde_json::Value {
        let (r, o) = (&self.report, &self.options);
        serde_json::json!({
            "steps": r.steps_done,
            "resumed_at": r.started_at,
            "interrupted": r.interrupted,
            "seconds": r.seconds,
            "images_per_s": r.images_per_s,
            "loss_first": r.loss_first,
            "loss_last": r.loss_last,
            "params": self.params,
            "backend": self.device_line,
            "optimizer": format!("{:?}", o.optim),
            "lr": o.lr,
            "batch_size": o.batch,
            "kd_weight": o.kd_weight,
            "temperature": o.temperature,
            "augment": o.augment,
        })
    }
}

/// How long a fine-tune may run: it stops at `deadline`; with `plan`, its step count (and the
/// warm-up, as the same fraction of it) is planned from the measured time of a step to end
/// before the deadline, at most `max_steps`.
#[derive(Clone, Debug)]
pub struct Pace {
    pub deadline: crate::budget::Deadline,
    pub plan: bool,
    pub max_steps: usize,
}

/// Fine-tunes `model` on `data` (with `teacher` for distillation: the teacher model as a burn
/// network on [`crate::net::infer_device`], built once by the caller), on the learning device.
/// With `ckpt`, saves checkpoints there every `o.checkpoint_every` steps and when stopped, and
/// resumes from it when `resume` is set. With `pace`, stops at its deadline (and plans the step
/// count). With `features`, the network is built with the student's taps and the loss
/// matches them to the teacher's (which the caller built with [`FeaturePlan::teacher_taps`]).
/// Prints progress on stderr (a redrawn line on a terminal, else about 20 lines).
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    model: &crate::ir::Model,
    teacher: Option<&Net>,
    data: &Dataset,
    o: &TrainOptions,
    ckpt: Option<&Checkpoint>,
    resume: bool,
    stop: &AtomicBool,
    pace: Option<&Pace>,
    features: Option<&FeaturePlan>,
) -> Result<Finetuned> {
    use std::io::{IsTerminal, Write};
    if features.is_some() && resume {
        return Err(Error::Usage(
            "feature distillation cannot resume from a checkpoint (its maps are matched on the job's own models)".into(),
        ));
    }
    let (device, line) = crate::net::device();
    let start_model;
    let model = match ckpt {
        Some(c) if resume => {
            if !c.exists() {
                return Err(Error::Usage(format!(
                    "--resume: no checkpoint at {} (+ .state)",
                    c.model.display()
                )));
            }
            start_model = crate::onnx::load(&c.model)?;
            &start_model
        }
        _ => model,
    };
    let mut net = match features {
        Some(f) => Net::with_taps(model, &device, &f.student_taps())?,
        None => Net::new(model, &device)?,
    };
    let mut tr = Trainer::new(&net, o.clone());
    tr.features = features.map(|f| f.trainer());
    if let (Some(c), true) = (ckpt, resume) {
        tr.load_state(&c.state)?;
        eprintln!(
            "resuming from {} at step {}/{}",
            c.model.display(),
            tr.step,
            o.steps
        );
    }
    let mut step_seconds = None;
    if let Some(p) = pace {
        tr.deadline = Some(p.deadline.clone());
        if p.plan && !resume {
            let per = tr.time_step(&net, teacher, data, 3)?;
            let left = p.deadline.left().unwrap_or(Duration::MAX);
            let steps = crate::budget::steps_within(left, per, p.max_steps);
            let frac = o.warmup as f64 / o.steps.max(1) as f64;
            tr.o.steps = steps;
            tr.o.warmup = (frac * steps as f64).round() as usize;
            tr.max_steps = Some(p.max_steps);
            step_seconds = Some(per.as_secs_f64());
            eprintln!(
                "fine-tuning plan: {steps} step(s) of {} ({:.2} epoch(s)) at {:.0} ms/step (measured), {:.0}s until the deadline{}",
                o.batch,
                (steps * o.batch.min(data.n)) as f64 / data.n.max(1) as f64,
                per.as_secs_f64() * 1e3,
                left.as_secs_f64(),
                if steps == p.max_steps { " (capped by the epoch limit)" } else { "" }
            );
        }
    }
    let tty = std::io::stderr().is_terminal();
    let every = (tr.o.steps / 20).max(1);
    let mut on_step = |s: &StepInfo| {
        let acc = s
            .batch_acc
            .map(|a| format!(" batch acc {:.3}", a))
            .unwrap_or_default();
        let msg = format!(
            "{} finetune step {}/{} loss {:.4}{acc} lr {:.2e} {:.0} img/s ETA {:.0}s",
            crate::report::bar(s.step, s.steps, 20),
            s.step,
            s.steps,
            s.loss,
            s.lr,
            s.images_per_s,
            s.eta_s
        );
        if tty {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{msg}");
            if s.step == s.steps {
                let _ = writeln!(e);
            }
            let _ = e.flush();
        } else if s.step.is_multiple_of(every) || s.step == s.steps {
            eprintln!("{msg}");
        }
    };
    let mut on_ckpt = |n: &Net, t: &Trainer| -> Result<()> {
        match ckpt {
            Some(c) => c.save(n, t),
            None => Ok(()),
        }
    };
    let report = tr.run(&mut net, teacher, data, stop, &mut on_step, &mut on_ckpt)?;
    if tty && (report.interrupted || report.deadline_hit) {
        eprintln!();
    }
    if report.interrupted {
        if let Some(c) = ckpt {
            c.save(&net, &tr)?;
        }
    }
    Ok(Finetuned {
        model: net.write_back(),
        params: net.param_count(),
        report,
        device_line: line,
        options: tr.o.clone(),
        step_seconds,
    })
}

/// A short fine-tune used as recovery (`--recover ft:STEPS`, in the search's oracle and for
/// the written model): trains `model` for `o.steps` steps on `data` (with `teacher`, built on
/// [`crate::net::infer_device`], for distillation) on the learning device, quietly, without
/// checkpoints. Returns the trained (simplified) model and the run's report.
pub fn quick(
    model: &crate::ir::Model,
    teacher: Option<&Net>,
    data: &Dataset,
    o: &TrainOptions,
) -> Result<(crate::ir::Model, TrainReport)> {
    let (device, _) = crate::net::device();
    let mut net = Net::new(model, &device)?;
    let mut tr = Trainer::new(&net, o.clone());
    let stop = AtomicBool::new(false);
    let report = tr.run(&mut net, teacher, data, &stop, &mut |_| {}, &mut |_, _| {
        Ok(())
    })?;
    Ok((net.write_back(), report))
}
