//! The main job as a library call (`onnx_prune::job`): it writes byte for byte what the
//! command writes with the same settings, and a set stop flag ends it with a valid model and
//! the phase it reached. Repo model and fixture only (no ../shared).

mod common;

use onnx_prune::job::{self, Length, Options};
use std::sync::atomic::AtomicBool;

/// The digits job of `tools/identity.sh`: search, least squares and 20 fine-tune steps.
fn digits_options() -> Options {
    let repo = common::repo();
    let mut o = Options {
        target_flops: 0.5,
        data: Some(repo.join("fixtures/digits_train.npz")),
        seed: 7,
        episodes: Some(6),
        finetune: Length::Steps(20),
        ..Default::default()
    };
    o.train.augment = false;
    o
}

#[test]
fn the_library_job_writes_what_the_command_writes() {
    let repo = common::repo();
    let input = repo.join("models/digits_cnn.onnx");
    let dir = tempfile::tempdir().unwrap();
    let (cli_out, cli_plan) = (
        dir.path().join("cli.onnx"),
        dir.path().join("cli.plan.json"),
    );
    let st = common::bin()
        .arg(&input)
        .arg("-o")
        .arg(&cli_out)
        .args(["--target-flops", "0.5", "--data"])
        .arg(repo.join("fixtures/digits_train.npz"))
        .args(["--no-augment", "--seed", "7", "--episodes", "6"])
        .args(["--finetune-steps", "20", "--emit-plan"])
        .arg(&cli_plan)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let (lib_out, lib_plan) = (
        dir.path().join("lib.onnx"),
        dir.path().join("lib.plan.json"),
    );
    let o = Options {
        checkpoint_beside: Some(lib_out.clone()),
        ..digits_options()
    };
    let out = job::run(&input, &o, &job::Quiet).unwrap();
    assert_eq!(out.interrupted, None);
    assert!(
        out.report.contains_key("finetune"),
        "{:?}",
        out.report.keys()
    );
    let files = job::Files {
        plan: Some(lib_plan.clone()),
        report: None,
    };
    let w = out.write(&input, &lib_out, &files, &job::Quiet).unwrap();
    assert!(w.macs_ratio <= 0.5, "{}", w.macs_ratio);
    assert!(w.unreachable.is_none());
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    assert!(
        read(&cli_out) == read(&lib_out),
        "the library's model differs from the command's"
    );
    assert_eq!(read(&cli_plan), read(&lib_plan));
}

#[test]
fn a_set_stop_flag_ends_the_job_after_the_search_with_a_valid_model() {
    static STOP: AtomicBool = AtomicBool::new(true);
    let repo = common::repo();
    let input = repo.join("models/digits_cnn.onnx");
    let o = Options {
        stop: Some(&STOP),
        ..digits_options()
    };
    let out = job::run(&input, &o, &job::Quiet).unwrap();
    assert_eq!(out.interrupted, Some("search"));
    assert!(
        !out.report.contains_key("finetune"),
        "fine-tuned after a stop"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stopped.onnx");
    let w = out
        .write(&input, &path, &Default::default(), &job::Quiet)
        .unwrap();
    assert!(w.macs_ratio <= 0.5, "{}", w.macs_ratio);
    // The written model runs on the fixture's images.
    let ev = common::bin()
        .arg("eval")
        .arg(&path)
        .arg("--data")
        .arg(repo.join("fixtures/digits_test.npz"))
        .output()
        .unwrap();
    assert!(
        ev.status.success(),
        "the stopped job's model does not evaluate: {}",
        String::from_utf8_lossy(&ev.stderr)
    );
}
