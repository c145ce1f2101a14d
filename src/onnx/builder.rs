//! A small builder of ONNX models, for tests, fuzz seeds and the fixture models in `models/`.
//! Deterministic: weights come from a seeded generator.

use super::proto as pb;
use prost::Message;
use rand::{Rng, SeedableRng};

pub fn attr_i(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}
pub fn attr_f(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(1),
        f: Some(v),
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_s(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(3),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}
pub fn attr_t(name: &str, t: pb::TensorProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(4),
        t: Some(t),
        ..Default::default()
    }
}

pub fn tensor_f32(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        raw_data: Some(
            v.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    }
}
pub fn tensor_i64(name: &str, dims: &[i64], v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(7),
        raw_data: Some(
            v.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    }
}

/// A dimension for [`value_info`]: a number, or a symbol when negative ("N").
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            denotation: None,
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            denotation: None,
                            value: Some(if d < 0 {
                                DV::DimParam("N".into())
                            } else {
                                DV::DimValue(d)
                            }),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    }
}

pub struct ModelBuilder {
    pub graph: pb::GraphProto,
    pub opset: i64,
    rng: rand::rngs::StdRng,
    counter: usize,
}

impl ModelBuilder {
    pub fn new(opset: i64, seed: u64) -> Self {
        ModelBuilder {
            graph: pb::GraphProto {
                name: Some("g".into()),
                ..Default::default()
            },
            opset,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            counter: 0,
        }
    }
    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }
    /// A float32 graph input; negative dims become the symbol "N".
    pub fn input(&mut self, name: &str, dims: &[i64]) -> String {
        self.graph.input.push(value_info(name, 1, dims));
        name.to_string()
    }
    pub fn output(&mut self, name: &str, dims: &[i64]) {
        self.graph.output.push(value_info(name, 1, dims));
    }
    /// Uniform(-scale, scale) float initializer.
    pub fn weight(&mut self, base: &str, dims: &[i64], scale: f32) -> String {
        let n: i64 = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-scale..scale))
            .collect();
        self.init_f32(base, dims, &v)
    }
    pub fn init_f32(&mut self, base: &str, dims: &[i64], v: &[f32]) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(tensor_f32(&name, dims, v));
        name
    }
    pub fn init_i64(&mut self, base: &str, dims: &[i64], v: &[i64]) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(tensor_i64(&name, dims, v));
        name
    }
    /// A `Constant` node holding an int64 tensor.
    pub fn const_i64(&mut self, dims: &[i64], v: &[i64]) -> String {
        let t = tensor_i64("", dims, v);
        self.node("Constant", &[], vec![attr_t("value", t)], 1)
            .remove(0)
    }
    /// Adds a node with `n_out` fresh outputs; returns their names.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
        n_out: usize,
    ) -> Vec<String> {
        let name = self.fresh(op);
        let outs: Vec<String> = (0..n_out).map(|i| format!("{name}_out{i}")).collect();
        self.graph.node.push(pb::NodeProto {
            name: Some(name),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            attribute: attrs,
            ..Default::default()
        });
        outs
    }
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        self.node(op, inputs, attrs, 1).remove(0)
    }
    /// Conv with random weights and bias (`k`×`k`, same padding).
    pub fn conv(
        &mut self,
        x: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        group: i64,
    ) -> String {
        let fan_in = (cin / group * k * k) as f32;
        let w = self.weight("w", &[cout, cin / group, k, k], (3.0 / fan_in).sqrt());
        let b = self.weight("b", &[cout], 0.1);
        let p = k / 2;
        self.op(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[p, p, p, p]),
                attr_i("group", group),
            ],
        )
    }
    /// BatchNormalization with random (positive-variance) statistics.
    pub fn bn(&mut self, x: &str, c: i64) -> String {
        let gamma: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..c).map(|_| self.rng.random_range(-0.2..0.2)).collect();
        let mean: Vec<f32> = (0..c).map(|_| self.rng.random_range(-0.2..0.2)).collect();
        let var: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
        let g = self.init_f32("gamma", &[c], &gamma);
        let b = self.init_f32("beta", &[c], &beta);
        let m = self.init_f32("mean", &[c], &mean);
        let v = self.init_f32("var", &[c], &var);
        self.op(
            "BatchNormalization",
            &[x, &g, &b, &m, &v],
            vec![attr_f("epsilon", 1e-5)],
        )
    }
    /// Renames the last node's first output (to make it a named graph output).
    pub fn rename_last_output(&mut self, name: &str) -> String {
        let n = self.graph.node.last_mut().expect("a node");
        n.output[0] = name.into();
        name.into()
    }
    pub fn build(self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: Some(8),
            producer_name: Some("onnx-prune".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }
    pub fn to_bytes(self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}

/// GroupNorm as torch exports it below opset 18 (4 groups of 3 channels after a conv): `Reshape(x,
/// [0, G, -1])` → InstanceNormalization (unit scale, zero bias) → `Reshape` back, to `Shape(x)`
/// (`dynamic`: a symbolic batch) or to a constant shape → `Mul`/`Add` by the per-channel affine
/// → ReLU → conv → classifier head. Returns the model and the first conv's output.
pub fn group_norm_opset17(dynamic: bool, seed: u64) -> (pb::ModelProto, String) {
    let mut b = ModelBuilder::new(17, seed);
    let n = if dynamic { -1 } else { 1 };
    let x = b.input("x", &[n, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 12, 3, 1, 1);
    let into = b.const_i64(&[3], &[0, 4, -1]);
    let grouped = b.op("Reshape", &[&c1, &into], vec![]);
    let ones = b.init_f32("in_scale", &[4], &[1.0; 4]);
    let zeros = b.init_f32("in_bias", &[4], &[0.0; 4]);
    let normed = b.op(
        "InstanceNormalization",
        &[&grouped, &ones, &zeros],
        vec![attr_f("epsilon", 1e-5)],
    );
    let back = if dynamic {
        b.op("Shape", &[&c1], vec![])
    } else {
        b.const_i64(&[4], &[1, 12, 8, 8])
    };
    let y = b.op("Reshape", &[&normed, &back], vec![]);
    let gamma = b.weight("gn_gamma", &[12, 1, 1], 1.0);
    let beta = b.weight("gn_beta", &[12, 1, 1], 0.2);
    let scaled = b.op("Mul", &[&y, &gamma], vec![]);
    let shifted = b.op("Add", &[&scaled, &beta], vec![]);
    let r1 = b.op("Relu", &[&shifted], vec![]);
    let c2 = b.conv(&r1, 12, 8, 3, 1, 1);
    let r2 = b.op("Relu", &[&c2], vec![]);
    let gap = b.op("GlobalAveragePool", &[&r2], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[5, 8], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[n, 5]);
    (b.build(), c1)
}

/// A U-Net-style test model: conv → relu → conv(stride 2) → Resize(const sizes) →
/// Concat(skip) → conv → head.
pub fn unet_decoder() -> pb::ModelProto {
    let mut b = ModelBuilder::new(17, 3);
    let x = b.input("x", &[1, 3, 8, 8]);
    let e1 = b.conv(&x, 3, 8, 3, 1, 1);
    let r1 = b.op("Relu", &[&e1], vec![]);
    let e2 = b.conv(&r1, 8, 12, 3, 2, 1);
    let r2 = b.op("Relu", &[&e2], vec![]);
    let roi = b.init_f32("roi", &[0], &[]);
    let sz = b.init_i64("sizes", &[4], &[1, 12, 8, 8]);
    let u = b.op(
        "Resize",
        &[&r2, &roi, "", &sz],
        vec![attr_s("mode", "nearest")],
    );
    let cat = b.op("Concat", &[&u, &r1], vec![attr_i("axis", 1)]);
    let d = b.conv(&cat, 20, 8, 3, 1, 1);
    let gap = b.op("GlobalAveragePool", &[&d], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[5, 8], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[1, 5]);
    b.build()
}

/// The fixture shipped as `models/tiny_resnet.onnx`: a small CIFAR-shaped residual CNN with BN,
/// Identity/Dropout, a torch-style Shape→Gather→Unsqueeze→Concat→Reshape flatten and a
/// constant channel-pad shortcut (as the CIFAR ResNets in ../shared compute it).
pub fn tiny_resnet(seed: u64) -> pb::ModelProto {
    let mut b = ModelBuilder::new(17, seed);
    let x = b.input("input", &[-1, 3, 32, 32]);
    let c1 = b.conv(&x, 3, 16, 3, 1, 1);
    let n1 = b.bn(&c1, 16);
    let r1 = b.op("Relu", &[&n1], vec![]);
    // residual block 16 -> 16
    let c2 = b.conv(&r1, 16, 16, 3, 1, 1);
    let n2 = b.bn(&c2, 16);
    let r2 = b.op("Relu", &[&n2], vec![]);
    let c3 = b.conv(&r2, 16, 16, 3, 1, 1);
    let n3 = b.bn(&c3, 16);
    let a1 = b.op("Add", &[&n3, &r1], vec![]);
    let r3 = b.op("Relu", &[&a1], vec![]);
    // downsampling block 16 -> 32 with an option-A shortcut: x[:, :, ::2, ::2] padded with 8
    // zero channels on each side, pads computed by a constant subgraph.
    let c4 = b.conv(&r3, 16, 32, 3, 2, 1);
    let n4 = b.bn(&c4, 32);
    let r4 = b.op("Relu", &[&n4], vec![]);
    let c5 = b.conv(&r4, 32, 32, 3, 1, 1);
    let n5 = b.bn(&c5, 32);
    let st = b.const_i64(&[2], &[0, 0]);
    let en = b.const_i64(&[2], &[i64::MAX, i64::MAX]);
    let ax = b.const_i64(&[2], &[2, 3]);
    let sp = b.const_i64(&[2], &[2, 2]);
    let sl = b.op("Slice", &[&r3, &st, &en, &ax, &sp], vec![]);
    let zeros_shape = b.const_i64(&[1], &[4]);
    let zeros = b.op(
        "ConstantOfShape",
        &[&zeros_shape],
        vec![attr_t("value", tensor_i64("", &[1], &[0]))],
    );
    let chan = b.const_i64(&[4], &[8, 0, 8, 0]);
    let pads4 = b.op("Concat", &[&zeros, &chan], vec![attr_i("axis", 0)]);
    let pads_r = b.const_i64(&[2], &[2, 4]);
    let pads_m = b.op("Reshape", &[&pads4, &pads_r], vec![]);
    let pads_t = b.op("Transpose", &[&pads_m], vec![attr_ints("perm", &[1, 0])]);
    let flat = b.const_i64(&[1], &[-1]);
    let pads = b.op("Reshape", &[&pads_t, &flat], vec![]);
    let pads = b.op("Cast", &[&pads], vec![attr_i("to", 7)]);
    let padded = b.op("Pad", &[&sl, &pads], vec![attr_s("mode", "constant")]);
    let a2 = b.op("Add", &[&n5, &padded], vec![]);
    let r5 = b.op("Relu", &[&a2], vec![]);
    let id = b.op("Identity", &[&r5], vec![]);
    let gap = b.op("GlobalAveragePool", &[&id], vec![]);
    // torch-style flatten: x.view(x.size(0), -1)
    let shp = b.op("Shape", &[&gap], vec![]);
    let zero = b.const_i64(&[], &[0]);
    let n = b.op("Gather", &[&shp, &zero], vec![attr_i("axis", 0)]);
    let ax0 = b.const_i64(&[1], &[0]);
    let n1d = b.op("Unsqueeze", &[&n, &ax0], vec![]);
    let m1 = b.const_i64(&[1], &[-1]);
    let tgt = b.op("Concat", &[&n1d, &m1], vec![attr_i("axis", 0)]);
    let fl = b.op("Reshape", &[&gap, &tgt], vec![]);
    let dr = b.node("Dropout", &[&fl], vec![], 1).remove(0);
    let w = b.weight("fc_w", &[10, 32], 0.3);
    let bias = b.weight("fc_b", &[10], 0.1);
    b.op("Gemm", &[&dr, &w, &bias], vec![attr_i("transB", 1)]);
    b.rename_last_output("logits");
    b.output("logits", &[-1, 10]);
    b.build()
}

/// The untrained network behind `models/digits_cnn.onnx` (`cargo run --release --example
/// make_fixtures` trains it on `fixtures/digits_train.npz`): 8×8 grey digits, two conv pairs
/// around a max-pool, global average pooling and a linear classifier (1.5 M MACs).
pub fn digits_cnn(seed: u64) -> pb::ModelProto {
    let mut b = ModelBuilder::new(17, seed);
    let x = b.input("input", &[-1, 1, 8, 8]);
    let c1 = b.conv(&x, 1, 32, 3, 1, 1);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let c2 = b.conv(&r1, 32, 32, 3, 1, 1);
    let r2 = b.op("Relu", &[&c2], vec![]);
    let p = b.op(
        "MaxPool",
        &[&r2],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    let c3 = b.conv(&p, 32, 64, 3, 1, 1);
    let r3 = b.op("Relu", &[&c3], vec![]);
    let c4 = b.conv(&r3, 64, 64, 3, 1, 1);
    let r4 = b.op("Relu", &[&c4], vec![]);
    let gap = b.op("GlobalAveragePool", &[&r4], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc_w", &[10, 64], (3.0f32 / 64.0).sqrt());
    let bias = b.weight("fc_b", &[10], 0.1);
    b.op("Gemm", &[&fl, &w, &bias], vec![attr_i("transB", 1)]);
    b.rename_last_output("logits");
    b.output("logits", &[-1, 10]);
    b.build()
}
