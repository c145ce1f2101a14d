//! Benchmark of `--target-latency` (a program, not a timed test): for each model, the data-free
//! job `onnx-prune IN -o OUT --target-latency R --latency-runtime ort --threads 1` (its latency
//! profile measured on this machine first), and `--target-flops R` beside it; then the original
//! and both outputs measured independently by `tools/ort_latency.py` (onnxruntime CPU, 1 thread,
//! batch 1, interleaved, 3 rounds of 20 runs, median of the round medians). The table gives the
//! measured latency ratios, the MACs kept, the job's predicted ratio (the latency model's error
//! is predicted − measured), the profiling and total wall time, and the latency model's error
//! on the original (sum of the profiled layers vs the whole model).
//!
//! `cargo bench --bench latency [-- --models resnet18_bn,mobilenet_v2] [-- --target 0.5]
//! [-- --extra DIR] [-- --round-to 8,16,auto]` (default: the four zoo models of the issue;
//! `--extra DIR` adds every .onnx in DIR, e.g. YOLO-/EfficientNet-style exports). With
//! `--round-to LIST` instead: the latency job once per channel multiple (`auto`: the measured
//! staircase), all outputs of a model measured together, the MACs each keeps at its measured
//! ratio. Needs ../shared and Python onnxruntime.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = repo.join("../shared");
    if !shared.join("models/zoo").is_dir() {
        println!("SKIP: ../shared/models/zoo is missing");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    let target = arg(&args, "--target").unwrap_or_else(|| "0.5".into());
    let names = arg(&args, "--models")
        .unwrap_or_else(|| "resnet18_bn,mobilenet_v2,mobilenet_v3_small_bn,squeezenet1_0".into());
    let mut models: Vec<PathBuf> = names
        .split(',')
        .map(|n| shared.join(format!("models/zoo/{n}.onnx")))
        .collect();
    if let Some(d) = arg(&args, "--extra") {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        v.sort();
        models.extend(v);
    }
    let tmp = tempfile::tempdir().unwrap();
    if let Some(list) = arg(&args, "--round-to") {
        let multiples: Vec<&str> = list.split(',').collect();
        round_to_table(&models, &target, &multiples, tmp.path());
        return;
    }
    println!("## --target-latency {target} vs --target-flops {target}: ORT CPU 1 thread, batch 1 (tools/ort_latency.py: interleaved, 3 rounds × 20 runs, median of round medians)\n");
    println!("| model | original ms | latency: ratio | MACs kept | predicted | rounds | profile s | job s | flops: ratio | MACs kept | layers alone / whole |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = vec![];
    for m in &models {
        let name = m.file_stem().unwrap().to_string_lossy().to_string();
        let lat = tmp.path().join(format!("{name}.lat.onnx"));
        let flo = tmp.path().join(format!("{name}.flops.onnx"));
        let (rl, rf) = (lat.with_extension("json"), flo.with_extension("json"));
        let prof = tmp.path().join(format!("{name}.profile.json"));
        let t0 = Instant::now();
        let st = Command::new(bin)
            .arg("profile")
            .arg(m)
            .arg("-o")
            .arg(&prof)
            .args(["--runtime", "ort", "--threads", "1"])
            .output()
            .unwrap();
        let profile_s = t0.elapsed().as_secs_f64();
        if !st.status.success() {
            println!(
                "| {name} | profile failed: {} |",
                String::from_utf8_lossy(&st.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        let pj = json(&prof);
        let whole = pj["model_ms"].as_f64().unwrap();
        let alone: f64 = pj["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let ms = l["ms"].as_array().unwrap();
                let row = ms.last().unwrap().as_array().unwrap();
                row.last().unwrap().as_f64().unwrap()
            })
            .sum();
        // The job measures its own profile (what a user without a device profile runs).
        let t0 = Instant::now();
        let st = Command::new(bin)
            .arg(m)
            .arg("-o")
            .arg(&lat)
            .args([
                "--target-latency",
                &target,
                "--latency-runtime",
                "ort",
                "--threads",
                "1",
            ])
            .arg("--report")
            .arg(&rl)
            .output()
            .unwrap();
        let job_s = t0.elapsed().as_secs_f64();
        if !st.status.success() {
            println!(
                "| {name} | job failed: {} |",
                String::from_utf8_lossy(&st.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        let st = Command::new(bin)
            .arg(m)
            .arg("-o")
            .arg(&flo)
            .args(["--target-flops", &target, "--report"])
            .arg(&rf)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let out = Command::new("python3")
            .arg(repo.join("tools/ort_latency.py"))
            .arg(m)
            .arg(&lat)
            .arg(&flo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ms: Vec<f64> = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["ms"].as_f64().unwrap())
            .collect();
        let (jl, jf) = (json(&rl), json(&rf));
        let r_lat = ms[1] / ms[0];
        ratios.push(r_lat);
        println!(
            "| {name} | {:.2} | **{r_lat:.3}** | {:.1}% | {:.3} | {} | {profile_s:.0} | {job_s:.0} | {:.3} | {:.1}% | {alone:.2} / {whole:.2} ms ({:+.0}%) |",
            ms[0],
            100.0 * jl["macs_ratio"].as_f64().unwrap(),
            jl["latency"]["predicted_ratio"].as_f64().unwrap(),
            jl["latency"]["rounds"].as_array().map_or(0, |r| r.len()),
            ms[2] / ms[0],
            100.0 * jf["macs_ratio"].as_f64().unwrap(),
            100.0 * (alone - whole) / whole,
        );
    }
    if !ratios.is_empty() {
        let mut s = ratios.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "\nlatency ratio: median {:.3}, max {:.3} over {} models",
            s[s.len() / 2],
            s[s.len() - 1],
            s.len()
        );
    }
}

/// `--round-to LIST`: per model, the data-free latency job at each multiple; the outputs and
/// the original measured together (interleaved); MACs kept at the measured ratio.
fn round_to_table(models: &[PathBuf], target: &str, multiples: &[&str], tmp: &Path) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    println!("## --target-latency {target} by --round-to: MACs kept at the measured latency ratio (ORT CPU 1 thread, batch 1; tools/ort_latency.py, all outputs of a model interleaved)\n");
    println!("| model | {} |", multiples.join(" | "));
    println!("|---|{}", "---|".repeat(multiples.len()));
    for m in models {
        let name = m.file_stem().unwrap().to_string_lossy().to_string();
        let mut outs = vec![];
        let mut cells = vec![];
        for r in multiples {
            let out = tmp.join(format!("{name}.{r}.onnx"));
            let rep = out.with_extension("json");
            let st = Command::new(bin)
                .arg(m)
                .arg("-o")
                .arg(&out)
                .args(["--target-latency", target, "--round-to", r, "--report"])
                .arg(&rep)
                .output()
                .unwrap();
            if st.status.success() {
                let j = json(&rep);
                let used = j["round_to"]["multiple"]
                    .as_u64()
                    .map_or(r.to_string(), |u| format!("{r} = {u}"));
                cells.push((used, j["macs_ratio"].as_f64().unwrap()));
                outs.push(out);
            } else {
                let e = String::from_utf8_lossy(&st.stderr);
                cells.push((
                    format!("failed: {}", e.lines().last().unwrap_or("")),
                    f64::NAN,
                ));
            }
        }
        let measured = Command::new("python3")
            .arg(repo.join("tools/ort_latency.py"))
            .arg(m)
            .args(&outs)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&measured.stdout).unwrap_or(Value::Null);
        let ms: Vec<f64> = v["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["ms"].as_f64().unwrap_or(f64::NAN))
                    .collect()
            })
            .unwrap_or_default();
        let mut k = 1;
        let row: Vec<String> = cells
            .iter()
            .map(|(label, macs)| {
                if macs.is_nan() {
                    return label.clone();
                }
                let ratio = ms.get(k).zip(ms.first()).map_or(f64::NAN, |(a, b)| a / b);
                k += 1;
                format!("{:.1}% at {ratio:.3} ({label})", 100.0 * macs)
            })
            .collect();
        println!("| {name} | {} |", row.join(" | "));
    }
}
