//! <https://onnx.ai/onnx/operators/onnx__Range.html>: 1-D [start, limit) by delta, of
//! max(ceil((limit − start) / delta), 0) elements.

use super::{eval, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::{Arr, Dim};
use ndarray::ArrayD;
use std::sync::Arc;

pub struct Range;
impl Op for Range {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        if cx.all_const() {
            let r = match (cx.value(0), cx.value(1), cx.value(2)) {
                (Some(Arr::I64(s)), Some(Arr::I64(l)), Some(Arr::I64(d))) => {
                    let (s, l, d) = (first(&s)?, first(&l)?, first(&d)?);
                    if d == 0 {
                        return Err("delta is 0".into());
                    }
                    let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0) as usize;
                    eval::check_size(&[n])?;
                    Some(Arr::I64(ArrayD::from_shape_fn(vec![n], |i| {
                        s.wrapping_add(d.wrapping_mul(i[0] as i64))
                    })))
                }
                (Some(Arr::F32(s)), Some(Arr::F32(l)), Some(Arr::F32(d))) => {
                    let (s, l, d) = (first(&s)?, first(&l)?, first(&d)?);
                    if d == 0.0 {
                        return Err("delta is 0".into());
                    }
                    if !((l - s) / d).is_finite() {
                        return Err("non-finite Range".into());
                    }
                    let n = ((l - s) / d).ceil().max(0.0) as usize;
                    eval::check_size(&[n])?;
                    Some(Arr::F32(ArrayD::from_shape_fn(vec![n], |i| {
                        s + d * i[0] as f32
                    })))
                }
                _ => None,
            };
            if let Some(r) = r {
                return Ok(vec![Fact::from_tensor(Arc::new(r.to_tensor()))]);
            }
        }
        Ok(vec![Fact::new(cx.dtype(0), Some(vec![Dim::Unknown]))])
    }
}

fn first<T: Copy>(a: &ArrayD<T>) -> OpResult<T> {
    a.iter()
        .next()
        .copied()
        .ok_or_else(|| "empty scalar".into())
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new("Range", &Range)];
