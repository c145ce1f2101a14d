//! The intermediate representation: an index-based graph of ONNX nodes and values.
//!
//! See `graph.rs` for the invariants. Ops are described one per file under `ops/`; the IR itself
//! knows nothing about protobuf (that is `crate::onnx`'s job).

pub mod arr;
pub mod graph;
mod node;
pub mod ops;
pub mod tensor;
mod value;

pub use arr::Arr;
pub use graph::*;
pub use tensor::{DataType, Tensor, TensorData};

/// A whole model: the main graph plus what surrounds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub graph: Graph,
    pub ir_version: i64,
    /// `(domain, version)` for every opset import, in file order ("" is the default domain).
    pub opsets: Vec<(String, i64)>,
    /// `ModelProto` fields other than `graph` (producer, metadata_props, functions,
    /// training_info, the original opset_import...), carried verbatim.
    pub residue: Opaque,
}

impl Model {
    /// Version of the default (`ai.onnx`) opset.
    pub fn opset(&self) -> i64 {
        self.opsets
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|(_, v)| *v)
            .unwrap_or(1)
    }
}
