//! 3×3, stride-1, pad-1 convolutions of f32 computed directly with AVX2 + FMA: no im2col matrix and
//! no GEMM packing, which for 16 channels at 32×32 cost about as much as the multiply-adds themselves
//! (docs/PERFORMANCE.md). Used where [`applies`] says so; everything else goes through im2col + GEMM.
//!
//! **Layout.** Each H × W input plane is copied into a zero-padded plane of width wp = W + 2,
//! flattened: xp[i·wp + j] = x[i−1][j−1], zero on the border and in the trailing slack. Output
//! (oh, ow) is computed at flat index q = oh·wp + ow, where tap (ki, kj) reads xp[q + ki·wp + kj]:
//! every tap is one constant offset, so a run of consecutive q is one contiguous load per tap. The
//! tiles of 16 consecutive q cover each output row exactly when W is a multiple of 16 and store
//! straight into y; otherwise (W = 8, 24, …) they run over the whole q layout, and the q with
//! ow ≥ W (2 a row: 25% more work at W = 8, still faster than im2col + GEMM there) are discarded.
//!
//! - forward: y[co][q] = Σ_ci Σ_(ki,kj) w[co][ci][ki][kj] · xp[ci][q + ki·wp + kj];
//! - backward data: the same convolution of padded dy with w'[ci][co][ki][kj] = w[co][ci][2−ki][2−kj];
//! - backward filter: dw[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dy[n][co][oh][ow] · xp[n][ci][(oh + ki)·wp + ow + kj],
//!   vectorized over co: dy is copied with 16 channels innermost, dyb[p][16], a pixel's 16 values
//!   being two vectors, and each x value is broadcast.
//!
//! **Registers** (AVX2 has 16). A forward tile is 4 output channels × 16 consecutive q: 8
//! accumulators, and per (ci, tap) 2 loads, 4 broadcasts and 8 FMAs. (4 × 24 would give 12
//! accumulators, but then the compiler spills.) A filter tile is 16 output channels × the 3 taps of
//! one kernel row, with even and odd pixels in separate accumulators: 12 accumulators, and per 2
//! pixels 4 loads, 6 broadcasts and 12 FMAs.
//!
//! **Summation order, fixed by the shape.** Forward and backward data sum each output in one FMA
//! chain over (ci, ki, kj) in order, one task per image. The filter gradient cuts the batch into
//! the same [`FILTER_CHUNKS`] fixed chunks as the im2col path; a task (16 output channels, one chunk) sums groups of about
//! 1024 pixels in f32 (even and odd pixels apart, then added), adds each group's sums into f64 in
//! image order, and the chunks' f64 partials are added in chunk order. No result depends on the
//! thread count.

use super::conv::FILTER_CHUNKS;
use crate::backend::ConvShape;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per tile.
const TILE_CO: usize = 4;
/// Consecutive q per forward tile: 2 vectors of 8.
const TILE_Q: usize = 16;
/// Vectors of 8 per forward tile.
const TILE_V: usize = TILE_Q / 8;

/// Whether the direct path computes this convolution when `c_out` channels come out (the input
/// channels of the conv for its backward-data pass): a 3×3 stride-1 pad-1 conv on planes whose
/// width is a multiple of 8 (one vector: 8, 16, 32 in the CIFAR nets; the 4×4 and 2×2 maps of the
/// tiny nets stay on im2col + GEMM), `c_out` a multiple of [`TILE_CO`], on a CPU with AVX2 and FMA.
pub(super) fn applies(s: &ConvShape, c_out: usize) -> bool {
    let shape = s.kernel == 3 && s.stride == 1 && s.pad == 1 && s.w > 0 && s.w % 8 == 0;
    shape && c_out > 0 && c_out % TILE_CO == 0 && avx2_fma()
}

/// Whether the direct path computes this convolution's filter gradient: as [`applies`], with the
/// output channels a multiple of [`CO_BLK`] (16, 32, 64 in the CIFAR nets; the tiny nets' 8-channel
/// convs stay on im2col + GEMM).
pub(super) fn applies_to_filter(s: &ConvShape) -> bool {
    applies(s, s.c_out) && s.c_out % CO_BLK == 0
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma() -> bool {
    false
}

/// The padded, flattened plane geometry of an H × W map.
#[derive(Clone, Copy)]
struct Planes {
    h: usize,
    w: usize,
    /// Padded width W + 2.
    wp: usize,
    /// Outputs computed per plane: H·wp rounded up to [`TILE_Q`].
    q: usize,
    /// Length of one padded input plane: q + 2·wp + 2, so that every tap of every computed q is in it.
    plane: usize,
}

impl Planes {
    fn new(h: usize, w: usize) -> Self {
        let wp = w + 2;
        let q = (h * wp).div_ceil(TILE_Q) * TILE_Q;
        Planes { h, w, wp, q, plane: q + 2 * wp + 2 }
    }

    /// Copies the H × W planes of `src` into zero-padded planes of length `plane` in `dst`.
    fn pad(&self, src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(self.h * self.w).zip(dst.chunks_exact_mut(self.plane)) {
            d.fill(0.0);
            for (i, row) in s.chunks_exact(self.w).enumerate() {
                d[(i + 1) * self.wp + 1..][..self.w].copy_from_slice(row);
            }
        }
    }

    /// The valid outputs of q-layout planes (length q) into H × W planes.
    fn unpad_q(&self, src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(self.q).zip(dst.chunks_exact_mut(self.h * self.w)) {
            for (i, row) in d.chunks_exact_mut(self.w).enumerate() {
                row.copy_from_slice(&s[i * self.wp..][..self.w]);
            }
        }
    }
}

/// Weights regrouped for the forward tile: [co / 4][ci][tap][co % 4], from `weight(co, ci, tap)`.
fn by_tile(c_out: usize, c_in: usize, weight: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(c_out * c_in * 9);
    for blk in 0..c_out / TILE_CO {
        for ci in 0..c_in {
            for tap in 0..9 {
                out.extend((0..TILE_CO).map(|r| weight(blk * TILE_CO + r, ci, tap)));
            }
        }
    }
    out
}

/// y = conv(x, w), overwritten.
pub(super) fn forward(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let k = s.c_in * 9;
    let wt = by_tile(s.c_out, s.c_in, |co, ci, tap| w[co * k + ci * 9 + tap]);
    same_conv(s.n, Planes::new(s.h, s.w), s.c_in, s.c_out, x, &wt, y);
}

/// dx = conv_transpose(dy, w), overwritten: the forward convolution of dy with the flipped,
/// transposed filter w'[ci][co][tap] = w[co][ci][8 − tap].
pub(super) fn backward_data(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let k = s.c_in * 9;
    let wt = by_tile(s.c_in, s.c_out, |ci, co, tap| w[co * k + ci * 9 + 8 - tap]);
    same_conv(s.n, Planes::new(s.h, s.w), s.c_out, s.c_in, dy, &wt, dx);
}

/// out = the 3×3 "same" convolution of `inp` (n images of c_in planes) with the regrouped weights
/// `wt`, in parallel over images. Per image: pads its planes, runs every tile, copies out the valid
/// outputs; moves c_in·plane + 2·c_out·q elements around c_out·c_in·9·q multiply-adds.
fn same_conv(n: usize, g: Planes, c_in: usize, c_out: usize, inp: &[f32], wt: &[f32], out: &mut [f32]) {
    let (in_img, out_img) = (c_in * g.h * g.w, c_out * g.h * g.w);
    assert_eq!(inp.len(), n * in_img, "direct conv: input length");
    assert_eq!(out.len(), n * out_img, "direct conv: output length");
    assert_eq!(wt.len(), c_out * c_in * 9, "direct conv: weight length");
    assert!(c_out % TILE_CO == 0 && avx2_fma(), "direct conv: not applicable");
    if n == 0 || out_img == 0 || in_img == 0 {
        // Nothing to compute, or no input channels: every output is then an empty sum, zero as
        // from im2col + GEMM.
        out.fill(0.0);
        return;
    }
    // With W a multiple of the tile, the tiles cover each output row exactly and store straight
    // into `out`; otherwise they run over the q layout (discarding ow ≥ W) into `yq`, copied out.
    let row_tiles = g.w % TILE_Q == 0;
    out.par_chunks_mut(out_img).zip(inp.par_chunks(in_img)).for_each_init(
        || (vec![0.0f32; c_in * g.plane], vec![0.0f32; if row_tiles { 0 } else { c_out * g.q }]),
        |(xp, yq), (out, inp)| {
            g.pad(inp, xp);
            let hw = g.h * g.w;
            for (blk, wt) in wt.chunks_exact(c_in * 9 * TILE_CO).enumerate() {
                // SAFETY (both calls): AVX2 and FMA were detected above. A tile at q0 reads
                // xp[ci·plane + q0 + ki·wp + kj + 0..16] ≤ (c_in − 1)·plane + q − 1 + 2·wp + 2 <
                // c_in·plane (q0 + 16 ≤ q), and wt[0..c_in·36]. It writes dst[r·ld + 0..16] for r < 4:
                // in `out` at (4·blk + r)·hw + oh·W + ow0 + 0..16 ≤ c_out·hw, in `yq` at
                // (4·blk + r)·q + q0 + 0..16 ≤ c_out·q.
                if row_tiles {
                    for oh in 0..g.h {
                        for ow0 in (0..g.w).step_by(TILE_Q) {
                            let dst = &mut out[blk * TILE_CO * hw + oh * g.w + ow0..];
                            unsafe { forward_tile(xp, &g, c_in, wt, oh * g.wp + ow0, dst, hw) };
                        }
                    }
                } else {
                    for q0 in (0..g.q).step_by(TILE_Q) {
                        let dst = &mut yq[blk * TILE_CO * g.q + q0..];
                        unsafe { forward_tile(xp, &g, c_in, wt, q0, dst, g.q) };
                    }
                }
            }
            if !row_tiles {
                g.unpad_q(yq, out);
            }
        },
    );
}

/// dst[r·ld..][..16] = Σ_ci Σ_tap wt[ci][tap][r] · xp[ci][q0 + off(tap) ..][..16] for r < 4, where
/// off(ki, kj) = ki·wp + kj: 16 consecutive q of 4 output channels whose rows are `ld` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile(
    xp: &[f32],
    g: &Planes,
    c_in: usize,
    wt: &[f32],
    q0: usize,
    dst: &mut [f32],
    ld: usize,
) {
    debug_assert!(
        xp.len() >= c_in * g.plane && wt.len() >= c_in * 36 && dst.len() >= (TILE_CO - 1) * ld + TILE_Q
    );
    let mut acc = [[_mm256_setzero_ps(); TILE_V]; TILE_CO];
    let (x, w) = (xp.as_ptr(), wt.as_ptr());
    for ci in 0..c_in {
        for ki in 0..3 {
            for kj in 0..3 {
                let src = x.add(ci * g.plane + q0 + ki * g.wp + kj);
                let v: [__m256; TILE_V] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(8 * j)));
                let wk = w.add((ci * 9 + ki * 3 + kj) * TILE_CO);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*wk.add(r));
                    for j in 0..TILE_V {
                        acc[j] = _mm256_fmadd_ps(b, v[j], acc[j]);
                    }
                }
            }
        }
    }
    let y = dst.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(y.add(r * ld + 8 * j), a);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_tile(_: &[f32], _: &Planes, _: usize, _: &[f32], _: usize, _: &mut [f32], _: usize) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// Output channels per filter-gradient block: two AVX2 registers of 8 lanes.
const CO_BLK: usize = 16;

/// dw = Σ_n dy_n ⋆ x_n, overwritten. One task per (block of 16 output channels, chunk of the batch);
/// per group of images (about 1024 pixels) it copies its images' x into padded planes and their dy
/// block with the channel innermost, dyb[i][p][16] (both stay in L2), sums every (ci, kernel row)
/// over the group in f32 and adds the sums to its f64 partial dw. x and dy are read from memory
/// once per channel block.
///
/// Panics unless [`applies_to_filter`]: its reads are in bounds only for an even W (pixels go in
/// pairs) and 16-channel blocks, and it computes a 3×3 stride-1 pad-1 gradient only.
pub(super) fn backward_filter(s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(applies_to_filter(s), "direct conv: backward_filter does not apply to {s:?}");
    let g = Planes::new(s.h, s.w);
    let hw = s.h * s.w;
    let (x_img, dy_img) = (s.c_in * hw, s.c_out * hw);
    assert_eq!(x.len(), s.n * x_img, "direct conv: x length");
    assert_eq!(dy.len(), s.n * dy_img, "direct conv: dy length");
    assert_eq!(dw.len(), s.c_out * s.c_in * 9, "direct conv: dw length");
    if s.n == 0 || hw == 0 {
        dw.fill(0.0);
        return;
    }
    let xp_img = s.c_in * g.plane;
    // Images per f32 partial sum: about 1024 pixels (1 image at 32×32, 16 at 8×8), then f64.
    let per_flush = (1024 / hw).max(1);
    let per_chunk = s.n.div_ceil(FILTER_CHUNKS);
    let chunks = s.n.div_ceil(per_chunk);
    let partials: Vec<Vec<[f64; CO_BLK]>> = (0..s.c_out / CO_BLK * chunks)
        .into_par_iter()
        .map(|task| {
            let (blk, chunk) = (task / chunks, task % chunks);
            let images = chunk * per_chunk..((chunk + 1) * per_chunk).min(s.n);
            let mut sums = vec![[0.0f64; CO_BLK]; s.c_in * 9];
            let (mut xp, mut dyb) = (vec![0.0f32; per_flush * xp_img], vec![0.0f32; per_flush * hw * CO_BLK]);
            for first in images.clone().step_by(per_flush) {
                let group = per_flush.min(images.end - first);
                let (xp, dyb) = (&mut xp[..group * xp_img], &mut dyb[..group * hw * CO_BLK]);
                g.pad(&x[first * x_img..][..group * x_img], xp);
                for (i, dyb) in dyb.chunks_exact_mut(hw * CO_BLK).enumerate() {
                    let src = &dy[(first + i) * dy_img + blk * CO_BLK * hw..][..CO_BLK * hw];
                    for (p, d) in dyb.chunks_exact_mut(CO_BLK).enumerate() {
                        for (l, d) in d.iter_mut().enumerate() {
                            *d = src[l * hw + p];
                        }
                    }
                }
                for ci in 0..s.c_in {
                    for ki in 0..3 {
                        // SAFETY: AVX2 and FMA were detected and W is even (`applies_to_filter`,
                        // asserted above); image i of the group reads
                        // dyb[(i·hw + p)·16 + 0..16] for p < hw, inside `dyb`, and
                        // xp[i·xp_img + ci·plane + (oh + ki)·wp + ow + kj] for oh < H, ow < W, kj < 3,
                        // below i·xp_img + ci·plane + (H + 2)·wp ≤ group·xp_img: inside `xp`.
                        let taps = unsafe { filter_taps(dyb, &xp[ci * g.plane..], xp_img, group, &g, ki) };
                        for (sum, tap) in sums[ci * 9 + ki * 3..][..3].iter_mut().zip(&taps) {
                            for (s, &v) in sum.iter_mut().zip(tap) {
                                *s += f64::from(v);
                            }
                        }
                    }
                }
            }
            sums
        })
        .collect();
    for (blk, parts) in partials.chunks_exact(chunks).enumerate() {
        for w in 0..s.c_in * 9 {
            for l in 0..CO_BLK {
                let total: f64 = parts.iter().fold(0.0, |t, part| t + part[w][l]);
                dw[(blk * CO_BLK + l) * s.c_in * 9 + w] = total as f32;
            }
        }
    }
}

/// For the 3 taps (ki, kj) of kernel row `ki` and the 16 output channels of a block (2 vectors of
/// lanes): Σ_i Σ_(oh,ow) dy_i[oh·W + ow][lane] · x_i[(oh + ki)·wp + ow + kj] over `images` images,
/// image i's dy at `dy[i·H·W·16..]` and its padded input plane at `x[i·x_image..]`. Even and odd ow
/// accumulate separately (12 accumulators, enough to hide the FMA latency) and are added at the
/// end; per 2 pixels 4 loads, 6 broadcasts and 12 FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn filter_taps(
    dy: &[f32],
    x: &[f32],
    x_image: usize,
    images: usize,
    g: &Planes,
    ki: usize,
) -> [[f32; CO_BLK]; 3] {
    let hw = g.h * g.w;
    debug_assert!(images > 0 && g.w % 2 == 0 && dy.len() >= images * hw * CO_BLK);
    debug_assert!(x.len() >= (images - 1) * x_image + (g.h + 2) * g.wp);
    let mut acc = [[[_mm256_setzero_ps(); 2]; 3]; 2];
    for i in 0..images {
        let (d, x) = (dy.as_ptr().add(i * hw * CO_BLK), x.as_ptr().add(i * x_image + ki * g.wp));
        for oh in 0..g.h {
            for ow in (0..g.w).step_by(2) {
                for (parity, acc) in acc.iter_mut().enumerate() {
                    let dp = d.add((oh * g.w + ow + parity) * CO_BLK);
                    let dv = [_mm256_loadu_ps(dp), _mm256_loadu_ps(dp.add(8))];
                    let xs = x.add(oh * g.wp + ow + parity);
                    for (kj, acc) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*xs.add(kj));
                        acc[0] = _mm256_fmadd_ps(b, dv[0], acc[0]);
                        acc[1] = _mm256_fmadd_ps(b, dv[1], acc[1]);
                    }
                }
            }
        }
    }
    let mut out = [[0.0f32; CO_BLK]; 3];
    for ((o, even), odd) in out.iter_mut().zip(&acc[0]).zip(&acc[1]) {
        for (v, (&e, &d)) in even.iter().zip(odd).enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * v), _mm256_add_ps(e, d));
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn filter_taps(_: &[f32], _: &[f32], _: usize, _: usize, _: &Planes, _: usize) -> [[f32; CO_BLK]; 3] {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}
