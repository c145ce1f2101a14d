//! Benchmark: load + simplify + write vs a plain prost decode + encode of the same file.
//! Prints medians of interleaved runs and their ratio. `cargo bench --bench io [-- RUNS]`.
//! Models from ../shared (skipped with a message when absent) and models/tiny_resnet.onnx.

use onnx_prune::onnx::{self, proto as pb, SaveOptions};
use onnx_prune::rewrite::{self, PassOptions};
use prost::Message;
use std::path::Path;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn baseline(src: &Path, dst: &Path) {
    let bytes = bytes::Bytes::from(std::fs::read(src).unwrap());
    let m = pb::ModelProto::decode(bytes).unwrap();
    std::fs::write(dst, m.encode_to_vec()).unwrap();
}

fn ours(src: &Path, dst: &Path) -> usize {
    let mut m = onnx::load(src).unwrap();
    rewrite::simplify(&mut m, &PassOptions::default()).unwrap();
    onnx::save(&m, dst, &SaveOptions::default(), &[]).unwrap();
    m.graph.live_nodes().count()
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(9);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/models");
    let mut models = vec![];
    if shared.is_dir() {
        for m in [
            "zoo/resnet18_bn.onnx",
            "zoo/mobilenet_v2.onnx",
            "cifar10/resnet56.onnx",
        ] {
            models.push(shared.join(m));
        }
    } else {
        println!("SKIP: ../shared is absent; benchmarking the shipped fixture only");
    }
    models.push(root.join("models/tiny_resnet.onnx"));
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "{:<22} {:>9} {:>16} {:>22} {:>7}",
        "model", "MB", "prost dec+enc ms", "load+simplify+write ms", "ratio"
    );
    for m in models {
        let size = std::fs::metadata(&m).unwrap().len() as f64 / 1e6;
        let (a, b) = (tmp.path().join("a.onnx"), tmp.path().join("b.onnx"));
        baseline(&m, &a); // warm the page cache and allocator
        ours(&m, &b);
        let (mut tb, mut to) = (vec![], vec![]);
        for _ in 0..runs {
            let t = Instant::now();
            baseline(&m, &a);
            tb.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            ours(&m, &b);
            to.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (mb, mo) = (median(&mut tb), median(&mut to));
        println!(
            "{:<22} {:>9.1} {:>16.2} {:>22.2} {:>6.2}x",
            m.file_name().unwrap().to_string_lossy(),
            size,
            mb,
            mo,
            mo / mb
        );
    }
    println!("(medians of {runs} interleaved runs; both sides read the file and write the result)");
}
