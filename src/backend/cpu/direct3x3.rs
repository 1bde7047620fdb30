//! 3×3, stride-1, pad-1 convolutions of f32 computed directly with AVX-512F or AVX2 + FMA (the best
//! the CPU has, detected at run time: [`simd`]; both give the same bits): no im2col matrix and
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
//! pixels 4 loads, 6 broadcasts and 12 FMAs. AVX-512 has 32 registers of 16 lanes: a forward
//! tile is 16 output channels × 16 q (16 accumulators; per (ci, tap) 1 load and 16 FMAs with the
//! weight broadcast from memory), and a filter task computes all 9 taps of a block at once (18
//! accumulators; per 2 pixels 2 loads, 18 broadcasts and 18 FMAs).
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
#[cfg(target_arch = "x86_64")]
const TILE_V: usize = TILE_Q / 8;

/// Whether the direct path computes this convolution when `c_out` channels come out (the input
/// channels of the conv for its backward-data pass): a 3×3 stride-1 pad-1 conv on planes whose
/// width is a multiple of 8 (one vector: 8, 16, 32 in the CIFAR nets; the 4×4 and 2×2 maps of the
/// tiny nets stay on im2col + GEMM), `c_out` a multiple of [`TILE_CO`], on a CPU with AVX2 and FMA.
pub(super) fn applies(s: &ConvShape, c_out: usize) -> bool {
    let shape = s.kernel == 3 && s.stride == 1 && s.pad == 1 && s.w > 0 && s.w % 8 == 0;
    shape && c_out > 0 && c_out % TILE_CO == 0 && simd().is_some()
}

/// Whether the direct path computes this convolution's filter gradient: as [`applies`], with the
/// output channels a multiple of [`CO_BLK`] (16, 32, 64 in the CIFAR nets; the tiny nets' 8-channel
/// convs stay on im2col + GEMM).
pub(super) fn applies_to_filter(s: &ConvShape) -> bool {
    applies(s, s.c_out) && s.c_out % CO_BLK == 0
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

/// Output channels per forward tile with `isa` when `c_out` come out: [`TILE_CO`] with AVX2; with
/// AVX-512 the largest of 16, 8 and 4 that divides `c_out` (one 16-lane register per channel).
fn tile_co(isa: Simd, c_out: usize) -> usize {
    match isa {
        Simd::Avx2 => TILE_CO,
        Simd::Avx512 => [16, 8].into_iter().find(|t| c_out % t == 0).unwrap_or(TILE_CO),
    }
}

/// Weights regrouped for a forward tile of `tco` output channels: [co / tco][ci][tap][co % tco],
/// from `weight(co, ci, tap)`.
fn by_tile(tco: usize, c_out: usize, c_in: usize, weight: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(c_out * c_in * 9);
    for blk in 0..c_out / tco {
        for ci in 0..c_in {
            for tap in 0..9 {
                out.extend((0..tco).map(|r| weight(blk * tco + r, ci, tap)));
            }
        }
    }
    out
}

/// y = conv(x, w), overwritten.
pub(super) fn forward(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward_with(simd().expect("direct conv: not applicable"), s, x, w, y);
}

/// [`forward`] with the kernels of `isa`.
pub(super) fn forward_with(isa: Simd, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let k = s.c_in * 9;
    let wt = by_tile(tile_co(isa, s.c_out), s.c_out, s.c_in, |co, ci, tap| w[co * k + ci * 9 + tap]);
    same_conv(isa, s.n, Planes::new(s.h, s.w), s.c_in, s.c_out, x, &wt, y);
}

/// dx = conv_transpose(dy, w), overwritten: the forward convolution of dy with the flipped,
/// transposed filter w'[ci][co][tap] = w[co][ci][8 − tap].
pub(super) fn backward_data(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_data_with(simd().expect("direct conv: not applicable"), s, dy, w, dx);
}

/// [`backward_data`] with the kernels of `isa`.
pub(super) fn backward_data_with(isa: Simd, s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let k = s.c_in * 9;
    let wt = by_tile(tile_co(isa, s.c_in), s.c_in, s.c_out, |ci, co, tap| w[co * k + ci * 9 + 8 - tap]);
    same_conv(isa, s.n, Planes::new(s.h, s.w), s.c_out, s.c_in, dy, &wt, dx);
}

/// out = the 3×3 "same" convolution of `inp` (n images of c_in planes) with the regrouped weights
/// `wt`, in parallel over images. Per image: pads its planes, runs every tile, copies out the valid
/// outputs; moves c_in·plane + 2·c_out·q elements around c_out·c_in·9·q multiply-adds.
#[allow(clippy::too_many_arguments)]
fn same_conv(
    isa: Simd,
    n: usize,
    g: Planes,
    c_in: usize,
    c_out: usize,
    inp: &[f32],
    wt: &[f32],
    out: &mut [f32],
) {
    let (in_img, out_img) = (c_in * g.h * g.w, c_out * g.h * g.w);
    assert_eq!(inp.len(), n * in_img, "direct conv: input length");
    assert_eq!(out.len(), n * out_img, "direct conv: output length");
    assert_eq!(wt.len(), c_out * c_in * 9, "direct conv: weight length");
    let tco = tile_co(isa, c_out);
    assert!(c_out % tco == 0 && supported(isa), "direct conv: not applicable");
    // One tile: `tco` output channels × 16 consecutive q, with the kernel of `isa`.
    let tile = |xp: &[f32], wt: &[f32], q0: usize, dst: &mut [f32], ld: usize| {
        let t = Tile { xp, g: &g, c_in, wt, q0, ld };
        // SAFETY: `isa`'s features were detected (asserted above); the caller keeps the bounds
        // below.
        unsafe {
            match (isa, tco) {
                (Simd::Avx2, _) => forward_tile(t, dst),
                (Simd::Avx512, 16) => forward_tile512::<16>(t, dst),
                (Simd::Avx512, 8) => forward_tile512::<8>(t, dst),
                (Simd::Avx512, _) => forward_tile512::<TILE_CO>(t, dst),
            }
        }
    };
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
            for (blk, wt) in wt.chunks_exact(c_in * 9 * tco).enumerate() {
                // Bounds (both calls): a tile at q0 reads xp[ci·plane + q0 + ki·wp + kj + 0..16]
                // ≤ (c_in − 1)·plane + q − 1 + 2·wp + 2 < c_in·plane (q0 + 16 ≤ q), and
                // wt[0..c_in·9·tco]. It writes dst[r·ld + 0..16] for r < tco: in `out` at
                // (tco·blk + r)·hw + oh·W + ow0 + 0..16 ≤ c_out·hw, in `yq` at
                // (tco·blk + r)·q + q0 + 0..16 ≤ c_out·q.
                if row_tiles {
                    for oh in 0..g.h {
                        for ow0 in (0..g.w).step_by(TILE_Q) {
                            tile(xp, wt, oh * g.wp + ow0, &mut out[blk * tco * hw + oh * g.w + ow0..], hw);
                        }
                    }
                } else {
                    for q0 in (0..g.q).step_by(TILE_Q) {
                        tile(xp, wt, q0, &mut yq[blk * tco * g.q + q0..], g.q);
                    }
                }
            }
            if !row_tiles {
                g.unpad_q(yq, out);
            }
        },
    );
}

/// What a forward tile reads: `c_in` padded planes `xp` of geometry `g`, the tile's regrouped
/// weights `wt` ([ci][tap][r]), its first q `q0`, and `ld`, the distance between its output rows.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 kernels read it all
struct Tile<'a> {
    xp: &'a [f32],
    g: &'a Planes,
    c_in: usize,
    wt: &'a [f32],
    q0: usize,
    ld: usize,
}

impl Tile<'_> {
    /// Whether a tile of `co` output channels stays inside its slices (writing `dst`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn in_bounds(&self, co: usize, dst: &[f32]) -> bool {
        let reads = self.c_in * self.g.plane;
        self.xp.len() >= reads
            && self.wt.len() >= self.c_in * 9 * co
            && dst.len() >= (co - 1) * self.ld + TILE_Q
    }
}

/// dst[r·ld..][..16] = Σ_ci Σ_tap wt[ci][tap][r] · xp[ci][q0 + off(tap) ..][..16] for r < 4, where
/// off(ki, kj) = ki·wp + kj: 16 consecutive q of 4 output channels whose rows are `ld` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile(t: Tile<'_>, dst: &mut [f32]) {
    debug_assert!(t.in_bounds(TILE_CO, dst));
    let Tile { xp, g, c_in, wt, q0, ld } = t;
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
unsafe fn forward_tile(_: Tile<'_>, _: &mut [f32]) {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}

/// [`forward_tile`] with AVX-512F for `CO` output channels (one 16-lane register each, weights
/// broadcast from memory): dst[r·ld..][..16] = Σ_ci Σ_tap wt[ci][tap][r] · xp[ci][q0 + off(tap) ..][..16]
/// for r < CO. Each output is the same FMA chain over (ci, ki, kj), from zero, as in [`forward_tile`],
/// so the two give identical bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile512<const CO: usize>(t: Tile<'_>, dst: &mut [f32]) {
    debug_assert!(t.in_bounds(CO, dst));
    let Tile { xp, g, c_in, wt, q0, ld } = t;
    let mut acc = [_mm512_setzero_ps(); CO];
    let (x, w) = (xp.as_ptr(), wt.as_ptr());
    for ci in 0..c_in {
        for ki in 0..3 {
            for kj in 0..3 {
                let v = _mm512_loadu_ps(x.add(ci * g.plane + q0 + ki * g.wp + kj));
                let wk = w.add((ci * 9 + ki * 3 + kj) * CO);
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*wk.add(r)), v, *acc);
                }
            }
        }
    }
    let y = dst.as_mut_ptr();
    for (r, &a) in acc.iter().enumerate() {
        _mm512_storeu_ps(y.add(r * ld), a);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_tile512<const CO: usize>(_: Tile<'_>, _: &mut [f32]) {
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
    backward_filter_with(simd().expect("direct conv: not applicable"), s, x, dy, dw);
}

/// [`backward_filter`] with the kernels of `isa`.
pub(super) fn backward_filter_with(isa: Simd, s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(applies_to_filter(s) && supported(isa), "direct conv: backward_filter does not apply to {s:?}");
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
                    channels_innermost(
                        &dy[(first + i) * dy_img + blk * CO_BLK * hw..][..CO_BLK * hw],
                        hw,
                        dyb,
                    );
                }
                for ci in 0..s.c_in {
                    // SAFETY: `isa`'s features were detected and W is even (`applies_to_filter`,
                    // asserted above); image i of the group reads dyb[(i·hw + p)·16 + 0..16] for
                    // p < hw, inside `dyb`, and xp[i·xp_img + ci·plane + (oh + ki)·wp + ow + kj] for
                    // oh < H, ow < W, ki, kj < 3, below i·xp_img + ci·plane + (H + 2)·wp ≤
                    // group·xp_img: inside `xp`.
                    let xc = &xp[ci * g.plane..];
                    let taps = match isa {
                        Simd::Avx512 => unsafe { filter_taps512(dyb, xc, xp_img, group, &g) },
                        Simd::Avx2 => {
                            let mut taps = [[0.0f32; CO_BLK]; 9];
                            for (ki, row) in taps.chunks_exact_mut(3).enumerate() {
                                row.copy_from_slice(&unsafe { filter_taps(dyb, xc, xp_img, group, &g, ki) });
                            }
                            taps
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
            for l in 0..CO_BLK {
                let total: f64 = parts.iter().fold(0.0, |t, part| t + part[w][l]);
                dw[(blk * CO_BLK + l) * s.c_in * 9 + w] = total as f32;
            }
        }
    }
}

/// dyb[p·16 + l] = src[l·hw + p] for p < hw, l < 16: a block's 16 dy planes with the channel
/// innermost. Whole blocks of 16 pixels go through a 16 × 16 tile read a plane row at a time: the
/// planes are hw apart (4 KiB at 32×32), so reading one pixel's 16 channels at a time hits one
/// cache set 16 times per pixel. The last hw mod 16 pixels go one at a time.
fn channels_innermost(src: &[f32], hw: usize, dyb: &mut [f32]) {
    debug_assert!(src.len() == CO_BLK * hw && dyb.len() == CO_BLK * hw);
    let full = hw / CO_BLK * CO_BLK;
    let mut tile = [[0.0f32; CO_BLK]; CO_BLK];
    for p0 in (0..full).step_by(CO_BLK) {
        for (l, row) in tile.iter_mut().enumerate() {
            row.copy_from_slice(&src[l * hw + p0..][..CO_BLK]);
        }
        for (j, d) in dyb[p0 * CO_BLK..][..CO_BLK * CO_BLK].chunks_exact_mut(CO_BLK).enumerate() {
            for (d, row) in d.iter_mut().zip(&tile) {
                *d = row[j];
            }
        }
    }
    for (p, d) in dyb.chunks_exact_mut(CO_BLK).enumerate().skip(full) {
        for (l, d) in d.iter_mut().enumerate() {
            *d = src[l * hw + p];
        }
    }
}

/// Whether the filter kernels' reads stay inside `dy` and `x` for `images` images (W even).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn filter_in_bounds(dy: &[f32], x: &[f32], x_image: usize, images: usize, g: &Planes) -> bool {
    let reads_dy = images * g.h * g.w * CO_BLK;
    images > 0 && g.w % 2 == 0 && dy.len() >= reads_dy && x.len() >= (images - 1) * x_image + (g.h + 2) * g.wp
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
    debug_assert!(filter_in_bounds(dy, x, x_image, images, g));
    let hw = g.h * g.w;
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

/// The 9 taps of [`filter_taps`] at once with AVX-512F: the 16 output channels in one register,
/// 3 kernel rows × 3 taps × even/odd ow = 18 accumulators, so each dy vector loaded feeds 9 taps
/// (3 with AVX2). Every lane of every tap accumulates the same products in the same order as
/// [`filter_taps`] does for its kernel row (even and odd ow apart, then added), so the two give
/// identical bits. out[ki·3 + kj].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn filter_taps512(
    dy: &[f32],
    x: &[f32],
    x_image: usize,
    images: usize,
    g: &Planes,
) -> [[f32; CO_BLK]; 9] {
    debug_assert!(filter_in_bounds(dy, x, x_image, images, g));
    let hw = g.h * g.w;
    let mut acc = [[[_mm512_setzero_ps(); 3]; 2]; 3];
    for i in 0..images {
        let (d, x) = (dy.as_ptr().add(i * hw * CO_BLK), x.as_ptr().add(i * x_image));
        for oh in 0..g.h {
            for ow in (0..g.w).step_by(2) {
                for parity in 0..2 {
                    let dv = _mm512_loadu_ps(d.add((oh * g.w + ow + parity) * CO_BLK));
                    for (ki, acc) in acc.iter_mut().enumerate() {
                        let xs = x.add((oh + ki) * g.wp + ow + parity);
                        for (kj, acc) in acc[parity].iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(_mm512_set1_ps(*xs.add(kj)), dv, *acc);
                        }
                    }
                }
            }
        }
    }
    let mut out = [[0.0f32; CO_BLK]; 9];
    for (o, [even, odd]) in out.chunks_exact_mut(3).zip(&acc) {
        for ((o, &e), &d) in o.iter_mut().zip(even).zip(odd) {
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(e, d));
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn filter_taps512(_: &[f32], _: &[f32], _: usize, _: usize, _: &Planes) -> [[f32; CO_BLK]; 9] {
    unreachable!("the direct path needs x86-64 with AVX2 and FMA")
}
