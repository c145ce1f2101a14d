//! <https://onnx.ai/onnx/operators/onnx__Expand.html> (broadcast to a shape) and
//! <https://onnx.ai/onnx/operators/onnx__Tile.html> (repeat along each axis).

use super::{broadcast, eval, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::Dim;
use ndarray::IxDyn;
use std::sync::Arc;

pub struct Expand;
impl Op for Expand {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let Some(target) = cx.input(1)?.dims_value() else {
            return Ok(vec![Fact::new(cx.dtype(0), None)]);
        };
        if target.iter().any(|d| matches!(d, Dim::Known(v) if *v < 0)) {
            return Err("negative dimension in the target shape".into());
        }
        let out = broadcast(x, &target)?;
        if cx.all_const() {
            if let (Some(v), Some(shape)) = (cx.value(0), super::concrete(&out)) {
                let us: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                if eval::fits(&us) {
                    if let Some(r) =
                        crate::arr_try_map!(v, a => a.broadcast(IxDyn(&us)).map(|b| b.to_owned()))
                    {
                        return Ok(vec![Fact::from_tensor(Arc::new(r.to_tensor()))]);
                    }
                }
            }
        }
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

pub struct Tile;
impl Op for Tile {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let Some(rep) = cx.const_ints(1) else {
            return Ok(vec![Fact::new(
                cx.dtype(0),
                Some(vec![Dim::Unknown; x.len()]),
            )]);
        };
        if rep.len() != x.len() {
            return Err(format!(
                "repeats has {} values for rank {}",
                rep.len(),
                x.len()
            ));
        }
        let out = x
            .iter()
            .zip(rep)
            .map(|(d, r)| match d {
                Dim::Known(v) if r >= 0 => v.checked_mul(r).map(Dim::Known).unwrap_or(Dim::Unknown),
                Dim::Known(_) => Dim::Unknown,
                d if r == 1 => d.clone(),
                _ => Dim::Unknown,
            })
            .collect();
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("Expand", &Expand), OpDef::new("Tile", &Tile)];
