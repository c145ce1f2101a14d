//! Datasets for evaluation and calibration, decoded once into memory as NCHW float32.
//!
//! Formats: `.npy` / `.npz` (arrays `x` and optional `y`; uint8 or float32; NHWC or NCHW,
//! detected or given), MNIST IDX files (`*-images-idx3-ubyte[.gz]`, labels found beside them),
//! ImageFolder directories and `.tar` archives of them (`[split/]<class>/*.jpg|png`, classes
//! sorted by name; images not inside a class folder make an unlabelled set). Images are decoded
//! in parallel.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::io::Read;
use std::path::Path;

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
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

pub enum NpyData {
    U8(Vec<u8>),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

pub fn parse_npy(b: &[u8]) -> std::result::Result<NpyArray, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(b.get(start..start + hlen).ok_or("truncated .npy header")?)
        .map_err(|_| "bad .npy header")?;
    let field = |k: &str| -> Option<&str> {
        let i = header.find(&format!("'{k}'"))?;
        Some(header[i + k.len() + 2..].trim_start_matches([':', ' ']))
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or("no descr")?;
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_s = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape")?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape '{shape_s}'")))
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &b[start + hlen..];
    let need = |size: usize| -> std::result::Result<&[u8], String> {
        data.get(..n.checked_mul(size).ok_or("size overflows")?)
            .ok_or_else(|| {
                format!(
                    "truncated .npy data ({} bytes for {n} elements)",
                    data.len()
                )
            })
    };
    let data = match descr {
        "|u1" | "u1" => NpyData::U8(need(1)?.to_vec()),
        "<f4" => NpyData::F32(
            need(4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "<i8" => NpyData::I64(
            need(8)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "<i4" => NpyData::I64(
            need(4)?
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        d => {
            return Err(format!(
                "unsupported dtype '{d}' (uint8, float32, int32, int64)"
            ))
        }
    };
    Ok(NpyArray { shape, data })
}

fn npz(path: &Path, o: &DataOptions) -> Result<Dataset> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut z =
        zip::ZipArchive::new(f).map_err(|e| bad(path, format!("not a valid .npz (zip): {e}")))?;
    let mut read = |name: &str| -> Result<Option<NpyArray>> {
        let mut e = match z.by_name(name) {
            Ok(e) => e,
            Err(_) => return Ok(None),
        };
        let mut b = Vec::new();
        e.read_to_end(&mut b)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        parse_npy(&b)
            .map(Some)
            .map_err(|m| bad(path, format!("{name}: {m}")))
    };
    let x = read("x.npy")?.ok_or_else(|| bad(path, "the .npz has no array 'x'"))?;
    let y = read("y.npy")?;
    array_dataset(path, x, y, o)
}

fn labels_of(path: &Path, y: NpyArray) -> Result<Vec<i64>> {
    Ok(match y.data {
        NpyData::U8(v) => v.into_iter().map(|x| x as i64).collect(),
        NpyData::I64(v) => v,
        NpyData::F32(_) => return Err(bad(path, "labels 'y' must be integers")),
    })
}

fn array_dataset(
    path: &Path,
    x: NpyArray,
    y: Option<NpyArray>,
    o: &DataOptions,
) -> Result<Dataset> {
    let s = &x.shape;
    let (n, c, h, w, nhwc) = match s.len() {
        3 => (s[0], 1, s[1], s[2], false),
        4 => {
            let nhwc = match o.layout {
                Layout::Nhwc => true,
                Layout::Nchw => false,
                Layout::Auto => matches!(s[3], 1 | 3 | 4) && !matches!(s[1], 1 | 3 | 4),
            };
            if nhwc {
                (s[0], s[3], s[1], s[2], true)
            } else {
                (s[0], s[1], s[2], s[3], false)
            }
        }
        _ => {
            return Err(bad(
                path,
                format!("'x' has shape {s:?}; expected [N,H,W], [N,H,W,C] or [N,C,H,W]"),
            ))
        }
    };
    let (vals, from_u8): (Vec<f32>, bool) = match x.data {
        NpyData::U8(v) => (v.into_iter().map(|b| b as f32).collect(), true),
        NpyData::F32(v) => (v, false),
        NpyData::I64(v) => (v.into_iter().map(|b| b as f32).collect(), false),
    };
    let keep = o.limit.unwrap_or(n).min(n);
    let mut xs = vec![0f32; keep * c * h * w];
    let scale = if from_u8 && o.scale { 1.0 / 255.0 } else { 1.0 };
    xs.par_chunks_mut(c * h * w)
        .enumerate()
        .for_each(|(i, dst)| {
            let src = &vals[i * c * h * w..(i + 1) * c * h * w];
            if nhwc {
                for yy in 0..h {
                    for xx in 0..w {
                        for ch in 0..c {
                            dst[ch * h * w + yy * w + xx] = src[(yy * w + xx) * c + ch] * scale;
                        }
                    }
                }
            } else {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = s * scale;
                }
            }
        });
    let y = match y {
        Some(y) => {
            let mut l = labels_of(path, y)?;
            if l.len() < n {
                return Err(bad(path, format!("{} labels for {n} samples", l.len())));
            }
            l.truncate(keep);
            Some(l)
        }
        None => None,
    };
    Ok(Dataset {
        n: keep,
        c,
        h,
        w,
        x: xs,
        y,
        classes: None,
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn idx(path: &Path, o: &DataOptions) -> Result<Dataset> {
    let b = read_maybe_gz(path)?;
    if b.len() < 16 || b[..4] != [0, 0, 8, 3] {
        return Err(bad(path, "not an IDX3 ubyte image file"));
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    let (n, h, w) = (be(4), be(8), be(12));
    let data = b
        .get(16..16 + n * h * w)
        .ok_or_else(|| bad(path, "truncated IDX data"))?;
    let x = NpyArray {
        shape: vec![n, h, w],
        data: NpyData::U8(data.to_vec()),
    };
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let lpath = path.with_file_name(name.replace("images-idx3", "labels-idx1"));
    let y = if lpath != path && lpath.exists() {
        let l = read_maybe_gz(&lpath)?;
        if l.len() < 8 || l[..4] != [0, 0, 8, 1] {
            return Err(bad(&lpath, "not an IDX1 ubyte label file"));
        }
        Some(NpyArray {
            shape: vec![l.len() - 8],
            data: NpyData::U8(l[8..].to_vec()),
        })
    } else {
        None
    };
    array_dataset(path, x, y, o)
}

/// (class name, encoded image) pairs → dataset (classes sorted, decoded in parallel).
fn images(
    path: &Path,
    mut items: Vec<(String, String, Vec<u8>)>,
    chw: (usize, usize, usize),
    o: &DataOptions,
) -> Result<Dataset> {
    if items.is_empty() {
        return Err(bad(
            path,
            "no .jpg/.jpeg/.png images found (expected <class>/<image> entries, or images)",
        ));
    }
    items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut classes: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    classes.dedup();
    if let Some(l) = o.limit {
        items.truncate(l);
    }
    let (c, h, w) = chw;
    let decoded: Vec<Result<Vec<f32>>> = items
        .par_iter()
        .map(|(_, name, bytes)| {
            let img = decode(bytes).map_err(|e| bad(path, format!("{name}: {e}")))?;
            let img = match o.resize {
                Some(s) => {
                    let (iw, ih) = (img.width(), img.height());
                    let k = s as f64 / iw.min(ih) as f64;
                    img.resize_exact(
                        (iw as f64 * k).round() as u32,
                        (ih as f64 * k).round() as u32,
                        image::imageops::FilterType::Triangle,
                    )
                }
                None => img,
            };
            let img = match o.center_crop {
                Some(cs) if img.width() >= cs && img.height() >= cs => {
                    img.crop_imm((img.width() - cs) / 2, (img.height() - cs) / 2, cs, cs)
                }
                _ => img,
            };
            // Centre crop (or resize when smaller) to the model's size.
            let img = if img.width() as usize >= w && img.height() as usize >= h {
                img.crop_imm(
                    (img.width() - w as u32) / 2,
                    (img.height() - h as u32) / 2,
                    w as u32,
                    h as u32,
                )
            } else {
                img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
            };
            let scale = if o.scale { 1.0 / 255.0 } else { 1.0 };
            let mut out = vec![0f32; c * h * w];
            match c {
                1 => {
                    let g = img.to_luma8();
                    for (i, p) in g.pixels().enumerate() {
                        out[i] = p[0] as f32 * scale;
                    }
                }
                3 => {
                    let rgb = img.to_rgb8();
                    for (i, p) in rgb.pixels().enumerate() {
                        for ch in 0..3 {
                            out[ch * h * w + i] = p[ch] as f32 * scale;
                        }
                    }
                }
                _ => {
                    return Err(bad(
                        path,
                        format!("models with {c} input channels cannot take images"),
                    ))
                }
            }
            Ok(out)
        })
        .collect();
    let mut x = Vec::with_capacity(items.len() * c * h * w);
    for d in decoded {
        x.extend(d?);
    }
    // Labelled only when every image sits in a class folder.
    let labelled = items.iter().all(|i| !i.0.is_empty());
    let y = labelled.then(|| {
        items
            .iter()
            .map(|(cls, _, _)| classes.binary_search(cls).unwrap() as i64)
            .collect()
    });
    Ok(Dataset {
        n: items.len(),
        c,
        h,
        w,
        x,
        y,
        classes: labelled.then_some(classes),
    })
}

/// Decodes an image. JPEGs go through libjpeg-turbo (mozjpeg), bit-identical to PIL/OpenCV.
fn decode(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    if bytes.starts_with(&[0xff, 0xd8]) {
        let r = std::panic::catch_unwind(|| -> std::io::Result<(usize, usize, Vec<u8>)> {
            let mut d = mozjpeg::Decompress::new_mem(bytes)?.rgb()?;
            let (w, h) = (d.width(), d.height());
            let px: Vec<u8> = d.read_scanlines::<u8>()?;
            d.finish()?;
            Ok((w, h, px))
        });
        return match r {
            Ok(Ok((w, h, px))) => image::RgbImage::from_raw(w as u32, h as u32, px)
                .map(image::DynamicImage::ImageRgb8)
                .ok_or_else(|| "truncated JPEG".to_string()),
            Ok(Err(e)) => Err(format!("JPEG: {e}")),
            Err(_) => Err("corrupt JPEG".into()),
        };
    }
    image::load_from_memory(bytes).map_err(|e| e.to_string())
}

fn is_image(name: &str) -> bool {
    let l = name.to_lowercase();
    l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
}

fn tar_folder(path: &Path, chw: (usize, usize, usize), o: &DataOptions) -> Result<Dataset> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ar = tar::Archive::new(f);
    let mut items = vec![];
    for e in ar
        .entries()
        .map_err(|e| bad(path, format!("not a tar archive: {e}")))?
    {
        let mut e = e.map_err(|e| bad(path, format!("corrupt tar: {e}")))?;
        let p = e
            .path()
            .map_err(|e| bad(path, e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !is_image(&p) {
            continue;
        }
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        // `<class>/<image>`; a flat archive of images is an unlabelled set.
        let class = if parts.len() < 2 {
            String::new()
        } else {
            parts[parts.len() - 2].to_string()
        };
        let mut b = Vec::new();
        e.read_to_end(&mut b)
            .map_err(|er| bad(path, format!("{p}: {er}")))?;
        items.push((class, p, b));
    }
    images(path, items, chw, o)
}

fn folder(path: &Path, chw: (usize, usize, usize), o: &DataOptions) -> Result<Dataset> {
    let mut items = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p.to_string_lossy()) {
                // Images directly in the given folder are unlabelled.
                let class = if d == path {
                    String::new()
                } else {
                    p.parent()
                        .and_then(|q| q.file_name())
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                items.push((class, p.to_string_lossy().into_owned(), b));
            }
        }
    }
    images(path, items, chw, o)
}

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
