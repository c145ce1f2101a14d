//! Channel dependency analysis: which channels must be removed together.
//!
//! Every tensor that carries channels gets a *space*: (value, axis, length), with one *slot*
//! per channel. Ops relate slots (a union-find over all slots): a residual `Add` joins slot `i`
//! of both operands, a channel `Concat` joins its output slots to the inputs' at offsets, a
//! `Flatten` joins channel `c` to features `[c·s, (c+1)·s)`, a depthwise conv joins input and
//! output channels. A connected set of slots is an *atom*: it is kept or removed as a whole.
//! Atoms that share spaces form a *group*, the unit a pruning plan talks about.
//!
//! Slots are *blocked* when removing them cannot be proven output-preserving: graph inputs and
//! outputs, ops the tool cannot map, shapes it cannot prove. A blocked slot blocks its atom.
//! Rules per op are data: an op's registry row (`ir::ops::OpDef::channels`) names its kind of
//! channel behaviour, and `rules::rule` maps each kind to its transfer function (in `rules/`,
//! by family: weights, per-channel normalisations, pointwise, layout).

use super::shapes::Analysis;
use crate::ir::{Graph, Model, NodeId, ValueId};
use std::collections::HashMap;

pub type SpaceId = usize;

#[derive(Clone, Debug)]
pub struct Space {
    pub value: ValueId,
    pub axis: usize,
    pub len: usize,
    /// First slot index of this space.
    pub base: usize,
}

/// How a node uses its channel spaces (what the rewrite must slice).
#[derive(Clone, Debug, PartialEq)]
pub enum Role {
    /// Output channels produced (Conv/ConvTranspose/Gemm/MatMul with a constant weight).
    Producer { node: NodeId, space: SpaceId },
    /// Input channels consumed through a weight.
    Consumer { node: NodeId, space: SpaceId },
}

#[derive(Clone, Debug)]
pub struct Atom {
    pub slots: Vec<usize>,
    pub group: usize,
    pub blocked: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Group {
    /// Stable key: first producer's node name (or first value's name) and its channel count.
    pub key: String,
    /// Atoms in plan order (ordered by their first slot in the group's first space).
    pub atoms: Vec<usize>,
    pub spaces: Vec<SpaceId>,
    pub producers: Vec<NodeId>,
    pub consumers: Vec<NodeId>,
    /// Why no atom of the group can be removed, if so.
    pub declined: Option<String>,
}

impl Group {
    pub fn channels(&self) -> usize {
        self.atoms.len()
    }

    /// The nodes producing or consuming the group's channels, each once (a depthwise conv is
    /// both), in id order.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self
            .producers
            .iter()
            .chain(&self.consumers)
            .copied()
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

#[derive(Clone, Debug, Default)]
pub struct ChannelAnalysis {
    pub spaces: Vec<Space>,
    pub space_of: HashMap<ValueId, SpaceId>,
    pub roles: Vec<Role>,
    parent: Vec<usize>,
    blocked: Vec<Option<String>>,
    /// Slots that are constant zero (channel padding).
    pub zero_slot: Vec<bool>,
    /// (space, g): the space's channels fall in `g` equal consecutive partitions (grouped conv
    /// groups) that must all keep the same number of channels.
    pub equal_parts: Vec<(SpaceId, usize)>,
    pub atoms: Vec<Atom>,
    pub atom_of_slot: Vec<usize>,
    pub groups: Vec<Group>,
}

impl ChannelAnalysis {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
    fn new_space(&mut self, value: ValueId, axis: usize, len: usize) -> SpaceId {
        let base = self.parent.len();
        for i in 0..len {
            self.parent.push(base + i);
            self.blocked.push(None);
            self.zero_slot.push(false);
        }
        self.spaces.push(Space {
            value,
            axis,
            len,
            base,
        });
        let id = self.spaces.len() - 1;
        self.space_of.insert(value, id);
        id
    }
    fn block_space(&mut self, s: SpaceId, why: &str) {
        let sp = &self.spaces[s];
        for i in sp.base..sp.base + sp.len {
            if self.blocked[i].is_none() {
                self.blocked[i] = Some(why.to_string());
            }
        }
    }
    fn union_spaces(&mut self, a: SpaceId, b: SpaceId) -> bool {
        let (sa, sb) = (self.spaces[a].clone(), self.spaces[b].clone());
        if sa.len != sb.len {
            return false;
        }
        for i in 0..sa.len {
            self.union(sa.base + i, sb.base + i);
        }
        true
    }
    /// Slot index of channel `i` of space `s`.
    pub fn slot(&self, s: SpaceId, i: usize) -> usize {
        self.spaces[s].base + i
    }
    /// Atom of channel `i` of space `s`.
    pub fn atom(&self, s: SpaceId, i: usize) -> usize {
        self.atom_of_slot[self.slot(s, i)]
    }
    /// Kept channel indices of a space, given which atoms are kept.
    pub fn kept(&self, s: SpaceId, keep_atom: &[bool]) -> Vec<usize> {
        (0..self.spaces[s].len)
            .filter(|&i| keep_atom[self.atom(s, i)])
            .collect()
    }
}

/// Context for one node's transfer rule.
struct Cx<'a> {
    g: &'a Graph,
    a: &'a Analysis,
    ch: &'a mut ChannelAnalysis,
    id: NodeId,
}

impl Cx<'_> {
    fn node(&self) -> &crate::ir::Node {
        self.g.node(self.id)
    }
    fn input(&self, i: usize) -> Option<ValueId> {
        self.node().inputs.get(i).copied().flatten()
    }
    fn output(&self, i: usize) -> Option<ValueId> {
        self.node().outputs.get(i).copied().flatten()
    }
    fn shape(&self, v: ValueId) -> Option<Vec<i64>> {
        self.a.fact(v).concrete()
    }
    fn space(&self, v: Option<ValueId>) -> Option<SpaceId> {
        v.and_then(|v| self.ch.space_of.get(&v).copied())
    }
    fn is_const(&self, v: ValueId) -> bool {
        self.g.foldable_const(v).is_some()
    }
    /// Whether the node has outputs beyond the first (normalisations' statistics outputs).
    fn extra_outputs_used(&self) -> bool {
        self.node().outputs.iter().skip(1).flatten().count() > 0
    }
    /// Blocks every channel space among the node's inputs.
    fn block_inputs(&mut self, why: &str) {
        let ins: Vec<_> = self
            .node()
            .inputs
            .iter()
            .flatten()
            .chain(self.node().implicit_inputs.iter())
            .copied()
            .collect();
        for v in ins {
            if let Some(s) = self.ch.space_of.get(&v).copied() {
                let why = format!("{why} ({})", self.g.node(self.id).label(self.id));
                self.ch.block_space(s, &why);
            }
        }
    }
    /// Output 0 carries the same channels as input `i` (on the same axis).
    fn alias(&mut self, i: usize) {
        if let (Some(s), Some(o)) = (self.space(self.input(i)), self.output(0)) {
            self.ch.space_of.insert(o, s);
        }
    }
}

mod rules;

/// Runs the analysis. `a` must be a [`super::ShapeMode::Bound`] analysis of `model`.
pub fn analyse(model: &Model, a: &Analysis) -> ChannelAnalysis {
    let g = &model.graph;
    let mut ch = ChannelAnalysis::default();
    let order = g.topo_order().unwrap_or_default();
    for id in order {
        let node = g.node(id);
        let rule = crate::ir::ops::def(node).and_then(|d| rules::rule(d.channels));
        let mut cx = Cx {
            g,
            a,
            ch: &mut ch,
            id,
        };
        match rule {
            Some(r) => {
                if let Err(why) = r(&mut cx) {
                    cx.block_inputs(&why);
                    // Outputs get no space (downstream sees them as untracked).
                }
            }
            None => cx.block_inputs(&format!("op {} is not channel-mapped", node.op_type)),
        }
        // A node that reads a space value implicitly (subgraph) blocks it.
        if !node.implicit_inputs.is_empty() {
            let mut cx = Cx {
                g,
                a,
                ch: &mut ch,
                id,
            };
            cx.block_inputs("read inside a subgraph");
        }
    }
    for &o in &g.outputs {
        if let Some(&s) = ch.space_of.get(&o) {
            ch.block_space(s, &format!("graph output '{}'", g.value(o).name));
        }
    }
    finish(&mut ch, g);
    ch
}

fn finish(ch: &mut ChannelAnalysis, g: &Graph) {
    let n = ch.parent.len();
    let mut root_atom: HashMap<usize, usize> = HashMap::new();
    ch.atom_of_slot = vec![0; n];
    ch.atoms.clear();
    for s in 0..n {
        let r = ch.find(s);
        let a = *root_atom.entry(r).or_insert_with(|| {
            ch.atoms.push(Atom {
                slots: vec![],
                group: 0,
                blocked: None,
            });
            ch.atoms.len() - 1
        });
        ch.atom_of_slot[s] = a;
        ch.atoms[a].slots.push(s);
        if ch.atoms[a].blocked.is_none() {
            ch.atoms[a].blocked = ch.blocked[s].clone();
        }
    }
    // Groups: union spaces that share an atom.
    let ns = ch.spaces.len();
    let mut sp_parent: Vec<usize> = (0..ns).collect();
    fn f(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let slot_space: Vec<usize> = {
        let mut v = vec![0; n];
        for (i, s) in ch.spaces.iter().enumerate() {
            v[s.base..s.base + s.len].fill(i);
        }
        v
    };
    for atom in &ch.atoms {
        let first = slot_space[atom.slots[0]];
        for &s in &atom.slots[1..] {
            let (a, b) = (f(&mut sp_parent, first), f(&mut sp_parent, slot_space[s]));
            if a != b {
                sp_parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    ch.groups.clear();
    for s in 0..ns {
        let r = f(&mut sp_parent, s);
        let gi = *group_of_root.entry(r).or_insert_with(|| {
            ch.groups.push(Group {
                key: String::new(),
                atoms: vec![],
                spaces: vec![],
                producers: vec![],
                consumers: vec![],
                declined: None,
            });
            ch.groups.len() - 1
        });
        ch.groups[gi].spaces.push(s);
    }
    for (gi, grp) in ch.groups.iter_mut().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for &s in &grp.spaces {
            let sp = &ch.spaces[s];
            for k in sp.base..sp.base + sp.len {
                let a = ch.atom_of_slot[k];
                if seen.insert(a) {
                    grp.atoms.push(a);
                    ch.atoms[a].group = gi;
                }
            }
        }
    }
    for r in &ch.roles {
        match *r {
            Role::Producer { node, space } => {
                let gi =
                    ch.atoms[ch.atom_of_slot[ch.spaces[space].base.min(n.saturating_sub(1))]].group;
                if ch.spaces[space].len > 0 {
                    ch.groups[gi].producers.push(node);
                }
            }
            Role::Consumer { node, space } => {
                if ch.spaces[space].len > 0 {
                    let gi = ch.atoms[ch.atom_of_slot[ch.spaces[space].base]].group;
                    ch.groups[gi].consumers.push(node);
                }
            }
        }
    }
    for grp in ch.groups.iter_mut() {
        let first_space = grp.spaces[0];
        let key_base = grp
            .producers
            .first()
            .map(|&p| {
                let n = g.node(p);
                if n.name.is_empty() {
                    format!("{}#{}", n.op_type, p.0)
                } else {
                    n.name.clone()
                }
            })
            .unwrap_or_else(|| g.value(ch.spaces[first_space].value).name.clone());
        grp.key = format!("{key_base}:{}", grp.atoms.len());
        let free = grp
            .atoms
            .iter()
            .filter(|&&a| ch.atoms[a].blocked.is_none())
            .count();
        if free == 0 {
            grp.declined = grp
                .atoms
                .first()
                .and_then(|&a| ch.atoms[a].blocked.clone())
                .or(Some("no channels".into()));
        } else if grp.producers.is_empty() {
            grp.declined = Some("no producing layer (constant or input channels)".into());
        }
    }
}
