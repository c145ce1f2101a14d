//! The order of a job with data: prepare, search (unless no agent), recover (the re-ranking
//! of the search's best plans, or the one plan), fine-tune; each phase within the job's limit
//! and stopped by its flag; and the two pieces every path shares: the least-squares channel
//! ranking and the recovery of one plan.

use super::phases::{scores, Phases};
use super::search::{measure, rerank, search, Cand};
use super::{DataCtx, Length, Options, Progress};
use crate::budget;
use crate::error::Result;
use crate::eval::{self, metrics, runtime};
use crate::ir::Model;
use crate::search::datafree::{Method, Pruner};
use crate::search::recover::{self, FastCache, Mode};
use crate::search::rl::Episode;
use serde_json::{json, Value};

/// What every step of a job with data reads: the analysed input, its data, the options and
/// where to say what happens.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub(crate) p: &'a Pruner,
    pub(crate) c: &'a DataCtx,
    pub(crate) o: &'a Options,
    pub(crate) out: &'a dyn Progress,
    /// `--target-latency`: the fitted plan, the predicted cost and budget the search must fit,
    /// and the measurement the search's plans must pass.
    pub(crate) lat: Option<&'a super::latency::Fitted>,
}

/// Channels ranked by their least-squares removal cost on the calibration images the search's
/// recovery uses (the first 512), with the search's fit options; also returns the statistics
/// gathered, for the search's oracle.
pub(crate) fn ls_importance(
    p: &Pruner,
    c: &DataCtx,
    out: &dyn Progress,
) -> Result<(Vec<f64>, FastCache)> {
    use crate::search::env;
    let t0 = std::time::Instant::now();
    let sc = c.calib.subset(&(0..c.calib.n.min(512)).collect::<Vec<_>>());
    let mut fast = FastCache::new();
    let (imp, fell_back) = fast.ls_importance(
        p,
        &sc.x,
        sc.n,
        c.chw,
        &env::cached_fit_options(c.kind),
        &p.importance(Method::L1, 0),
    )?;
    out.line(&format!(
        "channels ranked by least-squares removal cost on {} calibration images in {:.1}s{}",
        sc.n,
        t0.elapsed().as_secs_f64(),
        if fell_back > 0 {
            format!(" ({fell_back} group(s) without a usable consumer ranked by L1)")
        } else {
            String::new()
        }
    ));
    Ok((imp, fast))
}

impl Cx<'_> {
    /// Surgery and recovery of a plan on the calibration subset (and `recover_ft_steps` of
    /// fine-tuning after it).
    pub(crate) fn recover_model(&self, keep: &[bool]) -> Result<(Model, recover::Report)> {
        let (p, c, o) = (self.p, self.c, self.o);
        let mut pruned = p.apply(keep)?;
        let ft_steps = o.recover_ft_steps;
        let mode = o.recover;
        let ro = recover::Options {
            mode,
            ridge: o.ridge,
            sequential: !o.recover_fast,
            seed: o.seed,
            runtime: c.kind,
            ..Default::default()
        };
        let mut rep = recover::recover(p, keep, &mut pruned, &c.calib.x, c.calib.n, c.chw, &ro)?;
        self.print_recover(mode, &rep);
        if ft_steps > 0 {
            // ft:STEPS: least squares, then a short fine-tune on the training samples.
            let data = c.train.as_ref().expect("loaded with recover_ft_steps");
            let labels = data.y.is_some() && !o.label_free;
            let to = o.train.options(ft_steps, o.seed, true, labels, false)?;
            let (m, r) = crate::learn::train::quick(&pruned, Some(c.teacher(p)?), data, &to)?;
            pruned = m;
            self.out.line(&format!(
                "recover ft: {} step(s) of {} from {} training sample(s), loss {:.4} -> {:.4} in {:.1}s",
                r.steps_done, to.batch, data.n, r.loss_first, r.loss_last, r.seconds
            ));
            rep.mode = format!("ft:{ft_steps}");
            rep.seconds += r.seconds;
            rep.finetune = Some(recover::FinetuneInfo {
                steps: r.steps_done,
                batch: to.batch,
                samples: data.n,
                seconds: r.seconds,
                loss_first: r.loss_first,
                loss_last: r.loss_last,
            });
        }
        Ok((pruned, rep))
    }

    /// The line (and skipped layers) of a recovery.
    fn print_recover(&self, mode: Mode, rep: &recover::Report) {
        if mode != Mode::None {
            let fit = match (rep.fit_error_before, rep.fit_error_after) {
                (Some(b), Some(a)) => format!(", relative fit error {b:.4} -> {a:.4}"),
                _ => String::new(),
            };
            self.out.line(&format!(
                "recover {}: {} sample(s), {} run(s) of the pruned model, {} layer(s) refit, {} BN re-calibrated, {} moment-matched, {} skipped{fit} in {:.1}s",
                mode.name(), rep.samples, rep.passes, rep.refit, rep.bn_recalibrated, rep.moment_matched, rep.skipped.len(), rep.seconds
            ));
            for s in &rep.skipped {
                self.out.line(&format!("  not recovered: {s}"));
            }
        }
    }

    /// Top-1 (with labels) and fidelity of `m` on the validation subset, quietly.
    fn val_scores(&self, m: &Model) -> Result<Value> {
        let c = self.c;
        if c.val.n == 0 {
            return Ok(Value::Null);
        }
        let (lo, k) = c.original_logits(self.p)?;
        let tmp = eval::TempDir::new("phase")?;
        let (lp, _) = runtime::logits(c.kind, m, &tmp, "model.onnx", &c.val)?;
        let f = metrics::fidelity(lo, &lp, *k);
        let mut j = json!({"agreement": f.agreement, "kl": f.kl, "rel_mse": f.rel_mse});
        if let Some(y) = c.val.y.as_ref().filter(|_| !self.o.label_free) {
            j["top1"] = json!(metrics::accuracy(&lp, *k, y).top1);
        }
        Ok(j)
    }
}

/// The job's result so far: the plan, the model to write and the search curve.
type Planned = (Vec<bool>, Model, Option<Vec<Episode>>);

/// With data: search (unless no agent), recover, fine-tune, each phase within the job's
/// limit.
pub(crate) fn with_data(
    cx: &Cx,
    (df, baseline): (Vec<bool>, &str),
    (imp, fast): (&[f64], Option<FastCache>),
    extra: &mut serde_json::Map<String, Value>,
    job: &mut Phases,
) -> Result<Planned> {
    let (p, c, o, out) = (cx.p, cx.c, cx.o, cx.out);
    let agent = o.agent.is_some();
    let length = o.length();
    // Prepare: the original's outputs on the validation subset (needed by every later
    // measurement; its time sizes the reserve).
    let t = job.clock.now();
    if c.val.n > 0 {
        c.original_logits(p)?;
    }
    let eval = job.clock.now().saturating_sub(t);
    job.plan(eval, o.time_budget, agent, length != Length::Off, out);
    job.end("prepare", Value::Null, Value::Null);

    let mut curve = None;
    // `--agent joint`: the structure comes from joint training, cut from its trained weights.
    let mut cut = None;
    let (keep, m, rep, lp) = if let Some(jo) = &o.joint {
        let j = super::joint::run(cx, jo, imp, extra, job)?;
        curve = Some(j.curve);
        let trained = Cx {
            p: &j.pruner,
            ..*cx
        };
        let (m, rep) = trained.recover_model(&j.keep)?;
        cut = Some(j.pruner.apply(&j.keep)?);
        (j.keep, m, rep, None)
    } else if let Some(agent) = o.agent {
        let budget = job.search_budget(o.time_budget);
        let res = search(
            cx,
            agent,
            (&df, baseline),
            (imp, fast),
            extra,
            budget,
            job.stop,
        )?;
        curve = Some(res.curve.clone());
        let df_score = extra["search"]["data_free_reward"].clone();
        let reward = extra["search"]["reward"].clone();
        job.end(
            "search",
            json!({"plan": baseline, "reward": reward, "score": df_score}),
            json!({"plan": format!("{} #1", res.agent.name()), "reward": reward, "score": res.best}),
        );
        if job.stopped() {
            job.interrupted = Some("search");
        }
        // The search's best plans (by its fast proxy) and the unsearched plan, re-ranked by
        // full recovery on the whole validation subset (not after Ctrl-C: the search's best
        // or the unsearched plan, whichever its proxy scored higher, is recovered and written).
        let mut cands: Vec<Cand> = res
            .candidates
            .iter()
            .take(o.rerank.max(1))
            .enumerate()
            .map(|(i, (v, k))| {
                let same = *k == df;
                let name = format!("{} #{}", res.agent.name(), i + 1);
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
                cands = vec![(baseline.to_string(), None, df.clone(), true)];
            }
        } else if o.rerank > 0 && c.val.n > 0 {
            if !cands.iter().any(|x| x.3) {
                // Second, after the search's best: a re-ranking cut short by the time limit
                // still weighs the search against the unsearched plan.
                cands.insert(
                    1.min(cands.len()),
                    (baseline.to_string(), None, df.clone(), true),
                );
            }
        } else {
            cands.truncate(1);
        }
        if let (Some(f), false) = (cx.lat, job.stopped()) {
            let measure = |keep: &[bool]| f.measure_plan(p, keep);
            let rows = latency_gate(f.target(), &measure, &mut cands, (baseline, &df), out)?;
            if let Some(serde_json::Value::Object(s)) = extra.get_mut("search") {
                s.insert("latency_checked".into(), json!(rows));
            }
        }
        if cands.len() > 1 {
            // With fine-tuning to follow, the re-ranking may take a share of what is left.
            let cap = (length != Length::Off)
                .then(|| job.finetune_deadline().left())
                .flatten()
                .map(|l| l.mul_f64(budget::RERANK_SHARE));
            let (keep, m, rep, lp) = rerank(cx, cands, extra, job.stop, cap)?;
            (keep, m, rep, Some(lp))
        } else {
            let keep = cands.remove(0).2;
            let (m, rep) = cx.recover_model(&keep)?;
            (keep, m, rep, None)
        }
    } else {
        let (m, rep) = cx.recover_model(&df)?;
        (df, m, rep, None)
    };
    // Recovery's "before": the chosen plan after surgery alone.
    let before = cx.val_scores(&match cut {
        Some(m) => m,
        None => p.apply(&keep)?,
    })?;
    measure(cx, &m, &rep, lp, extra)?;
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
        out.line(&format!(
            "note: fine-tuning skipped: {:.0}s left before the final measurement (raise --time-limit)",
            left.unwrap_or_default().as_secs_f64()
        ));
        extra.insert("finetune".into(), json!({"skipped": "no time left"}));
        return Ok((keep, m, curve));
    }
    let trainable = crate::net::unsupported(&m);
    if !trainable.is_empty() && length == Length::Planned {
        out.line(&format!(
            "note: fine-tuning skipped: these nodes cannot be trained on burn: {}",
            trainable.join(", ")
        ));
        extra.insert("finetune".into(), json!({"skipped": "untrainable nodes"}));
        return Ok((keep, m, curve));
    }
    let Some(train) = c.train.as_ref().filter(|t| t.n > 0) else {
        out.line("note: fine-tuning skipped: no samples beyond the validation subset");
        extra.insert("finetune".into(), json!({"skipped": "no training samples"}));
        return Ok((keep, m, curve));
    };
    let before = scores(extra);
    let (m, interrupted) = super::finetune::finetune_pruned(
        cx,
        (&keep, m),
        train,
        extra,
        (length, &deadline),
        job.stop,
    )?;
    job.end("finetune", before, scores(extra));
    if interrupted {
        job.interrupted = Some("finetune");
    }
    Ok((keep, m, curve))
}

/// `--target-latency` measured here: every searched candidate is measured before it is
/// recovered, and one over the target is left out (the search fits the predicted budget, but a
/// plan can measure far from its prediction: a channel count that moves a layer off the
/// runtime's blocked kernels costs layout changes no per-layer table sees). The unsearched plan
/// met the target in the measured rounds; it takes the place of a search that left nothing.
fn latency_gate(
    target: f64,
    measure: &dyn Fn(&[bool]) -> Result<Option<f64>>,
    cands: &mut Vec<Cand>,
    (baseline, df): (&str, &[bool]),
    out: &dyn Progress,
) -> Result<Vec<Value>> {
    let mut rows = vec![];
    let mut kept = vec![];
    for c in cands.drain(..) {
        if c.3 {
            kept.push(c);
            continue;
        }
        let Some(r) = measure(&c.2)? else {
            kept.push(c);
            continue;
        };
        let ok = r <= target;
        if !ok {
            out.line(&format!(
                "rerank: {} measures {r:.3}x of the original's latency, over --target-latency \
                 {target}: left out",
                c.0
            ));
        }
        rows.push(json!({"source": c.0, "measured_ratio": r, "kept": ok}));
        if ok {
            kept.push(c);
        }
    }
    if kept.is_empty() {
        kept.push((baseline.to_string(), None, df.to_vec(), true));
    }
    *cands = kept;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, keep: &[bool], unsearched: bool) -> Cand {
        (name.into(), None, keep.to_vec(), unsearched)
    }

    /// Candidates measured over the target are left out, the unsearched plan is never
    /// measured, and a search that leaves nothing is replaced by the unsearched plan.
    #[test]
    fn the_latency_gate_leaves_out_what_measures_over_the_target() {
        // The fake measurement: the fraction of channels kept.
        let frac = |k: &[bool]| {
            Ok(Some(
                k.iter().filter(|&&b| b).count() as f64 / k.len() as f64,
            ))
        };
        let df = [true, false, false, false];
        let mut cands = vec![
            cand("a", &[true, true, true, false], false),
            cand("df", &df, true),
            cand("b", &[true, true, false, false], false),
        ];
        let rows = latency_gate(0.5, &frac, &mut cands, ("df", &df), &super::super::Quiet).unwrap();
        let names: Vec<&str> = cands.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["df", "b"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["kept"], false);
        assert_eq!(rows[1]["kept"], true);

        let mut cands = vec![cand("a", &[true, true, true, false], false)];
        latency_gate(0.5, &frac, &mut cands, ("df", &df), &super::super::Quiet).unwrap();
        assert_eq!(cands.len(), 1);
        assert!(cands[0].3 && cands[0].2 == df, "{cands:?}");

        // Nothing measured (a device profile): everything stays.
        let none = |_: &[bool]| Ok(None);
        let mut cands = vec![cand("a", &[true, true, true, false], false)];
        let rows = latency_gate(0.5, &none, &mut cands, ("df", &df), &super::super::Quiet).unwrap();
        assert_eq!(cands.len(), 1);
        assert!(rows.is_empty());
    }
}
