//! The search environment: AMC-style action clipping keeps every episode within the MAC
//! budget, whatever the agent does.

mod common;

use onnx_prune::search::datafree::Pruner;
use onnx_prune::search::env::{Env, STATE_DIM};
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

/// The main command with --data runs the DDPG search: budget met, search recorded in the
/// report, and the same seed gives a byte-identical model.
#[test]
fn ddpg_search_is_deterministic_and_meets_the_budget() {
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
                "--agent",
                "ddpg",
                "--episodes",
                "8",
            ])
            .args(["--seed", "3", "--runtime", "tract", "--data"])
            .arg(s.join("data/cifar10/test_846_lossless.npz"))
            .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            .args(["--calib-size", "64", "--val-size", "128", "--report"])
            .arg(&rep)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert!(err.contains("episode 8/8"), "{err}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        (std::fs::read(&out).unwrap(), r)
    };
    let (a, ra) = run("a");
    let (b, _) = run("b");
    assert!(a == b, "same seed, different output");
    assert!(ra["macs_ratio"].as_f64().unwrap() <= 0.5, "{ra}");
    let search = &ra["search"];
    assert_eq!(search["agent"], "ddpg");
    assert_eq!(search["curve"].as_array().unwrap().len(), 8);
    assert_eq!(search["keep_ratios"].as_array().unwrap().len(), 10);
    // The report's best is the best episode of the curve.
    let best = search["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reward"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(search["best_reward"].as_f64().unwrap(), best);
}
