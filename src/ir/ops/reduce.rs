//! Reductions: <https://onnx.ai/onnx/operators/onnx__ReduceMean.html> and siblings. `axes` is an
//! attribute before opset 18 (ReduceSum: before 13) and input 1 after; `keepdims` defaults to 1;
//! `noop_with_empty_axes`. ArgMax/ArgMin: <https://onnx.ai/onnx/operators/onnx__ArgMax.html>.

use super::{axis, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::{DataType, Dim};

pub struct Reduce;
impl Op for Reduce {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let input_axes = cx.opset >= 18 || (cx.node.op_type == "ReduceSum" && cx.opset >= 13);
        let axes = if input_axes {
            match cx.opt_input(1) {
                Some(f) => match f.ints() {
                    Some(a) => Some(a),
                    None => return Ok(vec![Fact::new(cx.dtype(0), None)]),
                },
                None => None,
            }
        } else {
            cx.attr_ints("axes")
        };
        let keep = cx.attr_i("keepdims", 1) != 0;
        let axes: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
            Some(a) => a
                .iter()
                .map(|&a| axis(a, x.len()))
                .collect::<OpResult<_>>()?,
            None if cx.attr_i("noop_with_empty_axes", 0) != 0 => {
                return Ok(vec![Fact::new(cx.dtype(0), Some(x.to_vec()))]);
            }
            None => (0..x.len()).collect(),
        };
        let out = x
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keep) {
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
                _ => Some(d.clone()),
            })
            .collect();
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

pub struct ArgReduce;
impl Op for ArgReduce {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let a = axis(cx.attr_i("axis", 0), x.len())?;
        let keep = cx.attr_i("keepdims", 1) != 0;
        let out = x
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                if i == a {
                    keep.then_some(Dim::Known(1))
                } else {
                    Some(d.clone())
                }
            })
            .collect();
        Ok(vec![Fact::new(Some(DataType::INT64), Some(out))])
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const REDUCE_MEAN: &str = "ReduceMean";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(REDUCE_MEAN, &Reduce)
        .channels(Channels::Reduce)
        .zeros(Zeros::Preserves),
    OpDef::new("ReduceSum", &Reduce)
        .channels(Channels::Reduce)
        .zeros(Zeros::Preserves),
    OpDef::new("ReduceMax", &Reduce)
        .channels(Channels::Reduce)
        .zeros(Zeros::Preserves),
    OpDef::new("ReduceMin", &Reduce)
        .channels(Channels::Reduce)
        .zeros(Zeros::Preserves),
    OpDef::new("ReduceProd", &Reduce),
    OpDef::new("ReduceL1", &Reduce),
    OpDef::new("ReduceL2", &Reduce),
    OpDef::new("ReduceSumSquare", &Reduce),
    OpDef::new("ReduceLogSumExp", &Reduce),
    OpDef::new("ArgMax", &ArgReduce),
    OpDef::new("ArgMin", &ArgReduce),
];
