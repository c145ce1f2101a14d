//! Surgery on decoders (Resize by scales or sizes), depthwise and SE gates, grouped and
//! transposed convolutions, channel shuffles, shared initialisers, group/instance/layer
//! normalisation and reshapes that tie channels.

use super::{assert_pruned, check, head, model};
use onnx_prune::onnx;
use onnx_prune::onnx::builder::{self, attr_f, attr_i, attr_ints, attr_s, ModelBuilder};
use onnx_prune::search::datafree::{Allocation, Pruner};
use prost::Message;
use std::collections::HashMap;

/// How a decoder's `Resize` gets its output size.
#[derive(Clone, Copy, Debug)]
enum Up {
    Scales,
    /// A constant `sizes` (what folding `Shape` of concrete tensors leaves).
    ConstSizes,
    /// `sizes` = Concat(Shape(x)[0:2], Shape(skip)[2:4]) (torch `interpolate(size=…)`).
    ShapeSizes,
}

fn upsample(b: &mut ModelBuilder, x: &str, skip: &str, c: i64, hw: i64, up: Up) -> String {
    let empty = b.init_f32("roi", &[0], &[]);
    let mode = attr_s("mode", "nearest");
    match up {
        Up::Scales => {
            let sc = b.init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
            b.op("Resize", &[x, &empty, &sc], vec![mode])
        }
        Up::ConstSizes => {
            let sz = b.init_i64("sizes", &[4], &[1, c, hw, hw]);
            b.op("Resize", &[x, &empty, "", &sz], vec![mode])
        }
        Up::ShapeSizes => {
            let sx = b.op("Shape", &[x], vec![]);
            let ss = b.op("Shape", &[skip], vec![]);
            let (z, two, four) = (
                b.init_i64("z", &[1], &[0]),
                b.init_i64("two", &[1], &[2]),
                b.init_i64("four", &[1], &[4]),
            );
            let nc = b.op("Slice", &[&sx, &z, &two], vec![]);
            let hw2 = b.op("Slice", &[&ss, &two, &four], vec![]);
            let sz = b.op("Concat", &[&nc, &hw2], vec![attr_i("axis", 0)]);
            b.op("Resize", &[x, &empty, "", &sz], vec![mode])
        }
    }
}

/// U-Net decoder step (a deep feature upsampled, concatenated with the skip, convs) and an
/// LR-ASPP head (a feature times a pooled sigmoid gate, upsampled, added to a classifier of the
/// skip), with the three ways a Resize gets its size.
#[test]
fn unet_and_lraspp_decoders() {
    for up in [Up::Scales, Up::ConstSizes, Up::ShapeSizes] {
        let m = model(|b, x| {
            let e1 = b.conv(x, 3, 8, 3, 1, 1);
            let r1 = b.op("Relu", &[&e1], vec![]);
            let e2 = b.conv(&r1, 8, 12, 3, 2, 1);
            let r2 = b.op("Relu", &[&e2], vec![]);
            let u = upsample(b, &r2, &r1, 12, 8, up);
            let cat = b.op("Concat", &[&u, &r1], vec![attr_i("axis", 1)]);
            let d = b.conv(&cat, 20, 8, 3, 1, 1);
            (b.op("Relu", &[&d], vec![]), 8)
        });
        let o = check(&format!("unet_{up:?}"), m, Allocation::Uniform);
        assert_pruned(&o);
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "unet {up:?}: {:?}",
            o.declined
        );
        let m = model(|b, x| {
            let low = b.conv(x, 3, 8, 3, 1, 1);
            let rl = b.op("Relu", &[&low], vec![]);
            let high = b.conv(&rl, 8, 12, 3, 2, 1);
            let rh = b.op("Relu", &[&high], vec![]);
            let cbr = b.conv(&rh, 12, 10, 1, 1, 1);
            let gap = b.op("GlobalAveragePool", &[&rh], vec![]);
            let sc = b.conv(&gap, 12, 10, 1, 1, 1);
            let gate = b.op("Sigmoid", &[&sc], vec![]);
            let g = b.op("Mul", &[&cbr, &gate], vec![]);
            let u = upsample(b, &g, &rl, 10, 8, up);
            let hc = b.conv(&u, 10, 4, 1, 1, 1);
            let lc = b.conv(&rl, 8, 4, 1, 1, 1);
            (b.op("Add", &[&lc, &hc], vec![]), 4)
        });
        let o = check(&format!("lraspp_{up:?}"), m, Allocation::Uniform);
        assert_pruned(&o);
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "lraspp {up:?}: {:?}",
            o.declined
        );
    }
}

#[test]
fn depthwise_and_se_gate() {
    let m = model(|b, x| {
        let c1 = b.conv(x, 3, 8, 1, 1, 1);
        let dw = b.conv(&c1, 8, 8, 3, 1, 8);
        let r = b.op("HardSwish", &[&dw], vec![]);
        // squeeze-excite: x * sigmoid(fc2(relu(fc1(gap(x)))))
        let gap = b.op("GlobalAveragePool", &[&r], vec![]);
        let f1 = b.conv(&gap, 8, 4, 1, 1, 1);
        let f1r = b.op("Relu", &[&f1], vec![]);
        let f2 = b.conv(&f1r, 4, 8, 1, 1, 1);
        let gate = b.op("HardSigmoid", &[&f2], vec![]);
        let se = b.op("Mul", &[&r, &gate], vec![]);
        (b.conv(&se, 8, 6, 1, 1, 1), 6)
    });
    for alloc in [Allocation::Uniform, Allocation::Global] {
        assert_pruned(&check("depthwise_se", m.clone(), alloc));
    }
}

#[test]
fn grouped_conv_keeps_equal_counts_per_group() {
    // A grouped conv (group 2): its input and output channels prune with every group keeping
    // the same count; a 3-group conv after a residual add constrains the residual group too.
    let m = model(|b, x| {
        let c1 = b.conv(x, 3, 8, 3, 1, 1);
        let g = b.conv(&c1, 8, 8, 3, 1, 2);
        let r = b.op("Relu", &[&g], vec![]);
        let c2 = b.conv(&r, 8, 12, 1, 1, 1);
        let g3 = b.conv(&c2, 12, 12, 3, 1, 3);
        let a = b.op("Add", &[&g3, &c2], vec![]);
        (b.conv(&a, 12, 6, 3, 1, 1), 6)
    });
    for alloc in [Allocation::Uniform, Allocation::Global] {
        let o = check("grouped", m.clone(), alloc);
        assert!(
            o.declined.iter().all(|d| !d.contains("grouped")),
            "{:?}",
            o.declined
        );
        assert_pruned(&o);
    }
}

#[test]
fn conv_transpose() {
    let m = model(|b, x| {
        let c1 = b.conv(x, 3, 8, 3, 2, 1);
        let w = b.weight("wt", &[8, 6, 2, 2], 0.3);
        let bias = b.weight("bt", &[6], 0.1);
        let t = b.op(
            "ConvTranspose",
            &[&c1, &w, &bias],
            vec![attr_ints("strides", &[2, 2])],
        );
        (b.conv(&t, 6, 4, 3, 1, 1), 4)
    });
    assert_pruned(&check("conv_transpose", m, Allocation::Uniform));
}

/// Reshape (N,g,C/g,H,W) → Transpose → Reshape (N,C,H,W): a fixed permutation. Channel `b` of
/// every shuffle group is one atom, so the producer keeps the same positions in each group and
/// the shuffle of the pruned tensor is the pruned shuffle.
fn shuffle(b: &mut ModelBuilder, x: &str, g: i64, c: i64, hw: i64) -> String {
    let s1 = b.init_i64("s1", &[5], &[1, g, c / g, hw, hw]);
    let r1 = b.op("Reshape", &[x, &s1], vec![]);
    let t = b.op(
        "Transpose",
        &[&r1],
        vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
    );
    let s2 = b.init_i64("s2", &[4], &[1, c, hw, hw]);
    b.op("Reshape", &[&t, &s2], vec![])
}

/// With a symbolic batch torch's exports compute shapes at run time: a channel shuffle's
/// targets are `Concat(batch from Shape, constants…)` (the channel entry is a constant piece,
/// rewritten), and `F.interpolate(x, size=…)` gives Resize `sizes = Concat(Shape(x)[0:2],
/// Shape(skip)[2:4])` (the channel entry is x's own, so it follows). Both prune exactly.
#[test]
fn dynamic_batch_shuffle_and_interpolate() {
    let batch = |b: &mut ModelBuilder, x: &str| {
        let sx = b.op("Shape", &[x], vec![]);
        let zero = b.init_i64("zero", &[], &[0]);
        let n = b.op("Gather", &[&sx, &zero], vec![attr_i("axis", 0)]);
        let ax = b.init_i64("ax0", &[1], &[0]);
        b.op("Unsqueeze", &[&n, &ax], vec![])
    };
    let mut b = ModelBuilder::new(17, 16);
    let x = b.input("x", &[-1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let n1 = batch(&mut b, &c1);
    let rest1 = b.init_i64("rest1", &[4], &[2, 4, 8, 8]);
    let t1 = b.op("Concat", &[&n1, &rest1], vec![attr_i("axis", 0)]);
    let r1 = b.op("Reshape", &[&c1, &t1], vec![]);
    let tr = b.op(
        "Transpose",
        &[&r1],
        vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
    );
    let n2 = batch(&mut b, &tr);
    let rest2 = b.init_i64("rest2", &[3], &[8, 8, 8]);
    let t2 = b.op("Concat", &[&n2, &rest2], vec![attr_i("axis", 0)]);
    let sh = b.op("Reshape", &[&tr, &t2], vec![]);
    let down = b.conv(&sh, 8, 12, 3, 2, 1);
    let rd = b.op("Relu", &[&down], vec![]);
    let (sx, ss) = (b.op("Shape", &[&rd], vec![]), b.op("Shape", &[&sh], vec![]));
    let (z, two, four) = (
        b.init_i64("z", &[1], &[0]),
        b.init_i64("two", &[1], &[2]),
        b.init_i64("four", &[1], &[4]),
    );
    let nc = b.op("Slice", &[&sx, &z, &two], vec![]);
    let hw = b.op("Slice", &[&ss, &two, &four], vec![]);
    let sz = b.op("Concat", &[&nc, &hw], vec![attr_i("axis", 0)]);
    let roi = b.init_f32("roi", &[0], &[]);
    let up = b.op(
        "Resize",
        &[&rd, &roi, "", &sz],
        vec![attr_s("mode", "nearest")],
    );
    let cat = b.op("Concat", &[&up, &sh], vec![attr_i("axis", 1)]);
    let d = b.conv(&cat, 20, 6, 3, 1, 1);
    let rdd = b.op("Relu", &[&d], vec![]);
    let gap = b.op("GlobalAveragePool", &[&rdd], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[5, 6], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[-1, 5]);
    let m = b.build();
    for alloc in [Allocation::Uniform, Allocation::Global] {
        let o = check(&format!("dynamic_batch_{alloc:?}"), m.clone(), alloc);
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "{:?}",
            o.declined
        );
        // The concat joins both producers in one group: 8 channels in 2 shuffle groups are 4
        // atoms, and the upsampled conv's 12 channels are 12.
        let (kept, atoms) = o.group_of(&c1);
        assert_eq!(atoms, 4 + 12, "{:?}", o.kept);
        assert!(kept < atoms, "{alloc:?}: nothing was cut ({kept}/{atoms})");
    }
}

#[test]
fn channel_shuffle_prunes_exactly() {
    let mut c1 = String::new();
    let m = model(|b, x| {
        c1 = b.conv(x, 3, 8, 3, 1, 1);
        let sh = shuffle(b, &c1, 2, 8, 8);
        let c2 = b.conv(&sh, 8, 8, 3, 1, 1);
        (b.op("Relu", &[&c2], vec![]), 8)
    });
    for alloc in [Allocation::Uniform, Allocation::Global] {
        let o = check("shuffle", m.clone(), alloc);
        // Only the classifier's output group (a graph output) is declined.
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "{:?}",
            o.declined
        );
        let (kept, atoms) = o.group_of(&c1);
        assert_eq!(atoms, 4, "8 channels in 2 shuffle groups are 4 atoms");
        assert!(kept < atoms, "the shuffled producer lost nothing");
    }
}

/// A ShuffleNet v1 unit: grouped 1×1 conv, BN, ReLU, shuffle, depthwise 3×3, grouped 1×1 conv,
/// residual add; and a split → merge without the transpose (blocks stay in place).
#[test]
fn shufflenet_v1_unit_and_split_merge() {
    let mut g1 = String::new();
    let m = model(|b, x| {
        let stem = b.conv(x, 3, 12, 3, 1, 1);
        let r0 = b.op("Relu", &[&stem], vec![]);
        g1 = b.conv(&r0, 12, 12, 1, 1, 3);
        let n1 = b.bn(&g1, 12);
        let r1 = b.op("Relu", &[&n1], vec![]);
        let sh = shuffle(b, &r1, 3, 12, 8);
        let dw = b.conv(&sh, 12, 12, 3, 1, 12);
        let n2 = b.bn(&dw, 12);
        let g2 = b.conv(&n2, 12, 12, 1, 1, 3);
        let n3 = b.bn(&g2, 12);
        let sum = b.op("Add", &[&n3, &r0], vec![]);
        (b.op("Relu", &[&sum], vec![]), 12)
    });
    for alloc in [Allocation::Uniform, Allocation::Global] {
        let o = check("shufflenet_v1", m.clone(), alloc);
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "{:?}",
            o.declined
        );
        assert_pruned(&o);
        let (_, atoms) = o.group_of(&g1);
        assert_eq!(atoms, 4, "12 channels in 3 shuffle groups are 4 atoms");
    }
    let mut c1 = String::new();
    let m = model(|b, x| {
        c1 = b.conv(x, 3, 8, 3, 1, 1);
        let s1 = b.init_i64("s1", &[5], &[1, 2, 4, 8, 8]);
        let r1 = b.op("Reshape", &[&c1, &s1], vec![]);
        let r = b.op("Relu", &[&r1], vec![]);
        let s2 = b.init_i64("s2", &[4], &[1, -1, 8, 8]);
        let r2 = b.op("Reshape", &[&r, &s2], vec![]);
        (b.conv(&r2, 8, 6, 3, 1, 1), 6)
    });
    let o = check("split_merge", m, Allocation::Uniform);
    let (kept, atoms) = o.group_of(&c1);
    assert!(atoms == 4 && kept < atoms, "{kept}/{atoms}");
}

#[test]
fn shared_initializer_and_graph_output_width() {
    // Two convs read one weight; a conv output is also a graph output (its width must stay).
    let mut b = ModelBuilder::new(17, 4);
    let x = b.input("x", &[1, 4, 8, 8]);
    let w = b.weight("shared", &[4, 4, 3, 3], 0.3);
    let pads = attr_ints("pads", &[1, 1, 1, 1]);
    let c1 = b.op("Conv", &[&x, &w], vec![pads.clone()]);
    let r1 = b.op("Relu", &[&c1], vec![]);
    let c2 = b.op("Conv", &[&r1, &w], vec![pads]);
    let side = b.rename_last_output("side");
    b.output("side", &[1, 4, 8, 8]);
    let r2 = b.op("Relu", &[&side], vec![]);
    let c3 = b.conv(&r2, 4, 6, 3, 1, 1);
    let _ = c2;
    head(&mut b, &c3, 6);
    let o = check("shared_and_output", b.build(), Allocation::Uniform);
    assert!(
        o.declined.iter().any(|d| d.contains("graph output 'side'")),
        "{:?}",
        o.declined
    );
    assert_pruned(&o);
}

/// GroupNormalization (issue #23 item 4): its statistics run over each group of C/G channels,
/// so removing a whole group is exact; the C/G channels of a group form one atom, `num_groups`
/// becomes the kept count, and `scale`/`bias` are cut per channel (opset 21) or per group (opset
/// 18, where they have one value per group).
#[test]
fn group_normalization_prunes_whole_groups() {
    for opset in [18i64, 21] {
        for alloc in [Allocation::Uniform, Allocation::Global] {
            let mut b = ModelBuilder::new(opset, 12);
            let x = b.input("x", &[1, 3, 8, 8]);
            let c1 = b.conv(&x, 3, 12, 3, 1, 1);
            let np = if opset >= 21 { 12 } else { 4 };
            let scale = b.weight("gn_scale", &[np], 1.0);
            let bias = b.weight("gn_bias", &[np], 0.2);
            let gn = b.op(
                "GroupNormalization",
                &[&c1, &scale, &bias],
                vec![attr_i("num_groups", 4), attr_f("epsilon", 1e-5)],
            );
            let r1 = b.op("Relu", &[&gn], vec![]);
            let c2 = b.conv(&r1, 12, 8, 3, 1, 1);
            let r2 = b.op("Relu", &[&c2], vec![]);
            head(&mut b, &r2, 8);
            let o = check(&format!("groupnorm_{opset}_{alloc:?}"), b.build(), alloc);
            assert!(
                o.declined.iter().all(|d| d.contains("graph output")),
                "opset {opset}: {:?}",
                o.declined
            );
            let (kept, atoms) = o.group_of(&c1);
            assert_eq!(atoms, 4, "12 channels in 4 norm groups are 4 atoms");
            assert!(
                kept < atoms,
                "opset {opset} {alloc:?}: no norm group was cut"
            );
        }
    }
}

/// GroupNorm as torch exports it below opset 18 (issue #23 item 4): `Reshape(x, [0, G, -1])` →
/// InstanceNormalization (unit scale, zero bias per group) → `Reshape` back (to `Shape(x)`, or
/// to a constant shape when the batch is fixed) → `Mul`/`Add` by the per-channel affine.
/// Whole norm groups are atoms and prune exactly, as for `GroupNormalization`.
#[test]
fn group_norm_exported_as_instance_norm_prunes_whole_groups() {
    for (dynamic, alloc) in [
        (true, Allocation::Uniform),
        (false, Allocation::Uniform),
        (true, Allocation::Global),
    ] {
        let (m, c1) = builder::group_norm_opset17(dynamic, 14);
        let name = format!("groupnorm17_dynamic{dynamic}_{alloc:?}");
        let o = check(&name, m, alloc);
        assert!(
            o.declined.iter().all(|d| d.contains("graph output")),
            "{name}: {:?}",
            o.declined
        );
        let (kept, atoms) = o.group_of(&c1);
        assert_eq!(atoms, 4, "{name}: 12 channels in 4 norm groups are 4 atoms");
        assert!(kept < atoms, "{name}: no norm group was cut");
    }
}

/// `x.view(other.size())` where `other`'s channels are traced apart from x's: the target
/// follows `other`'s kept channels after pruning, so the reshape ties the two (one group, the
/// same atoms removed from both), and the pruned model stays exact.
#[test]
fn reshape_to_the_shape_of_another_tensor_ties_their_channels() {
    let mut b = ModelBuilder::new(17, 15);
    let x = b.input("x", &[-1, 3, 8, 8]);
    let a = b.conv(&x, 3, 8, 3, 1, 1);
    let c = b.conv(&x, 3, 8, 3, 1, 1);
    let ra = b.op("Relu", &[&a], vec![]);
    let shape_c = b.op("Shape", &[&c], vec![]);
    let y = b.op("Reshape", &[&ra, &shape_c], vec![]);
    let cat = b.op("Concat", &[&y, &c], vec![attr_i("axis", 1)]);
    let c2 = b.conv(&cat, 16, 6, 3, 1, 1);
    let gap = b.op("GlobalAveragePool", &[&c2], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[5, 6], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[-1, 5]);
    let o = check("reshape_to_shape_of_other", b.build(), Allocation::Uniform);
    assert!(
        o.declined.iter().all(|d| d.contains("graph output")),
        "{:?}",
        o.declined
    );
    // One group of 8 atoms holds both convs (apart, they would be two groups of 8).
    let (_, atoms) = o.group_of(&a);
    assert_eq!(atoms, 8, "{:?}", o.kept);
    let eights = o.kept.values().filter(|(_, n)| *n == 8).count();
    assert_eq!(eights, 1, "a and c share one group: {:?}", o.kept);
    assert_pruned(&o);
}

/// LayerNormalization over channels (ConvNeXt: Transpose → LayerNormalization → Transpose) is
/// declined with its reason: the statistics mix channels, so the masked original is not what
/// the pruned model computes. Over the spatial axes it passes channels through and the
/// producer prunes exactly.
#[test]
fn layer_norm_over_channels_is_declined_over_space_prunes() {
    for over_channels in [true, false] {
        let mut b = ModelBuilder::new(17, 13);
        let x = b.input("x", &[1, 3, 8, 8]);
        let c1 = b.conv(&x, 3, 8, 3, 1, 1);
        let y = if over_channels {
            let t = b.op("Transpose", &[&c1], vec![attr_ints("perm", &[0, 2, 3, 1])]);
            let s = b.weight("ln_s", &[8], 1.0);
            let bi = b.weight("ln_b", &[8], 0.2);
            let ln = b.op(
                "LayerNormalization",
                &[&t, &s, &bi],
                vec![attr_i("axis", -1)],
            );
            b.op("Transpose", &[&ln], vec![attr_ints("perm", &[0, 3, 1, 2])])
        } else {
            let s = b.weight("ln_s", &[8, 8], 1.0);
            let bi = b.weight("ln_b", &[8, 8], 0.2);
            b.op(
                "LayerNormalization",
                &[&c1, &s, &bi],
                vec![attr_i("axis", 2)],
            )
        };
        let r = b.op("Relu", &[&y], vec![]);
        let c2 = b.conv(&r, 8, 6, 3, 1, 1);
        let r2 = b.op("Relu", &[&c2], vec![]);
        head(&mut b, &r2, 6);
        let m = b.build();
        if over_channels {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("ln.onnx");
            std::fs::write(&f, m.encode_to_vec()).unwrap();
            let p = Pruner::new(&onnx::load(&f).unwrap(), &HashMap::new()).unwrap();
            let g =
                p.ch.groups
                    .iter()
                    .find(|g| {
                        g.key
                            .starts_with(&format!("{}:", c1.trim_end_matches("_out0")))
                    })
                    .unwrap_or_else(|| panic!("no group of {c1}"));
            let why = g.declined.clone().unwrap_or_default();
            assert!(why.contains("statistics mix channels"), "{why:?}");
        } else {
            let o = check("layernorm_spatial", m, Allocation::Uniform);
            let (kept, atoms) = o.group_of(&c1);
            assert!(atoms == 8 && kept < atoms, "{kept}/{atoms}");
        }
    }
}
