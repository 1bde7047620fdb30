//! 3×3 pad-1 convolutions of f32, stride 1 and stride 2, computed directly with AVX-512F or AVX2 +
//! FMA (the best the CPU has, detected at run time: [`simd`]; both give the same bits): no im2col
//! matrix and no GEMM packing, which for 16 channels at 32×32 cost about as much as the
//! multiply-adds themselves (docs/PERFORMANCE.md). Used where [`applies`] says so; everything else
//! goes through im2col + GEMM. This file has the kernels, the drivers and the stride-1 layout;
//! [`stride2`] has the stride-2 layout, which feeds the same kernels. With AVX-512, the stride-1
//! forward and backward-data passes read their input in place, with the taps in the padding
//! skipped and the same bits: on planes whose width is a multiple of 16 into multiples of 16
//! channels, [`rows`] (these pixel-lane tiles, with masked loads at the row ends); elsewhere into
//! multiples of 32 channels (8×8, 4×4, 2×2), [`lanes`] (the output channels in the vector lanes),
//! which also takes the stride-2 forward into multiples of 32 channels.
//!
//! **The q layout.** Each pass first copies one image's input planes into a prepared form of
//! `chan` elements per channel in which every tap (ki, kj) is one constant offset, a row part plus
//! a column part, off(ki, kj) = rows[ki] + cols[kj] ([`Taps`]): output (r, c) is computed at
//! q = r·ld + c and reads in[ci·chan + q + off(ki, kj)], so a run of consecutive q is one
//! contiguous load per tap ([`Grid`], [`Part`]). Stride 1: the input plane zero-padded to width
//! ld = W + 2 and flattened, xp[i·ld + j] = x[i−1][j−1], off(ki, kj) = ki·ld + kj. Stride 2: the
//! four phases of the padded plane ([`stride2`]). The tiles of 16 consecutive q cover each output
//! row exactly when the output width is a multiple of 16 and store straight into y; otherwise
//! (W = 8, 24, …) they run over the whole q layout, and the q with c ≥ the output width (2 a row at
//! stride 1: 25% more work at W = 8, still faster than im2col + GEMM there) are discarded. The
//! kernels take the row and column parts as const-generic arrays (1 to 3 each), so the column loop
//! unrolls as it did with ki·ld + kj written out (a flat table of 9 offsets cost the 16-channel
//! stride-1 kernels 2–7%).
//!
//! - forward: y[co][q] = Σ_ci Σ_(ki,kj) w[co][ci][ki][kj] · xp[ci][q + off(ki, kj)];
//! - backward data at stride 1: the same convolution of padded dy with
//!   w'[ci][co][ki][kj] = w[co][ci][2−ki][2−kj] (at stride 2 four such convolutions, one per phase
//!   of dx: [`stride2`]);
//! - backward filter: dw[co][ci][ki][kj] = Σ_n Σ_(r,c) dy[n][co][r][c] · xp[n][ci][r·ld + c + off(ki, kj)],
//!   vectorized over co: dy is copied with 16 channels innermost, dyb[p][16], a pixel's 16 values
//!   being two vectors, and each x value is broadcast. With AVX-512 and blocks of 16, at stride 1
//!   and 2, x is read in place instead, and the taps that would read the padding are skipped
//!   ([`filter_taps512_plain`]: same bits, 4–16% fewer products at stride 1).
//!
//! **Registers** (AVX2 has 16). A forward tile is 4 output channels × 16 consecutive q: 8
//! accumulators, and per (ci, tap) 2 loads, 4 broadcasts and 8 FMAs. (4 × 24 would give 12
//! accumulators, but then the compiler spills.) A filter tile is 16 output channels × the 3 taps of
//! one kernel row, with even and odd pixels in separate accumulators: 12 accumulators, and per 2
//! pixels 4 loads, 6 broadcasts and 12 FMAs. AVX-512 has 32 registers of 16 lanes: a forward
//! tile is 16 output channels × 16 q (16 accumulators; per (ci, tap) 1 load and 16 FMAs with the
//! weight broadcast from memory), and a filter task computes all 9 taps of a block at once (18
//! accumulators; per 2 pixels 2 loads, 18 broadcasts and 18 FMAs).
//!
//! **Summation order, fixed by the shape.** Forward and backward data sum each output in one FMA
//! chain over (ci, tap) in order, one task per image. The filter gradient cuts the batch into
//! the same [`FILTER_CHUNKS`] fixed chunks as the im2col path; a task (16 output channels, one
//! chunk) sums groups of about 1024 output pixels in f32 (even and odd pixels apart, then added),
//! adds each group's sums into f64 in image order, and the chunks' f64 partials are added in chunk
//! order. No result depends on the thread count.

use super::conv::FILTER_CHUNKS;
use super::transpose::transpose;
use crate::backend::ConvShape;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

mod lanes;
mod rows;
mod stride2;

/// Output channels per tile.
const TILE_CO: usize = 4;
/// Consecutive q per forward tile: 2 vectors of 8.
const TILE_Q: usize = 16;
/// Vectors of 8 per forward tile.
#[cfg(target_arch = "x86_64")]
const TILE_V: usize = TILE_Q / 8;

/// Whether the direct path computes this convolution when `c_out` channels come out (the input
/// channels of the conv for its backward-data pass): a 3×3 pad-1 conv, `c_out` a multiple of
/// [`TILE_CO`], on a CPU with AVX2 and FMA, and
/// - stride 1 on planes whose width is a multiple of 8 (8, 16, 32 in the CIFAR nets) or that have
///   at least 4 pixels (the tiny nets' 4×4 and 2×2, through [`Shifted`]: at 2×2 three quarters of
///   each 16-q tile are discarded, and it is still faster than im2col + GEMM, measured in
///   docs/PERFORMANCE.md);
/// - or stride 2 with at least 2 output columns and 4 output pixels ([`stride2::fits`]: 32 → 16 and
///   16 → 8 in the CIFAR nets, 16 → 8, 8 → 4 and 4 → 2 in the tiny nets).
pub(super) fn applies(s: &ConvShape, c_out: usize) -> bool {
    let shape = s.kernel == 3
        && s.pad == 1
        && match s.stride {
            1 => s.w > 0 && (s.w % 8 == 0 || s.h * s.w >= 4),
            2 => stride2::fits(s),
            _ => false,
        };
    shape && c_out > 0 && c_out % TILE_CO == 0 && simd().is_some()
}

/// Whether the direct path computes this convolution's filter gradient: as [`applies`], with the
/// output channels a multiple of 8 (blocks of [`CO_BLK`] = 16 where they divide, as in the CIFAR
/// nets, else of [`CO_BLK_NARROW`] = 8, as in the tiny nets) and an even output width (the filter kernels take pixels in
/// pairs).
pub(super) fn applies_to_filter(s: &ConvShape) -> bool {
    applies(s, s.c_out) && s.c_out % CO_BLK_NARROW == 0 && s.out_w() % 2 == 0
}

/// The instruction set the direct kernels run with. Both compute every output with the same
/// sequence of f32 operations (the same FMA chain per forward output, the same per-lane
/// accumulation per filter-gradient tap), so they give identical bits; only the tiling differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only x86-64 detects either
pub(crate) enum Simd {
    /// 256-bit AVX2 + FMA: forward tiles of 4 output channels × 16 outputs, filter gradient one
    /// kernel row at a time.
    Avx2,
    /// 512-bit AVX-512F (32 registers): forward tiles of up to 16 output channels × 16 outputs,
    /// filter gradient all 9 taps at once (18 accumulators), so every input and dy vector loaded
    /// feeds more FMAs.
    Avx512,
}

impl Simd {
    /// The name provenance records.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }
}

/// The kernels the direct path uses on this CPU, detected once: AVX-512F (with AVX2 and FMA) when
/// present, else AVX2 + FMA, else none (im2col + GEMM everywhere). `ILR_DIRECT_SIMD=avx2` caps it
/// at AVX2, for A/B measurements on one machine.
pub(crate) fn simd() -> Option<Simd> {
    static SIMD: std::sync::OnceLock<Option<Simd>> = std::sync::OnceLock::new();
    *SIMD.get_or_init(|| {
        let cap_avx2 = std::env::var("ILR_DIRECT_SIMD").is_ok_and(|v| v.eq_ignore_ascii_case("avx2"));
        detect(cap_avx2)
    })
}

#[cfg(target_arch = "x86_64")]
fn detect(cap_avx2: bool) -> Option<Simd> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        None
    } else if is_x86_feature_detected!("avx512f") && !cap_avx2 {
        Some(Simd::Avx512)
    } else {
        Some(Simd::Avx2)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_: bool) -> Option<Simd> {
    None
}

/// Whether this CPU can run `isa`'s kernels (tests compare the two on one machine).
pub(super) fn supported(isa: Simd) -> bool {
    match (simd(), isa) {
        (None, _) | (Some(Simd::Avx2), Simd::Avx512) => false,
        (Some(_), _) => true,
    }
}

/// Where a direct pass computes its outputs: output (r, c), r < rows and c < cols, at q = r·ld + c
/// of a q-layout plane of length q = rows·ld rounded up to [`TILE_Q`]; the q with c ≥ cols, and
/// those past rows·ld, are computed and discarded.
#[derive(Clone, Copy)]
struct Grid {
    rows: usize,
    cols: usize,
    ld: usize,
    q: usize,
}

impl Grid {
    fn new(rows: usize, cols: usize, ld: usize) -> Self {
        Grid { rows, cols, ld, q: (rows * ld).div_ceil(TILE_Q) * TILE_Q }
    }

    /// Output pixels per plane.
    fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The valid outputs of q-layout planes (length q) into rows × cols planes.
    fn unpad_q(&self, src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(self.q).zip(dst.chunks_exact_mut(self.pixels())) {
            for (r, row) in d.chunks_exact_mut(self.cols).enumerate() {
                row.copy_from_slice(&s[r * self.ld..][..self.cols]);
            }
        }
    }
}

/// The stride-1 layout: H × W planes zero-padded to width W + 2, outputs on an H × W grid with
/// ld = W + 2.
#[derive(Clone, Copy)]
struct Planes {
    h: usize,
    w: usize,
    grid: Grid,
    /// Length of one padded input plane: q + 2·ld + 2, so that every tap of every computed q is in it.
    plane: usize,
}

impl Planes {
    fn new(h: usize, w: usize) -> Self {
        let grid = Grid::new(h, w, w + 2);
        Planes { h, w, grid, plane: grid.q + 2 * grid.ld + 2 }
    }

    /// off(ki, kj) = ki·ld + kj.
    fn taps(&self) -> Taps {
        Taps { rows: (0..3).map(|ki| ki * self.grid.ld).collect(), cols: vec![0, 1, 2] }
    }

    /// Copies the H × W planes of `src` into zero-padded planes of length `plane` in `dst`, writing
    /// each element of `dst` once (the padding row above, then each row with its right padding and
    /// the next row's left padding, then the padding below).
    fn pad(&self, src: &[f32], dst: &mut [f32]) {
        let (w, wp) = (self.w, self.grid.ld);
        for (s, d) in src.chunks_exact(self.h * w).zip(dst.chunks_exact_mut(self.plane)) {
            d[..wp + 1].fill(0.0);
            for (i, row) in s.chunks_exact(w).enumerate() {
                let out = &mut d[(i + 1) * wp + 1..][..w + 2];
                copy_row(&mut out[..w], row);
                (out[w], out[w + 1]) = (0.0, 0.0);
            }
            d[(self.h + 1) * wp + 1..].fill(0.0);
        }
    }
}

/// The stride-1 layout of forward and backward data on planes whose width is not a multiple of
/// [`TILE_Q`] (8 and 4 in the CIFAR and tiny nets): per channel, the three column shifts of the
/// vertically padded planes, X_kj[r][c] = xpad[r][c + kj] for r < H + 2, c < W (ld = W: no padding
/// columns), so that tap (ki, kj) of output q = oh·W + ow reads X_kj[q + ki·W]. Tiles of 16
/// consecutive q then span rows and compute no padding column (the padded layout computes W + 2 q
/// per W outputs: 25% more at W = 8). Each output reads the same values in the same (ki, kj) order
/// as in [`Planes`], so the two layouts give the same bits. Copies 3·(H + 2)·W elements a channel.
#[derive(Clone, Copy)]
struct Shifted {
    h: usize,
    w: usize,
    grid: Grid,
    /// Length of one shifted plane: q + 2·W, so that every tap of every computed q is in it.
    shift: usize,
}

impl Shifted {
    fn new(h: usize, w: usize) -> Self {
        let grid = Grid::new(h, w, w);
        Shifted { h, w, grid, shift: grid.q + 2 * w }
    }

    /// Elements per prepared channel: the three shifts.
    fn chan(&self) -> usize {
        3 * self.shift
    }

    /// off(ki, kj) = ki·W + kj·shift.
    fn taps(&self) -> Taps {
        Taps {
            rows: (0..3).map(|ki| ki * self.w).collect(),
            cols: (0..3).map(|kj| kj * self.shift).collect(),
        }
    }

    /// Copies the H × W planes of `src` into their three shifts in `dst`, writing each element of
    /// `dst` once.
    fn prepare(&self, src: &[f32], dst: &mut [f32]) {
        let w = self.w;
        for (s, d) in src.chunks_exact(self.h * w).zip(dst.chunks_exact_mut(self.chan())) {
            for (kj, shifted) in d.chunks_exact_mut(self.shift).enumerate() {
                shifted[..w].fill(0.0);
                for (i, row) in s.chunks_exact(w).enumerate() {
                    let out = &mut shifted[(i + 1) * w..][..w];
                    // out[c] = row[c + kj − 1] where that is inside the row, else 0.
                    match kj {
                        0 => {
                            out[0] = 0.0;
                            copy_row(&mut out[1..], &row[..w - 1]);
                        }
                        1 => copy_row(out, row),
                        _ => {
                            out[w - 1] = 0.0;
                            copy_row(&mut out[..w - 1], &row[1..]);
                        }
                    }
                }
                shifted[(self.h + 1) * w..].fill(0.0);
            }
        }
    }
}

/// dst = src (equal lengths) in fixed blocks of 16 elements, which compile to vector moves: the
/// rows the layouts copy are 4 to 32 elements long, where a call to `memmove` per row cost more
/// than the copy (`perf`: 5% of a PreResNet-20 step).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_row: lengths");
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// Output channels per forward tile with `isa` when `c_out` come out: [`TILE_CO`] with AVX2; with
/// AVX-512 the largest of 16, 8 and 4 that divides `c_out` (one 16-lane register per channel).
fn tile_co(isa: Simd, c_out: usize) -> usize {
    match isa {
        Simd::Avx2 => TILE_CO,
        Simd::Avx512 => [16, 8].into_iter().find(|t| c_out % t == 0).unwrap_or(TILE_CO),
    }
}

/// Tap offsets with a row part and a column part: tap t = (r, c) at rows[r] + cols[c], taken in
/// (r, c) order; 1 to 3 of each (the kernel rows and columns that reach an output).
struct Taps {
    rows: Vec<usize>,
    cols: Vec<usize>,
}

impl Taps {
    fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// The largest offset.
    fn max(&self) -> usize {
        self.rows.iter().max().unwrap_or(&0) + self.cols.iter().max().unwrap_or(&0)
    }

    /// The 9 offsets of a 3 × 3 set, in (r, c) order.
    fn table(&self) -> [usize; 9] {
        assert!(self.rows.len() == 3 && self.cols.len() == 3, "direct conv: 3 × 3 taps");
        std::array::from_fn(|t| self.rows[t / 3] + self.cols[t % 3])
    }
}

/// One convolution over the q layout: out[co][q] = Σ_ci Σ_t wt(co, ci, t) · in[ci·chan + q + off(t)]
/// for the [`Taps`] off, one FMA chain per output in (ci, t) order, with 1, 2, 4 or 9 taps.
struct Part {
    taps: Taps,
    /// The weights regrouped for tiles of `tco` output channels: [co / tco][ci][t][co % tco].
    wt: Vec<f32>,
}

impl Part {
    /// The part with `taps` and weights `weight(co, ci, t)`, tiled for `isa`.
    fn new(
        isa: Simd,
        c_out: usize,
        c_in: usize,
        taps: Taps,
        weight: impl Fn(usize, usize, usize) -> f32,
    ) -> Part {
        let wt = blocked_weights((c_out, c_in, taps.len()), tile_co(isa, c_out), weight);
        Part { taps, wt }
    }
}

/// The weights of `c_out` × `c_in` × `taps` regrouped for tiles of `blk` output channels:
/// wt[b][ci][t][l] = weight(b·blk + l, ci, t), so that a tile reads its channels' weights for one
/// (ci, t) together.
fn blocked_weights(
    (c_out, c_in, taps): (usize, usize, usize),
    blk: usize,
    weight: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    assert!(blk > 0 && c_out % blk == 0, "direct conv: weight blocks");
    let mut wt = Vec::with_capacity(c_out * c_in * taps);
    for b in 0..c_out / blk {
        for ci in 0..c_in {
            for t in 0..taps {
                wt.extend((0..blk).map(|l| weight(b * blk + l, ci, t)));
            }
        }
    }
    wt
}

/// A copy from one image's planes to another layout, `f(src, dst)`.
type PerImage<'a> = &'a (dyn Fn(&[f32], &mut [f32]) + Sync);

/// A forward-type direct pass over a batch: per image, `prepare` turns its input (`in_img`
/// elements) into `c_in` channels of `chan` elements, every [`Part`] runs its tiles over `grid`,
/// and the outputs (`out_img` elements an image) are:
/// - with `finish` None (one part): the rows × cols planes of the grid, stored straight from the
///   tiles when cols is a multiple of [`TILE_Q`] or the q layout is the planes' own (ld = cols and
///   q = rows·cols), else through a q-layout buffer ([`Grid::unpad_q`]);
/// - else `finish(buffer, out)` of the q-layout buffer [part][co][q].
///
/// Moves c_in·chan + (parts·)c_out·q elements per image around c_out·c_in·taps·q multiply-adds.
struct Pass<'a> {
    isa: Simd,
    n: usize,
    grid: Grid,
    c_in: usize,
    chan: usize,
    c_out: usize,
    in_img: usize,
    out_img: usize,
    prepare: PerImage<'a>,
    parts: &'a [Part],
    finish: Option<PerImage<'a>>,
}

impl Pass<'_> {
    /// out = the pass over the n images of `inp`, overwritten, in parallel over images.
    fn run(&self, inp: &[f32], out: &mut [f32]) {
        let Pass { isa, n, grid: g, c_in, chan, c_out, in_img, out_img, prepare, parts, finish } = *self;
        assert_eq!(inp.len(), n * in_img, "direct conv: input length");
        assert_eq!(out.len(), n * out_img, "direct conv: output length");
        let tco = tile_co(isa, c_out);
        assert!(c_out % tco == 0 && supported(isa), "direct conv: not applicable");
        assert!(
            finish.is_some() || (parts.len() == 1 && out_img == c_out * g.pixels()),
            "direct conv: outputs"
        );
        for part in parts {
            assert_eq!(part.wt.len(), c_out * c_in * part.taps.len(), "direct conv: weight length");
            // Every tile's reads stay in its channel's `chan` elements (see `Part::tiles`).
            assert!(part.taps.max() + g.q <= chan, "direct conv: tap offsets");
        }
        if n == 0 || out_img == 0 || in_img == 0 {
            // Nothing to compute, or no input channels: every output is then an empty sum, zero as
            // from im2col + GEMM.
            out.fill(0.0);
            return;
        }
        // Tiles store straight into the output planes when they are row-aligned (cols a multiple
        // of TILE_Q) or when the q layout is the planes' layout (ld = cols, q = rows·cols).
        let flat = finish.is_none() && g.ld == g.cols && g.q == g.pixels();
        let rows = finish.is_none() && !flat && g.cols % TILE_Q == 0;
        let yq_len = if rows || flat { 0 } else { parts.len() * c_out * g.q };
        out.par_chunks_mut(out_img).zip(inp.par_chunks(in_img)).for_each_init(
            || (vec![0.0f32; c_in * chan], vec![0.0f32; yq_len]),
            |(xp, yq), (out, inp)| {
                prepare(inp, xp);
                if rows || flat {
                    parts[0].tiles(self, xp, out, rows);
                } else {
                    for (part, yq) in parts.iter().zip(yq.chunks_exact_mut(c_out * g.q)) {
                        part.tiles(self, xp, yq, false);
                    }
                    match finish {
                        Some(finish) => finish(yq, out),
                        None => g.unpad_q(yq, out),
                    }
                }
            },
        );
    }
}

impl Part {
    /// Runs every tile of the part on one image's prepared input `xp` (c_in × chan of `pass`), into
    /// `dst`: its rows × cols planes when `rows`, else its q-layout planes (c_out × q).
    fn tiles(&self, pass: &Pass, xp: &[f32], dst: &mut [f32], rows: bool) {
        match (self.taps.rows.len(), self.taps.cols.len()) {
            (3, 3) => self.tiles_t::<3, 3>(pass, xp, dst, rows),
            (2, 2) => self.tiles_t::<2, 2>(pass, xp, dst, rows),
            (2, 1) => self.tiles_t::<2, 1>(pass, xp, dst, rows),
            (1, 2) => self.tiles_t::<1, 2>(pass, xp, dst, rows),
            (1, 1) => self.tiles_t::<1, 1>(pass, xp, dst, rows),
            (r, c) => unreachable!("direct conv: {r} × {c} taps"),
        }
    }

    /// [`Part::tiles`] with `R` × `C` taps.
    fn tiles_t<const R: usize, const C: usize>(&self, pass: &Pass, xp: &[f32], dst: &mut [f32], rows: bool) {
        let (isa, g, c_in, chan) = (pass.isa, &pass.grid, pass.c_in, pass.chan);
        let tco = tile_co(isa, pass.c_out);
        let taps_r: [usize; R] = self.taps.rows[..].try_into().expect("tap rows");
        let taps_c: [usize; C] = self.taps.cols[..].try_into().expect("tap columns");
        let c_out = self.wt.len() / (c_in * R * C);
        assert!(xp.len() == c_in * chan && dst.len() >= c_out * if rows { g.pixels() } else { g.q });
        // One tile: `tco` output channels × 16 consecutive q, with the kernel of `isa`.
        let tile = |wt: &[f32], q0: usize, dst: &mut [f32], ld: usize| {
            let t = Tile { xp, chan, c_in, wt, q0, ld, rows: taps_r, cols: taps_c };
            // SAFETY: `isa`'s features were detected (`Pass::run` asserts it); the caller keeps
            // the bounds below.
            unsafe {
                match (isa, tco) {
                    (Simd::Avx2, _) => forward_tile(t, dst),
                    (Simd::Avx512, 16) => forward_tile512::<16, R, C>(t, dst),
                    (Simd::Avx512, 8) => forward_tile512::<8, R, C>(t, dst),
                    (Simd::Avx512, _) => forward_tile512::<TILE_CO, R, C>(t, dst),
                }
            }
        };
        let hw = g.pixels();
        for (blk, wt) in self.wt.chunks_exact(c_in * R * C * tco).enumerate() {
            // Bounds (both cases): a tile at q0 reads xp[ci·chan + q0 + off(t) + 0..16]
            // ≤ (c_in − 1)·chan + q − 1 + off(t) < c_in·chan (q0 + 16 ≤ q, off(t) + q ≤ chan,
            // asserted by `Pass::run`), and wt[0..c_in·R·C·tco]. It writes dst[r·ld + 0..16] for
            // r < tco: in the planes at (tco·blk + r)·hw + r'·cols + c0 + 0..16 ≤ c_out·hw, in the
            // q layout at (tco·blk + r)·q + q0 + 0..16 ≤ c_out·q.
            if rows {
                for r in 0..g.rows {
                    for c0 in (0..g.cols).step_by(TILE_Q) {
                        tile(wt, r * g.ld + c0, &mut dst[blk * tco * hw + r * g.cols + c0..], hw);
                    }
                }
            } else {
                for q0 in (0..g.q).step_by(TILE_Q) {
                    tile(wt, q0, &mut dst[blk * tco * g.q + q0..], g.q);
                }
            }
        }
    }
}

/// y = conv(x, w), overwritten.
pub(super) fn forward(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward_with(simd().expect("direct conv: not applicable"), s, x, w, y);
}

/// [`forward`] with the kernels of `isa`.
pub(super) fn forward_with(isa: Simd, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(applies(s, s.c_out), "direct conv: forward does not apply to {s:?}");
    assert_eq!(w.len(), s.w_len(), "direct conv: weight length");
    if s.stride == 2 && lanes::applies(isa, s.c_out) {
        let batch = lanes::Batch { n: s.n, h: s.h, w: s.w, stride: 2 };
        let weight = |co, ci, t| w[(co * s.c_in + ci) * 9 + t];
        return lanes::pass(isa, batch, s.c_in, s.c_out, weight, x, y);
    }
    if s.stride == 2 {
        return stride2::forward(isa, s, x, w, y);
    }
    stride1_pass(isa, s, s.c_in, s.c_out, |co, ci, t| w[(co * s.c_in + ci) * 9 + t], x, y);
}

/// dx = conv_transpose(dy, w), overwritten. At stride 1 the forward convolution of dy with the
/// flipped, transposed filter w'[ci][co][tap] = w[co][ci][8 − tap].
pub(super) fn backward_data(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_data_with(simd().expect("direct conv: not applicable"), s, dy, w, dx);
}

/// [`backward_data`] with the kernels of `isa`.
pub(super) fn backward_data_with(isa: Simd, s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    assert!(applies(s, s.c_in), "direct conv: backward_data does not apply to {s:?}");
    assert_eq!(w.len(), s.w_len(), "direct conv: weight length");
    if s.stride == 2 {
        return stride2::backward_data(isa, s, dy, w, dx);
    }
    stride1_pass(isa, s, s.c_out, s.c_in, |ci, co, t| w[(co * s.c_in + ci) * 9 + 8 - t], dy, dx);
}

/// The stride-1 [`Pass`] of forward and backward data: `c_src` channels of `src` (H × W planes,
/// padded, or [`Shifted`] where W is not a multiple of [`TILE_Q`]) into `c_dst` channels of `dst`,
/// with the weight of (dst channel, src channel, tap) from `weight`.
fn stride1_pass(
    isa: Simd,
    s: &ConvShape,
    c_src: usize,
    c_dst: usize,
    weight: impl Fn(usize, usize, usize) -> f32,
    src: &[f32],
    dst: &mut [f32],
) {
    if rows::applies(isa, s.w, c_dst) {
        return rows::pass(isa, (s.n, s.h, s.w), c_src, c_dst, weight, src, dst);
    }
    if lanes::applies(isa, c_dst) {
        let batch = lanes::Batch { n: s.n, h: s.h, w: s.w, stride: 1 };
        return lanes::pass(isa, batch, c_src, c_dst, weight, src, dst);
    }
    let hw = s.h * s.w;
    let mut run = |grid: Grid, chan: usize, taps: Taps, prepare: PerImage| {
        Pass {
            isa,
            n: s.n,
            grid,
            c_in: c_src,
            chan,
            c_out: c_dst,
            in_img: c_src * hw,
            out_img: c_dst * hw,
            prepare,
            parts: &[Part::new(isa, c_dst, c_src, taps, &weight)],
            finish: None,
        }
        .run(src, dst)
    };
    if s.w % TILE_Q == 0 {
        let p = Planes::new(s.h, s.w);
        run(p.grid, p.plane, p.taps(), &|src, dst| p.pad(src, dst));
    } else {
        let p = Shifted::new(s.h, s.w);
        run(p.grid, p.chan(), p.taps(), &|src, dst| p.prepare(src, dst));
    }
}

/// What a forward tile reads: `c_in` prepared channels of `chan` elements in `xp`, the tile's
/// regrouped weights `wt` ([ci][t][k]), its first q `q0`, `ld`, the distance between its output
/// rows, and its `R` × `C` taps (tap (r, c) at rows[r] + cols[c]).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 kernels read it all
struct Tile<'a, const R: usize, const C: usize> {
    xp: &'a [f32],
    chan: usize,
    c_in: usize,
    wt: &'a [f32],
    q0: usize,
    ld: usize,
    rows: [usize; R],
    cols: [usize; C],
}

impl<const R: usize, const C: usize> Tile<'_, R, C> {
    /// Whether a tile of `co` output channels stays inside its slices (writing `dst`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn in_bounds(&self, co: usize, dst: &[f32]) -> bool {
        let max_off = self.rows.iter().max().unwrap_or(&0) + self.cols.iter().max().unwrap_or(&0);
        let last = (self.c_in.max(1) - 1) * self.chan + self.q0 + max_off + TILE_Q;
        self.xp.len() >= last
            && self.wt.len() >= self.c_in * R * C * co
            && dst.len() >= (co - 1) * self.ld + TILE_Q
    }
}

/// dst[k·ld..][..16] = Σ_ci Σ_(r,c) wt[ci][r·C + c][k] · xp[ci·chan + q0 + rows[r] + cols[c] ..][..16]
/// for k < 4: 16 consecutive q of 4 output channels whose rows are `ld` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile<const R: usize, const C: usize>(t: Tile<'_, R, C>, dst: &mut [f32]) {
    debug_assert!(t.in_bounds(TILE_CO, dst));
    let Tile { xp, chan, c_in, wt, q0, ld, rows, cols } = t;
    let mut acc = [[_mm256_setzero_ps(); TILE_V]; TILE_CO];
    let (x, w) = (xp.as_ptr(), wt.as_ptr());
    for ci in 0..c_in {
        for (r, &row) in rows.iter().enumerate() {
            let xr = x.add(ci * chan + q0 + row);
            for (c, &col) in cols.iter().enumerate() {
                let src = xr.add(col);
                let v: [__m256; TILE_V] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(8 * j)));
                let wk = w.add(((ci * R + r) * C + c) * TILE_CO);
                for (k, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*wk.add(k));
                    for j in 0..TILE_V {
                        acc[j] = _mm256_fmadd_ps(b, v[j], acc[j]);
                    }
                }
            }
        }
    }
    let y = dst.as_mut_ptr();
    for (k, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(y.add(k * ld + 8 * j), a);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_tile<const R: usize, const C: usize>(_: Tile<'_, R, C>, _: &mut [f32]) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// [`forward_tile`] with AVX-512F for `CO` output channels (one 16-lane register each, weights
/// broadcast from memory): dst[k·ld..][..16] = Σ_ci Σ_(r,c) wt[ci][r·C + c][k] ·
/// xp[ci·chan + q0 + rows[r] + cols[c] ..][..16] for k < CO. Each output is the same FMA chain over
/// (ci, r, c), from zero, as in [`forward_tile`], so the two give identical bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile512<const CO: usize, const R: usize, const C: usize>(
    t: Tile<'_, R, C>,
    dst: &mut [f32],
) {
    debug_assert!(t.in_bounds(CO, dst));
    let Tile { xp, chan, c_in, wt, q0, ld, rows, cols } = t;
    let mut acc = [_mm512_setzero_ps(); CO];
    let (x, w) = (xp.as_ptr(), wt.as_ptr());
    for ci in 0..c_in {
        for (r, &row) in rows.iter().enumerate() {
            let xr = x.add(ci * chan + q0 + row);
            for (c, &col) in cols.iter().enumerate() {
                let v = _mm512_loadu_ps(xr.add(col));
                let wk = w.add(((ci * R + r) * C + c) * CO);
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
unsafe fn forward_tile512<const CO: usize, const R: usize, const C: usize>(_: Tile<'_, R, C>, _: &mut [f32]) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// Output channels per filter-gradient block: two AVX2 registers of 8 lanes.
const CO_BLK: usize = 16;
/// Output channels per filter-gradient block where [`CO_BLK`] does not divide c_out: one AVX2
/// register.
const CO_BLK_NARROW: usize = 8;

/// dw = Σ_n dy_n ⋆ x_n, overwritten. Panics unless [`applies_to_filter`]: the kernels' reads are in
/// bounds only for an even output width (pixels go in pairs) and blocks of 8 or 16 channels.
pub(super) fn backward_filter(s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(applies_to_filter(s), "direct conv: backward_filter does not apply to {s:?}");
    backward_filter_with(simd().expect("direct conv: not applicable"), s, x, dy, dw);
}

/// [`backward_filter`] with the kernels of `isa`.
pub(super) fn backward_filter_with(isa: Simd, s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(applies_to_filter(s) && supported(isa), "direct conv: backward_filter does not apply to {s:?}");
    if isa == Simd::Avx512 && s.c_out % CO_BLK == 0 {
        // x read in place, with the taps in the padding skipped: no padded or split copy, and
        // the taps' products that are all zero are not computed.
        let grid = Grid::new(s.out_h(), s.out_w(), s.out_w());
        return FilterPass { isa, s, grid, input: FilterInput::Plain }.run(x, dy, dw);
    }
    if s.stride == 2 {
        return stride2::backward_filter(isa, s, x, dy, dw);
    }
    let p = Planes::new(s.h, s.w);
    let input =
        FilterInput::Prepared { chan: p.plane, prepare: &|src, dst| p.pad(src, dst), offs: p.taps().table() };
    FilterPass { isa, s, grid: p.grid, input }.run(x, dy, dw);
}

/// A filter-gradient pass over the output pixels of `grid`, reading x as `input` says.
#[derive(Clone, Copy)]
struct FilterPass<'a> {
    isa: Simd,
    s: &'a ConvShape,
    grid: Grid,
    input: FilterInput<'a>,
}

/// How a filter pass reads x.
#[derive(Clone, Copy)]
enum FilterInput<'a> {
    /// Per image, `prepare` turns x into c_in channels of `chan` elements, in which output pixel
    /// (r, c) reads tap t at r·ld + c + offs[t].
    Prepared { chan: usize, prepare: PerImage<'a>, offs: [usize; 9] },
    /// x's own H × W planes, in place: AVX-512 and blocks of [`CO_BLK`] only, at stride 1 or 2
    /// ([`filter_taps512_plain`]).
    Plain,
}

impl FilterPass<'_> {
    /// dw = Σ_n dy_n ⋆ x_n, overwritten, in blocks of [`CO_BLK`] output channels where they
    /// divide c_out, else of 8.
    fn run(&self, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        if self.s.c_out % CO_BLK == 0 {
            self.blocks::<CO_BLK>(x, dy, dw)
        } else {
            self.blocks::<CO_BLK_NARROW>(x, dy, dw)
        }
    }

    /// [`FilterPass::run`] in blocks of B output channels (16 or 8). One task per (block, chunk of
    /// the batch); per group of images (about 1024 output pixels) it prepares its images' x (unless
    /// [`FilterInput::Plain`]) and copies their dy block with the channel innermost, dyb[i][p][B]
    /// (both stay in L2), sums every (ci, kernel row) over the group in f32 and adds the sums to its
    /// f64 partial dw. x and dy are read from memory once per channel block.
    fn blocks<const B: usize>(&self, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        let FilterPass { isa, s, grid: g, input } = *self;
        assert!(
            (B == CO_BLK || B == CO_BLK_NARROW) && s.c_out % B == 0 && g.cols % 2 == 0 && supported(isa),
            "direct conv: filter blocks"
        );
        let hw = g.pixels();
        let (x_img, dy_img) = (s.c_in * s.h * s.w, s.c_out * hw);
        // Elements of one input channel as the kernels read it.
        let chan = match input {
            FilterInput::Prepared { chan, offs, .. } => {
                // The last tap of the last pixel stays in its channel's `chan` elements.
                let last = offs.iter().max().map_or(0, |&o| o + (g.rows.max(1) - 1) * g.ld + g.cols);
                assert!(last <= chan, "direct conv: filter tap offsets");
                chan
            }
            FilterInput::Plain => {
                let fits = (s.stride == 1 || s.stride == 2)
                    && (g.rows, g.cols, g.ld) == (s.out_h(), s.out_w(), s.out_w());
                assert!(fits && isa == Simd::Avx512 && B == CO_BLK, "direct conv: plain filter input");
                s.h * s.w
            }
        };
        assert_eq!(x.len(), s.n * x_img, "direct conv: x length");
        assert_eq!(dy.len(), s.n * dy_img, "direct conv: dy length");
        assert_eq!(dw.len(), s.c_out * s.c_in * 9, "direct conv: dw length");
        if s.n == 0 || hw == 0 || s.c_in == 0 {
            // Empty sums (or, without input channels, no dw at all).
            dw.fill(0.0);
            return;
        }
        // Elements of one image of x as the kernels read it.
        let xp_img = s.c_in * chan;
        // Images per f32 partial sum: about 1024 pixels (1 image at 32×32, 16 at 8×8), then f64.
        let per_flush = (1024 / hw).max(1);
        let per_chunk = s.n.div_ceil(FILTER_CHUNKS);
        let chunks = s.n.div_ceil(per_chunk);
        let partials: Vec<Vec<[f64; B]>> = (0..s.c_out / B * chunks)
            .into_par_iter()
            .map(|task| {
                let (blk, chunk) = (task / chunks, task % chunks);
                let images = chunk * per_chunk..((chunk + 1) * per_chunk).min(s.n);
                let mut sums = vec![[0.0f64; B]; s.c_in * 9];
                // Sized to the largest group of this chunk: zeroing more would cost as much as
                // the sums on small maps (a chunk of 4 images at 4×4, where a group could be 64).
                let most = per_flush.min(images.len());
                let prepared = if let FilterInput::Prepared { .. } = input { most * xp_img } else { 0 };
                let (mut xp, mut dyb) = (vec![0.0f32; prepared], vec![0.0f32; most * hw * B]);
                for first in images.clone().step_by(per_flush) {
                    let group = per_flush.min(images.end - first);
                    let dyb = &mut dyb[..group * hw * B];
                    for (i, dyb) in dyb.chunks_exact_mut(hw * B).enumerate() {
                        // The block's B dy planes with the channel innermost: dyb[p·B + l].
                        transpose(&dy[(first + i) * dy_img + blk * B * hw..][..B * hw], B, hw, dyb);
                    }
                    // The group's x as the kernels read it: xp_img elements an image.
                    let xs: &[f32] = match input {
                        FilterInput::Prepared { prepare, .. } => {
                            let xp = &mut xp[..group * xp_img];
                            for (i, xp) in xp.chunks_exact_mut(xp_img).enumerate() {
                                prepare(&x[(first + i) * x_img..][..x_img], xp);
                            }
                            xp
                        }
                        FilterInput::Plain => &x[first * x_img..][..group * x_img],
                    };
                    for ci in 0..s.c_in {
                        // SAFETY: `isa`'s features were detected and cols is even (asserted
                        // above); image i of the group reads dyb[(i·hw + p)·B + 0..B] for
                        // p < hw, inside `dyb`, and, prepared, xs[i·xp_img + ci·chan + r·ld + c +
                        // offs[t]] for r < rows, c < cols, below i·xp_img + (ci + 1)·chan ≤
                        // group·xp_img (`last` ≤ chan, asserted above), or, plain, the pixels
                        // xs[i·xp_img + ci·hw + 0..hw]: inside `xs`.
                        let xc = &xs[ci * chan..];
                        let dyb = &*dyb;
                        // Prepared input takes the AVX2 kernel: with AVX2, and with AVX-512 for
                        // blocks of 8 (one 8-lane vector a pixel).
                        let taps: [[f32; B]; 9] = match input {
                            FilterInput::Plain => flat_taps(unsafe {
                                let input = (s.h, s.w);
                                match s.stride {
                                    1 => filter_taps512_plain::<1>(dyb, xc, xp_img, group, &g, input),
                                    _ => filter_taps512_plain::<2>(dyb, xc, xp_img, group, &g, input),
                                }
                            }),
                            FilterInput::Prepared { offs, .. } => {
                                let row = |ki: usize| {
                                    let offs = [offs[3 * ki], offs[3 * ki + 1], offs[3 * ki + 2]];
                                    unsafe { filter_taps::<B>(dyb, xc, xp_img, group, &g, &offs) }
                                };
                                let rows = [row(0), row(1), row(2)];
                                std::array::from_fn(|t| rows[t / 3][t % 3])
                            }
                        };
                        for (sum, tap) in sums[ci * 9..][..9].iter_mut().zip(&taps) {
                            for (s, &v) in sum.iter_mut().zip(tap) {
                                *s += f64::from(v);
                            }
                        }
                    }
                }
                sums
            })
            .collect();
        for (blk, parts) in partials.chunks_exact(chunks).enumerate() {
            for w in 0..s.c_in * 9 {
                for l in 0..B {
                    let total: f64 = parts.iter().fold(0.0, |t, part| t + part[w][l]);
                    dw[(blk * B + l) * s.c_in * 9 + w] = total as f32;
                }
            }
        }
    }
}

/// The 9 taps of a 16-channel block as a B-channel block (B = 16, where the AVX-512 kernels run).
fn flat_taps<const B: usize>(taps: [[f32; CO_BLK]; 9]) -> [[f32; B]; 9] {
    std::array::from_fn(|t| taps[t].as_slice().try_into().expect("blocks of 16 channels"))
}

/// Whether the filter kernels' reads stay inside `dy` and `x` for `images` images (cols even),
/// with the largest tap offset `max_off`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn filter_in_bounds(
    dy: &[f32],
    x: &[f32],
    lanes: usize,
    x_image: usize,
    images: usize,
    g: &Grid,
    max_off: usize,
) -> bool {
    let reads_x = || (images - 1) * x_image + (g.rows - 1) * g.ld + g.cols + max_off;
    images > 0
        && g.rows > 0
        && g.cols % 2 == 0
        && dy.len() >= images * g.pixels() * lanes
        && x.len() >= reads_x()
}

/// For the 3 taps at `offs` (one kernel row) and the B output channels of a block (B = 16: 2
/// vectors of lanes; B = 8: 1): Σ_i Σ_(r,c) dy_i[r·cols + c][lane] · x_i[r·ld + c + offs[tap]]
/// over `images` images, image i's dy at `dy[i·rows·cols·B..]` and its prepared input channel at
/// `x[i·x_image..]`, as out[tap][lane]. Even and odd c accumulate separately (12 or 6
/// accumulators) and are added at the end; per 2 pixels 2·B/8 loads, 6 broadcasts and 6·B/8 FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn filter_taps<const B: usize>(
    dy: &[f32],
    x: &[f32],
    x_image: usize,
    images: usize,
    g: &Grid,
    offs: &[usize; 3],
) -> [[f32; B]; 3] {
    let max_off = offs.iter().copied().max().unwrap_or(0);
    debug_assert!(B == CO_BLK_NARROW || B == CO_BLK);
    debug_assert!(filter_in_bounds(dy, x, B, x_image, images, g, max_off));
    let (hw, vecs) = (g.pixels(), B / 8);
    let mut acc = [[[_mm256_setzero_ps(); 2]; 3]; 2];
    for i in 0..images {
        let (d, x) = (dy.as_ptr().add(i * hw * B), x.as_ptr().add(i * x_image));
        for r in 0..g.rows {
            for c in (0..g.cols).step_by(2) {
                for (parity, acc) in acc.iter_mut().enumerate() {
                    let dp = d.add((r * g.cols + c + parity) * B);
                    // The pixel's B lanes: vectors 0 and 1 for B = 16; for B = 8 both load
                    // vector 0, and only dv[0] is used.
                    let dv = [_mm256_loadu_ps(dp), _mm256_loadu_ps(dp.add(8 * (vecs - 1)))];
                    let xs = x.add(r * g.ld + c + parity);
                    for (&off, acc) in offs.iter().zip(acc.iter_mut()) {
                        let b = _mm256_broadcast_ss(&*xs.add(off));
                        for v in 0..vecs {
                            acc[v] = _mm256_fmadd_ps(b, dv[v], acc[v]);
                        }
                    }
                }
            }
        }
    }
    let mut out = [[0.0f32; B]; 3];
    for ((o, even), odd) in out.iter_mut().zip(&acc[0]).zip(&acc[1]) {
        for v in 0..vecs {
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * v), _mm256_add_ps(even[v], odd[v]));
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn filter_taps<const B: usize>(
    _: &[f32],
    _: &[f32],
    _: usize,
    _: usize,
    _: &Grid,
    _: &[usize; 3],
) -> [[f32; B]; 3] {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// The 9 taps of [`filter_taps`] for a block of 16 channels at once with AVX-512F, on x's own
/// H × W planes (`input`: H, W), no padded copy, at stride `S` (1 or 2) over the output pixels of
/// `g` (ld = cols): the 16 output channels in one register, 3 kernel rows × 3 taps × even/odd c =
/// 18 accumulators, so each dy vector loaded feeds 9 taps (3 with AVX2). Tap (ki, kj) of output
/// pixel (r, c) reads x[S·r + ki − 1][S·c + kj − 1], and the taps that would read the zero padding
/// (ki = 0 on the first row, ki = 2 on the last where S·r + 1 = H, kj alike in the columns) are not
/// computed. Their products are ±0, and adding ±0 leaves an f32 sum unchanged (a sum that starts at
/// +0 never becomes −0), so every lane accumulates the same nonzero products in the same order as
/// [`filter_taps`] does on the padded (or phase-split) planes for its kernel row (even and odd c
/// apart, then added), with the same bits, for finite dy. out[t] for tap t = 3·ki + kj. At stride 1, of the
/// 9·H·W products of a plane, 6·(H + W) − 4 are skipped: 16% at 8×8, 8% at 16×16, 4% at 32×32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn filter_taps512_plain<const S: usize>(
    dy: &[f32],
    x: &[f32],
    x_image: usize,
    images: usize,
    g: &Grid,
    (h, w): (usize, usize),
) -> [[f32; CO_BLK]; 9] {
    let (oh, ow, ohw) = (g.rows, g.cols, g.pixels());
    debug_assert!(g.ld == ow && ow % 2 == 0 && oh > 0 && images > 0);
    debug_assert!(oh == h.div_ceil(S) && ow == w.div_ceil(S));
    debug_assert!(dy.len() >= images * ohw * CO_BLK && x.len() >= (images - 1) * x_image + h * w);
    // Whether the last column's kj = 2 stays inside the row.
    let last_full = S * (ow - 1) + 1 < w;
    let mut acc = [[_mm512_setzero_ps(); 9]; 2];
    for i in 0..images {
        let (d, x) = (dy.as_ptr().add(i * ohw * CO_BLK), x.as_ptr().add(i * x_image));
        for r in 0..oh {
            let (d, x) = (d.add(r * ow * CO_BLK), x.add(S * r * w));
            // The kernel rows that stay inside the plane, a bit each.
            let row = PlainRow { d, x, w, ow, last_full };
            match (r == 0, S * r + 1 >= h) {
                (false, false) => plain_row::<0b111, S>(&mut acc, row),
                (true, false) => plain_row::<0b110, S>(&mut acc, row),
                (false, true) => plain_row::<0b011, S>(&mut acc, row),
                (true, true) => plain_row::<0b010, S>(&mut acc, row),
            }
        }
    }
    let mut out = [[0.0f32; CO_BLK]; 9];
    for ((o, &e), &d) in out.iter_mut().zip(&acc[0]).zip(&acc[1]) {
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(e, d));
    }
    out
}

/// One output row of [`filter_taps512_plain`]: dy of its `ow` pixels at `d` (16 lanes a pixel),
/// the input row of its kernel centres at `x` (`w` wide), and whether the last pixel's kj = 2
/// stays inside the row.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct PlainRow {
    d: *const f32,
    x: *const f32,
    w: usize,
    ow: usize,
    last_full: bool,
}

/// The pixels of `row` in pairs, even pixels into acc[0] and odd into acc[1], with the kernel rows
/// of `ROWS`, without kj = 0 in the first column and, unless `last_full`, kj = 2 in the last.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn plain_row<const ROWS: u8, const S: usize>(acc: &mut [[__m512; 9]; 2], row: PlainRow) {
    let PlainRow { d, x, w, ow, last_full } = row;
    let [even, odd] = acc;
    let pixel = |c: usize| (d.add(c * CO_BLK), x.add(S * c));
    let last = |acc: &mut [__m512; 9]| {
        let (d, x) = pixel(ow - 1);
        if last_full {
            plain_pixel::<ROWS, 0b111>(acc, d, x, w)
        } else {
            plain_pixel::<ROWS, 0b011>(acc, d, x, w)
        }
    };
    let (d0, x0) = pixel(0);
    plain_pixel::<ROWS, 0b110>(even, d0, x0, w);
    if ow == 2 {
        return last(odd);
    }
    let (d1, x1) = pixel(1);
    plain_pixel::<ROWS, 0b111>(odd, d1, x1, w);
    for c in (2..ow - 2).step_by(2) {
        let ((de, xe), (do_, xo)) = (pixel(c), pixel(c + 1));
        plain_pixel::<ROWS, 0b111>(even, de, xe, w);
        plain_pixel::<ROWS, 0b111>(odd, do_, xo, w);
    }
    let (de, xe) = pixel(ow - 2);
    plain_pixel::<ROWS, 0b111>(even, de, xe, w);
    last(odd);
}

/// acc[3·ki + kj] += x[(ki − 1)·w + kj − 1] · dy for the kernel rows ki in `ROWS` and columns kj in
/// `COLS` (a bit each): one output pixel's 16 channels of dy at `d`, its kernel centre at `x`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn plain_pixel<const ROWS: u8, const COLS: u8>(
    acc: &mut [__m512; 9],
    d: *const f32,
    x: *const f32,
    w: usize,
) {
    let dv = _mm512_loadu_ps(d);
    for ki in 0..3 {
        for kj in 0..3 {
            if (ROWS >> ki) & 1 == 1 && (COLS >> kj) & 1 == 1 {
                let xv = *x.add(ki * w + kj).sub(w + 1);
                acc[3 * ki + kj] = _mm512_fmadd_ps(_mm512_set1_ps(xv), dv, acc[3 * ki + kj]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn filter_taps512_plain<const S: usize>(
    _: &[f32],
    _: &[f32],
    _: usize,
    _: usize,
    _: &Grid,
    _: (usize, usize),
) -> [[f32; CO_BLK]; 9] {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}
