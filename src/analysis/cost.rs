//! The cost model: MACs per node and parameter counts.
//!
//! MACs (what `--target-flops` counts): Conv N·Cout·Hout·Wout·(Cin/group)·∏kernel;
//! ConvTranspose N·Cin·Hin·Win·(Cout/group)·∏kernel; Gemm M·N·K; MatMul ∏batch·M·N·K;
//! everything else 0. Params: elements of floating-point constants (weights, biases, BN
//! parameters), each counted once however many nodes read it.

use super::shapes::Analysis;
use crate::error::{Error, Result};
use crate::ir::ops::{self, InferCx};
use crate::ir::{Model, NodeId, ValueDef};

#[derive(Clone, Debug, Default)]
pub struct CostReport {
    pub macs: u64,
    pub params: u64,
    /// MACs per node that has any, in topological order.
    pub per_node: Vec<(NodeId, u64)>,
}

pub fn cost(model: &Model, a: &Analysis) -> Result<CostReport> {
    let g = &model.graph;
    let mut r = CostReport::default();
    for v in &g.values {
        if let ValueDef::Const(c) = &v.def {
            if c.tensor.dtype.is_float() {
                r.params = r.params.saturating_add(c.tensor.numel());
            }
        }
    }
    let order = g
        .topo_order()
        .map_err(|n| Error::Invalid(format!("cycle through node {}", g.node(n).label(n))))?;
    for id in order {
        let node = g.node(id);
        // MACs are counted for the ops with a weight (Conv, ConvTranspose, Gemm, MatMul).
        let Some(op) = ops::lookup(node).filter(|op| op.weight_layout(node).is_some()) else {
            continue;
        };
        let root = a
            .errors
            .first()
            .filter(|(n, _)| *n != id)
            .map(|(n, m)| {
                format!(
                    " (first inference failure: node {}: {m})",
                    g.node(*n).label(*n)
                )
            })
            .unwrap_or_default();
        if let Some((_, e)) = a.errors.iter().find(|(n, _)| *n == id) {
            return Err(Error::Node {
                node: node.label(id),
                msg: format!("cannot infer shapes: {e}{root}"),
            });
        }
        let cx = InferCx {
            node,
            opset: model.opset(),
            inputs: node.inputs.iter().map(|i| i.map(|v| a.fact(v))).collect(),
            eval: false,
        };
        let outs: Vec<_> = node
            .outputs
            .iter()
            .map(|o| o.map(|v| a.fact(v).clone()).unwrap_or_default())
            .collect();
        let macs = op.macs(&cx, &outs).map_err(|e| Error::Node {
            node: node.label(id),
            msg: format!("cannot count MACs: {e}{root}"),
        })?;
        r.macs = r.macs.saturating_add(macs);
        r.per_node.push((id, macs));
    }
    Ok(r)
}
