//! Feature distillation (`--feature-kd`): the maps it matches are the pruned convolutions'
//! outputs at the channels the plan keeps, a tapped network returns them without changing the
//! model it writes back, and training with the term pulls the pruned network's maps towards
//! the original's (training on labels alone does not).

use super::training::{blobs, decode};
use burn::prelude::*;
use onnx_prune::ir::Model;
use onnx_prune::learn::train::{FeatureKd, Optim, TrainOptions, Trainer};
use onnx_prune::net::{Dt, Net};
use onnx_prune::onnx::builder::{attr_i, ModelBuilder};
use onnx_prune::search::datafree::Pruner;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

/// Conv(1→8) → BN → Relu → Conv(8→8) → BN → Relu → GlobalAveragePool → Flatten → Gemm(8→2),
/// input `[N,1,8,8]`.
fn two_convs(seed: u64) -> Model {
    let mut b = ModelBuilder::new(17, seed);
    let x = b.input("x", &[-1, 1, 8, 8]);
    let mut h = x;
    for cin in [1, 8] {
        let c = b.conv(&h, cin, 8, 3, 1, 1);
        let n = b.bn(&c, 8);
        h = b.op("Relu", &[&n], vec![]);
    }
    let g = b.op("GlobalAveragePool", &[&h], vec![]);
    let f = b.op("Flatten", &[&g], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[2, 8], 0.4);
    let bias = b.weight("fcb", &[2], 0.1);
    b.op("Gemm", &[&f, &w, &bias], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[-1, 2]);
    decode(b.build())
}

/// The mean relative squared error of the student's taps against the teacher's on `x` (the
/// term with weight 1).
fn feature_error(student: &Net, teacher: &Net, fk: &FeatureKd, x: &[f32], n: usize) -> f32 {
    let run = |net: &Net| {
        let xd = Dt::from_vec(x.to_vec(), &[n, 1, 8, 8], &net.device().clone());
        net.infer(xd)
            .unwrap()
            .into_iter()
            .skip(1)
            .collect::<Vec<_>>()
    };
    let one = FeatureKd {
        weight: 1.0,
        kept: fk.kept.clone(),
    };
    one.loss(&run(student), &run(teacher))
        .unwrap()
        .into_scalar::<f32>()
}

#[test]
fn feature_distillation_pulls_the_pruned_maps_to_the_originals() {
    let model = two_convs(3);
    let p = Pruner::new(&model, &HashMap::new()).unwrap();
    // Drop 4 of the first convolution's 8 channels and 2 of the second's.
    let mut keep = vec![true; p.ch.atoms.len()];
    let spaces: Vec<usize> = (0..p.ch.spaces.len())
        .filter(|&s| p.ch.spaces[s].len == 8 && p.ch.kept(s, &keep).len() == 8)
        .collect();
    assert!(spaces.len() >= 2, "two prunable spaces of 8 channels");
    let (a, b) = (spaces[0], spaces[1]);
    for (s, drop) in [(a, &[1usize, 3, 4, 6][..]), (b, &[0, 5][..])] {
        for &i in drop {
            keep[p.ch.atom(s, i)] = false;
        }
    }
    let pruned = p.apply(&keep).unwrap();
    let taps = onnx_prune::search::recover::feature_taps(&p, &keep, &pruned);
    // One map: the second convolution reads pruned channels; the first reads the image.
    assert_eq!(taps.len(), 1, "{taps:?}");
    let kept_b = p.ch.kept(b, &keep);
    let kept_a = p.ch.kept(a, &keep);
    assert!(
        taps[0].2 == kept_a || taps[0].2 == kept_b,
        "kept channels {:?}",
        taps[0].2
    );
    assert_eq!(taps[0].2.len(), 6, "the second convolution keeps 6 of 8");

    let plan = onnx_prune::learn::train::FeaturePlan {
        weight: 5.0,
        taps: taps.clone(),
    };
    let fk = plan.trainer();
    let teacher = Net::with_taps(&p.model, &Device::flex(), &plan.teacher_taps()).unwrap();
    // The teacher against itself at all its channels: no error.
    let all = FeatureKd {
        weight: 1.0,
        kept: vec![(0..8).collect()],
    };
    let test = blobs(128, 7);
    let run = |net: &Net| {
        let xd = Dt::from_vec(test.x.clone(), &[test.n, 1, 8, 8], &Device::flex());
        net.infer(xd)
            .unwrap()
            .into_iter()
            .skip(1)
            .collect::<Vec<_>>()
    };
    let (t1, t2) = (run(&teacher), run(&teacher));
    assert_eq!(t1.len(), 1, "one tap after the output");
    assert_eq!(t1[0].dims(), vec![128, 8, 8, 8]);
    assert_eq!(all.loss(&t1, &t2).unwrap().into_scalar::<f32>(), 0.0);

    let train = blobs(512, 5);
    let device = Device::flex().autodiff();
    let fit = |with: bool| {
        let mut net = Net::with_taps(&pruned, &device, &plan.student_taps()).unwrap();
        // The tapped network writes back the model as it was: one graph output.
        assert_eq!(net.write_back().graph.outputs.len(), 1);
        let before = feature_error(&net, &teacher, &fk, &test.x, test.n);
        let o = TrainOptions {
            optim: Optim::parse("adam").unwrap(),
            lr: 0.01,
            weight_decay: 0.0,
            batch: 32,
            steps: 80,
            augment: false,
            seed: 4,
            ..Default::default()
        };
        let mut tr = Trainer::new(&net, o);
        tr.features = with.then(|| fk.clone());
        let stop = AtomicBool::new(false);
        tr.run(
            &mut net,
            Some(&teacher),
            &train,
            &stop,
            &mut |_| {},
            &mut |_, _| Ok(()),
        )
        .unwrap();
        (before, feature_error(&net, &teacher, &fk, &test.x, test.n))
    };
    let (before, with) = fit(true);
    let (before2, without) = fit(false);
    println!("relative map error: {before:.4} before, {with:.4} after training with the term, {without:.4} with labels alone");
    assert_eq!(before, before2);
    assert!(before > 0.0);
    assert!(with < 0.5 * before, "{before} -> {with}");
    assert!(with < 0.5 * without, "with {with}, without {without}");
}
