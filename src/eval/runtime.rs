//! The runtimes behind one interface: a model opened for image batches `[B, C, H, W]` that
//! streams every output of every batch to a sink, in sample order.
//!
//! - tract (feature `tract`): compiled once for a fixed batch; the last partial batch is
//!   zero-padded and the padding rows are cut from every output; batches run in parallel.
//! - ONNX Runtime (feature `ort`): dynamic batch, CUDA provider when usable, intra-op threads.

use super::HostTensor;
use crate::error::{Error, Result};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tract,
    Ort,
    /// The model's IR run by burn (see `burn_rt`).
    Burn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tract => "tract",
            Kind::Ort => "ort",
            Kind::Burn => "burn",
        }
    }
}

/// Resolves `tract|ort|auto` to a runtime this build and machine have, and returns one line
/// saying which (with the library and execution provider for ONNX Runtime).
pub fn choose(want: &str) -> Result<(Kind, String)> {
    if !matches!(want, "tract" | "ort" | "burn" | "auto") {
        return Err(Error::Usage(format!(
            "unknown runtime '{want}' (tract, ort, burn, auto)"
        )));
    }
    if want == "burn" {
        let (_, line) = crate::net::infer_device();
        return Ok((Kind::Burn, format!("runtime: burn ({line})")));
    }
    #[cfg(feature = "ort")]
    if want != "tract" {
        match super::ort_rt::init() {
            Ok(lib) => {
                let (_, ep) = super::ort_rt::provider();
                let v = super::ort_rt::version_of(&lib)
                    .map(|(a, b, c)| format!(" {a}.{b}.{c}"))
                    .unwrap_or_default();
                return Ok((
                    Kind::Ort,
                    format!("runtime: onnxruntime{v} ({ep}) from {}", lib.display()),
                ));
            }
            Err(e) if want == "ort" => return Err(e),
            Err(e) => {
                return tract_or(format!("runtime: tract ({e})"));
            }
        }
    }
    #[cfg(not(feature = "ort"))]
    if want == "ort" {
        return Err(Error::Usage(
            "this build has no ONNX Runtime support: rebuild with the `ort` feature".into(),
        ));
    }
    tract_or("runtime: tract".into())
}

fn tract_or(line: String) -> Result<(Kind, String)> {
    if cfg!(feature = "tract") {
        Ok((Kind::Tract, line))
    } else {
        Err(Error::Usage(
            "this build has no runtime: rebuild with the `tract` or `ort` feature".into(),
        ))
    }
}

/// A model ready to run on image batches.
pub trait Runtime {
    /// Runs the `n` samples of `x` (each C·H·W floats) in batches and calls
    /// `sink(first_sample, outputs)` for each batch, in order. Output tensors keep the batch on
    /// axis 0, with exactly the batch's samples.
    fn for_each_batch(
        &mut self,
        x: &[f32],
        n: usize,
        sink: &mut dyn FnMut(usize, Vec<HostTensor>) -> Result<()>,
    ) -> Result<()>;

    /// Output 0 of every sample, flattened: `([n·k], k)`.
    fn run_all(&mut self, x: &[f32], n: usize) -> Result<(Vec<f32>, usize)> {
        let mut all = Vec::new();
        let mut k = 0;
        self.for_each_batch(x, n, &mut |s, outs| {
            let o = outs
                .into_iter()
                .next()
                .ok_or_else(|| Error::Usage("the model has no output".into()))?;
            let b = o.shape.first().copied().unwrap_or(1).max(1);
            k = o.data.len() / b;
            let _ = s;
            all.extend(o.data);
            Ok(())
        })?;
        Ok((all, k))
    }
}

/// Opens `path` on the given runtime for batches of `batch` images of `chw`.
pub fn open(
    kind: Kind,
    path: &Path,
    batch: usize,
    chw: (usize, usize, usize),
    threads: usize,
) -> Result<Box<dyn Runtime>> {
    let _ = (path, batch, chw, threads);
    match kind {
        #[cfg(feature = "ort")]
        Kind::Ort => Ok(Box::new(OrtRuntime {
            m: super::ort_rt::OrtModel::new(path, threads)?,
            batch: batch.max(1),
            chw,
        })),
        Kind::Burn => Ok(Box::new(super::burn_rt::BurnRuntime::new(
            path,
            batch.max(1),
            chw,
        )?)),
        #[cfg(feature = "tract")]
        Kind::Tract => Ok(Box::new(super::tract_rt::Batched::new(
            path,
            batch.max(1),
            chw,
        )?)),
        #[allow(unreachable_patterns)]
        k => Err(Error::Usage(format!(
            "this build has no {} runtime",
            k.name()
        ))),
    }
}

/// Output 0 of `model` on every sample of `ds` (the model is written into `tmp` as `name`;
/// batches of 64, or of the model's fixed batch size; all cores): `([n·k], k)`.
pub fn logits(
    kind: Kind,
    model: &crate::ir::Model,
    tmp: &super::TempDir,
    name: &str,
    ds: &crate::data::Dataset,
) -> Result<(Vec<f32>, usize)> {
    let path = tmp.save(model, name)?;
    let batch = super::fixed_batch(model).unwrap_or(64);
    open(kind, &path, batch, (ds.c, ds.h, ds.w), all_threads())?.run_all(&ds.x, ds.n)
}

/// Median milliseconds of one `run_all(x, n)` of each model in `models`, run alternately so
/// that all see the same machine load: `warm` untimed rounds, then up to `runs` timed ones
/// (with `cap`: stopping once at least 5 are timed and `cap` has passed since the start).
/// Returns the medians and the number of timed rounds.
pub fn median_latency(
    models: &mut [Box<dyn Runtime>],
    x: &[f32],
    n: usize,
    warm: usize,
    runs: usize,
    cap: Option<std::time::Duration>,
) -> Result<(Vec<f64>, usize)> {
    use std::time::Instant;
    let start = Instant::now();
    let mut times = vec![vec![]; models.len()];
    for i in 0..warm + runs {
        for (m, ts) in models.iter_mut().zip(&mut times) {
            let t = Instant::now();
            m.run_all(x, n)?;
            if i >= warm {
                ts.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        if cap.is_some_and(|c| i + 1 >= warm + 5 && start.elapsed() > c) {
            break;
        }
    }
    let timed = times.first().map_or(0, Vec::len);
    let med = times
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        })
        .collect();
    Ok((med, timed))
}

/// Default thread count: every core.
pub fn all_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(feature = "ort")]
struct OrtRuntime {
    m: super::ort_rt::OrtModel,
    batch: usize,
    chw: (usize, usize, usize),
}

#[cfg(feature = "ort")]
impl Runtime for OrtRuntime {
    fn for_each_batch(
        &mut self,
        x: &[f32],
        n: usize,
        sink: &mut dyn FnMut(usize, Vec<HostTensor>) -> Result<()>,
    ) -> Result<()> {
        let l = self.chw.0 * self.chw.1 * self.chw.2;
        let progress = super::progress::Progress::new("onnxruntime", n);
        for s in (0..n).step_by(self.batch) {
            let e = (s + self.batch).min(n);
            let outs = self.m.run_batch(&x[s * l..e * l], e - s, self.chw)?;
            progress.inc(e - s);
            sink(s, outs)?;
        }
        Ok(())
    }
}
