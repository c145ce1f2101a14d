//! `--target-latency R`: the output's latency at most R × the input's on the deploy runtime.
//!
//! The latency model comes from `--latency-profile` (measured on the device by
//! `onnx-prune profile`; checked against the input's SHA-256) or is measured here first. The
//! allocation fits the predicted latency (and the MAC target, both hold). With a profile
//! measured here the pruned model is then measured for real against the original (interleaved
//! runs, medians): while it misses the target, the predicted budget is tightened by the miss and
//! the allocation repeats; a plan well under the target gets some slack back ([`CLOSE`]); at
//! most [`ROUNDS`] rounds, and the least pruned plan that met the target is kept
//! ([`measured_rounds`]). A target that cannot be met is an error, never a model over budget.
//! With a profile from another machine nothing here can measure the device, so the prediction
//! is the promise, and the report says so.
//!
//! With a search agent, every episode fits the same predicted budget the fitted plan met (the
//! target, tightened by the measured rounds: the predictor calibrated on this model), and the
//! written plan is measured again at the end ([`Fitted::finish`]); a miss is said, not hidden.

use super::{Options, Progress};
use crate::error::{Error, Result};
use crate::eval::{self, runtime};
use crate::latency::{measure, LatencyModel, Profile};
use crate::search::allocate::{Budget, Rounding, SpaceCost};
use crate::search::datafree::Pruner;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Measure-and-adjust rounds at most.
pub const ROUNDS: usize = 8;
/// Budget tightenings (3% each) tried after a miss for a plan that differs from the last.
const NUDGES: usize = 60;
/// A plan measured at or above this fraction of the target ends the rounds (one further below
/// gives part of the slack back, since every channel removed costs accuracy).
pub const CLOSE: f64 = 0.96;

/// The next budget after the measured rounds (`rounds`: budget asked → measured latency ratio;
/// the budget is predicted milliseconds or MACs, `base` the whole model's): the saving asked
/// of the budget is scaled by how much of it the measurement showed (savings, not ratios,
/// scale: a budget that asked a 50% saving that measured 38% is asked for 50·50/38 = 66%);
/// from the second round on, the secant through the last two rounds (budget → measured ratio).
/// After a miss the budget is always tighter than the last; after a plan well under the target,
/// looser (never above the whole model); and always inside the bracket the rounds have found.
pub fn next_budget(base: f64, target: f64, rounds: &[(f64, f64)]) -> f64 {
    let Some(&(b1, m1)) = rounds.last() else {
        return base * target;
    };
    let proportional = {
        let asked = 1.0 - b1 / base;
        let got = (1.0 - m1).max(1e-3);
        base * (1.0 - (asked * (1.0 - target) / got).min(1.0))
    };
    let next = match rounds.len() {
        n if n >= 2 => {
            let (b0, m0) = rounds[n - 2];
            let slope = (m1 - m0) / (b1 - b0);
            if slope.is_finite() && slope > 1e-9 {
                b1 + (target - m1) / slope
            } else {
                proportional
            }
        }
        _ => proportional,
    };
    let next = if next.is_finite() { next } else { proportional };
    let next = if m1 > target {
        next.clamp(0.0, b1 * 0.995)
    } else {
        next.clamp(b1 * 1.005, base)
    };
    // Stay strictly between the largest budget that met the target and the smallest that did
    // not (noisy measurements can send a secant far out): else their midpoint.
    let lo = rounds
        .iter()
        .filter(|r| r.1 <= target)
        .map(|r| r.0)
        .fold(0.0, f64::max);
    let hi = rounds
        .iter()
        .filter(|r| r.1 > target)
        .map(|r| r.0)
        .fold(base, f64::min);
    if lo < hi && !(next > lo && next < hi) {
        0.5 * (lo + hi)
    } else {
        next
    }
}

/// The latency settings of a job (`--target-latency` and the flags beside it).
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// Output latency / input latency, at most.
    pub target: f64,
    /// `ort`, `tract` or `auto` (the job's runtime).
    pub runtime: String,
    pub batch: usize,
    pub threads: usize,
    /// A profile measured elsewhere (`onnx-prune profile`).
    pub profile: Option<PathBuf>,
    /// Grid points per channel space when the profile is measured here.
    pub points: usize,
    /// Timed runs per median (profile points; the final check takes at least 20).
    pub runs: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            target: 1.0,
            runtime: "auto".into(),
            batch: 1,
            threads: 1,
            profile: None,
            points: 5,
            runs: 7,
        }
    }
}

/// Profile settings for `p`'s runtime choice.
pub fn settings(l: &LatencyOptions, round_to: impl Into<Rounding>) -> Result<measure::Settings> {
    let (kind, line) = runtime::choose(&l.runtime)?;
    if kind == runtime::Kind::Burn {
        return Err(Error::Usage(
            "latency is measured on ort or tract, not burn".into(),
        ));
    }
    Ok(measure::Settings {
        kind,
        runtime_line: line,
        threads: l.threads.max(1),
        batch: l.batch.max(1),
        points: l.points.max(2),
        round_to: round_to.into(),
        runs: l.runs.max(1),
    })
}

/// `--round-to auto`: the staircase of the deploy runtime, from the `--latency-profile` (one
/// measured on the device with `onnx-prune profile --round-to auto`), else measured here on the
/// latency runtime (`--latency-runtime`, default the job's; `--threads`, `--latency-batch`).
pub fn staircase(
    input: &Path,
    p: &Pruner,
    o: &Options,
    out: &dyn Progress,
) -> Result<crate::latency::staircase::Staircase> {
    let l = o.latency.clone().unwrap_or_else(|| LatencyOptions {
        runtime: if o.runtime == "burn" {
            "auto".into()
        } else {
            o.runtime.clone()
        },
        ..LatencyOptions::default()
    });
    if let Some(path) = &l.profile {
        let pr = Profile::load(path)?;
        pr.check(&crate::latency::file_sha256(input)?, path, input)?;
        let Some(st) = pr.staircase else {
            return Err(Error::bad_file(
                path,
                "--round-to auto: this profile has no staircase (it was measured with a fixed                  --round-to): measure it with `onnx-prune profile --round-to auto`, or give                  --round-to N",
            ));
        };
        out.line(&format!(
            "--round-to auto: {} (the staircase in {})",
            st.round_to,
            path.display()
        ));
        return Ok(st);
    }
    let s = settings(&l, 1)?;
    out.line(&format!(
        "--round-to auto: measuring the staircase ({}, {} threads, batch {})",
        s.kind.name(),
        s.threads,
        s.batch
    ));
    crate::latency::staircase::measure(p, &s, &|m| out.line(m))
}

/// The latency model of `input`: its profile read (and checked) or measured now; with the
/// measurement settings when it was measured here (candidates are then measured the same way).
pub fn model(
    input: &Path,
    p: &Pruner,
    l: &LatencyOptions,
    round_to: Rounding,
    out: &dyn Progress,
) -> Result<(LatencyModel, Option<measure::Settings>)> {
    let (profile, here) = match &l.profile {
        Some(path) => {
            let pr = Profile::load(path)?;
            pr.check(&crate::latency::file_sha256(input)?, path, input)?;
            out.line(&format!(
                "latency profile {}: {} layers, {} at {} threads, batch {} ({:.3} ms)",
                path.display(),
                pr.layers.len(),
                pr.runtime,
                pr.threads,
                pr.batch,
                pr.model_ms
            ));
            (pr, None)
        }
        None => {
            let s = settings(l, round_to)?;
            out.line(&format!(
                "measuring the latency profile ({}, {} threads, batch {}; save it with \
                 `onnx-prune profile` to skip this)",
                s.kind.name(),
                s.threads,
                s.batch
            ));
            let pr = measure::profile(input, p, &s, &|m| out.line(m))?;
            (pr, Some(s))
        }
    };
    Ok((LatencyModel::new(profile, p), here))
}

/// The plan fitted to the latency budget, and what the search (if any) must fit.
pub struct Fitted {
    /// The unsearched plan that met the target.
    pub keep: Vec<bool>,
    pub model: LatencyModel,
    /// The predicted budget (ms) the plan met: the target, tightened by the measured rounds.
    pub budget_ms: f64,
    target: f64,
    /// Where the candidates are measured (a profile measured here), else `None`.
    settings: Option<measure::Settings>,
    report: serde_json::Value,
    /// The input model's file (the original every candidate is measured against).
    input: PathBuf,
}

impl Fitted {
    /// The predicted cost and its budget, for the search.
    pub fn cost(&self) -> (&dyn SpaceCost, f64) {
        (&self.model, self.budget_ms)
    }

    /// `--target-latency`.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// The measured latency ratio of the plan `keep` against the original (interleaved runs,
    /// medians), or `None` when the profile came from another machine (nothing here can
    /// measure the device; the prediction is the promise).
    pub fn measure_plan(&self, p: &Pruner, keep: &[bool]) -> Result<Option<f64>> {
        let Some(s) = &self.settings else {
            return Ok(None);
        };
        let (a, b) = measure_pair(s, &self.input, &p.apply(keep)?, &self.model.profile)?;
        Ok(Some(b / a.max(1e-9)))
    }

    /// The report's `latency` object for the plan written: the fitted plan's, or for another
    /// (the search's) its prediction and, when `measure` and the profile was measured here,
    /// its measured ratio, beside the fitted plan's figures. With `measure` and a profile
    /// measured here, every layer of the written plan is also timed alone (the per-layer check
    /// of the prediction, `alone_*` in `layers`).
    pub fn finish(
        &self,
        input: &Path,
        p: &Pruner,
        keep: &[bool],
        pruned: &crate::ir::Model,
        measure: bool,
        out: &dyn Progress,
    ) -> Result<serde_json::Value> {
        let mut j = if keep == self.keep.as_slice() {
            self.report.clone()
        } else {
            self.searched(input, p, keep, pruned, measure, out)?
        };
        if let (Some(s), true) = (&self.settings, measure) {
            let counts = p.space_counts(keep);
            out.line("latency: timing every layer of the written plan alone");
            let timed = measure::layers_alone(p, s, &counts)?;
            j["layers"] = layers_checked(&self.model, &counts, &timed);
        }
        Ok(j)
    }

    fn searched(
        &self,
        input: &Path,
        p: &Pruner,
        keep: &[bool],
        pruned: &crate::ir::Model,
        measure: bool,
        out: &dyn Progress,
    ) -> Result<serde_json::Value> {
        let counts = p.space_counts(keep);
        let base = self.model.profile.model_ms;
        let predicted = self.model.predict(&counts);
        let measured = match (&self.settings, measure) {
            (Some(s), true) => Some(measure_pair(s, input, pruned, &self.model.profile)?),
            _ => None,
        };
        let ratio = measured.map(|(a, b)| b / a.max(1e-9));
        out.line(&format!(
            "latency of the written plan: predicted {:.3}x{} (target {:.3}x)",
            predicted / base,
            ratio.map_or(String::new(), |r| format!(", measured {r:.3}x")),
            self.target
        ));
        if ratio.is_some_and(|r| r > self.target) {
            out.line(&format!(
                "note: the searched plan measures over --target-latency {} (the unsearched plan \
                 met it; the search fits the same predicted budget, and the two measurements \
                 differ by the runtime's noise and the model's error)",
                self.target
            ));
        }
        let mut j = self.report.clone();
        j["unsearched"] = json!({
            "predicted_ms": self.report["predicted_ms"],
            "measured": self.report["measured"],
        });
        j["plan"] = json!("searched");
        j["predicted_ms"] = json!(predicted);
        j["predicted_ratio"] = json!(predicted / base);
        j["measured"] = json!(measured
            .map(|(a, b)| json!({"original_ms": a, "pruned_ms": b, "ratio": b / a.max(1e-9)})));
        j["met"] = json!(
            ratio.map_or(predicted <= self.budget_ms * (1.0 + 1e-9), |r| r
                <= self.target)
        );
        j["layers"] = layers(&self.model, &counts);
        Ok(j)
    }
}

/// Chooses what to keep under the MAC target and the latency target (see the module docs).
pub fn fit(
    input: &Path,
    p: &Pruner,
    o: &Options,
    l: &LatencyOptions,
    macs: u64,
    imp: &[f64],
    out: &dyn Progress,
) -> Result<Fitted> {
    let (lm, s) = model(input, p, l, o.round_to.rounding(), out)?;
    let here = s.is_some();
    let base = lm.profile.model_ms;
    let goal = base * l.target;
    let multiple = o.round_to.rounding();
    let by_model = |ms: f64| {
        let budget = Budget {
            macs,
            latency: Some((&lm, ms)),
        };
        p.allocate_within(&budget, imp, o.allocation, multiple)
    };
    let Some(st) = &s else {
        // A profile from another machine: the prediction is the promise.
        let keep = by_model(goal);
        let counts = p.space_counts(&keep);
        let predicted = lm.predict(&counts);
        if predicted > goal * (1.0 + 1e-9) {
            return Err(unreachable(l.target, predicted / base, "predicted"));
        }
        let report = report(&lm, &counts, l, predicted, None, &[], here);
        return Ok(Fitted {
            keep,
            model: lm,
            budget_ms: goal,
            target: l.target,
            settings: None,
            report,
            input: input.to_path_buf(),
        });
    };
    let mut measure = |keep: &[bool]| measure_pair(st, input, &p.apply(keep)?, &lm.profile);
    let (best, rounds) = measured_rounds(
        (base, goal),
        l.target,
        &by_model,
        &mut measure,
        &|r, ratio, keep: &[bool]| {
            let predicted = lm.predict(&p.space_counts(keep));
            format!(
                "latency round {r}: predicted {:.3}x, measured {ratio:.3}x",
                predicted / base
            )
        },
        out,
    )?;
    let rows: Vec<serde_json::Value> = rounds
        .iter()
        .map(|r| r.json(lm.predict(&p.space_counts(&r.keep))))
        .collect();
    let Some(b) = best else {
        let best = rounds.iter().map(|r| r.ratio).fold(f64::INFINITY, f64::min);
        return Err(unreachable(
            l.target,
            best,
            &format!("measured after {} rounds", rounds.len()),
        ));
    };
    let counts = p.space_counts(&b.keep);
    let predicted = lm.predict(&counts);
    let report = report(&lm, &counts, l, predicted, Some(b.measured), &rows, here);
    let budget_ms = search_budget(b.budget, predicted);
    Ok(Fitted {
        keep: b.keep,
        model: lm,
        budget_ms,
        target: l.target,
        settings: s.clone(),
        report,
        input: input.to_path_buf(),
    })
}

/// The predicted latency budget the search fits after the measured rounds: the kept round's
/// `asked` budget, or its plan's `predicted` latency when higher. A round whose budget no plan
/// fits gets the smallest plan all the same (which may then measure under the target); below
/// its prediction the search would find no plan at all.
pub(crate) fn search_budget(asked: f64, predicted: f64) -> f64 {
    asked.max(predicted)
}

/// The original's and a plan's milliseconds, measured together.
type Pair = (f64, f64);

/// One measured round: the budget asked, the plan it gave, and the plan's measured latency
/// against the original's.
#[derive(Clone)]
struct Round {
    budget: f64,
    keep: Vec<bool>,
    /// (original ms, plan ms).
    measured: (f64, f64),
    ratio: f64,
}

impl Round {
    /// The report's row, with the plan's predicted latency.
    fn json(&self, predicted_ms: f64) -> serde_json::Value {
        let (a, b) = self.measured;
        json!({
            "budget_ms": self.budget, "predicted_ms": predicted_ms, "original_ms": a,
            "measured_ms": b, "ratio": self.ratio,
        })
    }
}

/// Measure-and-adjust rounds (`plan` maps a predicted budget to a plan, `measure` a plan to the
/// original's and its milliseconds): while a plan misses the target the budget is tightened
/// ([`next_budget`], and by 3% steps until the plan changes); a plan well under it gets slack
/// back; at most [`ROUNDS`]. `(base, start)`: the whole model's budget and the first asked.
/// Returns the least pruned plan that met the target (the highest measured ratio), and every
/// round.
fn measured_rounds(
    (base, start): (f64, f64),
    target: f64,
    plan: &dyn Fn(f64) -> Vec<bool>,
    measure: &mut dyn FnMut(&[bool]) -> Result<Pair>,
    line: &dyn Fn(usize, f64, &[bool]) -> String,
    out: &dyn Progress,
) -> Result<(Option<Round>, Vec<Round>)> {
    let mut budget = start;
    let mut rounds: Vec<Round> = vec![];
    let mut best: Option<usize> = None;
    for round in 1..=ROUNDS {
        let mut keep = plan(budget);
        // After a miss the plan must change: a budget tightened by less than one channel step
        // is tightened further (3% at a time) until it does.
        let missed = rounds.last().filter(|r| r.ratio > target);
        let mut nudges = 0;
        while let Some(last) = missed {
            if last.keep != keep || nudges >= NUDGES {
                break;
            }
            budget *= 0.97;
            keep = plan(budget);
            nudges += 1;
        }
        if rounds.last().is_some_and(|r| r.keep == keep) {
            break; // a new budget no longer changes the plan
        }
        let (orig_ms, ms) = measure(&keep)?;
        let ratio = ms / orig_ms.max(1e-9);
        out.line(&format!(
            "{} ({orig_ms:.3} -> {ms:.3} ms; target {target:.3}x)",
            line(round, ratio, &keep)
        ));
        rounds.push(Round {
            budget,
            keep,
            measured: (orig_ms, ms),
            ratio,
        });
        if ratio <= target && best.is_none_or(|b| ratio > rounds[b].ratio) {
            best = Some(rounds.len() - 1);
        }
        // Just under the target: done. Over it: tighten. Well under it: loosen.
        if ratio <= target && ratio >= target * CLOSE {
            break;
        }
        let pairs: Vec<(f64, f64)> = rounds.iter().map(|r| (r.budget, r.ratio)).collect();
        budget = next_budget(base, target, &pairs);
    }
    let best = best.map(|b| rounds[b].clone());
    Ok((best, rounds))
}

fn unreachable(target: f64, got: f64, how: &str) -> Error {
    Error::Unreachable(format!(
        "--target-latency {target} is out of reach: the best plan is {how} at {got:.3}x of the \
         original's latency (the layers and ops that cannot be pruned take the rest; a larger \
         target or a smaller --round-to may fit); nothing was written"
    ))
}

/// Median ms of the original (the file `input`) and the candidate model, run alternately
/// (≥ 20 timed runs each) at the profile's input shape.
fn measure_pair(
    s: &measure::Settings,
    input: &Path,
    cand: &crate::ir::Model,
    profile: &Profile,
) -> Result<(f64, f64)> {
    let tmp = eval::TempDir::new("latency")?;
    let path = tmp.save(cand, "candidate.onnx")?;
    let shape = &profile.input_shape;
    let chw = [shape[1] as usize, shape[2] as usize, shape[3] as usize];
    let med = measure::time_all(s, &[input, &path], chw, s.runs.max(20))?;
    Ok((med[0], med[1]))
}

/// Per profiled layer: its predicted and its full-size milliseconds.
/// [`layers`] with each layer's time alone: the profile's (interpolated at the kept counts,
/// and at full size) beside the one `timed` now.
fn layers_checked(
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

fn layers(lm: &LatencyModel, counts: &[usize]) -> serde_json::Value {
    let v: Vec<_> = lm
        .layer_names()
        .into_iter()
        .zip(lm.per_layer(counts))
        .map(|(n, (ms, d))| json!({"node": n, "predicted_ms": ms, "full_ms": ms - d}))
        .collect();
    json!(v)
}

/// The report's `latency` object.
fn report(
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

#[cfg(test)]
mod tests {
    use super::next_budget as tighten;
    use super::{measured_rounds, ROUNDS};

    /// A plan of 100 channels keeping `budget` of them (the budget in channels).
    fn plan(budget: f64) -> Vec<bool> {
        let k = budget.clamp(0.0, 100.0).round() as usize;
        (0..100).map(|i| i < k).collect()
    }

    fn kept(keep: &[bool]) -> f64 {
        keep.iter().filter(|&&k| k).count() as f64
    }

    /// Measure-and-adjust on a synthetic runtime (no timing): a latency of 0.2 + 0.8·(kept
    /// share)^1.5 of the original, which the budget (linear in channels) misjudges. The rounds
    /// end on a plan within the target and no more than 4% under it, and a plan over the
    /// target is never returned.
    #[test]
    fn measured_rounds_land_just_under_the_target() {
        let ratio = |keep: &[bool]| 0.2 + 0.8 * (kept(keep) / 100.0).powf(1.5);
        // From a plan well under the target (slack given back) and from one over it.
        for start in [30.0, 80.0] {
            let mut calls = 0;
            let mut measure = |keep: &[bool]| {
                calls += 1;
                Ok((10.0, 10.0 * ratio(keep)))
            };
            let (best, rounds) = measured_rounds(
                (100.0, start),
                0.5,
                &plan,
                &mut measure,
                &|r, x, _: &[bool]| format!("round {r}: {x:.3}"),
                &crate::job::Quiet,
            )
            .unwrap();
            let best = best.expect("a plan that meets 0.5 exists");
            let r = best.ratio;
            assert!((0.5 * super::CLOSE..=0.5).contains(&r), "from {start}: {r}");
            assert_eq!(r, ratio(&best.keep));
            assert_eq!(calls, rounds.len());
            assert!(rounds.len() <= ROUNDS);
            // The first plan is the start's; every round over the target is followed by a
            // tighter budget, every one under it by a looser one.
            assert_eq!(kept(&rounds[0].keep), start);
            for w in rounds.windows(2) {
                let (a, b) = (w[0].budget, w[1].budget);
                match w[0].ratio > 0.5 {
                    true => assert!(b < a, "from {start}: {a} -> {b}"),
                    false => assert!(b > a, "from {start}: {a} -> {b}"),
                }
            }
        }
        // A target below what any plan measures: no plan, and the rounds stop.
        let (none, rounds) = measured_rounds(
            (100.0, 50.0),
            0.1,
            &plan,
            &mut |k: &[bool]| Ok((10.0, 10.0 * ratio(k))),
            &|r, x, _: &[bool]| format!("round {r}: {x:.3}"),
            &crate::job::Quiet,
        )
        .unwrap();
        assert!(none.is_none());
        assert!(!rounds.is_empty() && rounds.iter().all(|r| r.ratio > 0.1));
    }

    #[test]
    fn a_miss_asks_the_prediction_for_proportionally_more_saving() {
        // Predicted 50 of 100 ms; measured 0.62: asked 50% saving, got 38%, so ask 65.8%.
        let r = vec![(50.0, 0.62)];
        let b = tighten(100.0, 0.5, &r);
        assert!((b - (100.0 - 50.0 * 50.0 / 38.0)).abs() < 1e-9, "{b}");
        // Then the secant through both rounds: 0.62 at 50, 0.56 at 40 -> 0.5 at 30.
        let r = vec![(50.0, 0.62), (40.0, 0.56)];
        assert!((tighten(100.0, 0.5, &r) - 30.0).abs() < 1e-9);
        // A flat or inverted secant falls back to the proportional step; never looser.
        let r = vec![(50.0, 0.6), (45.0, 0.6)];
        let b = tighten(100.0, 0.5, &r);
        assert!(b < 45.0 && b > 0.0, "{b}");
        // Well under the target: looser than the last budget, by the proportional step.
        let r = vec![(40.0, 0.4)];
        let b = tighten(100.0, 0.5, &r);
        assert!((b - (100.0 - 60.0 * 50.0 / 60.0)).abs() < 1e-9, "{b}");
        // A secant that leaves the bracket of a passing and a failing budget is replaced by
        // the bracket's midpoint: 40 met (0.44), 50 missed (0.51), 45 missed (0.505): the
        // nearly flat secant through the last two lands on 40, which already met the target.
        let r = vec![(40.0, 0.44), (50.0, 0.51), (45.0, 0.505)];
        let b = tighten(100.0, 0.5, &r);
        assert!((b - 42.5).abs() < 1e-9, "{b}");
    }
}
