//! The stride-1 forward-type pass with AVX-512 on planes whose width is a multiple of 16, read in
//! place: a tile is 16 output channels × 16 consecutive pixels of one output row (the pixel-lane
//! tiles of [`super`], without the padded copy). Tap (ki, kj) of the tile at row r, columns
//! c0..c0 + 16 reads input row r + ki − 1, columns c0 + kj − 1.., with a masked load that zeroes
//! the one lane that falls left of the plane (kj = 0, c0 = 0) or right of it (kj = 2, last tile);
//! the kernel rows that fall above or below the plane (ki = 0 on row 0, ki = 2 on the last) are
//! skipped. A zeroed lane contributes w·0, and a skipped row's products are all ±0, which leave a
//! sum that starts at +0 unchanged, so every output is the FMA chain of the padded tiles, with
//! their bits (for finite weights), and no copy of the input is made (the padded copy wrote
//! c_in·(H + 2)·(W + 2) values an image). Per (ci, ki) a tile does 3 loads and 48 FMAs with the
//! weights broadcast from memory.

use super::Simd;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels (one register each) and pixels (its lanes) per tile.
const LANES: usize = 16;

/// Whether the pass applies: AVX-512, rows of whole tiles, whole tiles of output channels.
pub(super) fn applies(isa: Simd, w: usize, c_dst: usize) -> bool {
    isa == Simd::Avx512 && w > 0 && w % LANES == 0 && c_dst > 0 && c_dst % LANES == 0
}

/// The pass over a batch: `c_src` channels of H × W planes in `src` into `c_dst` channels of
/// `dst`, with the weight of (dst channel, src channel, tap) from `weight`, in parallel over images.
pub(super) fn pass(
    isa: Simd,
    (n, h, w): (usize, usize, usize),
    c_src: usize,
    c_dst: usize,
    weight: impl Fn(usize, usize, usize) -> f32,
    src: &[f32],
    dst: &mut [f32],
) {
    let hw = h * w;
    assert!(applies(isa, w, c_dst) && super::supported(isa), "direct conv: row tiles need AVX-512");
    assert_eq!(src.len(), n * c_src * hw, "direct conv: input length");
    assert_eq!(dst.len(), n * c_dst * hw, "direct conv: output length");
    if n == 0 || hw == 0 || c_src == 0 {
        // Empty sums: zero, as from im2col + GEMM.
        dst.fill(0.0);
        return;
    }
    let wt = super::blocked_weights((c_dst, c_src, 9), LANES, weight);
    dst.par_chunks_mut(c_dst * hw).zip(src.par_chunks(c_src * hw)).for_each(|(y, x)| {
        for (b, wt) in wt.chunks_exact(c_src * 9 * LANES).enumerate() {
            for r in 0..h {
                // The kernel rows that stay inside the plane.
                let kernel_rows = usize::from(r == 0)..3 - usize::from(r + 1 == h);
                for c0 in (0..w).step_by(LANES) {
                    let tile = Tile { x, c_in: c_src, h, w, r, c0, kernel_rows: kernel_rows.clone() };
                    // SAFETY: AVX-512F was detected (asserted above). The tile reads rows
                    // r + ki − 1 ∈ [0, h) of each input plane, columns c0 − 1..c0 + 17 of which
                    // the masks keep only those in [0, w), so inside x (c_in·hw); wt holds
                    // c_in·9·16; it writes y[(16·b + k)·hw + r·w + c0 ..][..16] for k < 16,
                    // inside y (c_dst·hw).
                    unsafe { row_tile(tile, wt, &mut y[b * LANES * hw + r * w + c0..], hw) };
                }
            }
        }
    });
}

/// What a tile reads: `c_in` H × W input planes `x`, its output row `r` and first column `c0`, and
/// the kernel rows that stay inside the plane.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 kernel only
struct Tile<'a> {
    x: &'a [f32],
    c_in: usize,
    h: usize,
    w: usize,
    r: usize,
    c0: usize,
    kernel_rows: std::ops::Range<usize>,
}

/// dst[k·ld..][..16] = Σ_ci Σ_(ki, kj) wt[ci][3·ki + kj][k] · x[ci][r + ki − 1][c0 + kj − 1 ..][..16]
/// over the kernel rows inside the plane, the lanes outside it read as 0, for k < 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_tile(t: Tile, wt: &[f32], dst: &mut [f32], ld: usize) {
    let Tile { x, c_in, h, w, r, c0, kernel_rows } = t;
    debug_assert!(x.len() == c_in * h * w && wt.len() >= c_in * 9 * LANES && dst.len() >= 15 * ld + LANES);
    debug_assert!(kernel_rows.start <= 1 && kernel_rows.end >= 2 && r < h && c0 + LANES <= w);
    // Lane masks of the three kernel columns: column −1 (kj = 0 in the first tile) and column w
    // (kj = 2 in the last) are outside the plane.
    let masks: [__mmask16; 3] =
        [if c0 == 0 { 0xFFFE } else { 0xFFFF }, 0xFFFF, if c0 + LANES == w { 0x7FFF } else { 0xFFFF }];
    let mut acc = [_mm512_setzero_ps(); LANES];
    let (xp, wp) = (x.as_ptr(), wt.as_ptr());
    for ci in 0..c_in {
        for ki in kernel_rows.clone() {
            // Input row r + ki − 1, column c0 − 1 (kj = 0). Wrapping: the masked lanes may lie
            // one value outside the planes, and are never read.
            let row = xp.wrapping_add(ci * h * w + (r + ki) * w + c0).wrapping_sub(w + 1);
            for (kj, &mask) in masks.iter().enumerate() {
                let v = _mm512_maskz_loadu_ps(mask, row.wrapping_add(kj));
                let wk = wp.add(((ci * 3 + ki) * 3 + kj) * LANES);
                for (k, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*wk.add(k)), v, *acc);
                }
            }
        }
    }
    let y = dst.as_mut_ptr();
    for (k, &a) in acc.iter().enumerate() {
        _mm512_storeu_ps(y.add(k * ld), a);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_tile(_: Tile, _: &[f32], _: &mut [f32], _: usize) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}
