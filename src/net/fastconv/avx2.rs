//! The AVX2 + FMA inner loop of [`super::direct`]'s forward pass (also its input gradient), for
//! CPUs without AVX-512: the same layouts (positions in blocks of 16, as two 8-lane vectors),
//! tiles of 4 output channels (8 accumulators of the 16 registers). Requires AVX2 and FMA,
//! which [`super::direct::isa`] checks before it is called; elsewhere an unreachable stub.

#[cfg(target_arch = "x86_64")]
pub use x86::*;

#[cfg(not(target_arch = "x86_64"))]
pub use other::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One output tile of `t` (= 4) channels at every wide position: `out[j·lw + q]`; `w` is
    /// the tile's packed weights (`[c][tap][t]`), `x` the padded planes (`plane` apart), `lw` a
    /// multiple of 16.
    #[target_feature(enable = "avx2,fma")]
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
        assert_eq!(t, 4, "AVX2 tiles are 4 output channels wide");
        let mut q = 0;
        while q < lw {
            block(x, plane, q, c, taps, w, lw, out);
            q += 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        x: &[f32],
        plane: usize,
        q: usize,
        c: usize,
        taps: &[usize],
        w: &[f32],
        lw: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let xp = x.as_ptr();
        let mut wp = w.as_ptr();
        for ci in 0..c {
            let base = xp.add(ci * plane + q);
            for &off in taps {
                let src = base.add(off);
                let x0 = _mm256_loadu_ps(src);
                let x1 = _mm256_loadu_ps(src.add(8));
                for (j, a) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*wp.add(j));
                    a[0] = _mm256_fmadd_ps(b, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(b, x1, a[1]);
                }
                wp = wp.add(4);
            }
        }
        let op = out.as_mut_ptr();
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(j * lw + q), a[0]);
            _mm256_storeu_ps(op.add(j * lw + q + 8), a[1]);
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
}
