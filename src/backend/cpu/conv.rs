//! 2-D convolution (no bias) by im2col + GEMM, one image per rayon task.
//!
//! For image b, col_b is the K×P matrix (K = c_in·k·k, P = out_h·out_w) with
//! col_b[(ci, ki, kj)][(oh, ow)] = x_b[ci][oh·s + ki − pad][ow·s + kj − pad] (zero outside x_b). Then
//! - forward:          y_b = W · col_b                       (W is c_out×K);
//! - backward data:   dx_b = col2im(Wᵀ · dy_b)               (col2im is the adjoint of im2col);
//! - backward filter:   dW = Σ_b dy_b · col_bᵀ.
//!
//! Each pass costs `ConvShape::macs` = N·c_out·P·K multiply-adds, and im2col/col2im moves K·P elements
//! per image through a per-task buffer that stays in cache. matrixmultiply's own threads split the
//! rows/columns of C only, so each element is summed in a fixed order whatever the thread count.

use super::gemm::{gemm, Mat};
use super::wide;
use crate::backend::{ConvShape, Real};
use rayon::prelude::*;
use std::ops::Range;

/// The batch is split into this many fixed chunks for the filter gradient: one partial dW per chunk,
/// reduced in chunk order, so the result does not depend on rayon's scheduling.
const FILTER_CHUNKS: usize = 8;

/// Output indices o ∈ 0..out whose input index o·stride + tap − pad lies in 0..size.
fn valid_outputs(tap: usize, stride: usize, pad: usize, size: usize, out: usize) -> Range<usize> {
    let lo = if pad > tap { (pad - tap).div_ceil(stride) } else { 0 };
    let hi = if size + pad > tap { (size + pad - tap).div_ceil(stride).min(out) } else { 0 };
    lo.min(hi)..hi
}

/// Where the entries of one row of col_b come from.
struct Taps {
    /// Index in x_b of the entry at `ows.start`; entry ow ∈ ows reads x_b[x + (ow − ows.start)·stride].
    x: usize,
    /// Output columns that read x_b; every other entry is padding (zero).
    ows: Range<usize>,
}

/// Walks col_b in order, one output row at a time: calls `f(col, taps)` for every col row
/// (ci, ki, kj) and output row oh, where `col` indexes the first of that row's out_w entries and
/// `taps` is `None` when the whole row is padding. im2col and col2im share this index math.
fn for_each_col_row(s: &ConvShape, mut f: impl FnMut(usize, Option<Taps>)) {
    let (k, st, pad) = (s.kernel, s.stride, s.pad);
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let mut col = 0;
    for ci in 0..s.c_in {
        for ki in 0..k {
            let ohs = valid_outputs(ki, st, pad, s.h, out_h);
            for kj in 0..k {
                let ows = valid_outputs(kj, st, pad, s.w, out_w);
                for oh in 0..out_h {
                    let taps = (ohs.contains(&oh) && !ows.is_empty()).then(|| {
                        let (ih, iw) = (oh * st + ki - pad, ows.start * st + kj - pad);
                        Taps { x: (ci * s.h + ih) * s.w + iw, ows: ows.clone() }
                    });
                    f(col, taps);
                    col += out_w;
                }
            }
        }
    }
}

/// col = im2col(x_b), overwritten.
fn im2col<T: Real>(s: &ConvShape, x: &[T], col: &mut [T]) {
    let (out_w, st) = (s.out_w(), s.stride);
    for_each_col_row(s, |c0, taps| {
        let row = &mut col[c0..c0 + out_w];
        match taps {
            None => row.fill(T::zero()),
            Some(Taps { x: x0, ows }) => {
                row[..ows.start].fill(T::zero());
                row[ows.end..].fill(T::zero());
                let row = &mut row[ows];
                if st == 1 {
                    row.copy_from_slice(&x[x0..x0 + row.len()]);
                } else {
                    for (d, &v) in row.iter_mut().zip(x[x0..].iter().step_by(st)) {
                        *d = v;
                    }
                }
            }
        }
    });
}

/// dx_b += col2im(col), the adjoint of [`im2col`].
fn col2im_acc<T: Real>(s: &ConvShape, col: &[T], dx: &mut [T]) {
    let st = s.stride;
    for_each_col_row(s, |c0, taps| {
        if let Some(Taps { x: x0, ows }) = taps {
            let row = &col[c0 + ows.start..c0 + ows.end];
            if st == 1 {
                for (d, &v) in dx[x0..x0 + row.len()].iter_mut().zip(row) {
                    *d = *d + v;
                }
            } else {
                for (d, &v) in dx[x0..].iter_mut().step_by(st).zip(row) {
                    *d = *d + v;
                }
            }
        }
    });
}

/// Per-image sizes: (x_b, y_b, K, P).
fn dims(s: &ConvShape) -> (usize, usize, usize, usize) {
    let p = s.out_h() * s.out_w();
    let k = s.c_in * s.kernel * s.kernel;
    (s.c_in * s.h * s.w, s.c_out * p, k, p)
}

fn check(s: &ConvShape, x: usize, w: usize, y: usize) {
    assert!(s.stride > 0 && s.kernel > 0, "conv: kernel and stride must be positive: {s:?}");
    assert!(
        s.h + 2 * s.pad >= s.kernel && s.w + 2 * s.pad >= s.kernel,
        "conv: kernel larger than padded input: {s:?}"
    );
    assert_eq!(x, s.x_len(), "conv: x length");
    assert_eq!(w, s.w_len(), "conv: w length");
    assert_eq!(y, s.y_len(), "conv: y length");
}

/// y = conv(x, w), overwritten.
pub(crate) fn forward<T: Real>(s: &ConvShape, x: &[T], w: &[T], y: &mut [T]) {
    check(s, x.len(), w.len(), y.len());
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 {
        y.fill(T::zero());
        return;
    }
    let w = Mat::new(w, s.c_out, k);
    y.par_chunks_mut(y_img).zip(x.par_chunks(x_img)).for_each_init(
        || vec![T::zero(); k * p],
        |col, (yb, xb)| {
            im2col(s, xb, col);
            gemm(T::one(), w, Mat::new(col, k, p), T::zero(), yb);
        },
    );
}

/// dx = conv_transpose(dy, w), overwritten.
pub(crate) fn backward_data<T: Real>(s: &ConvShape, dy: &[T], w: &[T], dx: &mut [T]) {
    check(s, dx.len(), w.len(), dy.len());
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 {
        dx.fill(T::zero());
        return;
    }
    let wt = Mat::new(w, s.c_out, k).t();
    dx.par_chunks_mut(x_img).zip(dy.par_chunks(y_img)).for_each_init(
        || vec![T::zero(); k * p],
        |col, (dxb, dyb)| {
            gemm(T::one(), wt, Mat::new(dyb, s.c_out, p), T::zero(), col);
            dxb.fill(T::zero());
            col2im_acc(s, col, dxb);
        },
    );
}

/// dw = Σ_b dy_b · im2col(x_b)ᵀ, overwritten. Deterministic: images are summed in order within each
/// of `FILTER_CHUNKS` fixed chunks of the batch, and the chunk partials in order in f64.
pub(crate) fn backward_filter<T: Real>(s: &ConvShape, x: &[T], dy: &[T], dw: &mut [T]) {
    check(s, x.len(), dw.len(), dy.len());
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 || s.n == 0 {
        dw.fill(T::zero());
        return;
    }
    let per_chunk = s.n.div_ceil(FILTER_CHUNKS);
    let partials: Vec<Vec<T>> = x
        .par_chunks(per_chunk * x_img)
        .zip(dy.par_chunks(per_chunk * y_img))
        .map(|(xs, dys)| {
            let mut col = vec![T::zero(); k * p];
            let mut part = vec![T::zero(); dw.len()];
            for (xb, dyb) in xs.chunks(x_img).zip(dys.chunks(y_img)) {
                im2col(s, xb, &mut col);
                let dyb = Mat::new(dyb, s.c_out, p);
                gemm(T::one(), dyb, Mat::new(&col, k, p).t(), T::one(), &mut part);
            }
            part
        })
        .collect();
    for (i, d) in dw.iter_mut().enumerate() {
        *d = T::from_f64(partials.iter().map(|part| wide(part[i])).sum());
    }
}
