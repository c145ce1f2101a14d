//! ONNX protobuf → IR.

use super::proto as pb;
use crate::error::{Error, Result};
use crate::ir::{
    ConstOrigin, Constant, DataType, Dim, Graph, Model, Node, Opaque, ValueDef, ValueId, ValueInfo,
    ValueType,
};
use bytes::Bytes;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::read_tensor::{constant_node_tensor, read_attr, read_tensor, ExternalFiles};

/// Oldest IR version accepted (IR 3 introduced opset imports).
pub const MIN_IR_VERSION: i64 = 3;
/// Newest IR version the vendored `onnx.proto` describes.
pub const MAX_IR_VERSION: i64 = 14;

/// Reads a model file and any external data files it references (relative to its directory).
pub fn load(path: &Path) -> Result<Model> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::bad_file(path, "is a directory, not an ONNX file"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }
    });
    decode_model(Bytes::from(bytes), dir.as_deref()).map_err(|e| e.in_file(path))
}

/// Decodes a model from memory. External data is resolved against `base_dir`; with `None`, a
/// model that references external data is an error.
static CONSTANT_INITIALIZER_INPUTS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Makes every model this process reads treat initializers that are also listed as graph
/// inputs as constant weights, whatever its IR version (the CLI's
/// `--constant-initializer-inputs`; IR < 4 files always are). Such an input is then no longer an
/// override point: folding and pruning see through it, and an input whose weight pruning
/// replaced is dropped from the written model's inputs (IR ≥ 4 does not require the listing).
pub fn set_constant_initializer_inputs(on: bool) {
    CONSTANT_INITIALIZER_INPUTS.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn decode_model(bytes: Bytes, base_dir: Option<&Path>) -> Result<Model> {
    if bytes.is_empty() {
        return Err(Error::Invalid(
            "file is empty (0 bytes), not an ONNX model".into(),
        ));
    }
    let mut m = pb::ModelProto::decode(bytes).map_err(|e| {
        Error::Invalid(format!(
            "not a valid ONNX protobuf (truncated or corrupt?): {e}"
        ))
    })?;
    let ir_version = m.ir_version.unwrap_or(0);
    if ir_version == 0 {
        return Err(Error::Invalid(
            "no ir_version: this is not an ONNX model (or it is corrupt)".into(),
        ));
    }
    if !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(&ir_version) {
        return Err(Error::Invalid(format!(
            "unsupported IR version {ir_version} (this build reads IR {MIN_IR_VERSION}..={MAX_IR_VERSION})"
        )));
    }
    let g = m
        .graph
        .take()
        .ok_or_else(|| Error::Invalid("the model has no graph".into()))?;
    let opsets = m
        .opset_import
        .iter()
        .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
        .collect();
    let residue = Opaque(m.encode_to_vec().into());
    let mut ext = ExternalFiles {
        base: base_dir.map(Path::to_path_buf),
        files: HashMap::new(),
    };
    let mut graph = read_graph(g, &mut ext)?;
    if ir_version < 4 || CONSTANT_INITIALIZER_INPUTS.load(std::sync::atomic::Ordering::Relaxed) {
        // Before IR 4 every initializer had to be listed as a graph input too; those entries
        // declare weights, not defaults a caller overrides (the classic ONNX Model Zoo).
        graph.freeze_initializer_inputs();
    }
    Ok(Model {
        graph,
        ir_version,
        opsets,
        residue,
    })
}

fn read_graph(mut g: pb::GraphProto, ext: &mut ExternalFiles) -> Result<Graph> {
    let mut graph = Graph::new(g.name.take().unwrap_or_default());
    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    let input_names: HashSet<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();

    // 1. Initializers: first-class constants.
    for (index, t) in std::mem::take(&mut g.initializer).into_iter().enumerate() {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Error::Invalid(format!("initializer #{index} has no name")));
        }
        if by_name.contains_key(&name) {
            return Err(Error::Invalid(format!(
                "initializer '{name}' is defined twice"
            )));
        }
        let overridable = input_names.contains(name.as_str());
        let (tensor, residue, external) = read_tensor(t, &name, ext)?;
        let v = graph.add_value(
            name.clone(),
            ValueDef::Const(Constant {
                tensor: Arc::new(tensor),
                origin: ConstOrigin::Initializer { index, overridable },
                residue,
                external,
            }),
        );
        by_name.insert(name, v);
    }
    // Sparse initializers stay in the residue; their names are opaque definitions.
    for s in &g.sparse_initializer {
        if let Some(name) = s.values.as_ref().and_then(|v| v.name.clone()) {
            if by_name.contains_key(&name) {
                return Err(Error::Invalid(format!(
                    "sparse initializer '{name}' is defined twice"
                )));
            }
            let v = graph.add_value(name.clone(), ValueDef::Opaque);
            by_name.insert(name, v);
        }
    }

    // 2. Graph inputs.
    for vi in std::mem::take(&mut g.input) {
        let name = vi.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Error::Invalid("a graph input has no name".into()));
        }
        let info = read_value_info(vi)?;
        let v = match by_name.get(&name) {
            Some(&v) => v, // initializer with a default value
            None => {
                let v = graph.add_value(name.clone(), ValueDef::Input);
                by_name.insert(name.clone(), v);
                v
            }
        };
        if graph.inputs.contains(&v) {
            return Err(Error::Invalid(format!(
                "graph input '{name}' is listed twice"
            )));
        }
        graph.value_mut(v).info = Some(info);
        graph.inputs.push(v);
    }

    // 3. Node outputs (all first, so inputs may refer forward; order is checked later).
    let nodes = std::mem::take(&mut g.node);
    let mut pending: Vec<(usize, pb::NodeProto, Vec<Option<ValueId>>)> =
        Vec::with_capacity(nodes.len());
    for (order, n) in nodes.into_iter().enumerate() {
        let label = node_label(&n, order);
        let is_const = n.op_type.as_deref() == Some("Constant")
            && n.domain.as_deref().unwrap_or("").is_empty()
            && n.output.len() == 1
            && n.attribute.len() == 1
            && n.attribute[0].ref_attr_name.is_none()
            && n.attribute[0].name.as_deref() != Some("sparse_value");
        if is_const {
            let name = n.output[0].clone();
            if name.is_empty() {
                return Err(Error::Invalid(format!(
                    "node {label} has an empty output name"
                )));
            }
            if by_name.contains_key(&name) {
                return Err(Error::Invalid(format!(
                    "value '{name}' is defined twice (again by node {label})"
                )));
            }
            let tensor = constant_node_tensor(&n.attribute[0], &label, ext)?;
            let residue = Opaque(n.encode_to_vec().into());
            let v = graph.add_value(
                name.clone(),
                ValueDef::Const(Constant {
                    tensor: Arc::new(tensor),
                    origin: ConstOrigin::Node {
                        order: order as u64,
                        node_name: n.name.clone().unwrap_or_default(),
                        residue,
                    },
                    residue: Opaque::default(),
                    external: false,
                }),
            );
            by_name.insert(name, v);
            continue;
        }
        let node_id = crate::ir::NodeId(graph.nodes.len() + pending.len());
        let mut outs = Vec::with_capacity(n.output.len());
        for (slot, o) in n.output.iter().enumerate() {
            if o.is_empty() {
                outs.push(None);
                continue;
            }
            if by_name.contains_key(o) {
                return Err(Error::Invalid(format!(
                    "value '{o}' is defined twice (again by node {label})"
                )));
            }
            let v = graph.add_value(
                o.clone(),
                ValueDef::Node {
                    node: node_id,
                    slot,
                },
            );
            by_name.insert(o.clone(), v);
            outs.push(Some(v));
        }
        pending.push((order, n, outs));
    }

    // 4. Wire node inputs and build IR nodes.
    for (order, mut n, outputs) in pending {
        let label = node_label(&n, order);
        let mut inputs = Vec::with_capacity(n.input.len());
        for i in &n.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                match by_name.get(i) {
                    Some(&v) => inputs.push(Some(v)),
                    None => {
                        return Err(Error::Invalid(format!(
                            "node {label}: input '{i}' is not produced by any node, initializer or graph input"
                        )))
                    }
                }
            }
        }
        // Outer-scope names read inside subgraphs.
        let mut free = Vec::new();
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                free_names(sub, &mut HashSet::new(), &mut free);
            }
            for sub in &a.graphs {
                free_names(sub, &mut HashSet::new(), &mut free);
            }
        }
        let mut implicit = Vec::new();
        for f in free {
            if let Some(&v) = by_name.get(&f) {
                if !implicit.contains(&v) {
                    implicit.push(v);
                }
            }
        }
        let mut attrs = Vec::with_capacity(n.attribute.len());
        for a in std::mem::take(&mut n.attribute) {
            attrs.push(read_attr(a, &label, ext)?);
        }
        let node = Node {
            name: n.name.take().unwrap_or_default(),
            op_type: n.op_type.take().unwrap_or_default(),
            domain: n.domain.take().unwrap_or_default(),
            inputs,
            outputs,
            implicit_inputs: implicit,
            attrs,
            doc_string: n.doc_string.take().unwrap_or_default(),
            residue: {
                n.input.clear();
                n.output.clear();
                let b = n.encode_to_vec();
                Opaque(b.into())
            },
            order: order as u64,
        };
        if node.op_type.is_empty() {
            return Err(Error::Invalid(format!("node {label} has no op_type")));
        }
        graph.push_node_raw(node);
    }

    // 5. Outputs.
    for vi in std::mem::take(&mut g.output) {
        let name = vi.name.clone().unwrap_or_default();
        let Some(&v) = by_name.get(&name) else {
            return Err(Error::Invalid(format!(
                "graph output '{name}' is not produced by any node, initializer or graph input"
            )));
        };
        let info = read_value_info(vi)?;
        if graph.value(v).info.is_none() {
            graph.value_mut(v).info = Some(info);
        }
        graph.outputs.push(v);
    }

    // 6. value_info: attach to known values; keep unknown entries in the residue.
    let mut orphans = Vec::new();
    for vi in std::mem::take(&mut g.value_info) {
        let name = vi.name.clone().unwrap_or_default();
        match by_name.get(&name) {
            Some(&v) if !graph.value(v).in_value_info => {
                let info = read_value_info(vi)?;
                let val = graph.value_mut(v);
                if val.info.is_none() {
                    val.info = Some(info);
                }
                val.in_value_info = true;
            }
            _ => orphans.push(vi),
        }
    }
    g.value_info = orphans;
    graph.residue = Opaque(g.encode_to_vec().into());

    if let Err(n) = graph.topo_order() {
        return Err(Error::Invalid(format!(
            "the graph has a cycle through node {}",
            graph.node(n).label(n)
        )));
    }
    Ok(graph)
}

fn node_label(n: &pb::NodeProto, order: usize) -> String {
    let op = n.op_type.as_deref().unwrap_or("?");
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => format!("'{s}' ({op})"),
        _ => format!("#{order} ({op})"),
    }
}

/// Names read inside a subgraph (recursively) that it does not define itself.
fn free_names(g: &pb::GraphProto, outer_defined: &mut HashSet<String>, out: &mut Vec<String>) {
    let mut defined: HashSet<String> = outer_defined.clone();
    defined.extend(g.input.iter().filter_map(|i| i.name.clone()));
    defined.extend(g.initializer.iter().filter_map(|i| i.name.clone()));
    defined.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().and_then(|v| v.name.clone())),
    );
    for n in &g.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i) {
                out.push(i.clone());
            }
        }
        for a in &n.attribute {
            let mut d = defined.clone();
            if let Some(sub) = &a.g {
                free_names(sub, &mut d, out);
            }
            for sub in &a.graphs {
                free_names(sub, &mut d, out);
            }
        }
        defined.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    for o in &g.output {
        if let Some(n) = &o.name {
            if !defined.contains(n) {
                out.push(n.clone());
            }
        }
    }
}

fn read_value_info(mut vi: pb::ValueInfoProto) -> Result<ValueInfo> {
    let ty = vi.r#type.take();
    let parsed = ty.as_ref().map(read_type);
    let orig_ty = match (&parsed, &ty) {
        (Some(p), Some(t)) => Some((p.clone(), Opaque(t.encode_to_vec().into()))),
        _ => None,
    };
    vi.name = None;
    Ok(ValueInfo {
        ty: parsed,
        orig_ty,
        residue: Opaque(vi.encode_to_vec().into()),
    })
}

fn read_type(t: &pb::TypeProto) -> ValueType {
    match &t.value {
        Some(pb::type_proto::Value::TensorType(tt)) => ValueType::Tensor {
            elem: DataType(tt.elem_type.unwrap_or(0)),
            shape: tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            Dim::Known(*v)
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                            if !p.is_empty() =>
                        {
                            Dim::Sym(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect()
            }),
        },
        _ => ValueType::Other(Opaque(t.encode_to_vec().into())),
    }
}
