//! Removes `Identity`, and `Dropout` in inference form (no used mask output, no
//! `training_mode` set to true): their output is their input.

use super::{bypass, Pass, PassOptions};
use crate::error::Result;
use crate::ir::ops::names;
use crate::ir::Model;

pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }
    fn run(&self, model: &mut Model, _: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let ids: Vec<_> = g.node_ids().collect();
        let mut n = 0;
        for id in ids {
            let node = g.node(id);
            if !node.is_standard() {
                continue;
            }
            let op = node.op_type.as_str();
            let removable =
                match op {
                    names::IDENTITY => true,
                    names::DROPOUT => {
                        let mask_unused =
                            node.outputs.get(1).copied().flatten().is_none_or(|m| {
                                g.value(m).uses.is_empty() && !g.is_graph_output(m)
                            });
                        let training_off = match node.inputs.get(2).copied().flatten() {
                            None => true,
                            Some(t) => g
                                .foldable_const(t)
                                .and_then(|t| t.as_i64s())
                                .is_some_and(|v| v.iter().all(|&x| x == 0)),
                        };
                        mask_unused && training_off
                    }
                    _ => false,
                };
            let (Some(Some(inp)), Some(Some(out))) =
                (node.inputs.first().copied(), node.outputs.first().copied())
            else {
                continue;
            };
            if removable && bypass(g, id, inp, out) {
                n += 1;
            }
        }
        Ok(n)
    }
}
