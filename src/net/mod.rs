//! The IR as a trainable burn network: phase 1 classifies every value as *host* (constants and
//! what is computed from shapes) or *device* (computed from the image input), phase 2 picks an
//! implementation per node (a burn op from [`ops`] for device nodes, the IR's constant folder
//! for host nodes), phase 3 turns float weight initializers into parameters; [`Net::forward`]
//! then runs the nodes in topological order, dropping each value after its last use.
//!
//! Invariants:
//! - Every device tensor is a [`Dt`]: a rank-6 burn tensor holding a rank-`r` value (r ≤ 6) in its
//!   last `r` axes with leading ones, so numpy broadcasting between ranks is burn's same-rank
//!   broadcasting and one tensor type serves every op.
//! - Parameters are the float initializers an op names as weights ([`ops::BurnOp::weights`]);
//!   everything else stays a constant. Running statistics ([`ops::BurnOp::buffers`]) change
//!   only in training mode, never through gradients.
//! - [`Net::write_back`] replaces exactly the parameter and buffer initializers, bit for bit.

pub mod device;
pub mod fastconv;
pub mod fastew;
mod fx;
pub mod ops;
mod value;

pub use fx::Fx;
use fx::Uploads;
pub use value::{host_to_dt, Dt, Val, MAX_RANK};

pub use device::{device, infer_device, select, Backend};

use crate::error::{Error, Result};
use crate::ir::ops::{Fact, InferCx};
use crate::ir::{DataType, Model, Node, NodeId, Tensor as IrTensor, ValueDef, ValueId};
use burn::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

enum Impl {
    Burn(&'static dyn ops::BurnOp),
    /// Evaluated on the host by the IR's constant folder (shape arithmetic).
    Host(&'static dyn crate::ir::ops::Op),
}

struct Step {
    node: NodeId,
    imp: Impl,
    /// The op applies the Relu that consumes its output itself ([`fuse_relus`]).
    relu: bool,
    /// A Relu whose producer applied it: the output is the input.
    pass: bool,
    /// Values whose last use is this step (dropped after it).
    drop: Vec<ValueId>,
}

/// A trainable parameter or a running-statistics buffer: an initializer of the model.
#[derive(Clone, Debug)]
pub struct Slot {
    pub value: ValueId,
    pub name: String,
    pub dims: Vec<usize>,
}

/// The model as a burn network.
pub struct Net {
    model: Model,
    steps: Vec<Step>,
    /// Constant values by value id (parameters and buffers included).
    consts: Vec<Option<Val>>,
    input: ValueId,
    /// The graph outputs, then the taps of [`Net::with_taps`] (which `model` does not list).
    outputs: Vec<ValueId>,
    params: Vec<Slot>,
    buffers: Vec<Slot>,
    device: Device,
    uploads: Uploads,
}

/// Which nodes a model cannot run on burn, by name: empty when it can.
/// New running statistics of a training-mode pass, not yet applied.
pub struct Updates(Vec<(ValueId, Dt)>);

impl From<Vec<(ValueId, Dt)>> for Updates {
    fn from(v: Vec<(ValueId, Dt)>) -> Updates {
        Updates(v)
    }
}

pub fn unsupported(model: &Model) -> Vec<String> {
    match plan(model) {
        Ok(_) => vec![],
        Err(v) => v,
    }
}

/// Phase 1 + 2: an implementation per node in topological order, or the nodes that have none.
fn plan(model: &Model) -> std::result::Result<Vec<(NodeId, Impl)>, Vec<String>> {
    let g = &model.graph;
    let order = g
        .topo_order()
        .map_err(|n| vec![format!("cycle through node {}", g.node(n).label(n))])?;
    let mut device = vec![false; g.values.len()];
    for &v in &g.inputs {
        if matches!(g.value(v).def, ValueDef::Input) {
            device[v.0] = true;
        }
    }
    let mut bad = Vec::new();
    let mut out = Vec::new();
    for id in order {
        let node = g.node(id);
        let dev_in = node.inputs.iter().flatten().any(|v| device[v.0]);
        let imp = if dev_in {
            match ops::lookup(node) {
                Some(op) => {
                    if !op.host_output() {
                        for o in node.outputs.iter().flatten() {
                            device[o.0] = true;
                        }
                    }
                    Impl::Burn(op)
                }
                None => {
                    bad.push(format!(
                        "{} ({})",
                        node.label(id),
                        if node.is_standard() {
                            "no trainable implementation"
                        } else {
                            "custom domain"
                        }
                    ));
                    continue;
                }
            }
        } else {
            match crate::ir::ops::lookup(node) {
                Some(op) => Impl::Host(op),
                None => {
                    bad.push(format!("{} (cannot be evaluated)", node.label(id)));
                    continue;
                }
            }
        };
        out.push((id, imp));
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

/// The Relus that their producers can apply ([`ops::BurnOp::fuses_relu`]): the producer's
/// output feeds only that Relu and is not a graph output, so nothing else sees it before the
/// ReLU. Returns, per step, (applies the next Relu, is such a Relu). None with
/// `ONNX_PRUNE_BURN_CONV=1` (burn's own ops everywhere).
fn fuse_relus(model: &Model, steps: &[(NodeId, Impl)]) -> Vec<(bool, bool)> {
    let g = &model.graph;
    let mut out = vec![(false, false); steps.len()];
    if !fastconv::enabled() {
        return out;
    }
    let mut uses = vec![0usize; g.values.len()];
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (k, (id, _)) in steps.iter().enumerate() {
        let node = g.node(*id);
        node.inputs.iter().flatten().for_each(|v| uses[v.0] += 1);
        node.outputs.iter().flatten().for_each(|v| {
            producer.insert(*v, k);
        });
    }
    for (k, (id, imp)) in steps.iter().enumerate() {
        let node = g.node(*id);
        let (Impl::Burn(_), true, [Some(v)]) = (
            imp,
            node.op_type == crate::ir::ops::names::RELU,
            &node.inputs[..],
        ) else {
            continue;
        };
        let Some(&p) = producer.get(v) else { continue };
        let (pid, Impl::Burn(op)) = &steps[p] else {
            continue;
        };
        let pnode = g.node(*pid);
        if uses[v.0] == 1
            && !g.outputs.contains(v)
            && pnode.outputs.len() == 1
            && op.fuses_relu(pnode)
            && !out[p].0
        {
            out[p].0 = true;
            out[k].1 = true;
        }
    }
    out
}

impl Net {
    /// Builds the network for `model` on `device` (an autodiff device for training). Fails,
    /// naming every node that cannot run, before any work starts.
    ///
    /// The network is built from a simplified copy (identities removed, constants folded, no
    /// BatchNorm folding), so weights reached through `Identity` nodes are parameters;
    /// [`Net::write_back`] returns that simplified model with the trained weights.
    pub fn new(model: &Model, device: &Device) -> Result<Net> {
        device::tune_allocator();
        let mut model = model.clone();
        crate::rewrite::simplify(&mut model, &crate::rewrite::PassOptions::default())?;
        let steps = plan(&model).map_err(|bad| {
            Error::Usage(format!(
                "these nodes cannot be trained or run on burn: {}",
                bad.join(", ")
            ))
        })?;
        let g = &model.graph;
        let inputs: Vec<ValueId> = g
            .inputs
            .iter()
            .copied()
            .filter(|&v| matches!(g.value(v).def, ValueDef::Input))
            .collect();
        let [input] = inputs[..] else {
            return Err(Error::Usage(format!(
                "burn networks take one image input; the model has {}",
                inputs.len()
            )));
        };
        // Phase 3: constants, parameters, buffers.
        let mut consts: Vec<Option<Val>> = vec![None; g.values.len()];
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let mut role: HashMap<ValueId, bool> = HashMap::new(); // true: parameter
        for (id, imp) in &steps {
            let Impl::Burn(op) = imp else { continue };
            let node = g.node(*id);
            for (slots, is_param) in [(op.weights(), true), (op.buffers(), false)] {
                for &s in slots {
                    let Some(Some(v)) = node.inputs.get(s) else {
                        continue;
                    };
                    let val = g.value(*v);
                    let Some(c) = val.constant() else { continue };
                    let trainable = c.tensor.dtype == DataType::FLOAT
                        && matches!(
                            c.origin,
                            crate::ir::ConstOrigin::Initializer {
                                overridable: false,
                                ..
                            }
                        )
                        && c.tensor.dims.len() <= MAX_RANK;
                    if trainable {
                        role.entry(*v).or_insert(is_param);
                    }
                }
            }
        }
        for (i, val) in g.values.iter().enumerate() {
            let Some(c) = val.constant() else { continue };
            let v = ValueId(i);
            match role.get(&v) {
                Some(&is_param) => {
                    let dt = host_to_dt(&c.tensor, device)
                        .map_err(|e| Error::Usage(format!("initializer '{}': {e}", val.name)))?;
                    let slot = Slot {
                        value: v,
                        name: val.name.clone(),
                        dims: dt.dims(),
                    };
                    if is_param {
                        params.push(slot);
                        let t = if device.is_autodiff() {
                            dt.t.require_grad()
                        } else {
                            dt.t
                        };
                        consts[i] = Some(Val::F(Dt::new(t, dt.rank)));
                    } else {
                        buffers.push(slot);
                        consts[i] = Some(Val::F(dt));
                    }
                }
                None => consts[i] = Some(Val::H(c.tensor.clone())),
            }
        }
        // Last uses.
        let mut last: HashMap<ValueId, usize> = HashMap::new();
        for (k, (id, _)) in steps.iter().enumerate() {
            for v in g.node(*id).inputs.iter().flatten() {
                last.insert(*v, k);
            }
        }
        let outputs = g.outputs.clone();
        let mut drops: Vec<Vec<ValueId>> = vec![vec![]; steps.len()];
        for (v, k) in last {
            if consts[v.0].is_none() && !outputs.contains(&v) {
                drops[k].push(v);
            }
        }
        let fused = fuse_relus(&model, &steps);
        let steps = steps
            .into_iter()
            .zip(drops)
            .zip(fused)
            .map(|(((node, imp), drop), (relu, pass))| Step {
                node,
                imp,
                relu,
                pass,
                drop,
            })
            .collect();
        let uploads = Uploads {
            constants: consts
                .iter()
                .filter_map(|c| match c {
                    Some(Val::H(t)) => Some(Arc::as_ptr(t) as usize),
                    _ => None,
                })
                .collect(),
            cache: Default::default(),
        };
        Ok(Net {
            model,
            steps,
            uploads,
            consts,
            input,
            outputs,
            params,
            buffers,
            device: device.clone(),
        })
    }

    /// [`Net::new`] for a network whose passes also return the values `taps` (of `model`'s
    /// graph) after the graph outputs, in that order: the intermediate features the trainer
    /// matches to a teacher's (feature distillation). A tapped value is kept for the return
    /// (it is not fused with a following ReLU); [`Net::write_back`] writes the model without
    /// the taps.
    pub fn with_taps(model: &Model, device: &Device, taps: &[ValueId]) -> Result<Net> {
        let mut m = model.clone();
        let shown = m.graph.outputs.len();
        for &v in taps {
            if v.0 >= m.graph.values.len() {
                return Err(Error::Invalid(format!(
                    "tap {v:?} is not a value of the graph"
                )));
            }
            m.graph.outputs.push(v);
        }
        let mut net = Net::new(&m, device)?;
        if net.outputs.len() != shown + taps.len() {
            return Err(Error::Invalid(format!(
                "the network has {} output(s) for {shown} graph output(s) and {} tap(s)",
                net.outputs.len(),
                taps.len()
            )));
        }
        net.model.graph.outputs.truncate(shown);
        Ok(net)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn params(&self) -> &[Slot] {
        &self.params
    }
    pub fn buffers(&self) -> &[Slot] {
        &self.buffers
    }
    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .map(|s| s.dims.iter().product::<usize>())
            .sum()
    }
    /// The model this network was built from (weights as built, see [`Net::write_back`]).
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// The current value of parameter `i`.
    pub fn param(&self, i: usize) -> Dt {
        match &self.consts[self.params[i].value.0] {
            Some(Val::F(d)) => d.clone(),
            _ => unreachable!("parameters are device tensors"),
        }
    }
    /// Replaces parameter `i` (the new value becomes a fresh leaf that requires gradients).
    pub fn set_param(&mut self, i: usize, t: Tensor<6>) {
        let s = &self.params[i];
        let rank = s.dims.len();
        let t = if self.device.is_autodiff() {
            t.inner().autodiff().require_grad()
        } else {
            t.inner()
        };
        self.consts[s.value.0] = Some(Val::F(Dt::new(t, rank)));
    }
    pub fn buffer(&self, i: usize) -> Dt {
        match &self.consts[self.buffers[i].value.0] {
            Some(Val::F(d)) => d.clone(),
            _ => unreachable!("buffers are device tensors"),
        }
    }
    pub fn set_buffer(&mut self, i: usize, t: Tensor<6>) {
        let s = &self.buffers[i];
        let t = if self.device.is_autodiff() {
            t.inner().autodiff()
        } else {
            t.inner()
        };
        self.consts[s.value.0] = Some(Val::F(Dt::new(t, s.dims.len())));
    }

    /// Runs the network on `x` (`[N, …]` as the model's input); returns every graph output.
    /// In training mode BatchNormalization uses batch statistics and updates its running ones.
    pub fn forward(&mut self, x: Dt, train: bool) -> Result<Vec<Dt>> {
        let (outs, updates) = self.run(x, train)?;
        if train {
            self.apply_updates(updates);
        }
        Ok(outs)
    }

    /// A forward pass that changes nothing: the outputs and, in training mode, the running
    /// statistics it would set (for [`Net::apply_updates`]).
    pub fn forward_pure(&self, x: Dt, train: bool) -> Result<(Vec<Dt>, Updates)> {
        let (outs, updates) = self.run(x, train)?;
        Ok((outs, Updates(updates)))
    }

    /// Sets the running statistics a training-mode [`Net::forward_pure`] computed.
    pub fn apply_updates(&mut self, updates: impl Into<Updates>) {
        for (v, d) in updates.into().0 {
            if let Some(i) = self.buffers.iter().position(|s| s.value == v) {
                self.set_buffer(i, d.t);
            }
        }
    }

    /// Evaluation-mode forward pass without touching any state.
    pub fn infer(&self, x: Dt) -> Result<Vec<Dt>> {
        Ok(self.run(x, false)?.0)
    }

    #[allow(clippy::type_complexity)]
    fn run(&self, x: Dt, train: bool) -> Result<(Vec<Dt>, Vec<(ValueId, Dt)>)> {
        let g = &self.model.graph;
        let mut env: Vec<Option<Val>> = vec![None; g.values.len()];
        env[self.input.0] = Some(Val::F(x));
        let opset = self.model.opset();
        let mut updates = Vec::new();
        for step in &self.steps {
            let node = g.node(step.node);
            let ins: Vec<Option<Val>> = node
                .inputs
                .iter()
                .map(|i| i.and_then(|v| env[v.0].as_ref().or(self.consts[v.0].as_ref()).cloned()))
                .collect();
            let fail = |msg: String| Error::Node {
                node: node.label(step.node),
                msg,
            };
            let outs = match &step.imp {
                _ if step.pass => {
                    vec![ins[0].clone().ok_or_else(|| fail("missing input".into()))?]
                }
                Impl::Burn(op) => {
                    let cx = Fx {
                        relu: step.relu,
                        node,
                        id: step.node,
                        opset,
                        train,
                        device: &self.device,
                        updates: RefCell::new(Vec::new()),
                        uploads: &self.uploads,
                    };
                    let outs = op.forward(&cx, &ins).map_err(fail)?;
                    for (slot, d) in cx.updates.into_inner() {
                        if let Some(Some(v)) = node.inputs.get(slot) {
                            updates.push((*v, d));
                        }
                    }
                    outs
                }
                Impl::Host(op) => host_eval(*op, node, opset, &ins).map_err(fail)?,
            };
            for (o, val) in node.outputs.iter().zip(outs) {
                if let Some(o) = o {
                    env[o.0] = Some(val);
                }
            }
            for v in &step.drop {
                env[v.0] = None;
            }
        }
        let mut outs = Vec::new();
        for &o in &self.outputs {
            let v = env[o.0]
                .take()
                .or_else(|| self.consts[o.0].clone())
                .ok_or_else(|| {
                    Error::Invalid(format!("output '{}' was not computed", g.value(o).name))
                })?;
            outs.push(match v {
                Val::F(d) => d,
                Val::H(t) => host_to_dt(&t, &self.device).map_err(Error::Invalid)?,
            });
        }
        Ok((outs, updates))
    }

    /// The model with the network's current parameters and buffers written into their
    /// initializers (same names, dims and order; f32 bits unchanged).
    pub fn write_back(&self) -> Model {
        let mut m = self.model.clone();
        for s in self.params.iter().chain(&self.buffers) {
            let Some(Val::F(d)) = &self.consts[s.value.0] else {
                continue;
            };
            let dims: Vec<i64> = s.dims.iter().map(|&x| x as i64).collect();
            let t = IrTensor::f32(&dims, d.to_vec());
            if let ValueDef::Const(c) = &mut m.graph.value_mut(s.value).def {
                c.tensor = Arc::new(t);
                c.external = false;
            }
        }
        m
    }
}

/// Evaluates a host node with the IR's constant folder.
fn host_eval(
    op: &dyn crate::ir::ops::Op,
    node: &Node,
    opset: i64,
    ins: &[Option<Val>],
) -> ops::OpResult<Vec<Val>> {
    let facts: Vec<Option<Fact>> = ins
        .iter()
        .map(|v| match v {
            Some(Val::H(t)) => Some(Fact::from_tensor(t.clone())),
            Some(Val::F(d)) => {
                let dims: Vec<i64> = d.dims().iter().map(|&v| v as i64).collect();
                Some(Fact::from_tensor(Arc::new(IrTensor::f32(
                    &dims,
                    d.to_vec(),
                ))))
            }
            None => None,
        })
        .collect();
    let cx = InferCx {
        node,
        opset,
        inputs: facts.iter().map(|f| f.as_ref()).collect(),
        eval: true,
    };
    let outs = op.infer(&cx)?;
    outs.into_iter()
        .map(|f| {
            f.value
                .map(Val::H)
                .ok_or_else(|| "its value could not be computed on the host".to_string())
        })
        .collect()
}
