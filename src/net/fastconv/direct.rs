//! Direct (im2col-free) kernels for stride-1 3×3 convolutions on x86-64 (AVX-512, or AVX2 + FMA
//! for the forward pass and input gradient), the ResNets' commonest layer (issue #20): on 16 channels at 32×32 the im2col path spent a third
//! of the forward pass and half of each backward pass copying (im2col, faer's packing of it,
//! col2im).
//!
//! **Wide rows.** One image's input is copied once into zero-padded planes of `hp × wp` (the
//! output's height and width plus the kernel's). The output is computed at every "wide"
//! position q = oy·wp + ox with ox < wp (the `wp − ow` extra columns are discarded), so each
//! kernel tap (ki, kj) reads the padded plane at q + ki·wp + kj: a contiguous vector load, with
//! no index arithmetic per pixel. The input gradient of a stride-1 convolution is the forward
//! pass of the output gradient padded by (k − 1 − pad) with the weight transposed and flipped,
//! so it runs on the same kernel. The weight gradient reduces over the wide positions of the
//! output gradient (its extra columns zero) against the shifted input planes.
//!
//! Register blocking (AVX-512): the forward kernel keeps a tile of 8 output channels × 3
//! vectors of 16 positions (or 4 × 4) in accumulators and reads each input vector once per
//! tile; the weight-gradient kernel runs its vectors over 16 output channels and keeps 3 input
//! channels × 9 taps (27 accumulators), broadcasting each input value once against the 9 taps'
//! output-gradient vectors. AVX2: tiles of 4 output channels × 16 positions. Every sum is taken in a fixed order (per
//! image chunk, then across chunks in order), so a result depends on the thread count only.

use super::kernels::{chunk, Geom};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use rayon::prelude::*;

/// Lanes of one vector.
const V: usize = 16;

/// The instruction set the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// 16-lane vectors, 32 registers: every kernel.
    Avx512,
    /// 8-lane vectors, 16 registers (AVX2 + FMA): the forward pass and the input gradient;
    /// the weight gradient stays on im2col (its 27 accumulators do not fit).
    Avx2,
}

/// The kernels' instruction set on this CPU (read once per process): AVX-512F, else AVX2 +
/// FMA, else none (im2col everywhere). `ONNX_PRUNE_CONV_KERNEL=im2col` turns them off and
/// `=avx2` keeps to AVX2 (for side-by-side benchmarks and tests).
pub fn isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let asked = std::env::var("ONNX_PRUNE_CONV_KERNEL").unwrap_or_default();
        match asked.as_str() {
            "im2col" => None,
            "avx2" => cpu().filter(|_| avx2()).map(|_| Isa::Avx2),
            _ => cpu(),
        }
    })
}

/// Whether this CPU has `isa`.
pub fn cpu_has(isa: Isa) -> bool {
    match isa {
        Isa::Avx2 => avx2(),
        Isa::Avx512 => cpu() == Some(Isa::Avx512),
    }
}

/// Whether this CPU runs the kernels (see [`isa`]).
pub fn available() -> bool {
    isa().is_some()
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn cpu() -> Option<Isa> {
    if std::arch::is_x86_feature_detected!("avx512f") {
        Some(Isa::Avx512)
    } else if avx2() {
        Some(Isa::Avx2)
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu() -> Option<Isa> {
    None
}

/// Whether the direct kernels take `g` (shape only; [`available`] says whether the CPU can):
/// 3×3, stride 1, no dilation, each padding at most 2 (so the input gradient is a padded
/// convolution too), output rows of at least 8 positions (narrower rows waste too much of
/// each vector on the discarded columns).
pub fn fits(g: &Geom) -> bool {
    let (pb, pr) = bottom_right(g);
    g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && g.dh == 1
        && g.dw == 1
        && g.pt <= 2
        && g.pl <= 2
        && (0..=2).contains(&pb)
        && (0..=2).contains(&pr)
        && g.ow >= 8
}

/// Whether this CPU's direct kernels take `g`: it [`fits`], and on AVX2 its input has at most
/// 24 channels. On AVX2 the 8-lane kernel measured faster than im2col up to 24 input channels
/// and slower from 32 (an AVX-512 machine running both, where im2col's products still used
/// AVX-512; docs/benchmarks.md, "Training speed").
pub fn takes(g: &Geom) -> bool {
    fits(g)
        && match isa() {
            Some(Isa::Avx512) => true,
            Some(Isa::Avx2) => g.c <= 24,
            None => false,
        }
}

/// Whether [`backward_w`] pays for `g` (its vectors run over output channels, padded to a
/// multiple of 16: at most a quarter of each vector may be padding, else im2col is as fast).
pub fn wgrad_fits(g: &Geom) -> bool {
    fits(g) && isa() == Some(Isa::Avx512) && g.o * 4 >= g.o.div_ceil(V) * V * 3
}

/// The bottom and right padding a stride-1 geometry implies.
fn bottom_right(g: &Geom) -> (isize, isize) {
    let pb = (g.oh + g.kh - 1) as isize - g.h as isize - g.pt as isize;
    let pr = (g.ow + g.kw - 1) as isize - g.w as isize - g.pl as isize;
    (pb, pr)
}

/// The padded-plane layout of one image.
#[derive(Clone, Copy, Debug)]
struct Wide {
    /// Padded width and height.
    wp: usize,
    hp: usize,
    /// Wide output positions, rounded up to whole vectors.
    lw: usize,
    /// Floats from one padded plane to the next (every tap's reads of every vector fit).
    plane: usize,
}

fn wide(g: &Geom) -> Wide {
    let wp = g.ow + g.kw - 1;
    let hp = g.oh + g.kh - 1;
    let lw = (g.oh * wp).div_ceil(V) * V;
    let plane = (lw + (g.kh - 1) * wp + g.kw - 1).div_ceil(V) * V;
    Wide { wp, hp, lw, plane }
}

impl Wide {
    /// Each tap's offset into a padded plane.
    fn taps(&self, g: &Geom) -> Vec<usize> {
        (0..g.kh)
            .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
            .map(|(i, j)| i * self.wp + j)
            .collect()
    }
}

/// Copies one image (`c` planes of `h × w`) into the interior of zero-padded planes at
/// (`top`, `left`); the borders of `buf` are never written, so they stay zero between images.
fn pad_into(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (top, left): (usize, usize),
    wd: &Wide,
    buf: &mut [f32],
) {
    for ci in 0..c {
        for y in 0..h.min(wd.hp - top) {
            let src = &x[(ci * h + y) * w..(ci * h + y) * w + w.min(wd.wp - left)];
            let d = ci * wd.plane + (y + top) * wd.wp + left;
            buf[d..d + src.len()].copy_from_slice(src);
        }
    }
}

/// Output channels per tile of the forward kernel, largest first.
fn tile_widths(isa: Isa) -> &'static [usize] {
    match isa {
        Isa::Avx2 => &[4],
        Isa::Avx512 => &[8, 4],
    }
}

/// The weights `w` (O × C × taps) packed per output tile: `[tile][c][tap][lane]`, zero beyond
/// `o`; returns the packed weights and each tile's (first channel, width).
fn pack(isa: Isa, w: &[f32], o: usize, c: usize, taps: usize) -> (Vec<f32>, Vec<(usize, usize)>) {
    let mut tiles = Vec::new();
    let mut at = 0;
    while at < o {
        let left = o - at;
        let ts = tile_widths(isa);
        let t = ts
            .iter()
            .copied()
            .find(|&t| t <= left)
            .unwrap_or(ts[ts.len() - 1]);
        tiles.push((at, t));
        at += t;
    }
    let mut out = Vec::with_capacity(tiles.iter().map(|t| t.1).sum::<usize>() * c * taps);
    for &(o0, t) in &tiles {
        for ci in 0..c {
            for k in 0..taps {
                for j in 0..t {
                    let oi = o0 + j;
                    out.push(if oi < o {
                        w[(oi * c + ci) * taps + k]
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    (out, tiles)
}

/// The forward pass, `y = conv(x, w) + bias`, for a geometry that [`fits`], on a CPU where the
/// kernels are [`available`].
pub fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let isa = isa().expect("direct kernels asked for on a CPU without them");
    forward_on(isa, g, x, w, bias, relu)
}

/// [`forward`] on the given instruction set (which the CPU must have).
pub fn forward_on(
    isa: Isa,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    assert!(
        fits(g) && cpu_has(isa),
        "direct kernels asked for {g:?} on {isa:?}"
    );
    let wd = wide(g);
    let taps = wd.taps(g);
    let (wp, tiles) = pack(isa, w, g.o, g.c, taps.len());
    let (xi, yi) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    // Not zeroed first: every element is written below (each image, each channel below `o`
    // as the tiles cover `0..o`, each row and column).
    let mut y: Vec<f32> = Vec::with_capacity(g.n * yi);
    let per = chunk(g.n);
    let spare = &mut y.spare_capacity_mut()[..g.n * yi];
    spare
        .par_chunks_mut(per * yi)
        .enumerate()
        .for_each(|(ci, ys)| {
            let mut buf = vec![0f32; g.c * wd.plane];
            let mut out = vec![0f32; wd.lw * tiles.iter().map(|t| t.1).max().unwrap_or(0)];
            for (j, ydst) in ys.chunks_mut(yi).enumerate() {
                let i = ci * per + j;
                pad_into(
                    &x[i * xi..(i + 1) * xi],
                    (g.c, g.h, g.w),
                    (g.pt, g.pl),
                    &wd,
                    &mut buf,
                );
                let mut wat = 0;
                for &(o0, t) in &tiles {
                    let wt = &wp[wat..wat + t * g.c * taps.len()];
                    wat += wt.len();
                    let k = Fwd {
                        x: &buf,
                        plane: wd.plane,
                        lw: wd.lw,
                        c: g.c,
                        taps: &taps,
                        w: wt,
                    };
                    forward_tile(isa, &k, t, &mut out);
                    for jj in 0..t.min(g.o - o0) {
                        let b = bias.map_or(0.0, |b| b[o0 + jj]);
                        let row = &out[jj * wd.lw..];
                        let dst = &mut ydst[(o0 + jj) * g.oh * g.ow..(o0 + jj + 1) * g.oh * g.ow];
                        for (oy, d) in dst.chunks_mut(g.ow).enumerate() {
                            let s = &row[oy * wd.wp..oy * wd.wp + g.ow];
                            if relu {
                                d.iter_mut().zip(s).for_each(|(d, s)| {
                                    d.write(super::kernels::relu(s + b));
                                });
                            } else {
                                d.iter_mut().zip(s).for_each(|(d, s)| {
                                    d.write(s + b);
                                });
                            }
                        }
                    }
                }
            }
        });
    // SAFETY: the loop above wrote all `n · yi` elements (see the comment at `y`).
    unsafe { y.set_len(g.n * yi) };
    y
}

/// The geometry whose forward pass is `g`'s input gradient.
fn adjoint_geom(g: &Geom) -> Geom {
    Geom {
        n: g.n,
        c: g.o,
        h: g.oh,
        w: g.ow,
        o: g.c,
        kh: g.kh,
        kw: g.kw,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pt: g.kh - 1 - g.pt,
        pl: g.kw - 1 - g.pl,
        oh: g.h,
        ow: g.w,
    }
}

/// [`adjoint_geom`] and the weight it takes (transposed and flipped:
/// `w'[c][o][kh−1−i][kw−1−j] = w[o][c][i][j]`).
fn adjoint(g: &Geom, w: &[f32]) -> (Geom, Vec<f32>) {
    let a = adjoint_geom(g);
    let taps = g.kh * g.kw;
    let mut wt = vec![0f32; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for k in 0..taps {
                wt[(c * g.o + o) * taps + (taps - 1 - k)] = w[(o * g.c + c) * taps + k];
            }
        }
    }
    (a, wt)
}

/// The input gradient (N × C × H × W) for the output gradient `dy`, when `g` [`fits`] and the
/// adjoint geometry does (its rows are `g`'s input rows).
pub fn backward_x(g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    // `fits(g)` first: the adjoint geometry assumes stride 1 and pads below the kernel size.
    if !fits(g) || !takes(&adjoint_geom(g)) {
        return None;
    }
    backward_x_on(isa()?, g, w, dy)
}

/// [`backward_x`] on the given instruction set (which the CPU must have).
pub fn backward_x_on(isa: Isa, g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let (a, wt) = adjoint(g, w);
    fits(&a).then(|| forward_on(isa, &a, dy, &wt, None, false))
}

/// Input channels per tile of the weight-gradient kernel, largest first.
const WTILES: [usize; 3] = [3, 2, 1];

/// A zeroed buffer of `len` floats whose element `at` lies on a 64-byte boundary: the buffer
/// and the offset to add to `at` (vector loads from it never straddle a cache line).
fn aligned(len: usize) -> (Vec<f32>, usize) {
    let v = vec![0f32; len + V];
    let skew = (v.as_ptr() as usize / 4) % V;
    let off = (V - skew) % V;
    (v, off)
}

/// The weight gradient (O × C × 3 × 3) and the bias gradient (O), for a geometry that
/// [`fits`]. With p = q + off(tap), `dw[o][c][tap] = Σ_p x[c][p] · dy[o][p − off(tap)]`:
/// vectorised over output channels (16 per vector, `o` padded to `op`), the output gradient
/// transposed per image to `[wide position][op]` (aligned, with `OFF` zero rows in front), each
/// input value broadcast once against the 9 taps' output-gradient vectors; accumulated per
/// chunk as `[c][tap][op]` and transposed at the end.
pub fn backward_w(g: &Geom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        fits(g) && isa() == Some(Isa::Avx512),
        "direct weight gradient asked for {g:?}"
    );
    let wd = wide(g);
    let taps = wd.taps(g);
    let nt = taps.len();
    let front = taps[nt - 1];
    let op = g.o.div_ceil(V) * V;
    let (xi, yi, l) = (g.c * g.h * g.w, g.o * g.oh * g.ow, g.oh * g.ow);
    // The input positions that hold data (rows of the padded plane inside the image).
    let (p0, p1) = (g.pt * wd.wp, (g.pt + g.h) * wd.wp);
    let per = chunk(g.n);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|ci| {
            let (mut dwt, mut db) = (vec![0f32; g.c * nt * op], vec![0f32; g.o]);
            let mut buf = vec![0f32; g.c * wd.plane];
            // Row `front + q` holds the output gradient at wide position q; the rows in front,
            // the extra columns, the tail and the padded channels stay zero.
            let rows = front + wd.plane;
            let (mut dyt, at) = aligned(rows * op);
            for i in ci * per..((ci + 1) * per).min(g.n) {
                pad_into(
                    &x[i * xi..(i + 1) * xi],
                    (g.c, g.h, g.w),
                    (g.pt, g.pl),
                    &wd,
                    &mut buf,
                );
                let dyi = &dy[i * yi..(i + 1) * yi];
                // Position-major: each destination row written whole (its `o` lanes are
                // contiguous), the `o` source planes read in step.
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let row = &mut dyt[at + (front + oy * wd.wp + ox) * op..][..g.o];
                        let src = oy * g.ow + ox;
                        for (o, d) in row.iter_mut().enumerate() {
                            *d = dyi[o * l + src];
                        }
                    }
                }
                for (o, b) in db.iter_mut().enumerate() {
                    *b += super::kernels::sum(&dyi[o * l..(o + 1) * l]);
                }
                for ob in (0..op).step_by(V) {
                    let mut c0 = 0;
                    while c0 < g.c {
                        let t = WTILES.iter().copied().find(|&t| t <= g.c - c0).unwrap_or(1);
                        let k = Wg {
                            dyt: &dyt[at + ob..],
                            op,
                            ob,
                            front,
                            x: &buf,
                            plane: wd.plane,
                            c0,
                            span: (p0, p1),
                            taps: &taps,
                        };
                        wgrad_tile(&k, t, &mut dwt);
                        c0 += t;
                    }
                }
            }
            (dwt, db)
        })
        .collect();
    let mut it = parts.into_iter();
    let (mut dwt, mut db) = it
        .next()
        .unwrap_or_else(|| (vec![0.0; g.c * nt * op], vec![0.0; g.o]));
    for (w2, b2) in it {
        dwt.iter_mut().zip(&w2).for_each(|(a, b)| *a += *b);
        db.iter_mut().zip(&b2).for_each(|(a, b)| *a += *b);
    }
    let mut dw = vec![0f32; g.o * g.c * nt];
    for c in 0..g.c {
        for k in 0..nt {
            for o in 0..g.o {
                dw[(o * g.c + c) * nt + k] = dwt[(c * nt + k) * op + o];
            }
        }
    }
    (dw, db)
}

/// One output tile's inputs for the forward kernel: the padded planes `x` (`plane` apart, `c`
/// of them), the taps' offsets, the tile's packed weights `w` (`[c][tap][t]`); the tile writes
/// `out[j·lw + q]` for its `t` channels at every wide position q < `lw` (a multiple of 16).
pub(super) struct Fwd<'a> {
    pub x: &'a [f32],
    pub plane: usize,
    pub lw: usize,
    pub c: usize,
    pub taps: &'a [usize],
    pub w: &'a [f32],
}

/// One output tile of the forward kernel on `isa`.
fn forward_tile(isa: Isa, k: &Fwd, t: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `isa` came from `isa()` or a `cpu_has` check, so the CPU runs its instructions;
    // `x` covers every tap's reads of every vector (`Wide::plane`), `out` `t · lw` writes.
    unsafe {
        match isa {
            Isa::Avx2 => avx2::forward_tile(k, t, out),
            Isa::Avx512 => avx512::forward_tile(k, t, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, k, t, out);
        unreachable!("the direct kernels are x86-64 only")
    }
}

/// One tile of the weight-gradient kernel: output channels `ob..ob + 16` (`dyt` starts at
/// `ob`), input channels `c0..c0 + t` (AVX-512 only).
pub(super) struct Wg<'a> {
    pub dyt: &'a [f32],
    pub op: usize,
    pub ob: usize,
    pub front: usize,
    pub x: &'a [f32],
    pub plane: usize,
    pub c0: usize,
    pub span: (usize, usize),
    pub taps: &'a [usize],
}

fn wgrad_tile(k: &Wg, t: usize, dwt: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only reached through `backward_w`, which asserts AVX-512; `dyt` holds rows up to
    // `front + span.1`, `x` the planes `c0..c0 + t`, `dwt` `[c][tap][op]`.
    unsafe {
        k.tile(t, dwt)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, t, dwt);
        unreachable!("the direct kernels are x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels;
    use super::super::kernels::tests::data;
    use super::*;

    /// (input channels, height, width, output channels, pads top/left/bottom/right)
    fn geoms() -> Vec<Geom> {
        let mk = |c, h, w, o, p: [usize; 4]| Geom {
            n: 3,
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            pt: p[0],
            pl: p[1],
            oh: h + p[0] + p[2] - 2,
            ow: w + p[1] + p[3] - 2,
        };
        vec![
            mk(3, 9, 10, 5, [1, 1, 1, 1]),
            mk(16, 12, 12, 16, [1, 1, 1, 1]),
            mk(7, 8, 11, 13, [0, 0, 0, 0]),
            mk(2, 10, 9, 21, [2, 2, 2, 2]),
            mk(5, 9, 13, 24, [2, 0, 1, 2]),
            mk(1, 11, 8, 40, [0, 2, 2, 1]),
        ]
    }

    fn close(a: &[f32], b: &[f32], what: &str, g: &Geom) {
        assert_eq!(a.len(), b.len(), "{what} {g:?}");
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "{what} {g:?} at {i}: {u} vs {v}"
            );
        }
    }

    /// Every pass equals the im2col path (itself checked against the definition) on odd
    /// sizes, asymmetric padding and channel counts off every tile size.
    #[test]
    fn the_direct_kernels_equal_im2col() {
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|&i| cpu_has(i))
            .collect();
        if isas.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512F nor AVX2 + FMA");
            return;
        }
        for isa in isas {
            for g in geoms() {
                assert!(fits(&g), "{g:?}");
                let x = data(g.n * g.c * g.h * g.w, 1);
                let w = data(g.o * g.k(), 2);
                let b = data(g.o, 3);
                let dy = data(g.n * g.o * g.l(), 4);
                let want = kernels::im2col_forward(&g, &x, &w, Some(&b), false);
                let got = forward_on(isa, &g, &x, &w, Some(&b), false);
                close(&got, &want, &format!("{isa:?} forward"), &g);
                let relu = kernels::im2col_forward(&g, &x, &w, Some(&b), true);
                let got = forward_on(isa, &g, &x, &w, Some(&b), true);
                close(&got, &relu, &format!("{isa:?} forward + ReLU"), &g);
                for (r, v) in relu.iter().zip(&want) {
                    assert_eq!(*r, v.max(0.0), "{g:?}: ReLU of the forward pass");
                }
                let want = kernels::im2col_backward(&g, Some(&x), &w, &dy, true);
                let dx = backward_x_on(isa, &g, &w, &dy).expect("the adjoint fits");
                close(
                    &dx,
                    want.dx.as_ref().unwrap(),
                    &format!("{isa:?} input gradient"),
                    &g,
                );
                // The weight gradient runs on the process's ISA, and only on AVX-512.
                if isa == Isa::Avx512 && super::isa() == Some(Isa::Avx512) {
                    let (dw, db) = backward_w(&g, &x, &dy);
                    let (wdw, wdb) = want.dw.as_ref().unwrap();
                    close(&dw, wdw, "weight gradient", &g);
                    close(&db, wdb, "bias gradient", &g);
                }
            }
        }
    }

    /// The kernels' results do not depend on the buffers' history: the padded planes' borders
    /// stay zero from one image to the next (each image alone gives the batch's rows).
    #[test]
    fn images_do_not_leak_into_each_other() {
        if !available() {
            eprintln!("skipped: no direct kernels on this CPU (or ONNX_PRUNE_CONV_KERNEL=im2col)");
            return;
        }
        let g = geoms()[3];
        let x = data(g.n * g.c * g.h * g.w, 5);
        let w = data(g.o * g.k(), 6);
        let all = forward(&g, &x, &w, None, false);
        let one = Geom { n: 1, ..g };
        let (xi, yi) = (g.c * g.h * g.w, g.o * g.l());
        for i in 0..g.n {
            let y = forward(&one, &x[i * xi..(i + 1) * xi], &w, None, false);
            assert_eq!(y, all[i * yi..(i + 1) * yi], "image {i}");
        }
    }
}
