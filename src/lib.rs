//! onnx-prune: reads ONNX models into an index-based IR, analyses and rewrites them, and writes
//! them back. See ARCHITECTURE.md for the code map.

pub mod analysis;
pub mod budget;
pub mod data;
pub mod error;
pub mod eval;
pub mod ir;
pub mod job;
pub mod latency;
pub mod learn;
pub mod net;
pub mod onnx;
pub mod order;
pub mod report;
pub mod rewrite;
pub mod search;

pub use error::{Error, Result};

/// Support for this crate's own tests (not a stable interface).
#[doc(hidden)]
pub mod testkit {
    /// A check that cannot run here: printed, and appended (with the test's name) to the file
    /// `$ONNX_PRUNE_SKIP_LOG` names, so that `.ci/run` can list every skip at the end of its log
    /// (the test harness captures what a passing test prints).
    pub fn skip(reason: &str) {
        println!("SKIP: {reason}");
        if let Some(p) = std::env::var_os("ONNX_PRUNE_SKIP_LOG") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let test = std::thread::current().name().unwrap_or("?").to_string();
                let _ = writeln!(f, "{test}: {reason}");
            }
        }
    }
}
