//! Nodes and their attributes.

use super::graph::{NodeId, Opaque, ValueId};
use super::tensor::Tensor;
use bytes::Bytes;

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Bytes),
    Tensor(Tensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Bytes>),
    /// Any other attribute (graphs, sparse tensors, type protos, references, doc strings):
    /// the whole encoded `AttributeProto`.
    Opaque(Opaque),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
    /// For tensor attributes: the `TensorProto` fields besides dims/type/data (name, doc string),
    /// so they round-trip.
    pub residue: Opaque,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    /// `None` for an omitted optional input (empty name in ONNX).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// Outer-scope values read by name inside subgraph attributes.
    pub implicit_inputs: Vec<ValueId>,
    pub attrs: Vec<Attribute>,
    pub doc_string: String,
    /// `NodeProto` fields the IR does not model (overload, metadata_props, device configs).
    pub residue: Opaque,
    /// Emission order key: the original position; new nodes take the key of what they replace.
    pub order: u64,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|a| a.name == name).map(|a| &a.value)
    }
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        match self.attr(name)? {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn attr_f(&self, name: &str) -> Option<f32> {
        match self.attr(name)? {
            AttrValue::Float(f) => Some(*f),
            _ => None,
        }
    }
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attr(name)? {
            AttrValue::Ints(v) => Some(v),
            _ => None,
        }
    }
    pub fn attr_s(&self, name: &str) -> Option<&str> {
        match self.attr(name)? {
            AttrValue::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
    pub fn set_attr(&mut self, name: &str, value: AttrValue) {
        if let Some(a) = self.attrs.iter_mut().find(|a| a.name == name) {
            a.value = value;
        } else {
            self.attrs.push(Attribute {
                name: name.to_string(),
                value,
                residue: Opaque::default(),
            });
        }
    }
    pub fn is_standard(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }
    /// `name` or, when the exporter left it empty, `op_type#index`-style label for messages.
    pub fn label(&self, id: NodeId) -> String {
        if self.name.is_empty() {
            format!("{}#{}", self.op_type, id.0)
        } else {
            format!("'{}' ({})", self.name, self.op_type)
        }
    }
}
