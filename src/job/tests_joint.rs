//! `--agent joint` on the tiny ResNet: the masked network computes the cut, and the alignment
//! does what it is for (no timing).

use super::masked::{masked_logits, masks};
use crate::data::Dataset;
use crate::learn::train::TrainOptions;
use crate::learn::train::Trainer;
use crate::net::Net;
use crate::search::datafree::Pruner;
use crate::search::datafree::{Allocation, Method};
use burn::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

fn tiny() -> Pruner {
    crate::search::datafree::tiny_pruner(5)
}

fn random_data(n: usize, seed: u64) -> Dataset {
    Dataset {
        n,
        c: 3,
        h: 32,
        w: 32,
        x: crate::data::random_inputs(&[vec![n, 3, 32, 32]], seed)[0]
            .data
            .clone(),
        y: Some((0..n as i64).map(|i| i % 10).collect()),
        classes: None,
    }
}

/// A plan of the tiny ResNet at two fifths of its MACs (uniform, L1 order).
fn two_fifths(p: &Pruner) -> Vec<bool> {
    p.allocate(
        p.base_macs * 2 / 5,
        &p.importance(Method::L1, 0),
        Allocation::Uniform,
        1,
    )
}

/// The largest difference of `a` and `b` relative to the largest magnitude of `a`.
fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
    a.iter().zip(b).fold(0f32, |s, (x, y)| s.max((x - y).abs())) / scale
}

/// Plain SGD at 1e-2 on batches of 16 for `steps`, no augmentation.
fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        lr: 1e-2,
        batch: 16,
        steps,
        augment: false,
        ..Default::default()
    }
}

/// Runs `tr` on `net` to its step count, quietly.
fn train(tr: &mut Trainer, net: &mut Net, data: &Dataset) {
    let stop = AtomicBool::new(false);
    tr.run(net, None, data, &stop, &mut |_| {}, &mut |_, _| Ok(()))
        .unwrap();
}

/// Sum of squares of the masked (`removed`) and the other weights of the masked parameters.
fn norms(net: &Net, m: &[(usize, Tensor<6>)]) -> (f64, f64) {
    let (mut r, mut k) = (0.0, 0.0);
    for (i, mask) in m {
        let w = net.param(*i).t.inner();
        let rm = (w.clone() * mask.clone())
            .powf_scalar(2.0)
            .sum()
            .into_scalar::<f32>() as f64;
        r += rm;
        k += w.powf_scalar(2.0).sum().into_scalar::<f32>() as f64 - rm;
    }
    (r, k)
}

/// On the tiny ResNet, trained for 60 steps on random labelled images with and without
/// alignment to a half-MACs plan: the alignment drives the weights the plan removes
/// towards zero while the kept ones stay, and the real cut of the aligned network changes
/// its outputs less than the cut of the unaligned one (both against the network they were
/// cut from, on held-out inputs).
#[test]
fn alignment_drives_the_removed_weights_to_zero_and_the_cut_changes_less() {
    let p = tiny();
    let keep = p.allocate(
        p.base_macs / 2,
        &p.importance(Method::L1, 0),
        Allocation::Uniform,
        1,
    );
    assert!(keep.iter().any(|k| !k));
    let data = random_data(64, 11);
    let test = random_data(16, 12);
    let (device, _) = crate::net::device();
    let mut cut_error = vec![];
    for strength in [0.0, 0.1] {
        let mut net = Net::new(&p.model, &device).unwrap();
        let m = masks(&p, &net, &keep).unwrap();
        let (r0, k0) = norms(&net, &m);
        let mut tr = Trainer::new(&net, options(60));
        tr.align = m.clone();
        tr.align_strength = strength;
        train(&mut tr, &mut net, &data);
        let (r1, k1) = norms(&net, &m);
        eprintln!(
            "alignment {strength}: removed weights' norm² {r0:.3} -> {r1:.3e}, kept {k0:.3} -> {k1:.3}"
        );
        if strength > 0.0 {
            assert!(r1 < r0 * 1e-3, "{r0} -> {r1}");
            assert!(k1 > k0 * 0.5, "{k0} -> {k1}");
        } else {
            assert!(r1 > r0 * 0.5, "{r0} -> {r1}");
        }
        // The cut of the trained network against the trained network itself.
        let full = masked_logits(&mut net, &[], &test).unwrap();
        let trained = Pruner::new(&net.write_back(), &HashMap::new()).unwrap();
        let cut = trained.apply(&keep).unwrap();
        let mut cut_net = Net::new(&cut, &device).unwrap();
        let out = masked_logits(&mut cut_net, &[], &test).unwrap();
        let err = full
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / full.iter().map(|a| a * a).sum::<f32>().max(1e-12);
        cut_error.push(err);
    }
    eprintln!(
        "relative squared change of the outputs by the cut: unaligned {:.3e}, aligned {:.3e}",
        cut_error[0], cut_error[1]
    );
    assert!(cut_error[1] < cut_error[0] * 0.1, "{cut_error:?}");
}

/// The masked network computes what the surgery's model computes (the masks mark exactly
/// the weights the cut removes).
#[test]
fn masking_the_burn_network_equals_the_cut() {
    let p = tiny();
    let keep = two_fifths(&p);
    let test = random_data(8, 13);
    let (device, _) = crate::net::device();
    let mut net = Net::new(&p.model, &device).unwrap();
    let m = masks(&p, &net, &keep).unwrap();
    let masked = masked_logits(&mut net, &m, &test).unwrap();
    let full_again = masked_logits(&mut net, &[], &test).unwrap();
    let mut cut = Net::new(&p.apply(&keep).unwrap(), &device).unwrap();
    let out = masked_logits(&mut cut, &[], &test).unwrap();
    let diff = rel_max_diff(&out, &masked);
    assert!(diff < 1e-4, "masked vs cut: {diff} of the largest output");
    // The network is restored after the masked pass.
    let full = Net::new(&p.model, &device).unwrap();
    let mut full = full;
    assert_eq!(masked_logits(&mut full, &[], &test).unwrap(), full_again);
}

/// `--joint-train sub` on the tiny ResNet: the cut network computes what the masked whole
/// network does; after training the cut network and writing it back, the whole network's
/// masked outputs are the trained cut network's, the weights the structure removes are
/// unchanged, and the optimiser state comes back where it was cut from.
#[test]
fn the_trained_cut_network_writes_back_into_the_whole_one() {
    use super::subnet::SubNet;
    let p = tiny();
    let keep = two_fifths(&p);
    let data = random_data(64, 21);
    let test = random_data(8, 22);
    let (device, _) = crate::net::device();
    let mut net = Net::new(&p.model, &device).unwrap();
    let mut tr = Trainer::new(&net, options(20));
    let mut sub = SubNet::cut(&p, &net, &keep, &device).unwrap();
    let m = masks(&p, &net, &keep).unwrap();
    let before: Vec<Vec<f32>> = (0..net.params().len())
        .map(|i| net.param(i).to_vec())
        .collect();
    let masked0 = masked_logits(&mut net, &m, &test).unwrap();
    let sub0 = masked_logits(&mut sub.net, &[], &test).unwrap();
    assert!(
        rel_max_diff(&masked0, &sub0) < 1e-4,
        "cut vs masked before training"
    );

    let mut full = tr.swap_state(vec![]);
    tr.swap_state(sub.gather_state(&full));
    train(&mut tr, &mut sub.net, &data);
    let state = tr.swap_state(vec![]);
    sub.write_back(&mut net, &state, &mut full);

    let sub1 = masked_logits(&mut sub.net, &[], &test).unwrap();
    let masked1 = masked_logits(&mut net, &m, &test).unwrap();
    assert!(
        rel_max_diff(&sub0, &sub1) > 1e-3,
        "training changed nothing"
    );
    assert!(
        rel_max_diff(&masked1, &sub1) < 1e-4,
        "written back vs trained cut"
    );
    // The removed consumers' weights did not move; the kept ones did.
    let mut moved = 0;
    for (i, mask) in &m {
        let mk = mask.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let now = net.param(*i).to_vec();
        for ((w0, w1), r) in before[*i].iter().zip(&now).zip(&mk) {
            if *r > 0.5 {
                assert_eq!(w0, w1, "a removed weight of parameter {i} changed");
            } else if w0 != w1 {
                moved += 1;
            }
        }
    }
    assert!(moved > 0, "no kept weight was written back");
    // The optimiser's state round-trips: cut again from the written-back state.
    let again = sub.gather_state(&full);
    for (a, b) in again.iter().flatten().zip(state.iter().flatten()) {
        let (a, b) = (
            a.to_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
            b.to_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a, b);
    }
    assert!(state
        .iter()
        .flatten()
        .any(|t| t.clone().abs().sum().into_scalar::<f32>() > 0.0));
}
