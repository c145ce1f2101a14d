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
