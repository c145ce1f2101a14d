//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Runs `tools/ort_compare.py A B [shapes]`: (max difference relative to the reference output's
/// spread, `max_scaled_diff`; checker verdict).
pub fn ort_compare(a: &Path, b: &Path, shapes: &[String]) -> (f64, String) {
    ort_compare_on(a, b, shapes, Inputs::Normal)
}

/// [`ort_compare`] on the given kind of inputs.
pub fn ort_compare_on(a: &Path, b: &Path, shapes: &[String], inputs: Inputs) -> (f64, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("tools/ort_compare.py"));
    if inputs == Inputs::Text {
        cmd.args(["--input", "text"]);
    }
    let out = cmd
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
        j["max_scaled_diff"].as_f64().unwrap(),
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

/// Runs both models in tract on the same seeded inputs; returns the worst difference relative
/// to the reference output's spread ([`onnx_prune::eval::Diff::max_scaled`]).
pub fn tract_diff(a: &Path, b: &Path, specs: &[String], batch: Option<usize>) -> f64 {
    tract_diff_on(a, b, specs, batch, Inputs::Normal)
}

/// What the models are fed in a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// Seeded standard normal noise.
    Normal,
    /// [`text_like`] pictures (for text detectors, whose map saturates near 0 on noise).
    Text,
}

/// A normalised picture of dark strokes on a light background (value 0.1 on 0.9, jittered by
/// 2% noise, ImageNet mean/std), like `tools/ort_compare.py --input text`: on it PP-OCR's
/// detector answers with a probability map spanning 0..1 (on noise: below 2e-5 everywhere).
pub fn text_like(shape: &[usize], seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut img = vec![0.9f64; n * c * h * w];
    let at = |b: usize, ch: usize, y: usize, x: usize| ((b * c + ch) * h + y) * w + x;
    for b in 0..n {
        for ch in 0..c {
            for r in (h / 8..h.saturating_sub(6)).step_by(16) {
                for col in (6..w.saturating_sub(8)).step_by(10) {
                    for y in r..r + 6 {
                        for x in col..col + 3 {
                            img[at(b, ch, y, x)] = 0.1;
                        }
                    }
                    for y in r..r + 2 {
                        for x in col..col + 7 {
                            img[at(b, ch, y, x)] = 0.1;
                        }
                    }
                }
            }
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    img.iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / (h * w)) % c;
            let noise: f64 = rng.random_range(-1.0..1.0) * 0.035;
            ((v + noise - mean.get(ch).unwrap_or(&0.45)) / std.get(ch).unwrap_or(&0.225)) as f32
        })
        .collect()
}

/// [`tract_diff`] on the given kind of inputs (two seeded input sets).
pub fn tract_diff_on(
    a: &Path,
    b: &Path,
    specs: &[String],
    batch: Option<usize>,
    inputs: Inputs,
) -> f64 {
    use onnx_prune::eval;
    let m = onnx_prune::onnx::load(a).unwrap();
    let mut shapes = eval::input_shapes(&m, &shape_map(specs)).unwrap();
    if let Some(n) = batch {
        for s in &mut shapes {
            s[0] = n;
        }
    }
    let sets: Vec<Vec<eval::HostTensor>> = (0..2)
        .map(|seed| match inputs {
            Inputs::Normal => eval::random_inputs(&shapes, seed),
            Inputs::Text => shapes
                .iter()
                .map(|s| eval::HostTensor {
                    shape: s.clone(),
                    data: text_like(s, seed),
                })
                .collect(),
        })
        .collect();
    eval::tract_rt::compare_on(a, b, &sets).unwrap().max_scaled
}

/// Starts a job, waits until stderr shows `marker` (plus `wait` seconds), sends SIGINT, and
/// returns the exit code and all of stderr.
pub fn interrupt(mut c: Command, marker: &str, wait: f64) -> (Option<i32>, String) {
    let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !seen.contains(marker) {
        match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if std::time::Instant::now() >= deadline {
                    // Not left running behind a failed test.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("no '{marker}': {seen}");
                }
            }
            Err(_) => panic!("exited before '{marker}': {seen}"),
        }
    }
    std::thread::sleep(std::time::Duration::from_secs_f64(wait));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // A job that ignores Ctrl-C fails here instead of hanging the suite.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 120 s after SIGINT: {seen}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    reader.join().unwrap();
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    (status.code(), seen)
}

/// The CIFAR normalisation of the shared models (ImageNet's mean and std).
pub const NORM: [&str; 4] = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];

/// MACs of `../shared/models/cifar10/resnet20.onnx`.
pub const RESNET20_MACS: u64 = 40_551_040;

/// The main command on resnet20 with the lossless CIFAR sample (tract, small subsets: 128
/// calibration and 128 validation images, batch 16, seed 3), writing `out` and the report
/// `rep`, with `extra` flags.
pub fn resnet20_job(shared: &Path, out: &Path, rep: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg(shared.join("models/cifar10/resnet20.onnx"))
        .arg("-o")
        .arg(out)
        .args(["--target-flops", "0.5", "--runtime", "tract", "--seed", "3"])
        .arg("--data")
        .arg(shared.join("data/cifar10/test_846_lossless.npz"))
        .args(NORM)
        .args([
            "--calib-size",
            "128",
            "--val-size",
            "128",
            "--batch-size",
            "16",
        ])
        .arg("--report")
        .arg(rep)
        .args(extra);
    c
}

/// A JSON report.
pub fn report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The phases a job's report lists, in order.
pub fn phases(r: &serde_json::Value) -> Vec<String> {
    r["time"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

/// `inspect --json` of a written model: it loads, and keeps at most half of `base_macs`.
pub fn check_written(out: &Path, base_macs: u64) {
    let o = bin().args(["inspect", "--json"]).arg(out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["macs"].as_u64().unwrap() * 2 <= base_macs, "{j}");
}
