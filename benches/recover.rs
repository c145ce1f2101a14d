//! Benchmark (a program, not a timed test): resnet56 pruned to 50% of its MACs with L1
//! importance (uniform and global allocation), top-1 on the 10k JPEG CIFAR-10 test set with no
//! recovery and with BN re-calibration / least-squares recovery from 1,000 and 5,000 training
//! images; label-free fidelity (agreement, KL) of every variant and its rank correlation with
//! top-1; eval throughput of tract vs ONNX Runtime; recovery times.
//!
//! `cargo bench --bench recover [-- --quick]` (`--quick`: 1,000 calibration images only).
//! Rows: `ls` is sequential least squares (default), `ls (fast)` the one-round ThiNet variant.
//! Needs ../shared (skips with a message otherwise).

use onnx_prune::data;
use onnx_prune::eval::{metrics, runtime, TempDir};
use onnx_prune::search::datafree::{Allocation, Method, Pruner};
use onnx_prune::search::recover::{self, Mode};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let model_path = shared.join("models/cifar10/resnet56.onnx");
    let opts = data::DataOptions {
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        ..Default::default()
    };
    let chw = (3, 32, 32);
    let t = Instant::now();
    let test = data::load(&shared.join("data/cifar10/test_10k_jpeg.tar"), chw, &opts).unwrap();
    let train = data::load(&shared.join("data/cifar10/train_50k_jpeg.tar"), chw, &opts).unwrap();
    println!(
        "decoded {} test + {} train JPEGs in {:.1}s",
        test.n,
        train.n,
        t.elapsed().as_secs_f64()
    );
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{line}");
    let threads = runtime::all_threads();
    let labels = test.y.clone().unwrap();
    let tmp = TempDir::new("bench").unwrap();
    let model = onnx_prune::onnx::load(&model_path).unwrap();
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let orig_path = tmp.save(&p.model, "orig.onnx").unwrap();

    // Throughput of eval on the 10k set, both runtimes (batch 64).
    let mut orig_logits = None;
    for k in [runtime::Kind::Tract, runtime::Kind::Ort] {
        let Ok(mut rt) = runtime::open(k, &orig_path, 64, chw, threads) else {
            println!("{}: not available", k.name());
            continue;
        };
        let t = Instant::now();
        let (l, kk) = rt.run_all(&test.x, test.n).unwrap();
        let s = t.elapsed().as_secs_f64();
        let acc = metrics::accuracy(&l, kk, &labels);
        println!(
            "eval throughput {:<5} {:>6.0} images/s (10k in {s:.1}s), top-1 {:.4}",
            k.name(),
            test.n as f64 / s,
            acc.top1
        );
        if k == kind {
            orig_logits = Some((l, kk));
        }
    }
    let (orig_logits, k) = orig_logits.unwrap();

    let sizes: &[usize] = if quick { &[1000] } else { &[1000, 5000] };
    println!();
    println!(
        "| allocation | recovery | calib images | MACs kept | top-1 | agreement | mean KL | recovery s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let orig_top1 = metrics::accuracy(&orig_logits, k, &labels).top1;
    println!("| (original) | - | - | 100.0% | {orig_top1:.4} | 1.0000 | 0.0000 | - |");
    let (mut tops, mut agrees, mut kls) = (vec![], vec![], vec![]);
    for alloc in [Allocation::Uniform, Allocation::Global] {
        let imp = p.importance(Method::L1, 0);
        let target = (p.base_macs as f64 * 0.5).floor() as u64;
        let keep = p.allocate(target, &imp, alloc, 8);
        let macs = p.macs(&keep) as f64 / p.base_macs as f64;
        let base = p.apply(&keep).unwrap();
        let mut variants = vec![(Mode::None, 0usize, true)];
        for &n in sizes {
            variants.push((Mode::Bn, n, true));
            variants.push((Mode::Ls, n, false));
            variants.push((Mode::Ls, n, true));
        }
        for (mode, n, seq) in variants {
            let mut m = base.clone();
            let mut secs = 0.0;
            if mode != Mode::None {
                let (ci, _) = data::split(train.n, 0, n, 0).unwrap();
                let calib = train.subset(&ci);
                let r = recover::recover(
                    &p,
                    &keep,
                    &mut m,
                    &calib.x,
                    calib.n,
                    chw,
                    &recover::Options {
                        mode,
                        sequential: seq,
                        runtime: kind,
                        ..Default::default()
                    },
                )
                .unwrap();
                secs = r.seconds;
            }
            let path = tmp.save(&m, "variant.onnx").unwrap();
            let (l, _) = runtime::open(kind, &path, 64, chw, threads)
                .unwrap()
                .run_all(&test.x, test.n)
                .unwrap();
            let acc = metrics::accuracy(&l, k, &labels);
            let f = metrics::fidelity(&orig_logits, &l, k);
            println!(
                "| {:?} | {} | {} | {:.1}% | {:.4} | {:.4} | {:.4} | {} |",
                alloc,
                if mode == Mode::Ls && !seq {
                    "ls (fast)"
                } else {
                    mode.name()
                },
                if n == 0 {
                    "-".to_string()
                } else {
                    n.to_string()
                },
                100.0 * macs,
                acc.top1,
                f.agreement,
                f.kl,
                if mode == Mode::None {
                    "-".to_string()
                } else {
                    format!("{secs:.1}")
                }
            );
            tops.push(acc.top1);
            agrees.push(f.agreement);
            kls.push(-f.kl);
        }
    }
    println!();
    println!(
        "rank correlation with top-1 over {} pruned variants: agreement {:.3}, -KL {:.3}",
        tops.len(),
        metrics::spearman(&tops, &agrees).unwrap_or(f64::NAN),
        metrics::spearman(&tops, &kls).unwrap_or(f64::NAN)
    );
}
