//! Dead-code elimination: nodes none of whose outputs are read or are graph outputs, and
//! constants nobody reads. Graph inputs are never removed (they are the model's interface),
//! except an initializer listed as an input that was frozen into a constant
//! ([`crate::ir::Graph::freeze_initializer_inputs`]: IR < 4 weights): once nobody reads it (say
//! surgery replaced it by its pruned copy), its declaration and data go.

use super::{Pass, PassOptions};
use crate::error::Result;
use crate::ir::{Model, ValueDef, ValueId};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }
    fn run(&self, model: &mut Model, _: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let mut n = 0;
        let order = g.topo_order().unwrap_or_default();
        for &id in order.iter().rev() {
            let node = g.node(id);
            let dead = node
                .outputs
                .iter()
                .flatten()
                .all(|&v| g.value(v).uses.is_empty() && !g.is_graph_output(v));
            if dead {
                g.remove_node(id);
                n += 1;
            }
        }
        let frozen_unused = |g: &crate::ir::Graph, v: ValueId| {
            g.value(v).uses.is_empty() && !g.is_graph_output(v) && g.foldable_const(v).is_some()
        };
        let inputs = std::mem::take(&mut g.inputs);
        g.inputs = inputs
            .into_iter()
            .filter(|&v| !frozen_unused(g, v))
            .collect();
        for i in 0..g.values.len() {
            let v = ValueId(i);
            if matches!(g.value(v).def, ValueDef::Const(_))
                && g.value(v).uses.is_empty()
                && !g.is_graph_output(v)
                && !g.inputs.contains(&v)
            {
                g.remove_value(v);
                n += 1;
            }
        }
        Ok(n)
    }
}
