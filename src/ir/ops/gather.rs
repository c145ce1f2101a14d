//! <https://onnx.ai/onnx/operators/onnx__Gather.html>: output = data[:axis] + indices.shape +
//! data[axis+1:]; negative indices count from the end. Folded for constants; picks symbolic
//! dims out of shape vectors.

use super::{axis, eval, Fact, InferCx, Op, OpDef, OpResult};
use crate::ir::Dim;
use ndarray::{Axis, IxDyn};
use std::sync::Arc;

pub struct Gather;
impl Op for Gather {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let idx = cx.shape(1)?;
        let a = axis(cx.attr_i("axis", 0), x.len())?;
        let mut out = x[..a].to_vec();
        out.extend_from_slice(idx);
        out.extend_from_slice(&x[a + 1..]);
        let indices = cx.const_ints(1);
        if let (Some(ind), Dim::Known(n)) = (&indices, &x[a]) {
            if ind.iter().any(|&i| i < -n || i >= *n) {
                return Err(format!("index out of range for axis of size {n}"));
            }
        }
        if cx.all_const() {
            if let (Some(v), Some(ind), Dim::Known(n)) = (cx.value(0), &indices, &x[a]) {
                let flat: Vec<usize> = ind
                    .iter()
                    .map(|&i| if i < 0 { i + n } else { i } as usize)
                    .collect();
                let shape: Vec<usize> = out
                    .iter()
                    .map(|d| match d {
                        Dim::Known(v) => *v as usize,
                        _ => 0,
                    })
                    .collect();
                eval::check_size(&shape)?;
                let r = crate::arr_try_map!(v, arr => arr.select(Axis(a), &flat).into_shape_with_order(IxDyn(&shape)).ok());
                if let Some(r) = r {
                    return Ok(vec![Fact::from_tensor(Arc::new(r.to_tensor()))]);
                }
            }
        }
        let mut f = Fact::new(cx.dtype(0), Some(out));
        if x.len() == 1 {
            if let (Some(sym), Some(ind)) = (&cx.input(0)?.sym, &indices) {
                let n = sym.len() as i64;
                f.sym = ind
                    .iter()
                    .map(|&i| sym.get((if i < 0 { i + n } else { i }) as usize).cloned())
                    .collect();
            }
        }
        Ok(vec![f])
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const GATHER: &str = "Gather";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[OpDef::new(GATHER, &Gather)];
