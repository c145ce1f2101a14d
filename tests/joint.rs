//! `--agent joint` end to end on resnet20 (the lossless CIFAR sample, tract, small subsets):
//! a seed and step counts give the same bytes, the report records the rounds and the
//! environment model's error, the label-free path distils, and Ctrl-C during joint training
//! writes a valid model. (The agent's networks, the alignment and the masked evaluation are
//! tested in `learn::joint` and `job::joint`.)

mod common;

use common::{check_written, interrupt, phases, report, resnet20_job, RESNET20_MACS};
use std::path::Path;
use std::process::Command;

/// The common resnet20 job with `--agent joint`, a round every 4 steps.
fn job(shared: &Path, out: &Path, rep: &Path, extra: &[&str]) -> Command {
    let mut c = resnet20_job(
        shared,
        out,
        rep,
        &["--agent", "joint", "--joint-round", "4"],
    );
    c.args(extra);
    c
}

/// Twice the same joint job with fixed step counts: identical bytes (and other bytes with the
/// decaying schedule, `--joint-lr cosine`); the report has every round (its plan's ratios, reward and the environment model's reconstruction error), the
/// phases in order, and the written model keeps at most half the MACs.
#[test]
fn the_joint_job_is_reproducible_and_reports_its_rounds() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.onnx"));
        let rep = dir.path().join(format!("{name}.json"));
        let mut args = vec!["--joint-steps", "12", "--finetune-steps", "2"];
        args.extend_from_slice(extra);
        let o = job(&s, &out, &rep, &args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (std::fs::read(&out).unwrap(), report(&rep), out)
    };
    let (a, r, out) = run("a", &[]);
    let (b, _, _) = run("b", &[]);
    assert!(a == b, "same seed and steps, different output");
    // The phase's schedule: the peak held to the cut by default; `--joint-lr cosine` decays
    // it, so the same seed trains other weights.
    let (c, rc, _) = run("c", &["--joint-lr", "cosine"]);
    assert_eq!(r["joint"]["decay"], false, "{r}");
    assert_eq!(rc["joint"]["decay"], true, "{rc}");
    assert!(a != c, "--joint-lr cosine gave the held schedule's output");
    // The cut network trains between rounds by default; `--joint-train full` trains the
    // whole network: reproducible too, other bytes.
    let (d, rd, _) = run("d", &["--joint-train", "full"]);
    let (e, _, _) = run("e", &["--joint-train", "full"]);
    assert_eq!(r["joint"]["train"], "sub", "{r}");
    assert_eq!(rd["joint"]["train"], "full", "{rd}");
    assert!(
        d == e,
        "--joint-train full: same seed and steps, different output"
    );
    assert!(a != d, "--joint-train full gave the cut network's output");
    // The time spent cutting is reported: within the phase's under `sub`, none under `full`.
    let cut = r["joint"]["cut_seconds"].as_f64().unwrap();
    assert!(
        cut >= 0.0 && cut <= r["joint"]["seconds"].as_f64().unwrap(),
        "{r}"
    );
    assert_eq!(rd["joint"]["cut_seconds"].as_f64(), Some(0.0), "{rd}");
    assert_eq!(
        phases(&r),
        ["prepare", "joint", "recover", "finetune"],
        "{r}"
    );
    let j = &r["joint"];
    assert_eq!(j["steps"], 12, "{j}");
    let rounds = j["rounds"].as_array().unwrap();
    // Rounds at steps 0, 4 and 8 (the last quarter holds the structure).
    assert_eq!(rounds.len(), 3, "{j}");
    for (i, x) in rounds.iter().enumerate() {
        assert_eq!(x["step"], 4 * i, "{x}");
        assert!(x["reconstruction_error"].as_f64().unwrap() >= 0.0, "{x}");
        assert!(x["macs_ratio"].as_f64().unwrap() <= 0.5, "{x}");
        assert_eq!(
            x["ratios"].as_array().unwrap().len(),
            j["ratios"].as_array().unwrap().len()
        );
    }
    check_written(&out, RESNET20_MACS);
    // The plot of the rounds' ratios beside the report.
    let svg = std::fs::read_to_string(dir.path().join("a.joint.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("round"), "{svg}");
}

/// Label-free: the joint training distils from the original, plans are scored by fidelity,
/// and no top-1 is reported.
#[test]
fn the_label_free_joint_job_distils() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let o = job(
        &s,
        &out,
        &rep,
        &[
            "--label-free",
            "--joint-steps",
            "8",
            "--finetune-steps",
            "2",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("(reward fidelity)"), "{err}");
    let r = report(&rep);
    assert!(r.get("top1_after").is_none(), "{r}");
    let reward = r["joint"]["reward"].as_f64().unwrap();
    assert!(reward > 0.0 && reward <= 1.0, "{r}");
    assert_eq!(r["finetune"]["kd_weight"], 1.0, "{r}");
    check_written(&out, RESNET20_MACS);
}

/// Ctrl-C during joint training: the structure chosen so far is cut from the weights trained
/// so far, recovered and written (valid, within the budget); exit 130, the report names the
/// phase.
#[test]
fn ctrl_c_during_joint_training_writes_a_valid_model() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let c = job(
        &s,
        &out,
        &rep,
        &["--joint-steps", "100000", "--finetune-steps", "2"],
    );
    let (code, err) = interrupt(c, "joint round 2 ", 0.5);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted during joint"), "{err}");
    let r = report(&rep);
    assert_eq!(r["time"]["interrupted"], "joint", "{r}");
    assert!(r["joint"]["interrupted"].as_bool().unwrap(), "{r}");
    assert!(r.get("finetune").is_none(), "{r}");
    check_written(&out, RESNET20_MACS);
}

/// Without data, or with a strength outside [0, 1], `--agent joint` is refused with one clear
/// line and nothing is written (no ../shared needed).
#[test]
fn joint_without_data_or_with_a_bad_strength_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let model = common::repo().join("models/tiny_resnet.onnx");
    for extra in [vec![], vec!["--data", "x.npz", "--align-strength", "2"]] {
        let o = common::bin()
            .arg(&model)
            .arg("-o")
            .arg(&out)
            .args(["--target-flops", "0.5", "--agent", "joint"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let want = if extra.is_empty() {
            "--agent joint"
        } else {
            "--align-strength"
        };
        assert!(err.contains(want), "{err}");
        assert!(!out.exists());
    }
}
