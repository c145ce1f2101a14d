//! Matrix products.
//! - <https://onnx.ai/onnx/operators/onnx__Gemm.html>: Y = α·A'·B' + β·C, A' = transA ? Aᵀ : A.
//!   MACs M·N·K.
//! - <https://onnx.ai/onnx/operators/onnx__MatMul.html>: numpy matmul (1-D operands promoted,
//!   batch dims broadcast). MACs ∏batch·M·N·K.

use super::{broadcast, Channels, Fact, InferCx, Linear, Op, OpDef, OpResult, WeightLayout};
use crate::ir::{Dim, Node};

pub struct Gemm;
impl Op for Gemm {
    fn weight_layout(&self, node: &Node) -> Option<WeightLayout> {
        let trans_b = node.attr_i("transB").unwrap_or(0) != 0;
        Some(WeightLayout {
            kind: Linear::Gemm {
                trans_a: node.attr_i("transA").unwrap_or(0) != 0,
                trans_b,
                alpha: node.attr_f("alpha").unwrap_or(1.0),
                beta: node.attr_f("beta").unwrap_or(1.0),
            },
            out_axis: if trans_b { 0 } else { 1 },
            in_axis: if trans_b { 1 } else { 0 },
            group: 1,
        })
    }
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let a = cx.shape(0)?;
        let b = cx.shape(1)?;
        if a.len() != 2 || b.len() != 2 {
            return Err(format!(
                "Gemm needs 2-D operands, got ranks {} and {}",
                a.len(),
                b.len()
            ));
        }
        let (m, ka) = if cx.attr_i("transA", 0) != 0 {
            (&a[1], &a[0])
        } else {
            (&a[0], &a[1])
        };
        let (kb, n) = if cx.attr_i("transB", 0) != 0 {
            (&b[1], &b[0])
        } else {
            (&b[0], &b[1])
        };
        if let (Dim::Known(p), Dim::Known(q)) = (ka, kb) {
            if p != q {
                return Err(format!("inner dimensions differ: {p} vs {q}"));
            }
        }
        Ok(vec![Fact::new(
            cx.dtype(0),
            Some(vec![m.clone(), n.clone()]),
        )])
    }
    fn macs(&self, cx: &InferCx, outputs: &[Fact]) -> OpResult<u64> {
        let y = outputs[0]
            .concrete()
            .ok_or("output shape is not fully known")?;
        let a = cx
            .input(0)?
            .concrete()
            .ok_or("input shape is not fully known")?;
        let k = if cx.attr_i("transA", 0) != 0 {
            a[0]
        } else {
            a[1]
        };
        Ok((y[0] as u64)
            .saturating_mul(y[1] as u64)
            .saturating_mul(k as u64))
    }
}

pub struct MatMul;

fn matmul_shape(a: &[Dim], b: &[Dim]) -> OpResult<(Vec<Dim>, Dim)> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul operands must have rank ≥ 1".into());
    }
    let a2: Vec<Dim> = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let (ab, am) = a2.split_at(a2.len() - 2);
    let (bb, bm) = b2.split_at(b2.len() - 2);
    if let (Dim::Known(p), Dim::Known(q)) = (&am[1], &bm[0]) {
        if p != q {
            return Err(format!("inner dimensions differ: {p} vs {q}"));
        }
    }
    let mut out = broadcast(ab, bb)?;
    if a.len() > 1 {
        out.push(am[0].clone());
    }
    if b.len() > 1 {
        out.push(bm[1].clone());
    }
    Ok((out, am[1].clone()))
}

impl Op for MatMul {
    fn weight_layout(&self, _node: &Node) -> Option<WeightLayout> {
        Some(WeightLayout {
            kind: Linear::MatMul,
            out_axis: 1,
            in_axis: 0,
            group: 1,
        })
    }
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let (out, _) = matmul_shape(cx.shape(0)?, cx.shape(1)?)?;
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
    fn macs(&self, cx: &InferCx, outputs: &[Fact]) -> OpResult<u64> {
        let (_, k) = matmul_shape(cx.shape(0)?, cx.shape(1)?)?;
        let Dim::Known(k) = k else {
            return Err("inner dimension is not known".into());
        };
        let y = outputs[0]
            .concrete()
            .ok_or("output shape is not fully known")?;
        Ok(y.iter().fold(k as u64, |a, &d| a.saturating_mul(d as u64)))
    }
}

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new("Gemm", &Gemm).channels(Channels::Gemm),
    OpDef::new("MatMul", &MatMul).channels(Channels::MatMul),
];
