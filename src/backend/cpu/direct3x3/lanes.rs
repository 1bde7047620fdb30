//! The stride-1 and stride-2 forward-type passes with AVX-512 and the output channels in the
//! vector lanes (as oneDNN's direct convolutions do): a tile is `NV` vectors of 16 output channels
//! × `NP` output pixels, each input value is broadcast, and every pixel's taps are enumerated, so
//! the taps that would read the zero padding are skipped and x is read in place: no padded or
//! split copy. Used for the stride-1 forward and backward data on widths that [`super::rows`] does
//! not take (8×8, 4×4, 2×2) and for the stride-2 forward, into multiples of 32 channels.
//!
//! y[co][o] = Σ_ci Σ_(ki,kj) valid w[co][ci][ki][kj] · x[ci][i(o) + (ki − 1)·W + kj − 1], with i(o)
//! the input pixel at the kernel's centre (o itself at stride 1), one FMA chain per output over
//! (ci, ki, kj) in order from +0. The skipped products are ±0, and adding ±0 leaves a sum that
//! starts at +0 unchanged (it never becomes −0), so each output has the bits of the pixel-lane
//! kernels in [`super`] (for finite weights), which the AVX2-vs-AVX-512 test checks. At stride 1,
//! of the 9·H·W products of a plane, 6·(H + W) − 4 are skipped: 16% at 8×8.
//!
//! Per (ci, tap) a tile loads NV weight vectors, broadcasts NP inputs and does NV·NP FMAs (24 in
//! the widest tiles: 4 × 6 and 2 × 12, for 64 and 32 channels). The tiles write one image's
//! outputs with the channels innermost, yc[o][c_out], which are then transposed into y's planes
//! ([`transpose`]: c_out·OH·OW values moved twice more; 4 K a 64-channel 8×8 image against 147 K
//! FMAs).

use super::Simd;
use crate::backend::cpu::transpose::transpose;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes of an AVX-512 vector: output channels per vector.
const LANES: usize = 16;

/// Whether the pass applies: AVX-512 and pairs of whole vectors of output channels. With one
/// vector (16 channels) the pixel-lane tiles were faster at 32×32 (`conv_timing`: 3.10 against
/// 2.86 ms forward), so those keep them.
pub(super) fn applies(isa: Simd, c_dst: usize) -> bool {
    isa == Simd::Avx512 && c_dst > 0 && c_dst % (2 * LANES) == 0
}

/// Vectors of output channels per tile: 4 or 2, the most that divides c_dst.
fn vectors(c_dst: usize) -> usize {
    [4, 2].into_iter().find(|v| c_dst % (v * LANES) == 0).expect("pairs of vectors of channels")
}

/// The most pixels a tile of `nv` vectors holds: NV·NP ≤ 24 accumulators of the 32 registers.
fn most_pixels(nv: usize) -> usize {
    if nv == 4 {
        6
    } else {
        12
    }
}

/// Output pixels computed together: `np` output pixels `first + p·step` (step 1 along a row, OW
/// down a column) whose input pixels (the kernel's centre) are `x_first + p·x_step`, all with the
/// same valid taps `taps[..]`: (tap index ki·3 + kj, input offset (ki − 1)·W + kj − 1).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Tile {
    pub(super) first: usize,
    pub(super) step: usize,
    pub(super) x_first: usize,
    pub(super) x_step: usize,
    pub(super) np: usize,
    pub(super) taps: Vec<(usize, isize)>,
}

/// A 3×3 pad-1 convolution's batch: n images of H × W inputs, OH × OW outputs at `stride` (1 or
/// 2); output (o, p) centres the kernel on input (stride·o, stride·p).
#[derive(Clone, Copy, Debug)]
pub(super) struct Batch {
    pub(super) n: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) stride: usize,
}

impl Batch {
    fn out(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }
}

/// The tiles of the output plane, every output pixel in exactly one, with at most `most` pixels a
/// tile: the plane is cut into regions of equal valid taps (at stride 1: first row, middle rows,
/// last row × first column, middle columns, last column); regions more than one column wide are
/// tiled along their rows, the others down their column.
pub(super) fn tiles(p: Batch, most: usize) -> Vec<Tile> {
    let (oh, ow) = p.out();
    // Runs of output indices along one dimension (n outputs over n_in inputs) whose kernel rows
    // (or columns) inside the input are the same: (range, those kernel rows, a bit each).
    let segments = |n: usize, n_in: usize| -> Vec<(std::ops::Range<usize>, u8)> {
        let inside = |o: usize| -> u8 {
            (0..3).filter(|&k| (1..=n_in).contains(&(p.stride * o + k))).fold(0, |m, k| m | 1 << k)
        };
        let mut runs: Vec<(std::ops::Range<usize>, u8)> = Vec::new();
        for o in 0..n {
            match runs.last_mut() {
                Some((range, mask)) if *mask == inside(o) => range.end = o + 1,
                _ => runs.push((o..o + 1, inside(o))),
            }
        }
        runs
    };
    let w = p.w as isize;
    let mut out = Vec::new();
    for (rows, row_mask) in segments(oh, p.h) {
        for (cols, col_mask) in segments(ow, p.w) {
            let taps: Vec<(usize, isize)> = (0..9)
                .filter(|t| (row_mask >> (t / 3)) & 1 == 1 && (col_mask >> (t % 3)) & 1 == 1)
                .map(|t| (t, (t / 3) as isize * w - w + (t % 3) as isize - 1))
                .collect();
            // `len` pixels from output (r, c), along the row or down the column.
            let mut push = |(r, c): (usize, usize), along_row: bool, len: usize| {
                let (step, x_step) = if along_row { (1, p.stride) } else { (ow, p.stride * p.w) };
                let (first, x_first) = (r * ow + c, p.stride * (r * p.w + c));
                // Chunks as equal as they can be: 14 → 7 + 7, 30 → 10 + 10 + 10.
                let n = len.div_ceil(most);
                let mut start = 0;
                for k in 0..n {
                    let np = len / n + usize::from(k < len % n);
                    out.push(Tile {
                        first: first + start * step,
                        step,
                        x_first: x_first + start * x_step,
                        x_step,
                        np,
                        taps: taps.clone(),
                    });
                    start += np;
                }
            };
            if cols.len() > 1 {
                for r in rows.clone() {
                    push((r, cols.start), true, cols.len());
                }
            } else {
                push((rows.start, cols.start), false, rows.len());
            }
        }
    }
    out
}

/// The pass over `batch`: `c_src` channels of H × W planes in `src` into `c_dst` channels of
/// OH × OW planes in `dst`, with the weight of (dst channel, src channel, tap) from `weight`, in
/// parallel over images.
pub(super) fn pass(
    isa: Simd,
    batch: Batch,
    c_src: usize,
    c_dst: usize,
    weight: impl Fn(usize, usize, usize) -> f32,
    src: &[f32],
    dst: &mut [f32],
) {
    let (n, hw, (oh, ow)) = (batch.n, batch.h * batch.w, batch.out());
    let ohw = oh * ow;
    assert!(applies(isa, c_dst) && super::supported(isa), "direct conv: channel lanes need AVX-512");
    assert!(batch.stride == 1 || batch.stride == 2, "direct conv: stride 1 or 2");
    assert_eq!(src.len(), n * c_src * hw, "direct conv: input length");
    assert_eq!(dst.len(), n * c_dst * ohw, "direct conv: output length");
    if n == 0 || hw == 0 || c_src == 0 {
        // Empty sums: zero, as from im2col + GEMM.
        dst.fill(0.0);
        return;
    }
    let nv = vectors(c_dst);
    let blk = nv * LANES;
    let wt = super::blocked_weights((c_dst, c_src, 9), blk, weight);
    let plan = tiles(batch, most_pixels(nv));
    dst.par_chunks_mut(c_dst * ohw).zip(src.par_chunks(c_src * hw)).for_each_init(
        || vec![0.0f32; ohw * c_dst],
        |yc, (y, x)| {
            for (b, wt) in wt.chunks_exact(c_src * 9 * blk).enumerate() {
                for tile in &plan {
                    // SAFETY: AVX-512F was detected (asserted above). The tile's input pixels
                    // x_first + p·x_step < hw, and each valid tap's offset keeps its pixel's read
                    // inside the plane (`tiles`), so the reads x[ci·hw + pixel + offset] for
                    // ci < c_src are inside x (c_src·hw); wt holds c_src·9·blk; the writes
                    // yc[(first + p·step)·c_dst + b·blk + 0..blk] are inside yc (ohw·c_dst).
                    unsafe {
                        run_tile(nv, tile, Input { x, c_in: c_src, hw }, wt, &mut yc[b * blk..], c_dst)
                    };
                }
            }
            // y's planes: y[c][p] = yc[p][c].
            transpose(yc, ohw, c_dst, y);
        },
    );
}

/// One image's input as the tiles read it: `c_in` planes of `hw` values.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 kernels only
struct Input<'a> {
    x: &'a [f32],
    c_in: usize,
    hw: usize,
}

/// One tile with the kernel for its shape: `nv` vectors of channels, the tile's pixels.
///
/// # Safety
/// AVX-512F, and the bounds of [`pass`].
#[cfg(target_arch = "x86_64")]
unsafe fn run_tile(nv: usize, t: &Tile, x: Input, wt: &[f32], yc: &mut [f32], ld: usize) {
    macro_rules! dispatch {
        ($(($v:literal, $p:literal)),*) => {
            match (nv, t.np) {
                $(($v, $p) => tile_kernel::<$v, $p>(t, x, wt, yc, ld),)*
                (v, p) => unreachable!("direct conv: no {v} × {p} tile"),
            }
        };
    }
    dispatch! {
        (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6),
        (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6), (2, 7), (2, 8), (2, 9), (2, 10), (2, 11), (2, 12)
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_tile(_: usize, _: &Tile, _: Input, _: &[f32], _: &mut [f32], _: usize) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// yc[(first + p·step)·ld + v·16 ..][..16] = Σ_ci Σ_(t, off) wt[ci][t][v·16 ..][..16] ·
/// x[ci·hw + x_first + p·x_step + off] for v < NV, p < NP: one FMA chain per output in (ci, t) order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel<const NV: usize, const NP: usize>(
    t: &Tile,
    x: Input,
    wt: &[f32],
    yc: &mut [f32],
    ld: usize,
) {
    let Input { x, c_in, hw } = x;
    debug_assert!(t.np == NP && wt.len() >= c_in * 9 * NV * LANES && x.len() >= c_in * hw);
    debug_assert!(yc.len() >= (t.first + (NP - 1) * t.step) * ld + NV * LANES);
    // acc[p][v]: pixel p's channels v·16..v·16 + 16.
    let mut acc = [[_mm512_setzero_ps(); NV]; NP];
    let (first, step, x_step) = (t.first, t.step, t.x_step);
    for ci in 0..c_in {
        let xc = x.as_ptr().add(ci * hw + t.x_first);
        let wc = wt.as_ptr().add(ci * 9 * NV * LANES);
        for &(tap, off) in &t.taps {
            let wv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(wc.add((tap * NV + v) * LANES)));
            let xt = xc.offset(off);
            for (p, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xt.add(p * x_step));
                for (a, &w) in acc.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(w, b, *a);
                }
            }
        }
    }
    let y = yc.as_mut_ptr();
    for (p, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            _mm512_storeu_ps(y.add((first + p * step) * ld + v * LANES), a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{tiles, Batch};

    /// Every output pixel is in exactly one tile, no tile is wider than asked, and a tile's taps
    /// are exactly those that stay inside the input for each of its pixels, at the right input
    /// offsets from the right input pixel: checked against the definition at strides 1 and 2 on
    /// every input up to 9 × 9 and the nets' sizes.
    #[test]
    fn tiles_cover_each_pixel_once_with_the_taps_inside_the_plane() {
        let sizes =
            (1..=9usize).flat_map(|h| (1..=9usize).map(move |w| (h, w))).chain([(16, 16), (32, 32), (1, 48)]);
        for ((h, w), stride) in sizes.flat_map(|hw| [(hw, 1usize), (hw, 2)]) {
            let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
            for most in [1, 6, 12] {
                let mut seen = vec![0; oh * ow];
                for t in tiles(Batch { n: 1, h, w, stride }, most) {
                    assert!((1..=most).contains(&t.np), "{h}×{w}: {t:?}");
                    for p in 0..t.np {
                        let pix = t.first + p * t.step;
                        seen[pix] += 1;
                        let (r, c) = (pix / ow, pix % ow);
                        assert_eq!(
                            t.x_first + p * t.x_step,
                            stride * (r * w + c),
                            "{h}×{w}: input of ({r}, {c})"
                        );
                        let inside: Vec<(usize, isize)> = (0..9)
                            .filter_map(|tap| {
                                let (ki, kj) = ((tap / 3) as isize - 1, (tap % 3) as isize - 1);
                                let (rr, cc) = ((stride * r) as isize + ki, (stride * c) as isize + kj);
                                let valid = rr >= 0 && rr < h as isize && cc >= 0 && cc < w as isize;
                                valid.then_some((tap, ki * w as isize + kj))
                            })
                            .collect();
                        assert_eq!(t.taps, inside, "{h}×{w} stride {stride}: pixel ({r}, {c})");
                    }
                }
                assert!(seen.iter().all(|&k| k == 1), "{h}×{w} stride {stride} (at most {most}): {seen:?}");
            }
        }
    }
}
