//! Fuzzes the whole data-free prune pipeline: decode → simplify → shape inference → channel
//! analysis → importance (L1, L2) → uniform and global allocation at a MAC target → surgery →
//! encode. Seed it with real models (e.g. `../shared/models`) so the mutations land in weights
//! and graph structure; any panic is a bug: bad files must produce errors.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onnx_prune::search::datafree::{Allocation, Method, Pruner};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = onnx_prune::onnx::decode_model(bytes::Bytes::copy_from_slice(data), None) else { return };
    let Ok(p) = Pruner::new(&m, &HashMap::new()) else { return };
    for (method, alloc, ratio) in [(Method::L1, Allocation::Uniform, 0.5), (Method::L2, Allocation::Global, 0.3)] {
        let imp = p.importance(method, 1);
        let keep = p.allocate((p.base_macs as f64 * ratio) as u64, &imp, alloc, 8);
        if let Ok(pruned) = p.apply(&keep) {
            pruned.graph.check().expect("surgery keeps the graph consistent");
            let _ = onnx_prune::onnx::encode_model(&pruned);
        }
        let _ = p.masked(&keep);
    }
});
