//! Transposition of a row-major matrix, dst[c][r] = src[r][c], for the direct convolutions'
//! channel-innermost layouts (dy for the filter gradient, the channel-lane tiles' outputs). Whole
//! 16 × 16 blocks move through registers with AVX-512F: 16 vector loads, 64 shuffles and 16 vector
//! stores per 1 KiB block, where element by element would take 256 loads and 256 stores (`perf`
//! put the element-wise copies at 2–3% of a PreResNet-20 step). Without AVX-512 the blocks go
//! through a 16 × 16 tile, and the ragged edges element by element. Values are only moved, so
//! every path gives the same bits.

use super::direct3x3::{self, Simd};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows and columns of a block.
const BLOCK: usize = 16;

/// dst[c·rows + r] = src[r·cols + c] for r < rows, c < cols.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_with(direct3x3::simd() == Some(Simd::Avx512), src, rows, cols, dst)
}

/// [`transpose`], with the AVX-512 blocks or without (`avx512` needs a CPU that has it).
fn transpose_with(avx512: bool, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() == rows * cols && dst.len() == rows * cols, "transpose: lengths");
    assert!(!avx512 || direct3x3::supported(Simd::Avx512), "transpose: this CPU lacks AVX-512");
    let (full_rows, full_cols) = (rows / BLOCK * BLOCK, cols / BLOCK * BLOCK);
    for r0 in (0..full_rows).step_by(BLOCK) {
        for c0 in (0..full_cols).step_by(BLOCK) {
            if avx512 {
                // SAFETY: AVX-512F was detected; the block's rows r0..r0 + 16 < rows and columns
                // c0..c0 + 16 < cols are inside src (rows·cols), and its image inside dst.
                unsafe {
                    block512(
                        src.as_ptr().add(r0 * cols + c0),
                        cols,
                        dst.as_mut_ptr().add(c0 * rows + r0),
                        rows,
                    )
                };
            } else {
                let mut tile = [[0.0f32; BLOCK]; BLOCK];
                for (r, row) in tile.iter_mut().enumerate() {
                    row.copy_from_slice(&src[(r0 + r) * cols + c0..][..BLOCK]);
                }
                for c in 0..BLOCK {
                    for (r, row) in tile.iter().enumerate() {
                        dst[(c0 + c) * rows + r0 + r] = row[c];
                    }
                }
            }
        }
    }
    // The ragged edges: the last columns of the whole row blocks, then the last rows (all of a
    // 4-, 8- or 12-row matrix), a column at a time so that dst is written in order.
    for c in full_cols..cols {
        for r in 0..full_rows {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    for c in 0..cols {
        for r in full_rows..rows {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// One 16 × 16 block: dst[c·dst_ld + r] = src[r·src_ld + c] for r, c < 16, in registers
/// (pairs of rows interleaved, then pairs of pairs, then 128-bit lanes twice).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block512(src: *const f32, src_ld: usize, dst: *mut f32, dst_ld: usize) {
    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * src_ld)));
    // t[2k] and t[2k + 1]: rows 2k and 2k + 1 interleaved, per 128-bit lane.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4k + j]: 4 rows' element j of each 128-bit lane (j = 0..3).
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (k, j) = (i / 4, i % 4);
        let (a, b) = (t[4 * k + j / 2], t[4 * k + 2 + j / 2]);
        if j % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    // v: 128-bit lanes 0, 2 (0x88) or 1, 3 (0xDD) of rows 4k..4k + 3 and 4k + 4..4k + 7.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let (half, j) = (i / 8, i % 8);
        let (a, b) = (u[8 * half + j % 4], u[8 * half + 4 + j % 4]);
        if j < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    for i in 0..16 {
        let (a, b) = (v[i % 8], v[8 + i % 8]);
        let col = if i < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) };
        _mm512_storeu_ps(dst.add(i * dst_ld), col);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block512(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("AVX-512 is detected on x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::transpose_with;
    use crate::backend::cpu::direct3x3::{self, Simd};

    /// Every element lands at its transposed place, for whole blocks, ragged edges on either side
    /// and matrices narrower than a block, with the AVX-512 blocks (where this CPU has them) and
    /// without.
    #[test]
    fn transpose_moves_each_element_to_its_transposed_place() {
        for avx512 in [false, direct3x3::supported(Simd::Avx512)] {
            transposes(avx512);
        }
    }

    fn transposes(avx512: bool) {
        for (rows, cols) in
            [(16, 16), (16, 64), (8, 64), (32, 48), (17, 33), (64, 16), (3, 5), (16, 1), (1, 16), (0, 7)]
        {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_with(avx512, &src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}×{cols} at ({r}, {c}), AVX-512 {avx512}"
                    );
                }
            }
        }
    }
}
