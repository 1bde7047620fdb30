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
//! - **backward filter**: dw[co][ci][ki][kj] = Σ_n Σ_(oh,ow) dy[co][oh][ow] · X_(ki mod 2, kj mod 2)[q + ⌊ki/2⌋·we + ⌊kj/2⌋]:
//!   [`FilterPass`] with the forward's split and offsets, over the OH × OW output pixels.

use super::{FilterPass, Grid, Part, Pass, Simd};
use crate::backend::ConvShape;

/// Whether a 3×3 stride-2 pad-1 conv fits the direct path: at least 8 output columns, so that the
/// padding column the tiles compute adds at most 1/8 to the work (the tiny nets' 4 output columns
/// would add 1/4 and round 20 q up to 32: they stay on im2col + GEMM).
pub(super) fn fits(s: &ConvShape) -> bool {
    s.out_w() >= 8
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

    /// off(ki, kj) = (2·(ki mod 2) + kj mod 2)·plen + ⌊ki/2⌋·we + ⌊kj/2⌋, in (ki, kj) order.
    fn offsets(&self) -> [usize; 9] {
        std::array::from_fn(|t| {
            let (ki, kj) = (t / 3, t % 3);
            (2 * (ki % 2) + kj % 2) * self.plen + ki / 2 * self.grid.ld + kj / 2
        })
    }

    /// The four phases of each zero-padded H × W plane of `src` into `dst` (4·plen per channel):
    /// X_ab[i·we + m] = x[2i + a − 1][2m + b − 1], zero outside x.
    fn split(&self, src: &[f32], dst: &mut [f32]) {
        let we = self.grid.ld;
        for (x, d) in src.chunks_exact(self.h * self.w).zip(dst.chunks_exact_mut(self.chan())) {
            d.fill(0.0);
            for (phase, d) in d.chunks_exact_mut(self.plen).enumerate() {
                let (a, b) = (phase / 2, phase % 2);
                // Rows i ≥ 1 − a with 2i + a − 1 < H; columns m ≥ 1 − b, reading x columns
                // 1 − b, 3 − b, … (≤ OW of them, so they stay in the row of we).
                for i in 1 - a..=self.grid.rows {
                    let Some(row) = x.chunks_exact(self.w).nth(2 * i + a - 1) else { break };
                    for (d, &v) in d[i * we + 1 - b..].iter_mut().zip(row[1 - b..].iter().step_by(2)) {
                        *d = v;
                    }
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
                for ((pair, &e), &o) in row.chunks_mut(2).zip(even).zip(odd) {
                    pair[0] = e;
                    if let Some(d) = pair.get_mut(1) {
                        *d = o;
                    }
                }
            }
        }
    }
}

/// y = conv(x, w) at stride 2, overwritten: [`Pass`] over the split input.
pub(super) fn forward(isa: Simd, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let p = Phases::new(s);
    let part =
        Part::new(isa, s.c_out, s.c_in, p.offsets().to_vec(), |co, ci, t| w[(co * s.c_in + ci) * 9 + t]);
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
            // (tap, offset) in (ki, kj) order.
            let taps: Vec<(usize, usize)> = TAPS_BY_PARITY[phase / 2]
                .iter()
                .flat_map(|&(ki, du)| {
                    TAPS_BY_PARITY[phase % 2].iter().map(move |&(kj, dv)| (ki * 3 + kj, du * we + dv))
                })
                .collect();
            let offs = taps.iter().map(|&(_, off)| off).collect();
            Part::new(isa, s.c_in, s.c_out, offs, |ci, co, t| w[(co * s.c_in + ci) * 9 + taps[t].0])
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
    FilterPass {
        isa,
        s,
        grid: p.grid,
        chan: p.chan(),
        prepare: &|src, dst| p.split(src, dst),
        offs: p.offsets(),
    }
    .run(x, dy, dw);
}
