//! The latency budget with synthetic profiles (no timing): what the allocation keeps fits the
//! predicted latency, and the MAC target too when both are given.

use super::*;
use crate::search::allocate::Budget;
use crate::search::datafree::Allocation;

fn tiny() -> Pruner {
    crate::search::datafree::tiny_pruner(3)
}

/// A profile whose layers cost `scale(layer) · cin · cout` µs with a staircase of 16 on the
/// output channels, plus 0.2 ms outside the layers.
fn synthetic(p: &Pruner, scale: &dyn Fn(usize) -> f64) -> Profile {
    let mut layers = vec![];
    let keys = layer_keys(p);
    let mut total = 0.2;
    for (k, (node, inp, out)) in p.node_spaces().into_iter().enumerate() {
        let g = |s: Option<SpaceId>| s.map_or(vec![1], |s| measure::grid(p.ch.spaces[s].len, 8, 5));
        let (ins, outs) = (g(inp), g(out));
        let ms: Vec<Vec<f64>> = ins
            .iter()
            .map(|&ci| {
                outs.iter()
                    .map(|&co| scale(k) * 1e-3 * ci as f64 * (co.div_ceil(16) * 16) as f64)
                    .collect()
            })
            .collect();
        total += ms.last().unwrap().last().unwrap();
        layers.push(LayerProfile {
            node: keys[&node].clone(),
            op: p.model.graph.node(node).op_type.clone(),
            in_counts: ins,
            out_counts: outs,
            tied: false,
            ms,
        });
    }
    Profile {
        format: FORMAT.into(),
        version: VERSION,
        model_sha256: String::new(),
        runtime: "ort".into(),
        runtime_line: String::new(),
        threads: 1,
        batch: 1,
        input_shape: vec![1, 3, 32, 32],
        model_ms: total,
        runs: 1,
        overhead_ms: 0.0,
        created_by: "test".into(),
        layers,
        staircase: None,
    }
}

#[test]
fn the_allocation_fits_the_predicted_latency() {
    let p = tiny();
    let lm = LatencyModel::new(synthetic(&p, &|_| 1.0), &p);
    assert!(lm.unmatched.is_empty(), "{:?}", lm.unmatched);
    assert_eq!(lm.layer_names().len(), p.node_spaces().len());
    let full = lm.predict(&p.space_counts(&vec![true; p.ch.atoms.len()]));
    assert!((full - lm.profile.model_ms).abs() < 1e-9);
    let imp = p.importance(crate::search::datafree::Method::L1, 0);
    for alloc in [Allocation::Uniform, Allocation::Global] {
        for r in [0.4, 0.6, 0.8] {
            let goal = full * r;
            let b = Budget {
                macs: p.base_macs,
                latency: Some((&lm, goal)),
            };
            let keep = p.allocate_within(&b, &imp, alloc, 8);
            let pred = lm.predict(&p.space_counts(&keep));
            assert!(pred <= goal, "{alloc:?} {r}: {pred} > {goal}");
            // The budget is spent, not just met: within one 8-channel step of every layer.
            assert!(pred > goal * 0.6, "{alloc:?} {r}: {pred} far below {goal}");
        }
    }
}

#[test]
fn with_both_targets_both_hold() {
    let p = tiny();
    // Latency concentrated in the first two layers: the latency budget and the MAC budget
    // bind on different plans.
    let lm = LatencyModel::new(synthetic(&p, &|k| if k < 2 { 20.0 } else { 0.1 }), &p);
    let imp = p.importance(crate::search::datafree::Method::L1, 0);
    let full = lm.profile.model_ms;
    // The smallest plan's predicted latency (the staircase and the image channels bound it).
    let floor = {
        let b = Budget {
            macs: p.base_macs,
            latency: Some((&lm, 0.0)),
        };
        lm.predict(&p.space_counts(&p.allocate_within(&b, &imp, Allocation::Uniform, 8)))
    };
    assert!(floor < full * 0.8, "{floor} of {full}: nothing to prune");
    let lat = |f: f64| (floor + f * (full - floor)) / full;
    for (rm, rl) in [(0.9, lat(0.3)), (0.4, lat(0.95)), (0.6, lat(0.6))] {
        let macs = (p.base_macs as f64 * rm) as u64;
        let b = Budget {
            macs,
            latency: Some((&lm, full * rl)),
        };
        let keep = p.allocate_within(&b, &imp, Allocation::Uniform, 8);
        assert!(p.macs(&keep) <= macs, "({rm}, {rl}): MACs over");
        assert!(
            lm.predict(&p.space_counts(&keep)) <= full * rl,
            "({rm}, {rl}): latency over"
        );
    }
}

#[test]
fn layers_of_another_model_are_reported_unmatched() {
    let p = tiny();
    let mut pr = synthetic(&p, &|_| 1.0);
    pr.layers[0].node = "not_in_this_model".into();
    let lm = LatencyModel::new(pr, &p);
    assert_eq!(lm.unmatched, vec!["not_in_this_model".to_string()]);
}

#[test]
fn layers_that_add_up_to_more_than_the_model_are_scaled_to_it() {
    let p = tiny();
    let pr = synthetic(&p, &|_| 1.0);
    let alone = pr.model_ms - 0.2;
    let mut half = pr.clone();
    half.model_ms = alone / 2.0;
    let (a, b) = (LatencyModel::new(pr, &p), LatencyModel::new(half, &p));
    assert_eq!(a.scale, 1.0);
    assert!((b.scale - 0.5).abs() < 1e-12, "{}", b.scale);
    let imp = p.importance(crate::search::datafree::Method::L1, 0);
    let keep = p.allocate(
        (p.base_macs as f64 * 0.5) as u64,
        &imp,
        Allocation::Uniform,
        8,
    );
    let c = p.space_counts(&keep);
    let saved = |m: &LatencyModel| m.profile.model_ms - m.predict(&c);
    assert!((saved(&b) - 0.5 * saved(&a)).abs() < 1e-9);
}

#[test]
fn the_search_can_fit_the_plan_a_measured_round_kept_below_its_budget() {
    use crate::search::env::Env;
    let p = tiny();
    let lm = LatencyModel::new(synthetic(&p, &|_| 1.0), &p);
    let imp = p.importance(crate::search::datafree::Method::L1, 0);
    // A round asked for a budget no plan fits: the allocation gives its smallest plan, over
    // that budget (measured, such a plan may still meet the latency target and be kept).
    let asked = lm.profile.model_ms * 0.01;
    let b = Budget {
        macs: p.base_macs,
        latency: Some((&lm, asked)),
    };
    let keep = p.allocate_within(&b, &imp, Allocation::Uniform, 8);
    assert!(!p.fits_keep(&keep, &b));
    let episode = |ms: f64| {
        let mut env = Env::new(&p, 1.0, 8, 0.05).with_latency(&lm, ms);
        env.set_select(imp.clone());
        while !env.done() {
            let r = env.fair_ratio();
            env.step(r);
        }
        env.fits(&env.keep())
    };
    // At the asked budget the search has nothing; at the one it gets, the round's plan.
    assert!(!episode(asked));
    let predicted = lm.predict(&p.space_counts(&keep));
    let ms = crate::job::latency::search_budget(asked, predicted);
    assert!(ms > asked);
    assert!(episode(ms));
}
