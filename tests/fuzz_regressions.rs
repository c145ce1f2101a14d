//! Inputs the fuzzer (fuzz/fuzz_targets/load.rs) once crashed on: the same pipeline must now
//! return errors or succeed, never panic.

use onnx_prune::analysis::{cost, infer, ShapeMode};
use onnx_prune::rewrite::{simplify, PassOptions};
use std::collections::HashMap;

#[test]
fn recorded_crashers_no_longer_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        n += 1;
        let Ok(mut m) = onnx_prune::onnx::decode_model(data.into(), None) else {
            continue;
        };
        let _ = onnx_prune::onnx::encode_model(&m);
        if let Ok(a) = infer(&m, ShapeMode::Bound, &HashMap::new()) {
            let _ = cost(&m, &a);
        }
        if simplify(&mut m, &PassOptions { fold_bn: true }).is_ok() {
            m.graph.check().unwrap();
            let _ = onnx_prune::onnx::encode_model(&m);
        }
    }
    assert!(n > 0);
}
