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
