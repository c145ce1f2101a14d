//! A step's loss: cross-entropy with the labels, distillation from the teacher's logits
//! (temperature), and feature distillation ([`super::FeatureKd`]), from one pass of each
//! network.

use super::Trainer;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::net::{Dt, Net};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

impl Trainer {
    /// The loss of step `t` (forward of the student, and of the teacher for distillation), the
    /// batch's top-1 when there are labels, and the batch size.
    pub(super) fn loss_at(
        &self,
        net: &Net,
        teacher: Option<&Net>,
        data: &Dataset,
        t: usize,
    ) -> Result<(Tensor<1>, Option<f32>, usize, crate::net::Updates)> {
        let o = &self.o;
        let labels = data.y.is_some();
        let device = net.device().clone();
        let (x, y) = self.batch(t, data);
        let b = x.len() / data.sample_len();
        let xd = Dt::from_vec(x, &[b, data.c, data.h, data.w], &device);
        // The teacher reads the same upload, outside autodiff.
        let xt = Dt::new(xd.t.clone().inner(), xd.rank);
        let (out, updates) = net.forward_pure(xd, true)?;
        let mut out = out.into_iter();
        let logits = first_output_2d(out.next())?;
        let k = logits.dims()[1];
        // One teacher pass for both distillations: its logits, then its taps.
        let mut t_out = match o.kd_weight > 0.0 || self.features.is_some() {
            true => teacher
                .ok_or_else(|| Error::Usage("distillation needs a teacher model".into()))?
                .infer(xt)?
                .into_iter(),
            false => vec![].into_iter(),
        };
        let t_logits = t_out.next();
        let mut loss: Option<Tensor<1>> = None;
        if o.kd_weight < 1.0 {
            let mut onehot = vec![0f32; b * k];
            for (j, &c) in y.iter().enumerate() {
                if c >= k {
                    return Err(Error::Usage(format!(
                        "label {c} is out of range for {k} outputs"
                    )));
                }
                onehot[j * k + c] = 1.0;
            }
            let oh = Tensor::<2>::from_data(TensorData::new(onehot, [b, k]), &device);
            let ce = (log_softmax(logits.clone(), 1) * oh)
                .sum_dim(1)
                .mean()
                .neg();
            loss = Some(ce * (1.0 - o.kd_weight));
        }
        if o.kd_weight > 0.0 {
            let tl = first_output_2d(t_logits)?;
            if tl.dims() != logits.dims() {
                return Err(Error::Usage(format!(
                    "the teacher's output {:?} differs from the student's {:?}",
                    tl.dims(),
                    logits.dims()
                )));
            }
            let tt = o.temperature;
            // Outside autodiff: a constant for the student's graph.
            let pt = softmax(tl / tt, 1);
            let log_pt = pt.clone().clamp_min(1e-12).log();
            let log_ps = log_softmax(logits.clone() / tt, 1);
            let kl = (pt * (log_pt - log_ps)).sum_dim(1).mean() * (tt * tt);
            let kd = kl * o.kd_weight;
            loss = Some(plus(loss, kd));
        }
        if let Some(f) = &self.features {
            let (taps, t_taps): (Vec<Dt>, Vec<Dt>) = (out.collect(), t_out.collect());
            let fd = f.loss(&taps, &t_taps)?;
            loss = Some(plus(loss, fd));
        }
        let loss = loss.expect("one term");
        let acc = if labels {
            let pred = logits
                .clone()
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .unwrap_or_default();
            let right = pred
                .iter()
                .zip(&y)
                .filter(|(p, l)| **p as usize == **l)
                .count();
            Some(right as f32 / b as f32)
        } else {
            None
        };
        Ok((loss, acc, b, updates))
    }
}

/// `a + b`, or `b` when there is no `a` yet: the loss's terms summed as they are added.
pub(super) fn plus(a: Option<Tensor<1>>, b: Tensor<1>) -> Tensor<1> {
    match a {
        Some(a) => a + b,
        None => b,
    }
}

/// The first output as `[batch, classes]`.
fn first_output_2d(out: Option<Dt>) -> Result<Tensor<2>> {
    let o = out.ok_or_else(|| Error::Usage("the model has no output".into()))?;
    let d = o.dims();
    let b = *d.first().unwrap_or(&1);
    let k: usize = d.iter().skip(1).product();
    o.reshape(&[b, k])
        .and_then(|o| o.to2())
        .map_err(Error::Usage)
}
