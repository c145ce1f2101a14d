//! Running models: the runtimes behind one trait (`runtime`: tract, ONNX Runtime, burn), metrics,
//! and a seeded comparison of two models on random inputs (proves rewrites). Inputs and outputs
//! cross as [`HostTensor`]s (from [`crate::data`]).

pub mod burn_rt;
pub mod metrics;
#[cfg(feature = "ort")]
pub mod ort_rt;
pub mod progress;
pub mod runtime;
#[cfg(feature = "tract")]
pub mod tract_rt;

pub use crate::data::{random_inputs, HostTensor};
use crate::error::{Error, Result};

/// How far apart two sets of outputs are.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Diff {
    /// max |a − b| over all outputs.
    pub max_abs: f64,
    /// max over outputs of max|a − b| / max(max|a|, 1): relative to the output's range, floored
    /// at 1 so that near-zero outputs (saturated probability maps) are compared in absolute terms.
    pub max_rel: f64,
    /// max over outputs of max|a − b| / max(spread(a), [`SPREAD_FLOOR`] · max|a|), spread =
    /// max(a) − min(a) of the reference `a` (an all-zero reference must be matched exactly):
    /// scale-aware, so that outputs far below 1 (random-weight nets whose logits are ~1e-8)
    /// or bunched near one value (a probability map saturated near 0 or 1) are compared
    /// against their own variation, not in absolute terms. What the tests assert.
    pub max_scaled: f64,
}

/// The floor of [`Diff::max_scaled`]'s scale, relative to the output's magnitude: an output
/// that varies by less than a millionth of its magnitude (about 8 float32 ulps) is compared at
/// that resolution instead.
pub const SPREAD_FLOOR: f64 = 1e-6;

pub fn compare(a: &[HostTensor], b: &[HostTensor]) -> Result<Diff> {
    if a.len() != b.len() {
        return Err(Error::Usage(format!(
            "the models have {} and {} outputs",
            a.len(),
            b.len()
        )));
    }
    let mut d = Diff::default();
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.shape != y.shape {
            return Err(Error::Usage(format!(
                "output #{i} has shape {:?} vs {:?}",
                x.shape, y.shape
            )));
        }
        let md = x.data.iter().zip(&y.data).fold(0f64, |m, (p, q)| {
            if p.is_nan() && q.is_nan() {
                m
            } else {
                m.max((*p as f64 - *q as f64).abs())
            }
        });
        // One pass over the reference: its range gives max|a| and the spread.
        let (lo, hi) = x
            .data
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                if v.is_nan() {
                    (l, h)
                } else {
                    (l.min(*v as f64), h.max(*v as f64))
                }
            });
        let (spread, maxabs) = if hi >= lo {
            (hi - lo, lo.abs().max(hi.abs()))
        } else {
            (0.0, 0.0)
        };
        d.max_abs = d.max_abs.max(md);
        d.max_rel = d.max_rel.max(md / maxabs.max(1.0));
        let scale = spread.max(SPREAD_FLOOR * maxabs);
        let scaled = if md == 0.0 {
            0.0
        } else if scale > 0.0 {
            md / scale
        } else {
            f64::INFINITY
        };
        d.max_scaled = d.max_scaled.max(scaled);
    }
    Ok(d)
}

/// The batch size a model's first input fixes (a concrete leading dim), if any: runtimes must
/// then be fed batches of exactly that size.
pub fn fixed_batch(model: &crate::ir::Model) -> Option<usize> {
    let g = &model.graph;
    let v = g
        .inputs
        .iter()
        .find(|&&v| matches!(g.value(v).def, crate::ir::ValueDef::Input))?;
    match g.value(*v).declared_shape()?.first()? {
        crate::ir::Dim::Known(b) if *b > 0 => Some(*b as usize),
        _ => None,
    }
}

/// Concrete shapes of the model's (non-initializer) inputs, in order: declared dims, with
/// `overrides` applied and an unnamed symbolic batch dim set to 1.
pub fn input_shapes(
    model: &crate::ir::Model,
    overrides: &std::collections::HashMap<String, Vec<i64>>,
) -> Result<Vec<Vec<usize>>> {
    let a = crate::analysis::infer(model, crate::analysis::ShapeMode::Bound, overrides)?;
    let g = &model.graph;
    g.inputs
        .iter()
        .filter(|&&v| matches!(g.value(v).def, crate::ir::ValueDef::Input))
        .map(|&v| {
            let name = &g.value(v).name;
            if g.value(v).declared_elem() != Some(crate::ir::DataType::FLOAT) {
                return Err(Error::Usage(format!(
                    "input '{name}' is not float32; only float32 inputs can be generated"
                )));
            }
            let s = a
                .input_shapes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone());
            s.map(|s| s.into_iter().map(|d| d as usize).collect())
                .ok_or_else(|| Error::Usage(format!("input '{name}' has no known shape")))
        })
        .collect()
}

/// A private temporary directory (models handed to runtimes), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "onnx-prune-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TempDir {
    /// Writes `model` (weights inline) into the directory as `name`.
    pub fn save(&self, model: &crate::ir::Model, name: &str) -> Result<std::path::PathBuf> {
        let p = self.0.join(name);
        crate::onnx::save(
            model,
            &p,
            &crate::onnx::SaveOptions {
                external: crate::onnx::ExternalData::None,
            },
            &[],
        )?;
        Ok(p)
    }
}
