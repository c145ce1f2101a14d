//! Training hyper-parameters as a user gives them ([`Settings`]: the `finetune` command's and
//! the main job's training flags), turned into the [`TrainOptions`] of one run once the step
//! count, the seed and what there is to learn from (labels, a teacher) are known.

use super::{Optim, TrainOptions};
use crate::error::{Error, Result};
use crate::net::Backend;

/// The main job's fine-tuning optimiser and learning rate where none is given (`cargo bench
/// --bench timelimit`, docs/benchmarks.md "The fine-tuning recipe": resnet20 at 50%, equal
/// time, labels only): SGD at 3e-3. Adam at 1e-3 scored more on resnet20 (0.8496 vs 0.8432 at
/// 10 minutes, 0.8532 vs 0.8527 at 20) but 2.3 points less on resnet56 (0.8221 vs 0.8448 after
/// 1000 steps), so SGD stays. Distillation lost to labels alone at equal time in both sweeps:
/// the teacher's forward pass costs a quarter to a third of a step on a CPU, and the steps it
/// costs bought more.
pub const JOB_OPTIM: Optim = Optim::SGD;
/// The main job's peak rate with SGD (measured best against 1e-3 and 6e-3).
pub const JOB_LR: f64 = 3e-3;
/// The main job's peak rate with `--optimizer adam` (measured best against 3e-4).
pub const JOB_ADAM_LR: f64 = 1e-3;

/// Training hyper-parameters; `Default` gives the command line's defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The optimiser; `None`: SGD, or [`JOB_OPTIM`] for the main job's fine-tuning.
    pub optim: Option<Optim>,
    /// Peak learning rate; `None`: 1e-3, or for the main job's fine-tuning [`JOB_LR`] (SGD) /
    /// [`JOB_ADAM_LR`] (Adam).
    pub lr: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip_grad: f64,
    /// Linear warm-up, as a fraction of the steps, in [0, 1).
    pub warmup: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Distillation weight w in [0, 1]; `None`: 1 without labels, 0.5 with labels and a
    /// teacher (0 in the main job's fine-tuning), else 0.
    pub kd_weight: Option<f64>,
    pub temperature: f64,
    /// Random crop (4-pixel padding) and horizontal flip.
    pub augment: bool,
    /// Save a resumable checkpoint every N steps (0: only when interrupted).
    pub checkpoint_every: usize,
    /// The burn backend to train on (selected for the process when options are made).
    pub device: Backend,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            optim: None,
            lr: None,
            clip_grad: 5.0,
            warmup: 0.05,
            weight_decay: 5e-4,
            batch_size: 64,
            kd_weight: None,
            temperature: 4.0,
            augment: true,
            checkpoint_every: 200,
            device: Backend::Auto,
        }
    }
}

impl Settings {
    /// The options of a run of `steps` steps; `teacher`/`labels`: what there is to learn from.
    /// `job`: the main job's fine-tuning, whose defaults differ ([`JOB_LR`], and labels only
    /// when there are labels); `finetune` and `--recover ft:STEPS` keep lr 1e-3 and w = 0.5.
    /// Selects [`Settings::device`] for the process.
    pub fn options(
        &self,
        steps: usize,
        seed: u64,
        teacher: bool,
        labels: bool,
        job: bool,
    ) -> Result<TrainOptions> {
        let usage = |m: &str| Err(Error::Usage(m.to_string()));
        let kd = match self.kd_weight {
            Some(w) if !(0.0..=1.0).contains(&w) => return usage("--kd-weight must be in [0, 1]"),
            Some(w) if w > 0.0 && !teacher => {
                return usage("--kd-weight > 0 needs a teacher model")
            }
            Some(w) if w < 1.0 && !labels => {
                return usage("the data has no labels (or --label-free): only distillation (--kd-weight 1) can train")
            }
            Some(w) => w,
            None if !labels && !teacher => {
                return usage(
                    "the data has no labels (or --label-free): give a teacher model to distil from",
                )
            }
            None if !labels => 1.0,
            None if teacher && !job => 0.5,
            None => 0.0,
        };
        let optim = self
            .optim
            .unwrap_or(if job { JOB_OPTIM } else { Optim::SGD });
        let lr = self.lr.unwrap_or(match (job, optim) {
            (true, Optim::Adam { .. }) => JOB_ADAM_LR,
            (true, Optim::Sgd { .. }) => JOB_LR,
            (false, _) => 1e-3,
        });
        if lr <= 0.0 || !lr.is_finite() {
            return usage("--lr must be positive");
        }
        if self.batch_size == 0 {
            return usage("--batch-size must be at least 1");
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return usage("--warmup is a fraction of the steps in [0, 1)");
        }
        crate::net::select(self.device);
        Ok(TrainOptions {
            optim,
            lr,
            warmup: (self.warmup * steps as f64).round() as usize,
            weight_decay: self.weight_decay,
            batch: self.batch_size,
            steps,
            augment: self.augment,
            pad: 4,
            kd_weight: kd,
            temperature: self.temperature,
            clip_norm: self.clip_grad,
            seed,
            checkpoint_every: self.checkpoint_every,
        })
    }
}

/// Steps for `epochs` passes over `n` samples in batches of `batch`.
pub fn steps_for(epochs: f64, n: usize, batch: usize) -> usize {
    ((epochs * n as f64) / batch.min(n).max(1) as f64)
        .ceil()
        .max(1.0) as usize
}
