//! ONNX protobuf → IR, the leaves: tensors (raw, typed and external data, read once per
//! file), Constant nodes and attributes.

use super::proto as pb;
use crate::error::{Error, Result};
use crate::ir::{AttrValue, Attribute, DataType, Opaque, Tensor, TensorData};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Cache of external data files, each read once.
pub(super) struct ExternalFiles {
    pub(super) base: Option<PathBuf>,
    pub(super) files: HashMap<String, Bytes>,
}

impl ExternalFiles {
    pub(super) fn slice(
        &mut self,
        tensor: &str,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Bytes> {
        let Some(base) = &self.base else {
            return Err(Error::Invalid(format!(
                "tensor '{tensor}' has external data '{location}' but the model was not read from a file"
            )));
        };
        let rel = Path::new(location);
        if location.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::Invalid(format!(
                "tensor '{tensor}': external data location '{location}' must be a relative path inside the model's directory"
            )));
        }
        if !self.files.contains_key(location) {
            let p = base.join(rel);
            let data = std::fs::read(&p).map_err(|e| {
                Error::Invalid(format!(
                    "tensor '{tensor}': cannot read external data file {}: {e}",
                    p.display()
                ))
            })?;
            self.files.insert(location.to_string(), Bytes::from(data));
        }
        let file = &self.files[location];
        let len = file.len() as u64;
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(len),
        };
        match end {
            Some(end) if offset <= end && end <= len => Ok(file.slice(offset as usize..end as usize)),
            _ => Err(Error::Invalid(format!(
                "tensor '{tensor}': external data range offset {offset} length {length:?} is outside '{location}' ({len} bytes)"
            ))),
        }
    }
}

/// Converts a `TensorProto` into an IR tensor, its residue and whether its data was external.
pub(super) fn read_tensor(
    mut t: pb::TensorProto,
    name: &str,
    ext: &mut ExternalFiles,
) -> Result<(Tensor, Opaque, bool)> {
    let dtype = DataType(t.data_type.unwrap_or(0));
    if t.dims.iter().any(|&d| d < 0) {
        return Err(Error::Invalid(format!(
            "tensor '{name}' has negative dims {:?}",
            t.dims
        )));
    }
    if t.segment.is_some() {
        return Err(Error::Invalid(format!(
            "tensor '{name}' is segmented; segmented tensors are not supported"
        )));
    }
    let dims = std::mem::take(&mut t.dims);
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| {
            Error::Invalid(format!("tensor '{name}' has too many elements ({dims:?})"))
        })?;
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    let data = if dtype == DataType::STRING {
        TensorData::Strings(std::mem::take(&mut t.string_data))
    } else if external {
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for kv in &t.external_data {
            let v = kv.value.as_deref().unwrap_or("");
            match kv.key.as_deref() {
                Some("location") => location = Some(v.to_string()),
                Some("offset") => {
                    offset = v.parse().map_err(|_| {
                        Error::Invalid(format!("tensor '{name}': bad external data offset '{v}'"))
                    })?
                }
                Some("length") => {
                    length = Some(v.parse().map_err(|_| {
                        Error::Invalid(format!("tensor '{name}': bad external data length '{v}'"))
                    })?)
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| {
            Error::Invalid(format!("tensor '{name}' is external but has no location"))
        })?;
        TensorData::Raw(ext.slice(name, &location, offset, length)?)
    } else if let Some(raw) = t.raw_data.take() {
        TensorData::Raw(raw)
    } else {
        TensorData::Raw(typed_to_raw(&mut t, dtype, name)?)
    };
    if let (TensorData::Raw(b), Some(size)) = (&data, dtype.byte_size()) {
        let want = numel.saturating_mul(size as u64);
        if b.len() as u64 != want {
            return Err(Error::Invalid(format!(
                "tensor '{name}': data has {} bytes but dims {:?} of {} need {want}",
                b.len(),
                dims,
                dtype.name()
            )));
        }
    }
    if let TensorData::Strings(s) = &data {
        if s.len() as u64 != numel {
            return Err(Error::Invalid(format!(
                "tensor '{name}': {} strings for dims {dims:?}",
                s.len()
            )));
        }
    }
    let residue = pb::TensorProto {
        doc_string: t.doc_string.take(),
        metadata_props: std::mem::take(&mut t.metadata_props),
        ..Default::default()
    };
    let residue = if residue == pb::TensorProto::default() {
        Opaque::default()
    } else {
        Opaque(residue.encode_to_vec().into())
    };
    Ok((Tensor { dtype, dims, data }, residue, external))
}

/// Typed repeated fields (`float_data`, `int32_data`, ...) → little-endian raw bytes.
pub(super) fn typed_to_raw(t: &mut pb::TensorProto, dtype: DataType, name: &str) -> Result<Bytes> {
    let mut b = Vec::new();
    match dtype.0 {
        1 | 14 => t
            .float_data
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
        11 | 15 => t
            .double_data
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
        7 => t
            .int64_data
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
        6 => t
            .int32_data
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
        12 => t
            .uint64_data
            .iter()
            .for_each(|x| b.extend_from_slice(&(*x as u32).to_le_bytes())),
        13 => t
            .uint64_data
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
        4 | 5 | 10 | 16 => t
            .int32_data
            .iter()
            .for_each(|x| b.extend_from_slice(&(*x as u16).to_le_bytes())),
        2 | 3 | 9 | 17..=20 | 24 => t.int32_data.iter().for_each(|x| b.push(*x as u8)),
        0 => {
            return Err(Error::Invalid(format!("tensor '{name}' has no data_type")));
        }
        _ => {
            // Sub-byte and unknown types: int32_data packed per spec; keep bytes as given.
            t.int32_data.iter().for_each(|x| b.push(*x as u8));
        }
    }
    Ok(b.into())
}

pub(super) fn constant_node_tensor(
    a: &pb::AttributeProto,
    label: &str,
    ext: &mut ExternalFiles,
) -> Result<Tensor> {
    let name = a.name.as_deref().unwrap_or("");
    Ok(match name {
        "value" => {
            let t = a.t.clone().ok_or_else(|| {
                Error::Invalid(format!("node {label}: Constant 'value' holds no tensor"))
            })?;
            read_tensor(t, label, ext)?.0
        }
        "value_float" => Tensor::f32(&[], vec![a.f.unwrap_or(0.0)]),
        "value_floats" => Tensor::f32(&[a.floats.len() as i64], a.floats.clone()),
        "value_int" => Tensor::i64(&[], vec![a.i.unwrap_or(0)]),
        "value_ints" => Tensor::i64(&[a.ints.len() as i64], a.ints.clone()),
        "value_string" => Tensor {
            dtype: DataType::STRING,
            dims: vec![],
            data: TensorData::Strings(vec![a.s.clone().unwrap_or_default()]),
        },
        "value_strings" => Tensor {
            dtype: DataType::STRING,
            dims: vec![a.strings.len() as i64],
            data: TensorData::Strings(a.strings.clone()),
        },
        other => {
            return Err(Error::Invalid(format!(
                "node {label}: Constant has unknown attribute '{other}'"
            )))
        }
    })
}

pub(super) fn read_attr(
    a: pb::AttributeProto,
    label: &str,
    ext: &mut ExternalFiles,
) -> Result<Attribute> {
    use pb::attribute_proto::AttributeType as T;
    let name = a.name.clone().unwrap_or_default();
    let plain = a.ref_attr_name.is_none() && a.doc_string.is_none();
    let value = match (plain, a.r#type.and_then(|t| T::try_from(t).ok())) {
        (true, Some(T::Float)) => AttrValue::Float(a.f.unwrap_or(0.0)),
        (true, Some(T::Int)) => AttrValue::Int(a.i.unwrap_or(0)),
        (true, Some(T::String)) => AttrValue::String(a.s.unwrap_or_default()),
        (true, Some(T::Floats)) => AttrValue::Floats(a.floats),
        (true, Some(T::Ints)) => AttrValue::Ints(a.ints),
        (true, Some(T::Strings)) => AttrValue::Strings(a.strings),
        (true, Some(T::Tensor)) if a.t.is_some() => {
            let mut t = a.t.unwrap();
            let tname = t.name.take();
            let (tensor, residue, _) = read_tensor(t, &format!("{label} attribute '{name}'"), ext)?;
            let residue = match tname {
                None => residue,
                Some(n) => {
                    let mut r = pb::TensorProto::decode(residue.0).unwrap_or_default();
                    r.name = Some(n);
                    Opaque(r.encode_to_vec().into())
                }
            };
            return Ok(Attribute {
                name,
                value: AttrValue::Tensor(tensor),
                residue,
            });
        }
        _ => AttrValue::Opaque(Opaque(a.encode_to_vec().into())),
    };
    Ok(Attribute {
        name,
        value,
        residue: Opaque::default(),
    })
}
