//! The convolution's three passes on host `f32` slices (NCHW input, OIHW weight, one group):
//! per image, im2col into a `K × L` matrix (K = C·kh·kw, L = OH·OW; skipped for a 1×1, stride-1,
//! unpadded convolution, whose input already is that matrix), then one matrix product with
//! faer. Images are split into one contiguous chunk per rayon thread; each chunk reuses one
//! im2col buffer, and the weight gradient is summed per chunk, then across chunks in order (so
//! a result depends on the thread count, never on how the work was scheduled).

use super::elementwise::relu_grad;
use super::{direct, direct_grad};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// The shape of one 2-D convolution (one group, NCHW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding at the top and at the left (bottom and right follow from `oh`, `ow`).
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Columns of the im2col matrix: one per output position.
    pub fn l(&self) -> usize {
        self.oh * self.ow
    }
    fn x_img(&self) -> usize {
        self.c * self.h * self.w
    }
    fn y_img(&self) -> usize {
        self.o * self.l()
    }
    /// The input itself is the im2col matrix.
    fn direct(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// The input columns `lo..hi` (of the output row) whose input column `ox·s + off` lies inside
/// `0..w`; `off` may be negative (padding).
fn valid(ow: usize, s: usize, off: isize, w: usize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    // ox·s + off ≤ w − 1  ⇔  ox ≤ (w − 1 − off) / s
    let top = w as isize - 1 - off;
    let hi = if top < 0 {
        0
    } else {
        (top as usize / s + 1).min(ow)
    };
    (lo.min(hi), hi)
}

/// For a stride-1 convolution whose output rows are as wide as the input's, one kernel tap
/// (ki, kj) maps output position p (flattened) to input position p + off: a contiguous copy,
/// except for the `|off_x|` columns at one side of each row, which wrap into the neighbouring
/// row and must be zero. Returns (off, first valid output row, end of valid output rows, off_x).
fn flat_shift(g: &Geom, ki: usize, kj: usize) -> Option<(isize, usize, usize, isize)> {
    if g.sh != 1 || g.sw != 1 || g.ow != g.w {
        return None;
    }
    let off_y = (ki * g.dh) as isize - g.pt as isize;
    let off_x = (kj * g.dw) as isize - g.pl as isize;
    let lo = (-off_y).clamp(0, g.oh as isize) as usize;
    let hi = (g.h as isize - off_y).clamp(lo as isize, g.oh as isize) as usize;
    Some((off_y * g.w as isize + off_x, lo, hi, off_x))
}

/// The output positions (flattened, `lo·w..hi·w`) whose source `p + off` lies in the plane.
fn flat_range(g: &Geom, off: isize, lo: usize, hi: usize) -> (usize, usize) {
    let hw = (g.h * g.w) as isize;
    let a = ((lo * g.w) as isize).max(-off);
    let b = ((hi * g.w) as isize).min(hw - off);
    (a.max(0) as usize, b.max(a.max(0)) as usize)
}

/// Zeroes the wrapped columns of the valid rows of one tap's row of the im2col matrix.
fn zero_wrapped(g: &Geom, d: &mut [f32], lo: usize, hi: usize, off_x: isize) {
    let w = g.w;
    let n = (off_x.unsigned_abs()).min(w);
    if n == 0 {
        return;
    }
    for oy in lo..hi {
        let row = &mut d[oy * w..(oy + 1) * w];
        if off_x > 0 {
            row[w - n..].fill(0.0);
        } else {
            row[..n].fill(0.0);
        }
    }
}

/// Fills `cols` (K × L, row-major) from one image `x` (C × H × W).
fn im2col(g: &Geom, x: &[f32], cols: &mut [f32]) {
    let l = g.l();
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * l;
                let dst = &mut cols[row..row + l];
                if let Some((off, lo, hi, off_x)) = flat_shift(g, ki, kj) {
                    let (a, b) = flat_range(g, off, lo, hi);
                    dst[..a].fill(0.0);
                    dst[b..].fill(0.0);
                    let s = (a as isize + off) as usize;
                    dst[a..b].copy_from_slice(&plane[s..s + (b - a)]);
                    zero_wrapped(g, dst, lo, hi, off_x);
                    continue;
                }
                let offx = (kj * g.dw) as isize - g.pl as isize;
                let (lo, hi) = valid(g.ow, g.sw, offx, g.w);
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                    let d = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    let start = (lo * g.sw) as isize + offx;
                    if g.sw == 1 {
                        let s = start as usize;
                        d[lo..hi].copy_from_slice(&src[s..s + (hi - lo)]);
                    } else {
                        for (i, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = src[(start as usize) + i * g.sw];
                        }
                    }
                }
            }
        }
    }
}

/// Adds `cols` (K × L) back into one image's gradient `dx` (C × H × W): im2col's adjoint.
fn col2im_add(g: &Geom, cols: &mut [f32], dx: &mut [f32]) {
    let l = g.l();
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * l;
                if let Some((off, lo, hi, off_x)) = flat_shift(g, ki, kj) {
                    let src = &mut cols[row..row + l];
                    zero_wrapped(g, src, lo, hi, off_x);
                    let (a, b) = flat_range(g, off, lo, hi);
                    let s = (a as isize + off) as usize;
                    for (d, v) in plane[s..s + (b - a)].iter_mut().zip(&src[a..b]) {
                        *d += *v;
                    }
                    continue;
                }
                let src = &cols[row..row + l];
                let offx = (kj * g.dw) as isize - g.pl as isize;
                let (lo, hi) = valid(g.ow, g.sw, offx, g.w);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let s = &src[oy * g.ow + lo..oy * g.ow + hi];
                    let start = ((lo * g.sw) as isize + offx) as usize;
                    let d = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.sw == 1 {
                        for (a, b) in d[start..start + (hi - lo)].iter_mut().zip(s) {
                            *a += *b;
                        }
                    } else {
                        for (i, b) in s.iter().enumerate() {
                            d[start + i * g.sw] += *b;
                        }
                    }
                }
            }
        }
    }
}

/// A sum in 16 interleaved lanes (vectorised; the order is fixed, so the result is too).
pub(super) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = v.chunks_exact(16);
    for c in &mut it {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

fn mat(s: &[f32], rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(s, rows, cols)
}

fn mat_mut(s: &mut [f32], rows: usize, cols: usize) -> MatMut<'_, f32> {
    MatMut::from_row_major_slice_mut(s, rows, cols)
}

/// A task's im2col buffer (none when the input is its own im2col matrix).
fn scratch(g: &Geom) -> Vec<f32> {
    if g.direct() {
        Vec::new()
    } else {
        vec![0f32; g.k() * g.l()]
    }
}

/// One image's im2col matrix: the image itself, or `cols` filled from it.
fn columns<'a>(g: &Geom, xi: &'a [f32], cols: &'a mut [f32]) -> &'a [f32] {
    if g.direct() {
        xi
    } else {
        im2col(g, xi, cols);
        cols
    }
}

/// How many images each rayon task takes: enough tasks for every thread, few enough that the
/// per-task buffers stay small.
pub(super) fn chunk(n: usize) -> usize {
    let t = rayon::current_num_threads().max(1);
    n.div_ceil(t).max(1)
}

/// The forward pass: `y` (N × O × OH × OW) = conv(x, w) + bias, through [`relu`] when `relu`.
pub fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    if direct::takes(g) {
        return direct::forward(g, x, w, bias, relu);
    }
    im2col_forward(g, x, w, bias, relu)
}

/// ONNX's Relu as burn's `flex` computes it (NaN passes through).
#[inline]
pub fn relu(v: f32) -> f32 {
    if v.is_nan() || v > 0.0 {
        v
    } else {
        0.0
    }
}

/// [`forward`] through im2col and faer, whatever the geometry.
pub fn im2col_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (k, l) = (g.k(), g.l());
    let mut y = vec![0f32; g.n * g.y_img()];
    let per = chunk(g.n);
    y.par_chunks_mut(per * g.y_img())
        .enumerate()
        .for_each(|(ci, ys)| {
            super::simd::avx512(|| {
                let mut cols = scratch(g);
                for (j, yi) in ys.chunks_mut(g.y_img()).enumerate() {
                    let i = ci * per + j;
                    let c = columns(g, &x[i * g.x_img()..(i + 1) * g.x_img()], &mut cols);
                    matmul(
                        mat_mut(yi, g.o, l),
                        Accum::Replace,
                        mat(w, g.o, k),
                        mat(c, k, l),
                        1.0f32,
                        Par::Seq,
                    );
                    if let Some(b) = bias {
                        for (row, &bv) in yi.chunks_mut(l).zip(b) {
                            row.iter_mut().for_each(|v| *v += bv);
                        }
                    }
                    if relu {
                        yi.iter_mut().for_each(|v| *v = self::relu(*v));
                    }
                }
            })
        });
    y
}

/// The gradients a backward pass needs, in one pass over the images (each image's output
/// gradient and im2col buffer stay in cache between the two products): the input gradient dx
/// (N × C × H × W) when `x_grad`, and with `x` the weight gradient (O × C × kh × kw) and the
/// bias gradient (O).
pub struct Grads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<(Vec<f32>, Vec<f32>)>,
}

pub fn backward(g: &Geom, x: Option<&[f32]>, w: &[f32], dy: &[f32], x_grad: bool) -> Grads {
    backward_masked(g, x, w, dy, None, x_grad)
}

/// [`backward`] for the output gradient `dy` masked by ReLU's gradient when `keep` (the
/// ReLU's output) is given: it passes where `keep` is positive or NaN.
pub fn backward_masked(
    g: &Geom,
    x: Option<&[f32]>,
    w: &[f32],
    dy: &[f32],
    keep: Option<&[f32]>,
    x_grad: bool,
) -> Grads {
    // The direct kernels where they take the pass (masking as they read `dy`); one im2col
    // pass for whatever is left, on the masked gradient.
    let Grads { dx, dw } = direct_grad::backward(g, x, x_grad.then_some(w), dy, keep);
    let x = x.filter(|_| dw.is_none());
    let x_grad = x_grad && dx.is_none();
    let rest = if x.is_some() || x_grad {
        let masked = keep.map(|k| relu_grad(k, dy));
        im2col_backward(g, x, w, masked.as_deref().unwrap_or(dy), x_grad)
    } else {
        Grads { dx: None, dw: None }
    };
    Grads {
        dx: dx.or(rest.dx),
        dw: dw.or(rest.dw),
    }
}

/// `tasks` slices for as many rayon tasks: `v`'s consecutive chunks of `len` elements, or
/// empty ones (for every task, or past `v`'s end).
pub(super) fn per_task<T>(v: Option<&mut [T]>, len: usize, tasks: usize) -> Vec<&mut [T]> {
    let mut s: Vec<&mut [T]> = v.map(|v| v.chunks_mut(len).collect()).unwrap_or_default();
    s.resize_with(tasks, Default::default);
    s
}

/// [`backward`] through im2col and faer, whatever the geometry.
pub fn im2col_backward(g: &Geom, x: Option<&[f32]>, w: &[f32], dy: &[f32], x_grad: bool) -> Grads {
    if x.is_none() && !x_grad {
        return Grads { dx: None, dw: None };
    }
    let (k, l) = (g.k(), g.l());
    let per = chunk(g.n);
    let tasks = g.n.div_ceil(per);
    let mut dx = if x_grad {
        vec![0f32; g.n * g.x_img()]
    } else {
        Vec::new()
    };
    let slices = per_task(x_grad.then_some(&mut dx[..]), per * g.x_img(), tasks);
    let parts: Vec<Option<(Vec<f32>, Vec<f32>)>> = slices
        .into_par_iter()
        .enumerate()
        .map(|(ci, dxs)| {
            super::simd::avx512(|| {
                let mut acc = x.map(|_| (vec![0f32; g.o * k], vec![0f32; g.o]));
                let mut cols = scratch(g);
                for i in ci * per..((ci + 1) * per).min(g.n) {
                    let dyi = &dy[i * g.y_img()..(i + 1) * g.y_img()];
                    if let (Some(x), Some((dw, db))) = (x, acc.as_mut()) {
                        let c = columns(g, &x[i * g.x_img()..(i + 1) * g.x_img()], &mut cols);
                        matmul(
                            mat_mut(dw, g.o, k),
                            Accum::Add,
                            mat(dyi, g.o, l),
                            mat(c, k, l).transpose(),
                            1.0f32,
                            Par::Seq,
                        );
                        for (b, row) in db.iter_mut().zip(dyi.chunks(l)) {
                            *b += sum(row);
                        }
                    }
                    if x_grad {
                        let j = i - ci * per;
                        let dxi = &mut dxs[j * g.x_img()..(j + 1) * g.x_img()];
                        let wt = mat(w, g.o, k).transpose();
                        if g.direct() {
                            matmul(
                                mat_mut(dxi, k, l),
                                Accum::Replace,
                                wt,
                                mat(dyi, g.o, l),
                                1.0f32,
                                Par::Seq,
                            );
                        } else {
                            matmul(
                                mat_mut(&mut cols, k, l),
                                Accum::Replace,
                                wt,
                                mat(dyi, g.o, l),
                                1.0f32,
                                Par::Seq,
                            );
                            col2im_add(g, &mut cols, dxi);
                        }
                    }
                }
                acc
            })
        })
        .collect();
    let dw = x.map(|_| {
        let mut it = parts.into_iter().flatten();
        let (mut dw, mut db) = it
            .next()
            .unwrap_or_else(|| (vec![0.0; g.o * k], vec![0.0; g.o]));
        for (w2, b2) in it {
            dw.iter_mut().zip(&w2).for_each(|(a, b)| *a += *b);
            db.iter_mut().zip(&b2).for_each(|(a, b)| *a += *b);
        }
        (dw, db)
    });
    Grads {
        dx: x_grad.then_some(dx),
        dw,
    }
}

/// The input gradient alone.
pub fn backward_x(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    backward(g, None, w, dy, true).dx.unwrap_or_default()
}

/// The weight and bias gradients alone.
pub fn backward_w(g: &Geom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    backward(g, Some(x), w, dy, false).dw.unwrap_or_default()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn naive(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; g.n * g.o * g.l()];
        for n in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0f32;
                        for c in 0..g.c {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                                    let ix = (ox * g.sw + kj * g.dw) as isize - g.pl as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    s += x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                                        * w[((o * g.c + c) * g.kh + ki) * g.kw + kj];
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn geoms() -> Vec<Geom> {
        let mk = |c, h, w, o, k: usize, s: usize, d: usize, p: usize, pe: usize| {
            let oh = (h + p + pe - d * (k - 1) - 1) / s + 1;
            let ow = (w + p + pe - d * (k - 1) - 1) / s + 1;
            Geom {
                n: 3,
                c,
                h,
                w,
                o,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                dh: d,
                dw: d,
                pt: p,
                pl: p,
                oh,
                ow,
            }
        };
        vec![
            mk(3, 7, 6, 4, 3, 1, 1, 1, 1),
            mk(2, 8, 9, 5, 3, 2, 1, 1, 1),
            mk(4, 5, 5, 3, 1, 1, 1, 0, 0),
            mk(4, 6, 6, 3, 1, 2, 1, 0, 0),
            mk(2, 9, 8, 2, 3, 1, 2, 2, 2),
            mk(2, 7, 7, 3, 3, 2, 1, 0, 1),
            mk(1, 3, 3, 2, 5, 1, 1, 1, 1),
            mk(2, 6, 5, 3, 5, 1, 1, 2, 2),
            mk(2, 5, 6, 2, 3, 1, 1, 2, 0),
            mk(3, 4, 4, 2, 3, 1, 1, 0, 2),
        ]
    }

    /// Deterministic test values in [−1, 1).
    pub(in crate::net::fastconv) fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geoms() {
            let x = data(g.n * g.x_img(), 1);
            let w = data(g.o * g.k(), 2);
            let want = naive(&g, &x, &w);
            let got = forward(&g, &x, &w, None, false);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The gradients are the adjoints of the forward pass: ⟨dy, conv(x, w)⟩ = ⟨dx(dy), x⟩ =
    /// ⟨dw(dy), w⟩ for every x, w, dy (the convolution is bilinear).
    #[test]
    fn gradients_are_the_adjoints() {
        for g in geoms() {
            let x = data(g.n * g.x_img(), 3);
            let w = data(g.o * g.k(), 4);
            let dy = data(g.n * g.y_img(), 5);
            let y = naive(&g, &x, &w);
            let lhs: f64 = y
                .iter()
                .zip(&dy)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let dx = backward_x(&g, &w, &dy);
            let (dw, db) = backward_w(&g, &x, &w, &dy);
            let both = backward(&g, Some(&x), &w, &dy, true);
            assert_eq!(both.dx.as_ref(), Some(&dx), "{g:?}: fused dx");
            assert_eq!(both.dw.as_ref().map(|p| &p.0), Some(&dw), "{g:?}: fused dw");
            let via_x: f64 = dx
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let via_w: f64 = dw
                .iter()
                .zip(&w)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let tol = 1e-3 * lhs.abs().max(1.0);
            assert!((lhs - via_x).abs() < tol, "{g:?}: dx {lhs} vs {via_x}");
            assert!((lhs - via_w).abs() < tol, "{g:?}: dw {lhs} vs {via_w}");
            for o in 0..g.o {
                let s: f32 = (0..g.n)
                    .flat_map(|n| dy[(n * g.o + o) * g.l()..(n * g.o + o + 1) * g.l()].iter())
                    .sum();
                assert!((db[o] - s).abs() < 1e-3, "{g:?}: db");
            }
        }
    }
}
