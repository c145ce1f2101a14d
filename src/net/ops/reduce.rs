//! Reductions: <https://onnx.ai/onnx/operators/onnx__ReduceMean.html>, ReduceSum, ReduceMax,
//! ReduceMin (axes as an attribute — or, from opset 13 for ReduceSum and 18 for the others, as
//! an input; `keepdims` default 1; `noop_with_empty_axes`).

use super::Entry;
use super::{axis, one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};

pub struct Reduce;

impl BurnOp for Reduce {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let op = cx.node.op_type.as_str();
        let from_input = if op == "ReduceSum" {
            cx.opset >= 13
        } else {
            cx.opset >= 18
        };
        let axes = if from_input {
            cx.ints(ins, 1)?
        } else {
            cx.attr_ints("axes")
        };
        let dims = x.dims();
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|&v| axis(v, dims.len()))
                .collect::<OpResult<_>>()?,
            _ if cx.attr_i("noop_with_empty_axes", 0) != 0 => return one(x),
            _ => (0..dims.len()).collect(),
        };
        let mut t = x.t.clone();
        for &a in &axes {
            let p = x.ax(a);
            t = match op {
                "ReduceMean" => t.mean_dim(p),
                "ReduceSum" => t.sum_dim(p),
                "ReduceMax" => t.max_dim(p),
                "ReduceMin" => t.min_dim(p),
                other => return Err(format!("{other} has no burn implementation")),
            };
        }
        let y = Dt::new(t, x.rank);
        if cx.attr_i("keepdims", 1) != 0 {
            return one(y);
        }
        let out: Vec<usize> = (0..dims.len())
            .filter(|i| !axes.contains(i))
            .map(|i| dims[i])
            .collect();
        one(y.reshape(&out)?)
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("ReduceMean", &Reduce),
    ("ReduceSum", &Reduce),
    ("ReduceMax", &Reduce),
    ("ReduceMin", &Reduce),
];
