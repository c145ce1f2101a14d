//! The measured rounds of `--target-latency` with a profile measured here: measure the plan
//! against the original, tighten the predicted budget after a miss ([`next_budget`]), give
//! slack back to a plan well under the target, keep the least pruned plan that met it.

use crate::error::{Error, Result};
use crate::eval;
use crate::job::Progress;
use crate::latency::{measure, Profile};
use serde_json::json;
use std::path::Path;

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

/// The original's and a plan's milliseconds, measured together.
pub(super) type Pair = (f64, f64);

/// One measured round: the budget asked, the plan it gave, and the plan's measured latency
/// against the original's.
#[derive(Clone)]
pub(super) struct Round {
    pub(super) budget: f64,
    pub(super) keep: Vec<bool>,
    /// (original ms, plan ms).
    pub(super) measured: (f64, f64),
    pub(super) ratio: f64,
}

impl Round {
    /// The report's row, with the plan's predicted latency.
    pub(super) fn json(&self, predicted_ms: f64) -> serde_json::Value {
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
pub(super) fn measured_rounds(
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

pub(super) fn unreachable(target: f64, got: f64, how: &str) -> Error {
    Error::Unreachable(format!(
        "--target-latency {target} is out of reach: the best plan is {how} at {got:.3}x of the \
         original's latency (the layers and ops that cannot be pruned take the rest; a larger \
         target or a smaller --round-to may fit); nothing was written"
    ))
}

/// Median ms of the original (the file `input`) and the candidate model, run alternately
/// (≥ 20 timed runs each) at the profile's input shape.
pub(super) fn measure_pair(
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
