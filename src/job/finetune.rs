//! The job's last phase: fine-tuning the recovered model for what the time limit leaves (or a
//! fixed length), then keeping whichever of the recovered and the fine-tuned model scores
//! better on the validation subset.

use super::flow::Cx;
use super::phases::score_fields;
use super::search::measure;
use super::Length;
use crate::budget::{self, Deadline};
use crate::error::Result;
use crate::ir::Model;
use crate::learn::train;
use serde_json::json;
use std::sync::atomic::AtomicBool;

/// Trains the recovered model on `trainset` (teacher: the original) for `length` — planned to
/// end by `deadline`, or a fixed length that still stops there — measures it again, and keeps
/// it only if it scores at least as well on the validation subset as the recovered model (else
/// the recovered one is shipped and the report says so). Returns the model to ship and whether
/// the stop flag ended the training.
pub(crate) fn finetune_pruned(
    cx: &Cx,
    (keep, pruned): (&[bool], Model),
    trainset: &crate::data::Dataset,
    extra: &mut serde_json::Map<String, serde_json::Value>,
    (length, deadline): (Length, &Deadline),
    stop: &AtomicBool,
) -> Result<(Model, bool)> {
    let (p, c, o, out) = (cx.p, cx.c, cx.o, cx.out);
    let mut data = trainset.clone();
    if o.label_free {
        data.y = None;
    }
    let batch = o.train.batch_size;
    let (steps, plan) = match length {
        Length::Epochs(e) => (train::steps_for(e, data.n, batch), false),
        Length::Steps(n) => (n, false),
        _ => (train::steps_for(budget::MAX_EPOCHS, data.n, batch), true),
    };
    let to = o
        .train
        .options(steps, o.seed, true, data.y.is_some(), true)?;
    let line = crate::net::device().1;
    let what = match length {
        Length::Epochs(e) => format!("{steps} step(s) of {} ({e} epoch(s))", to.batch),
        Length::Steps(_) => format!("{steps} step(s) of {}", to.batch),
        _ => format!(
            "until {:.0}s from now (at most {} epochs)",
            deadline.left().unwrap_or_default().as_secs_f64(),
            budget::MAX_EPOCHS
        ),
    };
    // `--feature-kd`: the maps least squares fits, matched to the original's.
    let features = match o.feature_kd > 0.0 {
        true => {
            let taps = crate::search::recover::feature_taps(p, keep, &pruned);
            if taps.is_empty() {
                out.line("note: --feature-kd: no pruned convolution's output to match; fine-tuning without it");
                None
            } else {
                Some(train::FeaturePlan {
                    weight: o.feature_kd,
                    taps,
                })
            }
        }
        false => None,
    };
    let fd_words = features
        .as_ref()
        .map(|f| {
            format!(
                " + feature distillation (w = {}, {} map(s))",
                f.weight,
                f.taps.len()
            )
        })
        .unwrap_or_default();
    out.line(&format!(
        "fine-tuning on {} sample(s): {what}, {} lr {}, {}{fd_words}; {line}",
        data.n,
        to.optim.name(),
        to.lr,
        to.loss_name(data.y.is_some())
    ));
    let before = score_fields(extra);
    let ckpt = o
        .checkpoint_beside
        .as_deref()
        .map(train::Checkpoint::beside);
    let pace = train::Pace {
        deadline: deadline.clone(),
        plan,
        max_steps: steps,
    };
    // With feature distillation the teacher also returns the original's maps.
    let tapped;
    let teacher = match (&features, to.kd_weight > 0.0) {
        (Some(f), _) => {
            let dev = crate::net::infer_device().0;
            tapped = crate::net::Net::with_taps(&p.model, &dev, &f.teacher_taps())?;
            Some(&tapped)
        }
        (None, true) => Some(c.teacher(p)?),
        (None, false) => None,
    };
    let f = train::finetune(
        &pruned,
        teacher,
        &data,
        &to,
        ckpt.as_ref(),
        false,
        stop,
        Some(&pace),
        features.as_ref(),
    )?;
    out.line(&f.summary());
    if f.report.deadline_hit {
        out.line(&format!(
            "fine-tuning stopped at its deadline after {} of {} step(s)",
            f.report.steps_done, f.options.steps
        ));
    } else if let Some(n) = f.report.replanned_from {
        out.line(&format!(
            "fine-tuning ran {} than measured: the plan went from {n} to {} step(s)",
            if f.options.steps > n {
                "faster"
            } else {
                "slower"
            },
            f.options.steps
        ));
    }
    let interrupted = f.report.interrupted;
    // The job does not resume: its checkpoints only guard a run that is killed.
    if let Some(c) = &ckpt {
        c.remove();
    }
    // Measure the fine-tuned model (the recovery report stays the recovery's).
    let recover_json = extra.get("recover").cloned();
    measure(cx, &f.model, &Default::default(), None, extra)?;
    if let Some(r) = recover_json {
        extra.insert("recover".into(), r);
    }
    let mut j = f.json();
    j["before"] = serde_json::Value::Object(before.clone());
    j["deadline_hit"] = json!(f.report.deadline_hit);
    j["planned_steps"] = json!(f.options.steps);
    j["step_seconds_measured"] = json!(f.step_seconds);
    j["replanned_from"] = json!(f.report.replanned_from);
    if let Some(fp) = &features {
        j["feature_kd"] = json!({"weight": fp.weight, "maps": fp.taps.len()});
    }
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
        out.line("note: the fine-tuned model scores lower on the validation subset than the recovered one: the recovered model is written");
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
