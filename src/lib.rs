//! onnx-prune: reads ONNX models into an index-based IR, analyses and rewrites them, and writes
//! them back. See ARCHITECTURE.md for the code map.

pub mod analysis;
pub mod budget;
pub mod error;
pub mod eval;
pub mod ir;
pub mod learn;
pub mod onnx;
pub mod report;
pub mod rewrite;
pub mod search;

pub use error::{Error, Result};
