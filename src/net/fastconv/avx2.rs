//! The AVX2 + FMA inner loop of [`super::direct`]'s forward pass (also its input gradient), for
//! CPUs without AVX-512: the same layouts (positions in blocks of 16, as two 8-lane vectors),
//! tiles of 4 output channels (8 accumulators of the 16 registers). Requires AVX2 and FMA,
//! which [`super::direct::isa`] checks before it is called (x86-64 only).

use super::direct::Fwd;
use std::arch::x86_64::*;

/// One output tile of `t` (= 4) channels at every wide position (see [`Fwd`]).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward_tile(k: &Fwd, t: usize, out: &mut [f32]) {
    assert_eq!(t, 4, "AVX2 tiles are 4 output channels wide");
    let mut q = 0;
    while q < k.lw {
        block(k, q, out);
        q += 16;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block(k: &Fwd, q: usize, out: &mut [f32]) {
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let xp = k.x.as_ptr();
    let mut wp = k.w.as_ptr();
    for ci in 0..k.c {
        let base = xp.add(ci * k.plane + q);
        for &off in k.taps {
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
        _mm256_storeu_ps(op.add(j * k.lw + q), a[0]);
        _mm256_storeu_ps(op.add(j * k.lw + q + 8), a[1]);
    }
}
