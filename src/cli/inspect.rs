//! `inspect`, `simplify` and `compare`: what a model holds, its cleaned-up form, two
//! models run side by side.

use super::*;
use anyhow::{Context, Result};
use onnx_prune::analysis::{self, ShapeMode};
use onnx_prune::ir::{Dim, Model, ValueDef};
use onnx_prune::onnx::{self, ExternalData, SaveOptions};
use onnx_prune::report::group_digits;
use onnx_prune::rewrite::{self, PassOptions};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub(crate) fn dims_str(d: &[Dim]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

pub(crate) fn inspect(
    path: &Path,
    as_json: bool,
    top: usize,
    show_groups: bool,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let model = onnx::load(path)?;
    let a = analysis::infer(&model, ShapeMode::Bound, shapes)
        .with_context(|| path.display().to_string())?;
    let cost = analysis::cost(&model, &a).map_err(|e| e.in_file(path))?;
    // Groups as the pruner sees them: after simplification (Identity removal, constant and
    // BatchNorm folding) and its trial rewrites, so what `--groups` calls prunable is what
    // pruning cuts. A model the pruner refuses (say, non-finite weights) gets the raw analysis
    // of the file, with the refusal printed.
    let groups = match onnx_prune::search::datafree::Pruner::new(&model, shapes) {
        Ok(p) => {
            let cost = analysis::cost(&p.model, &p.analysis).map_err(|e| e.in_file(path))?;
            group_rows(&p.model, &p.ch, &cost)
        }
        Err(e) => {
            eprintln!(
                "warning: {}: the pruner refuses this model ({e}); groups are from the file as \
                 it is, unsimplified",
                path.display()
            );
            group_rows(&model, &analysis::channels::analyse(&model, &a), &cost)
        }
    };
    let g = &model.graph;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n) in g.live_nodes() {
        let key = if n.is_standard() {
            n.op_type.clone()
        } else {
            format!("{}::{}", n.domain, n.op_type)
        };
        *ops.entry(key).or_default() += 1;
    }
    let mut unknown: Vec<String> = a
        .unknown
        .iter()
        .map(|&id| {
            let n = g.node(id);
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            }
        })
        .collect();
    unknown.sort();
    unknown.dedup();
    let mut ranked = cost.per_node.clone();
    ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    ranked.truncate(top);
    let io = |v: onnx_prune::ir::ValueId| {
        let val = g.value(v);
        let dtype = val
            .declared_elem()
            .map(|d| d.name())
            .unwrap_or_else(|| "?".into());
        let declared = val
            .declared_shape()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        let analysed = a
            .fact(v)
            .shape
            .as_deref()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        (val.name.clone(), dtype, declared, analysed)
    };
    let inputs: Vec<_> = g
        .inputs
        .iter()
        .filter(|&&v| matches!(g.value(v).def, ValueDef::Input))
        .map(|&v| io(v))
        .collect();
    let outputs: Vec<_> = g.outputs.iter().map(|&v| io(v)).collect();
    let nodes = g.live_nodes().count();
    let opset = model.opset();
    let producer = producer(&model);
    if as_json {
        let j = json!({
            "file": path.display().to_string(),
            "ir_version": model.ir_version,
            "opset": opset,
            "producer": producer,
            "nodes": nodes,
            "params": cost.params,
            "macs": cost.macs,
            "ops": ops,
            "unknown_ops": unknown,
            "inputs": inputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "groups": groups.iter().map(|r| json!({"id": r.id, "key": r.key, "channels": r.channels, "prunable": r.prunable,
                "members": r.members, "macs": r.macs, "declined": r.declined})).collect::<Vec<_>>(),
            "top_layers": ranked.iter().map(|&(id, m)| {
                let n = g.node(id);
                json!({"name": n.name, "op": n.op_type, "macs": m,
                       "output_shape": n.outputs.first().copied().flatten().and_then(|v| a.fact(v).shape.as_deref().map(dims_str))})
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model:    {}", path.display());
    println!(
        "format:   IR {}, opset {}{}",
        model.ir_version,
        opset,
        producer
            .map(|p| format!(", produced by {p}"))
            .unwrap_or_default()
    );
    for (n, t, d, s) in &inputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("input:    {n}  {t} {d}{note}");
    }
    for (n, t, d, s) in &outputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("output:   {n}  {t} {d}{note}");
    }
    println!("nodes:    {nodes}");
    println!("params:   {}", group_digits(cost.params));
    println!("MACs:     {}", group_digits(cost.macs));
    let hist: Vec<String> = {
        let mut v: Vec<_> = ops.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(k, c)| format!("{k} {c}")).collect()
    };
    println!("ops:      {}", hist.join(", "));
    if !unknown.is_empty() {
        println!(
            "unknown:  {} (carried unchanged; their MACs count as 0)",
            unknown.join(", ")
        );
    }
    let prunable = groups.iter().filter(|r| r.declined.is_none()).count();
    println!(
        "groups:   {} channel groups, {} prunable{}",
        groups.len(),
        prunable,
        if show_groups {
            ""
        } else {
            " (--groups lists them)"
        }
    );
    if show_groups {
        for r in &groups {
            let state = match &r.declined {
                None => format!("prunable {}/{}", r.prunable, r.channels),
                Some(why) => format!("declined: {why}"),
            };
            println!(
                "  g{:<3} {:<46} {:>5} ch  {:>14} MACs  {} members  {}",
                r.id,
                r.key,
                r.channels,
                group_digits(r.macs),
                r.members.len(),
                state
            );
        }
    }
    if !ranked.is_empty() {
        println!("top layers by MACs:");
        for (i, &(id, m)) in ranked.iter().enumerate() {
            let n = g.node(id);
            let shape = n
                .outputs
                .first()
                .copied()
                .flatten()
                .and_then(|v| a.fact(v).shape.as_deref().map(dims_str))
                .unwrap_or_default();
            let pct = if cost.macs > 0 {
                100.0 * m as f64 / cost.macs as f64
            } else {
                0.0
            };
            println!(
                "  {:>2}. {:<40} {:<14} {:<18} {:>15} {:>5.1}%",
                i + 1,
                n.name,
                n.op_type,
                shape,
                group_digits(m),
                pct
            );
        }
    }
    Ok(())
}

pub(crate) fn producer(model: &Model) -> Option<String> {
    onnx::producer(model)
}

pub(crate) fn simplify(
    input: &Path,
    output: &Path,
    fold_bn: bool,
    external: &str,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let mut model = onnx::load(input)?;
    rewrite::set_input_shapes(&mut model, shapes)?;
    let rep =
        rewrite::simplify(&mut model, &PassOptions { fold_bn }).map_err(|e| e.in_file(input))?;
    let external = match external {
        "all" => ExternalData::All,
        "none" => ExternalData::None,
        _ => ExternalData::Keep,
    };
    let protect = onnx::input_files(input);
    onnx::save(&model, output, &SaveOptions { external }, &protect)?;
    let detail: Vec<String> = rep
        .rewrites
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    eprintln!(
        "simplified {} -> {}: {} -> {} nodes in {} round(s){}",
        input.display(),
        output.display(),
        rep.nodes_before,
        rep.nodes_after,
        rep.rounds,
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        }
    );
    Ok(())
}

#[cfg(feature = "tract")]
pub(crate) fn compare(c: CompareArgs) -> Result<()> {
    use onnx_prune::eval;
    let ma = onnx::load(&c.a)?;
    let shapes = eval::input_shapes(&ma, &c.shapes.map()).map_err(|e| e.in_file(&c.a))?;
    let worst = eval::tract_rt::compare_models(&c.a, &c.b, &shapes, c.seed, c.runs)?;
    if c.json {
        println!(
            "{}",
            json!({"runtime": "tract", "runs": c.runs, "max_abs_diff": worst.max_abs, "max_rel_diff": worst.max_rel, "max_scaled_diff": worst.max_scaled})
        );
    } else {
        println!(
            "tract, {} random input set(s): max |a-b| = {:.3e}, max relative = {:.3e}, relative to the output's spread = {:.3e}",
            c.runs, worst.max_abs, worst.max_rel, worst.max_scaled
        );
    }
    if worst.max_rel > c.tolerance {
        return Err(ToleranceExceeded(format!(
            "outputs differ: relative {:.3e} > tolerance {:.1e}",
            worst.max_rel, c.tolerance
        ))
        .into());
    }
    Ok(())
}

#[cfg(not(feature = "tract"))]
pub(crate) fn compare(_: CompareArgs) -> Result<()> {
    anyhow::bail!("this build has no runtime: rebuild with the `tract` feature")
}

pub(crate) struct GroupRow {
    pub(crate) id: usize,
    pub(crate) key: String,
    pub(crate) channels: usize,
    pub(crate) prunable: usize,
    pub(crate) members: Vec<String>,
    pub(crate) macs: u64,
    pub(crate) declined: Option<String>,
}

/// One row per channel group: members (producers and consumers) and the MACs attributable to
/// it (MACs of the layers that produce or consume its channels).
pub(crate) fn group_rows(
    model: &Model,
    ch: &onnx_prune::analysis::channels::ChannelAnalysis,
    cost: &analysis::CostReport,
) -> Vec<GroupRow> {
    let g = &model.graph;
    let macs_of: HashMap<_, _> = cost.per_node.iter().copied().collect();
    ch.groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| !grp.producers.is_empty() || grp.declined.is_none())
        .map(|(i, grp)| {
            let members = grp.members();
            GroupRow {
                id: i,
                key: grp.key.clone(),
                channels: grp.channels(),
                prunable: grp
                    .atoms
                    .iter()
                    .filter(|&&a| ch.atoms[a].blocked.is_none())
                    .count(),
                macs: members
                    .iter()
                    .map(|n| macs_of.get(n).copied().unwrap_or(0))
                    .sum(),
                members: members.iter().map(|&n| g.node(n).name.clone()).collect(),
                declined: grp.declined.clone(),
            }
        })
        .collect()
}
