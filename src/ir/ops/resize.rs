//! Resizing.
//! - <https://onnx.ai/onnx/operators/onnx__Resize.html>: opset 10 (X, scales); 11+ (X, roi,
//!   scales, sizes); 18+ `axes` attribute. Output = sizes, or floor(input·scale).
//! - <https://onnx.ai/onnx/operators/onnx__Upsample.html> (deprecated): scales attribute (≤ 8)
//!   or input 1 (9).

use super::{axis, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Dim;
use crate::ir::{Graph, NodeId};

pub struct Resize;
impl Op for Resize {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let r = x.len();
        let upsample = cx.node.op_type == "Upsample";
        let (scales_in, sizes_in) = if upsample || cx.opset < 11 {
            (1, usize::MAX)
        } else {
            (2, 3)
        };
        let axes: Vec<usize> = match cx.attr_ints("axes") {
            Some(a) => a.iter().map(|&a| axis(a, r)).collect::<OpResult<_>>()?,
            None => (0..r).collect(),
        };
        let mut out: Vec<Dim> = x.to_vec();
        let sizes = cx.const_ints(sizes_in).filter(|s| !s.is_empty());
        let scales: Option<Vec<f32>> = if upsample && cx.opset < 9 {
            cx.node.attr("scales").and_then(|a| match a {
                crate::ir::AttrValue::Floats(f) => Some(f.clone()),
                _ => None,
            })
        } else {
            cx.opt_input(scales_in)
                .and_then(|f| f.value.as_ref())
                .and_then(|t| t.as_f32s())
                .filter(|s| !s.is_empty())
        };
        if let Some(sizes) = sizes {
            if sizes.len() != axes.len() {
                return Err(format!(
                    "sizes has {} values for {} axes",
                    sizes.len(),
                    axes.len()
                ));
            }
            for (&a, s) in axes.iter().zip(sizes) {
                out[a] = Dim::Known(s);
            }
        } else if let Some(scales) = scales {
            if scales.len() != axes.len() {
                return Err(format!(
                    "scales has {} values for {} axes",
                    scales.len(),
                    axes.len()
                ));
            }
            for (&a, s) in axes.iter().zip(scales) {
                out[a] = match &x[a] {
                    _ if s == 1.0 => x[a].clone(),
                    Dim::Known(n) => Dim::Known((*n as f64 * s as f64).floor() as i64),
                    _ => Dim::Unknown,
                };
            }
        } else {
            out = vec![Dim::Unknown; r];
        }
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
}

/// torch's `F.interpolate(x, size=…)` export: `sizes = Concat(Slice(Shape(x), [0], [k]), hw)`
/// (axis 0, k past the channel axis) with x the Resize's own input. The channel entry is then
/// x's channel count at run time, so it follows pruning without a rewrite.
pub fn sizes_follow_input(g: &Graph, resize: NodeId, axis: usize) -> bool {
    let n = g.node(resize);
    let (Some(x), Some(sz)) = (
        n.inputs.first().copied().flatten(),
        n.inputs.get(3).copied().flatten(),
    ) else {
        return false;
    };
    let Some(cat) = g.producer(sz, super::names::CONCAT) else {
        return false;
    };
    let cat = g.node(cat);
    let Some(Some(first)) = cat.inputs.first().copied() else {
        return false;
    };
    let Some(sl) = g.producer(first, super::names::SLICE).map(|s| g.node(s)) else {
        return false;
    };
    let ints = |i: usize| -> Option<Vec<i64>> {
        let v = sl.inputs.get(i).copied().flatten()?;
        g.foldable_const(v)?.as_i64s()
    };
    let optional_is = |i: usize, want: i64| {
        sl.inputs.get(i).copied().flatten().is_none() || ints(i) == Some(vec![want])
    };
    let covers_channels = ints(2).is_some_and(|e| e.len() == 1 && e[0] > axis as i64);
    let Some(Some(shape_in)) = sl.inputs.first().copied() else {
        return false;
    };
    let Some(sh) = g.producer(shape_in, super::names::SHAPE).map(|s| g.node(s)) else {
        return false;
    };
    cat.attr_i("axis") == Some(0)
        && ints(1) == Some(vec![0])
        && covers_channels
        && optional_is(3, 0)
        && optional_is(4, 1)
        && sh.attr_i("start").unwrap_or(0) == 0
        && sh.inputs.first().copied().flatten() == Some(x)
}

/// Op types other passes name (when they build or recognise such nodes).
pub const RESIZE: &str = "Resize";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(RESIZE, &Resize)
        .channels(Channels::Resize)
        .zeros(Zeros::Preserves),
    OpDef::new("Upsample", &Resize)
        .channels(Channels::Resize)
        .zeros(Zeros::Preserves),
];
