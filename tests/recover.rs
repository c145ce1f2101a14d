//! Fast recovery (`--recover ls|bn`): exactness on a case least squares can solve exactly,
//! re-calibrated statistics equal the measured ones, and on a real model recovery beats
//! naive pruning on held-out data.

mod common;

use onnx_prune::eval::{self, runtime, runtime::Kind, HostTensor};
use onnx_prune::ir::{Model, ValueId};
use onnx_prune::onnx::builder::{attr_ints, ModelBuilder};
use onnx_prune::onnx::decode_model;
use onnx_prune::search::datafree::Pruner;
use onnx_prune::search::recover::{self, Mode, Options};
use std::collections::HashMap;

fn load(m: onnx_prune::onnx::proto::ModelProto) -> Model {
    use prost::Message;
    decode_model(m.encode_to_vec().into(), None).unwrap()
}

fn conv_w(b: &mut ModelBuilder, x: &str, w: &str, bias: &str) -> String {
    b.op(
        "Conv",
        &[x, w, bias],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    )
}

/// Keeps every channel except `drop` of the first space with `len` channels.
fn keep_all_but(p: &Pruner, len: usize, drop: &[usize]) -> Vec<bool> {
    let s = (0..p.ch.spaces.len())
        .find(|&s| p.ch.spaces[s].len == len)
        .expect("a space of that width");
    let mut keep = vec![true; p.ch.atoms.len()];
    for &i in drop {
        keep[p.ch.atom(s, i)] = false;
    }
    keep
}

fn opts(mode: Mode) -> Options {
    Options {
        mode,
        ridge: 1e-9,
        batch: 16,
        runtime: Kind::Tract,
        ..Default::default()
    }
}

fn run_outputs(m: &Model, extra: &[ValueId], x: &[f32], n: usize) -> (Vec<HostTensor>, Vec<usize>) {
    let tmp = eval::TempDir::new("test").unwrap();
    let path = tmp.0.join("m.onnx");
    let idx = recover::export_with_outputs(m, extra, &path).unwrap();
    let mut rt = runtime::open(Kind::Tract, &path, 16, (3, 8, 8), 1).unwrap();
    let mut all: Vec<HostTensor> = vec![];
    rt.for_each_batch(x, n, &mut |_, outs| {
        if all.is_empty() {
            all = outs;
        } else {
            for (a, o) in all.iter_mut().zip(outs) {
                a.shape[0] += o.shape[0];
                a.data.extend(o.data);
            }
        }
        Ok(())
    })
    .unwrap();
    (all, idx)
}

/// Per-channel population mean and variance of an [N, C, H, W] tensor.
fn moments(t: &HostTensor) -> Vec<(f64, f64)> {
    let (n, c) = (t.shape[0], t.shape[1]);
    let hw: usize = t.shape[2..].iter().product();
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| t.data[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter())
                .map(|&v| v as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            (m, v)
        })
        .collect()
}

#[test]
fn least_squares_recovers_a_duplicated_channel_exactly() {
    // conv1 makes 6 channels, channel 5 a copy of channel 0; after ReLU they are equal, so a
    // conv2 without channel 5 can compute exactly what the original did (W2[:,0] += W2[:,5]).
    let mut b = ModelBuilder::new(17, 7);
    let x = b.input("input", &[-1, 3, 8, 8]);
    let mut w1: Vec<f32> = (0..6 * 27)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 20.0)
        .collect();
    let f0: Vec<f32> = w1[..27].to_vec();
    w1[5 * 27..].copy_from_slice(&f0);
    let w1 = b.init_f32("w1", &[6, 3, 3, 3], &w1);
    let b1 = b.init_f32("b1", &[6], &[0.1, -0.2, 0.05, 0.3, -0.1, 0.1]);
    let c1 = conv_w(&mut b, &x, &w1, &b1);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let w2 = b.weight("w2", &[4, 6, 3, 3], 0.3);
    let b2 = b.weight("b2", &[4], 0.1);
    conv_w(&mut b, &r1, &w2, &b2);
    b.rename_last_output("out");
    b.output("out", &[-1, 4, 8, 8]);
    let model = load(b.build());
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let keep = keep_all_but(&p, 6, &[5]);
    let mut pruned = p.apply(&keep).unwrap();
    let n = 64;
    let x = eval::random_inputs(&[vec![n, 3, 8, 8]], 1).remove(0).data;
    let diff = |m: &Model| {
        let (a, _) = run_outputs(&p.model, &[], &x, n);
        let (b, _) = run_outputs(m, &[], &x, n);
        eval::compare(&a, &b).unwrap().max_rel
    };
    let before = diff(&pruned);
    let r = recover::recover(&p, &keep, &mut pruned, &x, n, (3, 8, 8), &opts(Mode::Ls)).unwrap();
    let after = diff(&pruned);
    assert_eq!(r.refit, 1, "{r:?}");
    assert!(before > 0.05, "pruning should change the output ({before})");
    assert!(
        after < 1e-4,
        "least squares should be exact here: {before} -> {after}"
    );
    assert!(r.fit_error_after.unwrap() < 1e-8, "{r:?}");
}

/// conv(3→8) [→ BN] → ReLU → conv(8→8) [→ BN] → ReLU → conv(8→4), first space pruned to 4.
fn two_stage(bn: bool) -> (Pruner, Vec<bool>, Model) {
    let mut b = ModelBuilder::new(17, 3);
    let x = b.input("input", &[-1, 3, 8, 8]);
    let mut h = b.conv(&x, 3, 8, 3, 1, 1);
    if bn {
        h = b.bn(&h, 8);
    }
    let h = b.op("Relu", &[&h], vec![]);
    let mut h = b.conv(&h, 8, 8, 3, 1, 1);
    if bn {
        h = b.bn(&h, 8);
    }
    let h = b.op("Relu", &[&h], vec![]);
    b.conv(&h, 8, 4, 3, 1, 1);
    b.rename_last_output("out");
    b.output("out", &[-1, 4, 8, 8]);
    let model = load(b.build());
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let keep = keep_all_but(&p, 8, &[1, 3, 4, 6]);
    let pruned = p.apply(&keep).unwrap();
    (p, keep, pruned)
}

/// The second conv's output value in a model (the node reading the first ReLU).
fn second_conv_out(m: &Model) -> ValueId {
    let convs: Vec<_> = m
        .graph
        .live_nodes()
        .filter(|(_, n)| n.op_type == "Conv")
        .map(|(_, n)| n.outputs[0].unwrap())
        .collect();
    let order = m.graph.topo_order().unwrap();
    let mut ordered: Vec<ValueId> = order
        .iter()
        .filter_map(|&id| {
            let n = m.graph.node(id);
            (n.op_type == "Conv").then(|| n.outputs[0].unwrap())
        })
        .collect();
    assert_eq!(ordered.len(), convs.len());
    ordered.remove(1)
}

#[test]
fn bn_recalibration_sets_the_measured_statistics() {
    let (p, keep, mut pruned) = two_stage(true);
    let n = 64;
    let x = eval::random_inputs(&[vec![n, 3, 8, 8]], 2).remove(0).data;
    let r = recover::recover(&p, &keep, &mut pruned, &x, n, (3, 8, 8), &opts(Mode::Bn)).unwrap();
    assert_eq!(r.bn_recalibrated, 1, "{r:?}");
    // The BN after the second conv now holds exactly the statistics of its input in the
    // pruned model on the calibration data.
    let v = second_conv_out(&pruned);
    let bn = pruned.graph.value(v).uses[0].node;
    assert_eq!(pruned.graph.node(bn).op_type, "BatchNormalization");
    let stat = |i: usize| {
        let id = pruned.graph.node(bn).inputs[i].unwrap();
        pruned.graph.foldable_const(id).unwrap().as_f32s().unwrap()
    };
    let (mean, var) = (stat(3), stat(4));
    let (outs, idx) = run_outputs(&pruned, &[v], &x, n);
    for (c, (m, vv)) in moments(&outs[idx[0]]).into_iter().enumerate() {
        assert!(
            (m - mean[c] as f64).abs() < 1e-4 * (1.0 + m.abs()),
            "mean {c}: {m} vs {}",
            mean[c]
        );
        assert!(
            (vv - var[c] as f64).abs() < 1e-3 * vv.max(1e-3),
            "var {c}: {vv} vs {}",
            var[c]
        );
    }
}

#[test]
fn folded_bn_recalibration_matches_the_original_moments() {
    let (p, keep, mut pruned) = two_stage(false);
    let n = 64;
    let x = eval::random_inputs(&[vec![n, 3, 8, 8]], 4).remove(0).data;
    let r = recover::recover(&p, &keep, &mut pruned, &x, n, (3, 8, 8), &opts(Mode::Bn)).unwrap();
    assert_eq!(r.moment_matched, 1, "{r:?}");
    let (po, pi) = run_outputs(&pruned, &[second_conv_out(&pruned)], &x, n);
    let (oo, oi) = run_outputs(&p.model, &[second_conv_out(&p.model)], &x, n);
    let before_recovery = p.apply(&keep).unwrap();
    let (bo, bi) = run_outputs(
        &before_recovery,
        &[second_conv_out(&before_recovery)],
        &x,
        n,
    );
    let (mp, mo, mb) = (
        moments(&po[pi[0]]),
        moments(&oo[oi[0]]),
        moments(&bo[bi[0]]),
    );
    let mut moved = 0.0f64;
    for c in 0..mo.len() {
        assert!(
            (mp[c].0 - mo[c].0).abs() < 1e-3 * (1.0 + mo[c].0.abs()),
            "mean {c}"
        );
        assert!(
            (mp[c].1 - mo[c].1).abs() < 1e-3 * mo[c].1.max(1e-3),
            "var {c}"
        );
        moved = moved.max((mb[c].1 - mo[c].1).abs() / mo[c].1);
    }
    assert!(
        moved > 0.05,
        "pruning should have changed the variances ({moved})"
    );
}

/// resnet20 at 50% on the lossless CIFAR-10 subset: calibration 400, validation 446 (disjoint).
#[test]
fn recovery_beats_naive_pruning_on_resnet20() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut top1 = HashMap::new();
    for mode in ["none", "bn", "ls", "ft:40"] {
        let out = dir.path().join(format!("{mode}.onnx"));
        let rep = dir.path().join(format!("{mode}.json"));
        let o = common::bin()
            .arg(shared.join("models/cifar10/resnet20.onnx"))
            .arg("-o")
            .arg(&out)
            .args([
                "--target-flops",
                "0.5",
                "--finetune-epochs",
                "0",
                "--agent",
                "none",
                "--recover",
                mode,
                "--method",
                "l1",
                "--data",
            ])
            .arg(shared.join("data/cifar10/test_846_lossless.npz"))
            .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            .args(["--calib-size", "400", "--val-size", "446", "--report"])
            .arg(&rep)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        assert!(r["macs_ratio"].as_f64().unwrap() <= 0.5);
        assert_eq!(r["val_samples"], 446);
        assert!(
            (r["top1_before"].as_f64().unwrap() - 0.92).abs() < 0.02,
            "{r}"
        );
        println!(
            "{mode}: top-1 {} agreement {}",
            r["top1_after"], r["agreement"]
        );
        top1.insert(mode, r["top1_after"].as_f64().unwrap());
        if mode == "ft:40" {
            // Least squares, then 40 fine-tune steps on the samples not held out for
            // validation (here the 400 calibration samples); the training loss falls.
            let f = &r["recover"]["finetune"];
            assert_eq!(r["recover"]["mode"], "ft:40", "{r}");
            assert_eq!(f["steps"], 40, "{r}");
            assert_eq!(f["samples"], 400, "{r}");
            assert!(r["recover"]["refit"].as_u64().unwrap() > 0, "{r}");
            assert!(
                f["loss_last"].as_f64().unwrap() < 0.9 * f["loss_first"].as_f64().unwrap(),
                "{f}"
            );
        }
        // The recovered model is a normal model: the tool itself reads it back.
        onnx_prune::onnx::load(&out).unwrap();
    }
    // Measured: none 0.10, bn 0.25, ls 0.70, ft:40 0.73 (original 0.92). On 400 training
    // images ft:40 is within a point of ls; its gains need more data (see docs/benchmarks.md).
    assert!(top1["bn"] > top1["none"] + 0.08, "{top1:?}");
    assert!(top1["ls"] > top1["none"] + 0.4, "{top1:?}");
    assert!(top1["ft:40"] > top1["none"] + 0.4, "{top1:?}");
}

/// Fine-tuning helps, on a real model and real training data: resnet20 at 50% (uniform L1,
/// least squares), then 120 steps of 64 on `train_50k_jpeg.tar` (labels; the 500 validation
/// images held out). Validation top-1 must rise by ≥ 2 points over least squares alone.
/// Measured (seed 1; the run is deterministic for a seed and step count): 0.558 -> 0.606.
#[test]
fn fine_tuning_improves_on_least_squares_on_resnet20() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("ft.onnx"), dir.path().join("ft.json"));
    let o = common::bin()
        .arg(shared.join("models/cifar10/resnet20.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--target-flops", "0.5", "--agent", "none", "--method", "l1"])
        .args(["--finetune-steps", "120", "--seed", "1", "--data"])
        .arg(shared.join("data/cifar10/train_50k_jpeg.tar"))
        .args(["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
        .args(["--calib-size", "512", "--val-size", "500", "--report"])
        .arg(&rep)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let phase = |name: &str| {
        r["time"]["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == name)
            .unwrap_or_else(|| panic!("no phase {name}: {r}"))
            .clone()
    };
    let ls = phase("recover")["after"]["top1"].as_f64().unwrap();
    let ft = phase("finetune")["after"]["top1"].as_f64().unwrap();
    println!("validation top-1: least squares {ls:.4}, + 120 fine-tune steps {ft:.4}");
    assert!(ft >= ls + 0.02, "fine-tuning did not help: {ls} -> {ft}");
    assert_eq!(
        r["top1_after"].as_f64(),
        Some(ft),
        "the shipped model is the fine-tuned one"
    );
    assert!(r["macs_ratio"].as_f64().unwrap() <= 0.5);
}

#[test]
fn recover_without_data_is_a_usage_error() {
    let o = common::bin()
        .arg(common::repo().join("models/tiny_resnet.onnx"))
        .args([
            "-o",
            "/nonexistent/x.onnx",
            "--target-flops",
            "0.5",
            "--recover",
            "ls",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--recover needs calibration data"));
}

/// The search's cached recovery (normal equations accumulated once, sliced per plan) gives
/// the same model as one-round (ThiNet) least squares on the same images, for several plans
/// served from one cache — convs and a Gemm after Flatten.
#[test]
fn cached_recovery_equals_one_round_least_squares() {
    let mut b = ModelBuilder::new(17, 11);
    let x = b.input("input", &[-1, 3, 8, 8]);
    let h = b.conv(&x, 3, 8, 3, 1, 1);
    let h = b.op("Relu", &[&h], vec![]);
    let h = b.conv(&h, 8, 8, 3, 1, 1);
    let h = b.op("Relu", &[&h], vec![]);
    let h = b.conv(&h, 8, 6, 3, 2, 1);
    let h = b.op("Relu", &[&h], vec![]);
    let h = b.op("Flatten", &[&h], vec![]);
    let w = b.weight("fc_w", &[5, 6 * 4 * 4], 0.2);
    let bias = b.weight("fc_b", &[5], 0.1);
    b.op(
        "Gemm",
        &[&h, &w, &bias],
        vec![onnx_prune::onnx::builder::attr_i("transB", 1)],
    );
    b.rename_last_output("out");
    b.output("out", &[-1, 5]);
    let model = load(b.build());
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let n = 48;
    let x = eval::random_inputs(&[vec![n, 3, 8, 8]], 5).remove(0).data;
    let o = Options {
        sequential: false,
        positions: 6,
        ..opts(Mode::Ls)
    };
    let mut cache = recover::FastCache::new();
    let plans = [
        keep_all_but(&p, 8, &[1, 3]),
        keep_all_but(&p, 6, &[0, 4]),
        {
            let mut k = keep_all_but(&p, 8, &[0, 2, 5]);
            let k2 = keep_all_but(&p, 6, &[5]);
            k.iter_mut().zip(&k2).for_each(|(a, b)| *a &= b);
            k
        },
    ];
    for keep in &plans {
        let mut a = p.apply(keep).unwrap();
        let mut c = a.clone();
        let ra = recover::recover(&p, keep, &mut a, &x, n, (3, 8, 8), &o).unwrap();
        let rc = cache
            .recover(&p, keep, &mut c, &x, n, (3, 8, 8), &o)
            .unwrap();
        assert!(ra.refit > 0, "{ra:?}");
        assert_eq!(ra.refit, rc.refit, "{ra:?} vs {rc:?}");
        assert!(rc.skipped.is_empty(), "{rc:?}");
        let (ya, _) = run_outputs(&a, &[], &x, n);
        let (yc, _) = run_outputs(&c, &[], &x, n);
        let d = eval::compare(&ya, &yc).unwrap().max_rel;
        assert!(d < 1e-5, "cached and direct recovery differ by {d}");
    }
    // The statistics of a target are gathered once (both spaces are consumed by different
    // nodes; the third plan needs no new run).
    assert!(cache.runs <= 2, "{} original-model runs", cache.runs);
}

/// `--method ls`: the greedy least-squares criterion drops first what the next layer's refit
/// does not miss — a dead channel (largest filter, so L1 keeps it) and one of two identical
/// channels — and its first choice is the channel whose real refit (the search's cached
/// recovery of the plan without it) loses least.
#[test]
fn least_squares_criterion_drops_dead_and_duplicate_channels_first() {
    let mut b = ModelBuilder::new(17, 7);
    let x = b.input("input", &[-1, 3, 8, 8]);
    let mut w1: Vec<f32> = (0..6 * 27)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 20.0)
        .collect();
    let f0: Vec<f32> = w1[..27].to_vec();
    w1[5 * 27..].copy_from_slice(&f0);
    // Channel 3: the largest filter, never positive after its bias (dead after ReLU).
    for v in &mut w1[3 * 27..4 * 27] {
        *v = v.abs() * 3.0;
    }
    let w1 = b.init_f32("w1", &[6, 3, 3, 3], &w1);
    let b1 = b.init_f32("b1", &[6], &[0.1, -0.2, 0.05, -1e4, -0.1, 0.1]);
    let c1 = conv_w(&mut b, &x, &w1, &b1);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let w2 = b.weight("w2", &[4, 6, 3, 3], 0.3);
    let b2 = b.weight("b2", &[4], 0.1);
    conv_w(&mut b, &r1, &w2, &b2);
    b.rename_last_output("out");
    b.output("out", &[-1, 4, 8, 8]);
    let model = load(b.build());
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    let n = 48;
    let x = eval::random_inputs(&[vec![n, 3, 8, 8]], 3).remove(0).data;
    let o = Options {
        sequential: false,
        ..opts(Mode::Ls)
    };
    let l1 = p.importance(onnx_prune::search::datafree::Method::L1, 0);
    let mut cache = recover::FastCache::new();
    let (ls, fell_back) = cache.ls_importance(&p, &x, n, (3, 8, 8), &o, &l1).unwrap();
    assert_eq!(fell_back, 0);
    let s = (0..p.ch.spaces.len())
        .find(|&s| p.ch.spaces[s].len == 6)
        .unwrap();
    let atom = |c: usize| p.ch.atom(s, c);
    let rank = |imp: &[f64], c: usize| (0..6).filter(|&d| imp[atom(d)] > imp[atom(c)]).count();
    assert_eq!(rank(&l1, 3), 0, "L1 ranks the dead channel first: {l1:?}");
    // Removed first and second (importance 1 and 2): the dead channel and a duplicate.
    let first_two: Vec<usize> = (0..6).filter(|&c| rank(&ls, c) >= 4).collect();
    assert!(first_two.contains(&3), "{ls:?}");
    assert!(first_two.contains(&0) || first_two.contains(&5), "{ls:?}");
    // Without the special channels the greedy step is the exact refit cost: the first
    // removal among the ordinary channels 1, 2, 4 is the one the cached recovery loses
    // least on.
    let errs: Vec<(f64, usize)> = [1, 2, 4]
        .iter()
        .map(|&c| {
            let keep = keep_all_but(&p, 6, &[c]);
            let mut m = p.apply(&keep).unwrap();
            let r = cache
                .recover(&p, &keep, &mut m, &x, n, (3, 8, 8), &o)
                .unwrap();
            (r.fit_error_after.unwrap(), c)
        })
        .collect();
    let best = errs
        .iter()
        .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
        .unwrap()
        .1;
    let ls_first = *[1, 2, 4]
        .iter()
        .min_by(|&&a, &&b| ls[atom(a)].partial_cmp(&ls[atom(b)]).unwrap())
        .unwrap();
    assert_eq!(ls_first, best, "refit errors {errs:?}, ls {ls:?}");
}

#[test]
fn least_squares_criterion_needs_data_and_uniform_allocation() {
    let model = common::repo().join("models/tiny_resnet.onnx");
    for (extra, msg) in [
        (&[][..], "--method ls ranks channels on calibration images"),
        (
            &["--data", "/nonexistent", "--allocation", "global"][..],
            "use --allocation uniform",
        ),
    ] {
        let o = common::bin()
            .arg(&model)
            .args(["-o", "/tmp/never-written.onnx", "--target-flops", "0.5"])
            .args(["--method", "ls"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(msg),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
