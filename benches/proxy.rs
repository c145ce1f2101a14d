//! Benchmark (a program, not a timed test): how well the search's reward ranks plans. For the
//! unsearched uniform plan (as the CLI makes it) and random budget-meeting allocations around it
//! (per group a keep ratio of the environment's fair share × e^N(0, s²), clipped as an agent's
//! actions are; channels chosen by the least-squares criterion), it measures
//!
//! - the search's proxies on 500 validation images (training images held out from calibration):
//!   after the cached one-round least squares (what the search uses by default) — top-1, mean
//!   probability of the true class ("soft top-1"), −cross-entropy, −KL to the original — and
//!   after level-by-level least squares from the first 128 calibration images
//!   (`--search-recover seq:128`);
//! - the truth: top-1 on the 10k test set after the shipped recovery (level-by-level least
//!   squares from 1,000 calibration images), and the re-ranking's score (top-1 on 1,000
//!   validation images after that recovery);
//!
//! and prints each plan's figures and each proxy's Spearman rank correlation with the truth.
//!
//! `cargo bench --bench proxy [-- resnet20|resnet56] [-- --plans N] [-- --seed S]`
//! (default resnet56, 16 random plans, seed 1). Needs ../shared (skips otherwise).

use onnx_prune::data;
use onnx_prune::eval::{metrics, runtime, TempDir};
use onnx_prune::search::datafree::{Allocation, Method, Pruner};
use onnx_prune::search::env::{self, Env};
use onnx_prune::search::recover::{self, FastCache};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Top-1 and soft top-1 (the project's metrics), and the mean log-probability of the label.
fn scores(logits: &[f32], k: usize, y: &[i64]) -> (f64, f64, f64) {
    let n = y.len().min(logits.len() / k);
    let mut lp = 0.0;
    for i in 0..n {
        let row = &logits[i * k..(i + 1) * k];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        lp += row[y[i] as usize] as f64 - m - z.ln();
    }
    (
        metrics::accuracy(logits, k, y).top1,
        metrics::soft_accuracy(logits, k, y),
        lp / n.max(1) as f64,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let model_name = if args.iter().any(|a| a == "resnet20") {
        "resnet20"
    } else {
        "resnet56"
    };
    let plans: usize = arg("--plans").and_then(|s| s.parse().ok()).unwrap_or(16);
    let seed: u64 = arg("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let opts = data::DataOptions {
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        ..Default::default()
    };
    let chw = (3, 32, 32);
    let test = data::load(&shared.join("data/cifar10/test_10k_jpeg.tar"), chw, &opts).unwrap();
    let train = data::load(&shared.join("data/cifar10/train_50k_jpeg.tar"), chw, &opts).unwrap();
    let (ci, vi) = data::split(train.n, seed, 1000, 1000).unwrap();
    let calib = train.subset(&ci);
    let val = train.subset(&vi);
    let sc = calib.subset(&(0..512).collect::<Vec<_>>());
    let sv = val.subset(&(0..500).collect::<Vec<_>>());
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{model_name}, seed {seed}, {plans} random plans + uniform; {line}");
    let model =
        onnx_prune::onnx::load(&shared.join(format!("models/cifar10/{model_name}.onnx"))).unwrap();
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let tmp = TempDir::new("proxy").unwrap();
    let yv = sv.y.clone().unwrap();
    let (lo, k) = runtime::logits(kind, &p.model, &tmp, "orig.onnx", &sv).unwrap();

    // The least-squares criterion (as `--method ls` computes it) and the cached statistics.
    let cached = env::cached_fit_options(kind);
    let mut fast = FastCache::new();
    let l1 = p.importance(Method::L1, seed);
    let (select, _) = fast
        .ls_importance(&p, &sc.x, sc.n, chw, &cached, &l1)
        .unwrap();

    // Plans: uniform (s = 0), then random allocations around it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut e = Env::new(&p, 0.5, 8, 0.05);
    e.set_select(select.clone());
    // Plan 0: the CLI's unsearched plan (uniform ratio, then the rest of the budget filled).
    let target = (p.base_macs as f64 * 0.5).floor() as u64;
    let mut keeps = vec![(0.0, p.allocate(target, &select, Allocation::Uniform, 8))];
    for i in 1..=plans {
        let s = [0.15, 0.3, 0.5][i % 3];
        e.reset();
        while !e.done() {
            let f = e.fair_ratio();
            // Box–Muller normal.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            e.step(f * (s * z).exp());
        }
        keeps.push((s, e.keep()));
    }

    println!();
    println!("| plan | s | MACs | proxy top-1 | proxy soft | proxy −CE | proxy −KL | seq:128 top-1 | seq:128 soft | rerank val top-1 | test top-1 | s/plan |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let names = [
        "proxy top-1",
        "proxy soft top-1",
        "proxy -CE",
        "proxy -KL",
        "seq:128 top-1",
        "seq:128 soft top-1",
        "rerank val top-1 (1000)",
    ];
    let mut cols: Vec<Vec<f64>> = vec![vec![]; names.len()];
    let mut truth = vec![];
    let yt = test.y.clone().unwrap();
    let yval = val.y.clone().unwrap();
    let seq128 = recover::Options {
        sequential: true,
        positions: 64,
        ..cached.clone()
    };
    let shipped = recover::Options {
        runtime: kind,
        seed,
        ..Default::default()
    };
    for (i, (s, keep)) in keeps.iter().enumerate() {
        let t = Instant::now();
        let macs = p.macs(keep) as f64 / p.base_macs as f64;
        // Cached one-round fit (the search's default proxy).
        let mut m = p.apply(keep).unwrap();
        fast.recover(&p, keep, &mut m, &sc.x, sc.n, chw, &cached)
            .unwrap();
        let (l, _) = runtime::logits(kind, &m, &tmp, "c.onnx", &sv).unwrap();
        let (a, soft, lp) = scores(&l, k, &yv);
        let kl = metrics::fidelity(&lo, &l, k).kl;
        // Level by level from 128 calibration images.
        let mut m = p.apply(keep).unwrap();
        let n128 = 128;
        recover::recover(
            &p,
            keep,
            &mut m,
            &calib.x[..n128 * 3 * 32 * 32],
            n128,
            chw,
            &seq128,
        )
        .unwrap();
        let (l, _) = runtime::logits(kind, &m, &tmp, "s.onnx", &sv).unwrap();
        let (a128, soft128, _) = scores(&l, k, &yv);
        // The shipped recovery; the re-ranking's score and the test set.
        let mut m = p.apply(keep).unwrap();
        recover::recover(&p, keep, &mut m, &calib.x, calib.n, chw, &shipped).unwrap();
        let (l, _) = runtime::logits(kind, &m, &tmp, "f.onnx", &val).unwrap();
        let rv = scores(&l, k, &yval).0;
        let (l, _) = runtime::logits(kind, &m, &tmp, "f.onnx", &test).unwrap();
        let tt = scores(&l, k, &yt).0;
        let row = [a, soft, lp, -kl, a128, soft128, rv];
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
        truth.push(tt);
        println!(
            "| {} | {s:.2} | {:.1}% | {a:.4} | {soft:.4} | {lp:.4} | {:.4} | {a128:.4} | {soft128:.4} | {rv:.4} | {tt:.4} | {:.0} |",
            if i == 0 {
                "uniform".to_string()
            } else {
                format!("random {i}")
            },
            100.0 * macs,
            -kl,
            t.elapsed().as_secs_f64()
        );
    }
    println!();
    println!(
        "Spearman rank correlation with test top-1 over {} plans:",
        truth.len()
    );
    for (name, c) in names.iter().zip(&cols) {
        println!(
            "  {name:<24} {:.3}",
            metrics::spearman(c, &truth).unwrap_or(f64::NAN)
        );
    }
    let beat = truth[1..].iter().filter(|&&t| t > truth[0]).count();
    println!(
        "random plans above uniform on test top-1: {beat}/{} (best {:.4}, uniform {:.4})",
        truth.len() - 1,
        truth.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        truth[0]
    );
}
