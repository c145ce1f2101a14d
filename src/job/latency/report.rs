//! The report's `latency` object and its per-layer rows (predicted, full size, timed alone).

use super::LatencyOptions;
use crate::latency::LatencyModel;
use serde_json::json;

/// Per profiled layer: its predicted and its full-size milliseconds.
/// [`layers`] with each layer's time alone: the profile's (interpolated at the kept counts,
/// and at full size) beside the one `timed` now.
pub(super) fn layers_checked(
    lm: &LatencyModel,
    counts: &[usize],
    timed: &[(String, f64)],
) -> serde_json::Value {
    let mut v = layers(lm, counts);
    let names: Vec<String> = lm.layer_names().into_iter().map(String::from).collect();
    for ((row, name), (pred, full)) in v
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&names)
        .zip(lm.alone(counts))
    {
        row["alone_full_ms"] = json!(full);
        row["alone_predicted_ms"] = json!(pred);
        row["alone_measured_ms"] = json!(timed.iter().find(|(n, _)| n == name).map(|t| t.1));
    }
    v
}

pub(super) fn layers(lm: &LatencyModel, counts: &[usize]) -> serde_json::Value {
    let v: Vec<_> = lm
        .layer_names()
        .into_iter()
        .zip(lm.per_layer(counts))
        .map(|(n, (ms, d))| json!({"node": n, "predicted_ms": ms, "full_ms": ms - d}))
        .collect();
    json!(v)
}

/// The report's `latency` object.
pub(super) fn report(
    lm: &LatencyModel,
    counts: &[usize],
    l: &LatencyOptions,
    predicted: f64,
    measured: Option<(f64, f64)>,
    rounds: &[serde_json::Value],
    here: bool,
) -> serde_json::Value {
    let pr = &lm.profile;
    json!({
        "target": l.target,
        "runtime": pr.runtime,
        "threads": pr.threads,
        "batch": pr.batch,
        "profile": if here { "measured here" } else { "from --latency-profile (another machine: not measured here)" },
        "original_ms": pr.model_ms,
        "layer_scale": lm.scale,
        "predicted_ms": predicted,
        "predicted_ratio": predicted / pr.model_ms,
        "measured": measured.map(|(a, b)| json!({"original_ms": a, "pruned_ms": b, "ratio": b / a.max(1e-9)})),
        "rounds": rounds,
        "layers": layers(lm, counts),
        "unmatched_layers": lm.unmatched,
    })
}
