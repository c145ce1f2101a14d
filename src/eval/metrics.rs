//! Classification metrics: top-k accuracy against labels, and fidelity to a reference model
//! (top-1 agreement, mean KL divergence of the softmax outputs).

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
}

/// `logits` is `[n, k]` row-major.
pub fn accuracy(logits: &[f32], k: usize, labels: &[i64]) -> Accuracy {
    let n = labels.len().min(logits.len() / k.max(1));
    let (mut t1, mut t5) = (0usize, 0usize);
    for i in 0..n {
        let row = &logits[i * k..(i + 1) * k];
        let y = labels[i];
        let target = row.get(y as usize).copied().unwrap_or(f32::NEG_INFINITY);
        // Rank of the label: how many classes score strictly higher (ties favour the label's
        // lower index, like argmax).
        let higher = row
            .iter()
            .enumerate()
            .filter(|&(j, &v)| v > target || (v == target && (j as i64) < y))
            .count();
        t1 += (higher == 0) as usize;
        t5 += (higher < 5) as usize;
    }
    let d = n.max(1) as f64;
    Accuracy {
        n,
        top1: t1 as f64 / d,
        top5: t5 as f64 / d,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fidelity {
    /// Top-1 agreement (classifiers).
    pub agreement: f64,
    /// Mean KL(p_reference ‖ p_model) of softmax outputs (classifiers).
    pub kl: f64,
    /// Σ(a−b)² / Σa² over every output element: the measure for non-classifier outputs
    /// (detection/segmentation maps), meaningful for classifiers too.
    pub rel_mse: f64,
}

impl Fidelity {
    /// The label-free score the search maximises: 1 / (1 + relative MSE) — 1 for identical
    /// outputs, continuous, scale-free, defined for any output. Top-1 agreement is flat where
    /// the original's predictions are (random-weight models predict one class for every
    /// input: agreement 1.0 for every plan), so the search does not use it.
    pub fn score(&self) -> f64 {
        1.0 / (1.0 + self.rel_mse.max(0.0))
    }
}

/// What the search maximises for a candidate (`--reward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reward {
    /// Top-1 accuracy against the labels.
    Top1,
    /// Mean softmax probability of the true label ("expected top-1"): on the scale of top-1,
    /// but it moves with every sample's confidence instead of only at flips of the arg-max,
    /// so on a few hundred validation images it ranks plans more like the test set does.
    Soft,
    /// Label-free: [`Fidelity::score`] against the original's outputs.
    Fidelity,
}

impl Reward {
    pub fn parse(s: &str) -> Option<Reward> {
        match s {
            "top1" => Some(Reward::Top1),
            "soft" => Some(Reward::Soft),
            "fidelity" => Some(Reward::Fidelity),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reward::Top1 => "top1",
            Reward::Soft => "soft",
            Reward::Fidelity => "fidelity",
        }
    }

    /// What it measures, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Reward::Top1 => "top-1",
            Reward::Soft => "mean probability of the true label (soft top-1)",
            Reward::Fidelity => "1/(1 + relative MSE) to the original's outputs",
        }
    }

    /// Fidelity when there are no labels to score against.
    pub fn with_labels(self, labels: bool) -> Reward {
        if labels {
            self
        } else {
            Reward::Fidelity
        }
    }

    /// The score of a candidate's outputs `model` (k per sample) against `labels`, or against
    /// the original's outputs `reference` ([`Reward::Fidelity`], or without labels).
    pub fn score(self, reference: &[f32], model: &[f32], k: usize, labels: Option<&[i64]>) -> f64 {
        match (self, labels) {
            (Reward::Top1, Some(y)) => accuracy(model, k, y).top1,
            (Reward::Soft, Some(y)) => soft_accuracy(model, k, y),
            _ => fidelity(reference, model, k).score(),
        }
    }
}

/// Top-1 with labels, else [`Fidelity::score`] against the original's outputs `reference`.
pub fn reward(reference: &[f32], model: &[f32], k: usize, labels: Option<&[i64]>) -> f64 {
    Reward::Top1.score(reference, model, k, labels)
}

/// Mean softmax probability of the label (`logits` is `[n, k]` row-major; a label outside
/// the classes scores 0).
pub fn soft_accuracy(logits: &[f32], k: usize, labels: &[i64]) -> f64 {
    let n = labels.len().min(logits.len() / k.max(1));
    let mut sum = 0.0;
    for (i, &y) in labels[..n].iter().enumerate() {
        if let Some(p) = softmax(&logits[i * k..(i + 1) * k]).get(y as usize) {
            sum += p;
        }
    }
    sum / n.max(1) as f64
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// Agreement of top-1 predictions, mean KL(p_reference ‖ p_model), relative MSE.
pub fn fidelity(reference: &[f32], model: &[f32], k: usize) -> Fidelity {
    let n = (reference.len().min(model.len())) / k.max(1);
    let (mut agree, mut kl) = (0usize, 0f64);
    let (mut se, mut ss) = (0f64, 0f64);
    for (&a, &b) in reference[..n * k].iter().zip(&model[..n * k]) {
        se += (a as f64 - b as f64) * (a as f64 - b as f64);
        ss += a as f64 * a as f64;
    }
    for i in 0..n {
        let (a, b) = (&reference[i * k..(i + 1) * k], &model[i * k..(i + 1) * k]);
        agree += (argmax(a) == argmax(b)) as usize;
        let (p, q) = (softmax(a), softmax(b));
        kl += p
            .iter()
            .zip(&q)
            .map(|(&p, &q)| {
                if p > 0.0 {
                    p * (p / q.max(1e-300)).ln()
                } else {
                    0.0
                }
            })
            .sum::<f64>();
    }
    let d = n.max(1) as f64;
    Fidelity {
        agreement: agree as f64 / d,
        kl: kl / d,
        rel_mse: se / ss.max(1e-30),
    }
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| crate::order::fcmp(v[a], v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of two equally long series (Pearson on tie-averaged ranks);
/// `None` when fewer than two points or a series is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        // Monotone: 1; reversed: -1; one swap among 5: 1 - 6·2/(5·24) = 0.9.
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 3.0, 2.0, 4.0, 5.0]).unwrap();
        assert!((r - 0.9).abs() < 1e-12, "{r}");
        // Ties get averaged ranks; a constant series has no correlation.
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn soft_accuracy_is_the_mean_probability_of_the_label() {
        // Row 0: logits (0, ln 3) → p = (1/4, 3/4); row 1: equal logits → (1/2, 1/2).
        let l = [0.0, 3f32.ln(), 1.0, 1.0];
        let s = soft_accuracy(&l, 2, &[1, 0]);
        assert!((s - (0.75 + 0.5) / 2.0).abs() < 1e-6, "{s}");
        // Top-1 counts row 0 and (ties to the lower index) row 1: 1.0; soft stays below it.
        assert_eq!(Reward::Top1.score(&l, &l, 2, Some(&[1, 0])), 1.0);
        assert_eq!(Reward::Soft.score(&l, &l, 2, Some(&[1, 0])), s);
        // Without labels every reward is the label-free fidelity (1 for identical outputs).
        assert_eq!(Reward::Soft.score(&l, &l, 2, None), 1.0);
        assert_eq!(Reward::Soft.with_labels(false), Reward::Fidelity);
    }
}
