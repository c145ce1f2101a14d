//! Benchmark of the whole job within a time limit (a program, not a timed test): what a user
//! gets from `onnx-prune IN -o OUT --target-flops 0.5 --data train_50k_jpeg.tar --time-limit L`
//! with the defaults, against uniform L1 under the same limit and the same fine-tuning
//! (`--agent none --method l1`), and against the unpruned original fine-tuned for the same time
//! with the job's recipe (`onnx-prune finetune ORIG --lr 3e-3 --time-limit L`:
//! the fair anchor, since training on the JPEG training set also adapts a model to the JPEG
//! test set). Rows run only when named: `--agent joint` (`joint`, or `joint/S` with
//! `--joint-share S`), the default job with another optimiser or rate (`adam/LR`, `sgd/LR`:
//! `--optimizer adam --lr LR`), feature distillation (`fkd/W`: `--feature-kd W`), and gradual
//! pruning in two steps (`gradual`, see [`gradual`]).
//! Each model is then scored with `onnx-prune eval` on all of `test_10k_jpeg.tar`; the table
//! gives top-1, MACs kept, the wall time of the command (it must stay within L) and the
//! fine-tuning steps it planned.
//!
//! `cargo bench --bench timelimit [-- --cases resnet20:10m,resnet20:20m,resnet20:60m,resnet56:60m]
//! [-- --rows default,uniform-l1,original,joint,joint/0.25,sgd/3e-3,fkd/1,gradual] [-- --seed S]
//! [-- --keep DIR]` (`--keep`: the models and reports stay in DIR), or
//! `-- --sweep [--limit 4m]`: the fine-tuning recipes the job's defaults were chosen from, at
//! equal wall time (see `sweep`). The default cases are the four; one case of 60
//! minutes takes 3 hours for its three rows, so name what you need. Needs ../shared (skips
//! otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The CIFAR models' input normalisation (ImageNet's mean and std).
const NORM: [&str; 4] = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--sweep`: fine-tuning recipes at equal wall time on one recovered model (resnet20 at 0.5,
/// the default search + least squares, `--finetune-epochs 0`), each `onnx-prune
/// finetune --time-limit T` (default 4m) with the flags of its row, top-1 on test_10k.
fn sweep(bin: &str, shared: &Path, tmp: &Path, limit: &str, eval: &dyn Fn(&Path) -> f64) {
    let train = shared.join("data/cifar10/train_50k_jpeg.tar");
    let orig = shared.join("models/cifar10/resnet20.onnx");
    let rec = tmp.join("recovered.onnx");
    let st = Command::new(bin)
        .arg(&orig)
        .arg("-o")
        .arg(&rec)
        .args(["--target-flops", "0.5", "--finetune-epochs", "0", "--data"])
        .arg(&train)
        .args(NORM)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    println!("## Fine-tuning recipes at equal time ({limit} each), resnet20 at 0.5 after search + least squares, top-1 on test_10k_jpeg.tar\n");
    println!("| recipe | top-1 | steps | images/s |");
    println!("|---|---|---|---|");
    println!(
        "| (recovered, no fine-tuning) | {:.4} | 0 | - |",
        eval(&rec)
    );
    let t = orig.to_string_lossy().to_string();
    // The recipes of the first sweep (im2col trainer, ~500 steps in 4 minutes; see
    // docs/benchmarks.md) and those the faster trainer (~3,500 steps) reopens: a higher rate,
    // and distillation, whose teacher costs the same share of each step but now has more of them.
    let rows: [(&str, Vec<&str>); 6] = [
        ("SGD 1e-3, labels + KD (w 0.5, T 4)", vec!["--teacher", &t]),
        (
            "SGD 3e-3, labels + KD (w 0.5, T 4)",
            vec!["--teacher", &t, "--lr", "3e-3"],
        ),
        (
            "SGD 3e-3, KD only",
            vec!["--teacher", &t, "--lr", "3e-3", "--kd-weight", "1"],
        ),
        (
            "Adam 3e-4, labels only",
            vec!["--optimizer", "adam", "--lr", "3e-4"],
        ),
        ("SGD 6e-3, labels only", vec!["--lr", "6e-3"]),
        (
            "SGD 3e-3, labels only (the job's default)",
            vec!["--lr", "3e-3"],
        ),
    ];
    for (i, (name, flags)) in rows.iter().enumerate() {
        let out = tmp.join(format!("sweep{i}.onnx"));
        let rep = tmp.join(format!("sweep{i}.json"));
        let st = Command::new(bin)
            .arg("finetune")
            .arg(&rec)
            .arg("-o")
            .arg(&out)
            .arg("--data")
            .arg(&train)
            .args(NORM)
            .args(["--time-limit", limit, "--report"])
            .arg(&rep)
            .args(flags)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        println!(
            "| {name} | {:.4} | {} | {:.0} |",
            eval(&out),
            r["steps"],
            r["images_per_s"].as_f64().unwrap_or(0.0)
        );
    }
}

/// Row `gradual`: the target reached in two steps with fine-tuning between them, as AMC and
/// PuRL retrain between pruning steps, made of two default main commands: the original to
/// √0.5 of its MACs within half the limit, then that model to 0.5 of the original's MACs
/// within the other half (each command searches, recovers and fine-tunes, as the one-shot
/// default row does within the whole limit).
fn gradual(
    bin: &str,
    (model, train): (&Path, &Path),
    tmp: &Path,
    (name, limit, seed): (&str, &str, &str),
    eval: &dyn Fn(&Path) -> f64,
) {
    let half = onnx_prune::budget::parse_duration(limit)
        .unwrap()
        .as_secs_f64()
        / 2.0;
    let half = format!("{half:.0}s");
    let (mut input, mut target) = (model.to_path_buf(), 0.5f64.sqrt());
    let (mut steps, mut wall, mut base, mut after) = (0, 0.0, None, 0.0);
    for stage in 1..=2 {
        let out = tmp.join(format!("{name}-{limit}-gradual{stage}.onnx"));
        let rep = tmp.join(format!("{name}-{limit}-gradual{stage}.json"));
        let t = Instant::now();
        let res = Command::new(bin)
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(["--target-flops", &format!("{target:.6}"), "--seed", seed])
            .arg("--data")
            .arg(train)
            .args(NORM)
            .args(["--time-limit", &half, "--report"])
            .arg(&rep)
            .output()
            .unwrap();
        wall += t.elapsed().as_secs_f64();
        if !res.status.success() {
            let err = String::from_utf8_lossy(&res.stderr);
            let last = err.lines().last().unwrap_or("");
            println!("| {name} | {limit} | gradual | failed in step {stage}: {last} |");
            return;
        }
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        steps += r["finetune"]["steps"].as_u64().unwrap_or(0);
        let before = *base.get_or_insert(r["macs_before"].as_f64().unwrap());
        after = r["macs_after"].as_f64().unwrap();
        // The second step's target, relative to its own input: 0.5 of the original.
        target = (0.5 * before / after).min(1.0);
        input = out;
    }
    let macs = 100.0 * after / base.unwrap();
    println!(
        "| {name} | {limit} | gradual (2 x {half}) | {:.4} | {macs:.1}% | {wall:.0} | {steps} ({:.2}) | - |",
        eval(&input),
        (steps * 64) as f64 / 49_000.0,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases = arg(&args, "--cases")
        .unwrap_or_else(|| "resnet20:10m,resnet20:20m,resnet20:60m,resnet56:60m".into());
    let rows = arg(&args, "--rows").unwrap_or_else(|| "default,uniform-l1,original".into());
    let seed = arg(&args, "--seed").unwrap_or_else(|| "0".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    let train = shared.join("data/cifar10/train_50k_jpeg.tar");
    let test = shared.join("data/cifar10/test_10k_jpeg.tar");
    // `--keep DIR`: the models and reports are written there and left (to measure them
    // further); else to a temporary folder removed at the end.
    let keep = arg(&args, "--keep").map(PathBuf::from);
    let tmp = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("onnx-prune-bench-tl-{}", std::process::id()))
    });
    std::fs::create_dir_all(&tmp).unwrap();
    let cleanup = || {
        if keep.is_none() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    };
    let eval = |m: &Path| -> f64 {
        let out = Command::new(bin)
            .arg("eval")
            .arg(m)
            .arg("--data")
            .arg(&test)
            .args(NORM)
            .args(["--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["top1"].as_f64().unwrap()
    };
    if args.iter().any(|a| a == "--sweep") {
        let limit = arg(&args, "--limit").unwrap_or_else(|| "4m".into());
        sweep(bin, &shared, &tmp, &limit, &eval);
        cleanup();
        return;
    }
    println!("## The job within --time-limit, --target-flops 0.5, --seed {seed}, top-1 on test_10k_jpeg.tar\n");
    println!(
        "| model | limit | row | top-1 | MACs kept | wall s | fine-tune steps (epochs) | shipped |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for case in cases.split(',') {
        let (name, limit) = case.split_once(':').expect("--cases model:limit,...");
        let model: PathBuf = shared.join(format!("models/cifar10/{name}.onnx"));
        println!(
            "| {name} | (original) | - | {:.4} | 100% | - | - | - |",
            eval(&model)
        );
        for row in rows.split(',') {
            if row == "gradual" {
                gradual(bin, (&model, &train), &tmp, (name, limit, &seed), &eval);
                continue;
            }
            let file = row.replace('/', "_");
            let out = tmp.join(format!("{name}-{limit}-{file}.onnx"));
            let rep = tmp.join(format!("{name}-{limit}-{file}.json"));
            let mut c = Command::new(bin);
            match row {
                "original" => {
                    // The job's recipe (labels only, SGD at 3e-3) on the unpruned model.
                    c.arg("finetune").arg(&model).arg("-o").arg(&out);
                    c.args(["--lr", "3e-3", "--seed", &seed]);
                }
                _ => {
                    c.arg(&model)
                        .arg("-o")
                        .arg(&out)
                        .args(["--target-flops", "0.5"]);
                    c.args(["--seed", &seed]);
                    match row {
                        "uniform-l1" => {
                            c.args(["--agent", "none", "--method", "l1"]);
                        }
                        // Joint training and pruning (issue #21), its defaults otherwise;
                        // `joint/S`: with `--joint-share S`.
                        r if r == "joint" || r.starts_with("joint/") => {
                            c.args(["--agent", "joint"]);
                            if let Some(share) = r.strip_prefix("joint/") {
                                c.args(["--joint-share", share]);
                            }
                        }
                        // `adam/LR`, `sgd/LR`: the default job with that optimiser and
                        // peak rate.
                        r if r.starts_with("adam/") || r.starts_with("sgd/") => {
                            let (opt, lr) = r.split_once('/').expect("checked");
                            c.args(["--optimizer", opt, "--lr", lr]);
                        }
                        // `fkd/W`: the default job with feature distillation of weight W.
                        r if r.starts_with("fkd/") => {
                            c.args(["--feature-kd", &r["fkd/".len()..]]);
                        }
                        _ => {}
                    }
                }
            }
            c.arg("--data").arg(&train).args(NORM);
            c.args(["--time-limit", limit]).arg("--report").arg(&rep);
            let t = Instant::now();
            let res = c.output().unwrap();
            let wall = t.elapsed().as_secs_f64();
            if !res.status.success() {
                let err = String::from_utf8_lossy(&res.stderr);
                println!(
                    "| {name} | {limit} | {row} | failed: {} |",
                    err.lines().last().unwrap_or("")
                );
                continue;
            }
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
            let ft = if row == "original" {
                &r
            } else {
                &r["finetune"]
            };
            let steps = ft["steps"].as_u64().unwrap_or(0);
            let batch = ft["batch_size"].as_u64().unwrap_or(64);
            // `--agent joint`: its own training steps before the cut's fine-tuning.
            let joint = r["joint"]["steps"]
                .as_u64()
                .map_or(String::new(), |j| format!("{j} joint + "));
            let macs = r["macs_ratio"]
                .as_f64()
                .map_or("100%".to_string(), |m| format!("{:.1}%", 100.0 * m));
            println!(
                "| {name} | {limit} | {row} | {:.4} | {macs} | {wall:.0} | {joint}{steps} ({:.2}) | {} |",
                eval(&out),
                (steps * batch) as f64 / 49_000.0,
                ft["shipped"].as_str().unwrap_or("-")
            );
        }
    }
    cleanup();
}
