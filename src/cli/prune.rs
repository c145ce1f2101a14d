//! The main command (`onnx-prune IN -o OUT --target-flops R [--data D]`): its flags as the
//! library job's options (`onnx_prune::job`), the run, the files, and the exit status for an
//! unreachable target (`--strict`) or Ctrl-C.

use super::*;
use anyhow::{bail, Context, Result};
use onnx_prune::job::{self, Channels, Length, Options, RoundTo};
use onnx_prune::search::datafree::Allocation;
use std::path::{Path, PathBuf};

pub(crate) use onnx_prune::job::{load_pruner, write_json};

/// How long the job fine-tunes, from `--finetune-epochs`/`--finetune-steps` (which clap
/// keeps apart): 0 turns it off, a count forces it, neither leaves it to the job's plan.
fn length(p: &PruneArgs) -> Length {
    match (p.finetune_epochs, p.finetune_steps) {
        (Some(e), _) if e <= 0.0 => Length::Off,
        (_, Some(0)) => Length::Off,
        (Some(e), _) => Length::Epochs(e),
        (_, Some(n)) => Length::Steps(n),
        _ => Length::Planned,
    }
}

/// The flags that read training or calibration data, each with why: without `--data` they
/// are refused by `check`. (`--label-free` without `--data` is not refused: `ignored` notes
/// it, since the data-free job simply reads no labels.)
fn needs_data(p: &PruneArgs) -> [(bool, &'static str); 5] {
    let forced = matches!(length(p), Length::Epochs(_) | Length::Steps(_));
    [
        (
            forced,
            "--finetune-epochs/--finetune-steps need training data: add --data PATH",
        ),
        (
            p.feature_kd > 0.0,
            "--feature-kd distils during fine-tuning, which needs training data: add --data PATH",
        ),
        (
            p.opts.method == "ls",
            "--method ls ranks channels on calibration images: add --data PATH",
        ),
        (
            p.recover.as_deref().is_some_and(|r| r != "none"),
            "--recover needs calibration data: add --data PATH",
        ),
        (
            p.agent == "joint",
            "--agent joint trains the network: give --data with training samples",
        ),
    ]
}

/// The main command's flags checked before anything is read: an input and `-o`, a target in
/// (0, 1], the flags that need `--data` (`needs_data`), combinations that cannot work, and the
/// output directories. Each refusal names the flag and what to do. Returns the input and output
/// paths.
pub(crate) fn check(p: &PruneArgs) -> Result<(PathBuf, PathBuf)> {
    let Some(input) = p.input.clone() else {
        bail!("no input model given; see `onnx-prune --help`");
    };
    let Some(output) = p.output.clone() else {
        bail!("missing -o OUT.onnx");
    };
    match (p.target_flops, p.latency.target_latency) {
        (None, None) => bail!(
            "missing --target-flops R (fraction of MACs to keep, e.g. 0.5) or \
             --target-latency R (fraction of the latency)"
        ),
        (Some(r), _) if !(r > 0.0 && r <= 1.0) => {
            bail!("--target-flops must be in (0, 1], got {r}")
        }
        (_, Some(r)) if !(r > 0.0 && r <= 1.0) => {
            bail!("--target-latency must be in (0, 1], got {r}")
        }
        _ => {}
    }
    if p.latency.target_latency.is_none() && p.latency.latency_profile.is_some() {
        bail!("--latency-profile is read for --target-latency: add --target-latency R");
    }
    if let Some(e) = p.finetune_epochs {
        if e < 0.0 || !e.is_finite() {
            bail!("--finetune-epochs must be a non-negative number");
        }
    }
    if p.data.is_none() {
        if let Some((_, why)) = needs_data(p).into_iter().find(|(given, _)| *given) {
            bail!("{why}");
        }
    }
    if p.opts.method == "ls" && p.opts.allocation == "global" {
        bail!("--method ls orders channels within each group only: use --allocation uniform (or --method l1|l2 for a global threshold)");
    }
    for f in [&p.opts.report, &p.opts.emit_plan, &p.output]
        .into_iter()
        .flatten()
    {
        let dir = f.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = dir.filter(|d| !d.is_dir()) {
            bail!("{}: directory {} does not exist", f.display(), d.display());
        }
    }
    Ok((input, output))
}

/// Flags given that cannot act (the flags that need `--data` are refused without it, before):
/// `--label-free` without `--data` (the data-free job reads no labels), and `--feature-kd`
/// with fine-tuning off (`--finetune-steps 0`, `--finetune-epochs 0`).
fn ignored(args: &PruneArgs, finetune: Length) -> Vec<String> {
    let mut notes = vec![];
    if args.label_free && args.data.is_none() {
        notes.push("--label-free ignored: the data-free job reads no labels".to_string());
    }
    if args.feature_kd > 0.0 && finetune == Length::Off {
        notes.push("--feature-kd ignored: fine-tuning is off".to_string());
    }
    notes
}

/// The job's options from the flags (`ratio`: `--target-flops`, checked by the caller).
fn options(
    args: &PruneArgs,
    ratio: f64,
    stop: &'static std::sync::atomic::AtomicBool,
) -> Result<Options> {
    let o = &args.opts;
    let (recover, recover_ft_steps) = match args.recover.as_deref() {
        Some(r) => match r.strip_prefix("ft:") {
            Some(n) => (
                onnx_prune::search::recover::Mode::Ls,
                n.parse().unwrap_or(0),
            ),
            None => (
                onnx_prune::search::recover::Mode::parse(r)
                    .unwrap_or(onnx_prune::search::recover::Mode::Ls),
                0,
            ),
        },
        None => (onnx_prune::search::recover::Mode::Ls, 0),
    };
    let finetune = length(args);
    for note in ignored(args, finetune) {
        eprintln!("note: {note}");
    }
    let l = &args.latency;
    let latency = l.target_latency.map(|target| job::LatencyOptions {
        target,
        runtime: match (l.latency_runtime.as_str(), args.runtime.as_str()) {
            ("auto", "ort" | "tract") => args.runtime.clone(),
            (r, _) => r.to_string(),
        },
        batch: l.latency_batch,
        threads: l.threads,
        profile: l.latency_profile.clone(),
        ..Default::default()
    });
    // --round-to's default: auto under a latency target (the staircase decides; kept channel
    // counts off the runtime's blocks cost time for nothing), 8 otherwise, and 8 with a device
    // profile measured without a staircase (nothing here measures the device).
    let round_to = match (o.round_to, &latency) {
        (Some(r), _) => r,
        (None, None) => RoundTo::Fixed(8),
        (None, Some(l)) => match &l.profile {
            Some(path)
                if onnx_prune::latency::Profile::load(path)?
                    .staircase
                    .is_none() =>
            {
                eprintln!(
                    "note: --round-to 8: the latency profile {} has no staircase (measure it \
                     with `onnx-prune profile --round-to auto` for the device's own multiple)",
                    path.display()
                );
                RoundTo::Fixed(8)
            }
            _ => RoundTo::Auto,
        },
    };
    Ok(Options {
        target_flops: ratio,
        latency,
        channels: Channels::parse(&o.method).expect("clap checked"),
        allocation: if o.allocation == "global" {
            Allocation::Global
        } else {
            Allocation::Uniform
        },
        round_to,
        seed: o.seed,
        shapes: o.shapes.map(),
        data: args.data.clone(),
        data_options: args.data_opts.options(),
        calib_size: args.calib_size,
        val_size: args.val_size,
        label_free: args.label_free,
        agent: onnx_prune::search::rl::Agent::parse(&args.agent),
        joint: (args.agent == "joint").then(|| args.joint.options()),
        episodes: args.episodes,
        reward: onnx_prune::eval::metrics::Reward::parse(&args.reward),
        drop_bound: args.drop_bound,
        agent_device: onnx_prune::net::Backend::parse(&args.agent_device).expect("clap checked"),
        rerank: args.rerank,
        dqn_spread: args.dqn_spread,
        search_recover: args.search_recover,
        samples: args.samples,
        time_budget: args.time_budget,
        time_limit: args.time_limit,
        runtime: args.runtime.clone(),
        recover,
        recover_ft_steps,
        ridge: args.ridge,
        recover_fast: args.recover_fast,
        finetune,
        train: args.train.settings(),
        feature_kd: args.feature_kd,
        checkpoint_beside: args.output.clone(),
        stop: Some(stop),
    })
}

pub(crate) fn prune(input: &Path, output: &Path, ratio: f64, args: &PruneArgs) -> Result<()> {
    // Ctrl-C is honoured from the start of a job with data.
    let stop = if args.data.is_some() {
        stop_flag()
    } else {
        &STOP
    };
    let o = options(args, ratio, stop)?;
    let out = job::run(input, &o, &job::Stderr)?;
    let files = job::Files {
        plan: args.opts.emit_plan.clone(),
        report: args.opts.report.clone(),
    };
    let w = out.write(input, output, &files, &job::Stderr)?;
    if let Some(msg) = w.unreachable {
        if args.opts.strict {
            return Err(ToleranceExceeded(msg).into());
        }
        eprintln!("note: {msg}");
    }
    if let Some(phase) = out.interrupted {
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

/// `onnx-prune profile MODEL -o profile.json`: the latency profile measured here.
pub(crate) fn profile_cmd(a: &ProfileArgs) -> Result<()> {
    let (_, p) = load_pruner(&a.model, &a.shapes.map())?;
    let l = job::LatencyOptions {
        runtime: a.runtime.clone(),
        batch: a.batch,
        threads: a.threads,
        points: a.points,
        runs: a.runs,
        ..Default::default()
    };
    let mut s = job::latency::settings(&l, a.round_to.multiple())?;
    eprintln!("{}", s.runtime_line);
    let say = |m: &str| eprintln!("{m}");
    let staircase = match a.round_to {
        job::RoundTo::Auto => {
            let st = onnx_prune::latency::staircase::measure(&p, &s, &say)?;
            // Capped: the narrow spaces also get the points `auto`'s first fallback keeps.
            s.round_to = job::RoundTo::Capped(st.round_to).rounding();
            Some(st)
        }
        job::RoundTo::Fixed(_) | job::RoundTo::Capped(_) => None,
    };
    let mut pr = onnx_prune::latency::measure::profile(&a.model, &p, &s, &say)?;
    pr.staircase = staircase;
    pr.save(&a.output)?;
    let covered: f64 = pr.layers.iter().map(|l| l.full()).sum();
    eprintln!(
        "wrote {}: {} layers; the whole model {:.3} ms, its profiled layers alone {:.3} ms \
         ({:.0}%)",
        a.output.display(),
        pr.layers.len(),
        pr.model_ms,
        covered,
        100.0 * covered / pr.model_ms.max(1e-9)
    );
    Ok(())
}

/// Writes a model pruned by `apply` or `shrink` (no MAC target) and its files.
pub(crate) fn write_plain(
    input: &Path,
    output: &Path,
    p: &onnx_prune::search::datafree::Pruner,
    keep: &[bool],
    pruned: &onnx_prune::ir::Model,
    files: job::Files,
) -> Result<()> {
    job::write_pruned(
        input,
        output,
        p,
        keep,
        pruned,
        None,
        &files,
        Default::default(),
        None,
        &job::Stderr,
    )?;
    Ok(())
}

pub(crate) fn read_plan(path: &Path) -> Result<onnx_prune::search::plan::Plan> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid plan", path.display()))
}
