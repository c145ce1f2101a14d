//! Constant folding: a node whose outputs all have values known for every accepted input
//! (shape inference in `Declared` mode) is replaced by those constants. Covers Shape/Gather/
//! Concat/Reshape/ConstantOfShape/Cast/Unsqueeze/Squeeze/Slice/Transpose/Range and arithmetic on
//! constants and on statically known shapes.

use super::{Pass, PassOptions};
use crate::analysis::{infer, ShapeMode};
use crate::error::Result;
use crate::ir::{Model, Tensor};
use std::collections::HashMap;

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn run(&self, model: &mut Model, _: &PassOptions) -> Result<usize> {
        let a = infer(model, ShapeMode::Declared, &HashMap::new())?;
        let g = &mut model.graph;
        let ids: Vec<_> = g.node_ids().collect();
        let mut n = 0;
        for id in ids {
            let node = g.node(id);
            if !node.implicit_inputs.is_empty()
                || node.outputs.iter().flatten().any(|&v| g.is_graph_output(v))
            {
                continue;
            }
            // Identity of a constant is handled by the identity pass (keeps one copy).
            if node.op_type == crate::ir::ops::names::IDENTITY {
                continue;
            }
            let tensors: Option<Vec<Option<Tensor>>> = node
                .outputs
                .iter()
                .map(|o| match o {
                    None => Some(None),
                    Some(v) => a.fact(*v).value.as_ref().map(|t| Some((**t).clone())),
                })
                .collect();
            let Some(tensors) = tensors else { continue };
            if tensors.iter().all(|t| t.is_none()) {
                continue;
            }
            g.fold_node(id, tensors);
            n += 1;
        }
        Ok(n)
    }
}
