//! `onnx-prune eval`: a model's accuracy (or fidelity to a reference) on a dataset.

#![cfg_attr(not(any(feature = "tract", feature = "ort")), allow(unused_imports))]

use super::*;
use anyhow::{bail, Result};
use onnx_prune::onnx;
use serde_json::json;
use std::path::Path;

#[cfg(any(feature = "tract", feature = "ort"))]
pub(crate) fn eval_cmd(e: EvalArgs) -> Result<()> {
    use onnx_prune::data;
    use onnx_prune::eval::{self, metrics, runtime};
    let model = onnx::load(&e.model)?;
    let shapes = eval::input_shapes(&model, &e.shapes.map()).map_err(|er| er.in_file(&e.model))?;
    let s = shapes
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model has no input"))?;
    if s.len() != 4 {
        bail!(
            "{}: eval needs an image model with input [N,C,H,W], got {:?}",
            e.model.display(),
            s
        );
    }
    let chw = (s[1], s[2], s[3]);
    let t0 = std::time::Instant::now();
    let mut ds = data::load(&e.data.data, chw, &e.data.opts.options())?;
    if let Some(v) = e.data.val_size {
        let (_, val) = data::split(ds.n, e.data.seed, e.data.calib_size, v)?;
        ds = ds.subset(&val);
    }
    let t_load = t0.elapsed().as_secs_f64();
    let mut batch = e.batch.max(1);
    if let Some(b) = eval::fixed_batch(&model) {
        if b != batch {
            eprintln!("note: the model's input has a fixed batch of {b}; using batches of {b}");
            batch = b;
        }
    }
    let (kind, line) = runtime::choose(&e.runtime)?;
    eprintln!("{line}");
    let runtime = kind.name();
    let threads = e.threads.unwrap_or_else(runtime::all_threads);
    let run = |path: &Path| -> Result<(Vec<f32>, usize)> {
        Ok(runtime::open(kind, path, batch, chw, threads)?.run_all(&ds.x, ds.n)?)
    };
    let t1 = std::time::Instant::now();
    let (logits, k) = run(&e.model)?;
    let secs = t1.elapsed().as_secs_f64();
    if e.label_free && e.reference.is_none() {
        bail!("--label-free needs --reference ORIGINAL.onnx to measure fidelity against");
    }
    let acc =
        ds.y.as_ref()
            .filter(|_| !e.label_free)
            .map(|y| metrics::accuracy(&logits, k, y));
    let fid = match &e.reference {
        Some(r) => {
            let (rl, rk) = run(r)?;
            if rk != k {
                bail!("the reference has {rk} outputs per sample, the model {k}");
            }
            Some(metrics::fidelity(&rl, &logits, k))
        }
        None => None,
    };
    let ips = ds.n as f64 / secs.max(1e-9);
    // Latency: median of `--latency` timed runs after 3 warm-up runs, at batch 1 and at `batch`.
    let mut lat: Vec<(usize, f64)> = vec![];
    if e.latency > 0 && ds.n > 0 {
        for b in [1usize, batch] {
            let n = b.min(ds.n);
            let x = &ds.x[..n * ds.sample_len()];
            let m = runtime::open(kind, &e.model, n, chw, threads)?;
            let (med, _) = runtime::median_latency(&mut [m], x, n, 3, e.latency, None)?;
            lat.push((n, med[0]));
        }
    }
    if e.json {
        let mut j = json!({"n": ds.n, "runtime": runtime, "images_per_s": ips, "load_s": t_load});
        if let Some(a) = acc {
            j["top1"] = json!(a.top1);
            j["top5"] = json!(a.top5);
        }
        if let Some(f) = fid {
            j["agreement"] = json!(f.agreement);
            j["kl"] = json!(f.kl);
            j["rel_mse"] = json!(f.rel_mse);
        }
        for (b, ms) in &lat {
            j[format!("latency_ms_b{b}")] = json!(ms);
        }
        println!("{j}");
    } else {
        if let Some(a) = acc {
            println!(
                "top-1 {:.4}  top-5 {:.4}  ({} samples)",
                a.top1, a.top5, ds.n
            );
        } else {
            println!("{} samples, no labels", ds.n);
        }
        if let Some(f) = fid {
            println!(
                "fidelity to reference: top-1 agreement {:.4}, mean KL {:.5}, relative MSE {:.3e}",
                f.agreement, f.kl, f.rel_mse
            );
        }
        println!("{runtime}: {ips:.0} images/s (batch {batch}); data loaded in {t_load:.2}s");
        for (b, ms) in &lat {
            println!("latency at batch {b}: {ms:.2} ms (median of {})", e.latency);
        }
    }
    Ok(())
}

#[cfg(not(any(feature = "tract", feature = "ort")))]
pub(crate) fn eval_cmd(_: EvalArgs) -> Result<()> {
    bail!("this build has no runtime: rebuild with the `tract` feature")
}
