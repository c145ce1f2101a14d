//! tract runtime: loads an ONNX file with tract-onnx, fixes input shapes, runs it on CPU.

use super::HostTensor;
use crate::error::{Error, Result};
use std::path::Path;
use tract_onnx::prelude::*;

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::bad_file(path, format!("tract: {e}"))
}

/// Runs the model at `path` on `inputs` (in graph-input order). All inputs must be f32.
pub fn run(path: &Path, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
    let mut model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| err(path, format!("{e:#}")))?;
    for (i, t) in inputs.iter().enumerate() {
        model
            .set_input_fact(i, f32::fact(&t.shape).into())
            .map_err(|e| err(path, format!("{e:#}")))?;
    }
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| err(path, format!("{e:#}")))?;
    let feeds: TVec<TValue> = inputs
        .iter()
        .map(|t| {
            tract_ndarray::ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
                .map(|a| Tensor::from(a).into())
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| err(path, e))?;
    let outs = plan.run(feeds).map_err(|e| err(path, format!("{e:#}")))?;
    outs.iter()
        .map(|t| {
            let t = t.cast_to::<f32>().map_err(|e| err(path, e))?;
            let v = t.to_plain_array_view::<f32>().map_err(|e| err(path, e))?;
            Ok(HostTensor {
                shape: v.shape().to_vec(),
                data: v.iter().copied().collect(),
            })
        })
        .collect()
}

/// A model compiled once for a fixed batch size; the last partial batch is zero-padded.
pub struct Batched {
    plan: std::sync::Arc<TypedRunnableModel>,
    batch: usize,
    chw: (usize, usize, usize),
}

impl Batched {
    pub fn new(path: &Path, batch: usize, chw: (usize, usize, usize)) -> Result<Batched> {
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(path, format!("{e:#}")))?;
        model
            .set_input_fact(0, f32::fact([batch, chw.0, chw.1, chw.2]).into())
            .map_err(|e| err(path, format!("{e:#}")))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(path, format!("{e:#}")))?;
        Ok(Batched { plan, batch, chw })
    }
}

impl super::runtime::Runtime for Batched {
    fn for_each_batch(
        &mut self,
        x: &[f32],
        n: usize,
        sink: &mut dyn FnMut(usize, Vec<HostTensor>) -> Result<()>,
    ) -> Result<()> {
        use rayon::prelude::*;
        let l = self.chw.0 * self.chw.1 * self.chw.2;
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(self.batch)
            .map(|s| (s, (s + self.batch).min(n)))
            .collect();
        let progress = super::progress::Progress::new("tract", n);
        // Batches run in parallel in waves of one per thread; the sink sees them in order.
        let wave = rayon::current_num_threads().max(1);
        for w in chunks.chunks(wave) {
            let outs: Vec<Result<Vec<HostTensor>>> = w
                .par_iter()
                .map(|&(s, e)| {
                    let mut buf = vec![0f32; self.batch * l];
                    buf[..(e - s) * l].copy_from_slice(&x[s * l..e * l]);
                    let t = tract_ndarray::ArrayD::from_shape_vec(
                        vec![self.batch, self.chw.0, self.chw.1, self.chw.2],
                        buf,
                    )
                    .map_err(|e| Error::Usage(e.to_string()))?;
                    let out = self
                        .plan
                        .run(tvec!(Tensor::from(t).into()))
                        .map_err(|e| Error::Usage(format!("tract: {e:#}")))?;
                    let mut v = Vec::with_capacity(out.len());
                    for o in out.iter() {
                        let o = o
                            .cast_to::<f32>()
                            .map_err(|e| Error::Usage(e.to_string()))?;
                        let a = o
                            .to_plain_array_view::<f32>()
                            .map_err(|e| Error::Usage(e.to_string()))?;
                        let mut shape = a.shape().to_vec();
                        let data: Vec<f32> = if shape.first() == Some(&self.batch) {
                            // Cut the zero padding of a partial last batch.
                            let per = a.len() / self.batch;
                            shape[0] = e - s;
                            a.iter().copied().take((e - s) * per).collect()
                        } else {
                            a.iter().copied().collect()
                        };
                        v.push(HostTensor { shape, data });
                    }
                    progress.inc(e - s);
                    Ok(v)
                })
                .collect();
            for (o, &(s, _)) in outs.into_iter().zip(w) {
                sink(s, o?)?;
            }
        }
        Ok(())
    }
}

/// Runs both models on `runs` seeded random input sets of the given shapes and returns the
/// worst difference of their outputs.
pub fn compare_models(
    a: &Path,
    b: &Path,
    shapes: &[Vec<usize>],
    seed: u64,
    runs: u64,
) -> Result<super::Diff> {
    let sets: Vec<_> = (0..runs)
        .map(|r| super::random_inputs(shapes, seed.wrapping_add(r)))
        .collect();
    compare_on(a, b, &sets)
}

/// Runs both models on each of the given input sets and returns the worst difference.
pub fn compare_on(a: &Path, b: &Path, sets: &[Vec<HostTensor>]) -> Result<super::Diff> {
    let mut worst = super::Diff::default();
    for inputs in sets {
        let d = super::compare(&run(a, inputs)?, &run(b, inputs)?)?;
        worst.max_abs = worst.max_abs.max(d.max_abs);
        worst.max_rel = worst.max_rel.max(d.max_rel);
        worst.max_scaled = worst.max_scaled.max(d.max_scaled);
    }
    Ok(worst)
}
