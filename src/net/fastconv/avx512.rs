//! The AVX-512 inner loops of [`super::direct`] (register-blocked tiles; see that module for
//! the layouts). Every function requires AVX-512F, which [`super::direct::available`] checks
//! before any is called; on other architectures they are unreachable stubs.

#[cfg(target_arch = "x86_64")]
pub use x86::*;

#[cfg(not(target_arch = "x86_64"))]
pub use other::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One output tile of `t` channels at every wide position: `out[j·lw + q]`. `w` is the
    /// tile's packed weights (`[c][tap][t]`), `x` the padded planes (`plane` apart).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_tile(
        x: &[f32],
        plane: usize,
        lw: usize,
        c: usize,
        taps: &[usize],
        w: &[f32],
        t: usize,
        out: &mut [f32],
    ) {
        match t {
            8 => run::<8, 3>(x, plane, lw, c, taps, w, out),
            _ => run::<4, 4>(x, plane, lw, c, taps, w, out),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run<const T: usize, const P: usize>(
        x: &[f32],
        plane: usize,
        lw: usize,
        c: usize,
        taps: &[usize],
        w: &[f32],
        out: &mut [f32],
    ) {
        let mut q = 0;
        while q + 16 * P <= lw {
            block::<T, P>(x, plane, q, c, taps, w, lw, out);
            q += 16 * P;
        }
        // The tail: two vectors at a time, then one (a one-vector block reads the weights
        // once per FMA and runs at half speed).
        if P > 2 && q + 32 <= lw {
            block::<T, 2>(x, plane, q, c, taps, w, lw, out);
            q += 32;
        }
        while q < lw {
            block::<T, 1>(x, plane, q, c, taps, w, lw, out);
            q += 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const T: usize, const P: usize>(
        x: &[f32],
        plane: usize,
        q: usize,
        c: usize,
        taps: &[usize],
        w: &[f32],
        lw: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; T];
        let xp = x.as_ptr();
        let mut wp = w.as_ptr();
        for ci in 0..c {
            let base = xp.add(ci * plane + q);
            for &off in taps {
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
                _mm512_storeu_ps(op.add(j * lw + q + 16 * p), *v);
            }
        }
    }

    /// One tile of the weight-gradient kernel: output channels `ob..ob + 16` (`dyt` starts
    /// at `ob`), input channels from `c0`.
    pub struct Wg<'a> {
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

    impl Wg<'_> {
        /// `dwt[(c·9 + k)·op + ob + lane] += Σ_p x[c·plane + p] · dyt[(front + p − taps[k])·op
        /// + lane]` for the `t` (≤ 3) input channels from `c0`, p over `span`.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn tile(&self, t: usize, dwt: &mut [f32]) {
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
}

#[cfg(not(target_arch = "x86_64"))]
mod other {
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_tile(
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: &[usize],
        _: &[f32],
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("the direct kernels are x86-64 only")
    }

    pub struct Wg<'a> {
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

    impl Wg<'_> {
        pub unsafe fn tile(&self, _: usize, _: &mut [f32]) {
            unreachable!("the direct kernels are x86-64 only")
        }
    }
}
