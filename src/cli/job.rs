//! The main command with `--data` as a job of phases — prepare, search, recover, fine-tune —
//! inside one `--time-limit` (split by `onnx_prune::budget`), each phase timed and scored
//! before and after for the report, and Ctrl-C honoured in every phase: what is best so far
//! is written and the command says where it stopped.

#![cfg_attr(
    not(any(feature = "tract", feature = "ort")),
    allow(unused_imports, dead_code)
)]

use super::*;
use anyhow::Result;
use onnx_prune::budget::{self, Clock, Deadline, Split};
use onnx_prune::ir::Model;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running job: its clock, deadline, phase records and stop flag.
pub(crate) struct Job {
    pub(crate) clock: Arc<dyn Clock>,
    /// The whole command's deadline (none: no limit).
    pub(crate) deadline: Deadline,
    pub(crate) limit: Option<Duration>,
    pub(crate) split: Option<Split>,
    pub(crate) stop: &'static AtomicBool,
    /// The phase Ctrl-C stopped, once it has.
    pub(crate) interrupted: Option<&'static str>,
    phases: Vec<Value>,
    started: Duration,
}

impl Job {
    /// A job limited by `--time-limit`, else [`budget::DEFAULT_LIMIT`] unless the fine-tune
    /// length is fixed (`--finetune-epochs E`/`--finetune-steps N`) or fine-tuning is off.
    pub(crate) fn new(args: &PruneArgs, clock: Arc<dyn Clock>, stop: &'static AtomicBool) -> Job {
        let limit = args.time_limit.or_else(|| {
            (finetune_length(args) == Length::Planned).then_some(budget::DEFAULT_LIMIT)
        });
        let deadline = match limit {
            Some(l) => Deadline::at(clock.clone(), clock.now() + l),
            None => Deadline::none(clock.clone()),
        };
        Job {
            started: clock.now(),
            clock,
            deadline,
            limit,
            split: None,
            stop,
            interrupted: None,
            phases: vec![],
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records the phase that began at the end of the previous one.
    fn end(&mut self, phase: &str, before: Value, after: Value) {
        let now = self.clock.now();
        let secs = (now.saturating_sub(self.started)).as_secs_f64();
        self.started = now;
        self.phases.push(json!({
            "phase": phase, "seconds": secs, "before": before, "after": after,
        }));
    }

    /// Plans the split once the time of one validation pass (`eval`) is known, and says how.
    fn plan(&mut self, eval: Duration, search_cap: Option<Duration>, agent: bool, ft: bool) {
        let Some(limit) = self.limit else { return };
        let s = budget::split(limit, search_cap, eval);
        let left = self.deadline.left().unwrap_or_default().as_secs_f64();
        eprintln!(
            "time limit {}: {}recovery as needed, {}final measurement and write {:.0}s (reserve); {:.0}s left after loading",
            fmt_secs(s.limit_s),
            if agent { format!("search up to {}, ", fmt_secs(s.search_s)) } else { String::new() },
            if ft { "fine-tuning the rest, ".to_string() } else { String::new() },
            s.reserve_s,
            left
        );
        self.split = Some(s);
    }

    /// How long the search may run from now.
    fn search_budget(&self, cap: Option<Duration>) -> Option<Duration> {
        let s = self
            .split
            .as_ref()
            .map(|s| Duration::from_secs_f64(s.search_s));
        let b = match (s, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Never past the whole job's deadline.
        match (b, self.deadline.left()) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        }
    }

    /// The fine-tuning deadline: the job's less the reserve.
    fn finetune_deadline(&self) -> Deadline {
        match (self.deadline.at, &self.split) {
            (Some(at), Some(s)) => Deadline::at(
                self.clock.clone(),
                at.saturating_sub(Duration::from_secs_f64(s.reserve_s)),
            ),
            (at, _) => Deadline {
                clock: self.clock.clone(),
                at,
            },
        }
    }

    /// The report's `time` object.
    pub(crate) fn report(&self) -> Value {
        json!({
            "limit_s": self.limit.map(|l| l.as_secs_f64()),
            "split": self.split,
            "phases": self.phases,
            "interrupted": self.interrupted,
        })
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.0}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.0}s")
    }
}

/// How long fine-tuning runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Length {
    Off,
    Epochs(f64),
    Steps(usize),
    /// Planned from the time left (at most [`budget::MAX_EPOCHS`]).
    Planned,
}

pub(crate) fn finetune_length(args: &PruneArgs) -> Length {
    if args.data.is_none() {
        return Length::Off;
    }
    match (args.finetune_epochs, args.finetune_steps) {
        (Some(e), _) if e <= 0.0 => Length::Off,
        (_, Some(0)) => Length::Off,
        (Some(e), _) => Length::Epochs(e),
        (_, Some(n)) => Length::Steps(n),
        _ => Length::Planned,
    }
}

/// The report fields of the validation figures `measure` writes (the shipped model's so far),
/// and their names in a phase's `before`/`after`.
pub(crate) const SCORE_FIELDS: [(&str, &str); 4] = [
    ("top1_after", "top1"),
    ("agreement", "agreement"),
    ("kl", "kl"),
    ("rel_mse", "rel_mse"),
];

/// The validation figures among the report fields, as they are named there.
pub(crate) fn score_fields(
    extra: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    SCORE_FIELDS
        .iter()
        .filter_map(|(k, _)| extra.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// The validation figures among the report fields, named as in a phase's `before`/`after`.
fn scores(extra: &serde_json::Map<String, Value>) -> Value {
    let mut j = json!({});
    for (k, name) in SCORE_FIELDS {
        if let Some(v) = extra.get(k) {
            j[name] = v.clone();
        }
    }
    j
}

/// Top-1 (with labels) and fidelity of `m` on the validation subset, quietly.
#[cfg(any(feature = "tract", feature = "ort"))]
fn val_scores(
    p: &onnx_prune::search::datafree::Pruner,
    m: &Model,
    c: &DataCtx,
    args: &PruneArgs,
) -> Result<Value> {
    use onnx_prune::eval::{self, metrics, runtime};
    if c.val.n == 0 {
        return Ok(Value::Null);
    }
    let (lo, k) = c.original_logits(p)?;
    let tmp = eval::TempDir::new("phase")?;
    let (lp, _) = runtime::logits(c.kind, m, &tmp, "model.onnx", &c.val)?;
    let f = metrics::fidelity(lo, &lp, *k);
    let mut j = json!({"agreement": f.agreement, "kl": f.kl, "rel_mse": f.rel_mse});
    if let Some(y) = c.val.y.as_ref().filter(|_| !args.label_free) {
        j["top1"] = json!(metrics::accuracy(&lp, *k, y).top1);
    }
    Ok(j)
}

/// With data: search (unless `--agent none`), recover, fine-tune, each phase within the
/// job's limit. Returns the plan, the model to write and the search curve.
#[cfg(any(feature = "tract", feature = "ort"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn with_data(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
    ratio: f64,
    args: &PruneArgs,
    (df, baseline): (Vec<bool>, &str),
    (imp, fast): (&[f64], Option<onnx_prune::search::recover::FastCache>),
    extra: &mut serde_json::Map<String, Value>,
    job: &mut Job,
) -> Result<(
    Vec<bool>,
    Model,
    Option<Vec<onnx_prune::search::rl::Episode>>,
)> {
    let agent = args.agent != "none";
    let length = finetune_length(args);
    // Prepare: the original's outputs on the validation subset (needed by every later
    // measurement; its time sizes the reserve).
    let t = job.clock.now();
    if c.val.n > 0 {
        c.original_logits(p)?;
    }
    let eval = job.clock.now().saturating_sub(t);
    job.plan(eval, args.time_budget, agent, length != Length::Off);
    job.end("prepare", Value::Null, Value::Null);

    let mut curve = None;
    let (keep, m, rep, lp) = if agent {
        let budget = job.search_budget(args.time_budget);
        let out = search(
            p,
            c,
            ratio,
            args,
            (&df, baseline),
            (imp, fast),
            extra,
            budget,
            job.stop,
        )?;
        curve = Some(out.curve.clone());
        let df_score = extra["search"]["data_free_reward"].clone();
        let reward = extra["search"]["reward"].clone();
        job.end(
            "search",
            json!({"plan": baseline, "reward": reward, "score": df_score}),
            json!({"plan": format!("{} #1", out.agent.name()), "reward": reward, "score": out.best}),
        );
        if job.stopped() {
            job.interrupted = Some("search");
        }
        // The search's best plans (by its fast proxy) and the unsearched plan, re-ranked by
        // full recovery on the whole validation subset (not after Ctrl-C: the search's best
        // or the unsearched plan, whichever its proxy scored higher, is recovered and written).
        let mut cands: Vec<Cand> = out
            .candidates
            .iter()
            .take(args.rerank.max(1))
            .enumerate()
            .map(|(i, (v, k))| {
                let same = *k == df;
                let name = format!("{} #{}", out.agent.name(), i + 1);
                // The agent found the unsearched plan itself: say so.
                let name = if same {
                    format!("{name} = {baseline}")
                } else {
                    name
                };
                (name, Some(*v), k.clone(), same)
            })
            .collect();
        let df_proxy = df_score.as_f64().unwrap_or(f64::NEG_INFINITY);
        if job.stopped() {
            cands.truncate(1);
            if cands
                .first()
                .is_none_or(|x| x.1.unwrap_or(f64::NEG_INFINITY) < df_proxy)
            {
                cands = vec![(baseline.to_string(), None, df, true)];
            }
        } else if args.rerank > 0 && c.val.n > 0 {
            if !cands.iter().any(|x| x.3) {
                // Second, after the search's best: a re-ranking cut short by the time limit
                // still weighs the search against the unsearched plan.
                cands.insert(1.min(cands.len()), (baseline.to_string(), None, df, true));
            }
        } else {
            cands.truncate(1);
        }
        if cands.len() > 1 {
            // With fine-tuning to follow, the re-ranking may take a share of what is left.
            let cap = (length != Length::Off)
                .then(|| job.finetune_deadline().left())
                .flatten()
                .map(|l| l.mul_f64(budget::RERANK_SHARE));
            let (keep, m, rep, lp) = rerank(p, c, args, cands, extra, job.stop, cap)?;
            (keep, m, rep, Some(lp))
        } else {
            let keep = cands.remove(0).2;
            let (m, rep) = recover_model(p, &keep, c, args)?;
            (keep, m, rep, None)
        }
    } else {
        let (m, rep) = recover_model(p, &df, c, args)?;
        (df, m, rep, None)
    };
    // Recovery's "before": the chosen plan after surgery alone.
    let before = val_scores(p, &p.apply(&keep)?, c, args)?;
    measure(p, &m, &rep, c, args, lp, extra)?;
    job.end("recover", before, scores(extra));
    if job.stopped() && job.interrupted.is_none() {
        job.interrupted = Some("recover");
    }
    if job.interrupted.is_some() || length == Length::Off {
        return Ok((keep, m, curve));
    }
    // Fine-tuning: whatever the limit leaves, less the reserve.
    let deadline = job.finetune_deadline();
    let left = deadline.left();
    if left.is_some_and(|l| l < budget::MIN_FINETUNE) {
        eprintln!(
            "note: fine-tuning skipped: {:.0}s left before the final measurement (raise --time-limit)",
            left.unwrap_or_default().as_secs_f64()
        );
        extra.insert("finetune".into(), json!({"skipped": "no time left"}));
        return Ok((keep, m, curve));
    }
    let trainable = onnx_prune::net::unsupported(&m);
    if !trainable.is_empty() && length == Length::Planned {
        eprintln!(
            "note: fine-tuning skipped: these nodes cannot be trained on burn: {}",
            trainable.join(", ")
        );
        extra.insert("finetune".into(), json!({"skipped": "untrainable nodes"}));
        return Ok((keep, m, curve));
    }
    let Some(train) = c.train.as_ref().filter(|t| t.n > 0) else {
        eprintln!("note: fine-tuning skipped: no samples beyond the validation subset");
        extra.insert("finetune".into(), json!({"skipped": "no training samples"}));
        return Ok((keep, m, curve));
    };
    let before = scores(extra);
    let (m, interrupted) = finetune_pruned(p, m, c, train, args, extra, (length, &deadline))?;
    job.end("finetune", before, scores(extra));
    if interrupted {
        job.interrupted = Some("finetune");
    }
    Ok((keep, m, curve))
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn with_data(
    _: &onnx_prune::search::datafree::Pruner,
    _: &DataCtx,
    _: f64,
    _: &PruneArgs,
    _: (Vec<bool>, &str),
    _: (&[f64], Option<onnx_prune::search::recover::FastCache>),
    _: &mut serde_json::Map<String, Value>,
    _: &mut Job,
) -> Result<(
    Vec<bool>,
    Model,
    Option<Vec<onnx_prune::search::rl::Episode>>,
)> {
    anyhow::bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}
