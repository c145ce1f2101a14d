//! Library errors. Every message names the file, node or value it is about, on one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a readable ONNX model (empty, truncated, garbage, bad IR version).
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    /// The model is unreadable or structurally invalid (empty, corrupt, dangling names,
    /// duplicate definitions, cycles). [`Error::in_file`] adds the path.
    #[error("{0}")]
    Invalid(String),
    /// Shape inference or cost analysis failed at a node.
    #[error("node {node}: {msg}")]
    Node { node: String, msg: String },
    #[error("{0}")]
    Usage(String),
    /// A target no plan can meet (`--target-latency` out of reach); nothing is written.
    #[error("{0}")]
    Unreachable(String),
    /// A report or plan that could not be encoded as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Error {
        Error::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// Prefixes a `Invalid`/`Node` error with the file it came from.
    pub fn in_file(self, path: &std::path::Path) -> Error {
        match self {
            Error::Invalid(m) => Error::bad_file(path, m),
            Error::Node { node, msg } => Error::bad_file(path, format!("node {node}: {msg}")),
            e => e,
        }
    }
}
