//! What scores the search's candidates: the [`Measure`] trait the agents ask, and [`Oracle`],
//! which builds a candidate by surgery, recovers it by least squares on the calibration subset
//! (optionally a short fine-tune) and evaluates it on the validation subset by a
//! [`metrics::Reward`], caching identical plans.

use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{metrics, runtime, TempDir};
use crate::search::datafree::Pruner;
use crate::search::recover;
use std::collections::HashMap;

/// Options of the search's cached one-round least-squares fit (and of the `--method ls`
/// channel criterion computed from the same statistics).
pub fn cached_fit_options(kind: runtime::Kind) -> recover::Options {
    recover::Options {
        mode: recover::Mode::Ls,
        sequential: false,
        positions: 16,
        runtime: kind,
        ..Default::default()
    }
}

/// What the search agents ask of whoever scores their candidates: [`Oracle`] on a real model
/// (surgery, recovery, evaluation); a test can score plans synthetically.
pub trait Measure {
    /// The score of the candidate `keep` on the first `n` validation samples.
    fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64>;
    /// The score of `keep` on the whole validation subset.
    fn measure(&mut self, keep: &[bool]) -> Result<f64> {
        let n = self.val_len();
        self.measure_on(keep, n)
    }
    /// The original model's score on the first `n` validation samples.
    fn original_on(&self, n: usize) -> f64;
    /// The original model's score on the whole validation subset.
    fn original(&self) -> f64;
    /// Samples in the validation subset.
    fn val_len(&self) -> usize;
    /// Candidates measured so far (not counting cache hits).
    fn evaluations(&self) -> usize;
}

impl Measure for Oracle<'_> {
    fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64> {
        Oracle::measure_on(self, keep, n)
    }
    fn original_on(&self, n: usize) -> f64 {
        Oracle::original_on(self, n)
    }
    fn original(&self) -> f64 {
        self.original
    }
    fn val_len(&self) -> usize {
        Oracle::val_len(self)
    }
    fn evaluations(&self) -> usize {
        self.evaluations
    }
}

/// Measures candidates: surgery, fast recovery, evaluation; cached by plan.
pub struct Oracle<'a> {
    p: &'a Pruner,
    calib: &'a Dataset,
    val: &'a Dataset,
    kind: runtime::Kind,
    pub recover: recover::Options,
    label_free: bool,
    /// What a candidate scores ([`Oracle::set_reward`]; top-1, or fidelity label-free).
    reward: metrics::Reward,
    reference: Vec<f32>,
    k: usize,
    /// Accuracy (or agreement) of the original model on the validation subset.
    pub original: f64,
    cache: HashMap<(Vec<bool>, usize), f64>,
    /// Leading validation subsets for [`Oracle::measure_on`].
    probes: HashMap<usize, Dataset>,
    /// Normal equations of the ThiNet-style recovery, accumulated once.
    fast: recover::FastCache,
    pub evaluations: usize,
    /// Seconds spent in surgery, recovery and evaluation (summed over evaluations).
    pub seconds: [f64; 3],
    /// `--recover ft:STEPS`: a short fine-tune after the least-squares recovery.
    finetune: Option<FtRecovery<'a>>,
    /// Some(n): least squares level by level on the pruned model's own activations from the
    /// first n calibration images (as the final recovery does) instead of the cached one-round
    /// fit on the original's ([`Oracle::set_sequential`]).
    sequential: Option<(usize, recover::Options)>,
    tmp: TempDir,
}

/// The fine-tune part of `--recover ft:STEPS` in the oracle: options, the original model as
/// the distillation teacher and the training samples.
struct FtRecovery<'a> {
    o: crate::learn::train::TrainOptions,
    teacher: Option<&'a crate::net::Net>,
    data: &'a Dataset,
}

impl<'a> Oracle<'a> {
    pub fn new(
        p: &'a Pruner,
        calib: &'a Dataset,
        val: &'a Dataset,
        kind: runtime::Kind,
        label_free: bool,
    ) -> Result<Oracle<'a>> {
        let tmp = TempDir::new("search")?;
        let (reference, k) = runtime::logits(kind, &p.model, &tmp, "original.onnx", val)?;
        let label_free = label_free || val.y.is_none();
        let original = if label_free {
            1.0
        } else {
            metrics::accuracy(&reference, k, val.y.as_ref().unwrap()).top1
        };
        let recover = cached_fit_options(kind);
        Ok(Oracle {
            p,
            calib,
            val,
            kind,
            recover,
            label_free,
            reward: metrics::Reward::Top1.with_labels(!label_free),
            reference,
            k,
            original,
            cache: HashMap::new(),
            probes: HashMap::new(),
            fast: recover::FastCache::new(),
            evaluations: 0,
            seconds: [0.0; 3],
            finetune: None,
            sequential: None,
            tmp,
        })
    }

    /// Scores candidates (and the original) by `reward` (fidelity whatever it says when there
    /// are no labels or the oracle is label-free). Evaluations cached so far are dropped.
    pub fn set_reward(&mut self, reward: metrics::Reward) {
        self.reward = reward.with_labels(!self.label_free);
        self.original = self.original_on(self.val.n);
        self.cache.clear();
    }

    /// What candidates score.
    pub fn reward(&self) -> metrics::Reward {
        self.reward
    }

    /// Takes statistics of the cached fit gathered elsewhere — with [`cached_fit_options`] on
    /// this oracle's calibration images (the `--method ls` criterion gathers exactly these) —
    /// so the original model is not run again for them.
    pub fn set_fast_cache(&mut self, fast: recover::FastCache) {
        self.fast = fast;
        self.cache.clear();
    }

    /// Recovers every candidate as the final `ls` recovery does, level by level on the pruned
    /// model's own activations, from the first `n` calibration images (one forward run of the
    /// candidate per dependency level; slower than the cached one-round fit, but it ranks plans
    /// as the final recovery does). Evaluations cached so far are dropped.
    ///
    /// `ridge` and `seed` (the sampled positions) as for the final recovery: with
    /// n ≥ 512 (16 positions per image) a candidate scores exactly what the final recovery on
    /// the same images gives it.
    pub fn set_sequential(&mut self, n: usize, ridge: f64, seed: u64) {
        let n = n.clamp(1, self.calib.n.max(1));
        // As many rows per target as the cached fit's 512 images × 16 positions, up to 64
        // positions per image.
        let o = recover::Options {
            sequential: true,
            ridge,
            seed,
            positions: (self.recover.positions * 512)
                .div_ceil(n)
                .clamp(self.recover.positions, 64),
            ..self.recover.clone()
        };
        self.sequential = Some((n, o));
        self.cache.clear();
    }

    /// Recovers every candidate by least squares and then `o.steps` steps of fine-tuning on
    /// `data` (`--recover ft:STEPS`; samples disjoint from the validation subset): labels
    /// plus distillation from `teacher` (the original model as a burn network on
    /// [`crate::net::infer_device`]) when `o.kd_weight` is in (0, 1), distillation only at 1
    /// (label-free), labels only at 0. Evaluations cached so far are dropped.
    pub fn set_finetune(
        &mut self,
        o: crate::learn::train::TrainOptions,
        data: &'a Dataset,
        teacher: Option<&'a crate::net::Net>,
    ) {
        self.finetune = Some(FtRecovery { o, teacher, data });
        self.cache.clear();
    }

    /// The reward ([`Oracle::set_reward`]: top-1 by default, or, label-free, 1/(1 + relative
    /// MSE) to the original) of the candidate `keep` after recovery, on the validation subset.
    pub fn measure(&mut self, keep: &[bool]) -> Result<f64> {
        self.measure_on(keep, self.val.n)
    }

    /// Samples in the validation subset.
    pub fn val_len(&self) -> usize {
        self.val.n
    }

    /// The original model's score on the first `n` validation samples (1 label-free).
    pub fn original_on(&self, n: usize) -> f64 {
        let n = n.clamp(1, self.val.n.max(1));
        let r = &self.reference[..n * self.k];
        let labels = self.val.y.as_deref().filter(|_| !self.label_free);
        self.reward.score(r, r, self.k, labels.map(|y| &y[..n]))
    }

    /// [`Oracle::measure`] on the first `n` validation samples only (a cheaper, noisier
    /// probe: PuRL's per-step rewards).
    pub fn measure_on(&mut self, keep: &[bool], n: usize) -> Result<f64> {
        let n = n.clamp(1, self.val.n.max(1));
        let key = (keep.to_vec(), n);
        if let Some(&v) = self.cache.get(&key) {
            return Ok(v);
        }
        if n < self.val.n && !self.probes.contains_key(&n) {
            let idx: Vec<usize> = (0..n).collect();
            self.probes.insert(n, self.val.subset(&idx));
        }
        let val = if n < self.val.n {
            &self.probes[&n]
        } else {
            self.val
        };
        let t0 = std::time::Instant::now();
        let mut m = self.p.apply(keep)?;
        let chw = (val.c, val.h, val.w);
        let t1 = std::time::Instant::now();
        match &self.sequential {
            Some((n, o)) => {
                let len = n * chw.0 * chw.1 * chw.2;
                recover::recover(self.p, keep, &mut m, &self.calib.x[..len], *n, chw, o)?;
            }
            None => {
                self.fast.recover(
                    self.p,
                    keep,
                    &mut m,
                    &self.calib.x,
                    self.calib.n,
                    chw,
                    &self.recover,
                )?;
            }
        }
        if let Some(ft) = &self.finetune {
            m = crate::learn::train::quick(&m, ft.teacher, ft.data, &ft.o)?.0;
        }
        let t2 = std::time::Instant::now();
        let (l, k) = runtime::logits(self.kind, &m, &self.tmp, "candidate.onnx", val)?;
        self.seconds[0] += (t1 - t0).as_secs_f64();
        self.seconds[1] += (t2 - t1).as_secs_f64();
        self.seconds[2] += t2.elapsed().as_secs_f64();
        let labels = val.y.as_deref().filter(|_| !self.label_free);
        let v = self
            .reward
            .score(&self.reference, &l, self.k.max(k), labels);
        self.evaluations += 1;
        self.cache.insert(key, v);
        Ok(v)
    }
}
