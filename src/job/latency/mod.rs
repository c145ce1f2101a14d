//! `--target-latency R`: the output's latency at most R × the input's on the deploy runtime.
//!
//! The latency model comes from `--latency-profile` (measured on the device by
//! `onnx-prune profile`; checked against the input's SHA-256) or is measured here first. The
//! allocation fits the predicted latency (and the MAC target, both hold). With a profile
//! measured here the pruned model is then measured for real against the original (interleaved
//! runs, medians): while it misses the target, the predicted budget is tightened by the miss and
//! the allocation repeats; a plan well under the target gets some slack back ([`CLOSE`]); at
//! most [`ROUNDS`] rounds, and the least pruned plan that met the target is kept
//! (rounds.rs). A target that cannot be met is an error, never a model over budget.
//! With a profile from another machine nothing here can measure the device, so the prediction
//! is the promise, and the report says so.
//!
//! With a search agent, every episode fits the same predicted budget the fitted plan met (the
//! target, tightened by the measured rounds: the predictor calibrated on this model), and the
//! written plan is measured again at the end ([`Fitted::finish`]); a miss is said, not hidden.

use super::{Options, Progress, RoundTo};
use crate::error::{Error, Result};
use crate::eval::runtime;
use crate::latency::staircase::Staircase;
use crate::latency::{measure, LatencyModel, Profile};
use crate::search::allocate::{Budget, Rounding, SpaceCost};
use crate::search::datafree::Pruner;
use report::{layers, layers_checked, report};
use rounds::{measure_pair, measured_rounds, unreachable};
use serde_json::json;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

mod report;
mod rounds;

pub use rounds::{next_budget, CLOSE, ROUNDS};

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
pub fn staircase(input: &Path, p: &Pruner, o: &Options, out: &dyn Progress) -> Result<Staircase> {
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

/// The job's options with `--round-to auto` resolved: the staircase's multiple ([`staircase`],
/// measured or read once), and the staircase itself; other `--round-to`s as given.
pub(crate) fn resolve_auto<'a>(
    input: &Path,
    p: &Pruner,
    o: &'a Options,
    out: &dyn Progress,
) -> Result<(Cow<'a, Options>, Option<Staircase>)> {
    match o.round_to {
        RoundTo::Auto => {
            let st = staircase(input, p, o, out)?;
            let resolved = Options {
                round_to: RoundTo::Fixed(st.round_to),
                ..o.clone()
            };
            Ok((Cow::Owned(resolved), Some(st)))
        }
        RoundTo::Fixed(_) | RoundTo::Capped(_) => Ok((Cow::Borrowed(o), None)),
    }
}

/// The plan fitted to `--target-latency` ([`fit`]; `None` without one), and with `--round-to
/// auto` (`auto`) its fallbacks: a staircase multiple that puts the latency target out of reach
/// (whole blocks of channels are too coarse for it) gives way first to the same multiple where
/// groups are wide enough for two blocks (ORT's blocks kept in wide layers; skipped where no
/// group is that narrow, which would give the same plans again), then to half of it
/// everywhere, halving again while it is out of reach. Returns the options with the
/// `--round-to` that fitted.
pub(crate) fn fit_rounding<'a>(
    input: &Path,
    p: &Pruner,
    o: &'a Options,
    macs: u64,
    imp: &[f64],
    auto: bool,
    out: &dyn Progress,
) -> Result<(Cow<'a, Options>, Option<Fitted>)> {
    let Some(l) = &o.latency else {
        return Ok((Cow::Borrowed(o), None));
    };
    let mut finer = o.clone();
    loop {
        let multiple = finer.round_to.multiple();
        match fit(input, p, &finer, l, macs, imp, out) {
            Err(Error::Unreachable(msg)) if auto && multiple > 1 => {
                let capped = RoundTo::Capped(multiple);
                finer.round_to = match finer.round_to {
                    RoundTo::Fixed(_)
                        if p.multiples(capped.rounding())
                            != p.multiples(finer.round_to.rounding()) =>
                    {
                        capped
                    }
                    _ => RoundTo::Fixed(multiple / 2),
                };
                out.line(&format!(
                    "--round-to auto: {msg}; trying {}",
                    match finer.round_to {
                        RoundTo::Capped(m) => format!(
                            "multiples of {m} in groups of {} channels or more, \
                             smaller multiples in narrower ones",
                            2 * m
                        ),
                        r => format!("multiples of {}", r.multiple()),
                    }
                ));
            }
            r => return Ok((Cow::Owned(finer), Some(r?))),
        }
    }
}

/// The report's `round_to` object of a job with `--round-to auto`: the staircase and its
/// multiple; where the job fell back to `used` ([`fit_rounding`]), the staircase's multiple as
/// `staircase_multiple`, the one used as `multiple`, and for a capped multiple the prunable
/// groups too narrow for it with theirs (`capped`: group key → multiple).
pub(crate) fn round_to_report(p: &Pruner, st: Staircase, used: RoundTo) -> serde_json::Value {
    let staircase_multiple = st.round_to;
    let mut r = json!({"auto": true, "multiple": staircase_multiple, "staircase": st});
    if used != RoundTo::Fixed(staircase_multiple) {
        r["staircase_multiple"] = staircase_multiple.into();
        r["multiple"] = used.multiple().into();
        if let RoundTo::Capped(m) = used {
            // The prunable groups only (a declined group keeps all its channels anyway).
            let prunable = p.prunable_groups();
            let narrow: serde_json::Map<String, serde_json::Value> = p
                .multiples(used.rounding())
                .into_iter()
                .zip(&p.ch.groups)
                .enumerate()
                .filter(|&(gi, (g, _))| g != m && prunable.contains(&gi))
                .map(|(_, (g, group))| (group.key.clone(), g.into()))
                .collect();
            r["capped"] = narrow.into();
        }
    }
    r
}
