//! Training speed: burn (this project's trainer) against PyTorch on the same machine, in one
//! run (issue #20; a program that prints figures, not a timed test).
//!
//! Per model, one child process each (so each peak RSS is its own):
//! - **burn**: `learn::train::Trainer` steps (forward + cross-entropy + backward + SGD with
//!   momentum and weight decay, clipping 5) on the backend the build picks (`flex` on a CPU;
//!   with `--features wgpu`, `-- --device wgpu` uses burn-wgpu); images/s and ms/step are the
//!   median of `--steps` (5) timed steps after 2 warm-up steps; then the teacher's forward pass
//!   alone (no autodiff, what distillation adds to every step). On `flex` the child runs four
//!   times: with this project's kernels (`net::fastconv` and `net::fastew`, the default: direct
//!   convolutions where they apply), with the direct kernels kept to AVX2
//!   (`ONNX_PRUNE_CONV_KERNEL=avx2`, what a CPU without AVX-512 runs), with im2col alone
//!   (`=im2col`) and with burn's own ops (`ONNX_PRUNE_BURN_CONV=1`), so one table shows what
//!   each gives.
//! - **PyTorch** (`tools/bench_train_torch.py`, CPU, the same thread count): the same ONNX graph
//!   converted by onnx2torch, and for the CIFAR ResNets also the textbook module with BatchNorm;
//!   the same step and medians. PyTorch is installed by this program from PyPI into
//!   `~/.cache/onnx-prune/torch-venv` (torch 2.15.0, about 5.5 GB, once; `ONNX_PRUNE_TORCH_VENV`
//!   overrides the place); `-- --no-torch` skips it. The tests never use it.
//!
//! Models: `../shared` resnet20 and resnet56 (batch 64, 32×32), resnet56 pruned data-free to
//! `--target-flops 0.5` by the CLI (the architecture class the main job writes; weights do not
//! matter for speed), and mobilenet_v2 from the zoo at 224×224, batch 32. Then the data pipeline
//! alone: decoding `train_50k_jpeg.tar` and the per-step batch assembly with augmentation.
//!
//! `cargo bench --bench trainspeed [-- --models resnet20,resnet56,resnet56-p50,mobilenet_v2]
//! [-- --steps N] [-- --threads T] [-- --no-torch] [-- --device wgpu]`

mod common;

use common::{median, peak_rss_mib};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Case {
    name: &'static str,
    path: PathBuf,
    batch: usize,
    hw: usize,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    if let Ok(spec) = std::env::var("ONNX_PRUNE_BENCH_CHILD") {
        child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let threads: usize = arg(&args, "--threads")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let device = arg(&args, "--device").unwrap_or_else(|| "cpu".into());
    let wanted: Vec<String> = arg(&args, "--models")
        .map(|v| v.split(',').map(String::from).collect())
        .unwrap_or_else(|| {
            ["resnet20", "resnet56", "resnet56-p50", "mobilenet_v2"]
                .map(String::from)
                .to_vec()
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `ONNX_PRUNE_SHARED` points elsewhere (a machine the binary was carried to).
    let shared = std::env::var_os("ONNX_PRUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("onnx-prune-trainspeed-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cifar = |m: &str| shared.join(format!("models/cifar10/{m}.onnx"));
    // Staged beside the models where the CLI is not at hand (tools/gpu_trainspeed.sh).
    let staged = shared.join("models/cifar10/resnet56_p50.onnx");
    let pruned = if staged.exists() {
        staged
    } else {
        tmp.join("resnet56_p50.onnx")
    };
    if wanted.iter().any(|w| w == "resnet56-p50") && !pruned.exists() {
        let st = Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
            .arg(cifar("resnet56"))
            .arg("-o")
            .arg(&pruned)
            .args(["--target-flops", "0.5"])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let all = [
        Case {
            name: "resnet20",
            path: cifar("resnet20"),
            batch: 64,
            hw: 32,
        },
        Case {
            name: "resnet56",
            path: cifar("resnet56"),
            batch: 64,
            hw: 32,
        },
        Case {
            name: "resnet56-p50",
            path: pruned.clone(),
            batch: 64,
            hw: 32,
        },
        Case {
            name: "mobilenet_v2",
            path: shared.join("models/zoo/mobilenet_v2.onnx"),
            batch: 32,
            hw: 224,
        },
    ];
    let cases: Vec<&Case> = all
        .iter()
        .filter(|c| wanted.iter().any(|w| w == c.name))
        .collect();
    let torch = if args.iter().any(|a| a == "--no-torch") {
        None
    } else {
        torch_python()
    };

    println!(
        "## Training step (fwd + CE + bwd + SGD), {threads} threads, median of {steps} steps\n"
    );
    println!("| model | batch | trainer | images/s | ms/step | of which fwd + bwd, ms | peak RSS MiB | forward only, images/s | vs PyTorch (same graph) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in cases {
        let spec = format!("{}|{}|{}|{steps}|{device}", c.path.display(), c.batch, c.hw);
        // The same trainer four times: with this project's kernels (the default: direct
        // convolutions where they apply, else im2col), with the direct kernels kept to AVX2
        // (`ONNX_PRUNE_CONV_KERNEL=avx2`: what a CPU without AVX-512 runs), with im2col alone
        // (`=im2col`) and with burn's own ops (`ONNX_PRUNE_BURN_CONV=1`).
        let variants = [
            ("", "0", ""),
            (", direct conv on AVX2 only", "0", "avx2"),
            (", im2col conv", "0", "im2col"),
            (", burn's conv", "1", ""),
        ];
        let burn_runs: Vec<(&str, std::process::Output)> = variants
            .into_iter()
            .filter(|(_, v, _)| *v == "0" || device != "wgpu")
            .map(|(label, v, kernel)| {
                let out = Command::new(std::env::current_exe().unwrap())
                    .env("ONNX_PRUNE_BENCH_CHILD", &spec)
                    .env("ONNX_PRUNE_BURN_CONV", v)
                    .env("ONNX_PRUNE_CONV_KERNEL", kernel)
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .output()
                    .unwrap();
                (label, out)
            })
            .collect();
        let mut torch_rows: Vec<Vec<String>> = vec![];
        if let Some(py) = &torch {
            let spec = format!("{}:{}x{}", c.path.display(), c.hw, c.hw);
            let o = Command::new(py)
                .arg(root.join("tools/bench_train_torch.py"))
                .args(["--threads", &threads.to_string()])
                .args(["--batch", &c.batch.to_string()])
                .args(["--steps", &steps.to_string()])
                .arg(&spec)
                .output()
                .unwrap();
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if l.starts_with("TORCH") {
                    torch_rows.push(l.split_whitespace().map(String::from).collect());
                }
            }
            if torch_rows.is_empty() {
                println!(
                    "| {} | {} | PyTorch | failed: {} | | | | | |",
                    c.name,
                    c.batch,
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
            }
        }
        let same_graph: Option<f64> = torch_rows
            .iter()
            .find(|r| r.get(2).map(String::as_str) == Some("onnx2torch") && measured(r))
            .and_then(|r| r[3].parse().ok());
        for (label, out) in &burn_runs {
            let burn: Option<Vec<String>> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("RESULT"))
                .map(|l| l.split_whitespace().map(String::from).collect());
            match &burn {
                Some(v) => {
                    let ratio = match (same_graph, v[2].parse::<f64>().ok()) {
                        (Some(t), Some(b)) => format!("{:.2}×", b / t),
                        _ => String::new(),
                    };
                    println!(
                        "| {} | {} | burn {}{label} | {} | {} | {} | {} | {} | {ratio} |",
                        c.name, c.batch, v[1], v[2], v[3], v[6], v[4], v[5]
                    );
                }
                None => println!(
                    "| {} | {} | burn{label} | failed: {} | | | | | |",
                    c.name,
                    c.batch,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            }
        }
        for r in &torch_rows {
            if measured(r) {
                let what = match r[2].as_str() {
                    "onnx2torch" => "PyTorch, same graph (onnx2torch)".to_string(),
                    v if v.starts_with("bn-") => "PyTorch, textbook module with BatchNorm".into(),
                    v if v.starts_with("nobn-") => "PyTorch, textbook module, BN folded".into(),
                    "torchvision" => "PyTorch, torchvision's module (with BatchNorm)".into(),
                    v => format!("PyTorch {v}"),
                };
                println!(
                    "| {} | {} | {what} | {} | {} | | {} | {} | |",
                    c.name, c.batch, r[3], r[4], r[5], r[7]
                );
            } else {
                println!(
                    "| {} | {} | PyTorch {} | {} | | | | | |",
                    c.name,
                    c.batch,
                    r[2],
                    r[3..].join(" ")
                );
            }
        }
    }
    if shared.join("data/cifar10/train_50k_jpeg.tar").exists() {
        data_pipeline(&shared);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A PyTorch line with figures (`TORCH name variant ips ms rss fwd fips`), not a failure.
fn measured(r: &[String]) -> bool {
    r.len() == 8 && r[3].parse::<f64>().is_ok()
}

/// A Python with torch and onnx2torch: the venv under ~/.cache (installed from PyPI if absent).
fn torch_python() -> Option<PathBuf> {
    let venv = std::env::var_os("ONNX_PRUNE_TORCH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/onnx-prune/torch-venv"))
        })?;
    let py = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import torch, onnx2torch, onnx"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if py.exists() && ok(&py) {
        return Some(py);
    }
    println!(
        "installing PyTorch 2.15.0 (CPU use of the PyPI wheel) and onnx2torch into {} (about 5.5 GB, once)",
        venv.display()
    );
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        println!("PyTorch rows skipped: could not create the venv");
        return None;
    }
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args([
            "torch==2.15.0",
            "torchvision",
            "onnx2torch==1.5.15",
            "onnx==1.23.2",
            "setuptools>=77",
        ])
        .status();
    if st.is_ok_and(|s| s.success()) && ok(&py) {
        Some(py)
    } else {
        println!("PyTorch rows skipped: installing torch from PyPI failed");
        None
    }
}

/// One model in this process: prints `RESULT backend img/s ms peakMiB fwd_img/s fwd_bwd_ms`
/// (the last: forward + loss + backward without the optimiser's update,
/// `Trainer::time_forward_backward`; the step's remainder is the update and its read-back).
fn child(spec: &str) {
    use onnx_prune::net::{Dt, Net};
    let p: Vec<&str> = spec.split('|').collect();
    let (path, batch, hw, steps) = (
        p[0],
        p[1].parse::<usize>().unwrap(),
        p[2].parse::<usize>().unwrap(),
        p[3].parse::<usize>().unwrap(),
    );
    onnx_prune::net::select(
        onnx_prune::net::Backend::parse(p[4]).unwrap_or(onnx_prune::net::Backend::Cpu),
    );
    let (device, line) = onnx_prune::net::device();
    let name = line.trim_start_matches("burn backend: ").replace(' ', "_");
    let model = onnx_prune::onnx::load(Path::new(path)).unwrap();
    let mut net = Net::new(&model, &device).unwrap();
    let n = batch * 2;
    let x = onnx_prune::eval::random_inputs(&[vec![n, 3, hw, hw]], 1)[0]
        .data
        .clone();
    // Labels within the model's class count (its last output dim).
    let probe = Dt::from_vec(x[..3 * hw * hw].to_vec(), &[1, 3, hw, hw], &device);
    let classes = net.infer(probe).unwrap()[0]
        .dims()
        .last()
        .copied()
        .unwrap_or(10);
    let y: Vec<i64> = (0..n as i64).map(|i| i % classes as i64).collect();
    let data = onnx_prune::data::Dataset {
        n,
        c: 3,
        h: hw,
        w: hw,
        x: x.clone(),
        y: Some(y),
        classes: None,
    };
    let times = common::step_times(&mut net, &data, batch, steps + 2);
    let med = median(times[2..].to_vec());
    let fwd_bwd = onnx_prune::learn::train::Trainer::new(
        &net,
        onnx_prune::learn::train::TrainOptions {
            batch,
            steps: steps + 2,
            ..Default::default()
        },
    )
    .time_forward_backward(&net, None, &data, steps)
    .unwrap()
    .as_secs_f64();
    let hwm = peak_rss_mib();
    // The teacher's forward pass: the same network without autodiff.
    let (idev, _) = onnx_prune::net::infer_device();
    let teacher = Net::new(&model, &idev).unwrap();
    let mut ft = vec![];
    for _ in 0..steps + 2 {
        let xb = Dt::from_vec(
            x[..batch * 3 * hw * hw].to_vec(),
            &[batch, 3, hw, hw],
            &idev,
        );
        let t0 = Instant::now();
        let out = teacher.infer(xb).unwrap();
        let _ = out[0].to_vec();
        ft.push(t0.elapsed().as_secs_f64());
    }
    let fmed = median(ft[2..].to_vec());
    println!(
        "RESULT {name} {:.0} {:.0} {hwm} {:.0} {:.0}",
        batch as f64 / med,
        med * 1000.0,
        batch as f64 / fmed,
        fwd_bwd * 1000.0
    );
}

/// Decoding the training set, and the per-step batch assembly (crop + flip) alone.
fn data_pipeline(shared: &Path) {
    use onnx_prune::data;
    use onnx_prune::learn::train::{TrainOptions, Trainer};
    let opts = data::DataOptions {
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        ..Default::default()
    };
    let t0 = Instant::now();
    let train = data::load(
        &shared.join("data/cifar10/train_50k_jpeg.tar"),
        (3, 32, 32),
        &opts,
    )
    .unwrap();
    let decode = t0.elapsed().as_secs_f64();
    let (device, _) = onnx_prune::net::infer_device();
    let net_model = onnx_prune::onnx::load(&shared.join("models/cifar10/resnet20.onnx")).unwrap();
    let net = onnx_prune::net::Net::new(&net_model, &device).unwrap();
    let tr = Trainer::new(
        &net,
        TrainOptions {
            batch: 64,
            steps: 100,
            ..Default::default()
        },
    );
    let mut times = vec![];
    for t in 0..22 {
        let t0 = Instant::now();
        let (x, _) = tr.batch(t, &train);
        std::hint::black_box(&x);
        times.push(t0.elapsed().as_secs_f64());
    }
    let aug = median(times[2..].to_vec());
    println!("\n## Data pipeline alone\n");
    println!("| stage | images/s |");
    println!("|---|---|");
    println!(
        "| decode `train_50k_jpeg.tar` (once per job, parallel) | {:.0} ({:.1} s for {}) |",
        train.n as f64 / decode,
        decode,
        train.n
    );
    println!(
        "| batch assembly with crop + flip (every step, one thread) | {:.0} |",
        64.0 / aug
    );
}
