//! The AVX-512 inner loops of [`super::direct`] (register-blocked tiles; see that module for
//! the layouts). Every function requires AVX-512F, which [`super::direct::isa`] checks before
//! any is called (x86-64 only).

use super::direct::Fwd;
use super::direct_grad::Wg;
use std::arch::x86_64::*;

/// One output tile of `t` (8 or 4) channels at every wide position (see [`Fwd`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward_tile(k: &Fwd, t: usize, out: &mut [f32]) {
    match t {
        8 => run::<8, 3>(k, out),
        _ => run::<4, 4>(k, out),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn run<const T: usize, const P: usize>(k: &Fwd, out: &mut [f32]) {
    let lw = k.lw;
    let mut q = 0;
    while q + 16 * P <= lw {
        block::<T, P>(k, q, out);
        q += 16 * P;
    }
    // The tail: two vectors at a time, then one (a one-vector block reads the weights
    // once per FMA and runs at half speed).
    if P > 2 && q + 32 <= lw {
        block::<T, 2>(k, q, out);
        q += 32;
    }
    while q < lw {
        block::<T, 1>(k, q, out);
        q += 16;
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block<const T: usize, const P: usize>(k: &Fwd, q: usize, out: &mut [f32]) {
    let mut acc = [[_mm512_setzero_ps(); P]; T];
    let xp = k.x.as_ptr();
    let mut wp = k.w.as_ptr();
    for ci in 0..k.c {
        let base = xp.add(ci * k.plane + q);
        for &off in k.taps {
            let src = base.add(off);
            let mut xv = [_mm512_setzero_ps(); P];
            for (p, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.add(16 * p));
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*wp.add(j));
                for p in 0..P {
                    a[p] = _mm512_fmadd_ps(b, xv[p], a[p]);
                }
            }
            wp = wp.add(T);
        }
    }
    let op = out.as_mut_ptr();
    for (j, a) in acc.iter().enumerate() {
        for (p, v) in a.iter().enumerate() {
            _mm512_storeu_ps(op.add(j * k.lw + q + 16 * p), *v);
        }
    }
}

impl Wg<'_> {
    /// `dwt[(c·9 + k)·op + ob + lane] += Σ_p x[c·plane + p] · dyt[(front + p − taps[k])·op
    /// + lane]` for the `t` (≤ 3) input channels from `c0`, p over `span`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(&self, t: usize, dwt: &mut [f32]) {
        match t {
            3 => self.run::<3>(dwt),
            2 => self.run::<2>(dwt),
            _ => self.run::<1>(dwt),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run<const T: usize>(&self, dwt: &mut [f32]) {
        let mut acc = [[_mm512_setzero_ps(); 9]; T];
        let mut back = [0usize; 9];
        for (b, &o) in back.iter_mut().zip(self.taps) {
            *b = (self.front - o) * self.op;
        }
        let op = self.op;
        let dp = self.dyt.as_ptr();
        let xp = self.x.as_ptr().add(self.c0 * self.plane);
        for p in self.span.0..self.span.1 {
            let row = dp.add(p * op);
            let mut xv = [_mm512_setzero_ps(); T];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm512_set1_ps(*xp.add(j * self.plane + p));
            }
            for k in 0..9 {
                let d = _mm512_loadu_ps(row.add(back[k]));
                for j in 0..T {
                    acc[j][k] = _mm512_fmadd_ps(xv[j], d, acc[j][k]);
                }
            }
        }
        let out = dwt.as_mut_ptr();
        for (j, a) in acc.iter().enumerate() {
            for (k, v) in a.iter().enumerate() {
                let q = out.add(((self.c0 + j) * 9 + k) * op + self.ob);
                _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), *v));
            }
        }
    }
}

/// The first `min(left, 16)` lanes.
#[inline]
fn lanes(left: usize) -> __mmask16 {
    if left >= 16 {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// The lanes where `v` is positive or NaN (not `v ≤ 0`, unordered): where ReLU passes its
/// value and its gradient.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn positive(v: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, _mm512_setzero_ps())
}

/// `dst[i] = src[i]` for i < n, or `src[i]` where `keep[i]` is positive or NaN and 0 elsewhere
/// (ReLU's gradient mask) when `keep` is given; `dst`, `src` and `keep` hold n floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn copy_row(dst: *mut f32, src: *const f32, keep: Option<*const f32>, n: usize) {
    let mut i = 0;
    while i < n {
        let m = lanes(n - i);
        let mut v = _mm512_maskz_loadu_ps(m, src.add(i));
        if let Some(k) = keep {
            v = _mm512_maskz_mov_ps(positive(_mm512_maskz_loadu_ps(m, k.add(i))), v);
        }
        _mm512_mask_storeu_ps(dst.add(i), m, v);
        i += 16;
    }
}

/// `y[i] = relu(s[i] + b)` or `s[i] + b` for i < n (ONNX's Relu: NaN passes through).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn bias_row(y: *mut f32, s: *const f32, b: f32, relu: bool, n: usize) {
    let bv = _mm512_set1_ps(b);
    let mut i = 0;
    while i < n {
        let m = lanes(n - i);
        let mut v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, s.add(i)), bv);
        if relu {
            v = _mm512_maskz_mov_ps(positive(v), v);
        }
        _mm512_mask_storeu_ps(y.add(i), m, v);
        i += 16;
    }
}

/// Transposes 16 planes into rows of 16 lanes: `dst[q·op + j] = src[j·plane + q]` for every
/// q < `rows` rounded up to 16 and j < 16, with `src` planes j ≥ `o` read as zeros. `src`
/// must be readable up to `(o − 1)·plane + rows` rounded up to 16; `dst` writable up to
/// `rows` rounded up to 16 rows of `op`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_planes(
    src: *const f32,
    plane: usize,
    o: usize,
    rows: usize,
    dst: *mut f32,
    op: usize,
) {
    let mut q = 0;
    while q < rows {
        let mut r = [_mm512_setzero_ps(); 16];
        for (j, v) in r.iter_mut().enumerate().take(o.min(16)) {
            *v = _mm512_loadu_ps(src.add(j * plane + q));
        }
        transpose16(&mut r);
        for (i, v) in r.iter().enumerate() {
            _mm512_storeu_ps(dst.add((q + i) * op), *v);
        }
        q += 16;
    }
}

/// Transposes a 16 × 16 block held as 16 row vectors (row i becomes column i).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    // Pairs of rows interleaved (32-bit), then groups of 4 (64-bit): s[4i + e], lane L holds
    // element 4L + e of rows 4i..4i + 4.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut s = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        s[4 * i] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        s[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        s[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        s[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Column 4L + e = lane L of s[e], s[4 + e], s[8 + e], s[12 + e].
    for e in 0..4 {
        let u0 = _mm512_shuffle_f32x4::<0x44>(s[e], s[4 + e]);
        let u1 = _mm512_shuffle_f32x4::<0xEE>(s[e], s[4 + e]);
        let u2 = _mm512_shuffle_f32x4::<0x44>(s[8 + e], s[12 + e]);
        let u3 = _mm512_shuffle_f32x4::<0xEE>(s[8 + e], s[12 + e]);
        r[e] = _mm512_shuffle_f32x4::<0x88>(u0, u2);
        r[4 + e] = _mm512_shuffle_f32x4::<0xDD>(u0, u2);
        r[8 + e] = _mm512_shuffle_f32x4::<0x88>(u1, u3);
        r[12 + e] = _mm512_shuffle_f32x4::<0xDD>(u1, u3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transposition against its definition, with planes beyond `o` read as zeros.
    #[test]
    fn transpose_planes_transposes() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        let (plane, o, rows, op) = (37, 13, 21, 16);
        let src: Vec<f32> = (0..16 * plane + 16).map(|i| i as f32 + 0.5).collect();
        let mut dst = vec![f32::NAN; 32 * op];
        // SAFETY: AVX-512F checked above; `src` covers every plane read, `dst` 32 rows.
        unsafe { transpose_planes(src.as_ptr(), plane, o, rows, dst.as_mut_ptr(), op) };
        for q in 0..32 {
            for j in 0..16 {
                let want = if j < o { src[j * plane + q] } else { 0.0 };
                assert_eq!(dst[q * op + j], want, "row {q} lane {j}");
            }
        }
    }
}
