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
//! Rules per op are data: [`RULES`] maps op types to transfer functions.

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

type Rule = fn(&mut Cx) -> Result<(), String>;

/// Transfer rules by op type (default domain). Ops not listed block their inputs.
static RULES: &[(&str, Rule)] = &[
    ("Conv", conv),
    ("ConvTranspose", conv_transpose),
    ("Gemm", gemm),
    ("MatMul", matmul),
    ("BatchNormalization", per_channel_params),
    ("InstanceNormalization", per_channel_params),
    ("GroupNormalization", group_norm),
    ("LayerNormalization", layer_norm),
    ("PRelu", elementwise),
    ("Relu", passthrough),
    ("LeakyRelu", passthrough),
    ("Clip", passthrough),
    ("Sigmoid", passthrough),
    ("HardSigmoid", passthrough),
    ("HardSwish", passthrough),
    ("Tanh", passthrough),
    ("Elu", passthrough),
    ("Selu", passthrough),
    ("Celu", passthrough),
    ("Softplus", passthrough),
    ("Softsign", passthrough),
    ("Gelu", passthrough),
    ("Erf", passthrough),
    ("Mish", passthrough),
    ("Exp", passthrough),
    ("Neg", passthrough),
    ("Abs", passthrough),
    ("Sqrt", passthrough),
    ("Identity", passthrough),
    ("Dropout", passthrough),
    ("Cast", passthrough),
    ("MaxPool", passthrough),
    ("AveragePool", passthrough),
    ("LpPool", passthrough),
    ("GlobalAveragePool", passthrough),
    ("GlobalMaxPool", passthrough),
    ("Resize", resize),
    ("Upsample", resize),
    ("Add", elementwise),
    ("Sub", elementwise),
    ("Mul", elementwise),
    ("Div", elementwise),
    ("Max", elementwise),
    ("Min", elementwise),
    ("Sum", elementwise),
    ("Concat", concat),
    ("Slice", slice),
    ("Split", split),
    ("Pad", pad),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("Squeeze", squeeze_unsqueeze),
    ("Unsqueeze", squeeze_unsqueeze),
    ("Transpose", transpose),
    ("Shape", shape),
    ("ReduceMean", reduce),
    ("ReduceMax", reduce),
    ("ReduceMin", reduce),
    ("ReduceSum", reduce),
];

/// Runs the analysis. `a` must be a [`super::ShapeMode::Bound`] analysis of `model`.
pub fn analyse(model: &Model, a: &Analysis) -> ChannelAnalysis {
    let g = &model.graph;
    let mut ch = ChannelAnalysis::default();
    let order = g.topo_order().unwrap_or_default();
    for id in order {
        let node = g.node(id);
        let rule = if node.is_standard() {
            RULES
                .iter()
                .find(|(n, _)| *n == node.op_type)
                .map(|(_, r)| *r)
        } else {
            None
        };
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

// ---- rules ---------------------------------------------------------------------------------

/// The channel space of input 0 and its concrete shape; `None` when input 0 carries no traced
/// channels (the rule then has nothing to do).
fn traced_input(cx: &Cx) -> Result<Option<(SpaceId, Vec<i64>)>, String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(None);
    };
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    Ok(Some((s, x)))
}

fn out_shape(cx: &Cx, i: usize) -> Result<Vec<i64>, String> {
    let o = cx.output(i).ok_or("missing output")?;
    cx.shape(o)
        .ok_or_else(|| "output shape unknown".to_string())
}

/// Space of input `i` on `axis` (blocked-new one when the input carries none, e.g. graph inputs).
fn input_space(cx: &mut Cx, i: usize, axis: usize, why_new: &str) -> Result<SpaceId, String> {
    let v = cx.input(i).ok_or("missing input")?;
    if let Some(s) = cx.space(Some(v)) {
        if cx.ch.spaces[s].axis != axis {
            return Err(format!(
                "channels of '{}' are on axis {} but the op uses axis {axis}",
                cx.g.value(v).name,
                cx.ch.spaces[s].axis
            ));
        }
        return Ok(s);
    }
    let shape = cx.shape(v).ok_or("input shape unknown")?;
    let len = *shape.get(axis).ok_or("rank too small")? as usize;
    let s = cx.ch.new_space(v, axis, len);
    cx.ch.block_space(s, why_new);
    cx.ch.space_of.remove(&v);
    Ok(s)
}

fn conv(cx: &mut Cx) -> Result<(), String> {
    let w = cx.input(1).ok_or("no weight")?;
    if !cx.is_const(w) {
        return Err("weight is not constant".into());
    }
    let ws = cx.shape(w).ok_or("weight shape unknown")?;
    let y = out_shape(cx, 0)?;
    let group = cx.node().attr_i("group").unwrap_or(1) as usize;
    let cin = ws[1] as usize * group;
    let cout = ws[0] as usize;
    let ins = input_space(cx, 0, 1, "channels without a producing layer")?;
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    if group == 1 {
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
    } else if group == cin && cout.is_multiple_of(cin) {
        // Depthwise (multiplier m): input channel i feeds outputs [i·m, (i+1)·m).
        let m = cout / cin;
        for i in 0..cin {
            for j in 0..m {
                let (a, b) = (cx.ch.slot(ins, i), cx.ch.slot(outs, i * m + j));
                cx.ch.union(a, b);
            }
        }
    } else if group > 0 && cin.is_multiple_of(group) && cout.is_multiple_of(group) {
        // Grouped conv: channels prune freely as long as every group keeps the same number of
        // input channels and of output channels (the rewrite slices each group's columns).
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
        cx.ch.equal_parts.push((ins, group));
        cx.ch.equal_parts.push((outs, group));
    } else {
        let why = format!("grouped conv (group {group}) {}", cx.node().label(cx.id));
        cx.ch.block_space(ins, &why);
        cx.ch.block_space(outs, &why);
    }
    Ok(())
}

fn conv_transpose(cx: &mut Cx) -> Result<(), String> {
    let w = cx.input(1).ok_or("no weight")?;
    if !cx.is_const(w) {
        return Err("weight is not constant".into());
    }
    let y = out_shape(cx, 0)?;
    let group = cx.node().attr_i("group").unwrap_or(1);
    let ins = input_space(cx, 0, 1, "channels without a producing layer")?;
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    if group == 1 {
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
    } else {
        let why = format!("grouped ConvTranspose {}", cx.node().label(cx.id));
        cx.ch.block_space(ins, &why);
        cx.ch.block_space(outs, &why);
    }
    Ok(())
}

fn gemm(cx: &mut Cx) -> Result<(), String> {
    let b = cx.input(1).ok_or("no B")?;
    if !cx.is_const(b) || cx.node().attr_i("transA").unwrap_or(0) != 0 {
        return Err("Gemm with non-constant B or transA".into());
    }
    if let Some(c) = cx.input(2) {
        if !cx.is_const(c) {
            return Err("Gemm with non-constant C".into());
        }
    }
    let y = out_shape(cx, 0)?;
    let ins = input_space(cx, 0, 1, "features without a producing layer")?;
    cx.ch.roles.push(Role::Consumer {
        node: cx.id,
        space: ins,
    });
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    Ok(())
}

fn matmul(cx: &mut Cx) -> Result<(), String> {
    let b = cx.input(1).ok_or("no B")?;
    let bs = cx.shape(b).ok_or("B shape unknown")?;
    if !cx.is_const(b) || bs.len() != 2 {
        return Err("MatMul with a non-constant or batched B".into());
    }
    let a_shape = cx
        .shape(cx.input(0).ok_or("no A")?)
        .ok_or("A shape unknown")?;
    if a_shape.len() < 2 {
        return Err("MatMul with a 1-D A".into());
    }
    let y = out_shape(cx, 0)?;
    let ins = input_space(
        cx,
        0,
        a_shape.len() - 1,
        "features without a producing layer",
    )?;
    cx.ch.roles.push(Role::Consumer {
        node: cx.id,
        space: ins,
    });
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, y.len() - 1, y[y.len() - 1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    Ok(())
}

fn passthrough(cx: &mut Cx) -> Result<(), String> {
    if cx.space(cx.input(0)).is_some() {
        // Pools keep channels on axis 1; everything here is elementwise or per-channel.
        if cx.node().op_type == "Dropout" && cx.output(1).is_some() {
            if let Some(m) = cx.output(1) {
                if !cx.g.value(m).uses.is_empty() || cx.g.is_graph_output(m) {
                    return Err("Dropout mask is used".into());
                }
            }
        }
        cx.alias(0);
    }
    Ok(())
}

fn per_channel_params(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let c = cx.ch.spaces[s].len as i64;
    for i in 1..cx.node().inputs.len() {
        if let Some(v) = cx.input(i) {
            if !cx.is_const(v) {
                return Err("per-channel parameters are not constant".into());
            }
            // One value per channel, or the surgery would cut past them (an invalid file).
            if let Some(d) = cx.shape(v).filter(|d| d.iter().product::<i64>() != c) {
                return Err(format!(
                    "per-channel parameter #{i} has shape {d:?} for {c} channels"
                ));
            }
        }
    }
    if cx.extra_outputs_used() {
        return Err("training-mode outputs".into());
    }
    cx.alias(0);
    Ok(())
}

/// GroupNormalization: statistics run over each group of C/G consecutive channels, so the
/// channels of one group are one atom (all go or none stay) and removing whole groups is exact.
/// `scale`/`bias` (per channel from opset 21, per group in opset 18) must be constant.
/// <https://onnx.ai/onnx/operators/onnx__GroupNormalization.html>
fn group_norm(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    if cx.ch.spaces[s].axis != 1 {
        return Err("channels are not on GroupNormalization's axis 1".into());
    }
    for i in 1..cx.node().inputs.len() {
        if let Some(v) = cx.input(i) {
            if !cx.is_const(v) {
                return Err("group-norm scale/bias are not constant".into());
            }
        }
    }
    let g = cx.node().attr_i("num_groups").ok_or("no num_groups")?;
    let c = cx.ch.spaces[s].len as i64;
    if g <= 0 || c % g != 0 {
        return Err(format!("{c} channels in {g} norm groups"));
    }
    let k = (c / g) as usize;
    for gi in 0..g as usize {
        for j in 1..k {
            let (u, v) = (cx.ch.slot(s, gi * k), cx.ch.slot(s, gi * k + j));
            cx.ch.union(u, v);
        }
    }
    cx.alias(0);
    Ok(())
}

/// LayerNormalization normalises over axes `axis..rank`. Over the channel axis (ConvNeXt's
/// Transpose → LayerNormalization → …) its mean and variance mix channels: removing one changes
/// every other channel's output, so the masked original is not the pruned model. That is not
/// exact, so it is declined with that reason (recovery could correct it, but this tool rewrites
/// only what is exact). Over other axes the channels pass through unchanged.
/// <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
fn layer_norm(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let rank = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?
        .len() as i64;
    let a = cx.node().attr_i("axis").unwrap_or(-1);
    let first = if a < 0 { a + rank } else { a };
    if cx.ch.spaces[s].axis as i64 >= first {
        return Err(
            "LayerNormalization over the channel axis: its statistics mix channels, so removing \
             one changes the others (not exact)"
                .into(),
        );
    }
    if cx.extra_outputs_used() {
        return Err("LayerNormalization's mean/inv-std outputs are used".into());
    }
    cx.alias(0);
    Ok(())
}

fn resize(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let y = out_shape(cx, 0)?;
    if x.get(axis) != y.get(axis) {
        return Err("resize changes the channel axis".into());
    }
    // `sizes` names the channel count: the rewrite resizes a constant one; a computed one
    // would keep the old count.
    if let Some(sz) = cx.input(3).filter(|_| cx.node().op_type == "Resize") {
        if !cx.is_const(sz) {
            return Err("resize output sizes are computed at run time".into());
        }
    }
    cx.alias(0);
    Ok(())
}

/// Broadcasting elementwise ops: operands with spaces are joined; constants must be scalar or
/// per-channel along the channel axis.
fn elementwise(cx: &mut Cx) -> Result<(), String> {
    let y = out_shape(cx, 0)?;
    let r = y.len();
    let mut out_space: Option<SpaceId> = None;
    let n_in = cx.node().inputs.len();
    // Channel axis, in output coordinates, of the first operand that has a space.
    let mut axis_out = None;
    for i in 0..n_in {
        let Some(v) = cx.input(i) else { continue };
        if let Some(s) = cx.space(Some(v)) {
            let rank = cx.shape(v).ok_or("operand shape unknown")?.len();
            let ax = cx.ch.spaces[s].axis + (r - rank);
            match axis_out {
                None => axis_out = Some(ax),
                Some(a) if a != ax => {
                    return Err("operands carry channels on different axes".into())
                }
                _ => {}
            }
        }
    }
    let Some(axis) = axis_out else { return Ok(()) };
    for i in 0..n_in {
        let Some(v) = cx.input(i) else { continue };
        let shape = cx.shape(v).ok_or("operand shape unknown")?;
        let off = r - shape.len();
        let dim = if axis >= off { shape[axis - off] } else { 1 };
        match cx.space(Some(v)) {
            Some(s) => match out_space {
                None => out_space = Some(s),
                Some(o) => {
                    if !cx.ch.union_spaces(o, s) {
                        return Err("operands have different channel counts".into());
                    }
                }
            },
            None if dim == 1 => {}
            None if cx.is_const(v) => {} // per-channel constant, sliced by the rewrite
            None => {
                return Err(format!(
                    "operand '{}' has channels the analysis cannot trace",
                    cx.g.value(v).name
                ))
            }
        }
    }
    let s = out_space.unwrap();
    if y[axis] as usize != cx.ch.spaces[s].len {
        return Err("output channel count differs from the operands'".into());
    }
    let rank_s = cx
        .shape(cx.ch.spaces[s].value)
        .map(|v| v.len())
        .unwrap_or(0);
    if let Some(o) = cx.output(0) {
        if rank_s == r && cx.ch.spaces[s].axis == axis {
            cx.ch.space_of.insert(o, s);
        } else {
            let ns = cx.ch.new_space(o, axis, y[axis] as usize);
            cx.ch.union_spaces(ns, s);
        }
    }
    Ok(())
}

fn concat(cx: &mut Cx) -> Result<(), String> {
    let y = out_shape(cx, 0)?;
    let axis = crate::ir::ops::axis(cx.node().attr_i("axis").unwrap_or(0), y.len())?;
    let ins: Vec<Option<ValueId>> = cx.node().inputs.clone();
    let any = ins.iter().any(|v| cx.space(*v).is_some());
    if !any {
        return Ok(());
    }
    let o = cx.output(0).unwrap();
    let first_axis = ins
        .iter()
        .find_map(|v| cx.space(*v))
        .map(|s| cx.ch.spaces[s].axis)
        .unwrap();
    if first_axis == axis {
        let outs = cx.ch.new_space(o, axis, y[axis] as usize);
        let mut off = 0;
        for (i, v) in ins.iter().enumerate() {
            let v = v.ok_or("missing input")?;
            let len = cx.shape(v).ok_or("input shape unknown")?[axis] as usize;
            let s = input_space(
                cx,
                i,
                axis,
                "concatenated channels without a producing layer",
            )?;
            for k in 0..len {
                let (a, b) = (cx.ch.slot(outs, off + k), cx.ch.slot(s, k));
                cx.ch.union(a, b);
            }
            off += len;
        }
    } else {
        // Concat along another axis: all operands share the channels.
        let mut first: Option<SpaceId> = None;
        for (i, v) in ins.iter().enumerate() {
            if cx.space(*v).is_none() {
                return Err("concat operand without traced channels".into());
            }
            let s = input_space(cx, i, first_axis, "")?;
            match first {
                None => first = Some(s),
                Some(f) => {
                    if !cx.ch.union_spaces(f, s) {
                        return Err("concat operands differ in channels".into());
                    }
                }
            }
        }
        cx.ch.space_of.insert(o, first.unwrap());
    }
    Ok(())
}

fn slice(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let y = out_shape(cx, 0)?;
    if x.len() != y.len() {
        return Err("rank changes".into());
    }
    let (starts, ends, axes, steps) = slice_params(cx, x.len())?;
    let mut on_axis = None;
    for k in 0..axes.len() {
        if axes[k] == axis {
            on_axis = Some((starts[k], ends[k], steps[k]));
        }
    }
    let o = cx.output(0).unwrap();
    match on_axis {
        None => {
            cx.ch.space_of.insert(o, s);
        }
        Some((st, en, sp)) => {
            let (b, _, len) = crate::ir::ops::slice_clamp(st, en, sp, x[axis]);
            if sp != 1 && len > 1 {
                // The skipped channels' fate would have to follow the kept ones' for the
                // pruned slice to be a strided slice again.
                return Err(format!("channel Slice with step {sp}"));
            }
            let outs = cx.ch.new_space(o, axis, len as usize);
            for j in 0..len {
                let (a, c) = (
                    cx.ch.slot(outs, j as usize),
                    cx.ch.slot(s, (b + j * sp) as usize),
                );
                cx.ch.union(a, c);
            }
        }
    }
    Ok(())
}

/// (starts, ends, axes, steps) of a Slice with constant parameters.
type SliceParams = (Vec<i64>, Vec<i64>, Vec<usize>, Vec<i64>);

fn slice_params(cx: &Cx, rank: usize) -> Result<SliceParams, String> {
    let n = cx.node();
    let ints = |i: usize| {
        cx.input(i)
            .and_then(|v| cx.g.foldable_const(v))
            .and_then(|t| t.as_i64s())
    };
    let (starts, ends) = (
        ints(1).ok_or("non-constant starts")?,
        ints(2).ok_or("non-constant ends")?,
    );
    let axes: Vec<usize> = match n.inputs.get(3).copied().flatten() {
        Some(_) => ints(3)
            .ok_or("non-constant axes")?
            .iter()
            .map(|&a| crate::ir::ops::axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = match n.inputs.get(4).copied().flatten() {
        Some(_) => ints(4).ok_or("non-constant steps")?,
        None => vec![1; starts.len()],
    };
    if steps.iter().any(|&s| s <= 0) {
        return Err("negative slice steps on channels are not supported".into());
    }
    Ok((starts, ends, axes, steps))
}

fn split(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let split_axis = crate::ir::ops::axis(cx.node().attr_i("axis").unwrap_or(0), x.len())?;
    let outs: Vec<Option<ValueId>> = cx.node().outputs.clone();
    if split_axis != axis {
        for o in outs.into_iter().flatten() {
            cx.ch.space_of.insert(o, s);
        }
        return Ok(());
    }
    let mut off = 0usize;
    for (k, o) in outs.iter().enumerate() {
        let o = o.ok_or("omitted Split output")?;
        let len = out_shape(cx, k)?[axis] as usize;
        let os = cx.ch.new_space(o, axis, len);
        for j in 0..len {
            let (a, b) = (cx.ch.slot(os, j), cx.ch.slot(s, off + j));
            cx.ch.union(a, b);
        }
        off += len;
    }
    Ok(())
}

fn pad(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let pads = cx
        .input(1)
        .and_then(|v| cx.g.foldable_const(v))
        .and_then(|t| t.as_i64s())
        .ok_or("pads are not constant (or opset < 11)")?;
    if cx.node().inputs.get(3).copied().flatten().is_some() {
        return Err("Pad with axes input".into());
    }
    if pads.len() != 2 * x.len() {
        return Err("pads do not match the rank".into());
    }
    let (b, e) = (pads[axis], pads[axis + x.len()]);
    let o = cx.output(0).unwrap();
    if b == 0 && e == 0 {
        cx.ch.space_of.insert(o, s);
        return Ok(());
    }
    let mode = cx.node().attr_s("mode").unwrap_or("constant");
    if mode != "constant" || b < 0 || e < 0 {
        return Err(format!("channel-axis Pad in mode '{mode}' or cropping"));
    }
    let value_zero = match cx.input(2) {
        None => true,
        Some(v) => {
            cx.g.foldable_const(v)
                .and_then(|t| t.as_f32s())
                .is_some_and(|v| v.iter().all(|&x| x == 0.0))
        }
    };
    let len = x[axis] as usize + b as usize + e as usize;
    let os = cx.ch.new_space(o, axis, len);
    for j in 0..len {
        let sl = cx.ch.slot(os, j);
        if j < b as usize || j >= b as usize + x[axis] as usize {
            cx.ch.zero_slot[sl] = value_zero;
            if !value_zero {
                cx.ch.blocked[sl] = Some("channel padding with a non-zero value".into());
            }
        } else {
            let src = cx.ch.slot(s, j - b as usize);
            cx.ch.union(sl, src);
        }
    }
    Ok(())
}

fn flatten(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let a = cx.node().attr_i("axis").unwrap_or(1);
    let a = if a < 0 { a + x.len() as i64 } else { a } as usize;
    flatten_like(cx, s, &x, a)
}

/// [d0..d(a-1)] × [da..] flattening with the channel axis at or after `a`: channel c becomes
/// features [c·inner, (c+1)·inner) (times the outer dims between a and the channel axis).
fn flatten_like(cx: &mut Cx, s: SpaceId, x: &[i64], a: usize) -> Result<(), String> {
    let axis = cx.ch.spaces[s].axis;
    if axis < a || (axis > a && x[a..axis].iter().any(|&d| d != 1)) {
        return Err("flatten mixes the channel axis with other axes".into());
    }
    let inner: i64 = x[axis + 1..].iter().product();
    let o = cx.output(0).unwrap();
    let c = x[axis] as usize;
    let os = cx.ch.new_space(o, 1.min(a), c * inner as usize);
    for ci in 0..c {
        for k in 0..inner as usize {
            let (p, q) = (cx.ch.slot(os, ci * inner as usize + k), cx.ch.slot(s, ci));
            cx.ch.union(p, q);
        }
    }
    Ok(())
}

fn reshape(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let y = out_shape(cx, 0)?;
    let axis = cx.ch.spaces[s].axis;
    // Supported: flattening everything from the channel axis on into one axis, with the dims
    // before it unchanged (torch `x.view(x.size(0), -1)`), or squeezing/unsqueezing ones.
    if y.len() == axis + 1 && y[..axis] == x[..axis] {
        return flatten_like(cx, s, &x, axis);
    }
    if unit_axes_only(cx, s, &x, &y) {
        return Ok(());
    }
    if split_or_merge(cx, s, &x, &y)? {
        return Ok(());
    }
    Err("reshape that moves channels in a way that is not mapped".into())
}

/// Reshapes that split the channel axis into several or merge it with neighbours, every other
/// dim unchanged (a channel shuffle is split → `Transpose` → merge):
/// - split `C → (…, k)`: the channels stay on the last non-unit new axis (length `k`), and
///   channel `b` of it ties input channels `o·k + b` for every outer index `o`, so each outer
///   block keeps the same positions and the reshape of the pruned tensor is the pruned reshape;
/// - merge of axes `[lo, hi)` holding the channel axis: merged index `(o·C + c)·inner + r` ties
///   channel `c` (outer `o` over the axes before it, `r` over those after it).
///
/// The rewrite resizes the target's entry on the channel axis, so the target must be constant.
fn split_or_merge(cx: &mut Cx, s: SpaceId, x: &[i64], y: &[i64]) -> Result<bool, String> {
    let axis = cx.ch.spaces[s].axis;
    let c = x[axis];
    let o = cx.output(0).ok_or("no output")?;
    let target_const = cx.input(1).is_some_and(|t| cx.is_const(t));
    let (p, q) = (axis, x.len() - axis - 1);
    // Split.
    if y.len() > x.len() && y[..p] == x[..p] && y[y.len() - q..] == x[axis + 1..] {
        let f = &y[p..y.len() - q];
        if f.iter().all(|&d| d > 0) && f.iter().product::<i64>() == c {
            if !target_const {
                return Err("reshape splitting channels has a computed target".into());
            }
            let j = f.iter().rposition(|&d| d != 1).ok_or("unit channel axis")?;
            let len = f[j] as usize;
            let outer = c as usize / len;
            let os = cx.ch.new_space(o, p + j, len);
            for ob in 0..outer {
                for b in 0..len {
                    let (u, v) = (cx.ch.slot(os, b), cx.ch.slot(s, ob * len + b));
                    cx.ch.union(u, v);
                }
            }
            return Ok(true);
        }
    }
    // Merge.
    if y.len() < x.len() {
        let lo_hi = (0..=axis).find_map(|lo| {
            let hi = lo + x.len() + 1 - y.len();
            (hi > axis
                && hi <= x.len()
                && y[..lo] == x[..lo]
                && y[lo + 1..] == x[hi..]
                && y[lo] == x[lo..hi].iter().product::<i64>())
            .then_some((lo, hi))
        });
        if let Some((lo, hi)) = lo_hi {
            if !target_const {
                return Err("reshape merging channels has a computed target".into());
            }
            let outer = x[lo..axis].iter().product::<i64>() as usize;
            let inner = x[axis + 1..hi].iter().product::<i64>() as usize;
            let c = c as usize;
            let os = cx.ch.new_space(o, lo, y[lo] as usize);
            for ob in 0..outer {
                for ci in 0..c {
                    for r in 0..inner {
                        let u = cx.ch.slot(os, (ob * c + ci) * inner + r);
                        let v = cx.ch.slot(s, ci);
                        cx.ch.union(u, v);
                    }
                }
            }
            return Ok(true);
        }
    }
    Ok(false)
}

fn squeeze_unsqueeze(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let y = out_shape(cx, 0)?;
    if unit_axes_only(cx, s, &x, &y) {
        return Ok(());
    }
    Err("squeeze/unsqueeze of the channel axis".into())
}

/// When `x` → `y` only adds or removes unit axes (and the channel axis is not one), gives the
/// output a space on the channel axis's new position and returns true.
fn unit_axes_only(cx: &mut Cx, s: SpaceId, x: &[i64], y: &[i64]) -> bool {
    let axis = cx.ch.spaces[s].axis;
    let strip = |v: &[i64]| v.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if strip(x) != strip(y) || x[axis] == 1 {
        return false;
    }
    let before: usize = x[..axis].iter().filter(|&&d| d != 1).count();
    let Some(new_axis) = y
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != 1)
        .map(|(i, _)| i)
        .nth(before)
    else {
        return false;
    };
    let Some(o) = cx.output(0) else { return false };
    let os = cx.ch.new_space(o, new_axis, y[new_axis] as usize);
    cx.ch.union_spaces(os, s)
}

fn transpose(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let perm: Vec<usize> = match cx.node().attr_ints("perm") {
        Some(p) => p.iter().map(|&v| v as usize).collect(),
        None => (0..x.len()).rev().collect(),
    };
    let axis = cx.ch.spaces[s].axis;
    let new_axis = perm.iter().position(|&p| p == axis).ok_or("bad perm")?;
    let o = cx.output(0).unwrap();
    let os = cx.ch.new_space(o, new_axis, x[axis] as usize);
    cx.ch.union_spaces(os, s);
    Ok(())
}

/// Reductions over non-channel axes keep channels (the channel axis may move down when
/// `keepdims` is 0); reducing over channels mixes them.
fn reduce(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let from_input = cx.g.node(cx.id).inputs.get(1).copied().flatten();
    let axes: Vec<i64> = match from_input {
        Some(v) => {
            cx.g.foldable_const(v)
                .and_then(|t| t.as_i64s())
                .ok_or("non-constant axes")?
        }
        None => cx
            .node()
            .attr_ints("axes")
            .map(|a| a.to_vec())
            .ok_or("reduces over every axis")?,
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| crate::ir::ops::axis(a, x.len()))
        .collect::<Result<_, _>>()?;
    if axes.is_empty() || axes.contains(&axis) {
        return Err("reduction over the channel axis".into());
    }
    let keep = cx.node().attr_i("keepdims").unwrap_or(1) != 0;
    let o = cx.output(0).ok_or("no output")?;
    if keep {
        cx.ch.space_of.insert(o, s);
    } else {
        let new_axis = axis - axes.iter().filter(|&&a| a < axis).count();
        let os = cx.ch.new_space(o, new_axis, x[axis] as usize);
        cx.ch.union_spaces(os, s);
    }
    Ok(())
}

/// `Shape` of a channel tensor is fine when only non-channel dims are read from it.
fn shape(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis as i64;
    let o = cx.output(0).ok_or("no output")?;
    let start = cx.node().attr_i("start").unwrap_or(0);
    for u in &cx.g.value(o).uses {
        let n = cx.g.node(u.node);
        let ok = n.op_type == "Gather"
            && n.inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|i| cx.g.foldable_const(i))
                .and_then(|t| t.as_i64s())
                .is_some_and(|idx| idx.iter().all(|&i| i + start != axis && i >= 0));
        if !ok {
            return Err("the channel count is read by Shape".into());
        }
    }
    Ok(())
}
