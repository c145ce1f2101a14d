//! The search environment: AMC-style action clipping keeps every episode within the MAC
//! budget, whatever the agent does.

mod common;

use onnx_prune::search::datafree::Pruner;
use onnx_prune::search::env::{Env, STATE_DIM};
use onnx_prune::search::rl;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

fn random_episodes_meet_the_budget(path: &std::path::Path, ratio: f64, round_to: usize) {
    let model = onnx_prune::onnx::load(path).unwrap();
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let mut env = Env::new(&p, ratio, round_to, 0.05);
    assert!(env.steps() > 0, "{}: no prunable group", path.display());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut lowest = 1.0f64;
    for episode in 0..30 {
        env.reset();
        while !env.done() {
            let s = env.state(1.0);
            assert_eq!(s.len(), STATE_DIM);
            assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
            // Greedy keep-everything agents, random ones and in-between.
            let a = match episode % 3 {
                0 => 1.0,
                1 => rng.random_range(0.0..1.0),
                _ => rng.random_range(0.5..1.0),
            };
            let used = env.step(a);
            assert!((0.05..=1.0).contains(&used), "{used}");
        }
        let macs = env.macs();
        assert!(
            macs <= env.target,
            "{}: episode {episode} ends at {macs} > target {}",
            path.display(),
            env.target
        );
        assert_eq!(macs, p.macs(&env.keep()));
        lowest = lowest.min(macs as f64 / p.base_macs as f64);
    }
    println!(
        "{}: 30 episodes within budget (lowest {lowest:.3})",
        path.display()
    );
}

#[test]
fn episodes_stay_within_the_budget_on_the_fixture() {
    random_episodes_meet_the_budget(&common::repo().join("models/tiny_resnet.onnx"), 0.5, 1);
    random_episodes_meet_the_budget(&common::repo().join("models/tiny_resnet.onnx"), 0.3, 8);
}

#[test]
fn episodes_stay_within_the_budget_on_real_models() {
    let Some(s) = common::shared() else { return };
    for m in ["cifar10/resnet56.onnx", "zoo/mobilenet_v2.onnx"] {
        random_episodes_meet_the_budget(&s.join("models").join(m), 0.5, 8);
    }
}

/// Playing the fair share at every step reproduces the unsearched uniform plan exactly (the
/// agents explore around it) and meets the budget; PuRL's thresholds keep fewer channels as α
/// grows (everything at α = 0).
#[test]
fn fair_share_reproduces_the_uniform_plan_and_thresholds_are_monotone() {
    use onnx_prune::search::datafree::Allocation;
    let model = onnx_prune::onnx::load(&common::repo().join("models/tiny_resnet.onnx")).unwrap();
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let mut models = vec![
        (p, 1usize),
        (Pruner::new(&model, &HashMap::new()).unwrap(), 8),
    ];
    if let Some(s) = common::shared() {
        let m = onnx_prune::onnx::load(&s.join("models/cifar10/resnet56.onnx")).unwrap();
        models.push((Pruner::new(&m, &HashMap::new()).unwrap(), 8));
    }
    for (p, round_to) in &models {
        for ratio in [0.3, 0.5, 0.8] {
            let mut env = Env::new(p, ratio, *round_to, 0.05);
            // Another channel criterion moves the uniform plan with it.
            let select: Vec<f64> = (0..env.select.len())
                .map(|i| ((i * 7919) % 101) as f64)
                .collect();
            for sel in [env.select.clone(), select] {
                env.set_select(sel.clone());
                env.reset();
                while !env.done() {
                    let keep: Vec<f64> = rl::ALPHAS
                        .iter()
                        .map(|&a| rl::ratio_for_alpha(&env, a))
                        .collect();
                    assert_eq!(keep[0], 1.0);
                    assert!(keep.windows(2).all(|w| w[1] <= w[0]), "{keep:?}");
                    assert!(keep.iter().all(|k| (0.0..=1.0).contains(k)));
                    let fair = env.fair_ratio();
                    env.step(fair);
                }
                assert!(env.macs() <= env.target, "{ratio}");
                let uniform = p.allocate(env.target, &sel, Allocation::Uniform, *round_to);
                assert_eq!(
                    env.keep(),
                    uniform,
                    "ratio {ratio}, round_to {round_to}: fair shares differ from the uniform plan"
                );
            }
        }
    }
}

/// The main command with --data runs a search: budget met, search recorded in the report, and
/// the same seed gives a byte-identical model.
fn search_is_deterministic_and_meets_the_budget(agent: &str, episodes: &str, curve_len: usize) {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(format!("{name}.onnx"));
        let rep = dir.path().join(format!("{name}.json"));
        let o = common::bin()
            .arg(s.join("models/cifar10/resnet20.onnx"))
            .arg("-o")
            .arg(&out)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                agent,
                "--episodes",
                episodes,
            ])
            .args(["--seed", "3", "--runtime", "tract", "--data"])
            .arg(s.join("data/cifar10/test_846_lossless.npz"))
            .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            .args([
                "--calib-size",
                "64",
                "--val-size",
                "128",
                "--rerank",
                "0",
                "--report",
            ])
            .arg(&rep)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert!(err.contains(&format!("episode {curve_len}/")), "{err}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        (std::fs::read(&out).unwrap(), r)
    };
    let (a, ra) = run("a");
    let (b, _) = run("b");
    assert!(a == b, "{agent}: same seed, different output");
    assert!(ra["macs_ratio"].as_f64().unwrap() <= 0.5, "{ra}");
    let search = &ra["search"];
    assert_eq!(search["agent"], agent);
    // With labels the default reward is the soft top-1.
    assert_eq!(search["reward"], "soft");
    assert_eq!(search["curve"].as_array().unwrap().len(), curve_len);
    assert_eq!(search["keep_ratios"].as_array().unwrap().len(), 10);
    assert!(search["data_free_reward"].as_f64().is_some(), "{search}");
    if agent != "reinforce" {
        // The report's best is the best episode of the curve (reinforce's curve is per group).
        let best = search["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reward"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(search["best_reward"].as_f64().unwrap(), best);
    }
}

#[test]
fn ddpg_search_is_deterministic_and_meets_the_budget() {
    search_is_deterministic_and_meets_the_budget("ddpg", "8", 8);
}

#[test]
fn dqn_search_is_deterministic_and_meets_the_budget() {
    // 4 training episodes, then the averaged greedy plan.
    search_is_deterministic_and_meets_the_budget("dqn", "4", 5);
}

#[test]
fn reinforce_search_is_deterministic_and_meets_the_budget() {
    // One policy update per group (10 groups).
    search_is_deterministic_and_meets_the_budget("reinforce", "10", 10);
}

/// The re-ranked plan the search competes against: uniform allocation by L1 (data-free) or,
/// with data (the default `--method auto`), by the least-squares criterion (no search). It is
/// flagged, and its label says so even when the agent found it too ("ddpg #1 = …").
fn is_baseline(row: &serde_json::Value) -> bool {
    let source = row["source"].as_str().unwrap();
    let named = source.contains("(data-free)") || source.contains("(no search)");
    assert_eq!(row["unsearched"].as_bool(), Some(named), "{row}");
    named
}

/// Re-ranking recovers the search's best plans and the data-free plan in full and writes the
/// one that scores best on the validation subset; the report gets the human table and plots.
#[test]
fn rerank_picks_the_best_validated_plan_and_writes_table_and_plots() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let rep = dir.path().join("report.json");
    let o = common::bin()
        .arg(s.join("models/cifar10/resnet20.onnx"))
        .arg("-o")
        .arg(&out)
        .args([
            "--target-flops",
            "0.5",
            "--finetune-epochs",
            "0",
            "--agent",
            "ddpg",
            "--episodes",
            "6",
        ])
        .args(["--runtime", "tract", "--data"])
        .arg(s.join("data/cifar10/test_846_lossless.npz"))
        .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
        .args([
            "--calib-size",
            "64",
            "--val-size",
            "128",
            "--rerank",
            "2",
            "--reward",
            "top1",
            "--report",
        ])
        .arg(&rep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["search"]["reward"], "top1");
    let rows = r["search"]["rerank"].as_array().unwrap();
    assert!(rows.len() >= 2 && rows.len() <= 3, "{rows:?}");
    assert!(rows.iter().any(is_baseline));
    let best = rows
        .iter()
        .map(|x| x["val_score"].as_f64().unwrap())
        .fold(0.0, f64::max);
    // The written model is the best re-ranked one: its measured top-1 is that score.
    assert!(
        (r["top1_after"].as_f64().unwrap() - best).abs() < 1e-9,
        "{r}"
    );
    let table = std::fs::read_to_string(dir.path().join("report.groups.md")).unwrap();
    assert!(table.lines().count() >= 12, "{table}");
    for svg in ["report.keep.svg", "report.curve.svg"] {
        let t = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        assert!(
            t.starts_with("<svg") && t.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(t.contains("<rect") || t.contains("<polyline"), "{svg}");
    }
}

/// `--recover ft:STEPS`: every candidate of the search is fine-tuned after least squares (the
/// search's proxy scores change), and so is the written model.
#[test]
fn ft_recovery_fine_tunes_the_candidates_and_the_output() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |recover: &str| {
        let out = dir.path().join("m.onnx");
        let rep = dir.path().join("r.json");
        let o = common::bin()
            .arg(s.join("models/cifar10/resnet20.onnx"))
            .arg("-o")
            .arg(&out)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                "ddpg",
                "--episodes",
                "2",
            ])
            .args(["--recover", recover, "--batch-size", "16", "--label-free"])
            .args(["--seed", "3", "--runtime", "tract", "--data"])
            .arg(s.join("data/cifar10/test_846_lossless.npz"))
            .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            .args(["--calib-size", "64", "--val-size", "128", "--rerank", "1"])
            .arg("--report")
            .arg(&rep)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        assert!(r["macs_ratio"].as_f64().unwrap() <= 0.5, "{r}");
        (err, r)
    };
    let (err, ft) = run("ft:3");
    assert!(
        err.contains("+ 3 fine-tune step(s) of 16 on the training samples"),
        "{err}"
    );
    assert!(
        err.contains("recover ft: 3 step(s) of 16 from 718 training sample(s)"),
        "{err}"
    );
    assert_eq!(ft["recover"]["mode"], "ft:3", "{ft}");
    assert_eq!(ft["recover"]["finetune"]["steps"], 3, "{ft}");
    let (_, ls) = run("ls");
    assert!(ls["recover"].get("finetune").is_none(), "{ls}");
    // Label-free rewards are continuous: the fine-tuned proxy of the same plan differs.
    let (a, b) = (
        ft["search"]["data_free_reward"].as_f64().unwrap(),
        ls["search"]["data_free_reward"].as_f64().unwrap(),
    );
    assert!((a - b).abs() > 1e-6, "ft {a} vs ls {b}");
}

#[test]
fn recover_ft_needs_a_step_count() {
    let o = common::bin()
        .arg(common::repo().join("models/tiny_resnet.onnx"))
        .args([
            "-o",
            "/tmp/x.onnx",
            "--target-flops",
            "0.5",
            "--finetune-epochs",
            "0",
            "--recover",
            "ft:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected ls, bn, none or ft:STEPS"));
}

/// `--search-recover seq:N`: candidates are recovered level by level, as the written model is:
/// on the same calibration (512, so 16 positions per image) and validation images, the
/// search's score of the data-free plan is exactly that plan's score after the final recovery;
/// the cached one-round fit scores it differently.
#[test]
fn sequential_search_recovery_scores_like_the_final_recovery() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |proxy: &str| {
        let out = dir.path().join("m.onnx");
        let rep = dir.path().join("r.json");
        let o = common::bin()
            .arg(s.join("models/cifar10/resnet20.onnx"))
            .arg("-o")
            .arg(&out)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                "ddpg",
            ])
            .args(["--episodes", "1", "--label-free", "--search-recover", proxy])
            .args(["--seed", "3", "--runtime", "tract", "--data"])
            .arg(s.join("data/cifar10/test_846_lossless.npz"))
            .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            .args(["--calib-size", "512", "--val-size", "128", "--rerank", "1"])
            .arg("--report")
            .arg(&rep)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        assert!(r["macs_ratio"].as_f64().unwrap() <= 0.5, "{r}");
        let proxy = r["search"]["data_free_reward"].as_f64().unwrap();
        let fin = r["search"]["rerank"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| is_baseline(x))
            .unwrap()["val_score"]
            .as_f64()
            .unwrap();
        (err, proxy, fin)
    };
    let (err, seq, fin) = run("seq:512");
    assert!(
        err.contains("least squares (level by level) on 512 calibration images"),
        "{err}"
    );
    assert!((seq - fin).abs() < 1e-9, "proxy {seq} vs final {fin}");
    let (err, fast, fin2) = run("fast");
    assert!(err.contains("least squares (one round, cached)"), "{err}");
    assert_eq!(fin, fin2, "the final recovery does not depend on the proxy");
    assert!(
        (fast - fin).abs() > 1e-6,
        "fast proxy {fast} vs final {fin}"
    );
}

#[test]
fn search_recover_needs_fast_or_a_sample_count() {
    let o = common::bin()
        .arg(common::repo().join("models/tiny_resnet.onnx"))
        .args(["-o", "/tmp/x.onnx", "--target-flops", "0.5"])
        .args(["--search-recover", "seq:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected fast or seq:N"));
}
