//! The job's search phase and what follows it: the oracle and the agent (`crate::search::rl`),
//! the re-ranking of the best plans by what is shipped, the measurement of the shipped model on
//! the validation subset, and its measured speed-up against the original.

use super::flow::Cx;
use super::{usage, DataCtx, Progress};
use crate::error::Result;
use crate::eval::{self, metrics, runtime};
use crate::ir::Model;
use crate::search::recover::{self, FastCache};
use crate::search::rl::{self, Agent};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A plan to re-rank: label, search score (none for the unsearched plan), plan, and whether it
/// is the unsearched plan (the agent may have found it too).
pub(crate) type Cand = (String, Option<f64>, Vec<bool>, bool);

type Report = serde_json::Map<String, serde_json::Value>;

/// The reward of the search and the re-ranking: soft with labels unless another was asked;
/// fidelity without labels or when label-free, whatever was asked.
fn reward_of(cx: &Cx, val: &crate::data::Dataset) -> metrics::Reward {
    cx.o.reward
        .unwrap_or(metrics::Reward::Soft)
        .with_labels(val.y.is_some() && !cx.o.label_free)
}

/// The reinforcement-learning search; returns the agent's outcome (its best plans).
/// `budget`: how long it may run (the job's share of the time limit, or `time_budget`);
/// `stop` ends it after the current episode.
pub(crate) fn search(
    cx: &Cx,
    agent: Agent,
    (data_free, baseline): (&[bool], &str),
    (select, fast): (&[f64], Option<FastCache>),
    extra: &mut Report,
    budget: Option<Duration>,
    stop: &'static AtomicBool,
) -> Result<rl::Outcome> {
    use crate::search::env;
    let (p, c, o, out) = (cx.p, cx.c, cx.o, cx.out);
    crate::net::select(o.agent_device);
    if c.val.n == 0 {
        return Err(usage(format!(
            "--agent {} is rewarded on validation samples: give --val-size > 0 (or --agent none)",
            agent.name()
        )));
    }
    let mut e = env::Env::new(p, o.target_flops, o.round_to.rounding(), 0.05);
    if let Some((cost, ms)) = cx.lat.map(|f| f.cost()) {
        e = e.with_latency(cost, ms);
    }
    // The agents keep channels by the channel ranking (L1 by default without data, ls with).
    e.set_select(select.to_vec());
    let episodes = o.episodes.unwrap_or(agent.default_episodes(e.steps()));
    // The search measures candidates on subsets (least-squares recovery from statistics of up
    // to 512 calibration images, gathered once; reward on up to 500 validation images); the
    // winner is recovered and measured on the full subsets afterwards.
    let sc = c.calib.subset(&(0..c.calib.n.min(512)).collect::<Vec<_>>());
    let sv = c.val.subset(&(0..c.val.n.min(500)).collect::<Vec<_>>());
    let mut oracle = env::Oracle::new(p, &sc, &sv, c.kind, o.label_free)?;
    if let Some(fast) = fast {
        // Gathered by ls_importance on the same images with the same options.
        oracle.set_fast_cache(fast);
    }
    let ft_steps = o.recover_ft_steps;
    if let (true, Some(train)) = (ft_steps > 0, c.train.as_ref()) {
        let labels = train.y.is_some() && !o.label_free;
        let to = o.train.options(ft_steps, o.seed, true, labels, false)?;
        oracle.set_finetune(to, train, Some(c.teacher(p)?));
    }
    if o.search_recover > 0 {
        oracle.set_sequential(o.search_recover, o.ridge, o.seed);
    }
    oracle.set_reward(reward_of(cx, &sv));
    let (_, line) = crate::net::device();
    out.line(&format!(
        "search: agent {}, {} groups, {} episodes{}, reward = {} on {} validation images (original {:.4}) after least squares ({}){} on {} calibration images; {line}",
        agent.name(),
        e.steps(),
        episodes,
        budget
            .map(|d| format!(" (time budget {:.0}s)", d.as_secs_f64()))
            .unwrap_or_default(),
        oracle.reward().describe(),
        sv.n,
        oracle.original,
        if o.search_recover > 0 { "level by level" } else { "one round, cached" },
        if ft_steps > 0 { format!(" + {ft_steps} fine-tune step(s) of {} on the training samples", o.train.batch_size) } else { String::new() },
        if o.search_recover > 0 { o.search_recover.min(sc.n) } else { sc.n }
    ));
    // What the search competes against: the unsearched plan on the same proxy.
    let df_score = oracle.measure(data_free)?;
    out.line(&format!(
        "search: the plan {baseline} scores {df_score:.4} on the search's proxy"
    ));
    let ro = rl::Options {
        episodes,
        time_budget: budget,
        stop: Some(stop),
        seed: o.seed,
        drop_bound: o.drop_bound,
        samples: o.samples,
        dqn_spread: o.dqn_spread,
        ..Default::default()
    };
    let total = match agent {
        Agent::Reinforce => (episodes / e.steps()).max(1) * e.steps(),
        Agent::Dqn => episodes + 1,
        Agent::Ddpg => episodes,
    };
    // One progress bar, redrawn on a terminal (else a line per episode).
    let res = rl::search(agent, &mut e, &mut oracle, &ro, &mut |ep| {
        let eta = ep.seconds / ep.episode as f64 * (total.saturating_sub(ep.episode)) as f64;
        let line = format!(
            "episode {}/{total}: reward {:.4}  best {:.4}  MACs {:.1}%  {:.0}s  ETA {:.0}s",
            ep.episode,
            ep.reward,
            ep.best,
            100.0 * ep.macs_ratio,
            ep.seconds,
            eta
        );
        out.bar(ep.episode, total, &line);
    })?;
    out.end_bar();
    out.line(&format!(
        "search: best {:.4} after {} episodes ({} evaluations) in {:.0}s (surgery {:.0}s, recovery {:.0}s, evaluation {:.0}s)",
        res.best,
        res.curve.len(),
        res.evaluations,
        res.seconds,
        oracle.seconds[0],
        oracle.seconds[1],
        oracle.seconds[2]
    ));
    for n in &res.notes {
        out.line(&format!("  {n}"));
    }
    extra.insert(
        "search".into(),
        json!({
            "agent": agent.name(),
            "reward": oracle.reward().name(),
            "episodes": res.curve.len(),
            "best_episode": res.best_episode,
            "notes": res.notes,
            "evaluations": res.evaluations,
            "seconds": res.seconds,
            "best_reward": res.best,
            "data_free_reward": df_score,
            "original_reward": oracle.original,
            "curve": res.curve,
            "keep_ratios": res.group_keys.iter().zip(&res.ratios)
                .map(|(k, r)| json!({"key": k, "ratio": r})).collect::<Vec<_>>(),
        }),
    );
    Ok(res)
}

/// The re-ranking's winner: plan, recovered model, its recovery report and its outputs on the
/// validation subset.
pub(crate) type Rerank = (Vec<bool>, Model, recover::Report, Vec<f32>);

/// Re-ranks candidates (the search's best plans and the unsearched plan) by what is shipped:
/// each is recovered exactly as the final model is and scored on the whole validation subset;
/// the best wins. Returns it with its recovered model. With `cap`, no candidate is started that
/// would, at the pace so far, end past it (the first always runs; `budget::rerank_more`).
pub(crate) fn rerank(
    cx: &Cx,
    cands: Vec<Cand>,
    extra: &mut Report,
    stop: &AtomicBool,
    cap: Option<Duration>,
) -> Result<Rerank> {
    let (p, c, o, out) = (cx.p, cx.c, cx.o, cx.out);
    let tmp = eval::TempDir::new("rerank")?;
    let (lo, k) = c.original_logits(p)?;
    let labels = c.val.y.as_deref().filter(|_| !o.label_free);
    let reward = reward_of(cx, &c.val);
    let total = cands.len();
    let t0 = std::time::Instant::now();
    let mut rows = vec![];
    let mut best: Option<(f64, Rerank)> = None;
    for (i, (source, proxy, keep, unsearched)) in cands.into_iter().enumerate() {
        if i > 0 && stop.load(Ordering::SeqCst) {
            out.line(&format!(
                "rerank: interrupted after {i} of {total} candidates"
            ));
            break;
        }
        if !crate::budget::rerank_more(t0.elapsed(), i, cap) {
            out.line(&format!(
                "rerank: stopped after {i} of {total} candidates ({:.0}s): another would take \
                 more than its share of the time limit ({:.0}s), which fine-tuning needs",
                t0.elapsed().as_secs_f64(),
                cap.unwrap_or_default().as_secs_f64()
            ));
            rows.push(json!({"source": source, "skipped": "time limit"}));
            break;
        }
        let (m, rep) = cx.recover_model(&keep)?;
        let (lp, _) = runtime::logits(c.kind, &m, &tmp, "candidate.onnx", &c.val)?;
        let v = reward.score(lo, &lp, *k, labels);
        let secs = t0.elapsed().as_secs_f64();
        out.line(&format!(
            "{} rerank {}/{total}: {source}{} -> {v:.4} ({}) on {} validation samples, ETA {:.0}s",
            crate::report::bar(i + 1, total, 8),
            i + 1,
            proxy
                .map(|x| format!(" (search score {x:.4})"))
                .unwrap_or_default(),
            reward.name(),
            c.val.n,
            secs / (i + 1) as f64 * (total - i - 1) as f64
        ));
        rows.push(json!({"source": source, "search_score": proxy, "val_score": v, "unsearched": unsearched}));
        if best.as_ref().is_none_or(|b| v > b.0) {
            best = Some((v, (keep, m, rep, lp)));
        }
    }
    if let Some(serde_json::Value::Object(s)) = extra.get_mut("search") {
        s.insert("rerank".into(), json!(rows));
    }
    best.map(|b| b.1)
        .ok_or_else(|| usage("no candidate to re-rank"))
}

/// Top-1 (with labels) and fidelity to the original of the recovered model on the validation
/// subset, into the report fields.
pub(crate) fn measure(
    cx: &Cx,
    pruned: &Model,
    rep: &recover::Report,
    pruned_logits: Option<Vec<f32>>,
    extra: &mut Report,
) -> Result<()> {
    let (c, o) = (cx.c, cx.o);
    let (val, kind) = (&c.val, c.kind);
    extra.insert("recover".into(), serde_json::to_value(rep)?);
    if val.n > 0 {
        let (lo, k) = c.original_logits(cx.p)?;
        let (lo, k) = (lo.as_slice(), *k);
        let lp = match pruned_logits {
            Some(l) => l,
            None => {
                let tmp = eval::TempDir::new("measure")?;
                runtime::logits(kind, pruned, &tmp, "pruned.onnx", val)?.0
            }
        };
        let f = metrics::fidelity(lo, &lp, k);
        let mut msg = format!(
            "validation ({} samples, {}): top-1 agreement with the original {:.4}, mean KL {:.4}",
            val.n,
            kind.name(),
            f.agreement,
            f.kl
        );
        extra.insert("val_samples".into(), json!(val.n));
        extra.insert("agreement".into(), json!(f.agreement));
        extra.insert("kl".into(), json!(f.kl));
        extra.insert("rel_mse".into(), json!(f.rel_mse));
        msg += &format!(", relative MSE {:.3e}", f.rel_mse);
        if let Some(y) = val.y.as_ref().filter(|_| !o.label_free) {
            let (ao, ap) = (metrics::accuracy(lo, k, y), metrics::accuracy(&lp, k, y));
            msg += &format!("; top-1 {:.4} -> {:.4}", ao.top1, ap.top1);
            extra.insert("top1_before".into(), json!(ao.top1));
            extra.insert("top1_after".into(), json!(ap.top1));
        }
        cx.out.line(&msg);
    }
    Ok(())
}

/// The written model's measured speed against the original's, on the evaluation runtime with
/// every core: median latency at batch 1 and at the evaluation batch (64, or the model's fixed
/// batch), the two models run alternately on the same validation images so that both see the
/// same machine load; about 2 s per batch size. Goes into the report as `speed` and is said.
pub(crate) fn speedup(
    input: &std::path::Path,
    pruned: &Model,
    c: &DataCtx,
    extra: &mut Report,
    out: &dyn Progress,
) -> Result<()> {
    let val = &c.val;
    if val.n == 0 {
        return Ok(());
    }
    let tmp = eval::TempDir::new("speed")?;
    let pp = tmp.save(pruned, "pruned.onnx")?;
    let threads = runtime::all_threads();
    let mut batches = vec![1];
    let b = eval::fixed_batch(pruned).unwrap_or(64).min(val.n);
    if b > 1 {
        batches.push(b);
    }
    let mut j = serde_json::Map::new();
    j.insert("runtime".into(), json!(c.kind.name()));
    j.insert("threads".into(), json!(threads));
    let mut parts = vec![];
    for n in batches {
        let x = &val.x[..n * val.sample_len()];
        let a = runtime::open(c.kind, input, n, c.chw, threads)?;
        let q = runtime::open(c.kind, &pp, n, c.chw, threads)?;
        // Two warm-up rounds; then at least 5 timed ones, up to about 2 s.
        let (med, runs) =
            runtime::median_latency(&mut [a, q], x, n, 2, 40, Some(Duration::from_secs(2)))?;
        let (ma, mq) = (med[0], med[1]);
        j.insert(
            format!("batch{n}"),
            json!({"original_ms": ma, "pruned_ms": mq, "speedup": ma / mq.max(1e-9), "runs": runs}),
        );
        parts.push(format!(
            "{:.2}x at batch {n} ({ma:.2} -> {mq:.2} ms)",
            ma / mq.max(1e-9)
        ));
    }
    out.line(&format!(
        "measured speed-up ({}, {threads} threads): {}",
        c.kind.name(),
        parts.join(", ")
    ));
    extra.insert("speed".into(), serde_json::Value::Object(j));
    Ok(())
}
