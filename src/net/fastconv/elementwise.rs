//! Element-wise passes on host `f32` slices, in parallel chunks (one per rayon thread) and
//! compiled for AVX-512 where the CPU has it: the fused ReLU/add kernels' maps and ReLU's
//! input gradient.

use rayon::prelude::*;

/// Elements per rayon task of an element-wise pass: one chunk per thread, none under 16 Ki
/// elements (smaller tensors are not worth waking a thread for).
pub(crate) fn ew_chunk(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1))
        .max(16 * 1024)
}

/// ReLU's input gradient: `dy` where `y` (the ReLU's input or output: they agree in sign) is
/// positive or NaN, else 0; in parallel chunks.
pub(crate) fn relu_grad(y: &[f32], dy: &[f32]) -> Vec<f32> {
    zip_map(y, dy, |y, d| if y.is_nan() || y > 0.0 { d } else { 0.0 })
}

/// `out[i] = f(a[i])` over all elements, in parallel chunks ([`ew_chunk`]), compiled for
/// AVX-512 where the CPU has it.
pub(crate) fn map(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let n = a.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let c = ew_chunk(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(c)
        .zip(a.par_chunks(c))
        .for_each(|(o, x)| {
            super::simd::avx512(|| {
                for (o, x) in o.iter_mut().zip(x) {
                    o.write(f(*x));
                }
            })
        });
    // SAFETY: the chunks above cover all `n` elements and each wrote every one of its own.
    unsafe { out.set_len(n) };
    out
}

/// `out[i] = f(a[i], b[i])` over all elements, in parallel chunks ([`ew_chunk`]), compiled for
/// AVX-512 where the CPU has it.
pub(crate) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let n = a.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let c = ew_chunk(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(c)
        .zip(a.par_chunks(c).zip(b.par_chunks(c)))
        .for_each(|(o, (x, y))| {
            super::simd::avx512(|| {
                for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
                    o.write(f(*x, *y));
                }
            })
        });
    // SAFETY: the chunks above cover all `n` elements and each wrote every one of its own.
    unsafe { out.set_len(n) };
    out
}
