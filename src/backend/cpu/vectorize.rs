//! Plain loops compiled for the widest vectors the CPU has. [`run`] calls its closure inside a
//! function compiled with AVX-512F (or AVX2 + FMA) enabled, as [`direct3x3::simd`] detected, so
//! the loops LLVM vectorizes there use 16 (or 8) f32 lanes instead of the baseline's 4 (SSE2).
//!
//! Bits: Rust never contracts a·b + c into an FMA and never reorders floating-point operations, so
//! each clone computes the same operations in the same order, only more of them per instruction:
//! every clone gives the same bits (tests check it for the BatchNorm ops).

use super::direct3x3::{self, Simd};

/// The widest vectors of this CPU ([`direct3x3::simd`]): None where only the baseline runs.
pub(super) fn widest() -> Option<Simd> {
    direct3x3::simd()
}

/// `f()`, compiled for `isa` (the baseline for None). `f` must be inlined into the clone to gain
/// anything: pass an `#[inline(always)]` closure whose hot loops are `#[inline(always)]` too.
/// Panics if this CPU lacks `isa`.
#[inline(always)]
pub(super) fn run<R>(isa: Option<Simd>, f: impl FnOnce() -> R) -> R {
    assert!(isa.is_none_or(direct3x3::supported), "vectorize: this CPU lacks {isa:?}");
    match isa {
        // SAFETY: the CPU has `isa`'s features (asserted above).
        Some(Simd::Avx512) => unsafe { avx512(f) },
        Some(Simd::Avx2) => unsafe { avx2(f) },
        None => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx512<R>(_: impl FnOnce() -> R) -> R {
    unreachable!("AVX-512 is detected on x86-64 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx2<R>(_: impl FnOnce() -> R) -> R {
    unreachable!("AVX2 is detected on x86-64 only")
}
