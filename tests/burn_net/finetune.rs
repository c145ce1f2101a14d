//! Fine-tuning: checkpoint and resume, the `finetune` command and the main command's
//! fine-tuning, and the trainer under a deadline on a simulated clock.

use super::common;
use super::training::{accuracy, blobs, decode, small_net};
use burn::prelude::*;
use onnx_prune::eval;
use onnx_prune::learn::train::{Optim, TrainOptions, Trainer};
use onnx_prune::net::Net;
use onnx_prune::onnx::builder::{attr_i, ModelBuilder};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Stopping after 3 steps, checkpointing (weights into ONNX, optimiser state beside) and
/// resuming gives exactly the weights of an uninterrupted 6-step run.
#[test]
fn checkpoint_resume_is_exact() {
    let device = Device::flex().autodiff();
    let data = blobs(256, 21);
    let o = TrainOptions {
        optim: Optim::parse("sgd").unwrap(),
        lr: 0.05,
        batch: 32,
        steps: 6,
        augment: true,
        seed: 8,
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let mut full = Net::new(&small_net(3), &device).unwrap();
    Trainer::new(&full, o.clone())
        .run(&mut full, None, &data, &stop, &mut |_| {}, &mut |_, _| {
            Ok(())
        })
        .unwrap();

    let tmp = eval::TempDir::new("ckpt").unwrap();
    let ck = onnx_prune::learn::train::Checkpoint::beside(&tmp.0.join("out.onnx"));
    let mut a = Net::new(&small_net(3), &device).unwrap();
    let mut ta = Trainer::new(
        &a,
        TrainOptions {
            checkpoint_every: 3,
            ..o.clone()
        },
    );
    let stop_at_3 = AtomicBool::new(false);
    let mut saved = false;
    ta.run(
        &mut a,
        None,
        &data,
        &stop_at_3,
        &mut |s| {
            if s.step == 3 {
                stop_at_3.store(true, std::sync::atomic::Ordering::SeqCst)
            }
        },
        &mut |n, t| {
            saved = true;
            t.save_state(&ck.state)?;
            onnx_prune::onnx::save(&n.write_back(), &ck.model, &Default::default(), &[])
        },
    )
    .unwrap();
    assert!(saved && ta.step == 3 && ck.exists());
    let resumed = onnx_prune::onnx::load(&ck.model).unwrap();
    let mut b = Net::new(&resumed, &device).unwrap();
    let mut tb = Trainer::new(&b, o.clone());
    tb.load_state(&ck.state).unwrap();
    assert_eq!(tb.step, 3);
    tb.run(&mut b, None, &data, &stop, &mut |_| {}, &mut |_, _| Ok(()))
        .unwrap();
    for i in 0..full.params().len() {
        assert_eq!(
            full.param(i).to_vec(),
            b.param(i).to_vec(),
            "{}",
            full.params()[i].name
        );
    }
    // A checkpoint of another optimiser is refused with a clear error.
    let mut tc = Trainer::new(
        &b,
        TrainOptions {
            optim: Optim::parse("adam").unwrap(),
            ..o
        },
    );
    let e = tc.load_state(&ck.state).unwrap_err().to_string();
    assert!(e.contains("another optimiser"), "{e}");
}

/// An op burn cannot train is named before any work starts.
#[test]
fn untrainable_op_is_named() {
    let mut b = ModelBuilder::new(17, 1);
    let x = b.input("x", &[1, 1, 8, 8]);
    let c = b.conv(&x, 1, 2, 3, 1, 1);
    let k = b.init_i64("k", &[1], &[3]);
    let outs = b.node("TopK", &[&c, &k], vec![attr_i("axis", 3)], 2);
    b.output(&outs[0], &[1, 2, 8, 3]);
    let m = decode(b.build());
    let bad = onnx_prune::net::unsupported(&m);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("TopK"), "{bad:?}");
    let e = Net::new(&m, &Device::flex()).err().unwrap().to_string();
    assert!(e.contains("TopK") && e.contains("cannot be trained"), "{e}");
}

/// `onnx-prune finetune` as a user runs it: writes a loadable model and a report, leaves the
/// input alone and removes its checkpoint; bad flags are clear errors.
#[test]
fn finetune_command() {
    let Some(shared) = common::shared() else {
        return;
    };
    let model = shared.join("models/cifar10/resnet20.onnx");
    let data = shared.join("data/cifar10/test_10k_jpeg.tar");
    let before = std::fs::read(&model).unwrap();
    let tmp = eval::TempDir::new("ftcmd").unwrap();
    let out = tmp.0.join("ft.onnx");
    let rep = tmp.0.join("ft.json");
    let o = common::bin()
        .arg("finetune")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
        .args([
            "--limit",
            "400",
            "--val-size",
            "100",
            "--steps",
            "3",
            "--batch-size",
            "16",
        ])
        .arg("--teacher")
        .arg(&model)
        .arg("--report")
        .arg(&rep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("burn backend") && err.contains("finetune step 3/3"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(j["steps"], 3);
    assert!(
        j["before"]["top1"].is_number() && j["after"]["top1"].is_number(),
        "{j}"
    );
    assert!(j["after"]["agreement"].is_number(), "{j}");
    assert_eq!(j["kd_weight"], 0.5);
    assert!(!train_ckpt(&out).exists());
    onnx_prune::onnx::load(&out).unwrap();
    // Distillation without a teacher, and --label-free without one, are usage errors.
    for extra in [vec!["--label-free"], vec!["--kd-weight", "0.5"]] {
        let o = common::bin()
            .arg("finetune")
            .arg(&model)
            .arg("-o")
            .arg(tmp.0.join("x.onnx"))
            .arg("--data")
            .arg(&data)
            .args(["--limit", "50", "--steps", "1"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("teacher"), "{err}");
        assert!(!tmp.0.join("x.onnx").exists());
    }
}

fn train_ckpt(out: &Path) -> onnx_prune::learn::train::Checkpoint {
    onnx_prune::learn::train::Checkpoint::beside(out)
}

/// The main command with `--finetune-epochs`: prunes, recovers, fine-tunes (labels + the
/// original as teacher), measures again; the report has both.
#[test]
fn prune_then_finetune() {
    let Some(shared) = common::shared() else {
        return;
    };
    let model = shared.join("models/cifar10/resnet20.onnx");
    let data = shared.join("data/cifar10/test_10k_jpeg.tar");
    let tmp = eval::TempDir::new("pft").unwrap();
    let out = tmp.0.join("p.onnx");
    let rep = tmp.0.join("p.json");
    let o = common::bin()
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .args(["--target-flops", "0.5", "--agent", "none", "--data"])
        .arg(&data)
        .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
        .args(["--limit", "600", "--calib-size", "200", "--val-size", "100"])
        .args(["--finetune-epochs", "0.1", "--batch-size", "16", "--report"])
        .arg(&rep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    let ft = &j["finetune"];
    // 500 samples not held out, 0.1 epoch of 16: 4 steps.
    assert_eq!(ft["steps"], 4, "{ft}");
    assert!(
        ft["before"]["top1_after"].is_number() && j["top1_after"].is_number(),
        "{j}"
    );
    assert!(j["macs_ratio"].as_f64().unwrap() <= 0.5, "{j}");
    assert!(!train_ckpt(&out).exists());
}

/// The trainer under a deadline, on a simulated clock that moves 1 s per step: a plan that the
/// measured pace shows cannot finish is cut (and its cosine schedule re-fitted to end there),
/// so training ends before the deadline with the learning rate annealed.
#[test]
fn a_plan_that_would_overrun_the_deadline_is_cut_to_fit() {
    use onnx_prune::budget::{Clock, Deadline, SimClock};
    use std::sync::Arc;
    use std::time::Duration;
    let device = Device::flex().autodiff();
    let mut net = Net::new(&small_net(3), &device).unwrap();
    let train = blobs(256, 1);
    let o = TrainOptions {
        lr: 0.01,
        batch: 32,
        steps: 100,
        augment: false,
        ..Default::default()
    };
    let clock = Arc::new(SimClock::new(Duration::ZERO));
    let mut tr = Trainer::new(&net, o);
    tr.deadline = Some(Deadline::at(clock.clone(), Duration::from_secs(50)));
    let stop = AtomicBool::new(false);
    let mut lrs = vec![];
    let rep = tr
        .run(
            &mut net,
            None,
            &train,
            &stop,
            &mut |s| {
                lrs.push(s.lr);
                clock.advance(Duration::from_secs(1));
            },
            &mut |_, _| Ok(()),
        )
        .unwrap();
    // Paced from step 10; at step 30 (30 s), 20 s are left for 70 planned steps at 1 s: cut
    // to 30 + 19 (5% slack).
    assert_eq!(rep.replanned_from, Some(100), "{rep:?}");
    assert_eq!(tr.o.steps, 49);
    assert_eq!(rep.steps_done, 49);
    assert!(!rep.deadline_hit, "{rep:?}");
    assert!(clock.now() <= Duration::from_secs(50));
    // The schedule was re-fitted: the last step's rate is close to 0.
    assert!(*lrs.last().unwrap() < 0.01 * 0.01, "{lrs:?}");
}

/// The other way: a plan made from slow first steps (here 100 steps for a 300 s deadline at 1 s
/// a step on the simulated clock) is lengthened to what fits, at most to `max_steps`, and still
/// ends before the deadline with its schedule annealed.
#[test]
fn a_plan_that_runs_faster_than_planned_is_lengthened_within_its_cap() {
    use onnx_prune::budget::{Clock, Deadline, SimClock};
    use std::sync::Arc;
    use std::time::Duration;
    let device = Device::flex().autodiff();
    let train = blobs(256, 1);
    for (cap, want) in [(1000, 30 + 256), (150, 150)] {
        let mut net = Net::new(&small_net(3), &device).unwrap();
        let o = TrainOptions {
            lr: 0.01,
            batch: 32,
            steps: 100,
            augment: false,
            ..Default::default()
        };
        let clock = Arc::new(SimClock::new(Duration::ZERO));
        let mut tr = Trainer::new(&net, o);
        tr.deadline = Some(Deadline::at(clock.clone(), Duration::from_secs(300)));
        tr.max_steps = Some(cap);
        let stop = AtomicBool::new(false);
        let mut lrs = vec![];
        let rep = tr
            .run(
                &mut net,
                None,
                &train,
                &stop,
                &mut |s| {
                    lrs.push(s.lr);
                    clock.advance(Duration::from_secs(1));
                },
                &mut |_, _| Ok(()),
            )
            .unwrap();
        // At step 30 (30 s), 270 s are left: 256 more steps fit (5% slack), capped by `cap`.
        assert_eq!(rep.replanned_from, Some(100), "{rep:?}");
        assert_eq!(tr.o.steps, want);
        assert_eq!(rep.steps_done, want);
        assert!(!rep.deadline_hit, "{rep:?}");
        assert!(clock.now() <= Duration::from_secs(300));
        assert!(*lrs.last().unwrap() < 0.01 * 0.01, "{lrs:?}");
    }
}

/// A deadline passed mid-run (the clock jumps) stops training between steps; the network is
/// intact and writes back to a valid model.
#[test]
fn a_passed_deadline_stops_training_between_steps() {
    use onnx_prune::budget::{Deadline, SimClock};
    use std::sync::Arc;
    use std::time::Duration;
    let device = Device::flex().autodiff();
    let mut net = Net::new(&small_net(3), &device).unwrap();
    let train = blobs(256, 1);
    let o = TrainOptions {
        batch: 32,
        steps: 40,
        augment: false,
        ..Default::default()
    };
    let clock = Arc::new(SimClock::new(Duration::ZERO));
    let mut tr = Trainer::new(&net, o);
    tr.deadline = Some(Deadline::at(clock.clone(), Duration::from_secs(1000)));
    let stop = AtomicBool::new(false);
    let rep = tr
        .run(
            &mut net,
            None,
            &train,
            &stop,
            &mut |s| {
                if s.step == 7 {
                    clock.advance(Duration::from_secs(2000));
                }
            },
            &mut |_, _| Ok(()),
        )
        .unwrap();
    assert!(rep.deadline_hit && !rep.interrupted, "{rep:?}");
    assert_eq!(rep.steps_done, 7);
    let m = net.write_back();
    let again = Net::new(&m, &device.clone().inner()).unwrap();
    assert!(accuracy(&again, &blobs(64, 9)).is_finite());
}

/// Timing a step for the plan changes nothing: the weights and running statistics after
/// `time_step` are those before, and training after it is the same as without it.
#[test]
fn timing_a_step_leaves_the_network_unchanged() {
    let device = Device::flex().autodiff();
    let train = blobs(256, 1);
    let o = TrainOptions {
        batch: 32,
        steps: 6,
        augment: false,
        ..Default::default()
    };
    let run = |timed: bool| {
        let mut net = Net::new(&small_net(3), &device).unwrap();
        let mut tr = Trainer::new(&net, o.clone());
        if timed {
            tr.time_step(&net, None, &train, 2).unwrap();
        }
        let stop = AtomicBool::new(false);
        tr.run(&mut net, None, &train, &stop, &mut |_| {}, &mut |_, _| {
            Ok(())
        })
        .unwrap();
        let p: Vec<Vec<f32>> = (0..net.params().len())
            .map(|i| net.param(i).to_vec())
            .collect();
        let b: Vec<Vec<f32>> = (0..net.buffers().len())
            .map(|i| net.buffer(i).to_vec())
            .collect();
        (p, b)
    };
    assert!(run(true) == run(false));
}
