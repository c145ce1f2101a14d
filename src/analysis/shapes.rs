//! Shape inference with constant propagation over the whole graph.
//!
//! Two modes:
//! - [`ShapeMode::Declared`]: symbolic dims stay symbolic. Values computed here are true for
//!   every input size the model accepts, so constant folding may use them.
//! - [`ShapeMode::Bound`]: every graph input gets concrete dims (from `--input-shape`, else the
//!   first symbolic dim of an input defaults to 1). Used to count MACs for one input size.

use crate::error::{Error, Result};
use crate::ir::ops::{self, Fact, InferCx};
use crate::ir::{ConstOrigin, Dim, Graph, Model, NodeId, ValueDef, ValueId};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum ShapeMode {
    Declared,
    Bound,
}

/// Facts for every value, plus the nodes where inference failed.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    pub facts: Vec<Fact>,
    /// Nodes whose op is unknown to the tool (their outputs use declared types, if any).
    pub unknown: Vec<NodeId>,
    /// Nodes whose inference failed, with the reason.
    pub errors: Vec<(NodeId, String)>,
    /// Concrete input shapes used (Bound mode).
    pub input_shapes: Vec<(String, Vec<i64>)>,
}

impl Analysis {
    pub fn fact(&self, v: ValueId) -> &Fact {
        &self.facts[v.0]
    }
}

/// Parses `NAME=1x3x224x224`.
pub fn parse_input_shape(s: &str) -> std::result::Result<(String, Vec<i64>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=DIMxDIMx..., e.g. input=1x3x224x224"))?;
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<i64>().ok().filter(|&v| v > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("'{s}': dims must be positive integers separated by 'x'"))?;
    Ok((name.to_string(), dims))
}

/// Checks a `--input-shape` override against the declared shape: same rank, and every dim the
/// model fixes must match.
pub fn check_input_shape(name: &str, declared: Option<&[Dim]>, dims: &[i64]) -> Result<()> {
    let Some(decl) = declared else { return Ok(()) };
    if decl.len() != dims.len() {
        return Err(Error::Usage(format!(
            "--input-shape {name}: rank {} does not match the declared rank {}",
            dims.len(),
            decl.len()
        )));
    }
    for (i, (d, &o)) in decl.iter().zip(dims).enumerate() {
        if let Dim::Known(k) = d {
            if *k != o {
                return Err(Error::Usage(format!(
                    "--input-shape {name}: dim {i} is fixed to {k} by the model, not {o}"
                )));
            }
        }
    }
    Ok(())
}

fn input_fact(
    g: &Graph,
    v: ValueId,
    mode: &ShapeMode,
    overrides: &HashMap<String, Vec<i64>>,
) -> Result<(Fact, Option<Vec<i64>>)> {
    let val = g.value(v);
    let dtype = val.declared_elem();
    if let Some(dims) = overrides.get(&val.name) {
        check_input_shape(&val.name, val.declared_shape(), dims)?;
        return Ok((Fact::known(dtype, dims), Some(dims.clone())));
    }
    let Some(decl) = val.declared_shape() else {
        if *mode == ShapeMode::Bound {
            return Err(Error::Usage(format!(
                "input '{}' has no declared shape: pass --input-shape {}=DIMxDIM...",
                val.name, val.name
            )));
        }
        return Ok((Fact::new(dtype, None), None));
    };
    match mode {
        ShapeMode::Declared => Ok((Fact::new(dtype, Some(decl.to_vec())), None)),
        ShapeMode::Bound => {
            let mut dims = Vec::with_capacity(decl.len());
            for (i, d) in decl.iter().enumerate() {
                dims.push(match d {
                    Dim::Known(k) => *k,
                    _ if i == 0 => 1,
                    other => {
                        // Show the shape to fill in: known dims as they are, batch 1, others named.
                        let hint: Vec<String> = decl
                            .iter()
                            .enumerate()
                            .map(|(k, d)| match d {
                                Dim::Known(v) => v.to_string(),
                                _ if k == 0 => "1".into(),
                                _ => format!("<d{k}>"),
                            })
                            .collect();
                        return Err(Error::Usage(format!(
                            "input '{}' dim {i} is dynamic ('{other}'): pass --input-shape {}={}",
                            val.name,
                            val.name,
                            hint.join("x")
                        )));
                    }
                });
            }
            Ok((Fact::known(dtype, &dims), Some(dims)))
        }
    }
}

fn declared_fact(g: &Graph, v: ValueId) -> Fact {
    let val = g.value(v);
    Fact::new(
        val.declared_elem(),
        val.declared_shape().map(|s| s.to_vec()),
    )
}

/// Fills dims the op left unknown from the declared `value_info`, when present.
fn merge_declared(f: &mut Fact, decl: &Fact) {
    if f.dtype.is_none() {
        f.dtype = decl.dtype;
    }
    match (&mut f.shape, &decl.shape) {
        (None, Some(d)) => f.shape = Some(d.clone()),
        (Some(s), Some(d)) if s.len() == d.len() => {
            for (a, b) in s.iter_mut().zip(d) {
                if *a == Dim::Unknown {
                    *a = b.clone();
                }
            }
        }
        _ => {}
    }
}

/// A shape vector whose elements all became known (e.g. `Shape(x)[1]` with a static channel
/// dim) is a constant.
fn promote_sym(f: &mut Fact) {
    if f.value.is_some() || f.dtype != Some(crate::ir::DataType::INT64) {
        return;
    }
    let (Some(sym), Some(shape)) = (&f.sym, &f.shape) else {
        return;
    };
    let Some(vals) = ops::concrete(sym) else {
        return;
    };
    let dims: Vec<i64> = match shape.as_slice() {
        [] if vals.len() == 1 => vec![],
        [Dim::Known(n)] if *n as usize == vals.len() => vec![*n],
        _ => return,
    };
    f.value = Some(std::sync::Arc::new(crate::ir::Tensor::i64(&dims, vals)));
}

/// Runs inference over the main graph.
pub fn infer(
    model: &Model,
    mode: ShapeMode,
    overrides: &HashMap<String, Vec<i64>>,
) -> Result<Analysis> {
    let g = &model.graph;
    for name in overrides.keys() {
        if !g.inputs.iter().any(|&v| g.value(v).name == *name) {
            return Err(Error::Usage(format!(
                "--input-shape names '{name}', which is not a graph input"
            )));
        }
    }
    let mut a = Analysis {
        facts: vec![Fact::default(); g.values.len()],
        ..Default::default()
    };
    for (i, val) in g.values.iter().enumerate() {
        if let ValueDef::Const(c) = &val.def {
            a.facts[i] = match c.origin {
                ConstOrigin::Initializer {
                    overridable: true, ..
                } => Fact::known(Some(c.tensor.dtype), &c.tensor.dims),
                _ => Fact::from_tensor(c.tensor.clone()),
            };
        }
    }
    for &v in &g.inputs {
        if matches!(g.value(v).def, ValueDef::Input) {
            let (f, bound) = input_fact(g, v, &mode, overrides)?;
            a.facts[v.0] = f;
            if let Some(b) = bound {
                a.input_shapes.push((g.value(v).name.clone(), b));
            }
        }
    }
    let order = g
        .topo_order()
        .map_err(|n| Error::Invalid(format!("cycle through node {}", g.node(n).label(n))))?;
    let opset = model.opset();
    for id in order {
        let node = g.node(id);
        let outs: Vec<Fact> = match ops::lookup(node) {
            None => {
                a.unknown.push(id);
                node.outputs
                    .iter()
                    .map(|o| o.map(|v| declared_fact(g, v)).unwrap_or_default())
                    .collect()
            }
            Some(op) => {
                let cx = InferCx {
                    node,
                    opset,
                    inputs: node
                        .inputs
                        .iter()
                        .map(|i| i.map(|v| &a.facts[v.0]))
                        .collect(),
                    eval: true,
                };
                match op.infer(&cx) {
                    Ok(mut f) => {
                        f.resize(node.outputs.len(), Fact::default());
                        f
                    }
                    Err(e) => {
                        a.errors.push((id, e));
                        node.outputs
                            .iter()
                            .map(|o| o.map(|v| declared_fact(g, v)).unwrap_or_default())
                            .collect()
                    }
                }
            }
        };
        for (slot, mut f) in outs.into_iter().enumerate() {
            if let Some(v) = node.outputs[slot] {
                promote_sym(&mut f);
                if f.value.is_none() {
                    merge_declared(&mut f, &declared_fact(g, v));
                }
                a.facts[v.0] = f;
            }
        }
    }
    Ok(a)
}
