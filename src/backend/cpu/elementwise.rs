//! Elementwise and shape ops: residual add, the option-A shortcut and global average pooling.
//! All are memory-bound and parallel over planes; none reduces across planes.

use super::wide;
use crate::backend::{PoolShape, Real, ShortcutShape};
use rayon::prelude::*;

/// Elements per rayon task for flat elementwise loops.
const CHUNK: usize = 1 << 14;

/// y += x. Reads 2 and writes 1 element per element.
pub(crate) fn add_assign<T: Real>(y: &mut [T], x: &[T]) {
    assert_eq!(y.len(), x.len(), "add_assign: lengths");
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        for (a, &b) in yc.iter_mut().zip(xc) {
            *a = *a + b;
        }
    });
}

fn check_shortcut(s: &ShortcutShape, x: usize, y: usize) {
    assert!(s.stride > 0, "shortcut: stride must be positive");
    assert!(s.c_out >= s.c_in, "shortcut: c_out < c_in: {s:?}");
    assert_eq!(x, s.n * s.c_in * s.h * s.w, "shortcut: input length");
    assert_eq!(y, s.n * s.c_out * s.out_h() * s.out_w(), "shortcut: output length");
}

/// Calls `f(out, inp)` for each subsampled position of one plane: out = oh·out_w + ow indexes the
/// output plane, inp = (oh·stride)·w + ow·stride the input plane.
fn for_each_sample(s: &ShortcutShape, mut f: impl FnMut(usize, usize)) {
    let out_w = s.out_w();
    for oh in 0..s.out_h() {
        for ow in 0..out_w {
            f(oh * out_w + ow, oh * s.stride * s.w + ow * s.stride);
        }
    }
}

/// y[b][co] = subsample(x[b][co − off]) for off ≤ co < off + c_in, else 0 (overwritten).
pub(crate) fn shortcut_forward<T: Real>(s: &ShortcutShape, x: &[T], y: &mut [T]) {
    check_shortcut(s, x.len(), y.len());
    let (in_plane, out_plane, off) = (s.h * s.w, s.out_h() * s.out_w(), s.channel_offset());
    if out_plane == 0 {
        return;
    }
    y.par_chunks_mut(out_plane).enumerate().for_each(|(i, yp)| {
        let (b, co) = (i / s.c_out, i % s.c_out);
        if co < off || co >= off + s.c_in {
            yp.fill(T::zero());
            return;
        }
        let xp = &x[(b * s.c_in + co - off) * in_plane..][..in_plane];
        for_each_sample(s, |o, i| yp[o] = xp[i]);
    });
}

/// dx += shortcutᵀ(dy): dx[b][ci] at the subsampled positions gains dy[b][ci + off].
pub(crate) fn shortcut_backward_acc<T: Real>(s: &ShortcutShape, dy: &[T], dx: &mut [T]) {
    check_shortcut(s, dx.len(), dy.len());
    let (in_plane, out_plane, off) = (s.h * s.w, s.out_h() * s.out_w(), s.channel_offset());
    if in_plane == 0 {
        return;
    }
    dx.par_chunks_mut(in_plane).enumerate().for_each(|(i, xp)| {
        let (b, ci) = (i / s.c_in, i % s.c_in);
        let yp = &dy[(b * s.c_out + ci + off) * out_plane..][..out_plane];
        for_each_sample(s, |o, i| xp[i] = xp[i] + yp[o]);
    });
}

fn check_pool(s: &PoolShape, x: usize, y: usize) {
    assert_eq!(x, s.n * s.c * s.hw, "avgpool: input length");
    assert_eq!(y, s.n * s.c, "avgpool: output length");
}

/// y[b][c] = Σ_i x[b][c][i] / hw, summed in f64.
pub(crate) fn avgpool_forward<T: Real>(s: &PoolShape, x: &[T], y: &mut [T]) {
    check_pool(s, x.len(), y.len());
    if s.hw == 0 {
        y.fill(T::nan());
        return;
    }
    y.par_iter_mut().zip(x.par_chunks(s.hw)).for_each(|(o, xp)| {
        *o = T::from_f64(xp.iter().map(|&v| wide(v)).sum::<f64>() / s.hw as f64);
    });
}

/// dx[b][c][i] = dy[b][c] / hw (overwritten).
pub(crate) fn avgpool_backward<T: Real>(s: &PoolShape, dy: &[T], dx: &mut [T]) {
    check_pool(s, dx.len(), dy.len());
    if s.hw == 0 {
        return;
    }
    dx.par_chunks_mut(s.hw).zip(dy.par_iter()).for_each(|(dxp, &d)| {
        dxp.fill(T::from_f64(wide(d) / s.hw as f64));
    });
}
