//! Fine-tuning a [`Net`]: SGD with momentum or Adam, cosine schedule with linear warm-up,
//! weight decay, random-crop + flip augmentation, cross-entropy with labels and/or knowledge
//! distillation from a teacher network, checkpoints that resume exactly, and a stop flag
//! (Ctrl-C) honoured between steps.
//!
//! Determinism: the batch order and the augmentation come from `seed` and the step number
//! alone, so a run resumed from a checkpoint sees the same batches as an uninterrupted one.
//!
//! Here the trainer (options, the steps, their timing, the update applied); `batch.rs` a step's
//! batch and augmentation; `loss.rs` a step's loss; `optim.rs` the optimisers and one update;
//! `features.rs` feature distillation; `checkpoint.rs` the optimiser state on disk and the
//! checkpoint pair; `run.rs` a whole fine-tuning run (`finetune`, with
//! its pace against a deadline, progress and checkpoints; `quick`, the search's recovery).

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::net::Net;
use burn::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod batch;
mod checkpoint;
mod features;
mod loss;
mod optim;
mod run;
mod settings;

pub use checkpoint::Checkpoint;
pub use features::{FeatureKd, FeaturePlan};
use optim::updated;
pub use optim::Optim;
pub use run::{finetune, quick, Finetuned, Pace};
pub use settings::{steps_for, Settings, JOB_LR};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub optim: Optim,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps, then cosine decay to 0 at `steps`.
    pub warmup: usize,
    /// L2 weight decay on weights of rank ≥ 2 (convolution and matrix weights; biases and
    /// normalisation parameters are not decayed).
    pub weight_decay: f64,
    pub batch: usize,
    /// Total optimisation steps (the schedule's length).
    pub steps: usize,
    /// Random crop with `pad` pixels of zero padding and horizontal flip (images only).
    pub augment: bool,
    pub pad: usize,
    /// Weight of the distillation term: loss = (1 − w)·CE + w·T²·KL(teacher ‖ student).
    /// 0 with labels only; 1 without labels.
    pub kd_weight: f64,
    pub temperature: f64,
    /// Clip the gradients' global L2 norm to this (0: no clipping).
    pub clip_norm: f64,
    pub seed: u64,
    /// Save a checkpoint every N steps (0: never).
    pub checkpoint_every: usize,
}

impl TrainOptions {
    /// What the loss is, in words (`labels`: the data has labels to learn from).
    pub fn loss_name(&self, labels: bool) -> String {
        match (self.kd_weight, labels) {
            (w, _) if w >= 1.0 => format!("distillation (T = {})", self.temperature),
            (w, true) if w > 0.0 => {
                format!(
                    "cross-entropy + distillation (w = {w}, T = {})",
                    self.temperature
                )
            }
            _ => "cross-entropy".to_string(),
        }
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            optim: Optim::SGD,
            lr: 0.01,
            warmup: 0,
            weight_decay: 5e-4,
            batch: 64,
            steps: 100,
            augment: true,
            pad: 4,
            kd_weight: 0.0,
            temperature: 4.0,
            clip_norm: 5.0,
            seed: 0,
            checkpoint_every: 0,
        }
    }
}

/// What a step reports (for the progress line).
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    /// Top-1 on the (augmented) batch, when the data has labels.
    pub batch_acc: Option<f32>,
    pub lr: f64,
    pub images_per_s: f64,
    pub eta_s: f64,
}

#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub steps_done: usize,
    pub started_at: usize,
    pub interrupted: bool,
    /// Stopped by the deadline before the planned steps were done.
    pub deadline_hit: bool,
    /// The step count the run was planned for, when the deadline made it cut the plan short
    /// (the cosine schedule was re-fitted to the new count).
    pub replanned_from: Option<usize>,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Mean loss over the first and the last 10% of the steps run.
    pub loss_first: f32,
    pub loss_last: f32,
}

/// What the learning rate does after its linear warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// Cosine decay to 0 at `TrainOptions::steps`.
    #[default]
    Cosine,
    /// The peak rate from then on: a run that another continues with its own decay
    /// (`--agent joint`'s phase before the cut's fine-tuning).
    Hold,
}

/// The schedule's rate at step `t` (0-based): a linear warm-up over `o.warmup` steps, then
/// what `schedule` says.
fn lr_at(o: &TrainOptions, schedule: Schedule, t: usize) -> f64 {
    if t < o.warmup {
        return o.lr * (t + 1) as f64 / o.warmup as f64;
    }
    if schedule == Schedule::Hold {
        return o.lr;
    }
    let span = o.steps.saturating_sub(o.warmup).max(1);
    let p = (t - o.warmup) as f64 / span as f64;
    o.lr * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos())
}

/// Steps not counted in the pace a deadline is checked against (the first are slower).
const PACE_SKIP: usize = 10;

/// Optimiser state and position: what a checkpoint holds besides the weights.
pub struct Trainer {
    pub o: TrainOptions,
    pub step: usize,
    /// Stop at this deadline, and shorten the schedule when the measured pace would miss it.
    pub deadline: Option<crate::budget::Deadline>,
    /// With a deadline: the plan may also be lengthened up to this many steps when the measured
    /// pace leaves time over (`budget::repace`); `None` keeps `o.steps` as the most.
    pub max_steps: Option<usize>,
    /// [`Trainer::run`] returns when the step count reaches this (the schedule stays planned
    /// for `o.steps`): a caller interleaves its own work between stretches of one run.
    pub pause_at: Option<usize>,
    /// Alignment to a structure (`--agent joint`): after each update, parameter `i` of each
    /// pair is multiplied by 1 − s·mask (mask 1 on the weights a cut would remove, 0
    /// elsewhere; s = `align_strength`): the proximal step of a squared-L2 penalty on the
    /// weights to be removed, so the cut at the end loses little.
    pub align: Vec<(usize, Tensor<6>)>,
    pub align_strength: f64,
    /// What the rate does after the warm-up.
    pub schedule: Schedule,
    /// Feature distillation (`--feature-kd`): the student's and the teacher's networks return
    /// the matched maps after their first output.
    pub features: Option<FeatureKd>,
    /// Per parameter: 1 (SGD momentum) or 2 (Adam m, v) buffers.
    state: Vec<Vec<Tensor<6>>>,
}

impl Trainer {
    pub fn new(net: &Net, o: TrainOptions) -> Trainer {
        let inner = net.device().clone().inner();
        let state = (0..net.params().len())
            .map(|i| {
                let dims = net.param(i).t.dims();
                (0..o.optim.slots())
                    .map(|_| Tensor::<6>::zeros(dims, &inner))
                    .collect()
            })
            .collect();
        Trainer {
            o,
            step: 0,
            deadline: None,
            max_steps: None,
            pause_at: None,
            align: vec![],
            align_strength: 0.0,
            schedule: Schedule::Cosine,
            features: None,
            state,
        }
    }

    /// The optimiser's state (per parameter, its buffers), replaced by `state`: for a network
    /// with other parameters between stretches of one run (`--joint-train sub`).
    pub fn swap_state(&mut self, state: Vec<Vec<Tensor<6>>>) -> Vec<Vec<Tensor<6>>> {
        std::mem::replace(&mut self.state, state)
    }

    /// Learning rate at step `t` (0-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        lr_at(&self.o, self.schedule, t)
    }

    /// Runs steps until `o.steps` (or `stop`), calling `on_step` after each and `on_checkpoint`
    /// every `checkpoint_every` steps.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        net: &mut Net,
        teacher: Option<&Net>,
        data: &Dataset,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&StepInfo),
        on_checkpoint: &mut dyn FnMut(&Net, &Trainer) -> Result<()>,
    ) -> Result<TrainReport> {
        let o = self.o.clone();
        if data.n == 0 {
            return Err(Error::Usage("no training samples".into()));
        }
        let labels = data.y.is_some();
        if !labels && o.kd_weight < 1.0 {
            return Err(Error::Usage(
                "the data has no labels: train by distillation from a teacher (label-free)".into(),
            ));
        }
        if o.kd_weight > 0.0 && teacher.is_none() {
            return Err(Error::Usage("distillation needs a teacher model".into()));
        }
        let start = Instant::now();
        let first = self.step;
        let mut losses = Vec::new();
        let mut rep = TrainReport {
            started_at: first,
            ..Default::default()
        };
        // The pace as the deadline's clock sees it, from the 10th step on (the first steps are
        // slower: allocation, caches), checked every 10 steps from the 30th (`PACE_SKIP`).
        let mut pace_from: Option<Duration> = None;
        while self.step < self.o.steps {
            if self.pause_at.is_some_and(|p| self.step >= p) {
                break;
            }
            if stop.load(Ordering::SeqCst) {
                rep.interrupted = true;
                break;
            }
            if let Some(d) = &self.deadline {
                if d.passed() {
                    rep.deadline_hit = true;
                    break;
                }
                // Every 10 steps: would the rest of the plan overrun the deadline at this pace?
                let done = self.step - first;
                if done == PACE_SKIP {
                    pace_from = Some(d.clock.now());
                }
                if let (Some(p0), true) =
                    (pace_from, done >= 3 * PACE_SKIP && done.is_multiple_of(10))
                {
                    let spent = d.clock.now().saturating_sub(p0);
                    let left = d.left().unwrap_or(Duration::MAX);
                    let paced = done - PACE_SKIP;
                    let max = self.max_steps.unwrap_or(self.o.steps).max(self.o.steps);
                    if let Some(n) =
                        crate::budget::repace(self.step, self.o.steps, max, paced, spent, left)
                    {
                        rep.replanned_from.get_or_insert(self.o.steps);
                        self.o.steps = n;
                    }
                }
            }
            let t = self.step;
            let (loss, acc, b, updates) = self.loss_at(net, teacher, data, t)?;
            net.apply_updates(updates);
            let grads = loss.backward();
            let lv: f32 = loss.into_scalar::<f32>();
            if !lv.is_finite() {
                return Err(Error::Usage(format!(
                    "the loss became {lv} at step {t}: lower --lr"
                )));
            }
            let lr = self.lr_at(t);
            self.apply(net, &grads, lr, t);
            self.step += 1;
            losses.push(lv);
            let secs = start.elapsed().as_secs_f64();
            let done = self.step - first;
            let ips = (done * b) as f64 / secs.max(1e-9);
            let info = StepInfo {
                step: self.step,
                steps: self.o.steps,
                loss: lv,
                batch_acc: acc,
                lr,
                images_per_s: ips,
                eta_s: secs / done as f64 * (self.o.steps.saturating_sub(self.step)) as f64,
            };
            on_step(&info);
            let every = self.o.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.o.steps {
                on_checkpoint(net, self)?;
            }
        }
        rep.steps_done = self.step;
        rep.seconds = start.elapsed().as_secs_f64();
        rep.images_per_s = ((self.step - first) * self.o.batch) as f64 / rep.seconds.max(1e-9);
        let m = (losses.len() / 10).max(1).min(losses.len());
        if !losses.is_empty() {
            rep.loss_first = losses[..m].iter().sum::<f32>() / m as f32;
            rep.loss_last = losses[losses.len() - m..].iter().sum::<f32>() / m as f32;
        }
        Ok(rep)
    }

    /// The time of one training step (forward, distillation, backward and the optimiser's
    /// update with its gradient-norm read-back), on the deadline's clock when there is one: the
    /// mean of `k` steps after one untimed warm-up. The network and the optimiser state are
    /// left as they were (the updates go to a copy of the state and are dropped; the device is
    /// synchronised before the clock is read, so an asynchronous GPU backend is timed whole).
    pub fn time_step(
        &self,
        net: &Net,
        teacher: Option<&Net>,
        data: &Dataset,
        k: usize,
    ) -> Result<Duration> {
        self.timed(net, teacher, data, k, true)
    }

    /// As [`Trainer::time_step`] without the optimiser's update: forward, loss read back and
    /// backward (the benchmarks show the split).
    pub fn time_forward_backward(
        &self,
        net: &Net,
        teacher: Option<&Net>,
        data: &Dataset,
        k: usize,
    ) -> Result<Duration> {
        self.timed(net, teacher, data, k, false)
    }

    fn timed(
        &self,
        net: &Net,
        teacher: Option<&Net>,
        data: &Dataset,
        k: usize,
        update: bool,
    ) -> Result<Duration> {
        let clock: std::sync::Arc<dyn crate::budget::Clock> = match &self.deadline {
            Some(d) => d.clock.clone(),
            None => std::sync::Arc::new(crate::budget::SystemClock::new()),
        };
        let mut state = self.state.clone();
        let once = |j: usize, state: &mut [Vec<Tensor<6>>]| -> Result<()> {
            let t = self.step + j;
            let (loss, ..) = self.loss_at(net, teacher, data, t)?;
            let g = loss.backward();
            let _ = loss.into_scalar::<f32>();
            if update {
                drop(updated(&self.o, state, net, &g, self.lr_at(t), t));
            } else {
                drop(g);
            }
            Ok(())
        };
        once(0, &mut state)?;
        let _ = net.device().sync();
        let t0 = clock.now();
        for j in 0..k.max(1) {
            once(1 + j, &mut state)?;
        }
        let _ = net.device().sync();
        Ok(clock.now().saturating_sub(t0) / k.max(1) as u32)
    }

    fn apply(&mut self, net: &mut Net, grads: &burn::tensor::Gradients, lr: f64, t: usize) {
        let s = self.align_strength.clamp(0.0, 1.0);
        for (i, w) in updated(&self.o, &mut self.state, net, grads, lr, t) {
            let w = match self.align.iter().find(|(j, _)| *j == i) {
                Some((_, mask)) if s > 0.0 => w.clone() - w * mask.clone() * s,
                _ => w,
            };
            net.set_param(i, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{lr_at, Schedule, TrainOptions};

    #[test]
    fn the_schedule_warms_up_then_decays_or_holds_the_peak() {
        let o = TrainOptions {
            lr: 0.1,
            warmup: 10,
            steps: 110,
            ..Default::default()
        };
        for sch in [Schedule::Cosine, Schedule::Hold] {
            // The warm-up is the same either way: linear up to the peak at its last step.
            assert!((lr_at(&o, sch, 0) - 0.01).abs() < 1e-12);
            assert!((lr_at(&o, sch, 9) - 0.1).abs() < 1e-12);
        }
        // Cosine: the peak right after the warm-up, half way at the middle, 0 at the end.
        assert!((lr_at(&o, Schedule::Cosine, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(&o, Schedule::Cosine, 60) - 0.05).abs() < 1e-12);
        assert!(lr_at(&o, Schedule::Cosine, 110).abs() < 1e-12);
        // Held: the peak to the end and past it (a run that another continues).
        for t in [10, 60, 109, 110, 500] {
            assert_eq!(lr_at(&o, Schedule::Hold, t), 0.1);
        }
    }
}
