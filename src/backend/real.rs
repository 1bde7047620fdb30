//! The element types a CPU backend computes in: f32 for training, f64 for gradient checks.

use num_traits::Float;
use std::fmt::Debug;
use std::iter::Sum;

/// A float the CPU reference can compute in. GEMM dispatches to the matching kernel of matrixmultiply
/// or of the `gemm` crate (both single-threaded here: the CPU backend parallelizes over blocks).
pub trait Real: Float + Sum + Debug + Default + Send + Sync + 'static {
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// C (m×n) = α·A (m×k) · B (k×n) + β·C by matrixmultiply, with arbitrary row/column strides
    /// (in elements). β = 0 does not read C.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (C) matrices.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_matrixmultiply(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// The same product by the `gemm` crate, on the calling thread only (`Parallelism::None`), so
    /// its blocking of the inner dimension does not depend on any thread count.
    ///
    /// # Safety
    /// As for [`Real::gemm_matrixmultiply`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_crate(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // gemm computes dst = α'·dst + β'·lhs·rhs, reading dst only when asked to: α' = our β,
        // β' = our α. Strides are given column stride first.
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            beta != Self::zero(),
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            beta,
            alpha,
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
    unsafe fn gemm_matrixmultiply(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    unsafe fn gemm_matrixmultiply(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}
