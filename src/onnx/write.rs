//! IR → ONNX protobuf, and atomic file output.

use super::proto as pb;
use crate::error::{Error, Result};
use crate::ir::{
    AttrValue, Attribute, ConstOrigin, Dim, Graph, Model, NodeId, Opaque, Tensor, TensorData,
    ValueDef, ValueId, ValueInfo, ValueType,
};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where tensor data goes when saving.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExternalData {
    /// Tensors that were external in the source stay external; everything else is inline.
    #[default]
    Keep,
    /// Every tensor of at least 1 KiB goes to `<output>.data`.
    All,
    /// Everything inline (fails above protobuf's 2 GiB limit).
    None,
}

#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    pub external: ExternalData,
}

const PROTO_LIMIT: usize = (2 << 30) - 1;
const EXTERNAL_MIN_BYTES: usize = 1024;

fn decode<M: Message + Default>(o: &Opaque) -> M {
    // Residues were produced by our own encoder from a successfully decoded message.
    M::decode(o.0.clone()).unwrap_or_default()
}

/// Builds the `ModelProto`. Tensors for which `external(value)` returns `Some(entries)` get those
/// external_data entries instead of inline data.
pub fn to_proto(model: &Model) -> Result<pb::ModelProto> {
    to_proto_with(model, &mut |_, _| None)
}

type ExternalHook<'a> = dyn FnMut(ValueId, &Tensor) -> Option<Vec<pb::StringStringEntryProto>> + 'a;

fn to_proto_with(model: &Model, external: &mut ExternalHook<'_>) -> Result<pb::ModelProto> {
    let mut m: pb::ModelProto = decode(&model.residue);
    m.ir_version = Some(model.ir_version);
    // The residue keeps the original opset_import (exact bytes, e.g. an explicit empty domain);
    // it is regenerated only if the opsets were changed.
    let orig: Vec<(String, i64)> = m
        .opset_import
        .iter()
        .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
        .collect();
    if orig != model.opsets {
        m.opset_import = model
            .opsets
            .iter()
            .map(|(d, v)| pb::OperatorSetIdProto {
                // The default domain is written absent, as most exporters do.
                domain: (!d.is_empty()).then(|| d.clone()),
                version: Some(*v),
            })
            .collect();
    }
    let mut g = write_graph(&model.graph, external)?;
    if model.ir_version < 4 {
        declare_initializers(&mut g);
    }
    m.graph = Some(g);
    Ok(m)
}

/// Encodes the model with all tensor data inline.
pub fn encode_model(model: &Model) -> Result<Vec<u8>> {
    let m = to_proto(model)?;
    let len = m.encoded_len();
    if len > PROTO_LIMIT {
        return Err(Error::Usage(format!(
            "the model is {len} bytes, over protobuf's 2 GiB limit: save it with external data"
        )));
    }
    Ok(m.encode_to_vec())
}

/// IR < 4 requires every initializer to be listed as a graph input too: the ones surgery or
/// folding created are appended after the existing inputs, typed by their tensor.
fn declare_initializers(g: &mut pb::GraphProto) {
    let listed: std::collections::HashSet<String> =
        g.input.iter().filter_map(|i| i.name.clone()).collect();
    let extra: Vec<pb::ValueInfoProto> = g
        .initializer
        .iter()
        .filter(|t| !t.name.as_ref().is_some_and(|n| listed.contains(n)))
        .map(|t| pb::ValueInfoProto {
            name: t.name.clone(),
            r#type: Some(tensor_type(
                t.data_type.unwrap_or(0),
                Some(t.dims.iter().map(|&d| Dim::Known(d)).collect()),
            )),
            ..Default::default()
        })
        .collect();
    g.input.extend(extra);
}

fn write_graph(g: &Graph, external: &mut ExternalHook<'_>) -> Result<pb::GraphProto> {
    let mut out: pb::GraphProto = decode(&g.residue);
    let orphan_vi = std::mem::take(&mut out.value_info);
    out.name = Some(g.name.clone());

    // Initializers: original ones in file order, then new ones in creation order.
    let mut inits: Vec<(usize, ValueId)> = Vec::new();
    let mut const_nodes: Vec<(u64, ValueId)> = Vec::new();
    for (i, v) in g.values.iter().enumerate() {
        if let ValueDef::Const(c) = &v.def {
            match &c.origin {
                ConstOrigin::Initializer { index, .. } => inits.push((*index, ValueId(i))),
                ConstOrigin::Node { order, .. } => const_nodes.push((*order, ValueId(i))),
            }
        }
    }
    inits.sort();
    const_nodes.sort();
    for (_, v) in &inits {
        let val = g.value(*v);
        let c = val.constant().unwrap();
        let mut t = write_tensor(&c.tensor, &val.name, &c.residue);
        if let Some(entries) = external(*v, &c.tensor) {
            t.raw_data = None;
            t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
            t.external_data = entries;
        }
        out.initializer.push(t);
    }

    // Nodes in topological order, Constant nodes interleaved at their original positions.
    let order = g.topo_order().map_err(|n| {
        Error::Invalid(format!(
            "the graph has a cycle through node {}",
            g.node(n).label(n)
        ))
    })?;
    let mut emitted = vec![false; g.values.len()];
    let mut ci = 0;
    let emit_const = |v: ValueId, out: &mut pb::GraphProto, emitted: &mut Vec<bool>| {
        if emitted[v.0] {
            return;
        }
        emitted[v.0] = true;
        let val = g.value(v);
        let c = val.constant().unwrap();
        if let ConstOrigin::Node { residue, .. } = &c.origin {
            let mut n: pb::NodeProto = decode(residue);
            n.output = vec![val.name.clone()];
            out.node.push(n);
        }
    };
    for id in order {
        let node = g.node(id);
        while ci < const_nodes.len() && const_nodes[ci].0 < node.order {
            emit_const(const_nodes[ci].1, &mut out, &mut emitted);
            ci += 1;
        }
        for v in node
            .inputs
            .iter()
            .flatten()
            .chain(node.implicit_inputs.iter())
        {
            if matches!(&g.value(*v).def, ValueDef::Const(c) if matches!(c.origin, ConstOrigin::Node { .. }))
            {
                emit_const(*v, &mut out, &mut emitted);
            }
        }
        out.node.push(write_node(g, id));
    }
    for &(_, v) in &const_nodes[ci..] {
        emit_const(v, &mut out, &mut emitted);
    }

    out.input = g.inputs.iter().map(|&v| write_value_info(g, v)).collect();
    out.output = g.outputs.iter().map(|&v| write_value_info(g, v)).collect();
    out.value_info = g
        .values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.in_value_info && !matches!(v.def, ValueDef::Removed))
        .map(|(i, _)| write_value_info(g, ValueId(i)))
        .collect();
    out.value_info.extend(orphan_vi);
    Ok(out)
}

fn write_node(g: &Graph, id: NodeId) -> pb::NodeProto {
    let n = g.node(id);
    let mut p: pb::NodeProto = decode(&n.residue);
    p.name = if n.name.is_empty() && p.name.is_none() {
        None
    } else {
        Some(n.name.clone())
    };
    p.op_type = Some(n.op_type.clone());
    p.domain = if n.domain.is_empty() && p.domain.is_none() {
        None
    } else {
        Some(n.domain.clone())
    };
    p.doc_string = if n.doc_string.is_empty() {
        None
    } else {
        Some(n.doc_string.clone())
    };
    p.input = n
        .inputs
        .iter()
        .map(|v| v.map(|v| g.value(v).name.clone()).unwrap_or_default())
        .collect();
    // Trailing omitted optional inputs are dropped, as ONNX allows.
    while p.input.last().is_some_and(|s| s.is_empty()) {
        p.input.pop();
    }
    p.output = n
        .outputs
        .iter()
        .map(|v| v.map(|v| g.value(v).name.clone()).unwrap_or_default())
        .collect();
    p.attribute = n.attrs.iter().map(write_attr).collect();
    p
}

fn write_attr(a: &Attribute) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: Some(a.name.clone()),
        ..Default::default()
    };
    match &a.value {
        AttrValue::Float(f) => {
            p.r#type = Some(T::Float as i32);
            p.f = Some(*f);
        }
        AttrValue::Int(i) => {
            p.r#type = Some(T::Int as i32);
            p.i = Some(*i);
        }
        AttrValue::String(s) => {
            p.r#type = Some(T::String as i32);
            p.s = Some(s.clone());
        }
        AttrValue::Tensor(t) => {
            p.r#type = Some(T::Tensor as i32);
            p.t = Some(write_tensor(t, "", &a.residue));
        }
        AttrValue::Floats(v) => {
            p.r#type = Some(T::Floats as i32);
            p.floats = v.clone();
        }
        AttrValue::Ints(v) => {
            p.r#type = Some(T::Ints as i32);
            p.ints = v.clone();
        }
        AttrValue::Strings(v) => {
            p.r#type = Some(T::Strings as i32);
            p.strings = v.clone();
        }
        AttrValue::Opaque(o) => {
            p = decode(o);
            p.name = Some(a.name.clone());
        }
    }
    p
}

fn write_tensor(t: &Tensor, name: &str, residue: &Opaque) -> pb::TensorProto {
    let mut p: pb::TensorProto = decode(residue);
    if !name.is_empty() {
        p.name = Some(name.to_string());
    }
    p.dims = t.dims.clone();
    p.data_type = Some(t.dtype.0);
    match &t.data {
        TensorData::Raw(b) => p.raw_data = Some(b.clone()),
        TensorData::Strings(s) => p.string_data = s.clone(),
    }
    p
}

fn write_value_info(g: &Graph, v: ValueId) -> pb::ValueInfoProto {
    let val = g.value(v);
    let mut p = pb::ValueInfoProto::default();
    if let Some(info) = &val.info {
        p = decode(&info.residue);
        p.r#type = write_type(info);
        // An initializer listed as an input: its declaration follows the tensor's dims when a
        // pass changed them in place.
        if let (ValueDef::Const(c), Some(ValueType::Tensor { elem, shape })) = (&val.def, &info.ty)
        {
            let dims: Vec<Dim> = c.tensor.dims.iter().map(|&d| Dim::Known(d)).collect();
            if shape.as_ref() != Some(&dims) {
                p.r#type = Some(tensor_type(elem.0, Some(dims)));
            }
        }
    } else if let ValueDef::Const(c) = &val.def {
        // An initializer listed as an input/output with no declared type: describe it.
        p.r#type = Some(tensor_type(
            c.tensor.dtype.0,
            Some(c.tensor.dims.iter().map(|&d| Dim::Known(d)).collect()),
        ));
    }
    p.name = Some(val.name.clone());
    p
}

fn write_type(info: &ValueInfo) -> Option<pb::TypeProto> {
    let ty = info.ty.as_ref()?;
    if let Some((orig, raw)) = &info.orig_ty {
        if orig == ty {
            return Some(decode(raw));
        }
    }
    Some(match ty {
        ValueType::Tensor { elem, shape } => tensor_type(elem.0, shape.clone()),
        ValueType::Other(o) => decode(o),
    })
}

fn tensor_type(elem: i32, shape: Option<Vec<Dim>>) -> pb::TypeProto {
    use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
    pb::TypeProto {
        denotation: None,
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(elem),
            shape: shape.map(|dims| pb::TensorShapeProto {
                dim: dims
                    .into_iter()
                    .map(|d| Dimension {
                        denotation: None,
                        value: match d {
                            Dim::Known(v) => Some(DV::DimValue(v)),
                            Dim::Sym(s) => Some(DV::DimParam(s)),
                            Dim::Unknown => None,
                        },
                    })
                    .collect(),
            }),
        })),
    }
}

/// Writes `model` to `path` atomically (temporary file + rename; the external data file, if
/// any, is written the same way first). Refuses to overwrite `protect` (the input file).
pub fn save(model: &Model, path: &Path, opts: &SaveOptions, protect: &[PathBuf]) -> Result<()> {
    let canon_out = canonical_or_self(path);
    for p in protect {
        if canonical_or_self(p) == canon_out {
            return Err(Error::Usage(format!(
                "refusing to overwrite the input file {}: choose another output path",
                path.display()
            )));
        }
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    for p in protect {
        if canonical_or_self(p) == canonical_or_self(&data_path) {
            return Err(Error::Usage(format!(
                "refusing to overwrite {} (the input's external data): choose another output path",
                data_path.display()
            )));
        }
    }

    let mut data: Vec<u8> = Vec::new();
    let mode = opts.external;
    let mut hook = |_: ValueId, t: &Tensor| -> Option<Vec<pb::StringStringEntryProto>> {
        let raw = t.raw()?;
        if raw.len() < EXTERNAL_MIN_BYTES {
            return None;
        }
        // Align each tensor to 4 KiB so the file can be memory-mapped.
        while !data.len().is_multiple_of(4096) {
            data.push(0);
        }
        let offset = data.len();
        data.extend_from_slice(raw);
        let kv = |k: &str, v: String| pb::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        Some(vec![
            kv("location", data_name.clone()),
            kv("offset", offset.to_string()),
            kv("length", raw.len().to_string()),
        ])
    };
    let was_external: Vec<bool> = model
        .graph
        .values
        .iter()
        .map(|v| v.constant().is_some_and(|c| c.external))
        .collect();
    let proto = match mode {
        ExternalData::None => to_proto(model)?,
        ExternalData::All => to_proto_with(model, &mut hook)?,
        ExternalData::Keep => to_proto_with(model, &mut |v, t| {
            if was_external[v.0] {
                hook(v, t)
            } else {
                None
            }
        })?,
    };
    let len = proto.encoded_len();
    if len > PROTO_LIMIT {
        return Err(Error::Usage(format!(
            "the model would be {len} bytes, over protobuf's 2 GiB limit: use --external-data"
        )));
    }
    let bytes = proto.encode_to_vec();
    if !data.is_empty() {
        write_atomic(&data_path, &data)?;
    }
    write_atomic(path, &bytes)
}

fn canonical_or_self(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Writes to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// The input model and its external data file (`NAME.data` beside it): never to be
/// overwritten by an output.
pub fn input_files(input: &Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![input.to_path_buf()];
    if let Some(name) = input.file_name() {
        v.push(input.with_file_name(format!("{}.data", name.to_string_lossy())));
    }
    v
}
