//! Pass-level behaviour on small built graphs, each checked by running both models in tract.

mod common;
use onnx_prune::ir::ValueDef;
use onnx_prune::onnx::builder::{attr_i, ModelBuilder};
use onnx_prune::onnx::{self, proto as pb, SaveOptions};
use onnx_prune::rewrite::{self, PassOptions};
use prost::Message;
use std::path::Path;

fn save_pb(m: &pb::ModelProto, p: &Path) {
    std::fs::write(p, m.encode_to_vec()).unwrap();
}

/// Simplifies `m` (written to `a`) into `b`; returns the simplified IR.
fn simplify_to(m: &pb::ModelProto, a: &Path, b: &Path, fold_bn: bool) -> onnx_prune::ir::Model {
    save_pb(m, a);
    let mut ir = onnx::load(a).unwrap();
    rewrite::simplify(&mut ir, &PassOptions { fold_bn }).unwrap();
    ir.graph.check().unwrap();
    onnx::save(&ir, b, &SaveOptions::default(), &[]).unwrap();
    ir
}

#[test]
fn bn_fold_copies_shared_weights() {
    // Two convs read the same weight initializer; each is followed by its own BN.
    let mut b = ModelBuilder::new(17, 3);
    let x = b.input("x", &[1, 4, 8, 8]);
    let w = b.weight("shared_w", &[4, 4, 3, 3], 0.3);
    let pads = onnx_prune::onnx::builder::attr_ints("pads", &[1, 1, 1, 1]);
    let c1 = b.op("Conv", &[&x, &w], vec![pads.clone()]);
    let n1 = b.bn(&c1, 4);
    let c2 = b.op("Conv", &[&n1, &w], vec![pads]);
    let n2 = b.bn(&c2, 4);
    let _ = n2;
    b.rename_last_output("y");
    b.output("y", &[1, 4, 8, 8]);
    let m = b.build();
    let d = tempfile::tempdir().unwrap();
    let (pa, pb_) = (d.path().join("a.onnx"), d.path().join("b.onnx"));
    let ir = simplify_to(&m, &pa, &pb_, true);
    let ops: Vec<&str> = ir
        .graph
        .live_nodes()
        .map(|(_, n)| n.op_type.as_str())
        .collect();
    assert_eq!(ops, ["Conv", "Conv"], "both BNs folded");
    // Each conv has its own folded weight; the shared original is gone (unused), not modified.
    let w0 = ir
        .graph
        .live_nodes()
        .map(|(_, n)| n.inputs[1].unwrap())
        .collect::<Vec<_>>();
    assert_ne!(w0[0], w0[1]);
    assert!(common::tract_diff(&pa, &pb_, &[], None) <= 1e-5);
    // Graph output name kept.
    let out = ir.graph.outputs[0];
    assert_eq!(ir.graph.value(out).name, "y");
}

#[test]
fn identity_chain_to_graph_output_and_dropout_with_used_mask() {
    let mut b = ModelBuilder::new(13, 1);
    let x = b.input("x", &[2, 3]);
    let r = b.op("Relu", &[&x], vec![]);
    let i1 = b.op("Identity", &[&r], vec![]);
    let i2 = b.op("Identity", &[&i1], vec![]);
    let _ = i2;
    b.rename_last_output("out");
    b.output("out", &[2, 3]);
    // A Dropout whose mask is a graph output must stay.
    let dm = b.node("Dropout", &[&x], vec![], 2);
    b.graph.node.last_mut().unwrap().output[1] = "mask".into();
    b.graph
        .output
        .push(onnx::builder::value_info("mask", 9, &[2, 3]));
    let _ = dm;
    let d = tempfile::tempdir().unwrap();
    let ir = simplify_to(
        &b.build(),
        &d.path().join("a.onnx"),
        &d.path().join("b.onnx"),
        false,
    );
    let ops: Vec<&str> = ir
        .graph
        .live_nodes()
        .map(|(_, n)| n.op_type.as_str())
        .collect();
    assert_eq!(ops, ["Relu", "Dropout"]);
    let names: Vec<&str> = ir
        .graph
        .outputs
        .iter()
        .map(|&v| ir.graph.value(v).name.as_str())
        .collect();
    assert_eq!(names, ["out", "mask"]);
}

#[test]
fn identity_between_input_and_output_is_kept() {
    let mut b = ModelBuilder::new(13, 1);
    let x = b.input("x", &[2]);
    b.op("Identity", &[&x], vec![]);
    b.rename_last_output("y");
    b.output("y", &[2]);
    let d = tempfile::tempdir().unwrap();
    let ir = simplify_to(
        &b.build(),
        &d.path().join("a.onnx"),
        &d.path().join("b.onnx"),
        false,
    );
    assert_eq!(
        ir.graph.live_nodes().count(),
        1,
        "input→output Identity must stay (names are the interface)"
    );
}

#[test]
fn shape_subgraph_folds_only_when_static() {
    // x: [N,8,4,4] → Shape → Gather(1) → Unsqueeze → Concat([-1, c]) → Reshape(x, ·)
    let build = |batch: i64| {
        let mut b = ModelBuilder::new(13, 1);
        let x = b.input("x", &[batch, 8, 4, 4]);
        let s = b.op("Shape", &[&x], vec![]);
        let one = b.const_i64(&[], &[1]);
        let c = b.op("Gather", &[&s, &one], vec![attr_i("axis", 0)]);
        let ax = b.const_i64(&[1], &[0]);
        let c1 = b.op("Unsqueeze", &[&c, &ax], vec![]);
        let m1 = b.const_i64(&[1], &[-1]);
        let t = b.op("Concat", &[&m1, &c1], vec![attr_i("axis", 0)]);
        b.op("Reshape", &[&x, &t], vec![]);
        b.rename_last_output("y");
        b.output("y", &[-1, 8]);
        b.build()
    };
    let d = tempfile::tempdir().unwrap();
    // Channel dim is static: the target folds to a constant even with a symbolic batch.
    let ir = simplify_to(
        &build(-1),
        &d.path().join("a.onnx"),
        &d.path().join("b.onnx"),
        false,
    );
    let ops: Vec<&str> = ir
        .graph
        .live_nodes()
        .map(|(_, n)| n.op_type.as_str())
        .collect();
    assert_eq!(ops, ["Reshape"]);
    let tgt = ir.graph.live_nodes().next().unwrap().1.inputs[1].unwrap();
    assert!(matches!(ir.graph.value(tgt).def, ValueDef::Const(_)));
    assert_eq!(
        ir.graph.const_of(tgt).unwrap().as_i64s().unwrap(),
        vec![-1, 8]
    );
    assert!(
        common::tract_diff(
            &d.path().join("a.onnx"),
            &d.path().join("b.onnx"),
            &[],
            Some(5)
        ) <= 1e-6
    );
}

#[test]
fn batch_is_not_baked_in_unless_asked() {
    // Reshape(x, Concat(Shape(x)[0], -1)): the batch is symbolic, so nothing may fold...
    let mut b = ModelBuilder::new(13, 1);
    let x = b.input("x", &[-1, 2, 3]);
    let s = b.op("Shape", &[&x], vec![]);
    let zero = b.const_i64(&[], &[0]);
    let n = b.op("Gather", &[&s, &zero], vec![attr_i("axis", 0)]);
    let ax = b.const_i64(&[1], &[0]);
    let n1 = b.op("Unsqueeze", &[&n, &ax], vec![]);
    let m1 = b.const_i64(&[1], &[-1]);
    let t = b.op("Concat", &[&n1, &m1], vec![attr_i("axis", 0)]);
    b.op("Reshape", &[&x, &t], vec![]);
    b.rename_last_output("y");
    b.output("y", &[-1, 6]);
    let m = b.build();
    let d = tempfile::tempdir().unwrap();
    let ir = simplify_to(
        &m,
        &d.path().join("a.onnx"),
        &d.path().join("b.onnx"),
        false,
    );
    assert_eq!(
        ir.graph.live_nodes().count(),
        5,
        "symbolic batch: Shape chain must stay"
    );
    // ...but with `--input-shape x=4x2x3` the input is fixed and the chain folds away.
    let out = d.path().join("c.onnx");
    let st = common::bin()
        .args([
            "simplify",
            &d.path().join("a.onnx").to_string_lossy(),
            "-o",
            &out.to_string_lossy(),
            "--input-shape",
            "x=4x2x3",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let ir = onnx::load(&out).unwrap();
    assert_eq!(ir.graph.live_nodes().count(), 1);
    let inp = ir.graph.inputs[0];
    assert_eq!(ir.graph.value(inp).declared_shape().unwrap().len(), 3);
    assert!(common::tract_diff(&d.path().join("a.onnx"), &out, &["x=4x2x3".into()], None) <= 1e-6);
}

#[test]
fn external_data_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let src = common::repo().join("models/tiny_resnet.onnx");
    let m = onnx::load(&src).unwrap();
    // Save with all tensors external, reload, compare every constant and the outputs.
    let ext = d.path().join("ext.onnx");
    onnx::save(
        &m,
        &ext,
        &SaveOptions {
            external: onnx::ExternalData::All,
        },
        &[],
    )
    .unwrap();
    assert!(d.path().join("ext.onnx.data").is_file());
    assert!(
        std::fs::metadata(&ext).unwrap().len() < 20_000,
        "weights should live in ext.onnx.data"
    );
    let back = onnx::load(&ext).unwrap();
    for (a, b) in m.graph.values.iter().zip(&back.graph.values) {
        if let (Some(x), Some(y)) = (a.constant(), b.constant()) {
            assert_eq!(x.tensor, y.tensor, "tensor {}", a.name);
        }
    }
    // Simplify keeps external tensors external (written beside the new output).
    let sub = d.path().join("out");
    std::fs::create_dir(&sub).unwrap();
    let out = sub.join("s.onnx");
    let st = common::bin()
        .args([
            "simplify",
            &ext.to_string_lossy(),
            "-o",
            &out.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(sub.join("s.onnx.data").is_file());
    assert!(common::tract_diff(&src, &out, &[], None) <= 1e-6);
    if common::python_ok() {
        let (diff, checker) = common::ort_compare(&src, &out, &[]);
        assert!(diff <= 1e-6);
        assert_eq!(checker, "ok");
        // And a model whose external data was written by the `onnx` package loads too.
        let pyext = d.path().join("py");
        std::fs::create_dir(&pyext).unwrap();
        let code = format!(
            "import onnx; m=onnx.load({:?}); onnx.save_model(m, {:?}, save_as_external_data=True, all_tensors_to_one_file=True, location='w.bin', size_threshold=0)",
            src.to_string_lossy(),
            pyext.join("m.onnx").to_string_lossy()
        );
        assert!(std::process::Command::new("python3")
            .args(["-c", &code])
            .status()
            .unwrap()
            .success());
        let back = onnx::load(&pyext.join("m.onnx")).unwrap();
        let n_ext = back
            .graph
            .values
            .iter()
            .filter(|v| v.constant().is_some_and(|c| c.external))
            .count();
        assert!(n_ext > 10, "expected external tensors, found {n_ext}");
        for (a, b) in m.graph.values.iter().zip(&back.graph.values) {
            if let (Some(x), Some(y)) = (a.constant(), b.constant()) {
                assert_eq!(x.tensor, y.tensor, "tensor {}", a.name);
            }
        }
    }
}

/// `inspect --groups` analyses the model as the pruner does (issue #23 item 5): BatchNorm
/// parameters reached through `Identity` nodes (as torch's exporter writes them) are constant
/// after simplification, so their groups are prunable in `inspect` exactly as pruning cuts them;
/// before, every such group was listed as declined ("per-channel parameters are not constant").
#[test]
fn inspect_lists_groups_as_the_pruner_sees_them() {
    let mut b = ModelBuilder::new(17, 5);
    let x = b.input("x", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let n1 = b.bn(&c1, 8);
    // Route every BN parameter through an Identity node.
    let bn = b.graph.node.len() - 1;
    for i in 1..5 {
        let p = b.graph.node[bn].input[i].clone();
        let id = b.op("Identity", &[&p], vec![]);
        b.graph.node[bn].input[i] = id;
    }
    // The Identity nodes were appended after the BN: restore topological order.
    let bn_node = b.graph.node.remove(bn);
    b.graph.node.push(bn_node);
    let r1 = b.op("Relu", &[&n1], vec![]);
    let c2 = b.conv(&r1, 8, 4, 3, 1, 1);
    b.rename_last_output("y");
    b.output("y", &[1, 4, 8, 8]);
    let _ = c2;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bn_identity.onnx");
    save_pb(&b.build(), &p);
    let out = common::bin()
        .args(["inspect", "--json", "--groups"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = j["groups"].as_array().unwrap();
    let conv1 = groups
        .iter()
        .find(|g| g["channels"] == 8)
        .unwrap_or_else(|| panic!("no 8-channel group: {groups:?}"));
    assert!(conv1["declined"].is_null(), "{conv1}");
    assert_eq!(conv1["prunable"], 8, "{conv1}");
    // And pruning does cut it: the same model at 0.5 MACs keeps fewer than 8 channels there.
    let o = d.path().join("out.onnx");
    let st = common::bin()
        .arg(&p)
        .arg("-o")
        .arg(&o)
        .args(["--target-flops", "0.6", "--round-to", "1"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m = onnx::load(&o).unwrap();
    let w = m
        .graph
        .live_nodes()
        .find(|(_, n)| n.op_type == "Conv")
        .map(|(_, n)| n.inputs[1].unwrap())
        .unwrap();
    let dims = &m.graph.foldable_const(w).unwrap().dims;
    assert!(dims[0] < 8, "first conv kept {dims:?}");
}
