//! The main command's search (`--agent`): the oracle, the agents, the re-ranking of the
//! best plans by what is shipped and the measurements of the written model.

#![cfg_attr(not(any(feature = "tract", feature = "ort")), allow(unused_imports))]

use super::*;
use anyhow::{bail, Result};
use onnx_prune::ir::Model;
use serde_json::json;

/// A plan to re-rank: label, search score (none for the unsearched plan), plan, and whether it
/// is the unsearched plan (the agent may have found it too).
pub(crate) type Cand = (String, Option<f64>, Vec<bool>, bool);

/// `--reward` for this command: auto is soft with labels; fidelity without labels or with
/// --label-free, whatever was asked.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn reward_of(
    args: &PruneArgs,
    val: &onnx_prune::data::Dataset,
) -> onnx_prune::eval::metrics::Reward {
    use onnx_prune::eval::metrics::Reward;
    // "auto" is no reward's name: soft.
    Reward::parse(&args.reward)
        .unwrap_or(Reward::Soft)
        .with_labels(val.y.is_some() && !args.label_free)
}

/// The reinforcement-learning search (`--agent`); returns the best plan found.
/// `budget`: how long it may run (the job's share of `--time-limit`, or `--time-budget`);
/// `stop` (Ctrl-C) ends it after the current episode.
#[cfg(any(feature = "tract", feature = "ort"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn search(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
    ratio: f64,
    args: &PruneArgs,
    (data_free, baseline): (&[bool], &str),
    (select, fast): (&[f64], Option<onnx_prune::search::recover::FastCache>),
    extra: &mut serde_json::Map<String, serde_json::Value>,
    budget: Option<std::time::Duration>,
    stop: &'static std::sync::atomic::AtomicBool,
) -> Result<onnx_prune::search::rl::Outcome> {
    use onnx_prune::search::{env, rl};
    if let Some(b) = onnx_prune::net::Backend::parse(&args.agent_device) {
        onnx_prune::net::select(b);
    }
    let agent = rl::Agent::parse(&args.agent)
        .ok_or_else(|| anyhow::anyhow!("unknown agent {}", args.agent))?;
    if c.val.n == 0 {
        bail!(
            "--agent {} is rewarded on validation samples: give --val-size > 0 (or --agent none)",
            agent.name()
        );
    }
    let mut e = env::Env::new(p, ratio, args.opts.round_to, 0.05);
    // The agents keep channels by --method (L1 by default without data, ls with).
    e.set_select(select.to_vec());
    let episodes = args.episodes.unwrap_or(agent.default_episodes(e.steps()));
    // The search measures candidates on subsets (least-squares recovery from statistics of up
    // to 512 calibration images, gathered once; reward on up to 500 validation images); the
    // winner is recovered and measured on the full subsets afterwards.
    let sc = c.calib.subset(&(0..c.calib.n.min(512)).collect::<Vec<_>>());
    let sv = c.val.subset(&(0..c.val.n.min(500)).collect::<Vec<_>>());
    let mut oracle = env::Oracle::new(p, &sc, &sv, c.kind, args.label_free)?;
    if let Some(fast) = fast {
        // Gathered by ls_importance on the same images with the same options.
        oracle.set_fast_cache(fast);
    }
    let ft_steps = recover_ft_steps(args);
    if let (true, Some(train)) = (ft_steps > 0, c.train.as_ref()) {
        let labels = train.y.is_some() && !args.label_free;
        let o = train_options(&args.train, ft_steps, args.opts.seed, true, labels, false)?;
        oracle.set_finetune(o, train, Some(c.teacher(p)?));
    }
    if args.search_recover > 0 {
        oracle.set_sequential(args.search_recover, args.ridge, args.opts.seed);
    }
    oracle.set_reward(reward_of(args, &sv));
    let (_, line) = onnx_prune::net::device();
    eprintln!(
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
        if args.search_recover > 0 { "level by level" } else { "one round, cached" },
        if ft_steps > 0 { format!(" + {ft_steps} fine-tune step(s) of {} on the training samples", args.train.batch_size) } else { String::new() },
        if args.search_recover > 0 { args.search_recover.min(sc.n) } else { sc.n }
    );
    // What the search competes against: the unsearched plan on the same proxy.
    let df_score = oracle.measure(data_free)?;
    eprintln!("search: the plan {baseline} scores {df_score:.4} on the search's proxy");
    let o = rl::Options {
        episodes,
        time_budget: budget,
        stop: Some(stop),
        seed: args.opts.seed,
        drop_bound: args.drop_bound,
        samples: args.samples,
        dqn_spread: args.dqn_spread,
        ..Default::default()
    };
    let total = match agent {
        rl::Agent::Reinforce => (episodes / e.steps()).max(1) * e.steps(),
        rl::Agent::Dqn => episodes + 1,
        rl::Agent::Ddpg => episodes,
    };
    // On a terminal: one progress bar line, redrawn; otherwise a log line per episode.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let out = rl::search(agent, &mut e, &mut oracle, &o, &mut |ep| {
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
        if tty {
            let bar = onnx_prune::report::bar(ep.episode, total, 24);
            eprint!("\r\x1b[2K{bar} {line}");
        } else {
            eprintln!("{line}");
        }
    })?;
    if tty {
        eprintln!();
    }
    eprintln!(
        "search: best {:.4} after {} episodes ({} evaluations) in {:.0}s (surgery {:.0}s, recovery {:.0}s, evaluation {:.0}s)",
        out.best,
        out.curve.len(),
        out.evaluations,
        out.seconds,
        oracle.seconds[0],
        oracle.seconds[1],
        oracle.seconds[2]
    );
    for n in &out.notes {
        eprintln!("  {n}");
    }
    extra.insert(
        "search".into(),
        json!({
            "agent": agent.name(),
            "reward": oracle.reward().name(),
            "episodes": out.curve.len(),
            "best_episode": out.best_episode,
            "notes": out.notes,
            "evaluations": out.evaluations,
            "seconds": out.seconds,
            "best_reward": out.best,
            "data_free_reward": df_score,
            "original_reward": oracle.original,
            "curve": out.curve,
            "keep_ratios": out.group_keys.iter().zip(&out.ratios)
                .map(|(k, r)| json!({"key": k, "ratio": r})).collect::<Vec<_>>(),
        }),
    );
    Ok(out)
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn search(
    _: &onnx_prune::search::datafree::Pruner,
    _: &DataCtx,
    _: f64,
    _: &PruneArgs,
    _: (&[bool], &str),
    _: (&[f64], Option<onnx_prune::search::recover::FastCache>),
    _: &mut serde_json::Map<String, serde_json::Value>,
    _: Option<std::time::Duration>,
    _: &'static std::sync::atomic::AtomicBool,
) -> Result<onnx_prune::search::rl::Outcome> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// The re-ranking's winner: plan, recovered model, its recovery report and its outputs on the
/// validation subset.
pub(crate) type Rerank = (
    Vec<bool>,
    Model,
    onnx_prune::search::recover::Report,
    Vec<f32>,
);

/// Re-ranks candidates (the search's best plans and the unsearched plan) by what is shipped:
/// each is recovered exactly as the final model is and scored on the whole validation subset;
/// the best wins. Returns it with its recovered model. With `cap`, no candidate is started that
/// would, at the pace so far, end past it (the first always runs; `budget::rerank_more`).
#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn rerank(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
    args: &PruneArgs,
    cands: Vec<Cand>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
    stop: &std::sync::atomic::AtomicBool,
    cap: Option<std::time::Duration>,
) -> Result<Rerank> {
    use onnx_prune::eval::{self, runtime};
    let tmp = eval::TempDir::new("rerank")?;
    let (lo, k) = c.original_logits(p)?;
    let labels = c.val.y.as_deref().filter(|_| !args.label_free);
    let reward = reward_of(args, &c.val);
    let total = cands.len();
    let t0 = std::time::Instant::now();
    let mut rows = vec![];
    type Best = (
        f64,
        Vec<bool>,
        Model,
        onnx_prune::search::recover::Report,
        Vec<f32>,
    );
    let mut best: Option<Best> = None;
    for (i, (source, proxy, keep, unsearched)) in cands.into_iter().enumerate() {
        if i > 0 && stop.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("rerank: interrupted after {i} of {total} candidates");
            break;
        }
        if !onnx_prune::budget::rerank_more(t0.elapsed(), i, cap) {
            eprintln!(
                "rerank: stopped after {i} of {total} candidates ({:.0}s): another would take \
                 more than its share of the time limit ({:.0}s), which fine-tuning needs",
                t0.elapsed().as_secs_f64(),
                cap.unwrap_or_default().as_secs_f64()
            );
            rows.push(json!({"source": source, "skipped": "time limit"}));
            break;
        }
        let (m, rep) = recover_model(p, &keep, c, args)?;
        let (lp, _) = runtime::logits(c.kind, &m, &tmp, "candidate.onnx", &c.val)?;
        let v = reward.score(lo, &lp, *k, labels);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{} rerank {}/{total}: {source}{} -> {v:.4} ({}) on {} validation samples, ETA {:.0}s",
            onnx_prune::report::bar(i + 1, total, 8),
            i + 1,
            proxy
                .map(|x| format!(" (search score {x:.4})"))
                .unwrap_or_default(),
            reward.name(),
            c.val.n,
            secs / (i + 1) as f64 * (total - i - 1) as f64
        );
        rows.push(json!({"source": source, "search_score": proxy, "val_score": v, "unsearched": unsearched}));
        if best.as_ref().is_none_or(|b| v > b.0) {
            best = Some((v, keep, m, rep, lp));
        }
    }
    if let Some(serde_json::Value::Object(s)) = extra.get_mut("search") {
        s.insert("rerank".into(), json!(rows));
    }
    let (_, keep, m, rep, lp) = best.ok_or_else(|| anyhow::anyhow!("no candidate to re-rank"))?;
    Ok((keep, m, rep, lp))
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
pub(crate) fn rerank(
    _: &onnx_prune::search::datafree::Pruner,
    _: &DataCtx,
    _: &PruneArgs,
    _: Vec<Cand>,
    _: &mut serde_json::Map<String, serde_json::Value>,
    _: &std::sync::atomic::AtomicBool,
    _: Option<std::time::Duration>,
) -> Result<Rerank> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// `--data` on the main command: top-1 (with labels) and fidelity to the original on the
/// validation subset of the recovered model, into the report fields.
#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn measure(
    p: &onnx_prune::search::datafree::Pruner,
    pruned: &Model,
    rep: &onnx_prune::search::recover::Report,
    c: &DataCtx,
    args: &PruneArgs,
    pruned_logits: Option<Vec<f32>>,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    use onnx_prune::eval::{self, metrics, runtime};
    let (val, kind) = (&c.val, c.kind);
    out.insert("recover".into(), serde_json::to_value(rep)?);
    if val.n > 0 {
        let (lo, k) = c.original_logits(p)?;
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
        out.insert("val_samples".into(), json!(val.n));
        out.insert("agreement".into(), json!(f.agreement));
        out.insert("kl".into(), json!(f.kl));
        out.insert("rel_mse".into(), json!(f.rel_mse));
        msg += &format!(", relative MSE {:.3e}", f.rel_mse);
        if let Some(y) = val.y.as_ref().filter(|_| !args.label_free) {
            let (ao, ap) = (metrics::accuracy(lo, k, y), metrics::accuracy(&lp, k, y));
            msg += &format!("; top-1 {:.4} -> {:.4}", ao.top1, ap.top1);
            out.insert("top1_before".into(), json!(ao.top1));
            out.insert("top1_after".into(), json!(ap.top1));
        }
        eprintln!("{msg}");
    }
    Ok(())
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
pub(crate) fn measure(
    _: &onnx_prune::search::datafree::Pruner,
    _: &Model,
    _: &onnx_prune::search::recover::Report,
    _: &DataCtx,
    _: &PruneArgs,
    _: Option<Vec<f32>>,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// The written model's measured speed against the original's, on the evaluation runtime with
/// every core: median latency at batch 1 and at the evaluation batch (64, or the model's fixed
/// batch), the two models run alternately on the same validation images so that both see the
/// same machine load; about 2 s per batch size. Goes into the report as `speed` and is printed.
#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn speedup(
    input: &std::path::Path,
    pruned: &Model,
    c: &DataCtx,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    use onnx_prune::eval::{self, runtime};
    use std::time::Duration;
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
            super::eval::median_latency(&mut [a, q], x, n, 2, 40, Some(Duration::from_secs(2)))?;
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
    eprintln!(
        "measured speed-up ({}, {threads} threads): {}",
        c.kind.name(),
        parts.join(", ")
    );
    out.insert("speed".into(), serde_json::Value::Object(j));
    Ok(())
}
