//! Lossless I/O: load → save without passes reproduces real files byte for byte, and every
//! field the IR does not interpret survives.

mod common;
use onnx_prune::onnx::{self, proto as pb};
use prost::Message;

#[test]
fn real_models_round_trip_byte_identical() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut n = 0;
    for dir in ["models/cifar10", "models/zoo"] {
        for e in std::fs::read_dir(shared.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "onnx") {
                let orig = std::fs::read(&p).unwrap();
                let m = onnx::load(&p).unwrap();
                let out = onnx::encode_model(&m).unwrap();
                assert!(
                    out == orig,
                    "{} does not round-trip byte-identically ({} vs {} bytes)",
                    p.display(),
                    out.len(),
                    orig.len()
                );
                n += 1;
            }
        }
    }
    assert!(n >= 9, "expected the 9 shared models, saw {n}");
}

#[test]
fn registry_and_fixture_models_round_trip_byte_identical() {
    let mut files = vec![common::repo().join("models/tiny_resnet.onnx")];
    if let Some(d) = common::extra_models() {
        for e in std::fs::read_dir(d).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    for p in files {
        let orig = std::fs::read(&p).unwrap();
        let out = onnx::encode_model(&onnx::load(&p).unwrap()).unwrap();
        assert!(
            out == orig,
            "{} does not round-trip byte-identically",
            p.display()
        );
    }
}

fn kv(k: &str, v: &str) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

/// A model using every field the IR carries without interpreting it.
fn kitchen_sink() -> pb::ModelProto {
    use onnx::builder::*;
    let mut x = value_info("x", 1, &[-1, 4]);
    x.doc_string = Some("the input".into());
    x.metadata_props.push(kv("k", "v"));
    if let Some(pb::type_proto::Value::TensorType(t)) =
        x.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim[1].denotation = Some("FEATURE".into());
    }
    let typed = pb::TensorProto {
        name: Some("typed".into()),
        dims: vec![4],
        data_type: Some(1),
        float_data: vec![1.0, 2.0, 3.0, 4.0],
        doc_string: Some("typed floats".into()),
        ..Default::default()
    };
    let sub = |name: &str, op: &str| pb::GraphProto {
        name: Some(name.into()),
        node: vec![pb::NodeProto {
            op_type: Some(op.into()),
            input: vec!["y".into()], // read from the outer scope
            output: vec![format!("{name}_out")],
            ..Default::default()
        }],
        output: vec![value_info(&format!("{name}_out"), 1, &[-1, 4])],
        ..Default::default()
    };
    let cond = tensor_f32("unused", &[], &[0.0]);
    let nodes = vec![
        pb::NodeProto {
            name: Some("add".into()),
            op_type: Some("Add".into()),
            input: vec!["x".into(), "typed".into()],
            output: vec!["y0".into()],
            doc_string: Some("adds".into()),
            metadata_props: vec![kv("node", "meta")],
            ..Default::default()
        },
        pb::NodeProto {
            name: Some("id".into()),
            op_type: Some("Identity".into()),
            input: vec!["y0".into()],
            output: vec!["y".into()],
            ..Default::default()
        },
        pb::NodeProto {
            name: Some("cond".into()),
            op_type: Some("Constant".into()),
            output: vec!["c".into()],
            attribute: vec![attr_t(
                "value",
                pb::TensorProto {
                    data_type: Some(9),
                    raw_data: Some(vec![1u8].into()),
                    ..Default::default()
                },
            )],
            ..Default::default()
        },
        pb::NodeProto {
            name: Some("if".into()),
            op_type: Some("If".into()),
            input: vec!["c".into()],
            output: vec!["z".into()],
            attribute: vec![
                pb::AttributeProto {
                    name: Some("then_branch".into()),
                    r#type: Some(5),
                    g: Some(sub("then", "Relu")),
                    ..Default::default()
                },
                pb::AttributeProto {
                    name: Some("else_branch".into()),
                    r#type: Some(5),
                    g: Some(sub("else", "Neg")),
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
        pb::NodeProto {
            name: Some("custom".into()),
            op_type: Some("Foo".into()),
            domain: Some("com.example".into()),
            overload: Some("v2".into()),
            input: vec!["z".into(), "sp".into()],
            output: vec!["out".into(), "".into()],
            attribute: vec![
                attr_s("mode", "fast"),
                pb::AttributeProto {
                    name: Some("ref".into()),
                    ref_attr_name: Some("outer".into()),
                    r#type: Some(2),
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    ];
    let _ = cond;
    pb::ModelProto {
        ir_version: Some(10),
        producer_name: Some("kitchen".into()),
        producer_version: Some("1".into()),
        domain: Some("org.test".into()),
        model_version: Some(3),
        doc_string: Some("model doc".into()),
        metadata_props: vec![kv("author", "me")],
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            },
            pb::OperatorSetIdProto {
                domain: Some("com.example".into()),
                version: Some(1),
            },
        ],
        functions: vec![pb::FunctionProto {
            name: Some("Foo".into()),
            domain: Some("com.example".into()),
            ..Default::default()
        }],
        training_info: vec![pb::TrainingInfoProto {
            algorithm: Some(pb::GraphProto {
                name: Some("train".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        graph: Some(pb::GraphProto {
            name: Some("main".into()),
            doc_string: Some("graph doc".into()),
            node: nodes,
            initializer: vec![typed],
            sparse_initializer: vec![pb::SparseTensorProto {
                values: Some(tensor_f32("sp", &[1], &[5.0])),
                indices: Some(tensor_i64("sp_idx", &[1], &[2])),
                dims: vec![4],
            }],
            input: vec![x],
            output: vec![value_info("out", 1, &[-1, 4])],
            value_info: vec![value_info("y0", 1, &[-1, 4]), value_info("ghost", 1, &[1])],
            quantization_annotation: vec![pb::TensorAnnotation {
                tensor_name: Some("y".into()),
                quant_parameter_tensor_names: vec![kv("SCALE", "s")],
            }],
            metadata_props: vec![kv("g", "meta")],
        }),
        ..Default::default()
    }
}

#[test]
fn uninterpreted_fields_survive_load_save() {
    let orig = kitchen_sink();
    let m = onnx::decode_model(orig.encode_to_vec().into(), None).unwrap();
    m.graph.check().unwrap();
    let back = pb::ModelProto::decode(&onnx::encode_model(&m).unwrap()[..]).unwrap();
    // The one normalisation: typed float_data is written as raw_data (same values).
    let mut expect = orig.clone();
    let t = &mut expect.graph.as_mut().unwrap().initializer[0];
    t.raw_data = Some(
        t.float_data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    );
    t.float_data.clear();
    assert_eq!(back, expect);
}

#[test]
fn passes_respect_subgraph_reads_and_opaque_ops() {
    use onnx_prune::rewrite::{simplify, PassOptions};
    let mut m = onnx::decode_model(kitchen_sink().encode_to_vec().into(), None).unwrap();
    simplify(&mut m, &PassOptions { fold_bn: true }).unwrap();
    m.graph.check().unwrap();
    let back = pb::ModelProto::decode(&onnx::encode_model(&m).unwrap()[..]).unwrap();
    let g = back.graph.unwrap();
    // `y` is read by name inside the If branches: its producer must stay and keep its name.
    assert!(
        g.node
            .iter()
            .any(|n| n.output.first().map(String::as_str) == Some("y")),
        "value 'y' was lost"
    );
    assert!(g.node.iter().any(|n| n.op_type.as_deref() == Some("If")));
    let foo = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Foo"))
        .expect("custom op kept");
    assert_eq!(foo.overload.as_deref(), Some("v2"));
    assert_eq!(foo.domain.as_deref(), Some("com.example"));
    assert_eq!(g.sparse_initializer.len(), 1);
}
