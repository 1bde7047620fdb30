//! Fully connected layer y = x Wᵀ + b by GEMM, with params = [W (out×inp, row-major) | b (out)].
//! Forward and each backward GEMM cost n·inp·out multiply-adds.

use super::gemm::{gemm, Lib, Mat};
use super::wide;
use crate::backend::{LinearBackward, LinearForward, LinearShape, Real};

fn check(n: usize, inp: usize, out: usize, x: usize, params: usize, y: usize) {
    assert_eq!(x, n * inp, "linear: x length");
    assert_eq!(params, out * inp + out, "linear: params length");
    assert_eq!(y, n * out, "linear: y length");
}

/// y = x Wᵀ + b, overwritten.
pub(crate) fn forward<T: Real>(a: LinearForward<&[T], &mut [T]>) {
    let LinearForward { s: LinearShape { n, inp, out }, x, params, y } = a;
    check(n, inp, out, x.len(), params.len(), y.len());
    let (w, b) = params.split_at(out * inp);
    for row in y.chunks_mut(out.max(1)) {
        row.copy_from_slice(b);
    }
    gemm(Lib::Matrixmultiply, T::one(), Mat::new(x, n, inp), Mat::new(w, out, inp).t(), T::one(), y);
}

/// dx = dy W and d_params = [dyᵀ x | Σ_n dy (in f64)], all overwritten.
pub(crate) fn backward<T: Real>(a: LinearBackward<&[T], &mut [T]>) {
    let LinearBackward { s: LinearShape { n, inp, out }, x, params, dy, dx, d_params } = a;
    check(n, inp, out, x.len(), params.len(), dy.len());
    assert_eq!(dx.len(), n * inp, "linear: dx length");
    assert_eq!(d_params.len(), params.len(), "linear: d_params length");
    let w = &params[..out * inp];
    let (dw, db) = d_params.split_at_mut(out * inp);
    let dy_m = Mat::new(dy, n, out);
    gemm(Lib::Matrixmultiply, T::one(), dy_m, Mat::new(w, out, inp), T::zero(), dx);
    gemm(Lib::Matrixmultiply, T::one(), dy_m.t(), Mat::new(x, n, inp), T::zero(), dw);
    for (o, d) in db.iter_mut().enumerate() {
        *d = T::from_f64((0..n).map(|i| wide(dy[i * out + o])).sum());
    }
}
