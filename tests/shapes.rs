//! Shape inference per op, data-driven: each case is a one-node model; the shape the analysis
//! infers must equal the shape tract produces when it runs the model.

mod common;
use onnx_prune::analysis::{self, ShapeMode};
use onnx_prune::ir::Dim;
use onnx_prune::onnx::builder::{attr_f, attr_i, attr_ints, attr_s, ModelBuilder};
use onnx_prune::onnx::proto as pb;
use prost::Message;
use std::collections::HashMap;

enum C {
    F32(&'static [i64]),
    I64(&'static [i64], &'static [i64]),
    F32v(&'static [i64], &'static [f32]),
}

struct Case {
    op: &'static str,
    opset: i64,
    inputs: Vec<(&'static str, &'static [i64])>,
    consts: Vec<C>,
    attrs: Vec<pb::AttributeProto>,
}

fn case(
    op: &'static str,
    opset: i64,
    inputs: Vec<(&'static str, &'static [i64])>,
    consts: Vec<C>,
    attrs: Vec<pb::AttributeProto>,
) -> Case {
    Case {
        op,
        opset,
        inputs,
        consts,
        attrs,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "Conv",
            13,
            vec![("x", &[1, 4, 9, 7])],
            vec![C::F32(&[6, 2, 3, 3])],
            vec![
                attr_i("group", 2),
                attr_ints("strides", &[2, 1]),
                attr_ints("pads", &[1, 0, 2, 1]),
                attr_ints("dilations", &[1, 2]),
            ],
        ),
        case(
            "Conv",
            13,
            vec![("x", &[1, 3, 10, 11])],
            vec![C::F32(&[4, 3, 3, 3])],
            vec![
                attr_s("auto_pad", "SAME_UPPER"),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        case(
            "Conv",
            13,
            vec![("x", &[2, 3, 10, 11])],
            vec![C::F32(&[4, 3, 4, 2])],
            vec![attr_s("auto_pad", "VALID"), attr_ints("strides", &[3, 2])],
        ),
        case(
            "Conv",
            13,
            vec![("x", &[1, 2, 17])],
            vec![C::F32(&[3, 2, 5])],
            vec![attr_ints("pads", &[2, 2]), attr_ints("strides", &[2])],
        ),
        case(
            "ConvTranspose",
            13,
            vec![("x", &[1, 4, 5, 6])],
            vec![C::F32(&[4, 3, 3, 3])],
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("output_padding", &[1, 0]),
            ],
        ),
        case(
            "ConvTranspose",
            13,
            vec![("x", &[1, 4, 5, 6])],
            vec![C::F32(&[4, 2, 2, 2])],
            vec![attr_i("group", 2), attr_ints("strides", &[2, 2])],
        ),
        case(
            "MaxPool",
            13,
            vec![("x", &[1, 3, 10, 10])],
            vec![],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_i("ceil_mode", 1),
            ],
        ),
        case(
            "MaxPool",
            13,
            vec![("x", &[1, 3, 11, 12])],
            vec![],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        case(
            "AveragePool",
            13,
            vec![("x", &[1, 3, 7, 9])],
            vec![],
            vec![
                attr_ints("kernel_shape", &[2, 3]),
                attr_ints("strides", &[2, 3]),
            ],
        ),
        case(
            "GlobalAveragePool",
            13,
            vec![("x", &[2, 5, 7, 3])],
            vec![],
            vec![],
        ),
        case(
            "Pad",
            13,
            vec![("x", &[1, 3, 4, 4])],
            vec![C::I64(&[8], &[0, 1, 2, 0, 0, 2, 0, 3])],
            vec![],
        ),
        case(
            "Resize",
            13,
            vec![("x", &[1, 2, 4, 5])],
            vec![C::F32v(&[0], &[]), C::F32v(&[4], &[1.0, 1.0, 2.0, 1.5])],
            vec![attr_s("mode", "nearest")],
        ),
        case(
            "Resize",
            13,
            vec![("x", &[1, 2, 4, 5])],
            vec![
                C::F32v(&[0], &[]),
                C::F32v(&[0], &[]),
                C::I64(&[4], &[1, 2, 7, 3]),
            ],
            vec![attr_s("mode", "nearest")],
        ),
        case(
            "Concat",
            13,
            vec![("a", &[2, 3, 4]), ("b", &[2, 3, 1])],
            vec![],
            vec![attr_i("axis", -1)],
        ),
        case(
            "Split",
            13,
            vec![("x", &[2, 10])],
            vec![C::I64(&[3], &[2, 3, 5])],
            vec![attr_i("axis", 1)],
        ),
        case(
            "Slice",
            13,
            vec![("x", &[6, 8])],
            vec![
                C::I64(&[2], &[5, 1]),
                C::I64(&[2], &[-100, 100]),
                C::I64(&[2], &[0, 1]),
                C::I64(&[2], &[-2, 3]),
            ],
            vec![],
        ),
        case(
            "Slice",
            13,
            vec![("x", &[6, 8])],
            vec![
                C::I64(&[1], &[-3]),
                C::I64(&[1], &[i64::MAX]),
                C::I64(&[1], &[1]),
            ],
            vec![],
        ),
        case("Transpose", 13, vec![("x", &[2, 3, 4])], vec![], vec![]),
        case(
            "Transpose",
            13,
            vec![("x", &[2, 3, 4, 5])],
            vec![],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        ),
        case(
            "Reshape",
            13,
            vec![("x", &[2, 3, 4])],
            vec![C::I64(&[3], &[0, -1, 2])],
            vec![],
        ),
        case(
            "Flatten",
            13,
            vec![("x", &[2, 3, 4, 5])],
            vec![],
            vec![attr_i("axis", 2)],
        ),
        case(
            "Squeeze",
            13,
            vec![("x", &[1, 3, 1, 5])],
            vec![C::I64(&[1], &[2])],
            vec![],
        ),
        case(
            "Unsqueeze",
            13,
            vec![("x", &[3, 5])],
            vec![C::I64(&[2], &[0, -1])],
            vec![],
        ),
        case(
            "Gemm",
            13,
            vec![("a", &[5, 3])],
            vec![C::F32(&[5, 4])],
            vec![attr_i("transA", 1)],
        ),
        case(
            "MatMul",
            13,
            vec![("a", &[2, 1, 3, 4])],
            vec![C::F32(&[5, 4, 6])],
            vec![],
        ),
        case(
            "MatMul",
            13,
            vec![("a", &[3, 4])],
            vec![C::F32(&[4])],
            vec![],
        ),
        case(
            "ReduceMean",
            13,
            vec![("x", &[2, 3, 4])],
            vec![],
            vec![attr_ints("axes", &[1]), attr_i("keepdims", 0)],
        ),
        case(
            "ReduceSum",
            13,
            vec![("x", &[2, 3, 4])],
            vec![C::I64(&[2], &[0, 2])],
            vec![],
        ),
        case(
            "Gather",
            13,
            vec![("x", &[3, 5, 2])],
            vec![C::I64(&[2, 2], &[0, 4, -1, 2])],
            vec![attr_i("axis", 1)],
        ),
        case(
            "Expand",
            13,
            vec![("x", &[3, 1])],
            vec![C::I64(&[3], &[2, 1, 4])],
            vec![],
        ),
        case(
            "Tile",
            13,
            vec![("x", &[2, 3])],
            vec![C::I64(&[2], &[3, 2])],
            vec![],
        ),
        case(
            "Softmax",
            13,
            vec![("x", &[2, 7])],
            vec![],
            vec![attr_i("axis", 1)],
        ),
        case(
            "LayerNormalization",
            17,
            vec![("x", &[2, 3, 4])],
            vec![C::F32(&[4]), C::F32(&[4])],
            vec![attr_i("axis", -1)],
        ),
        case(
            "Where",
            13,
            vec![("x", &[3, 1]), ("y", &[1, 4])],
            vec![],
            vec![],
        ),
        case(
            "Mul",
            13,
            vec![("x", &[2, 3, 1, 5]), ("y", &[4, 1])],
            vec![],
            vec![],
        ),
        case("HardSwish", 14, vec![("x", &[2, 3])], vec![], vec![]),
        case(
            "Clip",
            13,
            vec![("x", &[2, 3])],
            vec![C::F32v(&[], &[0.0]), C::F32v(&[], &[6.0])],
            vec![],
        ),
        case(
            "LeakyRelu",
            13,
            vec![("x", &[4])],
            vec![],
            vec![attr_f("alpha", 0.2)],
        ),
    ]
}

fn build(c: &Case) -> (pb::ModelProto, usize) {
    let mut b = ModelBuilder::new(c.opset, 9);
    let mut ins: Vec<String> = vec![];
    for (n, d) in &c.inputs {
        if c.op == "Where" && *n == "x" {
            // Where's condition: computed from a float input so the model has only float inputs.
            let x = b.input("x", d);
            let z = b.init_f32("zero", &[], &[0.0]);
            ins.push(b.op("Greater", &[&x, &z], vec![]));
            continue;
        }
        ins.push(b.input(n, d));
    }
    for k in &c.consts {
        ins.push(match k {
            C::F32(d) => b.weight("w", d, 1.0),
            C::F32v(d, v) => {
                if v.is_empty() && d == &[0] {
                    String::new() // omitted optional input
                } else {
                    b.init_f32("c", d, v)
                }
            }
            C::I64(d, v) => b.init_i64("i", d, v),
        });
    }
    if c.op == "Where" {
        let y = ins.pop().unwrap();
        let cond = ins.pop().unwrap();
        let w = b.weight("w", &[3, 1], 1.0);
        ins = vec![cond, w, y];
    }
    let n_out = if c.op == "Split" { 3 } else { 1 };
    let refs: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
    let outs = b.node(c.op, &refs, c.attrs.clone(), n_out);
    for (i, o) in outs.iter().enumerate() {
        b.graph.node.last_mut().unwrap().output[i] = format!("out{i}");
        let _ = o;
        b.graph.output.push(pb::ValueInfoProto {
            name: Some(format!("out{i}")),
            ..Default::default()
        });
    }
    (b.build(), n_out)
}

#[test]
fn inferred_shapes_match_tract() {
    let dir = tempfile::tempdir().unwrap();
    for (i, c) in cases().iter().enumerate() {
        let (m, n_out) = build(c);
        let p = dir.path().join(format!("case{i}.onnx"));
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        let ir = onnx_prune::onnx::load(&p).unwrap();
        let a = analysis::infer(&ir, ShapeMode::Bound, &HashMap::new()).unwrap();
        assert!(a.errors.is_empty(), "case {i} {}: {:?}", c.op, a.errors);
        let shapes = onnx_prune::eval::input_shapes(&ir, &HashMap::new()).unwrap();
        let outs =
            onnx_prune::eval::tract_rt::run(&p, &onnx_prune::eval::random_inputs(&shapes, 1))
                .unwrap_or_else(|e| panic!("case {i} {}: tract: {e}", c.op));
        assert_eq!(outs.len(), n_out);
        for (k, o) in outs.iter().enumerate() {
            let v = ir.graph.outputs[k];
            let got: Vec<i64> = a
                .fact(v)
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|d| match d {
                    Dim::Known(x) => *x,
                    d => panic!("case {i} {}: unresolved dim {d}", c.op),
                })
                .collect();
            let want: Vec<i64> = o.shape.iter().map(|&d| d as i64).collect();
            assert_eq!(got, want, "case {i} {} output {k}", c.op);
            println!("case {i} {}: {got:?}", c.op);
        }
    }
}

#[test]
fn symbolic_reshape_minus_one_cancels_batch() {
    // [N,64,1,1] reshaped to [0,-1] gives [N,64] without knowing N.
    let r = onnx_prune::ir::ops::reshape_target_for_tests(
        &[
            Dim::Sym("N".into()),
            Dim::Known(64),
            Dim::Known(1),
            Dim::Known(1),
        ],
        &[Dim::Known(0), Dim::Known(-1)],
    )
    .unwrap();
    assert_eq!(r, vec![Dim::Sym("N".into()), Dim::Known(64)]);
    let r = onnx_prune::ir::ops::reshape_target_for_tests(
        &[Dim::Sym("N".into()), Dim::Known(8), Dim::Known(4)],
        &[Dim::Sym("N".into()), Dim::Known(-1)],
    )
    .unwrap();
    assert_eq!(r, vec![Dim::Sym("N".into()), Dim::Known(32)]);
    assert!(onnx_prune::ir::ops::reshape_target_for_tests(
        &[Dim::Known(6)],
        &[Dim::Known(4), Dim::Known(-1)]
    )
    .is_err());
}
