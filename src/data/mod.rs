//! Data on the host: datasets for evaluation, calibration and training, decoded once into memory
//! as NCHW float32 (the formats in `arrays.rs` and `images.rs`), and [`HostTensor`], the dense
//! tensor that crosses every runtime boundary.
//!
//! Formats: `.npy` / `.npz` (arrays `x` and optional `y`; uint8 or float32; NHWC or NCHW,
//! detected or given), MNIST IDX files (`*-images-idx3-ubyte[.gz]`, labels found beside them),
//! ImageFolder directories and `.tar` archives of them (`[split/]<class>/*.jpg|png`, classes
//! sorted by name; images not inside a class folder make an unlabelled set). Images are decoded
//! in parallel.

mod arrays;
mod images;

use arrays::{array_dataset, idx, npz};
pub use arrays::{parse_npy, NpyArray, NpyData};
use images::{folder, tar_folder};

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::path::Path;

/// A dense f32 tensor (shape + row-major data) crossing the runtime boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Deterministic standard-normal-ish inputs (sum of uniforms) for the given shapes.
pub fn random_inputs(shapes: &[Vec<usize>], seed: u64) -> Vec<HostTensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|s| {
            let n = s.iter().product();
            let data = (0..n)
                .map(|_| (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0)
                .collect();
            HostTensor {
                shape: s.clone(),
                data,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Auto,
    Nhwc,
    Nchw,
}

/// Preprocessing: `x/255` for uint8 data when `scale`, then `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug)]
pub struct DataOptions {
    pub layout: Layout,
    pub scale: bool,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    /// Folder images: resize the shorter side to this before the centre crop.
    pub resize: Option<u32>,
    /// Folder images: centre crop to N×N (after `resize`), then resize to the model's size.
    /// Default: crop directly to the model's size.
    pub center_crop: Option<u32>,
    /// Use only the first N samples.
    pub limit: Option<usize>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            layout: Layout::Auto,
            scale: true,
            mean: None,
            std: None,
            resize: None,
            center_crop: None,
            limit: None,
        }
    }
}

/// Samples as one NCHW float32 buffer, plus labels when the source has them.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub x: Vec<f32>,
    pub y: Option<Vec<i64>>,
    pub classes: Option<Vec<String>>,
}

impl Dataset {
    pub fn sample_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn sample(&self, i: usize) -> &[f32] {
        let l = self.sample_len();
        &self.x[i * l..(i + 1) * l]
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::bad_file(path, msg)
}

/// Loads `path` for a model whose input is `[N, c, h, w]`.
pub fn load(path: &Path, chw: (usize, usize, usize), o: &DataOptions) -> Result<Dataset> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut ds = if path.is_dir() {
        folder(path, chw, o)?
    } else if name.ends_with(".tar") {
        tar_folder(path, chw, o)?
    } else if name.ends_with(".npz") {
        npz(path, o)?
    } else if name.ends_with(".npy") {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let a = parse_npy(&bytes).map_err(|m| bad(path, m))?;
        array_dataset(path, a, None, o)?
    } else if name.contains("idx3") {
        idx(path, o)?
    } else {
        return Err(bad(
            path,
            "unknown data format: expected .npy, .npz, MNIST idx3 file, .tar or a directory",
        ));
    };
    if (ds.c, ds.h, ds.w) != chw {
        return Err(bad(
            path,
            format!(
                "samples are {}×{}×{} (C×H×W) but the model takes {}×{}×{}",
                ds.c, ds.h, ds.w, chw.0, chw.1, chw.2
            ),
        ));
    }
    normalise(&mut ds, o, path)?;
    Ok(ds)
}

fn normalise(ds: &mut Dataset, o: &DataOptions, path: &Path) -> Result<()> {
    let c = ds.c;
    let mean = o.mean.clone().unwrap_or(vec![0.0; c]);
    let std = o.std.clone().unwrap_or(vec![1.0; c]);
    let fit = |v: Vec<f32>, what: &str| -> Result<Vec<f32>> {
        match v.len() {
            1 => Ok(vec![v[0]; c]),
            n if n == c => Ok(v),
            n => Err(bad(
                path,
                format!("--{what} has {n} values for {c} channels"),
            )),
        }
    };
    let (mean, std) = (fit(mean, "mean")?, fit(std, "std")?);
    if std.contains(&0.0) {
        return Err(Error::Usage("--std must not contain 0".into()));
    }
    let plane = ds.h * ds.w;
    ds.x.par_chunks_mut(plane).enumerate().for_each(|(k, p)| {
        let ch = k % c;
        for v in p.iter_mut() {
            *v = (*v - mean[ch]) / std[ch];
        }
    });
    Ok(())
}

/// A parsed `.npy` array.
/// Deterministic, non-overlapping calibration and validation index sets drawn from `n` samples
/// (a seeded shuffle: the first `calib` go to calibration, the next `val` to validation).
pub fn split(n: usize, seed: u64, calib: usize, val: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if calib + val > n {
        return Err(Error::Usage(format!(
            "--calib-size {calib} + --val-size {val} exceed the {n} samples"
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut c = idx[..calib].to_vec();
    let mut v = idx[calib..calib + val].to_vec();
    c.sort_unstable();
    v.sort_unstable();
    Ok((c, v))
}

/// The indices of `0..n` not in `held` (e.g. the training samples around a validation subset).
pub fn complement(n: usize, held: &[usize]) -> Vec<usize> {
    let held: std::collections::HashSet<usize> = held.iter().copied().collect();
    (0..n).filter(|i| !held.contains(i)).collect()
}

impl Dataset {
    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let l = self.sample_len();
        let mut x = Vec::with_capacity(idx.len() * l);
        for &i in idx {
            x.extend_from_slice(self.sample(i));
        }
        Dataset {
            n: idx.len(),
            c: self.c,
            h: self.h,
            w: self.w,
            x,
            y: self.y.as_ref().map(|y| idx.iter().map(|&i| y[i]).collect()),
            classes: self.classes.clone(),
        }
    }
}
