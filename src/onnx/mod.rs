//! The protobuf boundary: the only module that knows `onnx.proto`.
//!
//! - `read`: bytes/file (+ external data) → [`crate::ir::Model`], validating as it goes.
//! - `write`: [`crate::ir::Model`] → bytes/file (+ external data), atomically.
//!
//! Fields the IR does not interpret travel as [`crate::ir::Opaque`] "residue" messages: the
//! proto with the interpreted fields cleared, re-merged on write. That is what makes a
//! load → save round trip preserve opset imports, metadata, functions, training info, doc
//! strings, sparse initializers and anything a future ONNX adds.

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub mod builder;
mod read;
mod read_tensor;
mod write;

pub use read::{
    decode_model, load, set_constant_initializer_inputs, MAX_IR_VERSION, MIN_IR_VERSION,
};
pub use write::{
    encode_model, input_files, save, to_proto, write_atomic, ExternalData, SaveOptions,
};

/// "name version" of the producer recorded in the model, if any.
pub fn producer(model: &crate::ir::Model) -> Option<String> {
    use prost::Message;
    let m = proto::ModelProto::decode(model.residue.0.clone()).ok()?;
    let name = m.producer_name.unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    Some(match m.producer_version {
        Some(v) if !v.is_empty() => format!("{name} {v}"),
        _ => name,
    })
}
