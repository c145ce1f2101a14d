//! The commands that work on a plan or a proof: `apply` (a plan file → the pruned model),
//! `verify` (the pruned model against the masked original) and `shrink` (lossless removal of
//! provably dead channels).

use super::*;
use anyhow::{Context, Result};
use onnx_prune::onnx::{self, ExternalData, SaveOptions};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(crate) fn apply(
    input: &Path,
    plan: &Path,
    output: &Path,
    report: Option<&Path>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let (_, p) = load_pruner(input, shapes)?;
    let keep = read_plan(plan)?
        .to_keep(&p)
        .with_context(|| plan.display().to_string())?;
    let pruned = p.apply(&keep)?;
    let files = onnx_prune::job::Files {
        plan: None,
        report: report.map(Path::to_path_buf),
    };
    write_plain(input, output, &p, &keep, &pruned, files)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn verify(
    original: &Path,
    pruned: &Path,
    plan: &Path,
    seed: u64,
    runs: u64,
    tol: f64,
    as_json: bool,
    data: Option<(PathBuf, onnx_prune::data::DataOptions)>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    #[cfg(feature = "tract")]
    {
        use onnx_prune::{data, eval};
        let (_, p) = load_pruner(original, shapes)?;
        let keep = read_plan(plan)?
            .to_keep(&p)
            .with_context(|| plan.display().to_string())?;
        let masked = p.masked(&keep)?;
        let dir = std::env::temp_dir().join(format!("onnx-prune-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mpath = dir.join("masked.onnx");
        onnx::save(
            &masked,
            &mpath,
            &SaveOptions {
                external: ExternalData::None,
            },
            &[],
        )?;
        let input_shapes = eval::input_shapes(&p.model, shapes)?;
        let mut worst = eval::Diff::default();
        let mut what = format!("{runs} random input set(s)");
        let res = (|| -> Result<()> {
            if let Some((dpath, dopts)) = &data {
                let s = input_shapes
                    .first()
                    .filter(|s| s.len() == 4)
                    .ok_or_else(|| anyhow::anyhow!("--data needs an image model [N,C,H,W]"))?;
                let chw = (s[1], s[2], s[3]);
                let ds = data::load(dpath, chw, dopts)?;
                let batch = 32;
                use eval::runtime::Runtime;
                let (oa, k) =
                    eval::tract_rt::Batched::new(&mpath, batch, chw)?.run_all(&ds.x, ds.n)?;
                let (ob, _) =
                    eval::tract_rt::Batched::new(pruned, batch, chw)?.run_all(&ds.x, ds.n)?;
                let ta = eval::HostTensor {
                    shape: vec![ds.n, k],
                    data: oa,
                };
                let tb = eval::HostTensor {
                    shape: vec![ob.len() / k.max(1), k],
                    data: ob,
                };
                worst = eval::compare(&[ta], &[tb])?;
                what = format!("{} samples of {}", ds.n, dpath.display());
                return Ok(());
            }
            worst = eval::tract_rt::compare_models(&mpath, pruned, &input_shapes, seed, runs)?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        res?;
        if as_json {
            println!(
                "{}",
                json!({"runtime": "tract", "inputs": what, "max_abs_diff": worst.max_abs, "max_rel_diff": worst.max_rel, "max_scaled_diff": worst.max_scaled})
            );
        } else {
            println!(
                "verify (tract, {what}): max |a-b| = {:.3e}, max relative = {:.3e}, relative to the output's spread = {:.3e}",
                worst.max_abs, worst.max_rel, worst.max_scaled
            );
        }
        if worst.max_rel > tol {
            return Err(ToleranceExceeded(format!(
                "pruned model differs from the masked original: {:.3e} > {tol:.1e}",
                worst.max_rel
            ))
            .into());
        }
        Ok(())
    }
    #[cfg(not(feature = "tract"))]
    {
        let _ = (
            original, pruned, plan, seed, runs, tol, as_json, data, shapes,
        );
        bail!("this build has no runtime: rebuild with the `tract` feature")
    }
}

pub(crate) fn shrink(
    input: &Path,
    output: &Path,
    plan: Option<&Path>,
    report: Option<&Path>,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let (_, p) = load_pruner(input, shapes)?;
    let dead = onnx_prune::search::shrink::dead_atoms(&p);
    let mut keep: Vec<bool> = dead.iter().map(|d| !d).collect();
    // Every tensor keeps at least one channel (a dead one, if need be: still lossless).
    for s in 0..p.ch.spaces.len() {
        if p.ch.spaces[s].len > 0 && p.ch.kept(s, &keep).is_empty() {
            keep[p.ch.atom(s, 0)] = true;
        }
    }
    let removed = keep.iter().filter(|k| !**k).count();
    let pruned = p.apply(&keep)?;
    eprintln!(
        "shrink: {removed} dead channel(s) found in {} group(s)",
        p.ch.groups
            .iter()
            .filter(|g| g.atoms.iter().any(|&a| !keep[a]))
            .count()
    );
    let files = onnx_prune::job::Files {
        plan: plan.map(Path::to_path_buf),
        report: report.map(Path::to_path_buf),
    };
    write_plain(input, output, &p, &keep, &pruned, files)
}
