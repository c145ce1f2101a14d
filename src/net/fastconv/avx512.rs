//! The AVX-512 inner loops of [`super::direct`] (register-blocked tiles; see that module for
//! the layouts). Every function requires AVX-512F, which [`super::direct::isa`] checks before
//! any is called (x86-64 only).

use super::direct::{Fwd, Wg};
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
