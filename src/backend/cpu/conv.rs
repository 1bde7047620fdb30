//! 2-D convolution (no bias) by im2col + GEMM over blocks of images; in f32 on a CPU with AVX2 and
//! FMA, the 3×3 pad-1 convolutions that [`direct3x3::applies`] to go to [`direct3x3`] instead:
//! stride 1 on planes a multiple of 8 wide or of at least 4 pixels, stride 2 with at least 2 output
//! columns and 4 output pixels (all but the first conv of the CIFAR and tiny nets; measured in
//! docs/PERFORMANCE.md).
//!
//! With K = c_in·k·k and P = out_h·out_w, a block of B images (B fixed by the shape alone, see
//! [`block_images`]) has the K × B·P matrix col, whose column b·P + p is image b's input patch at
//! output p: col[(ci, ki, kj)][(b, oh, ow)] = x_b[ci][oh·s + ki − pad][ow·s + kj − pad] (zero
//! outside x_b). Each pass is then one GEMM per block, (M, N, K) as written:
//! - forward:         Y_blk (c_out × B·P) = W (c_out × K) · col            (c_out, B·P, K),
//!   then Y_blk is scattered into y's NCHW planes;
//! - backward data:   col = Wᵀ (K × c_out) · dY_blk (c_out × B·P)           (K, B·P, c_out),
//!   dY_blk gathered from dy, then dx_b = col2im(col) (col2im is the adjoint of im2col);
//! - backward filter: dW += dY_blk · colᵀ (B·P × K)                        (c_out, K, B·P):
//!   the batch is in the GEMM's inner dimension, so dW is reduced over the block inside the GEMM.
//!
//! Each pass costs `ConvShape::macs` = N·c_out·P·K multiply-adds; per block, im2col/col2im moves
//! K·B·P elements and the scatter/gather c_out·B·P (1/K of the GEMM's work) through per-task buffers
//! of about [`COL_BLOCK`] elements, sized to stay in a core's L2.
//!
//! Determinism: blocks run in parallel, each GEMM on one thread, and the GEMM splits no inner
//! dimension, so every output is summed in one fixed order. For the filter gradient, the batch is
//! split into `FILTER_CHUNKS` fixed chunks, the blocks of a chunk accumulate in order into the
//! chunk's partial dW, and the partials are added in chunk order in f64: results do not depend on
//! the thread count or on rayon's scheduling.

use super::direct3x3;
use super::gemm::{gemm, Lib, Mat};
use super::wide;
use crate::backend::{ConvShape, Real};
use rayon::prelude::*;
use std::ops::Range;

/// The batch is split into this many fixed chunks for the filter gradient: one partial dW per chunk,
/// reduced in chunk order, so the result does not depend on rayon's scheduling.
pub(super) const FILTER_CHUNKS: usize = 8;

/// Target size of one block's col matrix, in elements (1 MiB of f32: a core's L2 here).
const COL_BLOCK: usize = 1 << 18;

/// Images per GEMM block: as many as keep col (K × B·P) within [`COL_BLOCK`], at least 1.
/// Depends on the shape only, never on the thread count.
fn block_images(s: &ConvShape) -> usize {
    let (_, _, k, p) = dims(s);
    (COL_BLOCK / (k * p).max(1)).clamp(1, s.n.max(1))
}

/// Output indices o ∈ 0..out whose input index o·stride + tap − pad lies in 0..size.
fn valid_outputs(tap: usize, stride: usize, pad: usize, size: usize, out: usize) -> Range<usize> {
    let lo = if pad > tap { (pad - tap).div_ceil(stride) } else { 0 };
    let hi = if size + pad > tap { (size + pad - tap).div_ceil(stride).min(out) } else { 0 };
    lo.min(hi)..hi
}

/// Where the entries of one output row of one col row come from.
struct Taps {
    /// Index in x_b of the entry at `ows.start`; entry ow ∈ ows reads x_b[x + (ow − ows.start)·stride].
    x: usize,
    /// Output columns that read x_b; every other entry is padding (zero).
    ows: Range<usize>,
}

/// Walks one image's part of col: calls `f(row, oh, taps)` for every col row (ci, ki, kj) and
/// output row oh, where `taps` is `None` when that whole output row is padding. im2col and col2im
/// share this index math.
fn for_each_col_row(s: &ConvShape, mut f: impl FnMut(usize, usize, Option<Taps>)) {
    let (k, st, pad) = (s.kernel, s.stride, s.pad);
    let out_h = s.out_h();
    let mut row = 0;
    for ci in 0..s.c_in {
        for ki in 0..k {
            let ohs = valid_outputs(ki, st, pad, s.h, out_h);
            for kj in 0..k {
                let ows = valid_outputs(kj, st, pad, s.w, s.out_w());
                for oh in 0..out_h {
                    let taps = (ohs.contains(&oh) && !ows.is_empty()).then(|| {
                        let (ih, iw) = (oh * st + ki - pad, ows.start * st + kj - pad);
                        Taps { x: (ci * s.h + ih) * s.w + iw, ows: ows.clone() }
                    });
                    f(row, oh, taps);
                }
                row += 1;
            }
        }
    }
}

/// Writes image x_b into columns `first..first + P` of col (row stride `ld`), overwriting them.
fn im2col<T: Real>(s: &ConvShape, x: &[T], col: &mut [T], ld: usize, first: usize) {
    let (out_w, st) = (s.out_w(), s.stride);
    for_each_col_row(s, |r, oh, taps| {
        let out = &mut col[r * ld + first + oh * out_w..][..out_w];
        match taps {
            None => out.fill(T::zero()),
            Some(Taps { x: x0, ows }) => {
                out[..ows.start].fill(T::zero());
                out[ows.end..].fill(T::zero());
                let out = &mut out[ows];
                if st == 1 {
                    out.copy_from_slice(&x[x0..x0 + out.len()]);
                } else {
                    for (d, &v) in out.iter_mut().zip(x[x0..].iter().step_by(st)) {
                        *d = v;
                    }
                }
            }
        }
    });
}

/// dx_b += col2im(columns `first..first + P` of col, row stride `ld`), the adjoint of [`im2col`].
fn col2im_acc<T: Real>(s: &ConvShape, col: &[T], ld: usize, first: usize, dx: &mut [T]) {
    let (out_w, st) = (s.out_w(), s.stride);
    for_each_col_row(s, |r, oh, taps| {
        if let Some(Taps { x: x0, ows }) = taps {
            let base = r * ld + first + oh * out_w;
            let row = &col[base + ows.start..base + ows.end];
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

/// col (K × B·P) = im2col of the B images in `xs`.
fn im2col_block<T: Real>(s: &ConvShape, xs: &[T], col: &mut [T]) {
    let (x_img, _, _, p) = dims(s);
    let images = xs.len() / x_img;
    for (b, xb) in xs.chunks(x_img).enumerate() {
        im2col(s, xb, col, images * p, b * p);
    }
}

/// Copies B images' NCHW outputs (each c_out × P) into the c_out × B·P matrix `blk`. Moves c_out·B·P
/// elements. (With B = 1 the two layouts coincide and the callers skip the copy.)
fn gather<'a, T: Real>(s: &ConvShape, planes: &[T], blk: &'a mut [T]) -> &'a [T] {
    let p = s.out_h() * s.out_w();
    let ld = blk.len() / s.c_out;
    for (b, img) in planes.chunks(s.c_out * p).enumerate() {
        for (co, plane) in img.chunks(p).enumerate() {
            blk[co * ld + b * p..][..p].copy_from_slice(plane);
        }
    }
    blk
}

/// The inverse of [`gather`]: the c_out × B·P matrix `blk` into B images' NCHW outputs.
fn scatter<T: Real>(s: &ConvShape, blk: &[T], planes: &mut [T]) {
    let p = s.out_h() * s.out_w();
    let ld = blk.len() / s.c_out;
    for (b, img) in planes.chunks_mut(s.c_out * p).enumerate() {
        for (co, plane) in img.chunks_mut(p).enumerate() {
            plane.copy_from_slice(&blk[co * ld + b * p..][..p]);
        }
    }
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

/// Per-task buffers for blocks of up to `images` images: col (K × B·P) and the c_out × B·P output
/// block. Sized to the blocks that will run (a filter-gradient chunk can hold fewer images than a
/// block), since zeroing them costs as much as a small GEMM.
fn buffers<T: Real>(s: &ConvShape, images: usize) -> (Vec<T>, Vec<T>) {
    let (_, _, k, p) = dims(s);
    let bp = images * p;
    (vec![T::zero(); k * bp], vec![T::zero(); s.c_out * bp])
}

/// y = conv(x, w), overwritten.
pub(crate) fn forward<T: Real>(s: &ConvShape, x: &[T], w: &[T], y: &mut [T]) {
    check(s, x.len(), w.len(), y.len());
    if direct3x3::applies(s, s.c_out) {
        if let (Some(x), Some(w), Some(y)) = (T::as_f32(x), T::as_f32(w), T::as_f32_mut(&mut *y)) {
            return direct3x3::forward(s, x, w, y);
        }
    }
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 {
        y.fill(T::zero());
        return;
    }
    let b = block_images(s);
    let w = Mat::new(w, s.c_out, k);
    y.par_chunks_mut(b * y_img).zip(x.par_chunks(b * x_img)).for_each_init(
        || buffers(s, b),
        |(col, out), (ys, xs)| {
            let bp = xs.len() / x_img * p;
            let (col, out) = (&mut col[..k * bp], &mut out[..s.c_out * bp]);
            im2col_block(s, xs, col);
            if bp == p {
                gemm(Lib::GemmCrate, T::one(), w, Mat::new(col, k, bp), T::zero(), ys);
            } else {
                gemm(Lib::GemmCrate, T::one(), w, Mat::new(col, k, bp), T::zero(), out);
                scatter(s, out, ys);
            }
        },
    );
}

/// dx = conv_transpose(dy, w), overwritten.
pub(crate) fn backward_data<T: Real>(s: &ConvShape, dy: &[T], w: &[T], dx: &mut [T]) {
    check(s, dx.len(), w.len(), dy.len());
    if direct3x3::applies(s, s.c_in) {
        if let (Some(dy), Some(w), Some(dx)) = (T::as_f32(dy), T::as_f32(w), T::as_f32_mut(&mut *dx)) {
            return direct3x3::backward_data(s, dy, w, dx);
        }
    }
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 {
        dx.fill(T::zero());
        return;
    }
    let b = block_images(s);
    let wt = Mat::new(w, s.c_out, k).t();
    dx.par_chunks_mut(b * x_img).zip(dy.par_chunks(b * y_img)).for_each_init(
        || buffers(s, b),
        |(col, dy_blk), (dxs, dys)| {
            let bp = dys.len() / y_img * p;
            let (col, dy_blk) = (&mut col[..k * bp], &mut dy_blk[..s.c_out * bp]);
            let dy_blk = if bp == p { dys } else { gather(s, dys, dy_blk) };
            gemm(Lib::GemmCrate, T::one(), wt, Mat::new(dy_blk, s.c_out, bp), T::zero(), col);
            dxs.fill(T::zero());
            for (i, dxb) in dxs.chunks_mut(x_img).enumerate() {
                col2im_acc(s, col, bp, i * p, dxb);
            }
        },
    );
}

/// dw = Σ_b dy_b · im2col(x_b)ᵀ, overwritten. Deterministic: blocks are summed in order within each
/// of `FILTER_CHUNKS` fixed chunks of the batch, and the chunk partials in order in f64.
pub(crate) fn backward_filter<T: Real>(s: &ConvShape, x: &[T], dy: &[T], dw: &mut [T]) {
    check(s, x.len(), dw.len(), dy.len());
    if direct3x3::applies_to_filter(s) {
        if let (Some(x), Some(dy), Some(dw)) = (T::as_f32(x), T::as_f32(dy), T::as_f32_mut(&mut *dw)) {
            return direct3x3::backward_filter(s, x, dy, dw);
        }
    }
    let (x_img, y_img, k, p) = dims(s);
    if x_img == 0 || y_img == 0 || s.n == 0 {
        dw.fill(T::zero());
        return;
    }
    let per_chunk = s.n.div_ceil(FILTER_CHUNKS);
    let b = block_images(s).min(per_chunk);
    let partials: Vec<Vec<T>> = x
        .par_chunks(per_chunk * x_img)
        .zip(dy.par_chunks(per_chunk * y_img))
        .map(|(xs, dys)| {
            let (mut col, mut dy_blk) = buffers(s, b);
            let mut part = vec![T::zero(); dw.len()];
            for (xs, dys) in xs.chunks(b * x_img).zip(dys.chunks(b * y_img)) {
                let bp = xs.len() / x_img * p;
                let (col, dy_blk) = (&mut col[..k * bp], &mut dy_blk[..s.c_out * bp]);
                im2col_block(s, xs, col);
                let dy_blk = if bp == p { dys } else { gather(s, dys, dy_blk) };
                let col_t = Mat::new(col, k, bp).t();
                gemm(
                    Lib::Matrixmultiply,
                    T::one(),
                    Mat::new(dy_blk, s.c_out, bp),
                    col_t,
                    T::one(),
                    &mut part,
                );
            }
            part
        })
        .collect();
    for (i, d) in dw.iter_mut().enumerate() {
        *d = T::from_f64(partials.iter().map(|part| wide(part[i])).sum());
    }
}
