//! What a job (and `apply`, `shrink`) writes: the pruned model (atomically; never over the
//! input or its external data), the plan, the JSON report with its per-group table and plots,
//! and the summary line; and whether the MAC target was reached.

use super::{Progress, Target};
use crate::analysis::{self, ShapeMode};
use crate::error::Result;
use crate::ir::Model;
use crate::onnx::{self, SaveOptions};
use crate::report::{self, group_digits, GroupLine};
use crate::search::datafree::Pruner;
use crate::search::plan::Plan;
use crate::search::rl::Episode;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files written beside the model (none by default).
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// The plan (kept channels per group, re-applicable with `apply`).
    pub plan: Option<PathBuf>,
    /// The JSON report; beside it `.groups.md`, `.keep.svg`, (after a search) `.curve.svg` and
    /// (with `--target-latency` measured here) `.latency.svg`.
    pub report: Option<PathBuf>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub macs: u64,
    pub params: u64,
    /// MACs kept, as a fraction of the input's.
    pub macs_ratio: f64,
    /// Why the MAC target was not reached (the model was pruned as far as it could be).
    pub unreachable: Option<String>,
}

/// Writes `pruned` (plan `keep` of `p`) to `output`, and the `files`; `target`: the MAC budget
/// it was pruned to (none for `apply`/`shrink`); `extra`: the report's further fields.
#[allow(clippy::too_many_arguments)]
pub fn write_pruned(
    input: &Path,
    output: &Path,
    p: &Pruner,
    keep: &[bool],
    pruned: &Model,
    target: Option<Target>,
    files: &Files,
    extra: serde_json::Map<String, serde_json::Value>,
    curve: Option<&[Episode]>,
    out: &dyn Progress,
) -> Result<Written> {
    let a = analysis::infer(pruned, ShapeMode::Bound, &p.shapes)?;
    let cost = analysis::cost(pruned, &a)?;
    let plan = Plan::from_keep(p, keep, &input.display().to_string());
    let protect = onnx::input_files(input);
    onnx::save(pruned, output, &SaveOptions::default(), &protect)?;
    if let Some(pp) = &files.plan {
        write_json(pp, &serde_json::to_value(&plan)?)?;
    }
    let ratio_kept = cost.macs as f64 / p.base_macs.max(1) as f64;
    let groups: Vec<_> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let kept = g.atoms.iter().filter(|&&a| keep[a]).count();
            json!({"key": g.key, "channels": g.atoms.len(), "kept": kept, "declined": g.declined})
        })
        .collect();
    // The human table and the plots: per group, channels kept and the MACs of its members.
    let before: HashMap<_, u64> = analysis::cost(&p.model, &p.analysis)?
        .per_node
        .into_iter()
        .collect();
    let after: HashMap<_, u64> = cost.per_node.iter().copied().collect();
    let lines: Vec<GroupLine> = p
        .ch
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| {
            let members = g.members();
            let sum =
                |m: &HashMap<_, u64>| members.iter().map(|n| m.get(n).copied().unwrap_or(0)).sum();
            GroupLine {
                key: g.key.clone(),
                kept: g.atoms.iter().filter(|&&a| keep[a]).count(),
                channels: g.atoms.len(),
                macs_before: sum(&before),
                macs_after: sum(&after),
                declined: g.declined.clone(),
            }
        })
        .collect();
    let table = report::table(&lines);
    out.table(&table);
    if let Some(rp) = &files.report {
        let side = |ext: &str| rp.with_extension(ext);
        onnx::write_atomic(&side("groups.md"), table.as_bytes())?;
        let ratios: Vec<f64> = lines
            .iter()
            .filter(|l| l.declined.is_none())
            .map(|l| l.kept as f64 / l.channels.max(1) as f64)
            .collect();
        let name = input
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        report::plot_keep_ratios(
            &side("keep.svg"),
            &format!("{name}: keep ratio per group"),
            &ratios,
        )?;
        if let Some(c) = curve {
            report::plot_curve(&side("curve.svg"), &format!("{name}: search"), c)?;
        }
        // `--agent joint`: the ratios each round chose.
        let rounds: Vec<Vec<f64>> = extra
            .get("joint")
            .and_then(|j| j["rounds"].as_array())
            .into_iter()
            .flatten()
            .map(|r| {
                r["ratios"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_f64())
                    .collect()
            })
            .collect();
        if !rounds.is_empty() {
            report::plot_joint_ratios(
                &side("joint.svg"),
                &format!("{name}: keep ratio per group, round by round (--agent joint)"),
                &rounds,
            )?;
        }
        // With --target-latency measured here: predicted vs measured per layer.
        let alone: Vec<(f64, f64, f64)> = extra
            .get("latency")
            .and_then(|l| l["layers"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let f = |k: &str| l[k].as_f64();
                Some((
                    f("alone_full_ms")?,
                    f("alone_predicted_ms")?,
                    f("alone_measured_ms")?,
                ))
            })
            .collect();
        if !alone.is_empty() {
            report::plot_latency_layers(
                &side("latency.svg"),
                &format!("{name}: latency per layer, predicted vs measured"),
                &alone,
            )?;
        }
        let mut r = json!({
            "input": input.display().to_string(), "output": output.display().to_string(),
            "macs_before": p.base_macs, "macs_after": cost.macs, "macs_ratio": ratio_kept,
            "params_before": p.base_params, "params_after": cost.params,
            "target_flops": target.map(|t| t.ratio),
            "groups": groups,
        });
        for (k, v) in extra {
            r[k] = v;
        }
        write_json(rp, &r)?;
    }
    out.line(&format!(
        "pruned {} -> {}: MACs {} -> {} ({:.1}%), params {} -> {}",
        input.display(),
        output.display(),
        group_digits(p.base_macs),
        group_digits(cost.macs),
        100.0 * ratio_kept,
        group_digits(p.base_params),
        group_digits(cost.params)
    ));
    let mut unreachable = None;
    if let Some(t) = target {
        if cost.macs != t.predicted {
            out.line(&format!(
                "warning: MAC model predicted {}, the pruned model has {}",
                t.predicted, cost.macs
            ));
        }
        if cost.macs > t.macs {
            let declined: Vec<&str> =
                p.ch.groups
                    .iter()
                    .filter(|g| g.declined.is_some() && !g.producers.is_empty())
                    .map(|g| g.key.as_str())
                    .collect();
            unreachable = Some(format!(
                "target {:.3} not reachable: pruned as far as possible to {:.3} of the MACs; groups that cannot be pruned: {}",
                t.ratio,
                ratio_kept,
                if declined.is_empty() { "none (every prunable group is at its minimum)".to_string() } else { declined.join(", ") }
            ));
        }
    }
    Ok(Written {
        macs: cost.macs,
        params: cost.params,
        macs_ratio: ratio_kept,
        unreachable,
    })
}

/// Writes `v` as pretty JSON (atomically).
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v)? + "\n";
    onnx::write_atomic(path, s.as_bytes())
}
