//! Benchmark of the search (a program, not a timed test): every agent against the L1
//! baselines and the unsearched least-squares criterion (uniform-LS, what `--agent none` does
//! with data), each row with the same recovery (sequential least squares from 1,000 training
//! images), exactly as a user runs it — the `onnx-prune` binary, then `onnx-prune eval` on the
//! held-out test set. The agents use the default channel criterion (`--method auto`: ls); the
//! "shipped" column says which re-ranked plan was written (the agent's own or the unsearched
//! one) and the validation scores of the agent's best plan and of the unsearched plan.
//!
//! Cases: CIFAR-10 resnet56 and resnet20 (`--data train_50k_jpeg.tar`, top-1 on all of
//! `test_10k_jpeg.tar`), and seresnet20 from the zoo (random weights) label-free: the search
//! maximises 1/(1 + relative MSE) to the original's outputs; the table gives the relative MSE
//! on the test set (top-1 agreement is 1.0 for every plan: the random-weight original predicts
//! one class for every image).
//!
//! `cargo bench --bench search [-- --quick] [-- --only resnet20|resnet56|zoo] [-- --seed S]
//! [-- --rows ddpg,dqn]`
//! (`--quick`: resnet20 only, a third of the episodes; `--seed`: the commands' seed, 1 by
//! default — another calibration/validation split and other agent draws; `--rows`: only the
//! named rows, e.g. `uniform-LS,reinforce`; the extra rows `dqn-own` and `reinforce-own` —
//! the agent's own best plan as the search ranked it, `--rerank 0`, with no unsearched plan to
//! fall back on — run only when named). Needs ../shared (skips otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Case {
    name: &'static str,
    model: PathBuf,
    label_free: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "1".into());
    // `--rows a,b`: only these rows (e.g. `--rows reinforce`), all by default.
    let pick: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .map(|r| r.split(',').map(str::to_string).collect());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    if !shared.is_dir() {
        println!("SKIP: ../shared is absent");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    let train = shared.join("data/cifar10/train_50k_jpeg.tar");
    let test = shared.join("data/cifar10/test_10k_jpeg.tar");
    let norm = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
    let cases = [
        Case {
            name: "resnet20",
            model: shared.join("models/cifar10/resnet20.onnx"),
            label_free: false,
        },
        Case {
            name: "resnet56",
            model: shared.join("models/cifar10/resnet56.onnx"),
            label_free: false,
        },
        Case {
            name: "zoo",
            model: shared.join("models/zoo/seresnet20_cifar10.onnx"),
            label_free: true,
        },
    ];
    let tmp = std::env::temp_dir().join(format!("onnx-prune-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let rows: [(&str, &[&str]); 8] = [
        (
            "uniform-L1",
            &[
                "--agent",
                "none",
                "--allocation",
                "uniform",
                "--method",
                "l1",
            ],
        ),
        (
            "global-L1",
            &[
                "--agent",
                "none",
                "--allocation",
                "global",
                "--method",
                "l1",
            ],
        ),
        ("uniform-LS", &["--agent", "none", "--method", "ls"]),
        ("ddpg", &["--agent", "ddpg"]),
        ("dqn", &["--agent", "dqn"]),
        ("reinforce", &["--agent", "reinforce"]),
        ("dqn-own", &["--agent", "dqn", "--rerank", "0"]),
        ("reinforce-own", &["--agent", "reinforce", "--rerank", "0"]),
    ];
    for case in &cases {
        if quick && case.name != "resnet20" {
            continue;
        }
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let metric = if case.label_free {
            "relative MSE to the original (lower is better)"
        } else {
            "top-1"
        };
        println!(
            "\n## {} ({}) at --target-flops 0.5, --seed {seed}, {metric} on {}\n",
            case.name,
            case.model.file_name().unwrap().to_string_lossy(),
            test.file_name().unwrap().to_string_lossy()
        );
        println!("| method | {metric} | MACs kept | episodes | best at episode | evaluations | search s | wall s | shipped (validation: agent's best / unsearched) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let eval = |m: &Path| -> f64 {
            let mut c = Command::new(bin);
            c.arg("eval").arg(m).arg("--data").arg(&test).args(norm);
            c.args(["--json", "--runtime", "auto"]);
            if case.label_free {
                c.arg("--label-free").arg("--reference").arg(&case.model);
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            j[if case.label_free { "rel_mse" } else { "top1" }]
                .as_f64()
                .unwrap()
        };
        if !case.label_free {
            println!(
                "| (original) | {:.4} | 100% | - | - | - | - | - | - |",
                eval(&case.model)
            );
        }
        for (name, flags) in rows {
            let named = pick.as_ref().is_some_and(|p| p.iter().any(|x| x == name));
            if (pick.is_some() || name.ends_with("-own")) && !named {
                continue;
            }
            let out = tmp.join(format!("{}-{name}.onnx", case.name));
            let report = tmp.join(format!("{}-{name}.json", case.name));
            let mut c = Command::new(bin);
            c.arg(&case.model).arg("-o").arg(&out);
            c.args(["--target-flops", "0.5", "--finetune-epochs", "0", "--data"])
                .arg(&train)
                .args(norm);
            c.args([
                "--calib-size",
                "1000",
                "--val-size",
                "1000",
                "--seed",
                &seed,
            ]);
            c.args(flags).arg("--report").arg(&report);
            if case.label_free {
                c.arg("--label-free");
            }
            if quick && !name.starts_with("uniform") && name != "global-L1" {
                let e = match name {
                    "dqn" | "dqn-own" => "20",
                    _ => "34",
                };
                c.args(["--episodes", e]);
            }
            let t = Instant::now();
            let res = c.output().unwrap();
            let wall = t.elapsed().as_secs_f64();
            if !res.status.success() {
                println!(
                    "| {name} | failed: {} |",
                    String::from_utf8_lossy(&res.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                continue;
            }
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
            let s = &r["search"];
            let v = |k: &str| {
                s.get(k)
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into())
            };
            // Which re-ranked plan was written: the best validation score wins.
            let shipped = s["rerank"]
                .as_array()
                .filter(|r| !r.is_empty())
                .map(|rows| {
                    let val = |x: &serde_json::Value| x["val_score"].as_f64().unwrap_or(0.0);
                    let best = rows
                        .iter()
                        .max_by(|a, b| val(a).total_cmp(&val(b)))
                        .unwrap();
                    // The unsearched plan is flagged (also when the agent found it too).
                    let unsearched = |x: &serde_json::Value| x["unsearched"] == true;
                    let agent = rows
                        .iter()
                        .filter(|x| !unsearched(x))
                        .map(val)
                        .fold(f64::NAN, f64::max);
                    let base = rows
                        .iter()
                        .find(|x| unsearched(x))
                        .map(val)
                        .unwrap_or(f64::NAN);
                    let src = best["source"].as_str().unwrap_or("?");
                    let who = if unsearched(best) {
                        "unsearched"
                    } else {
                        "agent"
                    };
                    // Label-free scores, 1/(1 + relative MSE), differ in the fourth decimal.
                    let d = if case.label_free { 6 } else { 4 };
                    format!("{who}: {src} ({agent:.d$} / {base:.d$})")
                })
                .unwrap_or_else(|| "-".into());
            let score = eval(&out);
            let score = if case.label_free {
                format!("{score:.3e}")
            } else {
                format!("{score:.4}")
            };
            println!(
                "| {name} | {score} | {:.1}% | {} | {} | {} | {} | {wall:.0} | {shipped} |",
                100.0 * r["macs_ratio"].as_f64().unwrap(),
                v("episodes"),
                v("best_episode"),
                v("evaluations"),
                s.get("seconds")
                    .and_then(|x| x.as_f64())
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| "-".into()),
            );
            for n in s["notes"].as_array().into_iter().flatten() {
                println!("|   ↳ {} | | | | | | | | |", n.as_str().unwrap_or(""));
            }
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}
