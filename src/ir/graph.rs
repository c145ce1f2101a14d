//! The index-based graph: nodes and values in arenas, wired by [`NodeId`]/[`ValueId`].
//!
//! Invariants (checked by [`Graph::check`], which tests run after every pass):
//! - every `Some(v)` in a live node's `inputs` has a matching [`Use`] in `values[v].uses`, and
//!   every use points back at a live node that really reads `v` there;
//! - every live node output `v` has `values[v].def == ValueDef::Node { node, slot }`;
//! - value names of live values are unique; removed values have `ValueDef::Removed`;
//! - the live nodes form a DAG.
//!
//! Edits go through the methods here, which keep use lists consistent; nothing outside this file
//! touches `uses` directly.
//!
//! The ids and value types are in `value.rs`, nodes and attributes in `node.rs` (re-exported
//! here); the arenas and every edit are here.

use super::tensor::Tensor;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

pub use super::node::*;
pub use super::value::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Option<Node>>,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// `GraphProto` fields the IR does not model (doc_string, sparse initializers, quantization
    /// annotations, metadata_props).
    pub residue: Opaque,
    names: HashSet<String>,
}

impl Graph {
    pub fn new(name: String) -> Graph {
        Graph {
            name,
            ..Default::default()
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0].as_ref().expect("live node")
    }
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id.0].as_mut().expect("live node")
    }
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0]
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NodeId(i))
    }

    pub fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NodeId(i), n)))
    }

    pub fn const_of(&self, v: ValueId) -> Option<&Arc<Tensor>> {
        self.values[v.0].constant().map(|c| &c.tensor)
    }

    /// Treats every initializer that is also listed as a graph input as a constant (foldable,
    /// prunable) instead of an overridable default; the input declarations stay, and the writer
    /// keeps their dims equal to the (possibly pruned) initializer's. Done on read for IR < 4,
    /// where listing initializers as inputs was mandatory; `--constant-initializer-inputs` asks
    /// for it on newer files that still list them. Returns how many it changed.
    pub fn freeze_initializer_inputs(&mut self) -> usize {
        let mut n = 0;
        for v in &mut self.values {
            if let ValueDef::Const(Constant {
                origin: ConstOrigin::Initializer { overridable, .. },
                ..
            }) = &mut v.def
            {
                if *overridable {
                    *overridable = false;
                    n += 1;
                }
            }
        }
        n
    }

    /// Constant that passes may fold through (not an overridable graph-input default).
    pub fn foldable_const(&self, v: ValueId) -> Option<&Arc<Tensor>> {
        match &self.values[v.0].def {
            ValueDef::Const(Constant {
                origin:
                    ConstOrigin::Initializer {
                        overridable: true, ..
                    },
                ..
            }) => None,
            ValueDef::Const(c) => Some(&c.tensor),
            _ => None,
        }
    }

    /// The node computing `v`, when it is a standard-domain `op_type` node.
    pub fn producer(&self, v: ValueId, op_type: &str) -> Option<NodeId> {
        let ValueDef::Node { node, .. } = self.values[v.0].def else {
            return None;
        };
        let n = self.node(node);
        (n.is_standard() && n.op_type == op_type).then_some(node)
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
    }

    /// A name not used by any value yet, derived from `base`.
    pub fn fresh_name(&mut self, base: &str) -> String {
        if !self.names.contains(base) && !base.is_empty() {
            self.names.insert(base.to_string());
            return base.to_string();
        }
        let mut i = 1usize;
        loop {
            let n = format!("{base}__{i}");
            if !self.names.contains(&n) {
                self.names.insert(n.clone());
                return n;
            }
            i += 1;
        }
    }

    /// Adds a value; `name` must be unique (use [`Graph::fresh_name`]).
    pub fn add_value(&mut self, name: String, def: ValueDef) -> ValueId {
        self.names.insert(name.clone());
        self.values.push(Value {
            name,
            def,
            uses: Vec::new(),
            info: None,
            in_value_info: false,
        });
        ValueId(self.values.len() - 1)
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Adds a constant value (emitted as an initializer).
    pub fn add_const(&mut self, name_hint: &str, tensor: Tensor) -> ValueId {
        let name = self.fresh_name(name_hint);
        let index = usize::MAX; // new initializers go after the original ones
        self.add_value(
            name,
            ValueDef::Const(Constant {
                tensor: Arc::new(tensor),
                origin: ConstOrigin::Initializer {
                    index,
                    overridable: false,
                },
                residue: Opaque::default(),
                external: false,
            }),
        )
    }

    /// Adds a node whose input values exist and whose outputs are given as fresh values
    /// (created here from `output_names`). Returns the node id.
    pub fn add_node(&mut self, mut node: Node, output_names: &[String]) -> NodeId {
        let id = NodeId(self.nodes.len());
        node.outputs = output_names
            .iter()
            .enumerate()
            .map(|(slot, n)| {
                if n.is_empty() {
                    None
                } else {
                    let name = self.fresh_name(n);
                    Some(self.add_value(name, ValueDef::Node { node: id, slot }))
                }
            })
            .collect();
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.0].uses.push(Use {
                    node: id,
                    slot: Slot::Input(slot),
                });
            }
        }
        for v in &node.implicit_inputs {
            self.values[v.0].uses.push(Use {
                node: id,
                slot: Slot::Implicit,
            });
        }
        self.nodes.push(Some(node));
        id
    }

    /// Low-level: pushes a node whose outputs were already created pointing at it (loader use).
    pub(crate) fn push_node_raw(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len());
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.0].uses.push(Use {
                    node: id,
                    slot: Slot::Input(slot),
                });
            }
        }
        for v in &node.implicit_inputs {
            self.values[v.0].uses.push(Use {
                node: id,
                slot: Slot::Implicit,
            });
        }
        self.nodes.push(Some(node));
        id
    }

    /// Rewires input `slot` of `node` to `new`.
    pub fn set_input(&mut self, node: NodeId, slot: usize, new: Option<ValueId>) {
        let old = self.node(node).inputs[slot];
        if let Some(o) = old {
            let uses = &mut self.values[o.0].uses;
            if let Some(p) = uses
                .iter()
                .position(|u| u.node == node && u.slot == Slot::Input(slot))
            {
                uses.swap_remove(p);
            }
        }
        self.node_mut(node).inputs[slot] = new;
        if let Some(n) = new {
            self.values[n.0].uses.push(Use {
                node,
                slot: Slot::Input(slot),
            });
        }
    }

    /// Makes every explicit reader of `old` read `new` instead, and graph outputs too.
    /// Returns false (and changes nothing) when `old` is read implicitly by a subgraph, since
    /// those reads are by name.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) -> bool {
        if self.values[old.0]
            .uses
            .iter()
            .any(|u| u.slot == Slot::Implicit)
        {
            return false;
        }
        let uses = std::mem::take(&mut self.values[old.0].uses);
        for u in uses {
            if let Slot::Input(i) = u.slot {
                self.node_mut(u.node).inputs[i] = Some(new);
                self.values[new.0].uses.push(u);
            }
        }
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
        true
    }

    /// Removes a node; its output values become `Removed` (they must be unused).
    pub fn remove_node(&mut self, id: NodeId) {
        let node = self.nodes[id.0].take().expect("live node");
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                let uses = &mut self.values[v.0].uses;
                if let Some(p) = uses
                    .iter()
                    .position(|u| u.node == id && u.slot == Slot::Input(slot))
                {
                    uses.swap_remove(p);
                }
            }
        }
        for v in &node.implicit_inputs {
            self.values[v.0]
                .uses
                .retain(|u| !(u.node == id && u.slot == Slot::Implicit));
        }
        for v in node.outputs.iter().flatten() {
            self.values[v.0].def = ValueDef::Removed;
            self.names.remove(&self.values[v.0].name);
        }
    }

    /// Turns a node output into a constant holding `tensor` (the node is left to dead-code
    /// elimination once all of its outputs are constants or unused).
    pub fn make_const(&mut self, v: ValueId, tensor: Tensor) {
        self.values[v.0].def = ValueDef::Const(Constant {
            tensor: Arc::new(tensor),
            origin: ConstOrigin::Initializer {
                index: usize::MAX,
                overridable: false,
            },
            residue: Opaque::default(),
            external: false,
        });
    }

    /// Replaces a node by constants: each output value keeps its name, uses and position but
    /// becomes a constant holding the matching tensor. `tensors.len()` must equal the number of
    /// outputs; omitted outputs take `None`.
    pub fn fold_node(&mut self, id: NodeId, tensors: Vec<Option<Tensor>>) {
        let node = self.nodes[id.0].take().expect("live node");
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                let uses = &mut self.values[v.0].uses;
                if let Some(p) = uses
                    .iter()
                    .position(|u| u.node == id && u.slot == Slot::Input(slot))
                {
                    uses.swap_remove(p);
                }
            }
        }
        for v in &node.implicit_inputs {
            self.values[v.0]
                .uses
                .retain(|u| !(u.node == id && u.slot == Slot::Implicit));
        }
        for (v, t) in node.outputs.iter().zip(tensors) {
            let (Some(v), Some(t)) = (v, t) else { continue };
            let val = &mut self.values[v.0];
            val.in_value_info = false;
            val.def = ValueDef::Const(Constant {
                tensor: Arc::new(t),
                origin: ConstOrigin::Initializer {
                    index: usize::MAX,
                    overridable: false,
                },
                residue: Opaque::default(),
                external: false,
            });
        }
    }

    /// Drops a constant or otherwise unused value (no uses, not an output).
    pub fn remove_value(&mut self, v: ValueId) {
        debug_assert!(self.values[v.0].uses.is_empty());
        self.values[v.0].def = ValueDef::Removed;
        let name = std::mem::take(&mut self.values[v.0].name);
        self.names.remove(&name);
        self.values[v.0].name = name;
    }

    /// Renames a value (fails if the name is taken or the value is read implicitly).
    pub fn rename_value(&mut self, v: ValueId, name: String) -> bool {
        if self.names.contains(&name)
            || self.values[v.0]
                .uses
                .iter()
                .any(|u| u.slot == Slot::Implicit)
        {
            return false;
        }
        let old = std::mem::replace(&mut self.values[v.0].name, name.clone());
        self.names.remove(&old);
        self.names.insert(name);
        true
    }

    /// Forgets a name (used when a value is being renamed onto a name that is about to free up).
    pub(crate) fn release_name(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub(crate) fn claim_name(&mut self, name: &str) -> bool {
        self.names.insert(name.to_string())
    }

    /// Live nodes in a topological order that follows `order` keys wherever the data
    /// dependencies allow (so an untouched model keeps its node order). Errors on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        let mut heap = BinaryHeap::new();
        for (id, n) in self.live_nodes() {
            let deps = n
                .inputs
                .iter()
                .flatten()
                .chain(n.implicit_inputs.iter())
                .filter(|v| matches!(self.values[v.0].def, ValueDef::Node { .. }))
                .count();
            if deps == 0 {
                heap.push(std::cmp::Reverse((n.order, id)));
            } else {
                indeg.insert(id, deps);
            }
        }
        let mut out = Vec::with_capacity(self.nodes.len());
        while let Some(std::cmp::Reverse((_, id))) = heap.pop() {
            out.push(id);
            for v in self.node(id).outputs.iter().flatten() {
                for u in &self.values[v.0].uses {
                    if let Some(d) = indeg.get_mut(&u.node) {
                        *d -= 1;
                        if *d == 0 {
                            indeg.remove(&u.node);
                            heap.push(std::cmp::Reverse((self.node(u.node).order, u.node)));
                        }
                    }
                }
            }
        }
        if let Some((&id, _)) = indeg.iter().min_by_key(|(k, _)| **k) {
            return Err(id);
        }
        Ok(out)
    }

    /// Verifies the invariants listed at the top of this file.
    pub fn check(&self) -> Result<(), String> {
        for (id, n) in self.live_nodes() {
            for (slot, v) in n.inputs.iter().enumerate() {
                if let Some(v) = v {
                    let val = &self.values[v.0];
                    if matches!(val.def, ValueDef::Removed) {
                        return Err(format!(
                            "node {} reads removed value {}",
                            n.label(id),
                            val.name
                        ));
                    }
                    let c = val
                        .uses
                        .iter()
                        .filter(|u| u.node == id && u.slot == Slot::Input(slot))
                        .count();
                    if c != 1 {
                        return Err(format!("use list of {} out of sync ({c})", val.name));
                    }
                }
            }
            for (slot, v) in n.outputs.iter().enumerate() {
                if let Some(v) = v {
                    if self.values[v.0].def != (ValueDef::Node { node: id, slot }) {
                        return Err(format!(
                            "output {} of {} has a wrong def",
                            self.values[v.0].name,
                            n.label(id)
                        ));
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for (i, v) in self.values.iter().enumerate() {
            if matches!(v.def, ValueDef::Removed) {
                if !v.uses.is_empty() {
                    return Err(format!("removed value {} still has uses", v.name));
                }
                continue;
            }
            if !seen.insert(v.name.as_str()) {
                return Err(format!("duplicate value name {}", v.name));
            }
            for u in &v.uses {
                let Some(n) = self.nodes[u.node.0].as_ref() else {
                    return Err(format!("value {} used by a removed node", v.name));
                };
                let ok = match u.slot {
                    Slot::Input(s) => n.inputs.get(s) == Some(&Some(ValueId(i))),
                    Slot::Implicit => n.implicit_inputs.contains(&ValueId(i)),
                };
                if !ok {
                    return Err(format!("stale use of {}", v.name));
                }
            }
        }
        for o in &self.outputs {
            if matches!(self.values[o.0].def, ValueDef::Removed) {
                return Err(format!(
                    "graph output {} was removed",
                    self.values[o.0].name
                ));
            }
        }
        self.topo_order()
            .map_err(|n| format!("cycle through node {}", self.node(n).label(n)))?;
        Ok(())
    }
}
