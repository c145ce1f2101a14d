//! Time limits: a clock (the real one, or a simulated one for tests), deadlines, how the main
//! command splits `--time-limit` between its phases, and how many training steps fit in what
//! is left.
//!
//! The split (documented in docs/methods.md, "The time limit and fine-tuning"):
//! - the **search** may take up to [`SEARCH_SHARE`] of the limit (and no more than
//!   `--time-budget` when that is given); it stops earlier when its episodes are done;
//! - **recovery** (re-ranking and the final least squares): each re-ranked candidate is a full
//!   recovery; while fine-tuning follows, the re-ranking stops once another candidate would take
//!   it past [`RERANK_SHARE`] of the time left before fine-tuning's deadline ([`rerank_more`]:
//!   on a slow runtime four candidates ate a whole 4-minute limit); the first candidate is always
//!   recovered;
//! - **fine-tuning** gets everything from its start up to the limit less a **reserve** for the
//!   final measurement and the write ([`reserve`]); its step count is planned from the measured
//!   time of a step, and it stops at its deadline whatever the plan said;
//! - below [`MIN_FINETUNE`] of fine-tuning time the phase is skipped (with a note).
//!
//! Nothing here reads the system clock except [`SystemClock`]: every decision takes a
//! [`Clock`], so the split and the deadline logic are tested with a [`SimClock`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time since an origin.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Duration;
}

/// The real clock, from its creation.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A simulated clock for tests: it moves only by [`SimClock::advance`], plus `tick` at every
/// reading (0 for a clock that stands still between advances).
#[derive(Debug, Default)]
pub struct SimClock {
    t: Mutex<Duration>,
    tick: Duration,
}

impl SimClock {
    pub fn new(tick: Duration) -> SimClock {
        SimClock {
            t: Mutex::new(Duration::ZERO),
            tick,
        }
    }
    pub fn advance(&self, d: Duration) {
        *self.t.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        let mut t = self.t.lock().unwrap_or_else(|e| e.into_inner());
        *t += self.tick;
        *t
    }
}

/// A point on a clock after which work stops (`None`: never).
#[derive(Clone, Debug)]
pub struct Deadline {
    pub clock: Arc<dyn Clock>,
    pub at: Option<Duration>,
}

impl Deadline {
    pub fn none(clock: Arc<dyn Clock>) -> Deadline {
        Deadline { clock, at: None }
    }
    pub fn at(clock: Arc<dyn Clock>, at: Duration) -> Deadline {
        Deadline {
            clock,
            at: Some(at),
        }
    }
    /// Time left (`None` without a deadline).
    pub fn left(&self) -> Option<Duration> {
        self.at.map(|a| a.saturating_sub(self.clock.now()))
    }
    pub fn passed(&self) -> bool {
        self.at.is_some_and(|a| self.clock.now() >= a)
    }
    /// The earlier of this deadline and `now + d`.
    pub fn within(&self, d: Duration) -> Deadline {
        let t = self.clock.now() + d;
        Deadline {
            clock: self.clock.clone(),
            at: Some(self.at.map_or(t, |a| a.min(t))),
        }
    }
}

/// The search's share of the limit at most.
pub const SEARCH_SHARE: f64 = 0.25;
/// The re-ranking's share, at most, of the time left before fine-tuning's deadline when it
/// starts (only when fine-tuning follows).
pub const RERANK_SHARE: f64 = 0.25;

/// Whether the re-ranking recovers another candidate: `done` of them took `elapsed`, and at that
/// pace one more must end within `cap` (none: no limit). The first is always recovered.
pub fn rerank_more(elapsed: Duration, done: usize, cap: Option<Duration>) -> bool {
    match cap {
        None => true,
        Some(_) if done == 0 => true,
        Some(c) => elapsed + elapsed / done as u32 <= c,
    }
}
/// Fine-tuning with less time than this is skipped.
pub const MIN_FINETUNE: Duration = Duration::from_secs(10);
/// The default `--time-limit` of the main command.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Fine-tuning never runs more epochs than this, however long the limit (small data would
/// otherwise be trained for hundreds of epochs).
pub const MAX_EPOCHS: f64 = 30.0;

/// Time kept back at the end for the final measurement (`eval` is the measured time of one
/// validation pass of the original), the choice between the recovered and the fine-tuned model,
/// the speed measurement (about 2 s per batch size) and the write: 10 s, three validation
/// passes and 2% of the limit.
pub fn reserve(limit: Duration, eval: Duration) -> Duration {
    Duration::from_secs(10) + eval * 3 + limit.mul_f64(0.02)
}

/// How a limit is split, as the command plans it when it starts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Split {
    pub limit_s: f64,
    /// The search stops after this long (from its start).
    pub search_s: f64,
    /// Kept at the end for the final measurement and the write.
    pub reserve_s: f64,
}

/// The split of `limit` for a job whose search is capped by `search_cap` (`--time-budget`),
/// with `eval` the measured time of one validation pass.
pub fn split(limit: Duration, search_cap: Option<Duration>, eval: Duration) -> Split {
    let reserve = reserve(limit, eval).min(limit.mul_f64(0.5));
    let mut search = limit.mul_f64(SEARCH_SHARE);
    if let Some(c) = search_cap {
        search = search.min(c);
    }
    Split {
        limit_s: limit.as_secs_f64(),
        search_s: search.as_secs_f64(),
        reserve_s: reserve.as_secs_f64(),
    }
}

/// Training steps that fit in `left` at `per_step` each, with 5% slack, at most `max`, at
/// least 1.
pub fn steps_within(left: Duration, per_step: Duration, max: usize) -> usize {
    let per = per_step.as_secs_f64().max(1e-6);
    let n = (left.as_secs_f64() * 0.95 / per).floor() as usize;
    n.clamp(1, max.max(1))
}

/// Steps to re-plan a running plan to, or `None` to leave it. Cut when, at the measured pace
/// (`spent` for `done` steps), its remaining `planned − step` steps would overrun `left`.
/// Lengthened when it runs faster than planned (its first steps, timed before the run, are
/// slower than the steady pace, so a plan ended up to a sixth of the fine-tuning time early):
/// only in its first half (the cosine schedule is still near its peak, so the learning rate
/// moves little), only when at least 10% more steps fit, and at most to `max` steps.
pub fn repace(
    step: usize,
    planned: usize,
    max: usize,
    done: usize,
    spent: Duration,
    left: Duration,
) -> Option<usize> {
    if done == 0 || step >= planned {
        return None;
    }
    let per = spent.as_secs_f64() / done as f64;
    let need = per * (planned - step) as f64;
    let fit = step + ((left.as_secs_f64() * 0.95 / per.max(1e-9)).floor() as usize).max(1);
    if need > left.as_secs_f64() {
        return Some(fit);
    }
    let longer = fit.min(max);
    (2 * step < planned && longer * 10 >= planned * 11).then_some(longer)
}

/// Parses a duration: `90s`, `10m`, `2h`, `1h30m`; a number without a unit is seconds
/// (`45`, and the tail of `3m20`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let v: f64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
        total += v * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(format!("bad duration '{s}' (use e.g. 90s, 10m, 1h)")),
        };
        num.clear();
    }
    if !num.is_empty() {
        total += num
            .parse::<f64>()
            .map_err(|_| format!("bad duration '{s}'"))?;
    }
    if !(total > 0.0 && total < 1e9) {
        return Err(format!("duration '{s}' must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    /// Re-ranking under a cap: the first candidate always; another only if it ends within the
    /// cap at the pace so far; no cap, every candidate.
    #[test]
    fn rerank_stops_when_another_candidate_would_pass_its_cap() {
        use super::rerank_more;
        let s = Duration::from_secs;
        assert!(rerank_more(s(0), 0, Some(s(1))));
        assert!(
            rerank_more(s(500), 0, Some(s(1))),
            "the first is always recovered"
        );
        assert!(rerank_more(s(50), 1, Some(s(100))), "50 + 50 <= 100");
        assert!(!rerank_more(s(56), 1, Some(s(100))), "56 + 56 > 100");
        assert!(rerank_more(s(60), 2, Some(s(100))), "60 + 30 <= 100");
        assert!(!rerank_more(s(80), 2, Some(s(100))), "80 + 40 > 100");
        assert!(rerank_more(s(10_000), 7, None));
    }

    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20m").unwrap(), secs(1200.0));
        assert_eq!(parse_duration("2h").unwrap(), secs(7200.0));
        assert_eq!(parse_duration("1h30m").unwrap(), secs(5400.0));
        assert_eq!(parse_duration("90s").unwrap(), secs(90.0));
        assert_eq!(parse_duration("45").unwrap(), secs(45.0));
        assert_eq!(parse_duration("1.5m").unwrap(), secs(90.0));
        assert_eq!(parse_duration("3m20").unwrap(), secs(200.0));
        for bad in ["", "0", "-3m", "20x", "m", "5d", "20 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn split_gives_the_search_a_quarter_and_keeps_a_reserve() {
        let s = split(secs(1200.0), None, secs(2.0));
        assert_eq!(s.search_s, 300.0);
        // 10 + 3·2 + 0.02·1200
        assert!((s.reserve_s - 40.0).abs() < 1e-9, "{s:?}");
        // --time-budget caps the search.
        assert_eq!(
            split(secs(1200.0), Some(secs(60.0)), secs(2.0)).search_s,
            60.0
        );
        // A tiny limit never reserves more than half of it.
        let t = split(secs(10.0), None, secs(30.0));
        assert_eq!(t.reserve_s, 5.0);
    }

    #[test]
    fn steps_fit_the_time_left() {
        // 600 s at 0.5 s a step: 1140 steps (5% slack), capped by the epoch limit.
        assert_eq!(steps_within(secs(600.0), secs(0.5), 10_000), 1140);
        assert_eq!(steps_within(secs(600.0), secs(0.5), 700), 700);
        assert_eq!(steps_within(secs(0.1), secs(0.5), 700), 1);
    }

    #[test]
    fn repace_cuts_a_plan_that_would_overrun_and_leaves_one_on_time() {
        // With no room to lengthen (max = planned):
        let replan =
            |step, planned, done, spent, left| repace(step, planned, planned, done, spent, left);
        // 100 of 1000 steps took 100 s; 900 s left: on time.
        assert_eq!(replan(100, 1000, 100, secs(100.0), secs(900.0)), None);
        // Only 450 s left: cut to 100 + 427.
        assert_eq!(replan(100, 1000, 100, secs(100.0), secs(450.0)), Some(527));
        // Nothing measured yet, or the plan is done: no change.
        assert_eq!(replan(0, 1000, 0, secs(0.0), secs(1.0)), None);
        assert_eq!(replan(1000, 1000, 10, secs(10.0), secs(0.0)), None);
    }

    #[test]
    fn repace_lengthens_a_fast_plan_early_within_the_cap_and_still_cuts_a_slow_one() {
        // 100 of 1000 steps took 50 s (0.5 s a step); 900 s left: 1710 more fit -> 1810.
        assert_eq!(
            repace(100, 1000, 10_000, 100, secs(50.0), secs(900.0)),
            Some(1810)
        );
        // ... at most the epoch cap.
        assert_eq!(
            repace(100, 1000, 1200, 100, secs(50.0), secs(900.0)),
            Some(1200)
        );
        // Past half of the plan: left as it is (the schedule is decaying).
        assert_eq!(
            repace(600, 1000, 10_000, 600, secs(300.0), secs(900.0)),
            None
        );
        // Under 10% more: left as it is.
        assert_eq!(
            repace(100, 1000, 10_000, 100, secs(100.0), secs(1000.0)),
            None
        );
        // Too slow: cut, as replan does.
        assert_eq!(
            repace(100, 1000, 10_000, 100, secs(100.0), secs(450.0)),
            Some(527)
        );
    }

    #[test]
    fn deadlines_follow_the_simulated_clock() {
        let c = Arc::new(SimClock::new(Duration::ZERO));
        let d = Deadline::at(c.clone(), secs(10.0));
        assert!(!d.passed());
        assert_eq!(d.left(), Some(secs(10.0)));
        c.advance(secs(4.0));
        assert_eq!(d.left(), Some(secs(6.0)));
        // A sub-deadline never reaches past its parent.
        assert_eq!(d.within(secs(100.0)).at, Some(secs(10.0)));
        assert_eq!(d.within(secs(1.0)).at, Some(secs(5.0)));
        c.advance(secs(6.0));
        assert!(d.passed());
        assert_eq!(d.left(), Some(Duration::ZERO));
        assert!(!Deadline::none(c).passed());
    }
}
