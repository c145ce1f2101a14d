//! The IR as a burn network: its forward pass matches onnxruntime (tract where onnxruntime is
//! missing) on every model in `../shared/models`, writing trained weights back is exact, and
//! gradients of conv/BN/pool match finite differences. The forward parity is here; training
//! (learning, determinism, write-back, gradients) is in `training.rs`, the fine-tuning
//! commands, checkpoints and deadlines in `finetune.rs`, feature distillation in
//! `features.rs`.

#[path = "../common/mod.rs"]
mod common;
mod features;
mod finetune;
mod training;

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
    use onnx_prune::onnx::builder::{attr_f, attr_i, attr_ints, ModelBuilder};
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
