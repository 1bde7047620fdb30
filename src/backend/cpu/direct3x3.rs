//! 3×3, stride-1, pad-1 convolutions of f32 computed directly with AVX2 + FMA: no im2col matrix and
//! no GEMM packing, which for 16 channels at 32×32 cost about as much as the multiply-adds themselves
//! (docs/PERFORMANCE.md). Used where [`applies`] says so; everything else goes through im2col + GEMM.
//!
//! **Layout.** Each H × W input plane is copied into a zero-padded plane of width wp = W + 2,
//! flattened: xp[i·wp + j] = x[i−1][j−1], zero on the border and in the trailing slack. Output
//! (oh, ow) is computed at flat index q = oh·wp + ow, where tap (ki, kj) reads xp[q + ki·wp + kj]:
//! every tap is one constant offset, so a run of consecutive q is one contiguous load per tap. The
//! q with ow ≥ W (2 a row) are computed and discarded: (W + 2)/W of the useful work, 6% more at
//! W = 32 and 25% at W = 8, still faster than im2col + GEMM there (docs/PERFORMANCE.md).
//!
//! - forward: y[co][q] = Σ_ci Σ_(ki,kj) w[co][ci][ki][kj] · xp[ci][q + ki·wp + kj];
//! - backward data: the same convolution of padded dy with w'[ci][co][ki][kj] = w[co][ci][2−ki][2−kj];
//! - backward filter: dw[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dy[n][co][oh][ow] · xp[n][ci][(oh + ki)·wp + ow + kj],
//!   along the rows of dy (so W is a multiple of 8).
//!
//! **Registers.** A forward tile is 4 output channels × 16 consecutive q: 8 accumulators; per
//! (ci, tap) it does 8 FMAs for 2 loads and 4 broadcasts. (4 × 24 would do 12 FMAs per 7 loads, but
//! needs all 16 AVX2 registers and the compiler spills.) A filter tile is 4 output channels × the 3
//! taps of one kernel row: 12 accumulators, 12 FMAs per 7 loads.
//!
//! **Summation order, fixed by the shape.** Forward and backward data sum each output in one FMA
//! chain over (ci, ki, kj) in order. The filter gradient sums each image in 8 f32 lanes along the
//! rows, adds each image's lanes into f64 lanes in image order, and combines the 8 lanes in a fixed
//! tree. Tasks are images (forward, data) or blocks of 4 output channels (filter), so no result
//! depends on the thread count.

use crate::backend::ConvShape;
use rayon::prelude::*;
use std::cell::RefCell;
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
    fn from_q(&self, src: &[f32], dst: &mut [f32]) {
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
    if n == 0 || out_img == 0 {
        return;
    }
    out.par_chunks_mut(out_img).zip(inp.par_chunks(in_img)).for_each_init(
        || (vec![0.0f32; c_in * g.plane], vec![0.0f32; c_out * g.q]),
        |(xp, yq), (out, inp)| {
            g.pad(inp, xp);
            for (wt, yq) in wt.chunks_exact(c_in * 9 * TILE_CO).zip(yq.chunks_exact_mut(TILE_CO * g.q)) {
                for q0 in (0..g.q).step_by(TILE_Q) {
                    // SAFETY: AVX2 and FMA were detected above; the tile reads xp[ci·plane + q0 + tap
                    // offset + 0..24] ≤ (c_in − 1)·plane + q − 1 + 2·wp + 2 < c_in·plane, reads
                    // wt[0..c_in·36], and writes yq[r·q + q0 + 0..24] for r < 4, all inside the
                    // slices whose lengths are fixed above.
                    unsafe { forward_tile(xp, &g, c_in, wt, yq, q0) };
                }
            }
            g.from_q(yq, out);
        },
    );
}

/// yq[r][q0..q0+24] = Σ_ci Σ_tap wt[ci][tap][r] · xp[ci][q0 + off(tap) ..][..24] for r < 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile(xp: &[f32], g: &Planes, c_in: usize, wt: &[f32], yq: &mut [f32], q0: usize) {
    debug_assert!(xp.len() >= c_in * g.plane && wt.len() >= c_in * 36 && yq.len() >= 3 * g.q + q0 + TILE_Q);
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
    let y = yq.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(y.add(r * g.q + q0 + 8 * j), a);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_tile(_: &[f32], _: &Planes, _: usize, _: &[f32], _: &mut [f32], _: usize) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

thread_local! {
    /// The filter gradient's padded copy of x, kept between calls on this thread: ~10 MB fresh for
    /// every call would cost more in page faults than the copy itself.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// dw = Σ_n dy_n ⋆ x_n, overwritten, in parallel over blocks of 4 output channels. Copies x into
/// padded planes once (N·c_in·plane elements), then every block reads them and dy image by image,
/// in image order, adding each image's 8 lane sums per weight into f64 lanes.
pub(super) fn backward_filter(s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let g = Planes::new(s.h, s.w);
    let (x_img, hw) = (s.c_in * s.h * s.w, s.h * s.w);
    assert_eq!(x.len(), s.n * x_img, "direct conv: x length");
    assert_eq!(dy.len(), s.n * s.c_out * hw, "direct conv: dy length");
    assert_eq!(dw.len(), s.c_out * s.c_in * 9, "direct conv: dw length");
    assert!(s.c_out % TILE_CO == 0 && s.w % 8 == 0 && avx2_fma(), "direct conv: not applicable");
    let xp_img = s.c_in * g.plane;
    // Images per f32 partial sum: about 128 terms per lane (1 image at 32×32, 16 at 8×8), then f64.
    let per_flush = (1024 / (s.h * s.w)).max(1);
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.resize(scratch.len().max(s.n * xp_img), 0.0);
        let xp = &mut scratch[..s.n * xp_img];
        if s.n > 0 {
            xp.par_chunks_mut(xp_img).zip(x.par_chunks(x_img)).for_each(|(d, src)| g.pad(src, d));
        }
        let xp = &*xp;
        dw.par_chunks_mut(TILE_CO * s.c_in * 9).enumerate().for_each(|(blk, dw)| {
            let mut lanes = vec![[0.0f64; 8]; dw.len()];
            for first in (0..s.n).step_by(per_flush) {
                let images = per_flush.min(s.n - first);
                let xp = &xp[first * xp_img..][..images * xp_img];
                let dy = &dy[(first * s.c_out + blk * TILE_CO) * hw..][..((images - 1) * s.c_out + TILE_CO) * hw];
                for ci in 0..s.c_in {
                    for ki in 0..3 {
                        let rows = Rows { dy, dy_image: s.c_out * hw, x: &xp[ci * g.plane + ki * g.wp..], x_image: xp_img, images };
                        // SAFETY: AVX2 and FMA were detected and W % 8 == 0 checked above; image i
                        // of `rows` reads dy[i·c_out·hw + r·hw + 0..hw] for r < 4, inside `dy`'s
                        // (images − 1)·c_out·hw + 4·hw, and x[i·xp_img + oh·wp + kj + 0..W] for
                        // oh < H, kj < 3, at most i·xp_img + (H + 2)·wp − 1 − ki·wp − ci·plane,
                        // inside `xp` past ci·plane + ki·wp.
                        let sums = unsafe { filter_rows(&rows, &g) };
                        for (r, taps) in sums.iter().enumerate() {
                            for (kj, sum) in taps.iter().enumerate() {
                                let lane = &mut lanes[(r * s.c_in + ci) * 9 + ki * 3 + kj];
                                for (l, &v) in lane.iter_mut().zip(sum) {
                                    *l += f64::from(v);
                                }
                            }
                        }
                    }
                }
            }
            for (d, l) in dw.iter_mut().zip(&lanes) {
                *d = (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) as f32;
            }
        });
    });
}

/// One kernel row's inputs to the filter gradient of 4 output channels over `images` images:
/// dy of image i, channel r at `dy[i·dy_image + r·H·W..]`, and the padded input plane, from the
/// kernel row's offset, at `x[i·x_image..]`.
struct Rows<'a> {
    dy: &'a [f32],
    dy_image: usize,
    x: &'a [f32],
    x_image: usize,
    images: usize,
}

/// For r < 4 and kj < 3, the 8 lane sums of Σ_i Σ_(oh, ow) dy_i[r][oh][ow] · x_i[oh·wp + ow + kj],
/// ow in steps of 8 (W a multiple of 8): one kernel row of the filter gradient of 4 output channels
/// over `rows.images` images. 12 accumulators; per 8 outputs 3 + 4 loads and 12 FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn filter_rows(rows: &Rows, g: &Planes) -> [[[f32; 8]; 3]; TILE_CO] {
    let hw = g.h * g.w;
    let n = rows.images;
    debug_assert!(n > 0 && g.w % 8 == 0);
    debug_assert!(rows.dy.len() >= (n - 1) * rows.dy_image + TILE_CO * hw);
    debug_assert!(rows.x.len() >= (n - 1) * rows.x_image + (g.h - 1) * g.wp + g.w + 2);
    let mut acc = [[_mm256_setzero_ps(); 3]; TILE_CO];
    for i in 0..n {
        let (d, x) = (rows.dy.as_ptr().add(i * rows.dy_image), rows.x.as_ptr().add(i * rows.x_image));
        for oh in 0..g.h {
            for ow in (0..g.w).step_by(8) {
                let xs = x.add(oh * g.wp + ow);
                let v = [_mm256_loadu_ps(xs), _mm256_loadu_ps(xs.add(1)), _mm256_loadu_ps(xs.add(2))];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let dv = _mm256_loadu_ps(d.add(r * hw + oh * g.w + ow));
                    for kj in 0..3 {
                        acc[kj] = _mm256_fmadd_ps(dv, v[kj], acc[kj]);
                    }
                }
            }
        }
    }
    let mut out = [[[0.0f32; 8]; 3]; TILE_CO];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, &a) in o.iter_mut().zip(a) {
            _mm256_storeu_ps(o.as_mut_ptr(), a);
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn filter_rows(_: &Rows, _: &Planes) -> [[[f32; 8]; 3]; TILE_CO] {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}
