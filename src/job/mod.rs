//! The main job as one library call: what `onnx-prune IN -o OUT --target-flops R [--data D]`
//! does, for a Rust program.
//!
//! ```no_run
//! use onnx_prune::job::{self, Options};
//! let o = Options { target_flops: 0.5, data: Some("calib/".into()), ..Default::default() };
//! let out = job::run("in.onnx".as_ref(), &o, &job::Stderr)?;
//! out.write("in.onnx".as_ref(), "out.onnx".as_ref(), &Default::default(), &job::Stderr)?;
//! # Ok::<(), onnx_prune::Error>(())
//! ```
//!
//! Without data, channels are ranked by magnitude and allocated by `allocation` (data-free).
//! With data, the job runs in phases inside one time limit (`budget` splits it): prepare
//! (subsets, the original's outputs), search (an RL agent, unless `agent` is `None`), recover
//! (re-ranking of the best plans by full least squares), fine-tune; each phase is timed and
//! scored before and after for the report, and the stop flag (Ctrl-C) is honoured in each:
//! the best model so far is returned with [`Outcome::interrupted`] naming the phase.
//!
//! Here the options, the outcome and the progress sink; `phases.rs` the clock and the report's
//! `time` object; `data.rs` the subsets; `flow.rs` the order of the phases; `search.rs` the
//! search and re-ranking; `finetune.rs` the last phase; `write.rs` the files written.

use crate::data::DataOptions;
use crate::error::{Error, Result};
use crate::eval::metrics::Reward;
use crate::ir::Model;
use crate::learn::train;
use crate::net::Backend;
use crate::search::allocate::Rounding;
use crate::search::datafree::{Allocation, Method, Pruner};
use crate::search::recover::Mode;
use crate::search::rl::{Agent, Episode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod data;
mod finetune;
mod flow;
mod joint;
pub mod latency;
mod masked;
mod phases;
mod search;
mod subnet;
#[cfg(test)]
mod tests_joint;
mod write;

pub use data::DataCtx;
pub use joint::{JointOptions, JointTraining};
pub use latency::LatencyOptions;
pub use phases::{Length, SCORE_FIELDS};
pub use write::{write_json, write_pruned, Files, Written};

/// How the channels of a group are ranked (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// `Ls` with data and uniform allocation, `L1` otherwise.
    Auto,
    L1,
    L2,
    Random,
    /// Least-squares removal cost on calibration images (needs data).
    Ls,
}

impl Channels {
    pub fn parse(s: &str) -> Option<Channels> {
        Some(match s {
            "auto" => Channels::Auto,
            "l1" => Channels::L1,
            "l2" => Channels::L2,
            "random" => Channels::Random,
            "ls" => Channels::Ls,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Channels::Auto => "auto",
            Channels::L1 => "l1",
            Channels::L2 => "l2",
            Channels::Random => "random",
            Channels::Ls => "ls",
        }
    }
}

/// `--round-to`: a fixed channel multiple, or `auto`: the multiple chosen from the deploy
/// runtime's measured staircase ([`crate::latency::staircase`]), once per job. `Capped`: what
/// `auto` falls back to first when its multiple puts a latency target out of reach: the
/// multiple, capped at half of each group's narrowest space ([`Rounding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundTo {
    Fixed(usize),
    Auto,
    Capped(usize),
}

impl RoundTo {
    /// `auto` or a positive integer.
    pub fn parse(s: &str) -> Option<RoundTo> {
        match s {
            "auto" => Some(RoundTo::Auto),
            _ => s.parse().ok().filter(|&n| n >= 1).map(RoundTo::Fixed),
        }
    }
    /// The multiple. [`run`] resolves `Auto` before anything is planned; unresolved it counts
    /// as the fixed default, 8.
    pub fn multiple(self) -> usize {
        match self {
            RoundTo::Fixed(n) | RoundTo::Capped(n) => n.max(1),
            RoundTo::Auto => 8,
        }
    }
    /// How the plan rounds each group's kept count.
    pub fn rounding(self) -> Rounding {
        Rounding {
            multiple: self.multiple(),
            capped: matches!(self, RoundTo::Capped(_)),
        }
    }
}

/// What the job does; `Default` gives the command line's defaults (documented on its flags in
/// docs/cli.md), with `target_flops` 0.5.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fraction of the input's MACs the output may keep.
    pub target_flops: f64,
    /// A latency budget as well (`--target-latency`; see [`latency`]).
    pub latency: Option<LatencyOptions>,
    pub channels: Channels,
    pub allocation: Allocation,
    /// Keep a multiple of this many channels in every group (`--round-to`).
    pub round_to: RoundTo,
    pub seed: u64,
    /// Fixed input shapes by input name.
    pub shapes: HashMap<String, Vec<i64>>,
    /// Calibration/validation (and training) data; without it the job is data-free.
    pub data: Option<PathBuf>,
    pub data_options: DataOptions,
    pub calib_size: usize,
    pub val_size: usize,
    /// Ignore labels: fidelity to the original's outputs only.
    pub label_free: bool,
    /// The search agent; `None`: no search (or joint training and pruning, with `joint`).
    pub agent: Option<Agent>,
    /// `--agent joint`: train and prune together instead of searching (`agent` is `None`).
    pub joint: Option<JointOptions>,
    pub episodes: Option<usize>,
    /// The search's reward; `None`: soft with labels, fidelity without.
    pub reward: Option<Reward>,
    pub drop_bound: f64,
    pub agent_device: Backend,
    pub rerank: usize,
    pub dqn_spread: usize,
    /// Calibration images of the search's level-by-level recovery (0: fast, one round).
    pub search_recover: usize,
    pub samples: usize,
    /// Stop the search after this long.
    pub time_budget: Option<Duration>,
    /// The whole job's limit; `None`: [`crate::budget::DEFAULT_LIMIT`] when fine-tuning is
    /// planned from the time, else none.
    pub time_limit: Option<Duration>,
    /// Runtime for recovery and evaluation: tract, ort, burn or auto.
    pub runtime: String,
    pub recover: Mode,
    /// `--recover ft:STEPS`: fine-tune steps after least squares (0: none).
    pub recover_ft_steps: usize,
    pub ridge: f64,
    pub recover_fast: bool,
    pub finetune: Length,
    pub train: train::Settings,
    /// `--feature-kd W`: fine-tuning also matches the pruned convolutions' outputs to the
    /// original's at the kept channels, with weight W (0: off; see `learn::train::FeatureKd`).
    pub feature_kd: f64,
    /// Fine-tuning guards itself with a checkpoint beside this path (the output), removed at
    /// the end.
    pub checkpoint_beside: Option<PathBuf>,
    /// Set (by Ctrl-C) to stop: the job ends its current step and returns what it has.
    pub stop: Option<&'static AtomicBool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target_flops: 0.5,
            latency: None,
            channels: Channels::Auto,
            allocation: Allocation::Uniform,
            round_to: RoundTo::Fixed(8),
            seed: 0,
            shapes: HashMap::new(),
            data: None,
            data_options: DataOptions::default(),
            calib_size: 1000,
            val_size: 1000,
            label_free: false,
            agent: Some(Agent::Ddpg),
            joint: None,
            episodes: None,
            reward: None,
            drop_bound: 0.02,
            agent_device: Backend::Auto,
            rerank: 3,
            dqn_spread: 3,
            search_recover: 0,
            samples: 4,
            time_budget: None,
            time_limit: None,
            runtime: "auto".into(),
            recover: Mode::Ls,
            recover_ft_steps: 0,
            ridge: 1e-3,
            recover_fast: false,
            finetune: Length::Planned,
            train: train::Settings::default(),
            feature_kd: 0.0,
            checkpoint_beside: None,
            stop: None,
        }
    }
}

impl Options {
    /// How long fine-tuning runs: off without data, or for a length of zero.
    pub fn length(&self) -> Length {
        match self.finetune {
            _ if self.data.is_none() => Length::Off,
            Length::Epochs(e) if e <= 0.0 => Length::Off,
            Length::Steps(0) => Length::Off,
            l => l,
        }
    }

    fn stop(&self) -> &'static AtomicBool {
        static NEVER: AtomicBool = AtomicBool::new(false);
        self.stop.unwrap_or(&NEVER)
    }
}

/// Where a job says what it does.
pub trait Progress: Sync {
    /// One line of the log.
    fn line(&self, msg: &str);
    /// A progress bar at `done` of `total` with its line (on a terminal, redrawn in place).
    fn bar(&self, done: usize, total: usize, msg: &str);
    /// The end of a run of [`Progress::bar`] calls.
    fn end_bar(&self);
    /// A table for a person (the per-group table; only on a terminal).
    fn table(&self, text: &str);
}

/// The command line's sink: lines on stderr; bars redrawn on a terminal, else one line each.
pub struct Stderr;

impl Progress for Stderr {
    fn line(&self, msg: &str) {
        eprintln!("{msg}");
    }
    fn bar(&self, done: usize, total: usize, msg: &str) {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = crate::report::bar(done, total, 24);
            eprint!("\r\x1b[2K{bar} {msg}");
        } else {
            eprintln!("{msg}");
        }
    }
    fn end_bar(&self) {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }
    fn table(&self, text: &str) {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("{text}");
        }
    }
}

/// A sink that says nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn line(&self, _: &str) {}
    fn bar(&self, _: usize, _: usize, _: &str) {}
    fn end_bar(&self) {}
    fn table(&self, _: &str) {}
}

/// The MAC budget and what the plan was predicted to keep.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub ratio: f64,
    pub macs: u64,
    pub predicted: u64,
}

/// What a job produced: the pruned model and everything its report says.
pub struct Outcome {
    /// The analysed input (channel groups, base MACs).
    pub pruner: Pruner,
    /// Kept channels per atom of `pruner`'s groups.
    pub keep: Vec<bool>,
    pub model: Model,
    pub target: Target,
    /// The report's fields beyond MACs and groups (search, recovery, fine-tuning, speed, time).
    pub report: serde_json::Map<String, serde_json::Value>,
    /// The search's episodes (for the plot).
    pub curve: Option<Vec<Episode>>,
    /// The phase the stop flag ended, if it did: "search", "recover" or "finetune".
    pub interrupted: Option<&'static str>,
}

impl Outcome {
    /// Writes the model to `output` (atomically), and the plan, report and plots `files`
    /// asks for.
    pub fn write(
        &self,
        input: &Path,
        output: &Path,
        files: &Files,
        out: &dyn Progress,
    ) -> Result<Written> {
        write_pruned(
            input,
            output,
            &self.pruner,
            &self.keep,
            &self.model,
            Some(self.target),
            files,
            self.report.clone(),
            self.curve.as_deref(),
            out,
        )
    }
}

/// Loads `input` and analyses it for pruning.
pub fn load_pruner(input: &Path, shapes: &HashMap<String, Vec<i64>>) -> Result<(Model, Pruner)> {
    let model = crate::onnx::load(input)?;
    let p = Pruner::new(&model, shapes).map_err(|e| e.in_file(input))?;
    Ok((model, p))
}

/// Runs the job on `input`: analysis, the plan (data-free, or searched, recovered and
/// fine-tuned with data), and with data the measured speed-up of the result. Nothing is
/// written (see [`Outcome::write`]) except fine-tuning's checkpoint guard.
pub fn run(input: &Path, o: &Options, out: &dyn Progress) -> Result<Outcome> {
    #[cfg(not(any(feature = "tract", feature = "ort")))]
    if o.data.is_some() {
        return Err(Error::Usage(
            "this build has no runtime: rebuild with the `tract` or `ort` feature".into(),
        ));
    }
    if !(o.feature_kd.is_finite() && o.feature_kd >= 0.0) {
        return Err(Error::Usage(format!(
            "--feature-kd must be a number >= 0, got {}",
            o.feature_kd
        )));
    }
    if o.feature_kd > 0.0 && o.joint.is_some() {
        return Err(Error::Usage(
            "--feature-kd is not available with --agent joint (its cut is made from the trained weights, not the input's)".into(),
        ));
    }
    // The job's clock starts before anything is loaded; the stop flag is honoured from here on.
    let clock: std::sync::Arc<dyn crate::budget::Clock> =
        std::sync::Arc::new(crate::budget::SystemClock::new());
    let (_, p) = load_pruner(input, &o.shapes)?;
    // `--round-to auto`: measured once, then the job runs with the multiple it chose.
    let (resolved, staircase) = latency::resolve_auto(input, &p, o, out)?;
    let o: &Options = &resolved;
    let mut job = phases::Phases::new(o, clock, o.stop());
    let method = match o.channels {
        Channels::L2 => Method::L2,
        Channels::Random => Method::Random,
        _ => Method::L1,
    };
    let ls = o.channels == Channels::Ls
        || (o.channels == Channels::Auto
            && o.data.is_some()
            && o.allocation == Allocation::Uniform);
    let method_name = match o.channels {
        Channels::Auto if ls => "ls",
        Channels::Auto => "l1",
        m => m.name(),
    };
    let target = (p.base_macs as f64 * o.target_flops).floor() as u64;
    let mut extra = serde_json::Map::new();
    let ctx = match &o.data {
        Some(d) => Some(DataCtx::load(&p, d, o, out)?),
        None => None,
    };
    // With ls, the statistics it was computed from (the search's recovery reuses them).
    let (imp, fast) = match &ctx {
        Some(c) if ls => {
            let (imp, fast) = flow::ls_importance(&p, c, out)?;
            (imp, Some(fast))
        }
        _ => (p.importance(method, o.seed), None),
    };
    // The unsearched plan: the allocation by `allocation`, within the latency budget if any
    // (with `--round-to auto`, at the finest multiple it needs).
    let (fitted_options, fitted) =
        latency::fit_rounding(input, &p, o, target, &imp, staircase.is_some(), out)?;
    let o: &Options = &fitted_options;
    if let Some(st) = staircase {
        extra.insert(
            "round_to".into(),
            latency::round_to_report(&p, st, o.round_to),
        );
    }
    let unsearched = match &fitted {
        Some(f) => f.keep.clone(),
        None => p.allocate(target, &imp, o.allocation, o.round_to.rounding()),
    };
    // The plan the search competes against (and its label in the re-ranking).
    let baseline = format!(
        "{}-{method_name} ({})",
        match o.allocation {
            Allocation::Uniform => "uniform",
            Allocation::Global => "global",
        },
        if ls { "no search" } else { "data-free" }
    );
    let (keep, pruned, curve) = match &ctx {
        Some(c) => {
            let cx = flow::Cx {
                p: &p,
                c,
                o,
                out,
                lat: fitted.as_ref(),
            };
            flow::with_data(
                &cx,
                (unsearched, &baseline),
                (&imp, fast),
                &mut extra,
                &mut job,
            )?
        }
        None => {
            let keep = unsearched;
            let m = p.apply(&keep)?;
            (keep, m, None)
        }
    };
    if let Some(c) = &ctx {
        // The measured speed-up of what is written (skipped after Ctrl-C: the user wants out).
        if job.interrupted.is_none() {
            search::speedup(input, &pruned, c, &mut extra, out)?;
        }
        extra.insert("time".into(), job.report());
    }
    if let Some(f) = &fitted {
        // The plan written may be the search's: its latency, predicted and measured (skipped
        // after Ctrl-C).
        let measure = job.interrupted.is_none();
        extra.insert(
            "latency".into(),
            f.finish(input, &p, &keep, &pruned, measure, out)?,
        );
    }
    let predicted = p.macs(&keep);
    let interrupted = job.interrupted;
    Ok(Outcome {
        pruner: p,
        keep,
        model: pruned,
        target: Target {
            ratio: o.target_flops,
            macs: target,
            predicted,
        },
        report: extra,
        curve,
        interrupted,
    })
}

/// A usage error from the job's checks.
fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}
