//! Models from older exporters: IR < 4, where every initializer must also be listed as a graph
//! input (the classic ONNX Model Zoo, and the `light` models the `onnx` wheel ships), and weights
//! made by `ConstantOfShape` (too large to fold in VGG's classifier).

mod common;
use onnx_prune::onnx::builder::{attr_i, attr_t, tensor_i64, value_info, ModelBuilder};
use onnx_prune::onnx::{self, SaveOptions};
use onnx_prune::search::datafree::{Allocation, Method, Pruner};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// conv → relu → conv (its bias from ConstantOfShape) → relu → GAP → Flatten → Gemm, as an IR 3
/// file: every initializer is also declared as a graph input, after the data input.
fn ir3_model() -> onnx_prune::onnx::proto::ModelProto {
    let mut b = ModelBuilder::new(9, 5);
    let x = b.input("data_0", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let w2 = b.weight("w2", &[12, 8, 3, 3], 0.3);
    let shape = b.init_i64("b2_SHAPE", &[1], &[12]);
    let fill = onnx_prune::onnx::builder::tensor_f32("", &[1], &[0.05]);
    let b2 = b.op("ConstantOfShape", &[&shape], vec![attr_t("value", fill)]);
    let c2 = b.op(
        "Conv",
        &[&r1, &w2, &b2],
        vec![onnx_prune::onnx::builder::attr_ints("pads", &[1, 1, 1, 1])],
    );
    let r2 = b.op("Relu", &[&c2], vec![]);
    let gap = b.op("GlobalAveragePool", &[&r2], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[5, 12], 0.5);
    let bias = b.weight("fcb", &[5], 0.1);
    b.op("Gemm", &[&fl, &w, &bias], vec![attr_i("transB", 1)]);
    b.rename_last_output("prob");
    b.output("prob", &[1, 5]);
    let mut m = b.build();
    m.ir_version = Some(3);
    let g = m.graph.as_mut().unwrap();
    let decls: Vec<_> = g
        .initializer
        .iter()
        .map(|t| value_info(t.name(), t.data_type(), &t.dims))
        .collect();
    g.input.extend(decls);
    m
}

/// An IR 3 model's initializer inputs are weights: the model prunes (before, none of its
/// groups could: "shape of input #1 is unknown"), the pruned model equals the masked original
/// in tract and onnxruntime, stays IR 3 with every initializer declared at its new dims (full
/// onnx.checker), and keeps its data input first.
#[test]
fn ir3_initializer_inputs_are_weights_and_stay_declared() {
    let d = tempfile::tempdir().unwrap();
    let orig = d.path().join("ir3.onnx");
    std::fs::write(&orig, ir3_model().encode_to_vec()).unwrap();
    let model = onnx::load(&orig).unwrap();
    for (i, seed) in [(0, 1u64), (1, 2)] {
        let p = Pruner::new(&model, &HashMap::new()).unwrap();
        let (method, alloc) = if i == 0 {
            (Method::L1, Allocation::Uniform)
        } else {
            (Method::Random, Allocation::Global)
        };
        let imp = p.importance(method, seed);
        let keep = p.allocate(p.base_macs / 2, &imp, alloc, 1);
        assert!(p.macs(&keep) < p.base_macs, "nothing pruned");
        let (pp, mp) = (d.path().join("pruned.onnx"), d.path().join("masked.onnx"));
        onnx::save(&p.apply(&keep).unwrap(), &pp, &SaveOptions::default(), &[]).unwrap();
        onnx::save(&p.masked(&keep).unwrap(), &mp, &SaveOptions::default(), &[]).unwrap();
        let t = common::tract_diff(&mp, &pp, &[], None);
        assert!(t <= 1e-5, "tract diff {t:e}");
        assert!(
            common::tract_diff(&orig, &mp, &[], None) > 1e-3,
            "masking changed nothing"
        );

        let out = onnx::proto::ModelProto::decode(std::fs::read(&pp).unwrap().as_slice()).unwrap();
        assert_eq!(out.ir_version, Some(3));
        let g = out.graph.unwrap();
        assert_eq!(g.input[0].name(), "data_0", "the data input moved");
        for t in &g.initializer {
            let decl = g
                .input
                .iter()
                .find(|i| i.name() == t.name())
                .unwrap_or_else(|| panic!("initializer {} is not declared as an input", t.name()));
            let Some(onnx::proto::type_proto::Value::TensorType(tt)) =
                decl.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                panic!("{}: no tensor type", t.name())
            };
            let dims: Vec<i64> = tt
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => v,
                    _ => -1,
                })
                .collect();
            assert_eq!(
                dims,
                t.dims,
                "declaration of {} disagrees with its data",
                t.name()
            );
        }
        // No stale unpruned copy of a weight is left behind.
        assert_eq!(g.input.len(), g.initializer.len() + 1);
        if common::python_ok() {
            let (o, checker) = common::ort_compare(&mp, &pp, &[]);
            assert!(o <= 1e-5, "onnxruntime diff {o:e}");
            assert_eq!(checker, "ok");
        }
    }
}

/// In IR >= 4 an initializer listed as an input is an overridable default: the main command
/// leaves what is behind it alone, unless `--constant-initializer-inputs` says the listings are
/// weights; then it prunes to the target, stays IR 8 with its data input first, and lists as
/// inputs only initializers that still exist (the replaced weights' listings go).
#[test]
fn constant_initializer_inputs_flag_prunes_an_ir8_file_that_lists_its_weights() {
    let d = tempfile::tempdir().unwrap();
    let orig = d.path().join("ir8.onnx");
    let mut m = ir3_model();
    m.ir_version = Some(8);
    std::fs::write(&orig, m.encode_to_vec()).unwrap();
    let run = |flag: bool| {
        let o = d.path().join(format!("out_{flag}.onnx"));
        let j = d.path().join(format!("out_{flag}.json"));
        let mut c = common::bin();
        c.arg(&orig).arg("-o").arg(&o).args([
            "--target-flops",
            "0.5",
            "--round-to",
            "1",
            "--report",
        ]);
        c.arg(&j);
        if flag {
            c.arg("--constant-initializer-inputs");
        }
        let r = c.output().unwrap();
        let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
        (r, rep, o)
    };
    let (r, rep, _) = run(false);
    // Nothing can be pruned: the job says the target is unreachable (exit 1) or keeps all.
    let ratio = rep["macs_ratio"].as_f64().unwrap_or(1.0);
    assert!(
        ratio > 0.99,
        "pruned behind overridable inputs: {ratio} {r:?}"
    );
    let (r, rep, o) = run(true);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ratio = rep["macs_ratio"].as_f64().unwrap();
    assert!(ratio <= 0.5, "{ratio}");
    let out = onnx::proto::ModelProto::decode(std::fs::read(&o).unwrap().as_slice()).unwrap();
    assert_eq!(out.ir_version, Some(8));
    let g = out.graph.unwrap();
    assert_eq!(g.input[0].name(), "data_0");
    // Listings of replaced weights are gone; those left name initializers that exist.
    for i in &g.input[1..] {
        assert!(
            g.initializer.iter().any(|t| t.name() == i.name()),
            "input {} lists no initializer",
            i.name()
        );
    }
}

/// A ConstantOfShape whose result is over the folding limit still gives its output shape (VGG-19,
/// AlexNet and ZFNet fill their classifier weights this way).
#[test]
fn an_unfoldable_constant_of_shape_keeps_its_shape() {
    let mut b = ModelBuilder::new(9, 1);
    let x = b.input("x", &[1, 3000]);
    let shape = b.init_i64("w_SHAPE", &[2], &[3000, 2000]);
    let fill = onnx_prune::onnx::builder::tensor_f32("", &[1], &[0.01]);
    let w = b.op("ConstantOfShape", &[&shape], vec![attr_t("value", fill)]);
    b.op("MatMul", &[&x, &w], vec![]);
    b.rename_last_output("y");
    b.output("y", &[1, 2000]);
    let mut m = b.build();
    m.ir_version = Some(3);
    let model = onnx::decode_model(m.encode_to_vec().into(), None).unwrap();
    let a = onnx_prune::analysis::infer(
        &model,
        onnx_prune::analysis::ShapeMode::Bound,
        &HashMap::new(),
    )
    .unwrap();
    let c = onnx_prune::analysis::cost(&model, &a).unwrap();
    assert_eq!(c.macs, 3000 * 2000);
    let _ = tensor_i64; // builder helper kept in scope for the IR 3 model above
}

/// The `onnx` wheel's `light` models (Caffe2-era ResNet-50, Inception v1/v2, DenseNet-121,
/// SqueezeNet, ShuffleNet, VGG-19, AlexNet, ZFNet; IR 3, opset 9) prune at 0.5 to models that
/// pass the full checker and run in onnxruntime. Needs Python's `onnx` (CI installs it).
#[test]
fn the_onnx_wheels_light_models_prune() {
    if !common::python_ok() {
        return;
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .unwrap();
    let dir =
        Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("backend/test/data/light");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 9, "{}", dir.display());
    let d = tempfile::tempdir().unwrap();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let o = d.path().join(format!("{name}.pruned.onnx"));
        let j = d.path().join(format!("{name}.json"));
        let r = common::bin()
            .arg(f)
            .arg("-o")
            .arg(&o)
            .args(["--target-flops", "0.5", "--report"])
            .arg(&j)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{name}: exit {:?}: {}",
            r.status.code(),
            String::from_utf8_lossy(&r.stderr)
        );
        let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
        let ratio = rep["macs_ratio"].as_f64().unwrap();
        println!("{name}: MACs ratio {ratio:.3}");
        assert!(ratio < 0.8, "{name}: MACs ratio {ratio}");
        let (diff, checker) = common::ort_compare(f, &o, &[]);
        assert_eq!(checker, "ok", "{name}");
        assert!(diff.is_finite(), "{name}");
    }
}
