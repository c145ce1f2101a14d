//! The backward pass of [`super::direct`]'s stride-1 3×3 convolutions, both gradients from one
//! pass over the batch: each image's output gradient is masked by the ReLU that followed the
//! convolution (when one was fused: the mask costs no pass of its own) and padded once, in the
//! layout of the adjoint geometry.
//!
//! **Input gradient.** The input gradient of a stride-1 convolution is the forward pass of the
//! output gradient padded by (k − 1 − pad) with the weight transposed and flipped
//! ([`adjoint_geom`], [`adjoint_weight`]), so it runs on the forward kernel.
//!
//! **Weight gradient.** With p = q + off(tap), `dw[o][c][tap] = Σ_p x[c][p] · dy[o][p − off]`
//! over the wide positions of the output gradient (its extra columns zero) against the input's
//! padded planes, vectorised over output channels: 16 per vector, the output gradient
//! transposed per image into position-major rows (AVX-512 16 × 16 block transposes), 3 input
//! channels × 9 taps in 27 accumulators, each input value broadcast once against the 9 taps'
//! rows. The adjoint's padded rows have the width of the forward's (`w + max(left, right)`
//! both ways, see [`super::direct::wide`]), so wide position q of the forward's output lies at
//! q + (top · wp + left) of the adjoint's padded plane and the transposition reads it there
//! directly: the discarded columns and the rows below the output land on padding, which is
//! zero.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::direct::{fits, isa, prefetch, takes, wgrad_fits, wide, Isa, Plan};
use super::kernels::{chunk, per_task, sum, Geom, Grads};
use rayon::prelude::*;

/// Lanes of one vector.
const V: usize = 16;

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

/// The weight [`adjoint_geom`] takes: `w` transposed and flipped,
/// `w'[c][o][kh−1−i][kw−1−j] = w[o][c][i][j]`.
fn adjoint_weight(g: &Geom, w: &[f32]) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let mut wt = vec![0f32; w.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for k in 0..taps {
                wt[(c * g.o + o) * taps + (taps - 1 - k)] = w[(o * g.c + c) * taps + k];
            }
        }
    }
    wt
}

/// Whether [`backward`] computes `g`'s input gradient (on this CPU).
pub fn x_takes(g: &Geom) -> bool {
    // `fits(g)` first: the adjoint geometry assumes stride 1 and pads below the kernel size.
    fits(g) && takes(&adjoint_geom(g))
}

/// The input gradient (N × C × H × W) for the output gradient `dy`, when [`x_takes`] `g`.
pub fn backward_x(g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    x_takes(g)
        .then(|| backward_x_on(isa()?, g, w, dy))
        .flatten()
}

/// [`backward_x`] on the given instruction set (which the CPU must have).
pub fn backward_x_on(isa: Isa, g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    (fits(g) && fits(&adjoint_geom(g))).then(|| backward_on(isa, g, None, Some(w), dy, None).dx)?
}

/// The weight gradient (O × C × 3 × 3) and the bias gradient (O), for a geometry that
/// [`fits`] on AVX-512 (whether it pays is [`wgrad_fits`]'s question).
pub fn backward_w(g: &Geom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        fits(g) && isa() == Some(Isa::Avx512),
        "direct weight gradient asked for {g:?}"
    );
    let grads = backward_on(Isa::Avx512, g, Some(x), None, dy, None);
    grads.dw.expect("asked for")
}

/// The input gradient when `w` is given and [`x_takes`] `g`, the weight and bias gradients
/// when `x` is given and [`wgrad_fits`] `g` (each `None` otherwise), for the output gradient
/// `dy` masked by `keep` (the ReLU output: the gradient passes where it is positive or NaN)
/// when given.
pub fn backward(
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    dy: &[f32],
    keep: Option<&[f32]>,
) -> Grads {
    let x = x.filter(|_| wgrad_fits(g));
    let w = w.filter(|_| x_takes(g));
    match isa() {
        Some(isa) if x.is_some() || w.is_some() => backward_on(isa, g, x, w, dy, keep),
        _ => Grads { dx: None, dw: None },
    }
}

/// [`backward`] on `isa`, for the gradients asked for (the caller checked that they apply).
fn backward_on(
    isa: Isa,
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    dy: &[f32],
    keep: Option<&[f32]>,
) -> Grads {
    let a = adjoint_geom(g);
    let wda = wide(&a);
    let wt = w.map(|w| adjoint_weight(g, w));
    let plan = wt.as_deref().map(|wt| Plan::new(isa, &a, wt));
    let wg = x.map(|_| WgPlan::new(g));
    if let Some(p) = &wg {
        assert!(
            p.wd.wp == wda.wp && isa == Isa::Avx512,
            "the adjoint's rows are the forward's"
        );
    }
    let (xi, yi) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    let per = chunk(g.n);
    let tasks = g.n.div_ceil(per);
    // Not zeroed first: `Plan::image` writes every element of each image.
    let mut dx: Vec<f32> = Vec::with_capacity(if w.is_some() { g.n * xi } else { 0 });
    let spare = w.map(|_| &mut dx.spare_capacity_mut()[..g.n * xi]);
    let slices = per_task(spare, per * xi, tasks);
    let parts: Vec<Option<(Vec<f32>, Vec<f32>)>> = slices
        .into_par_iter()
        .enumerate()
        .map(|(ci, dxs)| {
            // The output gradient in the adjoint's padded planes (`V` floats of slack for
            // the transposition's whole vectors).
            let mut dybuf = vec![0f32; g.o * wda.plane + V];
            let mut out = plan.as_ref().map(|p| p.buffers().1);
            let mut acc = wg.as_ref().map(|p| p.buffers());
            for i in ci * per..((ci + 1) * per).min(g.n) {
                let k = keep.map(|k| &k[i * yi..(i + 1) * yi]);
                super::direct::pad_into(
                    &dy[i * yi..(i + 1) * yi],
                    k,
                    (g.o, g.oh, g.ow),
                    (a.pt, a.pl),
                    &wda,
                    &mut dybuf,
                );
                if let (Some(p), Some(acc), Some(x)) = (&wg, acc.as_mut(), x) {
                    // The next image's input and mask come into the cache meanwhile.
                    let next = [
                        x.get((i + 1) * xi..(i + 2) * xi).unwrap_or(&[]),
                        keep.and_then(|k| k.get((i + 1) * yi..(i + 2) * yi))
                            .unwrap_or(&[]),
                    ];
                    let at = (a.pt, a.pl, wda.plane);
                    p.image(&x[i * xi..(i + 1) * xi], &dybuf, at, acc, next);
                }
                if let (Some(p), Some(out)) = (&plan, out.as_mut()) {
                    let j = i - ci * per;
                    let next = dy.get((i + 1) * yi..(i + 2) * yi).unwrap_or(&[]);
                    p.image(
                        &dybuf,
                        out,
                        &mut dxs[j * xi..(j + 1) * xi],
                        None,
                        false,
                        next,
                    );
                }
            }
            acc.map(|a| (a.dwt, a.db))
        })
        .collect();
    // SAFETY: with `w`, `Plan::image` wrote all `xi` elements of every image.
    if w.is_some() {
        unsafe { dx.set_len(g.n * xi) };
    }
    Grads {
        dx: w.map(|_| dx),
        dw: wg.map(|p| p.finish(parts.into_iter().flatten())),
    }
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

/// The weight-gradient kernel's layout for one geometry. With p = q + off(tap),
/// `dw[o][c][tap] = Σ_p x[c][p] · dy[o][p − off(tap)]`: vectorised over output channels (16 per
/// vector, `o` padded to `op`), the output gradient transposed per image to
/// `[wide position][op]` (aligned, with `front` zero rows in front), each input value broadcast
/// once against the 9 taps' output-gradient vectors; accumulated per task as `[c][tap][op]`
/// and transposed at the end.
struct WgPlan<'g> {
    g: &'g Geom,
    wd: super::direct::Wide,
    taps: Vec<usize>,
    front: usize,
    op: usize,
    /// The input positions that hold data (rows of the padded plane inside the image).
    span: (usize, usize),
}

/// One task's buffers and sums.
struct WgAcc {
    xbuf: Vec<f32>,
    dyt: Vec<f32>,
    at: usize,
    dwt: Vec<f32>,
    db: Vec<f32>,
}

impl<'g> WgPlan<'g> {
    fn new(g: &'g Geom) -> Self {
        let wd = wide(g);
        let taps = wd.taps(g);
        let front = taps[taps.len() - 1];
        let op = g.o.div_ceil(V) * V;
        let span = (g.pt * wd.wp, (g.pt + g.h) * wd.wp);
        WgPlan {
            g,
            wd,
            taps,
            front,
            op,
            span,
        }
    }

    fn buffers(&self) -> WgAcc {
        // Row `front + q` holds the output gradient at wide position q; the rows in front
        // and the padded channels' lanes stay zero.
        let (dyt, at) = aligned((self.front + self.wd.plane) * self.op);
        WgAcc {
            xbuf: vec![0f32; self.g.c * self.wd.plane],
            dyt,
            at,
            dwt: vec![0f32; self.g.c * self.taps.len() * self.op],
            db: vec![0f32; self.g.o],
        }
    }

    /// Adds one image's gradients: `x` its input, `dybuf` its output gradient in padded planes
    /// (`plane` apart) whose data starts at row `top`, column `left`.
    fn image(
        &self,
        x: &[f32],
        dybuf: &[f32],
        (top, left, plane): (usize, usize, usize),
        acc: &mut WgAcc,
        next: [&[f32]; 2],
    ) {
        let (g, wd, op) = (self.g, &self.wd, self.op);
        super::direct::pad_into(x, None, (g.c, g.h, g.w), (g.pt, g.pl), wd, &mut acc.xbuf);
        let shift = top * wd.wp + left;
        for (o, b) in acc.db.iter_mut().enumerate() {
            *b += sum(&dybuf[o * plane + top * wd.wp..o * plane + (top + g.oh) * wd.wp]);
        }
        let rows = self.span.1;
        for ob in (0..op).step_by(V) {
            // SAFETY: only built for AVX-512 (`backward_on` asserts it); `dybuf` holds `V`
            // floats past the last plane, so the reads of `rows` rounded up to whole vectors
            // from `shift` fit (`shift + rows ≤ plane`: the rows below the output are
            // padding); `dyt` holds `front + plane` rows of `op` from `at`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::transpose_planes(
                    dybuf.as_ptr().add(ob * plane + shift),
                    plane,
                    g.o - ob.min(g.o),
                    rows,
                    acc.dyt.as_mut_ptr().add(acc.at + self.front * op + ob),
                    op,
                )
            };
        }
        let calls = op / V * g.c.div_ceil(WTILES[0]);
        let (mut call, share) = (0, next.map(|s| s.len().div_ceil(calls)));
        for ob in (0..op).step_by(V) {
            let mut c0 = 0;
            while c0 < g.c {
                for (s, n) in next.iter().zip(share) {
                    prefetch(&s[(call * n).min(s.len())..((call + 1) * n).min(s.len())]);
                }
                call += 1;
                let t = WTILES.iter().copied().find(|&t| t <= g.c - c0).unwrap_or(1);
                let k = Wg {
                    dyt: &acc.dyt[acc.at + ob..],
                    op,
                    ob,
                    front: self.front,
                    x: &acc.xbuf,
                    plane: wd.plane,
                    c0,
                    span: self.span,
                    taps: &self.taps,
                };
                wgrad_tile(&k, t, &mut acc.dwt);
                c0 += t;
            }
        }
    }

    /// The tasks' sums added in order, transposed to `O × C × taps`.
    fn finish(&self, parts: impl Iterator<Item = (Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
        let (g, nt, op) = (self.g, self.taps.len(), self.op);
        let mut it = parts;
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
