//! Image folders and `.tar` archives of them, decoded in parallel.

use super::*;
use rayon::prelude::*;
use std::io::Read;
use std::path::Path;

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

pub(super) fn tar_folder(
    path: &Path,
    chw: (usize, usize, usize),
    o: &DataOptions,
) -> Result<Dataset> {
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

pub(super) fn folder(path: &Path, chw: (usize, usize, usize), o: &DataOptions) -> Result<Dataset> {
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
