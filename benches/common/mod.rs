//! Helpers shared by the benchmark programs (included with `mod common;`).
#![allow(dead_code)]

use onnx_prune::data::Dataset;
use onnx_prune::learn::train::{TrainOptions, Trainer};
use onnx_prune::net::Net;
use std::time::Instant;

/// The wall time of each of `steps` training steps of `net` on `data` (fwd + CE + bwd + SGD
/// with the default momentum, weight decay and clipping; lr 1e-4), in seconds.
pub fn step_times(net: &mut Net, data: &Dataset, batch: usize, steps: usize) -> Vec<f64> {
    let mut times = vec![];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut tr = Trainer::new(
        net,
        TrainOptions {
            batch,
            steps,
            lr: 1e-4,
            ..Default::default()
        },
    );
    let mut last = Instant::now();
    tr.run(
        net,
        None,
        data,
        &stop,
        &mut |_| {
            times.push(last.elapsed().as_secs_f64());
            last = Instant::now();
        },
        &mut |_, _| Ok(()),
    )
    .unwrap();
    times
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// This process's peak resident memory (VmHWM) in MiB, or "?".
pub fn peak_rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| format!("{:.0}", kb / 1024.0))
        .unwrap_or_else(|| "?".into())
}
