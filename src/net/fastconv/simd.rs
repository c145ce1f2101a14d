//! Function multiversioning for the plain loops around the kernels (padding, output
//! compaction, element-wise passes): the crate is compiled for baseline x86-64, so such loops
//! vectorise to 4-lane SSE; run through [`avx512`] they are compiled inside an AVX-512 function
//! and vectorise to 16 lanes on CPUs that have it. Results are bit-identical either way (Rust
//! never reassociates or contracts float arithmetic).

/// Runs `f`, compiled for AVX-512F when this CPU has it, else as it is (whatever
/// `ONNX_PRUNE_CONV_KERNEL` says: it picks convolution kernels only). `f` must be `#[inline]`-able into the caller: a
/// closure, whose body LLVM inlines into the AVX-512 function (a callee's features may be a
/// subset of its caller's).
#[inline(always)]
pub(crate) fn avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has(super::direct::Isa::Avx512) {
        // SAFETY: `cpu_has` found AVX-512F on this CPU.
        return unsafe { on_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
