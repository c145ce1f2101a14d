//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A check that cannot run here: printed and recorded for `.ci/run`'s summary
/// ([`onnx_prune::testkit::skip`]).
pub fn skip(reason: &str) {
    onnx_prune::testkit::skip(reason)
}

/// Whether the environment variable `var` is `1`: CI requires what it names, so its absence is
/// a failure there, not a skip.
pub fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// `../shared` beside the checkout, or `None` (a recorded skip) when absent; with
/// `ONNX_PRUNE_REQUIRE_SHARED=1` (set by CI) its absence fails the test.
pub fn shared() -> Option<PathBuf> {
    let p = repo().join("..").join("shared");
    if p.join("models").is_dir() {
        Some(p)
    } else if required("ONNX_PRUNE_REQUIRE_SHARED") {
        panic!("../shared is required (ONNX_PRUNE_REQUIRE_SHARED=1) but absent");
    } else {
        skip("../shared is absent (tests that need its models are skipped)");
        None
    }
}

/// Real models extracted from registry packages by `.ci/fetch-extra-models` (PP-OCR from the
/// `rapidocr-onnxruntime` wheel), or `None` with a printed reason.
pub fn extra_models() -> Option<PathBuf> {
    let p = std::env::var_os("ONNX_PRUNE_EXTRA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("extra-models"));
    if p.is_dir() {
        Some(p)
    } else if required("ONNX_PRUNE_REQUIRE_EXTRA") {
        panic!(
            "the registry models are required (ONNX_PRUNE_REQUIRE_EXTRA=1) but {} is absent",
            p.display()
        );
    } else {
        skip(&format!(
            "no extra registry models at {} (run .ci/fetch-extra-models)",
            p.display()
        ));
        None
    }
}

/// Whether python3 with `onnx` and `onnxruntime` is available. With
/// `ONNX_PRUNE_REQUIRE_PYTHON=1` (set by CI) its absence is a failure, not a skip.
pub fn python_ok() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnx, onnxruntime"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if required("ONNX_PRUNE_REQUIRE_PYTHON") {
            panic!("python3 with onnx and onnxruntime is required (ONNX_PRUNE_REQUIRE_PYTHON=1)");
        }
        skip("python3 with onnx+onnxruntime not found; onnxruntime cross-checks skipped");
    }
    ok
}

/// Runs `tools/ort_compare.py A B [shapes]`: (max relative diff, checker verdict).
pub fn ort_compare(a: &Path, b: &Path, shapes: &[String]) -> (f64, String) {
    let out = Command::new("python3")
        .arg(repo().join("tools/ort_compare.py"))
        .arg(a)
        .arg(b)
        .args(shapes)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "ort_compare failed for {}: {}",
        b.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        j["max_rel_diff"].as_f64().unwrap(),
        j["checker"].as_str().unwrap().to_string(),
    )
}

/// Whether the ONNX Runtime library is found; required where Python is (`pip install
/// onnxruntime` ships it).
pub fn ort_ok() -> bool {
    if onnx_prune::eval::ort_rt::find_library().is_ok() {
        return true;
    }
    if required("ONNX_PRUNE_REQUIRE_PYTHON") {
        panic!("the ONNX Runtime library is required in CI (pip install onnxruntime)");
    }
    skip("no ONNX Runtime library found");
    false
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
}

/// Parses `a=1x3x4x4` strings into the map the library takes.
pub fn shape_map(specs: &[String]) -> std::collections::HashMap<String, Vec<i64>> {
    specs
        .iter()
        .map(|s| onnx_prune::analysis::parse_input_shape(s).unwrap())
        .collect()
}

/// Runs both models in tract on the same seeded inputs; returns the worst relative diff.
pub fn tract_diff(a: &Path, b: &Path, specs: &[String], batch: Option<usize>) -> f64 {
    use onnx_prune::eval;
    let m = onnx_prune::onnx::load(a).unwrap();
    let mut shapes = eval::input_shapes(&m, &shape_map(specs)).unwrap();
    if let Some(n) = batch {
        for s in &mut shapes {
            s[0] = n;
        }
    }
    eval::tract_rt::compare_models(a, b, &shapes, 0, 2)
        .unwrap()
        .max_rel
}
