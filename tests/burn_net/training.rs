//! Training the IR's burn network: a small net learns a synthetic task, runs are deterministic,
//! trained weights write back exactly, and gradients match finite differences.

use super::outputs;
use burn::prelude::*;
use onnx_prune::data::Dataset;
use onnx_prune::eval::{self, runtime, HostTensor};
use onnx_prune::ir::Model;
use onnx_prune::learn::train::{Optim, TrainOptions, Trainer};
use onnx_prune::net::{Dt, Net};
use onnx_prune::onnx::builder::{attr_i, attr_ints, ModelBuilder};
use std::sync::atomic::AtomicBool;

pub(super) fn decode(m: onnx_prune::onnx::proto::ModelProto) -> Model {
    use prost::Message;
    onnx_prune::onnx::decode_model(m.encode_to_vec().into(), None).unwrap()
}

/// Conv(1→6) → BN → Relu → MaxPool 2 → Conv(6→6, depthwise) → GlobalAveragePool → Flatten →
/// Gemm(6→2), input `[N,1,8,8]`.
pub(super) fn small_net(seed: u64) -> Model {
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
pub(super) fn blobs(n: usize, seed: u64) -> Dataset {
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

pub(super) fn accuracy(net: &Net, d: &Dataset) -> f64 {
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
