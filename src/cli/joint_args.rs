//! The flags of `--agent joint` (joint training and pruning, Ganjdanesh et al. 2024).

use clap::Args;
use onnx_prune::job::{JointOptions, JointTraining};
use onnx_prune::learn::train::Schedule;

#[derive(Args)]
pub(crate) struct JointArgs {
    /// With --agent joint: the share of the time after preparation (less the final reserve)
    /// that joint training takes; fine-tuning the cut model gets the rest
    #[arg(long, default_value_t = 0.5, value_parser = parse_share)]
    pub(crate) joint_share: f64,
    /// With --agent joint: training steps per round of the agent (the paper's epoch)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) joint_round: u64,
    /// With --agent joint: plans measured per round (the agent's greedy plan and noisy ones)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) joint_plans: u64,
    /// With --agent joint: train for exactly N steps (instead of the time limit's plan)
    #[arg(long)]
    pub(crate) joint_steps: Option<usize>,
    /// With --agent joint: the alignment's strength at its peak, per step: the fraction of
    /// each weight the current plan would remove taken off it after every update (the
    /// proximal step of a squared-L2 penalty on those weights); 0 switches alignment off
    #[arg(long, default_value_t = 0.01, value_parser = parse_share)]
    pub(crate) align_strength: f64,
    /// With --agent joint: the alignment ramps up linearly over this fraction of the phase
    #[arg(long, default_value_t = 0.5, value_parser = parse_share)]
    pub(crate) align_ramp: f64,
    /// With --agent joint: the agent explores for this fraction of the phase; the rest trains
    /// aligned to the structure it chose last
    #[arg(long, default_value_t = 0.75, value_parser = parse_share)]
    pub(crate) joint_explore: f64,
    /// With --agent joint: the learning-rate schedule of the joint phase: `hold` keeps the
    /// peak rate after the warm-up, so the cut model's fine-tuning makes the only decay (one
    /// schedule across the cut); `cosine` decays to 0 by the cut, and the fine-tuning then warms
    /// up and decays again
    #[arg(long, value_enum, default_value_t = JointLr::Hold)]
    pub(crate) joint_lr: JointLr,
    /// With --agent joint: what trains between the agent's rounds: `sub`, the current
    /// structure's cut network (made by the surgery, at its own cost), written back into the
    /// whole network after each round's steps; `full`, the whole network with the weights the
    /// structure removes shrinking (the paper's way, the first version)
    #[arg(long, value_enum, default_value_t = JointTrain::Sub)]
    pub(crate) joint_train: JointTrain,
    /// With --agent joint: re-initialise the weights first (the paper's setting) instead of
    /// starting from the input model's
    #[arg(long)]
    pub(crate) from_scratch: bool,
}

impl JointArgs {
    pub(crate) fn options(&self) -> JointOptions {
        JointOptions {
            share: self.joint_share,
            round_steps: self.joint_round as usize,
            candidates: self.joint_plans as usize,
            align: self.align_strength,
            ramp: self.align_ramp,
            explore: self.joint_explore,
            schedule: match self.joint_lr {
                JointLr::Hold => Schedule::Hold,
                JointLr::Cosine => Schedule::Cosine,
            },
            training: match self.joint_train {
                JointTrain::Full => JointTraining::Whole,
                JointTrain::Sub => JointTraining::Sub,
            },
            steps: self.joint_steps,
            from_scratch: self.from_scratch,
            ..Default::default()
        }
    }
}

/// `--joint-lr`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum JointLr {
    Cosine,
    Hold,
}

/// `--joint-train`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum JointTrain {
    Full,
    Sub,
}

/// A fraction in [0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1]"))
    }
}
