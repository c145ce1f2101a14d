//! Direct (im2col-free) kernels for stride-1 3×3 convolutions on x86-64 (AVX-512, or AVX2 +
//! FMA for the forward pass and input gradient), the ResNets' commonest layer (issue #20): on
//! 16 channels at 32×32 the im2col path spent a third of the forward pass and half of each
//! backward pass copying (im2col, faer's packing of it, col2im). The backward pass is in
//! [`super::direct_grad`].
//!
//! **Wide rows.** One image's input is copied once into zero-padded planes of `hp × wp` (the
//! output's height plus the kernel's; the input's width plus the wider of its left and right
//! paddings, as each row's leading zeros pad the row above on the right). The output is
//! computed at every "wide" position q = oy·wp + ox with ox < wp (the `wp − ow` extra columns
//! are discarded), so each kernel tap (ki, kj) reads the padded plane at q + ki·wp + kj: a
//! contiguous vector load, with no index arithmetic per pixel.
//!
//! Register blocking (AVX-512): the forward kernel keeps a tile of 8 output channels × 3
//! vectors of 16 positions (or 4 × 4) in accumulators and reads each input vector once per
//! tile. AVX2: tiles of 4 output channels × 16 positions. Every sum is taken in a fixed order
//! (per image chunk, then across chunks in order), so a result depends on the thread count
//! only.
//!
//! **Memory.** The copies into padded planes and out of the wide rows are explicit AVX-512
//! loops (masked at row ends; the compiler's would be 4-lane SSE calls to `memcpy`), and while
//! one image is computed the next one's input and this one's output rows are prefetched into
//! L2: the copies had stalled on memory (a batch's activations do not fit in L2).

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
pub(super) fn bottom_right(g: &Geom) -> (isize, isize) {
    let pb = (g.oh + g.kh - 1) as isize - g.h as isize - g.pt as isize;
    let pr = (g.ow + g.kw - 1) as isize - g.w as isize - g.pl as isize;
    (pb, pr)
}

/// The padded-plane layout of one image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wide {
    /// Padded width and height.
    pub(super) wp: usize,
    pub(super) hp: usize,
    /// Wide output positions, rounded up to whole vectors.
    pub(super) lw: usize,
    /// Floats from one padded plane to the next (every tap's reads of every vector fit).
    pub(super) plane: usize,
}

pub(super) fn wide(g: &Geom) -> Wide {
    // One row's left padding doubles as the right padding of the row above: a tap that reads
    // past a row's end lands in the next row's leading zeros (`wp ≥ w + max(left, right)`),
    // so each row needs only the wider of its two paddings (`ow + kw − 1` before: 6% fewer
    // positions on 16×16 outputs).
    let (_, pr) = bottom_right(g);
    let wp = (g.w + g.pl.max(pr.max(0) as usize)).max(g.ow);
    let hp = g.oh + g.kh - 1;
    let lw = (g.oh * wp).div_ceil(V) * V;
    let plane = (lw + (g.kh - 1) * wp + g.kw - 1).div_ceil(V) * V;
    Wide { wp, hp, lw, plane }
}

impl Wide {
    /// Each tap's offset into a padded plane.
    pub(super) fn taps(&self, g: &Geom) -> Vec<usize> {
        (0..g.kh)
            .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
            .map(|(i, j)| i * self.wp + j)
            .collect()
    }
}

/// Copies one image (`c` planes of `h × w`) into the interior of zero-padded planes at
/// (`top`, `left`), keeping only the elements where `keep` (an image of the same shape) is
/// positive or NaN when it is given (ReLU's gradient mask); the borders of `buf` are never
/// written, so they stay zero between images.
pub(super) fn pad_into(
    x: &[f32],
    keep: Option<&[f32]>,
    (c, h, w): (usize, usize, usize),
    (top, left): (usize, usize),
    wd: &Wide,
    buf: &mut [f32],
) {
    let n = w.min(wd.wp - left);
    for ci in 0..c {
        for y in 0..h.min(wd.hp - top) {
            let s = (ci * h + y) * w;
            let d = ci * wd.plane + (y + top) * wd.wp + left;
            copy_row(&mut buf[d..d + n], &x[s..s + n], keep.map(|k| &k[s..s + n]));
        }
    }
}

/// `dst = src`, or `src` where `keep` is positive or NaN and 0 elsewhere.
fn copy_row(dst: &mut [f32], src: &[f32], keep: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has(Isa::Avx512) {
        // SAFETY: AVX-512F checked; the three slices hold `dst.len()` floats.
        unsafe {
            avx512::copy_row(
                dst.as_mut_ptr(),
                src.as_ptr(),
                keep.map(|k| k.as_ptr()),
                dst.len(),
            )
        };
        return;
    }
    match keep {
        Some(k) => {
            for ((d, s), k) in dst.iter_mut().zip(src).zip(k) {
                *d = if k.is_nan() || *k > 0.0 { *s } else { 0.0 };
            }
        }
        None => dst.copy_from_slice(src),
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
    // Read in the source's order (each tile's `t` lanes of a (channel, tap) are neighbours in
    // the output; lanes beyond `o` stay zero).
    let mut out = vec![0f32; tiles.iter().map(|t| t.1).sum::<usize>() * c * taps];
    let mut base = 0;
    for &(o0, t) in &tiles {
        for j in 0..t.min(o - o0) {
            let src = &w[(o0 + j) * c * taps..(o0 + j + 1) * c * taps];
            for (e, v) in src.iter().enumerate() {
                out[base + e * t + j] = *v;
            }
        }
        base += t * c * taps;
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
    let plan = Plan::new(isa, g, w);
    let (xi, yi) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    // Not zeroed first: every element is written below (see `Plan::image`).
    let mut y: Vec<f32> = Vec::with_capacity(g.n * yi);
    let per = chunk(g.n);
    let spare = &mut y.spare_capacity_mut()[..g.n * yi];
    spare
        .par_chunks_mut(per * yi)
        .enumerate()
        .for_each(|(ci, ys)| {
            let (mut buf, mut out) = plan.buffers();
            for (j, ydst) in ys.chunks_mut(yi).enumerate() {
                let i = ci * per + j;
                plan.pad(&x[i * xi..(i + 1) * xi], None, &mut buf);
                let next = x.get((i + 1) * xi..(i + 2) * xi).unwrap_or(&[]);
                plan.image(&buf, &mut out, ydst, bias, relu, next);
            }
        });
    // SAFETY: `Plan::image` wrote all `yi` elements of each image.
    unsafe { y.set_len(g.n * yi) };
    y
}

/// One forward geometry's layout and packed weights, run one image at a time.
pub(super) struct Plan<'g> {
    isa: Isa,
    g: &'g Geom,
    pub(super) wd: Wide,
    taps: Vec<usize>,
    w: Vec<f32>,
    tiles: Vec<(usize, usize)>,
}

impl<'g> Plan<'g> {
    pub(super) fn new(isa: Isa, g: &'g Geom, w: &[f32]) -> Self {
        assert!(
            fits(g) && cpu_has(isa),
            "direct kernels asked for {g:?} on {isa:?}"
        );
        let wd = wide(g);
        let taps = wd.taps(g);
        let (w, tiles) = pack(isa, w, g.o, g.c, taps.len());
        Plan {
            isa,
            g,
            wd,
            taps,
            w,
            tiles,
        }
    }

    /// Zeroed padded planes for one image and the kernel's output tile.
    pub(super) fn buffers(&self) -> (Vec<f32>, Vec<f32>) {
        let t = self.tiles.iter().map(|t| t.1).max().unwrap_or(0);
        // `V` floats of slack: the weight gradient transposes whole vectors of positions.
        (
            vec![0f32; self.g.c * self.wd.plane + V],
            vec![0f32; self.wd.lw * t],
        )
    }

    /// One input image into `buf`'s padded planes (see [`pad_into`]).
    pub(super) fn pad(&self, x: &[f32], keep: Option<&[f32]>, buf: &mut [f32]) {
        let g = self.g;
        pad_into(x, keep, (g.c, g.h, g.w), (g.pt, g.pl), &self.wd, buf);
    }

    /// One image's output (all `o · oh · ow` elements of `y`) from its padded planes `buf`.
    pub(super) fn image(
        &self,
        buf: &[f32],
        out: &mut [f32],
        y: &mut [std::mem::MaybeUninit<f32>],
        bias: Option<&[f32]>,
        relu: bool,
        next: &[f32],
    ) {
        let (g, wd) = (self.g, &self.wd);
        let l = g.oh * g.ow;
        let mut wat = 0;
        let share = next.len().div_ceil(self.tiles.len().max(1));
        for (ti, &(o0, t)) in self.tiles.iter().enumerate() {
            let wt = &self.w[wat..wat + t * g.c * self.taps.len()];
            wat += wt.len();
            let k = Fwd {
                x: buf,
                plane: wd.plane,
                lw: wd.lw,
                c: g.c,
                taps: &self.taps,
                w: wt,
            };
            prefetch(&next[(ti * share).min(next.len())..((ti + 1) * share).min(next.len())]);
            // This tile's output rows, written below.
            prefetch(&y[o0 * l..((o0 + t).min(g.o)) * l]);
            forward_tile(self.isa, &k, t, out);
            for jj in 0..t.min(g.o - o0) {
                let b = bias.map_or(0.0, |b| b[o0 + jj]);
                let row = &out[jj * wd.lw..];
                let dst = &mut y[(o0 + jj) * l..(o0 + jj + 1) * l];
                for (oy, d) in dst.chunks_mut(g.ow).enumerate() {
                    bias_row(d, &row[oy * wd.wp..oy * wd.wp + g.ow], b, relu);
                }
            }
        }
    }
}

/// `y = relu(s + b)` or `s + b`, element by element.
fn bias_row(y: &mut [std::mem::MaybeUninit<f32>], s: &[f32], b: f32, relu: bool) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has(Isa::Avx512) {
        // SAFETY: AVX-512F checked; `y` and `s` hold `y.len()` floats.
        unsafe { avx512::bias_row(y.as_mut_ptr().cast(), s.as_ptr(), b, relu, y.len()) };
        return;
    }
    for (d, s) in y.iter_mut().zip(s) {
        d.write(if relu {
            super::kernels::relu(s + b)
        } else {
            s + b
        });
    }
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

/// Asks for `s` to be brought into the L2 cache (the next image's input while this one is
/// computed: the copies into padded planes stalled on memory).
pub(super) fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in s.chunks((64 / size_of::<T>()).max(1)) {
        // SAFETY: a hint on an address inside `s`; SSE is part of x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
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

#[cfg(test)]
mod tests {
    use super::super::direct_grad::{backward, backward_w, backward_x_on};
    use super::super::kernels::tests::data;
    use super::super::{elementwise, kernels};
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
                // Both gradients in one pass, through a fused ReLU's mask (its output, zero
                // at about half the positions), on the process's ISA.
                if isa == super::isa().unwrap() {
                    let masked = elementwise::relu_grad(&relu, &dy);
                    let want = kernels::im2col_backward(&g, Some(&x), &w, &masked, true);
                    let got = backward(&g, Some(&x), Some(&w), &dy, Some(&relu));
                    let dx = got.dx.expect("the adjoint fits");
                    close(&dx, want.dx.as_ref().unwrap(), "masked input gradient", &g);
                    if let Some((dw, db)) = got.dw {
                        let (wdw, wdb) = want.dw.as_ref().unwrap();
                        close(&dw, wdw, "masked weight gradient", &g);
                        close(&db, wdb, "masked bias gradient", &g);
                    }
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
