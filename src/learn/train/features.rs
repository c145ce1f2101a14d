//! Feature distillation (`--feature-kd W`, FitNets' hint loss on the maps the least-squares
//! recovery matches): the student's and the teacher's networks are built with the same number
//! of taps ([`Net::with_taps`]), tap i of the student being a pruned layer's output and tap i of
//! the teacher the same layer's output in the original, of which the student kept the channels
//! `kept[i]`. The term is the mean over taps of ‖s − t[kept]‖² / ‖t[kept]‖² (each map's squared
//! error relative to its own energy, so wide and narrow layers weigh alike), times the weight.

use crate::error::{Error, Result};
use crate::ir::ValueId;
use crate::net::Dt;
use burn::prelude::*;

/// What the trainer matches: the weight of the term and, per tap, the teacher's channels the
/// student kept.
#[derive(Clone, Debug)]
pub struct FeatureKd {
    pub weight: f64,
    pub kept: Vec<Vec<usize>>,
}

/// Feature distillation as `finetune` sets it up: the taps in both models and what
/// [`FeatureKd`] the trainer gets.
#[derive(Clone, Debug)]
pub struct FeaturePlan {
    pub weight: f64,
    /// Per tap: the value in the student's (pruned) model, the value in the teacher's model, and
    /// the teacher's channels the student kept.
    pub taps: Vec<(ValueId, ValueId, Vec<usize>)>,
}

impl FeaturePlan {
    pub fn student_taps(&self) -> Vec<ValueId> {
        self.taps.iter().map(|t| t.0).collect()
    }
    pub fn teacher_taps(&self) -> Vec<ValueId> {
        self.taps.iter().map(|t| t.1).collect()
    }
    pub fn trainer(&self) -> FeatureKd {
        FeatureKd {
            weight: self.weight,
            kept: self.taps.iter().map(|t| t.2.clone()).collect(),
        }
    }
}

impl FeatureKd {
    /// The term for one batch: `student` and `teacher` are the taps (the outputs after the
    /// first) of the two networks' passes on the same images; the teacher's are constants.
    pub fn loss(&self, student: &[Dt], teacher: &[Dt]) -> Result<Tensor<1>> {
        if student.len() != self.kept.len() || teacher.len() != self.kept.len() {
            return Err(Error::Invalid(format!(
                "feature distillation: {} tap(s) planned, the student returned {} and the teacher {}",
                self.kept.len(),
                student.len(),
                teacher.len()
            )));
        }
        let mut sum: Option<Tensor<1>> = None;
        for (i, ((s, t), kept)) in student.iter().zip(teacher).zip(&self.kept).enumerate() {
            if s.rank < 2 || t.rank != s.rank {
                return Err(Error::Invalid(format!(
                    "feature distillation: tap {i} has shapes {:?} (student) and {:?} (teacher)",
                    s.dims(),
                    t.dims()
                )));
            }
            let idx: Vec<i64> = kept.iter().map(|&c| c as i64).collect();
            let n = idx.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &t.t.device());
            let tk = t.t.clone().select(t.ax(1), idx);
            if tk.dims() != s.t.dims() {
                return Err(Error::Invalid(format!(
                    "feature distillation: tap {i}: the student's map {:?} is not the teacher's {:?} at its {n} kept channel(s)",
                    s.dims(),
                    t.dims()
                )));
            }
            let energy = tk.clone().powf_scalar(2.0).mean().add_scalar(1e-8);
            let term = (s.t.clone() - tk).powf_scalar(2.0).mean() / energy;
            sum = Some(super::loss::plus(sum, term));
        }
        let sum = sum.ok_or_else(|| Error::Invalid("feature distillation without taps".into()))?;
        Ok(sum * (self.weight / self.kept.len() as f64))
    }
}
