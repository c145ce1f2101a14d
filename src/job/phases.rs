//! The job's clock: its deadline, how `--time-limit` is split between the phases
//! (`crate::budget`), the record of each phase (time, scores before and after) for the
//! report's `time` object, and the stop flag.

use super::{Options, Progress};
use crate::budget::{self, Clock, Deadline, Split};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long fine-tuning runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    Off,
    Epochs(f64),
    Steps(usize),
    /// Planned from the time left (at most [`budget::MAX_EPOCHS`]).
    Planned,
}

/// A running job: its clock, deadline, phase records and stop flag.
pub(crate) struct Phases {
    pub(crate) clock: Arc<dyn Clock>,
    /// The whole command's deadline (none: no limit).
    pub(crate) deadline: Deadline,
    pub(crate) limit: Option<Duration>,
    pub(crate) split: Option<Split>,
    pub(crate) stop: &'static AtomicBool,
    /// The phase the stop flag ended, once it has.
    pub(crate) interrupted: Option<&'static str>,
    phases: Vec<Value>,
    started: Duration,
}

impl Phases {
    /// A job limited by `time_limit`, else [`budget::DEFAULT_LIMIT`] unless the fine-tune
    /// length is fixed or fine-tuning is off.
    pub(crate) fn new(o: &Options, clock: Arc<dyn Clock>, stop: &'static AtomicBool) -> Phases {
        let limit = o
            .time_limit
            .or_else(|| (o.length() == Length::Planned).then_some(budget::DEFAULT_LIMIT));
        let deadline = match limit {
            Some(l) => Deadline::at(clock.clone(), clock.now() + l),
            None => Deadline::none(clock.clone()),
        };
        Phases {
            started: clock.now(),
            clock,
            deadline,
            limit,
            split: None,
            stop,
            interrupted: None,
            phases: vec![],
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records the phase that began at the end of the previous one.
    pub(crate) fn end(&mut self, phase: &str, before: Value, after: Value) {
        let now = self.clock.now();
        let secs = (now.saturating_sub(self.started)).as_secs_f64();
        self.started = now;
        self.phases.push(json!({
            "phase": phase, "seconds": secs, "before": before, "after": after,
        }));
    }

    /// Plans the split once the time of one validation pass (`eval`) is known, and says how.
    pub(crate) fn plan(
        &mut self,
        eval: Duration,
        search_cap: Option<Duration>,
        agent: bool,
        ft: bool,
        out: &dyn Progress,
    ) {
        let Some(limit) = self.limit else { return };
        let s = budget::split(limit, search_cap, eval);
        let left = self.deadline.left().unwrap_or_default().as_secs_f64();
        out.line(&format!(
            "time limit {}: {}recovery as needed, {}final measurement and write {:.0}s (reserve); {:.0}s left after loading",
            fmt_secs(s.limit_s),
            if agent { format!("search up to {}, ", fmt_secs(s.search_s)) } else { String::new() },
            if ft { "fine-tuning the rest, ".to_string() } else { String::new() },
            s.reserve_s,
            left
        ));
        self.split = Some(s);
    }

    /// How long the search may run from now.
    pub(crate) fn search_budget(&self, cap: Option<Duration>) -> Option<Duration> {
        let s = self
            .split
            .as_ref()
            .map(|s| Duration::from_secs_f64(s.search_s));
        let b = match (s, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Never past the whole job's deadline.
        match (b, self.deadline.left()) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        }
    }

    /// The fine-tuning deadline: the job's less the reserve.
    pub(crate) fn finetune_deadline(&self) -> Deadline {
        match (self.deadline.at, &self.split) {
            (Some(at), Some(s)) => Deadline::at(
                self.clock.clone(),
                at.saturating_sub(Duration::from_secs_f64(s.reserve_s)),
            ),
            (at, _) => Deadline {
                clock: self.clock.clone(),
                at,
            },
        }
    }

    /// The report's `time` object.
    pub(crate) fn report(&self) -> Value {
        json!({
            "limit_s": self.limit.map(|l| l.as_secs_f64()),
            "split": self.split,
            "phases": self.phases,
            "interrupted": self.interrupted,
        })
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.0}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.0}s")
    }
}

/// The report fields of the validation figures `measure` writes (the shipped model's so far),
/// and their names in a phase's `before`/`after`.
pub const SCORE_FIELDS: [(&str, &str); 4] = [
    ("top1_after", "top1"),
    ("agreement", "agreement"),
    ("kl", "kl"),
    ("rel_mse", "rel_mse"),
];

/// The validation figures among the report fields, as they are named there.
pub(crate) fn score_fields(
    extra: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    SCORE_FIELDS
        .iter()
        .filter_map(|(k, _)| extra.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// The validation figures among the report fields, named as in a phase's `before`/`after`.
pub(crate) fn scores(extra: &serde_json::Map<String, Value>) -> Value {
    let mut j = json!({});
    for (k, name) in SCORE_FIELDS {
        if let Some(v) = extra.get(k) {
            j[name] = v.clone();
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::SimClock;

    fn phases(o: &Options, clock: &Arc<SimClock>) -> Phases {
        static STOP: AtomicBool = AtomicBool::new(false);
        Phases::new(o, clock.clone(), &STOP)
    }

    #[test]
    fn the_limit_is_split_and_the_phases_add_up_on_the_clock() {
        let clock = Arc::new(SimClock::new(Duration::ZERO));
        let o = Options {
            data: Some("d".into()),
            time_limit: Some(Duration::from_secs(1200)),
            ..Default::default()
        };
        let mut j = phases(&o, &clock);
        clock.advance(Duration::from_secs(30));
        j.plan(
            Duration::from_secs(2),
            None,
            true,
            true,
            &super::super::Quiet,
        );
        j.end("prepare", Value::Null, Value::Null);
        let s = j.split.clone().expect("planned");
        // The search may take its share and never more than what is left of the limit.
        let b = j.search_budget(None).expect("limited");
        assert_eq!(
            b,
            Duration::from_secs_f64(s.search_s).min(Duration::from_secs(1170))
        );
        assert!(j.search_budget(Some(Duration::from_secs(5))).unwrap() <= Duration::from_secs(5));
        clock.advance(Duration::from_secs(300));
        j.end("search", Value::Null, Value::Null);
        // Fine-tuning ends a reserve before the job's deadline.
        let left = j.finetune_deadline().left().expect("limited");
        assert!((left.as_secs_f64() - (1200.0 - 330.0 - s.reserve_s)).abs() < 1e-6);
        assert!(s.reserve_s > 0.0);
        clock.advance(Duration::from_secs(500));
        j.end("finetune", Value::Null, Value::Null);
        let r = j.report();
        let secs: Vec<f64> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["seconds"].as_f64().unwrap())
            .collect();
        assert_eq!(secs, vec![30.0, 300.0, 500.0]);
        assert_eq!(r["limit_s"], json!(1200.0));
    }

    #[test]
    fn a_fixed_length_has_no_default_limit_and_no_data_no_fine_tuning() {
        let clock = Arc::new(SimClock::new(Duration::ZERO));
        let fixed = Options {
            data: Some("d".into()),
            finetune: Length::Steps(20),
            ..Default::default()
        };
        assert_eq!(phases(&fixed, &clock).limit, None);
        let planned = Options {
            data: Some("d".into()),
            ..Default::default()
        };
        assert_eq!(phases(&planned, &clock).limit, Some(budget::DEFAULT_LIMIT));
        let data_free = Options::default();
        assert_eq!(data_free.length(), Length::Off);
        assert_eq!(phases(&data_free, &clock).limit, None);
        let off = Options {
            data: Some("d".into()),
            finetune: Length::Epochs(0.0),
            ..Default::default()
        };
        assert_eq!(off.length(), Length::Off);
    }
}
