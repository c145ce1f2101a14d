//! The IR as a burn network: its forward pass matches onnxruntime (tract where onnxruntime is
//! missing) on every model in `../shared/models`, writing trained weights back is exact, and
//! gradients of conv/BN/pool match finite differences.

mod common;

use onnx_prune::eval::{self, runtime, HostTensor};
use std::path::Path;

fn outputs(
    kind: runtime::Kind,
    path: &Path,
    x: &[f32],
    n: usize,
    chw: (usize, usize, usize),
    batch: usize,
) -> Vec<HostTensor> {
    let mut rt = runtime::open(kind, path, batch, chw, runtime::all_threads()).unwrap();
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
    all
}

#[test]
fn burn_forward_matches_reference_runtime_on_shared_models() {
    let Some(shared) = common::shared() else {
        return;
    };
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{line}");
    let mut files: Vec<_> = ["cifar10", "zoo"]
        .iter()
        .flat_map(|d| std::fs::read_dir(shared.join("models").join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "{files:?}");
    let mut worst = 0f64;
    for path in &files {
        let model = onnx_prune::onnx::load(path).unwrap();
        let shapes = eval::input_shapes(&model, &Default::default()).unwrap();
        let s = &shapes[0];
        let fixed = eval::fixed_batch(&model);
        let (n, batch) = match fixed {
            Some(b) => (2 * b, b),
            None => (3, 3),
        };
        let chw = (s[1], s[2], s[3]);
        let x = eval::random_inputs(&[vec![n, s[1], s[2], s[3]]], 7)[0]
            .data
            .clone();
        let want = outputs(kind, path, &x, n, chw, batch);
        let got = outputs(runtime::Kind::Burn, path, &x, n, chw, batch);
        worst = worst.max(check(path, &want, &got, 1e-4));
    }
    println!("worst max rel over {} models: {worst:.2e}", files.len());
}

/// Asserts that burn's outputs are within `tol` of the reference's, relative to the reference
/// output's own spread ([`eval::Diff::max_scaled`]: random-weight models can have tiny outputs);
/// returns that difference.
fn check(path: &Path, want: &[HostTensor], got: &[HostTensor], tol: f64) -> f64 {
    let d = eval::compare(want, got).unwrap();
    println!(
        "{}: max abs {:.2e}, max rel {:.2e}, relative to the output's spread {:.2e}",
        path.file_name().unwrap().to_string_lossy(),
        d.max_abs,
        d.max_rel,
        d.max_scaled
    );
    assert!(
        d.max_scaled <= tol,
        "{}: {:e} of the output's spread",
        path.display(),
        d.max_scaled
    );
    d.max_scaled
}

/// PP-OCR models from a registry package: Resize, ConvTranspose, MatMul attention, Softmax,
/// Pow/ReduceMean layer norms, HardSigmoid/Clip — ops the shared models do not have.
#[test]
fn burn_forward_matches_reference_runtime_on_registry_models() {
    let Some(dir) = common::extra_models() else {
        return;
    };
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{line}");
    for (file, chw) in [
        ("ch_PP-OCRv4_det_infer.onnx", (3, 64, 96)),
        ("ch_PP-OCRv4_rec_infer.onnx", (3, 48, 160)),
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (3, 48, 192)),
    ] {
        let path = dir.join(file);
        if !path.exists() {
            common::skip(&format!("{} is absent", path.display()));
            continue;
        }
        let n = 2;
        let shape = [n, chw.0, chw.1, chw.2];
        // The detector on text-like input (on noise its map saturates near 0: see models.tsv).
        let x = if file.contains("_det_") {
            common::text_like(&shape, 5)
        } else {
            eval::random_inputs(&[shape.to_vec()], 5)[0].data.clone()
        };
        let want = outputs(kind, &path, &x, n, chw, n);
        let got = outputs(runtime::Kind::Burn, &path, &x, n, chw, n);
        check(&path, &want, &got, 1e-4);
    }
}

/// InstanceNormalization (directly on [N, C, H, W], and inside torch's opset-17 GroupNorm
/// export on [N, G, K]), GroupNormalization (opset 18 per-group and opset 21 per-channel
/// affine) and LayerNormalization (over channels after a transpose, and over the last spatial
/// axis): burn's forward matches the reference runtime.
#[test]
fn normalisation_forwards_match_reference_runtime() {
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{line}");
    let d = tempfile::tempdir().unwrap();
    let mut plain = onnx_prune::onnx::builder::ModelBuilder::new(17, 21);
    let x = plain.input("x", &[2, 3, 6, 6]);
    let c = plain.conv(&x, 3, 5, 3, 1, 1);
    let s = plain.weight("in_s", &[5], 1.0);
    let bias = plain.weight("in_b", &[5], 0.5);
    plain.op(
        "InstanceNormalization",
        &[&c, &s, &bias],
        vec![onnx_prune::onnx::builder::attr_f("epsilon", 1e-3)],
    );
    plain.rename_last_output("y");
    plain.output("y", &[2, 5, 6, 6]);
    let mut models = vec![
        ("in_plain", plain.build(), (3, 6, 6)),
        (
            "gn_opset17",
            onnx_prune::onnx::builder::group_norm_opset17(false, 22).0,
            (3, 8, 8),
        ),
    ];
    use onnx_prune::onnx::builder::{attr_f, attr_i, attr_ints};
    for (name, opset) in [("gn_opset18", 18i64), ("gn_opset21", 21)] {
        let mut b = ModelBuilder::new(opset, 23);
        let x = b.input("x", &[2, 3, 6, 6]);
        let c = b.conv(&x, 3, 8, 3, 1, 1);
        let np = if opset >= 21 { 8 } else { 4 };
        let s = b.weight("gn_s", &[np], 1.0);
        let bias = b.weight("gn_b", &[np], 0.5);
        b.op(
            "GroupNormalization",
            &[&c, &s, &bias],
            vec![attr_i("num_groups", 4), attr_f("epsilon", 1e-4)],
        );
        b.rename_last_output("y");
        b.output("y", &[2, 8, 6, 6]);
        models.push((name, b.build(), (3, 6, 6)));
    }
    for (name, over_channels) in [("ln_channels", true), ("ln_space", false)] {
        let mut b = ModelBuilder::new(17, 24);
        let x = b.input("x", &[2, 3, 6, 6]);
        let c = b.conv(&x, 3, 8, 3, 1, 1);
        let (inp, w, out) = if over_channels {
            let t = b.op("Transpose", &[&c], vec![attr_ints("perm", &[0, 2, 3, 1])]);
            (t, 8, vec![2, 6, 6, 8])
        } else {
            (c, 6, vec![2, 8, 6, 6])
        };
        let s = b.weight("ln_s", &[w], 1.0);
        let bias = b.weight("ln_b", &[w], 0.5);
        b.op(
            "LayerNormalization",
            &[&inp, &s, &bias],
            vec![attr_i("axis", -1), attr_f("epsilon", 1e-5)],
        );
        b.rename_last_output("y");
        b.output("y", &out);
        models.push((name, b.build(), (3, 6, 6)));
    }
    for (name, m, chw) in models {
        let path = d.path().join(format!("{name}.onnx"));
        std::fs::write(&path, prost::Message::encode_to_vec(&m)).unwrap();
        let n = if name == "gn_opset17" { 1 } else { 2 };
        let x = eval::random_inputs(&[vec![n, chw.0, chw.1, chw.2]], 9)[0]
            .data
            .clone();
        let want = outputs(kind, &path, &x, n, chw, n);
        let got = outputs(runtime::Kind::Burn, &path, &x, n, chw, n);
        check(&path, &want, &got, 1e-4);
    }
}

use burn::prelude::*;
use onnx_prune::data::Dataset;
use onnx_prune::ir::Model;
use onnx_prune::learn::train::{Optim, TrainOptions, Trainer};
use onnx_prune::net::{Dt, Net};
use onnx_prune::onnx::builder::{attr_i, attr_ints, ModelBuilder};
use std::sync::atomic::AtomicBool;

fn decode(m: onnx_prune::onnx::proto::ModelProto) -> Model {
    use prost::Message;
    onnx_prune::onnx::decode_model(m.encode_to_vec().into(), None).unwrap()
}

/// Conv(1→6) → BN → Relu → MaxPool 2 → Conv(6→6, depthwise) → GlobalAveragePool → Flatten →
/// Gemm(6→2), input `[N,1,8,8]`.
fn small_net(seed: u64) -> Model {
    let mut b = ModelBuilder::new(17, seed);
    let x = b.input("x", &[-1, 1, 8, 8]);
    let c = b.conv(&x, 1, 6, 3, 1, 1);
    let n = b.bn(&c, 6);
    let r = b.op("Relu", &[&n], vec![]);
    let p = b.op(
        "MaxPool",
        &[&r],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    let d = b.conv(&p, 6, 6, 3, 1, 6);
    let g = b.op("GlobalAveragePool", &[&d], vec![]);
    let f = b.op("Flatten", &[&g], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[2, 6], 0.4);
    let bias = b.weight("fcb", &[2], 0.1);
    b.op("Gemm", &[&f, &w, &bias], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[-1, 2]);
    decode(b.build())
}

/// Two classes: the bright blob is in the left (0) or right (1) half, plus noise.
fn blobs(n: usize, seed: u64) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = vec![0f32; n * 64];
    let mut y = vec![0i64; n];
    for i in 0..n {
        let c = rng.random_range(0..2usize);
        y[i] = c as i64;
        let cx = if c == 0 {
            rng.random_range(0..3)
        } else {
            rng.random_range(5..8)
        };
        let cy = rng.random_range(0..8);
        for p in 0..64 {
            let (py, px) = (p / 8, p % 8);
            let d2 = (px as f32 - cx as f32).powi(2) + (py as f32 - cy as f32).powi(2);
            x[i * 64 + p] = (-d2 / 2.0).exp() + rng.random_range(-0.3..0.3);
        }
    }
    Dataset {
        n,
        c: 1,
        h: 8,
        w: 8,
        x,
        y: Some(y),
        classes: None,
    }
}

fn accuracy(net: &Net, d: &Dataset) -> f64 {
    let out = net
        .infer(Dt::from_vec(
            d.x.clone(),
            &[d.n, 1, 8, 8],
            &net.device().clone(),
        ))
        .unwrap();
    let v = out[0].to_vec();
    let y = d.y.as_ref().unwrap();
    (0..d.n)
        .filter(|&i| (v[2 * i + 1] > v[2 * i]) as i64 == y[i])
        .count() as f64
        / d.n as f64
}

fn train_small(seed: u64, steps: usize) -> (Net, onnx_prune::learn::train::TrainReport, f64, f64) {
    let device = Device::flex().autodiff();
    let mut net = Net::new(&small_net(3), &device).unwrap();
    let train = blobs(512, seed);
    let test = blobs(256, seed + 100);
    let before = accuracy(&net, &test);
    let o = TrainOptions {
        optim: Optim::parse("adam").unwrap(),
        lr: 0.02,
        warmup: 5,
        weight_decay: 0.0,
        batch: 32,
        steps,
        augment: false,
        seed,
        ..Default::default()
    };
    let mut tr = Trainer::new(&net, o);
    let stop = AtomicBool::new(false);
    let rep = tr
        .run(&mut net, None, &train, &stop, &mut |_| {}, &mut |_, _| {
            Ok(())
        })
        .unwrap();
    let after = accuracy(&net, &test);
    (net, rep, before, after)
}

/// A small conv net learns a synthetic task (loss falls, held-out accuracy rises).
#[test]
fn small_net_learns_synthetic_task() {
    let (net, rep, before, after) = train_small(1, 120);
    println!(
        "params {}, loss {:.3} -> {:.3}, held-out accuracy {before:.3} -> {after:.3}",
        net.param_count(),
        rep.loss_first,
        rep.loss_last
    );
    assert!(rep.loss_last < 0.5 * rep.loss_first, "{rep:?}");
    assert!(after >= 0.9 && after > before + 0.2, "{before} -> {after}");
}

/// Same seed, same weights (CPU).
#[test]
fn training_is_deterministic() {
    let (a, ..) = train_small(2, 15);
    let (b, ..) = train_small(2, 15);
    for i in 0..a.params().len() {
        assert_eq!(
            a.param(i).to_vec(),
            b.param(i).to_vec(),
            "{}",
            a.params()[i].name
        );
    }
}

/// Trained weights written into the IR and saved as ONNX: burn on the reloaded model gives the
/// same outputs bit for bit, and onnxruntime (tract without it) reproduces them.
#[test]
fn write_back_round_trip_is_exact() {
    let (net, ..) = train_small(4, 30);
    let model = net.write_back();
    let tmp = eval::TempDir::new("wb").unwrap();
    let path = tmp.save(&model, "trained.onnx").unwrap();
    let reloaded = onnx_prune::onnx::load(&path).unwrap();
    let inner = Device::flex();
    let again = Net::new(&reloaded, &inner).unwrap();
    for i in 0..net.params().len() {
        assert_eq!(net.param(i).to_vec(), again.param(i).to_vec());
    }
    for i in 0..net.buffers().len() {
        assert_eq!(net.buffer(i).to_vec(), again.buffer(i).to_vec());
    }
    let d = blobs(16, 9);
    let a = net
        .infer(Dt::from_vec(
            d.x.clone(),
            &[16, 1, 8, 8],
            &net.device().clone(),
        ))
        .unwrap();
    let b = again
        .infer(Dt::from_vec(d.x.clone(), &[16, 1, 8, 8], &inner))
        .unwrap();
    assert_eq!(a[0].to_vec(), b[0].to_vec());
    let (kind, line) = runtime::choose("auto").unwrap();
    println!("{line}");
    let want = outputs(kind, &path, &d.x, 16, (1, 8, 8), 16);
    let got = vec![HostTensor {
        shape: vec![16, 2],
        data: a[0].to_vec(),
    }];
    let diff = eval::compare(&want, &got).unwrap();
    println!("trained weights in ONNX vs burn: {diff:?}");
    assert!(diff.max_rel <= 1e-5, "{diff:?}");
    // The BN running statistics were trained too (training mode updates them).
    let orig = Net::new(&small_net(3), &inner).unwrap();
    assert_ne!(orig.buffer(0).to_vec(), again.buffer(0).to_vec());
}

/// Gradients of conv (strided, padded), BatchNorm (training mode), max and average pooling
/// against central finite differences of the forward pass.
#[test]
fn gradients_match_finite_differences() {
    let mut b = ModelBuilder::new(17, 11);
    let x = b.input("x", &[2, 2, 6, 6]);
    let c = b.conv(&x, 2, 3, 3, 1, 1);
    let n = b.bn(&c, 3);
    let m = b.op(
        "MaxPool",
        &[&n],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    let c2 = b.conv(&m, 3, 2, 3, 2, 1);
    b.op(
        "AveragePool",
        &[&c2],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("pads", &[0, 0, 1, 1]),
        ],
    );
    b.rename_last_output("y");
    b.output("y", &[2, 2, 1, 1]);
    let checked = finite_differences(&decode(b.build()), [2, 2, 6, 6], &[2, 2, 1, 1]);
    assert!(checked >= 20);
}

/// A strided Slice (steps 2 and 3, as the CIFAR ResNets' option-A shortcuts take every other
/// pixel) passes the right gradient back: the weights of the convolution before it.
#[test]
fn strided_slice_gradients_match_finite_differences() {
    let mut b = ModelBuilder::new(17, 12);
    let x = b.input("x", &[2, 2, 7, 7]);
    let c = b.conv(&x, 2, 3, 3, 1, 1);
    let starts = b.const_i64(&[2], &[1, 0]);
    let ends = b.const_i64(&[2], &[7, 7]);
    let axes = b.const_i64(&[2], &[2, 3]);
    let steps = b.const_i64(&[2], &[2, 3]);
    b.op("Slice", &[&c, &starts, &ends, &axes, &steps], vec![]);
    b.rename_last_output("y");
    b.output("y", &[2, 3, 3, 3]);
    let checked = finite_differences(&decode(b.build()), [2, 2, 7, 7], &[2, 3, 3, 3]);
    assert!(checked >= 8);
}

/// Conv → Relu and Add → Relu run fused (the producer applies the ReLU): the loss and every
/// gradient equal those of the same network where the fusion cannot happen (the producers'
/// outputs are also graph outputs, so the Relu runs alone).
#[test]
fn fused_relus_give_the_unfused_gradients() {
    let build = |expose: bool| {
        let mut b = ModelBuilder::new(17, 21);
        let x = b.input("x", &[2, 3, 8, 8]);
        let c1 = b.conv(&x, 3, 4, 3, 1, 1);
        let r1 = b.op("Relu", &[&c1], vec![]);
        let c2 = b.conv(&r1, 4, 4, 3, 1, 1);
        let s = b.op("Add", &[&c2, &r1], vec![]);
        b.op("Relu", &[&s], vec![]);
        b.rename_last_output("y");
        b.output("y", &[2, 4, 8, 8]);
        if expose {
            b.output(&c1, &[2, 4, 8, 8]);
            b.output(&s, &[2, 4, 8, 8]);
        }
        decode(b.build())
    };
    let device = Device::flex().autodiff();
    let xv: Vec<f32> = (0..2 * 3 * 64)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let r: Vec<f32> = (0..2 * 4 * 64)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let run = |model: &Model| {
        let mut net = Net::new(model, &device).unwrap();
        let y = net
            .forward(Dt::from_vec(xv.clone(), &[2, 3, 8, 8], &device), true)
            .unwrap();
        let rt = Tensor::<6>::from_data(TensorData::new(r.clone(), [1, 1, 2, 4, 8, 8]), &device);
        let l = (y[0].t.clone() * rt).sum();
        let loss = l.clone().into_scalar::<f32>();
        let grads = l.backward();
        let g: Vec<Vec<f32>> = (0..net.params().len())
            .map(|i| {
                net.param(i)
                    .t
                    .grad(&grads)
                    .unwrap()
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .unwrap()
            })
            .collect();
        (loss, g)
    };
    let (fused, plain) = (run(&build(false)), run(&build(true)));
    assert!(
        fused.0.abs() > 1e-3,
        "a loss that tests something: {}",
        fused.0
    );
    assert!(
        (fused.0 - plain.0).abs() <= 1e-5 * plain.0.abs().max(1.0),
        "loss {} vs {}",
        fused.0,
        plain.0
    );
    assert_eq!(fused.1.len(), 4, "two convolutions' weights and biases");
    for (i, (a, b)) in fused.1.iter().zip(&plain.1).enumerate() {
        assert!(a.iter().any(|v| *v != 0.0), "parameter {i}: a gradient");
        for (u, v) in a.iter().zip(b) {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "parameter {i}: {u} vs {v}"
            );
        }
    }
}

/// Checks every parameter's gradient (a quarter of its entries) of L = Σ y·r, r random, in
/// training mode against central differences; returns how many were checked.
fn finite_differences(model: &Model, xd: [usize; 4], yd: &[usize]) -> usize {
    use rand::{Rng, SeedableRng};
    let device = Device::flex().autodiff();
    let mut net = Net::new(model, &device).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let xv: Vec<f32> = (0..xd.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let ny: usize = yd.iter().product();
    let r: Vec<f32> = (0..ny).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut r6 = [1usize; 6];
    r6[6 - yd.len()..].copy_from_slice(yd);
    // L = Σ y·r in training mode (batch statistics), in f64 from f32 outputs.
    let loss = |net: &mut Net| -> (Tensor<1>, f64) {
        let y = net
            .forward(Dt::from_vec(xv.clone(), &xd, &device), true)
            .unwrap();
        let rt = Tensor::<6>::from_data(TensorData::new(r.clone(), r6), &device);
        let l = (y[0].t.clone() * rt).sum();
        let v = l.clone().into_scalar::<f32>() as f64;
        (l, v)
    };
    let (l, _) = loss(&mut net);
    let grads = l.backward();
    let analytic: Vec<Vec<f32>> = (0..net.params().len())
        .map(|i| {
            net.param(i)
                .t
                .grad(&grads)
                .unwrap()
                .to_data()
                .convert::<f32>()
                .try_into_vec()
                .unwrap()
        })
        .collect();
    let names: Vec<String> = net.params().iter().map(|s| s.name.clone()).collect();
    println!("parameters: {names:?}");
    let eps = 1e-2f32;
    let mut checked = 0;
    let mut worst = 0f64;
    for i in 0..net.params().len() {
        let base = net.param(i).to_vec();
        let dims = net.params()[i].dims.clone();
        for k in (0..base.len()).step_by((base.len() / 4).max(1)) {
            let v = |delta: f32, net: &mut Net| {
                let mut w = base.clone();
                w[k] += delta;
                net.set_param(i, Dt::from_vec(w, &dims, &device).t);
                loss(net).1
            };
            let num = (v(eps, &mut net) - v(-eps, &mut net)) / (2.0 * eps as f64);
            net.set_param(i, Dt::from_vec(base.clone(), &dims, &device).t);
            let a = analytic[i][k] as f64;
            let err = (a - num).abs() / (a.abs().max(num.abs()).max(1e-2));
            worst = worst.max(err);
            assert!(
                err < 3e-2,
                "{} [{k}]: analytic {a}, numeric {num}",
                names[i]
            );
            checked += 1;
        }
    }
    println!("{checked} partial derivatives checked, worst relative error {worst:.2e}");
    checked
}

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
