//! The command line: clap definitions of the main command and the subcommands, and the
//! parsers of their flag values.

use clap::{Args, Parser, Subcommand};
use onnx_prune::analysis::parse_input_shape;
use onnx_prune::job::RoundTo;
use std::collections::HashMap;
use std::path::PathBuf;

use super::train_args::{FinetuneArgs, TrainArgs};

#[derive(Parser)]
#[command(
    name = "onnx-prune",
    version,
    about = "Make convolutional ONNX models physically smaller",
    long_about = "Make convolutional ONNX models physically smaller.\n\n\
        Usage forms:\n  onnx-prune IN.onnx -o OUT.onnx --target-flops 0.5 [--data calib/]\n  \
        onnx-prune inspect MODEL [--json]\n  onnx-prune simplify IN -o OUT [--fold-bn]",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Option<Cmd>,
    /// Treat initializers that a model also lists as graph inputs as constant weights (IR < 4
    /// files always are; newer exporters rarely list them). Without it, in IR >= 4 such inputs
    /// are defaults a caller may override, so nothing behind them is folded or pruned
    #[arg(long, global = true)]
    pub(crate) constant_initializer_inputs: bool,
    #[command(flatten)]
    pub(crate) prune: PruneArgs,
}

/// The top-level form: prune IN to a MAC budget.
#[derive(Args)]
pub(crate) struct PruneArgs {
    /// Input model
    pub(crate) input: Option<PathBuf>,
    /// Output model
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Fraction of the input's MACs the output may keep (e.g. 0.5)
    #[arg(long)]
    pub(crate) target_flops: Option<f64>,
    #[command(flatten)]
    pub(crate) latency: LatencyArgs,
    /// Calibration/validation data (.npy/.npz, MNIST idx, ImageFolder dir/.tar): enables the
    /// reinforcement-learning search (--agent), recovery (--recover) and an accuracy/fidelity
    /// report
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) data_opts: DataOpts,
    /// With --data: recovery after pruning: ls (least-squares reconstruction of the layers
    /// reading pruned channels), bn (BatchNorm re-calibration / per-channel moment matching
    /// where BN is folded), ft:STEPS (ls, then STEPS steps of fine-tuning on the samples not
    /// held out for validation, with labels plus distillation from the original, as PuRL's
    /// short retraining; used for every candidate of the search too; training flags as for
    /// `finetune`), none.
    /// Default: ls with --data, none without
    #[arg(long, value_parser = parse_recover)]
    pub(crate) recover: Option<String>,
    /// With --data: calibration samples for recovery
    #[arg(long, default_value_t = 1000)]
    pub(crate) calib_size: usize,
    /// With --data: validation samples (disjoint from calibration) for the accuracy/fidelity
    /// report; 0 skips it
    #[arg(long, default_value_t = 1000)]
    pub(crate) val_size: usize,
    /// With --data: ignore labels; the search is rewarded by fidelity to the original's outputs,
    /// 1/(1 + relative MSE), and the report gives fidelity only
    #[arg(long)]
    pub(crate) label_free: bool,
    /// With --data: the search agent. ddpg (default; measured best): AMC's actor-critic (a
    /// keep ratio per group); dqn: PuRL (magnitude thresholds α·σ, dense rewards);
    /// reinforce: Huang et al. 2018 (a policy per group samples which filters to keep); joint:
    /// Ganjdanesh et al. 2024 (the network trains while an agent picks the structure and the
    /// weights align to it; then the cut, recovery and fine-tuning); none: no search, the
    /// uniform/global --allocation by the channel criterion, then recovery
    #[arg(long, default_value = "ddpg", value_parser = ["ddpg", "dqn", "reinforce", "joint", "none"])]
    pub(crate) agent: String,
    /// With --data: search episodes (default: 100 for ddpg, 55 for dqn; for reinforce the
    /// number of policy updates, spread over the groups, default 10 per group)
    #[arg(long)]
    pub(crate) episodes: Option<usize>,
    /// With --agent ddpg|dqn|reinforce: what a candidate scores on the validation subset (the
    /// search's reward and the re-ranking). soft: mean softmax probability of the true label
    /// (on the scale of top-1, but smooth: it ranks plans more like the test set does); top1;
    /// fidelity: 1/(1 + relative MSE) to the original's outputs (what --label-free uses).
    /// auto: soft with labels, fidelity without
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "top1", "fidelity"])]
    pub(crate) reward: String,
    /// With --agent reinforce: accuracy-drop bound b of the reward (b − drop)/b·log(C/C_kept)
    #[arg(long, default_value_t = 0.02)]
    pub(crate) drop_bound: f64,
    /// With --agent ddpg|dqn|reinforce: burn backend for the agent: auto (a GPU adapter when
    /// the build has the `wgpu` feature and one answers, else CPU), cpu, wgpu (any adapter,
    /// CPU Vulkan drivers included)
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "wgpu"])]
    pub(crate) agent_device: String,
    /// With --agent ddpg|dqn|reinforce: the N best plans of the search and the unsearched plan
    /// (--allocation by --method) are recovered in full and scored on the validation subset;
    /// the best is written (0: take the search's best as it is)
    #[arg(long, default_value_t = 3)]
    pub(crate) rerank: usize,
    /// With --agent dqn: random exploration draws α within this many actions of the α that
    /// keeps the group's fair share of the budget, and the first episode plays that α
    /// throughout; 12 explores all 12 α uniformly, as PuRL does
    #[arg(long, default_value_t = 3)]
    pub(crate) dqn_spread: usize,
    /// With --agent ddpg|dqn|reinforce: how each candidate is recovered before it is scored.
    /// fast: least squares in one round on the original's activations, from statistics of up
    /// to 512 calibration images gathered once (a solve per candidate); seq:N: level by level
    /// on the candidate's own activations from N calibration images, as the final recovery
    /// does (one forward run per level; up to 64 positions per image below 512 images; from
    /// 512 images on the same images, a plan scores exactly what the final recovery gives it)
    #[arg(long, default_value = "fast", value_parser = parse_search_recover)]
    pub(crate) search_recover: usize,
    /// With --agent reinforce: masks sampled per policy update
    #[arg(long, default_value_t = 4)]
    pub(crate) samples: usize,
    /// With --data: stop the search after this long (e.g. 10m, 90s); with --time-limit the
    /// search also stops at a quarter of the limit
    #[arg(long, value_parser = onnx_prune::budget::parse_duration)]
    pub(crate) time_budget: Option<std::time::Duration>,
    /// With --data: the whole command (search, recovery, fine-tuning, final measurement)
    /// finishes within this (e.g. 20m, 2h). The search gets up to a quarter of it, recovery
    /// what it needs, fine-tuning the rest less a reserve for the final measurement; the split
    /// is printed. Default: 20m, unless --finetune-epochs/--finetune-steps fix the length
    /// (then no limit unless given)
    #[arg(long, value_parser = onnx_prune::budget::parse_duration)]
    pub(crate) time_limit: Option<std::time::Duration>,
    /// With --data: runtime for recovery and evaluation: tract, ort, auto (ort if found)
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    pub(crate) runtime: String,
    /// With --recover ls: ridge strength (relative to the mean diagonal of AᵀA)
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) ridge: f64,
    /// With --recover ls: fit every layer on the original model's activations in one round
    /// (ThiNet-style, fastest) instead of level by level on the pruned model's own (default)
    #[arg(long)]
    pub(crate) recover_fast: bool,
    /// With --data: the pruned model is fine-tuned on the data not held out for validation
    /// (burn; labels plus distillation from the original, or distillation only with
    /// --label-free or without labels; training flags as for `finetune`), by default for as
    /// long as --time-limit leaves (at most 30 epochs). E forces E epochs; 0 switches
    /// fine-tuning off
    #[arg(long)]
    pub(crate) finetune_epochs: Option<f64>,
    /// With --data: fine-tune for exactly N steps (instead of --finetune-epochs or the time
    /// limit's plan; the report's `finetune.steps` of a timed run reproduces it); 0: off
    #[arg(long, conflicts_with = "finetune_epochs")]
    pub(crate) finetune_steps: Option<usize>,
    /// With --data: feature distillation in the fine-tuning with weight W, added to the loss:
    /// the mean over the pruned convolutions' outputs (the maps least squares fits) of
    /// ‖model − original‖² / ‖original‖² at the kept channels; 0 (default): off
    #[arg(long, default_value_t = 0.0)]
    pub(crate) feature_kd: f64,
    #[command(flatten)]
    pub(crate) train: TrainArgs,
    #[command(flatten)]
    pub(crate) joint: super::joint_args::JointArgs,
    #[command(flatten)]
    pub(crate) opts: PruneOpts,
}

/// `--target-latency` and the flags beside it.
#[derive(Args)]
pub(crate) struct LatencyArgs {
    /// Latency budget: the output's measured latency is at most R × the input's (e.g. 0.5) on
    /// --latency-runtime at --latency-batch and --threads. The per-layer latency profile is
    /// measured here first unless --latency-profile gives one; the pruned model is measured
    /// and the plan tightened until it fits (an unreachable target is an error). With
    /// --target-flops both hold. Data-free or with --data (the search fits the same budget)
    #[arg(long)]
    pub(crate) target_latency: Option<f64>,
    /// With --target-latency: the runtime whose latency counts: ort, tract, auto (the one
    /// --runtime picks)
    #[arg(long, default_value = "auto", value_parser = ["ort", "tract", "auto"])]
    pub(crate) latency_runtime: String,
    /// With --target-latency: the batch size latency is measured at
    #[arg(long, default_value_t = 1)]
    pub(crate) latency_batch: usize,
    /// With --target-latency: the runtime's threads (1: the typical edge setting)
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// With --target-latency: a profile measured on the device with `onnx-prune profile`
    /// (refused when it was measured for another model file); the plan then fits its
    /// predictions, and nothing is measured here
    #[arg(long)]
    pub(crate) latency_profile: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct PruneOpts {
    /// Which channels a group keeps: l1 / l2 filter magnitude, random, or ls (needs --data):
    /// the least-squares removal cost on calibration images — channels are dropped greedily,
    /// each time the one whose loss the refit of the next layers absorbs best (ThiNet / He et
    /// al. 2017). The agents keep channels by it too (reinforce's policy starts from it).
    /// auto: ls with --data and --allocation uniform, l1 otherwise
    #[arg(long, default_value = "auto", value_parser = ["auto", "l1", "l2", "random", "ls"])]
    pub(crate) method: String,
    /// uniform: same keep ratio in every group; global: one threshold over normalised importance
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "global"])]
    pub(crate) allocation: String,
    /// Keep a multiple of N channels in every group (runtimes' kernels are much faster on such
    /// channel counts; 1 prunes most finely). auto: the multiple measured to be free on the
    /// deploy runtime (its latency staircase; from --latency-profile when given). Default:
    /// auto with --target-latency, else 8
    #[arg(long, value_name = "N|auto", value_parser = parse_round_to)]
    pub(crate) round_to: Option<RoundTo>,
    /// Write the kept channels per group (JSON plan, re-applicable with `apply`)
    #[arg(long)]
    pub(crate) emit_plan: Option<PathBuf>,
    /// Write a JSON report (MACs/params before and after, per-group kept/total)
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Fail (exit 1) when the target cannot be reached
    #[arg(long)]
    pub(crate) strict: bool,
    /// Seed for --method random
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) shapes: ShapeArgs,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Fine-tune a model on burn (labels and/or distillation from a teacher) and write it back
    /// to ONNX
    Finetune(Box<FinetuneArgs>),
    /// Print a summary of a model: ops, inputs/outputs, params, MACs, top layers
    Inspect {
        model: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// Number of top layers by MACs to list
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// List the channel groups (what pruning can remove together)
        #[arg(long)]
        groups: bool,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Output-preserving simplification: constant folding, Identity/Dropout removal,
    /// dead-code elimination, optional BatchNorm folding
    Simplify {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Fold BatchNormalization into the preceding Conv
        #[arg(long)]
        fold_bn: bool,
        /// Where tensor data goes: keep (as in the input), all (>= 1 KiB to OUT.data), none
        #[arg(long, default_value = "keep", value_parser = ["keep", "all", "none"])]
        external_data: String,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Run two models on the same seeded random inputs (tract) and print how far their outputs
    /// are apart: max |a-b| and max |a-b| / max(max|a|, 1)
    Compare(CompareArgs),
    /// Lossless: remove exactly the channels that provably contribute nothing (all-zero filters
    /// through zero-preserving ops, BatchNorm with gamma = beta = 0, zero residual channels...)
    Shrink {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        emit_plan: Option<PathBuf>,
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Evaluate a model on a dataset: top-1/top-5 with labels, fidelity to --reference,
    /// throughput
    Eval(EvalArgs),
    /// Measure a latency profile of a model on this machine (each Conv/ConvTranspose/Gemm alone
    /// on a grid of kept channel counts, and the whole model) for `--latency-profile`: run it
    /// on the device, prune against it on the build machine
    Profile(ProfileArgs),
    /// Re-apply a pruning plan (--emit-plan) to a model
    Apply {
        input: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Check a pruned model: run the original with the plan's removed channels zeroed at every
    /// consumer and the pruned model on the same inputs; print the max difference
    Verify {
        original: PathBuf,
        pruned: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        runs: u64,
        /// Fail (exit 1) above this relative difference
        #[arg(long, default_value_t = 1e-5)]
        tolerance: f64,
        #[arg(long)]
        json: bool,
        /// Use real samples instead of random inputs (same formats as `eval --data`)
        #[arg(long)]
        data: Option<PathBuf>,
        /// With --data: per-channel mean, e.g. 0.485,0.456,0.406
        #[arg(long, value_delimiter = ',')]
        mean: Option<Vec<f32>>,
        /// With --data: per-channel std, e.g. 0.229,0.224,0.225
        #[arg(long, value_delimiter = ',')]
        std: Option<Vec<f32>>,
        /// With --data: number of samples to compare
        #[arg(long, default_value_t = 256)]
        limit: usize,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
}

#[derive(Args)]
pub(crate) struct CompareArgs {
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Number of random input sets
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: u64,
    /// Fail (exit 1) when the relative difference exceeds this
    #[arg(long, default_value_t = 1e-5)]
    pub(crate) tolerance: f64,
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) shapes: ShapeArgs,
}

#[derive(Args)]
pub(crate) struct DataArgs {
    /// Data: .npy/.npz (x, y), MNIST idx3 file, ImageFolder directory or .tar
    #[arg(long)]
    pub(crate) data: PathBuf,
    #[command(flatten)]
    pub(crate) opts: DataOpts,
    /// Seed of the calibration/validation split
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Size of the calibration subset (never overlaps the validation subset)
    #[arg(long, default_value_t = 0)]
    pub(crate) calib_size: usize,
    /// Evaluate on a validation subset of N samples (seeded, disjoint from calibration)
    #[arg(long)]
    pub(crate) val_size: Option<usize>,
}

/// How samples are read and preprocessed (shared by every command taking --data).
#[derive(Args)]
pub(crate) struct DataOpts {
    /// Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406
    #[arg(long, value_delimiter = ',')]
    pub(crate) mean: Option<Vec<f32>>,
    /// Per-channel std divided by after scaling, e.g. 0.229,0.224,0.225
    #[arg(long, value_delimiter = ',')]
    pub(crate) std: Option<Vec<f32>>,
    /// Layout of array data
    #[arg(long, default_value = "auto", value_parser = ["auto", "nhwc", "nchw"])]
    pub(crate) layout: String,
    /// Keep uint8 pixel values in 0..255 (default: scale to [0, 1])
    #[arg(long)]
    pub(crate) no_scale: bool,
    /// Folder images: resize the shorter side to N before the centre crop to the model's size
    #[arg(long)]
    pub(crate) resize: Option<u32>,
    /// Folder images: centre crop to N×N (after --resize), then resize to the model's size
    /// (default: crop to the model's size directly)
    #[arg(long)]
    pub(crate) center_crop: Option<u32>,
    /// Use only the first N samples
    #[arg(long)]
    pub(crate) limit: Option<usize>,
}

impl DataOpts {
    pub(crate) fn options(&self) -> onnx_prune::data::DataOptions {
        use onnx_prune::data::{DataOptions, Layout};
        DataOptions {
            layout: match self.layout.as_str() {
                "nhwc" => Layout::Nhwc,
                "nchw" => Layout::Nchw,
                _ => Layout::Auto,
            },
            scale: !self.no_scale,
            mean: self.mean.clone(),
            std: self.std.clone(),
            resize: self.resize,
            center_crop: self.center_crop,
            limit: self.limit,
        }
    }
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Original model: also report top-1 agreement, mean KL divergence and relative MSE to it
    #[arg(long)]
    pub(crate) reference: Option<PathBuf>,
    /// Ignore labels even when the data has them: fidelity to --reference only
    #[arg(long)]
    pub(crate) label_free: bool,
    /// Batch size
    #[arg(long, default_value_t = 64)]
    pub(crate) batch: usize,
    /// Runtime: tract (pure Rust), ort (ONNX Runtime, found at run time), auto (ort if found)
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    pub(crate) runtime: String,
    /// Threads for ONNX Runtime (default: all cores)
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Also measure latency: median of N timed runs (after warm-up) at batch 1 and at --batch
    #[arg(long, default_value_t = 0)]
    pub(crate) latency: usize,
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) shapes: ShapeArgs,
}

#[derive(Args)]
pub(crate) struct ProfileArgs {
    pub(crate) model: PathBuf,
    /// The profile (JSON; format in docs/latency.md)
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// Runtime to measure: ort, tract, auto (ort if found)
    #[arg(long, default_value = "auto", value_parser = ["ort", "tract", "auto"])]
    pub(crate) runtime: String,
    /// Threads the runtime runs with
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Batch size
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Grid points per channel space (each layer between two prunable spaces is measured at
    /// up to POINTS² channel counts)
    #[arg(long, default_value_t = 5)]
    pub(crate) points: usize,
    /// Channel multiple of the grid (the --round-to the plans will use). auto: measure the
    /// staircase first, choose the multiple from it and store both in the profile (the main
    /// job's --round-to auto, its default with --target-latency, then takes it from there)
    #[arg(long, default_value = "auto", value_name = "N|auto", value_parser = parse_round_to)]
    pub(crate) round_to: RoundTo,
    /// Timed runs per point (after two warm-up runs); the median is kept
    #[arg(long, default_value_t = 7)]
    pub(crate) runs: usize,
    #[command(flatten)]
    pub(crate) shapes: ShapeArgs,
}

fn parse_round_to(s: &str) -> Result<RoundTo, String> {
    RoundTo::parse(s).ok_or_else(|| format!("'{s}' is neither a positive integer nor auto"))
}

#[derive(Args)]
pub(crate) struct ShapeArgs {
    /// Fix an input's shape, e.g. input=1x3x224x224 (repeatable). Unnamed batch dims default to 1
    #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
    pub(crate) input_shape: Vec<(String, Vec<i64>)>,
}

impl ShapeArgs {
    pub(crate) fn map(&self) -> HashMap<String, Vec<i64>> {
        self.input_shape.iter().cloned().collect()
    }
}

/// `--recover`: ls, bn, none or ft:STEPS (STEPS ≥ 1).
pub(crate) fn parse_recover(s: &str) -> std::result::Result<String, String> {
    match s {
        "ls" | "bn" | "none" => Ok(s.to_string()),
        _ => match s.strip_prefix("ft:").map(str::parse::<usize>) {
            Some(Ok(n)) if n >= 1 => Ok(s.to_string()),
            _ => Err(format!(
                "'{s}': expected ls, bn, none or ft:STEPS (e.g. ft:20)"
            )),
        },
    }
}

/// `--search-recover`: 0 for `fast`, N for `seq:N`.
pub(crate) fn parse_search_recover(s: &str) -> std::result::Result<usize, String> {
    match s {
        "fast" => Ok(0),
        _ => match s.strip_prefix("seq:").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(n),
            _ => Err(format!(
                "'{s}': expected fast or seq:N with N > 0 calibration images (e.g. seq:128)"
            )),
        },
    }
}
