//! The `onnx-prune` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use onnx_prune::analysis::{self, parse_input_shape, ShapeMode};
use onnx_prune::ir::{Dim, Model, ValueDef};
use onnx_prune::onnx::{self, ExternalData, SaveOptions};
use onnx_prune::report::group_digits;
use onnx_prune::rewrite::{self, PassOptions};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    prune: PruneArgs,
}

/// The top-level form: prune IN to a MAC budget.
#[derive(Args)]
struct PruneArgs {
    /// Input model
    input: Option<PathBuf>,
    /// Output model
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Fraction of the input's MACs the output may keep (e.g. 0.5)
    #[arg(long)]
    target_flops: Option<f64>,
    /// Calibration/validation data (.npy/.npz, MNIST idx, ImageFolder dir/.tar): enables the
    /// reinforcement-learning search (--agent), recovery (--recover) and an accuracy/fidelity
    /// report
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    data_opts: DataOpts,
    /// With --data: recovery after pruning: ls (least-squares reconstruction of the layers
    /// reading pruned channels), bn (BatchNorm re-calibration / per-channel moment matching
    /// where BN is folded), ft:STEPS (ls, then STEPS steps of fine-tuning on the samples not
    /// held out for validation, with labels plus distillation from the original, as PuRL's
    /// short retraining; used for every candidate of the search too; training flags as for
    /// `finetune`), none.
    /// Default: ls with --data, none without
    #[arg(long, value_parser = parse_recover)]
    recover: Option<String>,
    /// With --data: calibration samples for recovery
    #[arg(long, default_value_t = 1000)]
    calib_size: usize,
    /// With --data: validation samples (disjoint from calibration) for the accuracy/fidelity
    /// report; 0 skips it
    #[arg(long, default_value_t = 1000)]
    val_size: usize,
    /// With --data: ignore labels; the search is rewarded by fidelity to the original's outputs,
    /// 1/(1 + relative MSE), and the report gives fidelity only
    #[arg(long)]
    label_free: bool,
    /// With --data: the search agent. ddpg (default; measured best): AMC's actor-critic (a
    /// keep ratio per group); dqn: PuRL (magnitude thresholds α·σ, dense rewards);
    /// reinforce: Huang et al. 2018 (a policy per group samples which filters to keep); none:
    /// no search, the uniform/global --allocation by the channel criterion, then recovery
    #[arg(long, default_value = "ddpg", value_parser = ["ddpg", "dqn", "reinforce", "none"])]
    agent: String,
    /// With --data: search episodes (default: 100 for ddpg, 55 for dqn; for reinforce the
    /// number of policy updates, spread over the groups, default 10 per group)
    #[arg(long)]
    episodes: Option<usize>,
    /// With --agent ddpg|dqn|reinforce: what a candidate scores on the validation subset (the
    /// search's reward and the re-ranking). soft: mean softmax probability of the true label
    /// (on the scale of top-1, but smooth: it ranks plans more like the test set does); top1;
    /// fidelity: 1/(1 + relative MSE) to the original's outputs (what --label-free uses).
    /// auto: soft with labels, fidelity without
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "top1", "fidelity"])]
    reward: String,
    /// With --agent reinforce: accuracy-drop bound b of the reward (b − drop)/b·log(C/C_kept)
    #[arg(long, default_value_t = 0.02)]
    drop_bound: f64,
    /// With --agent ddpg|dqn|reinforce: burn backend for the agent: auto (a GPU adapter when
    /// the build has the `wgpu` feature and one answers, else CPU), cpu, wgpu (any adapter,
    /// CPU Vulkan drivers included)
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "wgpu"])]
    agent_device: String,
    /// With --agent ddpg|dqn|reinforce: the N best plans of the search and the unsearched plan
    /// (--allocation by --method) are recovered in full and scored on the validation subset;
    /// the best is written (0: take the search's best as it is)
    #[arg(long, default_value_t = 3)]
    rerank: usize,
    /// With --agent dqn: random exploration draws α within this many actions of the α that
    /// keeps the group's fair share of the budget, and the first episode plays that α
    /// throughout; 12 explores all 12 α uniformly, as PuRL does
    #[arg(long, default_value_t = 3)]
    dqn_spread: usize,
    /// With --agent ddpg|dqn|reinforce: how each candidate is recovered before it is scored.
    /// fast: least squares in one round on the original's activations, from statistics of up
    /// to 512 calibration images gathered once (a solve per candidate); seq:N: level by level
    /// on the candidate's own activations from N calibration images, as the final recovery
    /// does (one forward run per level; up to 64 positions per image below 512 images; from
    /// 512 images on the same images, a plan scores exactly what the final recovery gives it)
    #[arg(long, default_value = "fast", value_parser = parse_search_recover)]
    search_recover: usize,
    /// With --agent reinforce: masks sampled per policy update
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// With --data: stop the search after this long (e.g. 10m, 90s)
    #[arg(long, value_parser = parse_duration)]
    time_budget: Option<std::time::Duration>,
    /// With --data: runtime for recovery and evaluation: tract, ort, auto (ort if found)
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    runtime: String,
    /// With --recover ls: ridge strength (relative to the mean diagonal of AᵀA)
    #[arg(long, default_value_t = 1e-3)]
    ridge: f64,
    /// With --recover ls: fit every layer on the original model's activations in one round
    /// (ThiNet-style, fastest) instead of level by level on the pruned model's own (default)
    #[arg(long)]
    recover_fast: bool,
    /// With --data: fine-tune the pruned model for E epochs on the data not held out for
    /// validation (burn; labels plus distillation from the original, or distillation only
    /// with --label-free); training flags as for `finetune`
    #[arg(long, default_value_t = 0.0)]
    finetune_epochs: f64,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    opts: PruneOpts,
}

#[derive(Args)]
struct PruneOpts {
    /// Which channels a group keeps: l1 / l2 filter magnitude, random, or ls (needs --data):
    /// the least-squares removal cost on calibration images — channels are dropped greedily,
    /// each time the one whose loss the refit of the next layers absorbs best (ThiNet / He et
    /// al. 2017). The agents keep channels by it too (reinforce's policy starts from it).
    /// auto: ls with --data and --allocation uniform, l1 otherwise
    #[arg(long, default_value = "auto", value_parser = ["auto", "l1", "l2", "random", "ls"])]
    method: String,
    /// uniform: same keep ratio in every group; global: one threshold over normalised importance
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "global"])]
    allocation: String,
    /// Keep a multiple of N channels in every group (8 by default: runtimes' kernels are much
    /// faster on such channel counts; 1 prunes most finely)
    #[arg(long, default_value_t = 8)]
    round_to: usize,
    /// Write the kept channels per group (JSON plan, re-applicable with `apply`)
    #[arg(long)]
    emit_plan: Option<PathBuf>,
    /// Write a JSON report (MACs/params before and after, per-group kept/total)
    #[arg(long)]
    report: Option<PathBuf>,
    /// Fail (exit 1) when the target cannot be reached
    #[arg(long)]
    strict: bool,
    /// Seed for --method random
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    shapes: ShapeArgs,
}

/// Training hyper-parameters (the `finetune` command and `--finetune-epochs`).
#[derive(Args, Clone)]
struct TrainArgs {
    /// Optimiser: sgd (momentum 0.9, Nesterov) or adam
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adam"])]
    optimizer: String,
    /// Peak learning rate (cosine decay to 0 after the warm-up). BatchNorm-folded networks
    /// (most exports) diverge at the rates used to train with BatchNorm: measured on the
    /// CIFAR ResNet-20, SGD at 3e-3 diverged and 1e-3 was stable
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, default_value_t = 5.0)]
    clip_grad: f64,
    /// Linear warm-up, as a fraction of the steps
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    /// L2 weight decay on convolution and matrix weights
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Images per step
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Weight w of distillation: loss = (1−w)·cross-entropy + w·T²·KL(teacher ‖ model).
    /// Default: 0.5 with labels and a teacher, 1 without labels, 0 without a teacher
    #[arg(long)]
    kd_weight: Option<f64>,
    /// Distillation temperature T
    #[arg(long, default_value_t = 4.0)]
    temperature: f64,
    /// No random crop (4-pixel padding) and horizontal flip
    #[arg(long)]
    no_augment: bool,
    /// Save a resumable checkpoint (OUT.ckpt.onnx + OUT.ckpt.state) every N steps (0: only
    /// when interrupted)
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// burn backend for training: auto (a GPU adapter when the build has `wgpu` and one
    /// answers, else CPU), cpu, wgpu
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "wgpu"])]
    train_device: String,
}

#[derive(Args)]
struct FinetuneArgs {
    /// Model to train (e.g. a pruned model)
    model: PathBuf,
    /// Output model (written atomically; the input is never modified)
    #[arg(short, long)]
    output: PathBuf,
    /// Training data (.npy/.npz, MNIST idx, ImageFolder dir/.tar); --val-size samples are held
    /// out for the before/after report
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    data_opts: DataOpts,
    /// Teacher for knowledge distillation (e.g. the unpruned original)
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Epochs over the training samples (default 1)
    #[arg(long, conflicts_with = "steps")]
    epochs: Option<f64>,
    /// Optimisation steps (instead of --epochs)
    #[arg(long)]
    steps: Option<usize>,
    /// Ignore labels: distillation from --teacher only
    #[arg(long)]
    label_free: bool,
    /// Held-out samples for the before/after report (0: none)
    #[arg(long, default_value_t = 1000)]
    val_size: usize,
    /// Seed (data split, batch order, augmentation)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the checkpoint beside OUT (OUT.ckpt.onnx + OUT.ckpt.state)
    #[arg(long)]
    resume: bool,
    /// Runtime for the before/after evaluation
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    runtime: String,
    /// Write a JSON report
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Cmd {
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
struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of random input sets
    #[arg(long, default_value_t = 3)]
    runs: u64,
    /// Fail (exit 1) when the relative difference exceeds this
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Args)]
struct DataArgs {
    /// Data: .npy/.npz (x, y), MNIST idx3 file, ImageFolder directory or .tar
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    opts: DataOpts,
    /// Seed of the calibration/validation split
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Size of the calibration subset (never overlaps the validation subset)
    #[arg(long, default_value_t = 0)]
    calib_size: usize,
    /// Evaluate on a validation subset of N samples (seeded, disjoint from calibration)
    #[arg(long)]
    val_size: Option<usize>,
}

/// How samples are read and preprocessed (shared by every command taking --data).
#[derive(Args)]
struct DataOpts {
    /// Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel std divided by after scaling, e.g. 0.229,0.224,0.225
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Layout of array data
    #[arg(long, default_value = "auto", value_parser = ["auto", "nhwc", "nchw"])]
    layout: String,
    /// Keep uint8 pixel values in 0..255 (default: scale to [0, 1])
    #[arg(long)]
    no_scale: bool,
    /// Folder images: resize the shorter side to N before the centre crop to the model's size
    #[arg(long)]
    resize: Option<u32>,
    /// Folder images: centre crop to N×N (after --resize), then resize to the model's size
    /// (default: crop to the model's size directly)
    #[arg(long)]
    center_crop: Option<u32>,
    /// Use only the first N samples
    #[arg(long)]
    limit: Option<usize>,
}

impl DataOpts {
    fn options(&self) -> onnx_prune::eval::data::DataOptions {
        use onnx_prune::eval::data::{DataOptions, Layout};
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
struct EvalArgs {
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Original model: also report top-1 agreement, mean KL divergence and relative MSE to it
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Ignore labels even when the data has them: fidelity to --reference only
    #[arg(long)]
    label_free: bool,
    /// Batch size
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Runtime: tract (pure Rust), ort (ONNX Runtime, found at run time), auto (ort if found)
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    runtime: String,
    /// Threads for ONNX Runtime (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Also measure latency: median of N timed runs (after warm-up) at batch 1 and at --batch
    #[arg(long, default_value_t = 0)]
    latency: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Args)]
struct ShapeArgs {
    /// Fix an input's shape, e.g. input=1x3x224x224 (repeatable). Unnamed batch dims default to 1
    #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
    input_shape: Vec<(String, Vec<i64>)>,
}

impl ShapeArgs {
    fn map(&self) -> HashMap<String, Vec<i64>> {
        self.input_shape.iter().cloned().collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ToleranceExceeded>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Some(Cmd::Inspect {
            model,
            json,
            top,
            groups,
            shapes,
        }) => inspect(&model, json, top, groups, &shapes.map()),
        Some(Cmd::Simplify {
            input,
            output,
            fold_bn,
            external_data,
            shapes,
        }) => simplify(&input, &output, fold_bn, &external_data, &shapes.map()),
        Some(Cmd::Compare(c)) => compare(c),
        Some(Cmd::Eval(e)) => eval_cmd(e),
        Some(Cmd::Finetune(f)) => finetune_cmd(*f),
        Some(Cmd::Shrink {
            input,
            output,
            emit_plan,
            report,
            shapes,
        }) => shrink(
            &input,
            &output,
            emit_plan.as_deref(),
            report.as_deref(),
            &shapes.map(),
        ),
        Some(Cmd::Apply {
            input,
            plan,
            output,
            report,
            shapes,
        }) => apply(&input, &plan, &output, report.as_deref(), &shapes.map()),
        Some(Cmd::Verify {
            original,
            pruned,
            plan,
            seed,
            runs,
            tolerance,
            json,
            data,
            mean,
            std,
            limit,
            shapes,
        }) => {
            let data = data.map(|d| {
                (
                    d,
                    onnx_prune::eval::data::DataOptions {
                        mean,
                        std,
                        limit: Some(limit),
                        ..Default::default()
                    },
                )
            });
            verify(
                &original,
                &pruned,
                &plan,
                seed,
                runs,
                tolerance,
                json,
                data,
                &shapes.map(),
            )
        }
        None => {
            let p = cli.prune;
            let Some(input) = p.input.clone() else {
                bail!("no input model given; see `onnx-prune --help`");
            };
            if p.output.is_none() {
                bail!("missing -o OUT.onnx");
            }
            match p.target_flops {
                None => bail!("missing --target-flops R (fraction of MACs to keep, e.g. 0.5)"),
                Some(r) if !(r > 0.0 && r <= 1.0) => {
                    bail!("--target-flops must be in (0, 1], got {r}")
                }
                Some(_) => {}
            }
            if p.finetune_epochs > 0.0 && p.data.is_none() {
                bail!("--finetune-epochs needs training data: add --data PATH");
            }
            if p.finetune_epochs < 0.0 || !p.finetune_epochs.is_finite() {
                bail!("--finetune-epochs must be a non-negative number");
            }
            if p.opts.method == "ls" && p.data.is_none() {
                bail!("--method ls ranks channels on calibration images: add --data PATH");
            }
            if p.opts.method == "ls" && p.opts.allocation == "global" {
                bail!("--method ls orders channels within each group only: use --allocation uniform (or --method l1|l2 for a global threshold)");
            }
            if p.recover.as_deref().is_some_and(|r| r != "none") && p.data.is_none() {
                bail!("--recover needs calibration data: add --data PATH");
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
            if p.data.is_none() {
                eprintln!("note: no --data: channels are chosen by the data-free method (--method, --allocation); give --data for the reinforcement-learning search and recovery");
            }
            prune(
                &input,
                p.output.as_ref().unwrap(),
                p.target_flops.unwrap(),
                &p,
            )
        }
    }
}

fn dims_str(d: &[Dim]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn inspect(
    path: &Path,
    as_json: bool,
    top: usize,
    show_groups: bool,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let model = onnx::load(path)?;
    let a = analysis::infer(&model, ShapeMode::Bound, shapes)
        .with_context(|| path.display().to_string())?;
    let cost = analysis::cost(&model, &a).map_err(|e| e.in_file(path))?;
    let ch = analysis::channels::analyse(&model, &a);
    let groups = group_rows(&model, &ch, &cost);
    let g = &model.graph;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n) in g.live_nodes() {
        let key = if n.is_standard() {
            n.op_type.clone()
        } else {
            format!("{}::{}", n.domain, n.op_type)
        };
        *ops.entry(key).or_default() += 1;
    }
    let mut unknown: Vec<String> = a
        .unknown
        .iter()
        .map(|&id| {
            let n = g.node(id);
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            }
        })
        .collect();
    unknown.sort();
    unknown.dedup();
    let mut ranked = cost.per_node.clone();
    ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    ranked.truncate(top);
    let io = |v: onnx_prune::ir::ValueId| {
        let val = g.value(v);
        let dtype = val
            .declared_elem()
            .map(|d| d.name())
            .unwrap_or_else(|| "?".into());
        let declared = val
            .declared_shape()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        let analysed = a
            .fact(v)
            .shape
            .as_deref()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        (val.name.clone(), dtype, declared, analysed)
    };
    let inputs: Vec<_> = g
        .inputs
        .iter()
        .filter(|&&v| matches!(g.value(v).def, ValueDef::Input))
        .map(|&v| io(v))
        .collect();
    let outputs: Vec<_> = g.outputs.iter().map(|&v| io(v)).collect();
    let nodes = g.live_nodes().count();
    let opset = model.opset();
    let producer = producer(&model);
    if as_json {
        let j = json!({
            "file": path.display().to_string(),
            "ir_version": model.ir_version,
            "opset": opset,
            "producer": producer,
            "nodes": nodes,
            "params": cost.params,
            "macs": cost.macs,
            "ops": ops,
            "unknown_ops": unknown,
            "inputs": inputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "groups": groups.iter().map(|r| json!({"id": r.id, "key": r.key, "channels": r.channels, "prunable": r.prunable,
                "members": r.members, "macs": r.macs, "declined": r.declined})).collect::<Vec<_>>(),
            "top_layers": ranked.iter().map(|&(id, m)| {
                let n = g.node(id);
                json!({"name": n.name, "op": n.op_type, "macs": m,
                       "output_shape": n.outputs.first().copied().flatten().and_then(|v| a.fact(v).shape.as_deref().map(dims_str))})
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model:    {}", path.display());
    println!(
        "format:   IR {}, opset {}{}",
        model.ir_version,
        opset,
        producer
            .map(|p| format!(", produced by {p}"))
            .unwrap_or_default()
    );
    for (n, t, d, s) in &inputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("input:    {n}  {t} {d}{note}");
    }
    for (n, t, d, s) in &outputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("output:   {n}  {t} {d}{note}");
    }
    println!("nodes:    {nodes}");
    println!("params:   {}", group_digits(cost.params));
    println!("MACs:     {}", group_digits(cost.macs));
    let hist: Vec<String> = {
        let mut v: Vec<_> = ops.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(k, c)| format!("{k} {c}")).collect()
    };
    println!("ops:      {}", hist.join(", "));
    if !unknown.is_empty() {
        println!(
            "unknown:  {} (carried unchanged; their MACs count as 0)",
            unknown.join(", ")
        );
    }
    let prunable = groups.iter().filter(|r| r.declined.is_none()).count();
    println!(
        "groups:   {} channel groups, {} prunable{}",
        groups.len(),
        prunable,
        if show_groups {
            ""
        } else {
            " (--groups lists them)"
        }
    );
    if show_groups {
        for r in &groups {
            let state = match &r.declined {
                None => format!("prunable {}/{}", r.prunable, r.channels),
                Some(why) => format!("declined: {why}"),
            };
            println!(
                "  g{:<3} {:<46} {:>5} ch  {:>14} MACs  {} members  {}",
                r.id,
                r.key,
                r.channels,
                group_digits(r.macs),
                r.members.len(),
                state
            );
        }
    }
    if !ranked.is_empty() {
        println!("top layers by MACs:");
        for (i, &(id, m)) in ranked.iter().enumerate() {
            let n = g.node(id);
            let shape = n
                .outputs
                .first()
                .copied()
                .flatten()
                .and_then(|v| a.fact(v).shape.as_deref().map(dims_str))
                .unwrap_or_default();
            let pct = if cost.macs > 0 {
                100.0 * m as f64 / cost.macs as f64
            } else {
                0.0
            };
            println!(
                "  {:>2}. {:<40} {:<14} {:<18} {:>15} {:>5.1}%",
                i + 1,
                n.name,
                n.op_type,
                shape,
                group_digits(m),
                pct
            );
        }
    }
    Ok(())
}

fn producer(model: &Model) -> Option<String> {
    onnx::producer(model)
}

fn simplify(
    input: &Path,
    output: &Path,
    fold_bn: bool,
    external: &str,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let mut model = onnx::load(input)?;
    rewrite::set_input_shapes(&mut model, shapes)?;
    let rep =
        rewrite::simplify(&mut model, &PassOptions { fold_bn }).map_err(|e| e.in_file(input))?;
    let external = match external {
        "all" => ExternalData::All,
        "none" => ExternalData::None,
        _ => ExternalData::Keep,
    };
    let protect = input_files(input);
    onnx::save(&model, output, &SaveOptions { external }, &protect)?;
    let detail: Vec<String> = rep
        .rewrites
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    eprintln!(
        "simplified {} -> {}: {} -> {} nodes in {} round(s){}",
        input.display(),
        output.display(),
        rep.nodes_before,
        rep.nodes_after,
        rep.rounds,
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        }
    );
    Ok(())
}

/// The input model and its external data files: never to be overwritten.
fn input_files(input: &Path) -> Vec<PathBuf> {
    let mut v = vec![input.to_path_buf()];
    if let Some(name) = input.file_name() {
        v.push(input.with_file_name(format!("{}.data", name.to_string_lossy())));
    }
    v
}

#[derive(Debug)]
struct ToleranceExceeded(String);
impl std::fmt::Display for ToleranceExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ToleranceExceeded {}

#[cfg(feature = "tract")]
fn compare(c: CompareArgs) -> Result<()> {
    use onnx_prune::eval;
    let ma = onnx::load(&c.a)?;
    let shapes = eval::input_shapes(&ma, &c.shapes.map()).map_err(|e| e.in_file(&c.a))?;
    let worst = eval::tract_rt::compare_models(&c.a, &c.b, &shapes, c.seed, c.runs)?;
    if c.json {
        println!(
            "{}",
            json!({"runtime": "tract", "runs": c.runs, "max_abs_diff": worst.max_abs, "max_rel_diff": worst.max_rel})
        );
    } else {
        println!(
            "tract, {} random input set(s): max |a-b| = {:.3e}, max relative = {:.3e}",
            c.runs, worst.max_abs, worst.max_rel
        );
    }
    if worst.max_rel > c.tolerance {
        return Err(ToleranceExceeded(format!(
            "outputs differ: relative {:.3e} > tolerance {:.1e}",
            worst.max_rel, c.tolerance
        ))
        .into());
    }
    Ok(())
}

#[cfg(not(feature = "tract"))]
fn compare(_: CompareArgs) -> Result<()> {
    bail!("this build has no runtime: rebuild with the `tract` feature")
}

struct GroupRow {
    id: usize,
    key: String,
    channels: usize,
    prunable: usize,
    members: Vec<String>,
    macs: u64,
    declined: Option<String>,
}

/// One row per channel group: members (producers and consumers) and the MACs attributable to
/// it (MACs of the layers that produce or consume its channels).
fn group_rows(
    model: &Model,
    ch: &onnx_prune::analysis::channels::ChannelAnalysis,
    cost: &analysis::CostReport,
) -> Vec<GroupRow> {
    let g = &model.graph;
    let macs_of: HashMap<_, _> = cost.per_node.iter().copied().collect();
    ch.groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| !grp.producers.is_empty() || grp.declined.is_none())
        .map(|(i, grp)| {
            let members = grp.members();
            GroupRow {
                id: i,
                key: grp.key.clone(),
                channels: grp.channels(),
                prunable: grp
                    .atoms
                    .iter()
                    .filter(|&&a| ch.atoms[a].blocked.is_none())
                    .count(),
                macs: members
                    .iter()
                    .map(|n| macs_of.get(n).copied().unwrap_or(0))
                    .sum(),
                members: members.iter().map(|&n| g.node(n).name.clone()).collect(),
                declined: grp.declined.clone(),
            }
        })
        .collect()
}

fn load_pruner(
    input: &Path,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<(Model, onnx_prune::search::datafree::Pruner)> {
    let model = onnx::load(input)?;
    let p =
        onnx_prune::search::datafree::Pruner::new(&model, shapes).map_err(|e| e.in_file(input))?;
    Ok((model, p))
}

fn prune(input: &Path, output: &Path, ratio: f64, args: &PruneArgs) -> Result<()> {
    use onnx_prune::search::datafree::{Allocation, Method};
    let o = &args.opts;
    let (_, p) = load_pruner(input, &o.shapes.map())?;
    let method = match o.method.as_str() {
        "l2" => Method::L2,
        "random" => Method::Random,
        _ => Method::L1,
    };
    let ls = o.method == "ls"
        || (o.method == "auto" && args.data.is_some() && o.allocation == "uniform");
    let method_name = match o.method.as_str() {
        "auto" if ls => "ls",
        "auto" => "l1",
        m => m,
    };
    let alloc = if o.allocation == "global" {
        Allocation::Global
    } else {
        Allocation::Uniform
    };
    let target = (p.base_macs as f64 * ratio).floor() as u64;
    let mut extra = serde_json::Map::new();
    let ctx = match &args.data {
        Some(d) => Some(DataCtx::load(&p, d, args)?),
        None => None,
    };
    let mut curve = None;
    // With ls, the statistics it was computed from (the search's recovery reuses them).
    let (imp, fast) = match &ctx {
        Some(c) if ls => {
            let (imp, fast) = ls_importance(&p, c)?;
            (imp, Some(fast))
        }
        _ => (p.importance(method, o.seed), None),
    };
    let data_free = || p.allocate(target, &imp, alloc, o.round_to);
    // The plan the search competes against (and its label in the re-ranking).
    let baseline = format!(
        "{}-{method_name} ({})",
        o.allocation,
        if ls { "no search" } else { "data-free" }
    );
    let (keep, pruned) = match &ctx {
        Some(c) if args.agent != "none" => {
            let df = data_free();
            let out = search(
                &p,
                c,
                ratio,
                args,
                (&df, &baseline),
                (&imp, fast),
                &mut extra,
            )?;
            curve = Some(out.curve.clone());
            // The search's best plans (by its fast proxy) and the unsearched plan, re-ranked
            // by full recovery on the whole validation subset.
            // (label, search score, plan, whether it is the unsearched plan)
            let mut cands: Vec<Cand> = out
                .candidates
                .iter()
                .take(args.rerank.max(1))
                .enumerate()
                .map(|(i, (v, k))| {
                    let same = *k == df;
                    let name = format!("{} #{}", out.agent.name(), i + 1);
                    let name = if same {
                        // The agent found the unsearched plan itself: say so.
                        format!("{name} = {baseline}")
                    } else {
                        name
                    };
                    (name, Some(*v), k.clone(), same)
                })
                .collect();
            if args.rerank > 0 && c.val.n > 0 {
                if !cands.iter().any(|x| x.3) {
                    cands.push((baseline.clone(), None, df, true));
                }
            } else {
                cands.truncate(1);
            }
            let (keep, m, rep, lp) = if cands.len() > 1 {
                let (keep, m, rep, lp) = rerank(&p, c, args, cands, &mut extra)?;
                (keep, m, rep, Some(lp))
            } else {
                let keep = cands.remove(0).2;
                let (m, rep) = recover_model(&p, &keep, c, args)?;
                (keep, m, rep, None)
            };
            measure(&p, &m, &rep, c, args, lp, &mut extra)?;
            (keep, m)
        }
        Some(c) => {
            let keep = data_free();
            let (m, rep) = recover_model(&p, &keep, c, args)?;
            measure(&p, &m, &rep, c, args, None, &mut extra)?;
            (keep, m)
        }
        None => {
            let keep = data_free();
            let m = p.apply(&keep)?;
            (keep, m)
        }
    };
    let pruned = match &ctx {
        Some(c) if args.finetune_epochs > 0.0 => finetune_pruned(&p, pruned, c, args, &mut extra)?,
        _ => pruned,
    };
    let predicted = p.macs(&keep);
    finish_pruned(
        input,
        output,
        &p,
        &keep,
        &pruned,
        Some((ratio, target, predicted)),
        o.emit_plan.as_deref(),
        o.report.as_deref(),
        o.strict,
        extra,
        curve.as_deref(),
    )
}

/// `--method ls`: channels ranked by their least-squares removal cost on the calibration
/// images the search's recovery uses (the first 512), with the search's fit options; also
/// returns the statistics gathered, for the search's oracle.
fn ls_importance(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
) -> Result<(Vec<f64>, onnx_prune::search::recover::FastCache)> {
    use onnx_prune::search::{datafree::Method, env, recover};
    let t0 = std::time::Instant::now();
    let sc = c.calib.subset(&(0..c.calib.n.min(512)).collect::<Vec<_>>());
    let mut fast = recover::FastCache::new();
    let (imp, fell_back) = fast.ls_importance(
        p,
        &sc.x,
        sc.n,
        c.chw,
        &env::cached_fit_options(c.kind),
        &p.importance(Method::L1, 0),
    )?;
    eprintln!(
        "channels ranked by least-squares removal cost on {} calibration images in {:.1}s{}",
        sc.n,
        t0.elapsed().as_secs_f64(),
        if fell_back > 0 {
            format!(" ({fell_back} group(s) without a usable consumer ranked by L1)")
        } else {
            String::new()
        }
    );
    Ok((imp, fast))
}

/// The data of the main command: seeded disjoint calibration and validation subsets, and the
/// runtime that runs them.
struct DataCtx {
    calib: onnx_prune::eval::data::Dataset,
    val: onnx_prune::eval::data::Dataset,
    #[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
    kind: onnx_prune::eval::runtime::Kind,
    chw: (usize, usize, usize),
    /// With --finetune-epochs: every sample not in `val`.
    train: Option<onnx_prune::eval::data::Dataset>,
    /// The original model's outputs on `val` (computed once, for re-ranking and the report).
    original: std::cell::OnceCell<(Vec<f32>, usize)>,
    /// The original model as a burn network: the distillation teacher of `--recover ft:STEPS`
    /// (search candidates and recovered plans share it).
    teacher: std::cell::OnceCell<onnx_prune::learn::net::Net>,
}

impl DataCtx {
    /// The original model's outputs on the validation subset, and outputs per sample.
    #[cfg(any(feature = "tract", feature = "ort"))]
    fn original_logits(
        &self,
        p: &onnx_prune::search::datafree::Pruner,
    ) -> Result<&(Vec<f32>, usize)> {
        if self.original.get().is_none() {
            let tmp = onnx_prune::eval::TempDir::new("original")?;
            let l = onnx_prune::eval::runtime::logits(
                self.kind,
                &p.model,
                &tmp,
                "original.onnx",
                &self.val,
            )?;
            let _ = self.original.set(l);
        }
        Ok(self.original.get().unwrap())
    }

    /// The original model as a burn network on the inference device, built once.
    fn teacher(
        &self,
        p: &onnx_prune::search::datafree::Pruner,
    ) -> Result<&onnx_prune::learn::net::Net> {
        if self.teacher.get().is_none() {
            let dev = onnx_prune::learn::infer_device().0;
            let _ = self
                .teacher
                .set(onnx_prune::learn::net::Net::new(&p.model, &dev)?);
        }
        Ok(self.teacher.get().unwrap())
    }

    fn load(
        p: &onnx_prune::search::datafree::Pruner,
        data: &Path,
        args: &PruneArgs,
    ) -> Result<DataCtx> {
        use onnx_prune::eval::{self, runtime};
        let shapes = eval::input_shapes(&p.model, &p.shapes)?;
        let chw = match shapes.first().map(|s| s.as_slice()) {
            Some([_, c, h, w]) => (*c, *h, *w),
            _ => bail!("--data needs an image model with one input [N,C,H,W]"),
        };
        let ds = eval::data::load(data, chw, &args.data_opts.options())?;
        let (mut calib_n, mut val_n) = (args.calib_size, args.val_size);
        if calib_n + val_n > ds.n {
            // Small data: split what there is, calibration first.
            calib_n = calib_n.min(ds.n.div_ceil(2));
            val_n = val_n.min(ds.n - calib_n);
            eprintln!(
                "note: {} has {} samples: using {calib_n} for calibration and {val_n} for validation",
                data.display(),
                ds.n
            );
        }
        let (ci, vi) = eval::data::split(ds.n, args.opts.seed, calib_n, val_n)?;
        let (kind, line) = runtime::choose(&args.runtime)?;
        eprintln!("{line}");
        // Training samples (all but the validation subset) for --finetune-epochs and
        // --recover ft:STEPS.
        let train = (args.finetune_epochs > 0.0 || recover_ft_steps(args) > 0)
            .then(|| ds.subset(&eval::data::complement(ds.n, &vi)));
        Ok(DataCtx {
            calib: ds.subset(&ci),
            val: ds.subset(&vi),
            kind,
            chw,
            train,
            original: Default::default(),
            teacher: Default::default(),
        })
    }
}

/// `--recover`: ls, bn, none or ft:STEPS (STEPS ≥ 1).
fn parse_recover(s: &str) -> std::result::Result<String, String> {
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

/// A plan to re-rank: label, search score (none for the unsearched plan), plan, and whether it
/// is the unsearched plan (the agent may have found it too).
type Cand = (String, Option<f64>, Vec<bool>, bool);

/// `--reward` for this command: auto is soft with labels; fidelity without labels or with
/// --label-free, whatever was asked.
fn reward_of(
    args: &PruneArgs,
    val: &onnx_prune::eval::data::Dataset,
) -> onnx_prune::eval::metrics::Reward {
    use onnx_prune::eval::metrics::Reward;
    // "auto" is no reward's name: soft.
    Reward::parse(&args.reward)
        .unwrap_or(Reward::Soft)
        .with_labels(val.y.is_some() && !args.label_free)
}

/// `--search-recover`: 0 for `fast`, N for `seq:N`.
fn parse_search_recover(s: &str) -> std::result::Result<usize, String> {
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

/// The fine-tune steps of `--recover ft:STEPS` (0 for the other modes).
fn recover_ft_steps(args: &PruneArgs) -> usize {
    args.recover
        .as_deref()
        .and_then(|r| r.strip_prefix("ft:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// "10m", "90s", "1h", "1h30m" or plain seconds.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let v: f64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
        total += v * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(format!("bad duration '{s}' (use e.g. 90s, 10m, 1h)")),
        };
        num.clear();
    }
    if !num.is_empty() {
        total += num
            .parse::<f64>()
            .map_err(|_| format!("bad duration '{s}'"))?;
    }
    if total <= 0.0 {
        return Err(format!("duration '{s}' must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// The reinforcement-learning search (`--agent`); returns the best plan found.
#[cfg(any(feature = "tract", feature = "ort"))]
fn search(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
    ratio: f64,
    args: &PruneArgs,
    (data_free, baseline): (&[bool], &str),
    (select, fast): (&[f64], Option<onnx_prune::search::recover::FastCache>),
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<onnx_prune::search::rl::Outcome> {
    use onnx_prune::search::{env, rl};
    if let Some(b) = onnx_prune::learn::Backend::parse(&args.agent_device) {
        onnx_prune::learn::select(b);
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
        let o = train_options(&args.train, ft_steps, args.opts.seed, true, labels)?;
        oracle.set_finetune(o, train, Some(c.teacher(p)?));
    }
    if args.search_recover > 0 {
        oracle.set_sequential(args.search_recover, args.ridge, args.opts.seed);
    }
    oracle.set_reward(reward_of(args, &sv));
    let (_, line) = onnx_prune::learn::device();
    eprintln!(
        "search: agent {}, {} groups, {} episodes{}, reward = {} on {} validation images (original {:.4}) after least squares ({}){} on {} calibration images; {line}",
        agent.name(),
        e.steps(),
        episodes,
        args.time_budget
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
        time_budget: args.time_budget,
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
            let w = 24;
            let done = (ep.episode * w / total.max(1)).min(w);
            eprint!(
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(done),
                "-".repeat(w - done)
            );
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
fn search(
    _: &onnx_prune::search::datafree::Pruner,
    _: &DataCtx,
    _: f64,
    _: &PruneArgs,
    _: (&[bool], &str),
    _: (&[f64], Option<onnx_prune::search::recover::FastCache>),
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<onnx_prune::search::rl::Outcome> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// Surgery and recovery (`--recover`) of a plan on the calibration subset.
fn recover_model(
    p: &onnx_prune::search::datafree::Pruner,
    keep: &[bool],
    c: &DataCtx,
    args: &PruneArgs,
) -> Result<(Model, onnx_prune::search::recover::Report)> {
    use onnx_prune::search::recover::{self, Mode};
    let mut pruned = p.apply(keep)?;
    let ft_steps = recover_ft_steps(args);
    let mode = Mode::parse(args.recover.as_deref().unwrap_or("ls")).unwrap_or(Mode::Ls);
    let ro = recover::Options {
        mode,
        ridge: args.ridge,
        sequential: !args.recover_fast,
        seed: args.opts.seed,
        runtime: c.kind,
        ..Default::default()
    };
    let mut rep = recover::recover(p, keep, &mut pruned, &c.calib.x, c.calib.n, c.chw, &ro)?;
    print_recover(mode, &rep);
    if ft_steps > 0 {
        // ft:STEPS: least squares, then a short fine-tune on the training samples.
        let data = c.train.as_ref().expect("loaded with --recover ft");
        let labels = data.y.is_some() && !args.label_free;
        let o = train_options(&args.train, ft_steps, args.opts.seed, true, labels)?;
        let (m, r) = onnx_prune::learn::train::quick(&pruned, Some(c.teacher(p)?), data, &o)?;
        pruned = m;
        eprintln!(
            "recover ft: {} step(s) of {} from {} training sample(s), loss {:.4} -> {:.4} in {:.1}s",
            r.steps_done, o.batch, data.n, r.loss_first, r.loss_last, r.seconds
        );
        rep.mode = format!("ft:{ft_steps}");
        rep.seconds += r.seconds;
        rep.finetune = Some(recover::FinetuneInfo {
            steps: r.steps_done,
            batch: o.batch,
            samples: data.n,
            seconds: r.seconds,
            loss_first: r.loss_first,
            loss_last: r.loss_last,
        });
    }
    Ok((pruned, rep))
}

/// The line (and skipped layers) of a recovery.
fn print_recover(
    mode: onnx_prune::search::recover::Mode,
    rep: &onnx_prune::search::recover::Report,
) {
    if mode != onnx_prune::search::recover::Mode::None {
        let fit = match (rep.fit_error_before, rep.fit_error_after) {
            (Some(b), Some(a)) => format!(", relative fit error {b:.4} -> {a:.4}"),
            _ => String::new(),
        };
        eprintln!(
            "recover {}: {} sample(s), {} run(s) of the pruned model, {} layer(s) refit, {} BN re-calibrated, {} moment-matched, {} skipped{fit} in {:.1}s",
            mode.name(), rep.samples, rep.passes, rep.refit, rep.bn_recalibrated, rep.moment_matched, rep.skipped.len(), rep.seconds
        );
        for s in &rep.skipped {
            eprintln!("  not recovered: {s}");
        }
    }
}

/// The re-ranking's winner: plan, recovered model, its recovery report and its outputs on the
/// validation subset.
type Rerank = (
    Vec<bool>,
    Model,
    onnx_prune::search::recover::Report,
    Vec<f32>,
);

/// Re-ranks candidates (the search's best plans and the unsearched plan) by what is shipped:
/// each is recovered exactly as the final model is and scored on the whole validation subset;
/// the best wins. Returns it with its recovered model.
#[cfg(any(feature = "tract", feature = "ort"))]
fn rerank(
    p: &onnx_prune::search::datafree::Pruner,
    c: &DataCtx,
    args: &PruneArgs,
    cands: Vec<Cand>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Rerank> {
    use onnx_prune::eval::{self, runtime};
    let tmp = eval::TempDir::new("rerank")?;
    let (lo, k) = c.original_logits(p)?;
    let labels = c.val.y.as_deref().filter(|_| !args.label_free);
    let reward = reward_of(args, &c.val);
    let total = cands.len();
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
        let (m, rep) = recover_model(p, &keep, c, args)?;
        let (lp, _) = runtime::logits(c.kind, &m, &tmp, "candidate.onnx", &c.val)?;
        let v = reward.score(lo, &lp, *k, labels);
        eprintln!(
            "rerank {}/{total}: {source}{} -> {v:.4} ({}) on {} validation samples",
            i + 1,
            proxy
                .map(|x| format!(" (search score {x:.4})"))
                .unwrap_or_default(),
            reward.name(),
            c.val.n
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
fn rerank(
    _: &onnx_prune::search::datafree::Pruner,
    _: &DataCtx,
    _: &PruneArgs,
    _: Vec<Cand>,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Rerank> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// `--data` on the main command: top-1 (with labels) and fidelity to the original on the
/// validation subset of the recovered model, into the report fields.
#[cfg(any(feature = "tract", feature = "ort"))]
fn measure(
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
fn measure(
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

#[allow(clippy::too_many_arguments)]
fn finish_pruned(
    input: &Path,
    output: &Path,
    p: &onnx_prune::search::datafree::Pruner,
    keep: &[bool],
    pruned: &Model,
    target: Option<(f64, u64, u64)>,
    plan_path: Option<&Path>,
    report_path: Option<&Path>,
    strict: bool,
    extra: serde_json::Map<String, serde_json::Value>,
    curve: Option<&[onnx_prune::search::rl::Episode]>,
) -> Result<()> {
    use onnx_prune::report::{self, GroupLine};
    use onnx_prune::search::plan::Plan;
    let a = analysis::infer(pruned, ShapeMode::Bound, &p.shapes)?;
    let cost = analysis::cost(pruned, &a)?;
    let plan = Plan::from_keep(p, keep, &input.display().to_string());
    let protect = input_files(input);
    onnx::save(pruned, output, &SaveOptions::default(), &protect)?;
    if let Some(pp) = plan_path {
        write_json(pp, &serde_json::to_value(&plan)?)?;
    }
    let ratio_kept = cost.macs as f64 / p.base_macs.max(1) as f64;
    let groups: Vec<_> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let kept = g.atoms.iter().filter(|&&a| keep[a]).count();
            json!({"key": g.key, "channels": g.atoms.len(), "kept": kept, "declined": g.declined})
        })
        .collect();
    // The human table and the plots: per group, channels kept and the MACs of its members.
    let before: HashMap<_, u64> = analysis::cost(&p.model, &p.analysis)?
        .per_node
        .into_iter()
        .collect();
    let after: HashMap<_, u64> = cost.per_node.iter().copied().collect();
    let lines: Vec<GroupLine> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let members = g.members();
            let sum =
                |m: &HashMap<_, u64>| members.iter().map(|n| m.get(n).copied().unwrap_or(0)).sum();
            GroupLine {
                key: g.key.clone(),
                kept: g.atoms.iter().filter(|&&a| keep[a]).count(),
                channels: g.atoms.len(),
                macs_before: sum(&before),
                macs_after: sum(&after),
                declined: g.declined.clone(),
            }
        })
        .collect();
    let table = report::table(&lines);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("{table}");
    }
    if let Some(rp) = report_path {
        let side = |ext: &str| rp.with_extension(ext);
        onnx::write_atomic(&side("groups.md"), table.as_bytes())?;
        let ratios: Vec<f64> = lines
            .iter()
            .filter(|l| l.declined.is_none())
            .map(|l| l.kept as f64 / l.channels.max(1) as f64)
            .collect();
        let name = input
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        report::plot_keep_ratios(
            &side("keep.svg"),
            &format!("{name}: keep ratio per group"),
            &ratios,
        )?;
        if let Some(c) = curve {
            report::plot_curve(&side("curve.svg"), &format!("{name}: search"), c)?;
        }
    }
    if let Some(rp) = report_path {
        let r = json!({
            "input": input.display().to_string(), "output": output.display().to_string(),
            "macs_before": p.base_macs, "macs_after": cost.macs, "macs_ratio": ratio_kept,
            "params_before": p.base_params, "params_after": cost.params,
            "target_flops": target.map(|t| t.0),
            "groups": groups,
        });
        let mut r = r;
        for (k, v) in extra {
            r[k] = v;
        }
        write_json(rp, &r)?;
    }
    eprintln!(
        "pruned {} -> {}: MACs {} -> {} ({:.1}%), params {} -> {}",
        input.display(),
        output.display(),
        group_digits(p.base_macs),
        group_digits(cost.macs),
        100.0 * ratio_kept,
        group_digits(p.base_params),
        group_digits(cost.params)
    );
    if let Some((ratio, t, predicted)) = target {
        if cost.macs != predicted {
            eprintln!(
                "warning: MAC model predicted {predicted}, the pruned model has {}",
                cost.macs
            );
        }
        if cost.macs > t {
            let declined: Vec<&str> =
                p.ch.groups
                    .iter()
                    .filter(|g| g.declined.is_some() && !g.producers.is_empty())
                    .map(|g| g.key.as_str())
                    .collect();
            let msg = format!(
                "target {:.3} not reachable: pruned as far as possible to {:.3} of the MACs; groups that cannot be pruned: {}",
                ratio,
                ratio_kept,
                if declined.is_empty() { "none (every prunable group is at its minimum)".to_string() } else { declined.join(", ") }
            );
            if strict {
                return Err(ToleranceExceeded(msg).into());
            }
            eprintln!("note: {msg}");
        }
    }
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v)? + "\n";
    Ok(onnx::write_atomic(path, s.as_bytes())?)
}

fn read_plan(path: &Path) -> Result<onnx_prune::search::plan::Plan> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid plan", path.display()))
}

fn apply(
    input: &Path,
    plan: &Path,
    output: &Path,
    report: Option<&Path>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let (_, p) = load_pruner(input, shapes)?;
    let keep = read_plan(plan)?
        .to_keep(&p)
        .with_context(|| plan.display().to_string())?;
    let pruned = p.apply(&keep)?;
    finish_pruned(
        input,
        output,
        &p,
        &keep,
        &pruned,
        None,
        None,
        report,
        false,
        Default::default(),
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn verify(
    original: &Path,
    pruned: &Path,
    plan: &Path,
    seed: u64,
    runs: u64,
    tol: f64,
    as_json: bool,
    data: Option<(PathBuf, onnx_prune::eval::data::DataOptions)>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    #[cfg(feature = "tract")]
    {
        use onnx_prune::eval;
        let (_, p) = load_pruner(original, shapes)?;
        let keep = read_plan(plan)?
            .to_keep(&p)
            .with_context(|| plan.display().to_string())?;
        let masked = p.masked(&keep)?;
        let dir = std::env::temp_dir().join(format!("onnx-prune-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mpath = dir.join("masked.onnx");
        onnx::save(
            &masked,
            &mpath,
            &SaveOptions {
                external: ExternalData::None,
            },
            &[],
        )?;
        let input_shapes = eval::input_shapes(&p.model, shapes)?;
        let mut worst = eval::Diff::default();
        let mut what = format!("{runs} random input set(s)");
        let res = (|| -> Result<()> {
            if let Some((dpath, dopts)) = &data {
                let s = input_shapes
                    .first()
                    .filter(|s| s.len() == 4)
                    .ok_or_else(|| anyhow::anyhow!("--data needs an image model [N,C,H,W]"))?;
                let chw = (s[1], s[2], s[3]);
                let ds = eval::data::load(dpath, chw, dopts)?;
                let batch = 32;
                use eval::runtime::Runtime;
                let (oa, k) =
                    eval::tract_rt::Batched::new(&mpath, batch, chw)?.run_all(&ds.x, ds.n)?;
                let (ob, _) =
                    eval::tract_rt::Batched::new(pruned, batch, chw)?.run_all(&ds.x, ds.n)?;
                let ta = eval::HostTensor {
                    shape: vec![ds.n, k],
                    data: oa,
                };
                let tb = eval::HostTensor {
                    shape: vec![ob.len() / k.max(1), k],
                    data: ob,
                };
                worst = eval::compare(&[ta], &[tb])?;
                what = format!("{} samples of {}", ds.n, dpath.display());
                return Ok(());
            }
            worst = eval::tract_rt::compare_models(&mpath, pruned, &input_shapes, seed, runs)?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        res?;
        if as_json {
            println!(
                "{}",
                json!({"runtime": "tract", "inputs": what, "max_abs_diff": worst.max_abs, "max_rel_diff": worst.max_rel})
            );
        } else {
            println!(
                "verify (tract, {what}): max |a-b| = {:.3e}, max relative = {:.3e}",
                worst.max_abs, worst.max_rel
            );
        }
        if worst.max_rel > tol {
            return Err(ToleranceExceeded(format!(
                "pruned model differs from the masked original: {:.3e} > {tol:.1e}",
                worst.max_rel
            ))
            .into());
        }
        Ok(())
    }
    #[cfg(not(feature = "tract"))]
    {
        let _ = (
            original, pruned, plan, seed, runs, tol, as_json, data, shapes,
        );
        bail!("this build has no runtime: rebuild with the `tract` feature")
    }
}

fn shrink(
    input: &Path,
    output: &Path,
    plan: Option<&Path>,
    report: Option<&Path>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let (_, p) = load_pruner(input, shapes)?;
    let dead = onnx_prune::search::shrink::dead_atoms(&p);
    let mut keep: Vec<bool> = dead.iter().map(|d| !d).collect();
    // Every tensor keeps at least one channel (a dead one, if need be: still lossless).
    for s in 0..p.ch.spaces.len() {
        if p.ch.spaces[s].len > 0 && p.ch.kept(s, &keep).is_empty() {
            keep[p.ch.atom(s, 0)] = true;
        }
    }
    let removed = keep.iter().filter(|k| !**k).count();
    let pruned = p.apply(&keep)?;
    eprintln!(
        "shrink: {removed} dead channel(s) found in {} group(s)",
        p.ch.groups
            .iter()
            .filter(|g| g.atoms.iter().any(|&a| !keep[a]))
            .count()
    );
    finish_pruned(
        input,
        output,
        &p,
        &keep,
        &pruned,
        None,
        plan,
        report,
        false,
        Default::default(),
        None,
    )
}

#[cfg(any(feature = "tract", feature = "ort"))]
fn eval_cmd(e: EvalArgs) -> Result<()> {
    use onnx_prune::eval::{self, data, metrics, runtime};
    let model = onnx::load(&e.model)?;
    let shapes = eval::input_shapes(&model, &e.shapes.map()).map_err(|er| er.in_file(&e.model))?;
    let s = shapes
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model has no input"))?;
    if s.len() != 4 {
        bail!(
            "{}: eval needs an image model with input [N,C,H,W], got {:?}",
            e.model.display(),
            s
        );
    }
    let chw = (s[1], s[2], s[3]);
    let t0 = std::time::Instant::now();
    let mut ds = data::load(&e.data.data, chw, &e.data.opts.options())?;
    if let Some(v) = e.data.val_size {
        let (_, val) = data::split(ds.n, e.data.seed, e.data.calib_size, v)?;
        ds = ds.subset(&val);
    }
    let t_load = t0.elapsed().as_secs_f64();
    let mut batch = e.batch.max(1);
    if let Some(b) = eval::fixed_batch(&model) {
        if b != batch {
            eprintln!("note: the model's input has a fixed batch of {b}; using batches of {b}");
            batch = b;
        }
    }
    let (kind, line) = runtime::choose(&e.runtime)?;
    eprintln!("{line}");
    let runtime = kind.name();
    let threads = e.threads.unwrap_or_else(runtime::all_threads);
    let run = |path: &Path| -> Result<(Vec<f32>, usize)> {
        Ok(runtime::open(kind, path, batch, chw, threads)?.run_all(&ds.x, ds.n)?)
    };
    let t1 = std::time::Instant::now();
    let (logits, k) = run(&e.model)?;
    let secs = t1.elapsed().as_secs_f64();
    if e.label_free && e.reference.is_none() {
        bail!("--label-free needs --reference ORIGINAL.onnx to measure fidelity against");
    }
    let acc =
        ds.y.as_ref()
            .filter(|_| !e.label_free)
            .map(|y| metrics::accuracy(&logits, k, y));
    let fid = match &e.reference {
        Some(r) => {
            let (rl, rk) = run(r)?;
            if rk != k {
                bail!("the reference has {rk} outputs per sample, the model {k}");
            }
            Some(metrics::fidelity(&rl, &logits, k))
        }
        None => None,
    };
    let ips = ds.n as f64 / secs.max(1e-9);
    // Latency: median of `--latency` timed runs after 3 warm-up runs, at batch 1 and at `batch`.
    let mut lat: Vec<(usize, f64)> = vec![];
    if e.latency > 0 && ds.n > 0 {
        for b in [1usize, batch] {
            let n = b.min(ds.n);
            let x = &ds.x[..n * ds.sample_len()];
            let mut times = vec![];
            let mut m = runtime::open(kind, &e.model, n, chw, threads)?;
            for i in 0..e.latency + 3 {
                let t = std::time::Instant::now();
                m.run_all(x, n)?;
                if i >= 3 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            lat.push((n, times[times.len() / 2]));
        }
    }
    if e.json {
        let mut j = json!({"n": ds.n, "runtime": runtime, "images_per_s": ips, "load_s": t_load});
        if let Some(a) = acc {
            j["top1"] = json!(a.top1);
            j["top5"] = json!(a.top5);
        }
        if let Some(f) = fid {
            j["agreement"] = json!(f.agreement);
            j["kl"] = json!(f.kl);
            j["rel_mse"] = json!(f.rel_mse);
        }
        for (b, ms) in &lat {
            j[format!("latency_ms_b{b}")] = json!(ms);
        }
        println!("{j}");
    } else {
        if let Some(a) = acc {
            println!(
                "top-1 {:.4}  top-5 {:.4}  ({} samples)",
                a.top1, a.top5, ds.n
            );
        } else {
            println!("{} samples, no labels", ds.n);
        }
        if let Some(f) = fid {
            println!(
                "fidelity to reference: top-1 agreement {:.4}, mean KL {:.5}, relative MSE {:.3e}",
                f.agreement, f.kl, f.rel_mse
            );
        }
        println!("{runtime}: {ips:.0} images/s (batch {batch}); data loaded in {t_load:.2}s");
        for (b, ms) in &lat {
            println!("latency at batch {b}: {ms:.2} ms (median of {})", e.latency);
        }
    }
    Ok(())
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
fn eval_cmd(_: EvalArgs) -> Result<()> {
    bail!("this build has no runtime: rebuild with the `tract` feature")
}

/// Set by Ctrl-C: training stops after the current step and leaves its last good model.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the Ctrl-C handler (once): the first Ctrl-C asks training to stop cleanly, a
/// second one exits at once.
fn stop_flag() -> &'static std::sync::atomic::AtomicBool {
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

/// Training options from the flags: `steps` in all, distillation weight by what is there.
fn train_options(
    t: &TrainArgs,
    steps: usize,
    seed: u64,
    teacher: bool,
    labels: bool,
) -> Result<onnx_prune::learn::train::TrainOptions> {
    use onnx_prune::learn::train::{Optim, TrainOptions};
    let kd = match t.kd_weight {
        Some(w) if !(0.0..=1.0).contains(&w) => bail!("--kd-weight must be in [0, 1]"),
        Some(w) if w > 0.0 && !teacher => bail!("--kd-weight > 0 needs a teacher model"),
        Some(w) if w < 1.0 && !labels => {
            bail!("the data has no labels (or --label-free): only distillation (--kd-weight 1) can train")
        }
        Some(w) => w,
        None if !labels && !teacher => {
            bail!("the data has no labels (or --label-free): give a teacher model to distil from")
        }
        None if !labels => 1.0,
        None if teacher => 0.5,
        None => 0.0,
    };
    if t.lr <= 0.0 || !t.lr.is_finite() {
        bail!("--lr must be positive");
    }
    if t.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..1.0).contains(&t.warmup) {
        bail!("--warmup is a fraction of the steps in [0, 1)");
    }
    if let Some(b) = onnx_prune::learn::Backend::parse(&t.train_device) {
        onnx_prune::learn::select(b);
    }
    Ok(TrainOptions {
        optim: Optim::parse(&t.optimizer).expect("clap checked"),
        lr: t.lr,
        warmup: (t.warmup * steps as f64).round() as usize,
        weight_decay: t.weight_decay,
        batch: t.batch_size,
        steps,
        augment: !t.no_augment,
        pad: 4,
        kd_weight: kd,
        temperature: t.temperature,
        clip_norm: t.clip_grad,
        seed,
        checkpoint_every: t.checkpoint_every,
    })
}

/// Steps for `epochs` passes over `n` samples.
fn steps_for(epochs: f64, n: usize, batch: usize) -> usize {
    ((epochs * n as f64) / batch.min(n).max(1) as f64)
        .ceil()
        .max(1.0) as usize
}

fn print_train_summary(f: &onnx_prune::learn::train::Finetuned) {
    let r = &f.report;
    eprintln!(
        "fine-tuned {} parameter(s) for {} step(s) in {:.1}s ({:.0} images/s); loss {:.4} -> {:.4}",
        f.params,
        r.steps_done - r.started_at,
        r.seconds,
        r.images_per_s,
        r.loss_first,
        r.loss_last
    );
}

fn train_json(
    f: &onnx_prune::learn::train::Finetuned,
    o: &onnx_prune::learn::train::TrainOptions,
) -> serde_json::Value {
    let r = &f.report;
    json!({
        "steps": r.steps_done,
        "resumed_at": r.started_at,
        "interrupted": r.interrupted,
        "seconds": r.seconds,
        "images_per_s": r.images_per_s,
        "loss_first": r.loss_first,
        "loss_last": r.loss_last,
        "params": f.params,
        "backend": f.device_line,
        "optimizer": format!("{:?}", o.optim),
        "lr": o.lr,
        "batch_size": o.batch,
        "kd_weight": o.kd_weight,
        "temperature": o.temperature,
        "augment": o.augment,
    })
}

/// `--finetune-epochs` of the main command: trains the recovered model (teacher: the
/// original), measures it again and reports both.
#[cfg(any(feature = "tract", feature = "ort"))]
fn finetune_pruned(
    p: &onnx_prune::search::datafree::Pruner,
    pruned: Model,
    c: &DataCtx,
    args: &PruneArgs,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Model> {
    use onnx_prune::learn::train;
    let mut data = c.train.clone().expect("loaded with --finetune-epochs");
    if args.label_free {
        data.y = None;
    }
    let steps = steps_for(args.finetune_epochs, data.n, args.train.batch_size);
    let o = train_options(&args.train, steps, args.opts.seed, true, data.y.is_some())?;
    let line = onnx_prune::learn::device().1;
    eprintln!(
        "fine-tuning on {} sample(s): {steps} step(s) of {} ({} epoch(s)), {line}",
        data.n, o.batch, args.finetune_epochs
    );
    let before: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "top1_after" | "agreement" | "kl" | "rel_mse"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ckpt = args.output.as_deref().map(train::Checkpoint::beside);
    let f = train::finetune(
        &pruned,
        Some(c.teacher(p)?),
        &data,
        &o,
        ckpt.as_ref(),
        false,
        stop_flag(),
    )?;
    print_train_summary(&f);
    if f.report.interrupted {
        let out = args.output.as_deref().expect("checked");
        onnx::save(&f.model, out, &Default::default(), &[])?;
        bail!(
            "interrupted at step {}/{}: the model so far is in {} (checkpoint {})",
            f.report.steps_done,
            steps,
            out.display(),
            ckpt.map(|c| c.model.display().to_string())
                .unwrap_or_default()
        );
    }
    if let Some(c) = &ckpt {
        c.remove();
    }
    // Measure the fine-tuned model (the recovery report stays the recovery's).
    let recover_json = extra.get("recover").cloned();
    measure(p, &f.model, &Default::default(), c, args, None, extra)?;
    if let Some(r) = recover_json {
        extra.insert("recover".into(), r);
    }
    let mut j = train_json(&f, &o);
    j["before"] = serde_json::Value::Object(before);
    extra.insert("finetune".into(), j);
    Ok(f.model)
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
fn finetune_pruned(
    _: &onnx_prune::search::datafree::Pruner,
    _: Model,
    _: &DataCtx,
    _: &PruneArgs,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Model> {
    bail!("this build has no runtime: rebuild with the `tract` or `ort` feature")
}

/// `onnx-prune finetune`.
fn finetune_cmd(a: FinetuneArgs) -> Result<()> {
    use onnx_prune::eval::{self, data, metrics, runtime};
    use onnx_prune::learn::train;
    let model = onnx::load(&a.model)?;
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    }
    // Fail on untrainable ops before loading any data.
    let mut simplified = model.clone();
    onnx_prune::rewrite::simplify(&mut simplified, &Default::default())?;
    let bad = onnx_prune::learn::net::unsupported(&simplified);
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
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s.max(1),
        (None, e) => steps_for(e.unwrap_or(1.0), trainset.n, a.train.batch_size),
    };
    let o = train_options(&a.train, steps, a.seed, teacher.is_some(), labels)?;
    let (kind, rt_line) = runtime::choose(&a.runtime)?;
    eprintln!("{rt_line}");
    eprintln!("{}", onnx_prune::learn::device().1);
    eprintln!(
        "training on {} sample(s), {} held out: {steps} step(s) of {} ({:.2} epoch(s)), {} lr {}, {}",
        trainset.n,
        val.n,
        o.batch,
        (steps * o.batch) as f64 / trainset.n as f64,
        a.train.optimizer,
        o.lr,
        match (o.kd_weight, labels) {
            (w, _) if w >= 1.0 => format!("distillation (T = {})", o.temperature),
            (w, true) if w > 0.0 => format!("cross-entropy + distillation (w = {w}, T = {})", o.temperature),
            _ => "cross-entropy".to_string(),
        }
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
            onnx_prune::learn::net::Net::new(t, &onnx_prune::learn::infer_device().0)
                .map_err(|e| anyhow::anyhow!("teacher: {e}"))?,
        ),
        None => None,
    };
    let f = train::finetune(
        &model,
        teacher_net.as_ref(),
        &trainset,
        &o,
        Some(&ckpt),
        a.resume,
        stop_flag(),
    )?;
    print_train_summary(&f);
    onnx::save(
        &f.model,
        &a.output,
        &Default::default(),
        std::slice::from_ref(&a.model),
    )?;
    if f.report.interrupted {
        bail!(
            "interrupted at step {}/{steps}: the model so far is in {}; continue with --resume \
             (checkpoint {})",
            f.report.steps_done,
            a.output.display(),
            ckpt.model.display()
        );
    }
    ckpt.remove();
    let after = score(&f.model, "after.onnx")?;
    if val.n > 0 {
        eprintln!("after:  {after}");
    }
    eprintln!("wrote {}", a.output.display());
    if let Some(r) = &a.report {
        let mut j = train_json(&f, &o);
        j["val_samples"] = json!(val.n);
        j["before"] = before;
        j["after"] = after;
        j["input"] = json!(a.model.display().to_string());
        j["output"] = json!(a.output.display().to_string());
        write_json(r, &j)?;
    }
    Ok(())
}
