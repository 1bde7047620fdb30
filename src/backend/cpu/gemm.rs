//! A safe, bounds-checked front to [`Real::gemm`] (matrixmultiply) for strided matrices in slices.
//!
//! matrixmultiply splits its work over blocks of rows and columns of C, never over the inner
//! dimension, so every element of C is summed in one fixed order: results do not depend on how many
//! threads it uses.

use crate::backend::Real;

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

/// C = α·A·B + β·C, where C is the row-major (A.rows × B.cols) matrix that fills `c`.
/// β = 0 overwrites C without reading it. Costs A.rows·A.cols·B.cols multiply-adds.
pub(crate) fn gemm<T: Real>(alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, c: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm inner dimensions");
    assert_eq!(c.len(), m * n, "gemm output length");
    // SAFETY: a `Mat` (built by `new`, possibly transposed by `t`) spans exactly its slice, and C's
    // shape was checked above, so every index matrixmultiply forms stays inside `a.data`, `b.data`
    // and `c`; `c` is a unique borrow, so it overlaps neither input.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}
