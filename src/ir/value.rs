//! Ids, values and their declared types: what the graph's arenas hold besides nodes.

use super::tensor::{DataType, Tensor};
use bytes::Bytes;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct NodeId(pub usize);
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// An encoded protobuf message the IR carries without interpreting (fields we don't model).
/// Only `src/onnx/` encodes or decodes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Opaque(pub Bytes);

impl Opaque {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A declared dimension.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    Sym(String),
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(d) => write!(f, "{d}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// Declared type of a value (graph inputs/outputs and `value_info`).
#[derive(Clone, Debug, PartialEq)]
pub enum ValueType {
    Tensor {
        elem: DataType,
        shape: Option<Vec<Dim>>,
    },
    /// Sequences, maps, optionals, sparse tensors: carried as the encoded `TypeProto`.
    Other(Opaque),
}

/// What the file said about a value (`ValueInfoProto`).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub ty: Option<ValueType>,
    /// The type exactly as read, written back verbatim while `ty` is unchanged (keeps
    /// denotations and other fields the IR does not model).
    pub orig_ty: Option<(ValueType, Opaque)>,
    /// `ValueInfoProto` minus name and type (doc_string, metadata_props).
    pub residue: Opaque,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstOrigin {
    /// From `graph.initializer[index]`; `overridable` when it is also listed as a graph input
    /// (IR < 4 style default value), in which case passes must not fold through it.
    Initializer { index: usize, overridable: bool },
    /// From a `Constant` node at emission position `order`.
    Node {
        order: u64,
        node_name: String,
        residue: Opaque,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub tensor: Arc<Tensor>,
    pub origin: ConstOrigin,
    /// `TensorProto` fields other than name/dims/type/data (doc_string, metadata_props).
    pub residue: Opaque,
    /// Where the data lived in the source file set, if it was external.
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    /// A graph input (not an initializer).
    Input,
    Const(Constant),
    Node {
        node: NodeId,
        slot: usize,
    },
    /// Defined by something the IR carries opaquely (a sparse initializer).
    Opaque,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Input(usize),
    /// Read by name from inside a subgraph attribute of the node.
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Use {
    pub node: NodeId,
    pub slot: Slot,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub def: ValueDef,
    pub uses: Vec<Use>,
    /// Declared type information, if the file had any.
    pub info: Option<ValueInfo>,
    /// Whether the file listed this value in `graph.value_info`.
    pub in_value_info: bool,
}

impl Value {
    pub fn is_const(&self) -> bool {
        matches!(self.def, ValueDef::Const(_))
    }
    pub fn constant(&self) -> Option<&Constant> {
        match &self.def {
            ValueDef::Const(c) => Some(c),
            _ => None,
        }
    }
    pub fn declared_elem(&self) -> Option<DataType> {
        match self.info.as_ref()?.ty.as_ref()? {
            ValueType::Tensor { elem, .. } => Some(*elem),
            ValueType::Other(_) => None,
        }
    }
    pub fn declared_shape(&self) -> Option<&[Dim]> {
        match self.info.as_ref()?.ty.as_ref()? {
            ValueType::Tensor { shape, .. } => shape.as_deref(),
            ValueType::Other(_) => None,
        }
    }
}
