//! A safe, bounds-checked front to the two GEMMs of [`Real`] (matrixmultiply and the `gemm` crate)
//! for strided matrices in slices.
//!
//! Both run on the calling thread only (matrixmultiply is built without its `threading` feature,
//! the `gemm` crate is called with `Parallelism::None`), so each element of C is summed in one
//! order fixed by the shape: results do not depend on any thread count.

use crate::backend::{GemmArgs, Real};

/// A read-only strided matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// The row-major rows×cols matrix that fills `data`.
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix length");
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without moving data.
    pub(crate) fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// Which library multiplies. Chosen per call site by measurement (`cargo bench --bench conv_gemm`,
/// docs/PERFORMANCE.md): the `gemm` crate is faster when the inner dimension is short (conv forward
/// and input gradient), matrixmultiply when it is long and B is transposed (weight gradient).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lib {
    Matrixmultiply,
    GemmCrate,
}

/// C = α·A·B + β·C, where C is the row-major (A.rows × B.cols) matrix that fills `c`.
/// β = 0 overwrites C without reading it. Costs A.rows·A.cols·B.cols multiply-adds.
pub(crate) fn gemm<T: Real>(lib: Lib, alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, c: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm inner dimensions");
    assert_eq!(c.len(), m * n, "gemm output length");
    // SAFETY: a `Mat` (built by `new`, possibly transposed by `t`) spans exactly its slice, and C's
    // shape was checked above, so every index the GEMM forms stays inside `a.data`, `b.data` and
    // `c`; `c` is a unique borrow, so it overlaps neither input.
    let f = match lib {
        Lib::Matrixmultiply => T::gemm_matrixmultiply,
        Lib::GemmCrate => T::gemm_crate,
    };
    let args = GemmArgs {
        m,
        k,
        n,
        alpha,
        a: a.data.as_ptr(),
        rsa: a.rs as isize,
        csa: a.cs as isize,
        b: b.data.as_ptr(),
        rsb: b.rs as isize,
        csb: b.cs as isize,
        beta,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
    };
    unsafe { f(&args) }
}
