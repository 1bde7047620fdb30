//! The element types a CPU backend computes in: f32 for training, f64 for gradient checks.

use num_traits::Float;
use std::fmt::Debug;
use std::iter::Sum;

/// One strided GEMM, C (m×n) = α·A (m×k) · B (k×n) + β·C, as raw pointers with row and column
/// strides in elements (rs*, cs*); β = 0 does not read C. Both GEMM libraries take exactly this.
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs<T> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: T,
    pub a: *const T,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const T,
    pub rsb: isize,
    pub csb: isize,
    pub beta: T,
    pub c: *mut T,
    pub rsc: isize,
    pub csc: isize,
}

/// A float the CPU reference can compute in. GEMM dispatches to the matching kernel of matrixmultiply
/// or of the `gemm` crate (both single-threaded here: the CPU backend parallelizes over blocks).
pub trait Real: Float + Sum + Debug + Default + Send + Sync + 'static {
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The product `g` by matrixmultiply.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (C) matrices.
    unsafe fn gemm_matrixmultiply(g: &GemmArgs<Self>);

    /// The slice as f32 when `Self` is f32, else `None`: the direct convolutions are f32-only.
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    /// [`Real::as_f32`] for a mutable slice.
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }

    /// The same product by the `gemm` crate, on the calling thread only (`Parallelism::None`), so
    /// its blocking of the inner dimension does not depend on any thread count.
    ///
    /// # Safety
    /// As for [`Real::gemm_matrixmultiply`].
    unsafe fn gemm_crate(g: &GemmArgs<Self>) {
        // gemm computes dst = α'·dst + β'·lhs·rhs, reading dst only when asked to: α' = our β,
        // β' = our α. Strides are given column stride first.
        gemm::gemm(
            g.m,
            g.n,
            g.k,
            g.c,
            g.csc,
            g.rsc,
            g.beta != Self::zero(),
            g.a,
            g.csa,
            g.rsa,
            g.b,
            g.csb,
            g.rsb,
            g.beta,
            g.alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn as_f32(v: &[f32]) -> Option<&[f32]> {
        Some(v)
    }
    fn as_f32_mut(v: &mut [f32]) -> Option<&mut [f32]> {
        Some(v)
    }
    unsafe fn gemm_matrixmultiply(g: &GemmArgs<Self>) {
        matrixmultiply::sgemm(
            g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c, g.rsc, g.csc,
        )
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    unsafe fn gemm_matrixmultiply(g: &GemmArgs<Self>) {
        matrixmultiply::dgemm(
            g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c, g.rsc, g.csc,
        )
    }
}
