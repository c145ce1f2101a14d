//! Arrays: `.npy` / `.npz` and MNIST IDX files.

use super::*;
use rayon::prelude::*;
use std::io::Read;
use std::path::Path;

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

pub(super) fn npz(path: &Path, o: &DataOptions) -> Result<Dataset> {
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

pub(super) fn array_dataset(
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

pub(super) fn idx(path: &Path, o: &DataOptions) -> Result<Dataset> {
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
