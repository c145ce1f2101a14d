//! The main command as a job within `--time-limit`: fine-tuning is part of it by default,
//! `--finetune-epochs 0` switches it off, a seed and step count give the same bytes, the
//! label-free path distils only, and Ctrl-C in the search or the fine-tuning writes a valid
//! model and says where it stopped. (The split and the deadline logic themselves are tested
//! on a simulated clock: `budget` unit tests and tests/burn_net.rs.)

mod common;

use common::{check_written, interrupt, phases, report, resnet20_job as job, RESNET20_MACS};
use std::path::PathBuf;

/// Without a length, the job fine-tunes for what the limit leaves: the phases are timed and
/// scored before and after, and the split is in the report.
#[test]
fn the_default_job_fine_tunes_within_the_limit() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let o = job(&s, &out, &rep, &["--agent", "none", "--time-limit", "45s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("time limit 45s:"), "{err}");
    let r = report(&rep);
    assert_eq!(r["time"]["limit_s"], 45.0, "{r}");
    assert_eq!(phases(&r), ["prepare", "recover", "finetune"], "{r}");
    let ft = &r["finetune"];
    if ft.get("skipped").is_none() {
        // Planned from the measured step time: at least a step, within 30 epochs of 718.
        let steps = ft["planned_steps"].as_u64().unwrap();
        assert!((1..=30 * 718 / 16 + 1).contains(&steps), "{ft}");
        assert!(ft["step_seconds_measured"].as_f64().unwrap() > 0.0, "{ft}");
        let p = &r["time"]["phases"][2];
        assert_eq!(p["before"]["top1"], r["time"]["phases"][1]["after"]["top1"]);
        assert!(p["after"]["top1"].is_number(), "{p}");
        // The shipped model's figures are the report's.
        let shipped = ft["shipped"].as_str().unwrap();
        let want = if shipped == "fine-tuned" {
            &p["after"]
        } else {
            &p["before"]
        };
        assert_eq!(r["top1_after"], want["top1"], "{r}");
    }
    // The measured speed of the written model against the original (times, not a ratio: a
    // loaded machine may time anything), at batch 1 and at 64.
    for b in ["batch1", "batch64"] {
        let s = &r["speed"][b];
        assert!(s["original_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(s["pruned_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(s["runs"].as_u64().unwrap() >= 5, "{r}");
    }
    assert!(err.contains("measured speed-up ("), "{err}");
    check_written(&out, RESNET20_MACS);
}

/// `--finetune-epochs 0` switches fine-tuning off (and with it the default limit).
#[test]
fn finetune_epochs_zero_switches_it_off() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let o = job(
        &s,
        &out,
        &rep,
        &["--agent", "none", "--finetune-epochs", "0"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&rep);
    assert!(r.get("finetune").is_none(), "{r}");
    assert_eq!(phases(&r), ["prepare", "recover"]);
    assert!(r["time"]["limit_s"].is_null(), "{r}");
}

/// A seed and a step count give the same bytes.
#[test]
fn same_seed_and_step_count_give_identical_output() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(format!("{name}.onnx"));
        let rep = dir.path().join(format!("{name}.json"));
        let o = job(
            &s,
            &out,
            &rep,
            &["--agent", "none", "--finetune-steps", "4"],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (std::fs::read(&out).unwrap(), report(&rep))
    };
    let (a, ra) = run("a");
    let (b, _) = run("b");
    assert!(a == b, "same seed and steps, different output");
    assert_eq!(ra["finetune"]["steps"], 4, "{ra}");
    // The job's recipe: labels only, SGD at 3e-3.
    assert_eq!(ra["finetune"]["kd_weight"], 0.0, "{ra}");
    assert_eq!(ra["finetune"]["lr"], 3e-3, "{ra}");
    let optim = ra["finetune"]["optimizer"].as_str().unwrap_or_default();
    assert!(optim.starts_with("Sgd"), "{ra}");
}

/// Label-free: distillation only, and fidelity (no top-1) before and after.
#[test]
fn the_label_free_job_distils_only() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let o = job(
        &s,
        &out,
        &rep,
        &["--agent", "none", "--label-free", "--finetune-steps", "3"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&rep);
    assert_eq!(r["finetune"]["kd_weight"], 1.0, "{r}");
    assert!(r.get("top1_after").is_none(), "{r}");
    let p = &r["time"]["phases"][2];
    assert_eq!(p["phase"], "finetune");
    assert!(p["before"]["rel_mse"].is_number() && p["after"]["rel_mse"].is_number());
    assert!(p["after"].get("top1").is_none(), "{p}");
    check_written(&out, RESNET20_MACS);
}

/// Ctrl-C while fine-tuning: the model so far is written (valid, within the budget), the
/// report says which phase stopped, exit 130.
#[test]
fn ctrl_c_while_fine_tuning_writes_the_model_so_far() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep): (PathBuf, PathBuf) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let c = job(
        &s,
        &out,
        &rep,
        &["--agent", "none", "--finetune-steps", "100000"],
    );
    let (code, err) = interrupt(c, "fine-tuning on", 3.0);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted during finetune"), "{err}");
    let r = report(&rep);
    assert_eq!(r["time"]["interrupted"], "finetune", "{r}");
    assert!(r["finetune"]["interrupted"].as_bool().unwrap(), "{r}");
    check_written(&out, RESNET20_MACS);
}

/// Ctrl-C during the search: its best plan so far is recovered and written, exit 130.
#[test]
fn ctrl_c_during_the_search_writes_its_best_plan() {
    let Some(s) = common::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("p.onnx"), dir.path().join("p.json"));
    let c = job(
        &s,
        &out,
        &rep,
        &["--agent", "ddpg", "--episodes", "100000", "--rerank", "2"],
    );
    let (code, err) = interrupt(c, "episode 3/", 0.0);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted during search"), "{err}");
    assert!(
        !err.contains("rerank 1/"),
        "no re-ranking after Ctrl-C: {err}"
    );
    let r = report(&rep);
    assert_eq!(r["time"]["interrupted"], "search", "{r}");
    assert_eq!(phases(&r), ["prepare", "search", "recover"], "{r}");
    check_written(&out, RESNET20_MACS);
}

/// Ctrl-C in the `finetune` command (repo model and fixture, no ../shared): it finishes the
/// step, writes OUT (a model that evaluates) and the checkpoint, exits 130, and `--resume`
/// continues from the step it reached to the end, then removes the checkpoint.
#[test]
fn ctrl_c_in_finetune_leaves_a_valid_model_and_a_checkpoint_that_resumes() {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft.onnx");
    let ft = |steps: &str| {
        let mut c = common::bin();
        c.arg("finetune")
            .arg(repo.join("models/digits_cnn.onnx"))
            .arg("-o")
            .arg(&out)
            .arg("--data")
            .arg(repo.join("fixtures/digits_train.npz"))
            .args(["--steps", steps, "--no-augment", "--val-size", "100"])
            .args(["--batch-size", "32", "--checkpoint-every", "0"]);
        c
    };
    let (code, err) = interrupt(ft("1000000"), "training on ", 2.0);
    assert_eq!(code, Some(130), "{err}");
    let at = err
        .split("interrupted at step ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|k| k.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    let ckpt = onnx_prune::learn::train::Checkpoint::beside(&out);
    assert!(ckpt.exists(), "no checkpoint after Ctrl-C: {err}");
    let ev = common::bin()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(repo.join("fixtures/digits_test.npz"))
        .output()
        .unwrap();
    assert!(
        ev.status.success(),
        "the interrupted output does not evaluate: {}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let end = (at + 3).to_string();
    let o = ft(&end).arg("--resume").output().unwrap();
    let err2 = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err2}");
    assert!(
        err2.contains(&format!("at step {at}/{end}")),
        "resume did not start at step {at}: {err2}"
    );
    assert!(!ckpt.exists(), "the checkpoint outlives a finished run");
    onnx_prune::onnx::load(&out).unwrap();
}

/// `--feature-kd W`: the fine-tuning also matches the pruned convolutions' maps to the
/// original's (the report and the fine-tuning line say how many), the written model is valid
/// and has the input's outputs only; a negative weight, or the flag with `--agent joint`, is
/// refused in one line before any work (the refusals need no ../shared).
#[test]
fn feature_distillation_in_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.onnx");
    let tiny = common::repo().join("models/tiny_resnet.onnx");
    for (extra, want) in [
        (vec!["--feature-kd=-1"], "--feature-kd must be"),
        (
            vec!["--feature-kd", "1", "--agent", "joint", "--data", "x.npz"],
            "--feature-kd is not available with --agent joint",
        ),
        (
            vec!["--feature-kd", "1"],
            "--feature-kd distils during fine-tuning, which needs training data: add --data",
        ),
    ] {
        let o = common::bin()
            .arg(&tiny)
            .arg("-o")
            .arg(&out)
            .args(["--target-flops", "0.5"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
    // With fine-tuning switched off it is named as ignored, and the job runs.
    let o = common::bin()
        .arg(common::repo().join("models/digits_cnn.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--target-flops", "0.5", "--agent", "none"])
        .args(["--feature-kd", "1", "--finetune-steps", "0"])
        .arg("--data")
        .arg(common::repo().join("fixtures/digits_train.npz"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: --feature-kd ignored: fine-tuning is off"),
        "{err}"
    );
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();
    let Some(s) = common::shared() else { return };
    let rep = dir.path().join("r.json");
    let o = job(
        &s,
        &out,
        &rep,
        &[
            "--agent",
            "none",
            "--finetune-steps",
            "3",
            "--feature-kd",
            "1",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let r = report(&rep);
    let maps = r["finetune"]["feature_kd"]["maps"].as_u64().unwrap_or(0);
    // resnet20: every convolution but the stem reads pruned channels at 0.5.
    assert!(maps >= 10, "{r}");
    assert_eq!(r["finetune"]["feature_kd"]["weight"], 1.0, "{r}");
    assert!(
        err.contains(&format!("feature distillation (w = 1, {maps} map(s))")),
        "{err}"
    );
    check_written(&out, RESNET20_MACS);
    let written = onnx_prune::onnx::load(&out).unwrap();
    assert_eq!(written.graph.outputs.len(), 1, "the taps are not written");
}
