//! The stride-2 layout of the direct 3×3 pad-1 convolutions: each padded input plane split into
//! its four phases (even and odd rows × even and odd columns), so that every tap is again one
//! constant offset and the kernels and drivers of [`super`] run unchanged.
//!
//! With OH = ⌈H/2⌉ × OW = ⌈W/2⌉ outputs, xp the zero-padded input (xp[i][j] = x[i−1][j−1]) and
//! rows of length we = OW + 1 (output (oh, ow) at q = oh·we + ow, [`Grid`]):
//!
//! - **forward**: y[co][oh][ow] = Σ_ci Σ_(ki,kj) w[co][ci][ki][kj] · xp[ci][2oh + ki][2ow + kj]. Each
//!   image's planes are split once into X_ab[i·we + m] = xp[2i + a][2m + b] (a, b ∈ {0, 1}, i ≤ OH,
//!   m ≤ OW), each phase `plen` long; tap (ki, kj) reads X_(ki mod 2, kj mod 2) at
//!   (oh + ⌊ki/2⌋, ow + ⌊kj/2⌋), i.e. at q + off(ki, kj) with
//!   off(ki, kj) = (2·(ki mod 2) + kj mod 2)·plen + ⌊ki/2⌋·we + ⌊kj/2⌋. The split reads c_in·H·W and
//!   writes c_in·4·plen ≈ c_in·(H + 2)·(W + 2) elements (as the stride-1 padding does); the tiles
//!   compute q for OH·we rounded up to 16 (80 q for the 64 outputs at OW = 8, where they go through
//!   the q layout; 16 per row, stored straight, at OW = 16, 32).
//! - **backward data**: dx[ci][ih][iw] = Σ_co Σ w[co][ci][ki][kj] · dy[co][oh][ow] over the
//!   (ki, kj, oh, ow) with 2oh + ki = ih + 1 and 2ow + kj = iw + 1. For ih = 2t only ki = 1 (oh = t)
//!   contributes, for ih = 2t + 1 ki = 0 (oh = t + 1) and ki = 2 (oh = t); columns alike. So each
//!   phase (ih mod 2, iw mod 2) of dx is a stride-1 convolution of dy with 1, 2, 2 or 4 taps, at
//!   offsets du·we + dv (du = 1 for ki = 0, else 0) into dy padded with a zero row and column at the
//!   bottom and right: four [`Part`]s over the OH × OW grid (9 taps in all, as the forward), one FMA
//!   chain per output over (co, ki, kj) in order, then interleaved into dx (c_in·H·W elements moved).
//! - **backward filter**: dw[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dy[co][oh][ow] · X(ki, kj) with
//!   X(ki, kj) = X_(ki mod 2, kj mod 2) at q + ⌊ki/2⌋·we + ⌊kj/2⌋: [`FilterPass`] with the forward's
//!   split and offsets, over the OH × OW output pixels (c_in·4·plen elements of x an image).

use super::{FilterInput, FilterPass, Grid, Part, Pass, Simd, Taps};
use crate::backend::ConvShape;

/// Whether a 3×3 stride-2 pad-1 conv fits the direct path: at least 2 output columns and 4 output
/// pixels. The tiles compute one padding column a row and round q up to 16, which at 8 columns adds
/// 1/8 to the work and at the tiny nets' 4 × 4 and 2 × 2 outputs (20 q in 32, 6 in 16) more than
/// doubles it, and is still about twice as fast as im2col + GEMM there (docs/PERFORMANCE.md).
pub(super) fn fits(s: &ConvShape) -> bool {
    s.out_w() >= 2 && s.out_h() * s.out_w() >= 4
}

/// The phase geometry of a stride-2 conv.
#[derive(Clone, Copy)]
struct Phases {
    h: usize,
    w: usize,
    /// The OH × OW outputs, rows of length we = OW + 1.
    grid: Grid,
    /// Length of one phase plane: q + we + 1, so that every tap of every computed q is in it.
    plen: usize,
}

/// The kernel rows (ki, du) that reach the input rows of each parity: an even row ih = 2t gets
/// ki = 1 from output row t; an odd row ih = 2t + 1 gets ki = 0 from output row t + 1 (du = 1) and
/// ki = 2 from output row t. Columns alike, with (kj, dv).
const TAPS_BY_PARITY: [&[(usize, usize)]; 2] = [&[(1, 0)], &[(0, 1), (2, 0)]];

impl Phases {
    fn new(s: &ConvShape) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let grid = Grid::new(oh, ow, ow + 1);
        Phases { h: s.h, w: s.w, grid, plen: grid.q + grid.ld + 1 }
    }

    /// Elements per input channel: the four phase planes.
    fn chan(&self) -> usize {
        4 * self.plen
    }

    /// off(ki, kj) = (2·(ki mod 2) + kj mod 2)·plen + ⌊ki/2⌋·we + ⌊kj/2⌋: a row part in ki and a
    /// column part in kj.
    fn taps(&self) -> Taps {
        let (plen, we) = (self.plen, self.grid.ld);
        Taps {
            rows: (0..3).map(|ki| 2 * (ki % 2) * plen + ki / 2 * we).collect(),
            cols: (0..3).map(|kj| kj % 2 * plen + kj / 2).collect(),
        }
    }

    /// The four phases of each zero-padded H × W plane of `src` into `dst` (4·plen per channel):
    /// X_ab[i·we + m] = xp[2i + a][2m + b] = x[2i + a − 1][2m + b − 1], zero outside x. Input row r
    /// is padded row r + 1: its columns 2m go to X_(a,1)[m], its columns 2m + 1 to X_(a,0)[m + 1].
    /// Reads c_in·H·W and writes c_in·4·plen elements (zeros first).
    fn split(&self, src: &[f32], dst: &mut [f32]) {
        let (we, w) = (self.grid.ld, self.w);
        for (x, d) in src.chunks_exact(self.h * w).zip(dst.chunks_exact_mut(self.chan())) {
            d.fill(0.0);
            let (top, bottom) = d.split_at_mut(2 * self.plen);
            let (x00, x01) = top.split_at_mut(self.plen);
            let (x10, x11) = bottom.split_at_mut(self.plen);
            for (r, row) in x.chunks_exact(w).enumerate() {
                // Padded row r + 1 = 2i + a.
                let (i, a) = (r.div_ceil(2), (r + 1) % 2);
                let (b0, b1) = if a == 0 { (&mut *x00, &mut *x01) } else { (&mut *x10, &mut *x11) };
                let (b0, b1) = (&mut b0[i * we + 1..][..w / 2], &mut b1[i * we..][..w.div_ceil(2)]);
                for ((pair, d1), d0) in row.chunks_exact(2).zip(b1.iter_mut()).zip(b0.iter_mut()) {
                    (*d1, *d0) = (pair[0], pair[1]);
                }
                if w % 2 == 1 {
                    b1[w / 2] = row[w - 1];
                }
            }
        }
    }

    /// dy's OH × OW planes of `src` into planes of length plen with rows of length we (zero after
    /// each row and after the last).
    fn pad_dy(&self, src: &[f32], dst: &mut [f32]) {
        let g = self.grid;
        for (s, d) in src.chunks_exact(g.pixels()).zip(dst.chunks_exact_mut(self.plen)) {
            d.fill(0.0);
            for (r, row) in s.chunks_exact(g.cols).enumerate() {
                d[r * g.ld..][..g.cols].copy_from_slice(row);
            }
        }
    }

    /// dx's H × W planes from the four phase outputs in `src`, [phase][ci][q] with phase =
    /// 2·(ih mod 2) + iw mod 2: dx[ci][ih][iw] = src[phase][ci][⌊ih/2⌋·we + ⌊iw/2⌋].
    fn interleave(&self, src: &[f32], dst: &mut [f32]) {
        let (q, we, hw) = (self.grid.q, self.grid.ld, self.h * self.w);
        let c = dst.len() / hw;
        let phase = |phase: usize, ci: usize, t: usize| &src[(phase * c + ci) * q + t * we..][..we];
        for (ci, d) in dst.chunks_exact_mut(hw).enumerate() {
            for (ih, row) in d.chunks_exact_mut(self.w).enumerate() {
                let (a, t) = (ih % 2, ih / 2);
                let (even, odd) = (phase(2 * a, ci, t), phase(2 * a + 1, ci, t));
                for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                    (pair[0], pair[1]) = (e, o);
                }
                if self.w % 2 == 1 {
                    row[self.w - 1] = even[self.w / 2];
                }
            }
        }
    }
}

/// y = conv(x, w) at stride 2, overwritten: [`Pass`] over the split input.
pub(super) fn forward(isa: Simd, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let p = Phases::new(s);
    let part = Part::new(isa, s.c_out, s.c_in, p.taps(), |co, ci, t| w[(co * s.c_in + ci) * 9 + t]);
    Pass {
        isa,
        n: s.n,
        grid: p.grid,
        c_in: s.c_in,
        chan: p.chan(),
        c_out: s.c_out,
        in_img: s.c_in * s.h * s.w,
        out_img: s.c_out * p.grid.pixels(),
        prepare: &|src, dst| p.split(src, dst),
        parts: &[part],
        finish: None,
    }
    .run(x, y);
}

/// dx = conv_transpose(dy, w) at stride 2, overwritten: one [`Part`] per phase of dx over padded
/// dy, interleaved.
pub(super) fn backward_data(isa: Simd, s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let p = Phases::new(s);
    let we = p.grid.ld;
    let parts: Vec<Part> = (0..4)
        .map(|phase| {
            let (rows, cols) = (TAPS_BY_PARITY[phase / 2], TAPS_BY_PARITY[phase % 2]);
            let taps = Taps {
                rows: rows.iter().map(|&(_, du)| du * we).collect(),
                cols: cols.iter().map(|&(_, dv)| dv).collect(),
            };
            // Tap t = (r, c) is kernel tap (rows[r].0, cols[c].0).
            let tap = |t: usize| rows[t / cols.len()].0 * 3 + cols[t % cols.len()].0;
            Part::new(isa, s.c_in, s.c_out, taps, |ci, co, t| w[(co * s.c_in + ci) * 9 + tap(t)])
        })
        .collect();
    Pass {
        isa,
        n: s.n,
        grid: p.grid,
        c_in: s.c_out,
        chan: p.plen,
        c_out: s.c_in,
        in_img: s.c_out * p.grid.pixels(),
        out_img: s.c_in * s.h * s.w,
        prepare: &|src, dst| p.pad_dy(src, dst),
        parts: &parts,
        finish: Some(&|yq, dx| p.interleave(yq, dx)),
    }
    .run(dy, dx);
}

/// dw = Σ_n dy_n ⋆ x_n at stride 2, overwritten: [`FilterPass`] over the split input.
pub(super) fn backward_filter(isa: Simd, s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let p = Phases::new(s);
    let input = FilterInput::Prepared {
        chan: p.chan(),
        prepare: &|src, dst| p.split(src, dst),
        offs: p.taps().table(),
    };
    FilterPass { isa, s, grid: p.grid, input }.run(x, dy, dw);
}
