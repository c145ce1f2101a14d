//! Benchmark of fine-tuning on burn (a program, not a timed test).
//!
//! 1. Throughput: forward + backward + optimiser step at batch 64 (images/s, median of 5 timed
//!    steps after 2 warm-up steps) and peak memory (VmHWM of a process that does only that), for
//!    CIFAR resnet20 and resnet56 on every burn backend in the build: `flex` (always),
//!    `ndarray` (feature `ndarray-backend`), `wgpu` (feature `wgpu`; here a CPU Vulkan driver).
//! 2. Accuracy (skipped with `--throughput`): resnet56 pruned to `--target-flops 0.5` with
//!    uniform L1 + least squares, then `onnx-prune finetune` for `--steps N` (default 200) on
//!    `train_50k_jpeg.tar` (1,000 held out) with labels (+ distillation from the original), and
//!    label-free (distillation only); top-1 of each on all of `test_10k_jpeg.tar`. The plan of
//!    the default search (`--agent ddpg`, least squares) gets the same labelled fine-tune, and
//!    so does the unpruned model (the fair anchor).
//!
//! `cargo bench --bench finetune [--features wgpu,ndarray-backend] [-- --throughput]
//! [-- --steps N] [-- --rows labels,label-free,ddpg,original]` (`--rows`: only these rows)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    if let Ok(spec) = std::env::var("ONNX_PRUNE_BENCH_CHILD") {
        child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let only_tp = args.iter().any(|a| a == "--throughput");
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rows: Vec<String> = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| {
            ["labels", "label-free", "ddpg", "original"]
                .map(String::from)
                .to_vec()
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let mut backends = vec!["flex"];
    if cfg!(feature = "ndarray-backend") {
        backends.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    println!("## Throughput (fwd+bwd+SGD step, batch 64, median of 5 steps)\n");
    println!("| model | backend | images/s | ms/step | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    for model in ["resnet20", "resnet56"] {
        for b in &backends {
            let out = Command::new(std::env::current_exe().unwrap())
                .env(
                    "ONNX_PRUNE_BENCH_CHILD",
                    format!(
                        "{}|{b}",
                        shared
                            .join(format!("models/cifar10/{model}.onnx"))
                            .display()
                    ),
                )
                .output()
                .unwrap();
            let s = String::from_utf8_lossy(&out.stdout);
            match s.lines().find(|l| l.starts_with("RESULT")) {
                Some(l) => {
                    let v: Vec<&str> = l.split_whitespace().collect();
                    println!("| {model} | {} | {} | {} | {} |", v[1], v[2], v[3], v[4]);
                }
                None => println!(
                    "| {model} | {b} | failed: {} | | |",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            }
        }
    }
    if only_tp {
        return;
    }
    accuracy(&shared, steps, &rows);
}

/// One throughput measurement in this process: prints `RESULT backend img/s ms peakMiB`.
fn child(spec: &str) {
    use burn::prelude::*;
    use onnx_prune::net::{Dt, Net};
    let (path, backend) = spec.split_once('|').unwrap();
    let (device, name) = match backend {
        // burn 0.22 deprecates ndarray in favour of flex; it stays here as the comparison.
        #[cfg(feature = "ndarray-backend")]
        #[allow(deprecated)]
        "ndarray" => (Device::ndarray().autodiff(), "ndarray".to_string()),
        "wgpu" => {
            onnx_prune::net::select(onnx_prune::net::Backend::Wgpu);
            let (d, line) = onnx_prune::net::device();
            if !line.contains("wgpu (") {
                eprintln!("no wgpu adapter: {line}");
                std::process::exit(1);
            }
            (
                d,
                format!(
                    "wgpu ({})",
                    line.trim_start_matches("burn backend: wgpu (")
                        .trim_end_matches(')')
                ),
            )
        }
        _ => (Device::flex().autodiff(), "flex".to_string()),
    };
    let model = onnx_prune::onnx::load(Path::new(path)).unwrap();
    let mut net = Net::new(&model, &device).unwrap();
    let n = 256;
    let x = onnx_prune::eval::random_inputs(&[vec![n, 3, 32, 32]], 1)[0]
        .data
        .clone();
    let y: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let data = onnx_prune::data::Dataset {
        n,
        c: 3,
        h: 32,
        w: 32,
        x,
        y: Some(y),
        classes: None,
    };
    let times = common::step_times(&mut net, &data, 64, 7);
    let _ = Dt::from_vec(vec![0.0], &[1], &device);
    let med = common::median(times[2..].to_vec());
    let hwm = common::peak_rss_mib();
    println!(
        "RESULT {} {:.0} {:.0} {hwm}",
        name.replace(' ', "_"),
        64.0 / med,
        med * 1000.0
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        panic!("{cmd:?} failed:\n{err}");
    }
    err
}

fn top1(bin: &str, model: &Path, test: &Path, norm: &[&str]) -> f64 {
    let out = Command::new(bin)
        .args(["eval"])
        .arg(model)
        .arg("--data")
        .arg(test)
        .args(norm)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["top1"].as_f64().unwrap()
}

fn accuracy(shared: &Path, steps: usize, rows: &[String]) {
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    let train = shared.join("data/cifar10/train_50k_jpeg.tar");
    let test = shared.join("data/cifar10/test_10k_jpeg.tar");
    let norm = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
    let orig = shared.join("models/cifar10/resnet56.onnx");
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("onnx-prune-bench-ft-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pruned = tmp.join("pruned.onnx");
    println!("\n## resnet56, --target-flops 0.5\n");
    println!("Pruned: uniform L1 (`--agent none --method l1`) or the default search (`--agent ddpg`), both with least squares on 1,000 calibration images. Fine-tune: {steps} steps of 64 (SGD, lr 1e-3, cosine, 5% warm-up, crop+flip), train_50k_jpeg minus 1,000 held out.\n");
    println!("| model | fine-tune | top-1 test_10k | wall s | images/s |");
    println!("|---|---|---|---|---|");
    let base = top1(bin, &orig, &test, &norm);
    println!("| original | none | {base:.4} | | |");
    if rows.iter().any(|r| r == "labels" || r == "label-free") {
        let t = Instant::now();
        run(Command::new(bin)
            .arg(&orig)
            .arg("-o")
            .arg(&pruned)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                "none",
                "--method",
                "l1",
                "--data",
            ])
            .arg(&train)
            .args(norm));
        let p0 = top1(bin, &pruned, &test, &norm);
        println!(
            "| pruned (uniform L1) | none | {p0:.4} | {:.0} (prune) | |",
            t.elapsed().as_secs_f64()
        );
    }
    let ft = |input: &Path, name: &str, extra: &[&str]| -> (f64, f64, f64) {
        let out = tmp.join(format!("{name}.onnx"));
        let rep = tmp.join(format!("{name}.json"));
        let t = Instant::now();
        run(Command::new(bin)
            .arg("finetune")
            .arg(input)
            .arg("-o")
            .arg(&out)
            .arg("--data")
            .arg(&train)
            .args(norm)
            .args([
                "--steps",
                &steps.to_string(),
                "--val-size",
                "1000",
                "--report",
            ])
            .arg(&rep)
            .args(extra));
        let wall = t.elapsed().as_secs_f64();
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
        (
            top1(bin, &out, &test, &norm),
            wall,
            j["images_per_s"].as_f64().unwrap_or(0.0),
        )
    };
    let o = orig.to_str().unwrap();
    let searched = tmp.join("ddpg.onnx");
    if rows.iter().any(|r| r == "ddpg") {
        let t = Instant::now();
        run(Command::new(bin)
            .arg(&orig)
            .arg("-o")
            .arg(&searched)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                "ddpg",
                "--data",
            ])
            .arg(&train)
            .args(norm));
        let a = top1(bin, &searched, &test, &norm);
        println!(
            "| pruned (ddpg search) | none | {a:.4} | {:.0} (search) | |",
            t.elapsed().as_secs_f64()
        );
    }
    for (row, input, label, name, extra) in [
        (
            "labels",
            &pruned,
            "pruned (uniform L1)",
            "labels",
            vec!["--teacher", o],
        ),
        (
            "label-free",
            &pruned,
            "pruned (uniform L1)",
            "label-free KD",
            vec!["--teacher", o, "--label-free"],
        ),
        (
            "ddpg",
            &searched,
            "pruned (ddpg search)",
            "labels",
            vec!["--teacher", o],
        ),
        (
            "original",
            &orig,
            "original",
            "labels (+KD from itself)",
            vec!["--teacher", o],
        ),
    ] {
        if !rows.iter().any(|r| r == row) {
            continue;
        }
        let (a, wall, ips) = ft(input, &format!("ft-{row}"), &extra);
        println!("| {label} | {name} | {a:.4} | {wall:.0} | {ips:.0} |");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
