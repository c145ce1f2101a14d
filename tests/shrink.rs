//! `shrink` removes exactly the channels that provably contribute nothing; outputs unchanged.

mod common;
use onnx_prune::analysis::{self, ShapeMode};
use onnx_prune::onnx::builder::{attr_i, ModelBuilder};
use onnx_prune::onnx::{self, proto as pb};
use prost::Message;
use std::collections::HashMap;

/// Zeroes output channels `chans` of the weight (and bias) named `w`/`b`.
fn zero_filters(m: &mut pb::ModelProto, w: &str, b: Option<&str>, chans: &[usize]) {
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let name = t.name.clone().unwrap();
        if name == w || Some(name.as_str()) == b {
            let per = (t.dims[1..].iter().product::<i64>()) as usize;
            let mut raw = t.raw_data.clone().unwrap().to_vec();
            for &c in chans {
                for k in 0..per {
                    raw[(c * per + k) * 4..(c * per + k + 1) * 4]
                        .copy_from_slice(&0f32.to_le_bytes());
                }
            }
            t.raw_data = Some(raw.into());
        }
    }
}

/// Runs `shrink`; returns (MACs before, MACs after); asserts outputs are unchanged.
fn shrink(name: &str, m: &pb::ModelProto) -> (u64, u64) {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (
        d.path().join(format!("{name}.onnx")),
        d.path().join("s.onnx"),
    );
    std::fs::write(&a, m.encode_to_vec()).unwrap();
    let st = common::bin()
        .arg("shrink")
        .arg(&a)
        .arg("-o")
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let t = common::tract_diff(&a, &b, &[], None);
    assert!(t <= 1e-6, "{name}: outputs changed by {t:e}");
    if common::python_ok() {
        let (o, checker) = common::ort_compare(&a, &b, &[]);
        assert!(o <= 1e-6, "{name}: onnxruntime diff {o:e}");
        assert_eq!(checker, "ok");
    }
    let macs = |p: &std::path::Path| {
        let m = onnx::load(p).unwrap();
        let an = analysis::infer(&m, ShapeMode::Bound, &HashMap::new()).unwrap();
        analysis::cost(&m, &an).unwrap().macs
    };
    (macs(&a), macs(&b))
}

/// conv(3→8) → relu → conv(8→8) → `act` → conv(8→6) → head. Returns the model and the names
/// of the second conv's weight and bias.
fn chain(act: &str) -> (pb::ModelProto, String, String) {
    let mut b = ModelBuilder::new(17, 21);
    let x = b.input("x", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let c2 = b.conv(&r1, 8, 8, 3, 1, 1);
    let (w2, b2) = {
        let n = b.graph.node.last().unwrap();
        (n.input[1].clone(), n.input[2].clone())
    };
    let a2 = b.op(act, &[&c2], vec![]);
    let c3 = b.conv(&a2, 8, 6, 3, 1, 1);
    let gap = b.op("GlobalAveragePool", &[&c3], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[4, 6], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[1, 4]);
    (b.build(), w2, b2)
}

#[test]
fn zero_filters_through_relu_are_removed() {
    let (mut m, w, b) = chain("Relu");
    zero_filters(&mut m, &w, Some(&b), &[1, 5, 6]);
    let (before, after) = shrink("chain_relu", &m);
    // conv2 loses 3 of 8 outputs and conv3 3 of 8 inputs.
    let conv2 = 8 * 8 * 64 * 9;
    let conv3 = 6 * 8 * 64 * 9;
    assert_eq!(before - after, (conv2 + conv3) * 3 / 8);
}

/// PRelu after a dead filter (issue #23 item 4): PRelu(0) = 0 for any slope, so the filter and
/// the next conv's input channel go, and the per-channel slope is cut with them.
#[test]
fn zero_filters_through_prelu_are_removed() {
    let mut b = ModelBuilder::new(17, 22);
    let x = b.input("x", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let (w1, b1) = {
        let n = b.graph.node.last().unwrap();
        (n.input[1].clone(), n.input[2].clone())
    };
    let slope = b.weight("slope", &[8, 1, 1], 0.5);
    let a1 = b.op("PRelu", &[&c1, &slope], vec![]);
    let c2 = b.conv(&a1, 8, 6, 3, 1, 1);
    let gap = b.op("GlobalAveragePool", &[&c2], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[4, 6], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[1, 4]);
    let mut m = b.build();
    zero_filters(&mut m, &w1, Some(&b1), &[0, 4]);
    let (before, after) = shrink("prelu", &m);
    let conv1 = 8 * 3 * 64 * 9;
    let conv2 = 6 * 8 * 64 * 9;
    assert_eq!(before - after, (conv1 + conv2) * 2 / 8);
}

#[test]
fn nothing_dead_nothing_removed() {
    let (m, _, _) = chain("Relu");
    let (before, after) = shrink("no_dead", &m);
    assert_eq!(before, after);
    // Sigmoid(0) = 0.5: zero filters before a Sigmoid are not dead.
    let (mut m, w, b) = chain("Sigmoid");
    zero_filters(&mut m, &w, Some(&b), &[2]);
    let (before, after) = shrink("sigmoid", &m);
    assert_eq!(before, after);
}

#[test]
fn batchnorm_with_zero_gamma_and_beta() {
    let mut b = ModelBuilder::new(17, 5);
    let x = b.input("x", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let n1 = b.bn(&c1, 8);
    let (gname, bname) = {
        let n = b.graph.node.last().unwrap();
        (n.input[1].clone(), n.input[2].clone())
    };
    let r1 = b.op("Relu", &[&n1], vec![]);
    let c2 = b.conv(&r1, 8, 4, 3, 1, 1);
    b.op("GlobalAveragePool", &[&c2], vec![]);
    b.rename_last_output("y");
    b.output("y", &[1, 4, 1, 1]);
    let mut m = b.build();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        if t.name.as_deref() == Some(&gname) || t.name.as_deref() == Some(&bname) {
            let mut raw = t.raw_data.clone().unwrap().to_vec();
            for c in [0usize, 3] {
                raw[c * 4..c * 4 + 4].copy_from_slice(&0f32.to_le_bytes());
            }
            t.raw_data = Some(raw.into());
        }
    }
    let (before, after) = shrink("bn_zero", &m);
    assert_eq!(before - after, (8 * 64 * 27 + 4 * 8 * 64 * 9) * 2 / 8);
}

#[test]
fn residual_group_zero_in_every_producer() {
    // y = relu(conv_b(relu(conv_a(x))) + conv_s(x)): channel 2 of the residual stream is zero in
    // both producers (conv_b and conv_s), so it is dead; a channel zero in only one is not.
    let mut b = ModelBuilder::new(17, 9);
    let x = b.input("x", &[1, 3, 8, 8]);
    let a = b.conv(&x, 3, 8, 3, 1, 1);
    let ar = b.op("Relu", &[&a], vec![]);
    let cb = b.conv(&ar, 8, 8, 3, 1, 1);
    let (wb, bb) = {
        let n = b.graph.node.last().unwrap();
        (n.input[1].clone(), n.input[2].clone())
    };
    let cs = b.conv(&x, 3, 8, 1, 1, 1);
    let (ws, bs) = {
        let n = b.graph.node.last().unwrap();
        (n.input[1].clone(), n.input[2].clone())
    };
    let add = b.op("Add", &[&cb, &cs], vec![]);
    let r = b.op("Relu", &[&add], vec![]);
    let c = b.conv(&r, 8, 4, 3, 1, 1);
    b.op("GlobalAveragePool", &[&c], vec![]);
    b.rename_last_output("y");
    b.output("y", &[1, 4, 1, 1]);
    let mut m = b.build();
    zero_filters(&mut m, &wb, Some(&bb), &[2, 5]);
    zero_filters(&mut m, &ws, Some(&bs), &[2]);
    let (before, after) = shrink("residual", &m);
    let per_channel = 8 * 64 * 9 + 3 * 64 + 4 * 64 * 9; // conv_b out, conv_s out, final conv in
    assert_eq!(before - after, per_channel as u64);
}

#[test]
fn shrink_on_real_models_keeps_outputs() {
    // Real models have no dead channels: shrink must compute the same thing.
    let Some(shared) = common::shared() else {
        return;
    };
    for m in [
        "models/cifar10/resnet20.onnx",
        "models/zoo/mobilenet_v3_small_bn.onnx",
    ] {
        let p = shared.join(m);
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("s.onnx");
        let st = common::bin()
            .arg("shrink")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert!(common::tract_diff(&p, &out, &[], None) <= 1e-5);
    }
    let _ = onnx::load(&shared.join("models/cifar10/resnet20.onnx")).unwrap();
}
