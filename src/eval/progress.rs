//! A one-line progress indicator on stderr, shown only when stderr is a terminal (build logs and
//! CI stay clean).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub struct Progress {
    label: String,
    total: usize,
    done: AtomicUsize,
    start: Instant,
    on: bool,
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            done: AtomicUsize::new(0),
            start: Instant::now(),
            // Small runs (latency measurements of one batch) would print a line per run.
            on: std::io::stderr().is_terminal() && total > 256,
        }
    }

    pub fn inc(&self, n: usize) {
        let d = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if !self.on {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let rate = d as f64 / secs.max(1e-9);
        let eta = (self.total.saturating_sub(d)) as f64 / rate.max(1e-9);
        let width = 30;
        let filled = (width * d.min(self.total)) / self.total.max(1);
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{bar}] {d}/{} {:.0}/s ETA {:.0}s ",
            self.label, self.total, rate, eta
        );
        if d >= self.total {
            let _ = writeln!(e);
        }
        let _ = e.flush();
    }
}
