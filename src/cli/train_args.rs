//! The flags of training: the hyper-parameters (`TrainArgs`, shared by the main command's
//! fine-tuning and the `finetune` command) and the `finetune` command's own.

use super::DataOpts;
use clap::Args;
use std::path::PathBuf;

/// Training hyper-parameters (the `finetune` command and `--finetune-epochs`).
#[derive(Args, Clone)]
pub(crate) struct TrainArgs {
    /// Optimiser: sgd (momentum 0.9, Nesterov; the default) or adam
    #[arg(long, value_parser = ["sgd", "adam"])]
    pub(crate) optimizer: Option<String>,
    /// Peak learning rate (cosine decay to 0 after the warm-up). Default 1e-3 for `finetune`
    /// and --recover ft:STEPS; for the main command's fine-tuning 3e-3 with sgd and 1e-3 with
    /// adam (measured best for short budgets on BatchNorm-folded CIFAR ResNets with gradient
    /// clipping; far higher rates, as used to train with BatchNorm, diverge on folded networks)
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, default_value_t = 5.0)]
    pub(crate) clip_grad: f64,
    /// Linear warm-up, as a fraction of the steps
    #[arg(long, default_value_t = 0.05)]
    pub(crate) warmup: f64,
    /// L2 weight decay on convolution and matrix weights
    #[arg(long, default_value_t = 5e-4)]
    pub(crate) weight_decay: f64,
    /// Images per step
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Weight w of distillation: loss = (1−w)·cross-entropy + w·T²·KL(teacher ‖ model).
    /// Default: 1 without labels (or with --label-free); with labels 0.5 given a teacher in
    /// `finetune` and --recover ft:STEPS, and 0 in the main command's fine-tuning (at equal
    /// time on a CPU, the steps the teacher's forward pass costs bought more accuracy)
    #[arg(long)]
    pub(crate) kd_weight: Option<f64>,
    /// Distillation temperature T
    #[arg(long, default_value_t = 4.0)]
    pub(crate) temperature: f64,
    /// No random crop (4-pixel padding) and horizontal flip
    #[arg(long)]
    pub(crate) no_augment: bool,
    /// Save a resumable checkpoint (OUT.ckpt.onnx + OUT.ckpt.state) every N steps (0: only
    /// when interrupted)
    #[arg(long, default_value_t = 200)]
    pub(crate) checkpoint_every: usize,
    /// burn backend for training: auto (a GPU adapter when the build has `wgpu` and one
    /// answers, else CPU), cpu, wgpu
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "wgpu"])]
    pub(crate) train_device: String,
}

#[derive(Args)]
pub(crate) struct FinetuneArgs {
    /// Model to train (e.g. a pruned model)
    pub(crate) model: PathBuf,
    /// Output model (written atomically; the input is never modified)
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// Training data (.npy/.npz, MNIST idx, ImageFolder dir/.tar); --val-size samples are held
    /// out for the before/after report
    #[arg(long)]
    pub(crate) data: PathBuf,
    #[command(flatten)]
    pub(crate) data_opts: DataOpts,
    /// Teacher for knowledge distillation (e.g. the unpruned original)
    #[arg(long)]
    pub(crate) teacher: Option<PathBuf>,
    /// Epochs over the training samples (default 1)
    #[arg(long, conflicts_with = "steps")]
    pub(crate) epochs: Option<f64>,
    /// Optimisation steps (instead of --epochs)
    #[arg(long)]
    pub(crate) steps: Option<usize>,
    /// Train for as long as this allows (e.g. 20m; the step count is planned from a measured
    /// step, at most 30 epochs, and the run stops at the limit); with --epochs/--steps the
    /// limit only stops it. Time spent loading counts
    #[arg(long, value_parser = onnx_prune::budget::parse_duration)]
    pub(crate) time_limit: Option<std::time::Duration>,
    /// Ignore labels: distillation from --teacher only
    #[arg(long)]
    pub(crate) label_free: bool,
    /// Held-out samples for the before/after report (0: none)
    #[arg(long, default_value_t = 1000)]
    pub(crate) val_size: usize,
    /// Seed (data split, batch order, augmentation)
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Continue from the checkpoint beside OUT (OUT.ckpt.onnx + OUT.ckpt.state)
    #[arg(long)]
    pub(crate) resume: bool,
    /// Runtime for the before/after evaluation
    #[arg(long, default_value = "auto", value_parser = ["tract", "ort", "burn", "auto"])]
    pub(crate) runtime: String,
    /// Write a JSON report
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) train: TrainArgs,
}
