//! Fuzzes the whole read path: decode → IR → shape inference (both modes) → cost → simplify →
//! encode. Any panic is a bug: bad files must produce errors.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onnx_prune::analysis::{cost, infer, ShapeMode};
use onnx_prune::rewrite::{simplify, PassOptions};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(mut m) = onnx_prune::onnx::decode_model(bytes::Bytes::copy_from_slice(data), None) else { return };
    let _ = onnx_prune::onnx::encode_model(&m);
    if let Ok(a) = infer(&m, ShapeMode::Bound, &HashMap::new()) {
        let _ = cost(&m, &a);
    }
    if simplify(&mut m, &PassOptions { fold_bn: true }).is_ok() {
        m.graph.check().expect("passes keep the graph consistent");
        let _ = onnx_prune::onnx::encode_model(&m);
    }
});
