//! <https://onnx.ai/onnx/operators/onnx__Pad.html>: before opset 11 `pads` is an attribute; from
//! 11 it is input 1 (int64 [2·rank], begins then ends), input 2 the constant value, and from 18
//! an optional input 3 `axes` restricts the pads to some axes. Negative pads crop.

use super::{axis, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Dim;

/// Per-axis (begin, end) pads, resolved against the input rank. `None` when not constant.
pub fn resolved_pads(cx: &InferCx, rank: usize) -> OpResult<Option<Vec<(i64, i64)>>> {
    let pads = if cx.opset < 11 {
        cx.attr_ints("pads").or(cx.attr_ints("paddings"))
    } else {
        cx.const_ints(1)
    };
    let Some(pads) = pads else { return Ok(None) };
    let axes: Vec<usize> = match cx.opset >= 18 && cx.opt_input(3).is_some() {
        true => match cx.const_ints(3) {
            Some(a) => a.iter().map(|&a| axis(a, rank)).collect::<OpResult<_>>()?,
            None => return Ok(None),
        },
        false => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "pads has {} values for {} axes",
            pads.len(),
            axes.len()
        ));
    }
    let mut out = vec![(0, 0); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[i + axes.len()]);
    }
    Ok(Some(out))
}

pub struct Pad;
impl Op for Pad {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let out = match resolved_pads(cx, x.len())? {
            Some(p) => x
                .iter()
                .zip(p)
                .map(|(d, (b, e))| match d {
                    Dim::Known(n) => {
                        let o = super::dim_i64(*n as i128 + b as i128 + e as i128)?;
                        if o < 0 {
                            Err(format!("padding makes a dimension negative ({o})"))
                        } else {
                            Ok(Dim::Known(o))
                        }
                    }
                    d if b == 0 && e == 0 => Ok(d.clone()),
                    _ => Ok(Dim::Unknown),
                })
                .collect::<OpResult<Vec<_>>>()?,
            None => vec![Dim::Unknown; x.len()],
        };
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("Pad", &Pad)
    .channels(Channels::Pad)
    .zeros(Zeros::Pad)];
