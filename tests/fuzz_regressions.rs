//! Inputs the fuzzer (fuzz/fuzz_targets/load.rs) once crashed on: the same pipeline must now
//! return errors or succeed, never panic. Also damaged copies of real models (weights with
//! changed bytes) through the whole prune pipeline.

use onnx_prune::analysis::{cost, infer, ShapeMode};
use onnx_prune::rewrite::{simplify, PassOptions};
use std::collections::HashMap;

mod common;

#[test]
fn recorded_crashers_no_longer_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        n += 1;
        let Ok(mut m) = onnx_prune::onnx::decode_model(data.into(), None) else {
            continue;
        };
        let _ = onnx_prune::onnx::encode_model(&m);
        if let Ok(a) = infer(&m, ShapeMode::Bound, &HashMap::new()) {
            let _ = cost(&m, &a);
        }
        if simplify(&mut m, &PassOptions { fold_bn: true }).is_ok() {
            m.graph.check().unwrap();
            let _ = onnx_prune::onnx::encode_model(&m);
        }
    }
    assert!(n > 0);
}

/// Copies of real models with a few bytes of their weight data changed, as a user found them
/// (and as a diverged training run writes them): 400 damaged copies over five shared models go
/// through the data-free prune pipeline (load → simplify → analyse → importance → uniform and
/// global allocation → surgery → write). Each ends in a model or in an error; none may panic.
/// Before `order::fcmp` and the finite-weight check, 26 of 400 such runs panicked in
/// `Pruner::fill` ("comparison function does not correctly implement a total order").
#[test]
fn damaged_weights_end_in_an_error_or_a_model_never_a_panic() {
    use onnx_prune::ir::{Tensor, TensorData, ValueDef};
    use onnx_prune::search::datafree::{Allocation, Method, Pruner};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    let Some(shared) = common::shared() else {
        return;
    };
    let models = [
        "cifar10/resnet20.onnx",
        "zoo/seresnet20_cifar10.onnx",
        "zoo/squeezenet1_0.onnx",
        "zoo/mobilenet_v3_small_bn.onnx",
        "zoo/densenet40_k12_cifar10.onnx",
    ];
    let (mut ok, mut refused, mut panicked) = (0, 0, vec![]);
    for (mi, rel) in models.iter().enumerate() {
        let orig = onnx_prune::onnx::load(&shared.join("models").join(rel)).unwrap();
        let weights: Vec<_> = (0..orig.graph.values.len())
            .map(onnx_prune::ir::ValueId)
            .filter(|&v| {
                orig.graph
                    .const_of(v)
                    .is_some_and(|t| t.dtype == onnx_prune::ir::DataType::FLOAT && t.numel() > 1)
            })
            .collect();
        for run in 0..80u64 {
            let seed = mi as u64 * 1000 + run;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut m = orig.clone();
            // 1-4 weights, 1-3 bytes each; half the runs write 0xFF into an exponent byte
            // (NaN or Inf), the rest a random byte anywhere.
            for _ in 0..rng.random_range(1..=4) {
                let v = weights[rng.random_range(0..weights.len())];
                let t = m.graph.const_of(v).unwrap().clone();
                let mut raw = t.raw().unwrap().to_vec();
                for _ in 0..rng.random_range(1..=3) {
                    let i = rng.random_range(0..raw.len());
                    if run % 2 == 0 {
                        raw[i | 3] = 0xFF;
                    } else {
                        raw[i] = rng.random();
                    }
                }
                let nt = Tensor {
                    dtype: t.dtype,
                    dims: t.dims.clone(),
                    data: TensorData::Raw(raw.into()),
                };
                if let ValueDef::Const(c) = &mut m.graph.value_mut(v).def {
                    c.tensor = Arc::new(nt);
                }
            }
            // Through the file, as a user's damaged copy would come.
            let bytes = onnx_prune::onnx::encode_model(&m).unwrap();
            let r = std::panic::catch_unwind(|| -> Result<(), String> {
                let m = onnx_prune::onnx::decode_model(bytes.into(), None)
                    .map_err(|e| e.to_string())?;
                let p = Pruner::new(&m, &HashMap::new()).map_err(|e| e.to_string())?;
                for (method, alloc) in [
                    (Method::L1, Allocation::Uniform),
                    (Method::L2, Allocation::Global),
                ] {
                    let imp = p.importance(method, 1);
                    let keep = p.allocate(p.base_macs / 2, &imp, alloc, 8);
                    let pruned = p.apply(&keep).map_err(|e| e.to_string())?;
                    onnx_prune::onnx::encode_model(&pruned).map_err(|e| e.to_string())?;
                }
                Ok(())
            });
            match r {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => {
                    // A refusal names what it is about.
                    assert!(
                        e.contains("node ") || e.contains('\''),
                        "{rel} seed {seed}: {e}"
                    );
                    refused += 1
                }
                Err(_) => panicked.push(format!("{rel} seed {seed}")),
            }
        }
    }
    println!(
        "damaged weights: {ok} pruned, {refused} refused with an error, {} panicked",
        panicked.len()
    );
    assert!(panicked.is_empty(), "panics: {panicked:?}");
    assert!(
        refused > 0 && ok > 0,
        "{ok} pruned, {refused} refused: the damage is not exercising both paths"
    );
}

/// The whole-pipeline fuzzer's first find (a mutated `light_inception_v2`): a BatchNormalization
/// whose parameters are shorter than its channels made the surgery index past them and panic.
/// Now the channel analysis declines such a group (and surgery that would cut past a constant
/// is an error, not a panic); the rest of the model prunes.
#[test]
fn batchnorm_parameters_shorter_than_the_channels_decline_their_group() {
    use onnx_prune::onnx::builder::{attr_f, attr_i, ModelBuilder};
    use onnx_prune::search::datafree::{Allocation, Method, Pruner};
    let mut b = ModelBuilder::new(17, 3);
    let x = b.input("x", &[1, 3, 8, 8]);
    let c1 = b.conv(&x, 3, 8, 3, 1, 1);
    let short: Vec<String> = (0..4)
        .map(|i| b.init_f32("bnp", &[6], &[0.5 + i as f32; 6]))
        .collect();
    let n1 = b.op(
        "BatchNormalization",
        &[&c1, &short[0], &short[1], &short[2], &short[3]],
        vec![attr_f("epsilon", 1e-5)],
    );
    let r1 = b.op("Relu", &[&n1], vec![]);
    let c2 = b.conv(&r1, 8, 6, 3, 1, 1);
    let gap = b.op("GlobalAveragePool", &[&c2], vec![]);
    let fl = b.op("Flatten", &[&gap], vec![attr_i("axis", 1)]);
    let w = b.weight("fc", &[4, 6], 0.5);
    b.op("Gemm", &[&fl, &w], vec![attr_i("transB", 1)]);
    b.rename_last_output("y");
    b.output("y", &[1, 4]);
    let m = onnx_prune::onnx::decode_model(b.to_bytes().into(), None).unwrap();
    let r = std::panic::catch_unwind(|| {
        let p = Pruner::new(&m, &HashMap::new()).map_err(|e| e.to_string())?;
        let why: Vec<String> =
            p.ch.groups
                .iter()
                .filter_map(|g| g.declined.clone())
                .collect();
        let imp = p.importance(Method::L1, 1);
        let keep = p.allocate(p.base_macs / 2, &imp, Allocation::Uniform, 1);
        p.apply(&keep).map_err(|e| e.to_string())?;
        Ok::<_, String>(why)
    });
    let why = r.expect("no panic").expect("the model prunes what it can");
    assert!(
        why.iter()
            .any(|w| w.contains("has shape [6] for 8 channels")),
        "{why:?}"
    );
}
