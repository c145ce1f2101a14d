//! Normalisations.
//! - <https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>: Y like X; in training mode
//!   (opset 14 `training_mode`) also running mean/var [C].
//! - <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html> (opset 17): Y like X;
//!   optional Mean / InvStdDev with the normalised axes reduced to 1.

use super::{axis, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Dim;

pub struct BatchNorm;
impl Op for BatchNorm {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        let mut out = vec![Fact::new(x.dtype, x.shape.clone())];
        let c = x
            .shape
            .as_ref()
            .and_then(|s| s.get(1).cloned())
            .unwrap_or(Dim::Unknown);
        while out.len() < cx.n_outputs() {
            out.push(Fact::new(x.dtype, Some(vec![c.clone()])));
        }
        Ok(out)
    }
}

pub struct LayerNorm;
impl Op for LayerNorm {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.input(0)?;
        let mut out = vec![Fact::new(x.dtype, x.shape.clone())];
        if cx.n_outputs() > 1 {
            let reduced = match &x.shape {
                Some(s) => {
                    let a = axis(cx.attr_i("axis", -1), s.len())?;
                    Some(
                        s.iter()
                            .enumerate()
                            .map(|(i, d)| if i >= a { Dim::Known(1) } else { d.clone() })
                            .collect(),
                    )
                }
                None => None,
            };
            while out.len() < cx.n_outputs() {
                out.push(Fact::new(None, reduced.clone()));
            }
        }
        Ok(out)
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const BATCH_NORMALIZATION: &str = "BatchNormalization";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(BATCH_NORMALIZATION, &BatchNorm)
        .channels(Channels::PerChannelParams)
        .zeros(Zeros::Norm),
    OpDef::new("InstanceNormalization", &super::elementwise::SameShape)
        .channels(Channels::PerChannelParams)
        .zeros(Zeros::Norm),
    OpDef::new("LayerNormalization", &LayerNorm).channels(Channels::LayerNorm),
    OpDef::new("GroupNormalization", &super::elementwise::SameShape).channels(Channels::GroupNorm),
    OpDef::new("LRN", &super::elementwise::SameShape),
];
