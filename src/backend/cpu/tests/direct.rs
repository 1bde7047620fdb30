//! The direct 3×3 convolutions (f32, AVX2 + FMA or AVX-512F), stride 1 and stride 2, against the
//! f64 references: the naive loop for the forward pass, the f64 im2col backend (itself checked by
//! finite differences in gradcheck.rs) for the two backward passes. Outputs start as NaN, so an
//! output left unwritten fails; inputs are fresh uniform draws per shape.
//!
//! Tolerance ([`tol`]): in an f32 sum of K terms of random sign and spread σ, each addition rounds
//! by up to ε/2 of its partial sum (ε = 2⁻²³), partial sums being about √k·σ: a random walk of
//! about ε·K·σ/√24 against a sum of about √K·σ, so 0.2·ε·√K relative. The measure, the largest
//! error over the largest output (a few standard deviations each), stays within about ε·√K
//! (measured: ≤ 0.41·ε·√K over the stride-1 shapes, ≤ 0.47·ε·√K over the stride-2 ones), which
//! [`tol`] allows twice over: 2.9e-6 for K = 144.
//! K is the longest f32 sum of a pass ([`terms`]): 9·c_in a forward output, 9·c_out (stride 1) or
//! at most 4·c_out (stride 2: an input pixel gets 1, 2 or 4 taps) a data-gradient output, and the
//! pixels of one parity in one group for the filter gradient ([`filter_terms`]). A wrong tap,
//! offset, phase or flip errs at O(1), and a lost or repeated image among N at about 1/√N (≥ 0.08
//! here).

use super::reference::naive_conv;
use super::{assert_close, cpu_has_direct_path, panics, rel_err, rng, to_f32, to_f64, uniform, Cpu};
use crate::backend::cpu::conv::FILTER_CHUNKS;
use crate::backend::cpu::direct3x3;
use crate::backend::{Backend, ConvBackwardData, ConvBackwardFilter, ConvForward, ConvShape, Real};

/// The tolerance for outputs that are f32 sums of up to `terms` terms: 2·ε·√terms.
fn tol(terms: usize) -> f64 {
    2.0 * f64::from(f32::EPSILON) * (terms as f64).sqrt()
}

/// The terms of the longest f32 sum of the forward pass, the data gradient and the filter
/// gradient (see the module doc).
fn terms(s: &ConvShape) -> [usize; 3] {
    let data = if s.stride == 2 { 4 * s.c_out } else { 9 * s.c_out };
    [9 * s.c_in, data, filter_terms(s)]
}

/// The terms of one f32 sum of the filter gradient: the output pixels of one parity (even and odd
/// ow are summed apart) in one group of about 1024 pixels (one image when it has more); groups are
/// added in f64.
fn filter_terms(s: &ConvShape) -> usize {
    (s.out_h() * s.out_w()).max(1024) / 2
}

const fn shape(n: usize, c_in: usize, h: usize, w: usize, c_out: usize) -> ConvShape {
    ConvShape { n, c_in, h, w, c_out, kernel: 3, stride: 1, pad: 1 }
}

const fn shape2(n: usize, c_in: usize, h: usize, w: usize, c_out: usize) -> ConvShape {
    ConvShape { n, c_in, h, w, c_out, kernel: 3, stride: 2, pad: 1 }
}

/// Shapes for the direct path.
///
/// Forward and backward data: ragged q (7 rows of 24 + 2 is not a multiple of the 16-q tile), a
/// tall plane, rows tiled exactly (W = 16, 32, 48, one-row planes among them) and not (W = 8, 24,
/// 40), hw = 1280 > 1024, input channel counts that are and are not multiples of 4, and 5 output
/// channels, which backward data takes as its input channels (no forward pass or filter gradient
/// there: not a multiple of 4). 4 output channels: no filter gradient (not a multiple of 8).
///
/// Widths that are not a multiple of 16 (8, 24, 40, 4, 2, 7) take the shifted layout (`Shifted`):
/// stored straight where the plane is a whole number of 16-q tiles (8×8, 4×4, 30×24), through the q
/// layout where not (5×8: 40 outputs in 48 q; 7×24; 2×2: 4 in 16; 7×7: 49 in 64, an odd width, so
/// no filter gradient). The 4×4 and 2×2 maps and 8-channel layers are the tiny nets'
/// (4×4 at 32 channels; 8 → 8 and the 3 → 8 stem at 16×16), whose filter gradient runs in blocks
/// of 8 output channels (24 at 5×8: three of them; 8 at 32×32 with n = 10: chunks of 2 images, each
/// group one image).
///
/// With AVX-512, 32 and 64 output channels take the channel-lane tiles (`lanes`), which skip the
/// taps in the padding: among the shapes, planes of one row (1×16), one column (5×1), 2×2, 4×4, an
/// odd 7×5, and the nets' 16×16 and 8×8 (in the bit test below).
///
/// Filter gradient: a task sums one of ⌈n / per_chunk⌉ chunks of per_chunk = ⌈n / 8⌉ images, in
/// groups of per_flush = max(⌊1024 / hw⌋, 1) images (f32 sums, then f64):
/// - n = 20 at 8×8: per_flush 16, per_chunk 3: 7 chunks, the last of 2, each one group;
/// - n = 37 at 4×4: per_flush 64, per_chunk 5: 8 chunks, each one group (the last of 2 images);
/// - n = 37 at 16×16: per_flush 4, per_chunk 5: 8 chunks of groups 4 + 1, the last chunk 2 images;
/// - n = 11 at 32×32: per_flush 1, per_chunk 2: 6 chunks of 2 groups, the last chunk 1 image;
/// - n = 129 at 8×8: per_flush 16, per_chunk 17: 8 chunks of groups 16 + 1, the last chunk 10 images
///   (one ragged group);
/// - 40×32 (hw = 1280): per_flush 1, each group one image, 1280 pixels in one f32 sum.
///
/// (At batch 128 and 32×32, a chunk holds 16 groups of one image.)
const SHAPES: [ConvShape; 21] = [
    shape(3, 5, 7, 24, 16),
    shape(2, 8, 30, 24, 4),
    shape(2, 16, 32, 32, 16),
    shape(1, 3, 1, 40, 32),
    shape(20, 8, 8, 8, 16),
    shape(37, 4, 16, 16, 16),
    shape(11, 4, 32, 32, 16),
    shape(129, 4, 8, 8, 16),
    shape(3, 4, 40, 32, 16),
    shape(2, 8, 1, 16, 32),
    shape(2, 4, 1, 48, 16),
    shape(3, 8, 6, 48, 5),
    shape(37, 32, 4, 4, 32),
    shape(37, 8, 16, 16, 8),
    shape(5, 3, 16, 16, 8),
    shape(3, 8, 5, 8, 24),
    shape(10, 8, 32, 32, 8),
    shape(5, 16, 2, 2, 32),
    shape(3, 8, 7, 7, 16),
    shape(3, 32, 7, 5, 32),
    shape(2, 32, 5, 1, 64),
];

/// Stride-2 shapes (OH = ⌈H/2⌉ × OW = ⌈W/2⌉ outputs, rows of OW + 1 q).
///
/// Forward and backward data: odd and even H and W; OW = 8 (q layout: 9-q rows, 72 rounded to 80),
/// 12 and 24 (not multiples of 16: q layout), 16 and 32 (rows stored straight); one- and two-row
/// inputs (H = 1, 2: OH = 1, the phases of the missing rows all padding); odd OW = 9 (no filter
/// gradient); output channels 16, 32, 64 (AVX-512 tiles of 16), 24 (tiles of 8), 12 and 20 (tiles
/// of 4), 4; input channels 5 and 7 (not multiples of 4: no backward data, whose outputs they are);
/// the tiny nets' small outputs, 4 × 4 (8 → 4: 20 q in 32) and 2 × 2 (4 → 2: 6 q in 16), and 3 × 4.
///
/// Filter gradient (per_flush = max(⌊1024 / (OH·OW)⌋, 1) images per f32 group, per_chunk = ⌈n / 8⌉):
/// - n = 37 at 32×32 (OH·OW = 256): per_flush 4, per_chunk 5: 8 chunks of groups 4 + 1, the last
///   chunk 2 images;
/// - n = 129 at 16×16 (64 pixels): per_flush 16, per_chunk 17: 8 chunks of groups 16 + 1, the last
///   chunk 10 images (one ragged group);
/// - n = 11 at 64×64 (1024 pixels): per_flush 1, per_chunk 2: 6 chunks of 2 groups;
/// - 80×64 (40·32 = 1280 pixels): one image per group, 1280 pixels in one f32 sum.
const SHAPES2: [ConvShape; 17] = [
    shape2(3, 5, 15, 15, 16),
    shape2(2, 8, 17, 18, 4),
    shape2(37, 4, 32, 32, 16),
    shape2(129, 4, 16, 16, 16),
    shape2(11, 4, 64, 64, 16),
    shape2(2, 4, 80, 64, 16),
    shape2(3, 8, 20, 23, 32),
    shape2(2, 12, 31, 47, 24),
    shape2(2, 8, 1, 16, 16),
    shape2(3, 4, 2, 17, 12),
    shape2(2, 16, 32, 32, 32),
    shape2(3, 32, 16, 16, 64),
    shape2(2, 7, 9, 16, 20),
    shape2(4, 16, 15, 16, 32),
    shape2(37, 8, 8, 8, 16),
    shape2(5, 16, 4, 4, 32),
    shape2(3, 4, 5, 7, 8),
];

/// Compares every pass that applies on `shapes` with the f64 references; returns how many of each
/// (forward, backward data, backward filter) were compared.
fn compare_with_references(shapes: &[ConvShape], seed: u64) -> [usize; 3] {
    let mut passes = [0; 3];
    for (i, s) in shapes.iter().enumerate() {
        let mut g = rng(seed + i as u64);
        let (x32, w32, dy32) = (
            to_f32(&uniform(&mut g, s.x_len())),
            to_f32(&uniform(&mut g, s.w_len())),
            to_f32(&uniform(&mut g, s.y_len())),
        );
        let cpu = Cpu::<f64>::new();
        let [t_fwd, t_data, t_filter] = terms(s);

        if direct3x3::applies(s, s.c_out) {
            let mut y = vec![f32::NAN; s.y_len()];
            direct3x3::forward(s, &x32, &w32, &mut y);
            // The reference from the f32-rounded inputs, so that only the arithmetic is compared.
            let want = naive_conv(s, &to_f64(&x32), &to_f64(&w32));
            assert_close(&format!("direct forward {s:?}"), &y, &want, tol(t_fwd));
            passes[0] += 1;
        }

        if direct3x3::applies(s, s.c_in) {
            let (mut dx, mut want) = (vec![f32::NAN; s.x_len()], vec![f64::NAN; s.x_len()]);
            direct3x3::backward_data(s, &dy32, &w32, &mut dx);
            cpu.conv2d_backward_data(ConvBackwardData {
                s,
                dy: &to_f64(&dy32),
                w: &to_f64(&w32),
                dx: &mut want,
            });
            assert_close(&format!("direct backward data {s:?}"), &dx, &want, tol(t_data));
            passes[1] += 1;
        }

        if direct3x3::applies_to_filter(s) {
            let (mut dw, mut want) = (vec![f32::NAN; s.w_len()], vec![f64::NAN; s.w_len()]);
            direct3x3::backward_filter(s, &x32, &dy32, &mut dw);
            cpu.conv2d_backward_filter(ConvBackwardFilter {
                s,
                x: &to_f64(&x32),
                dy: &to_f64(&dy32),
                dw: &mut want,
            });
            assert_close(&format!("direct backward filter {s:?}"), &dw, &want, tol(t_filter));
            passes[2] += 1;
        }
    }
    passes
}

#[test]
fn direct_convolutions_match_the_f64_references() {
    if !cpu_has_direct_path() {
        eprintln!("skipped: this CPU lacks AVX2 or FMA, so the direct path is never used");
        return;
    }
    let passes = compare_with_references(&SHAPES, 900);
    assert_eq!(passes, [20, 18, 16], "passes compared (forward, backward data, backward filter)");
}

#[test]
fn direct_stride_2_convolutions_match_the_f64_references() {
    if !cpu_has_direct_path() {
        eprintln!("skipped: this CPU lacks AVX2 or FMA, so the direct path is never used");
        return;
    }
    // Several f32 groups in one filter chunk, as the shapes' doc says.
    let s = SHAPES2[2];
    assert!(s.n.div_ceil(FILTER_CHUNKS) > 1024 / (s.out_h() * s.out_w()), "{s:?}: one group per chunk");
    let passes = compare_with_references(&SHAPES2, 1900);
    assert_eq!(passes, [17, 15, 14], "passes compared (forward, backward data, backward filter)");
}

/// The three passes through `Cpu<T>`, outputs starting as NaN, widened to f64.
fn backend_passes<T: Real>(s: &ConvShape, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
    let (cpu, t) = (Cpu::<T>::new(), |v: &[f64]| v.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>());
    let (x, w, dy) = (t(x), t(w), t(dy));
    let (mut y, mut dx, mut dw) =
        (vec![T::nan(); s.y_len()], vec![T::nan(); s.x_len()], vec![T::nan(); s.w_len()]);
    cpu.conv2d_forward(ConvForward { s, x: &x, w: &w, y: &mut y });
    cpu.conv2d_backward_data(ConvBackwardData { s, dy: &dy, w: &w, dx: &mut dx });
    cpu.conv2d_backward_filter(ConvBackwardFilter { s, x: &x, dy: &dy, dw: &mut dw });
    [to_f64(&y), to_f64(&dx), to_f64(&dw)]
}

/// Without input channels (forward, filter gradient) or output channels (backward data), every
/// output is an empty sum: zeros from im2col + GEMM (`Cpu<f64>`), and the same from the direct path
/// (`Cpu<f32>`), at stride 1 and 2.
#[test]
fn zero_channels_give_zeros_on_the_direct_path_as_on_im2col() {
    let (no_in, no_out) = (shape(2, 0, 8, 8, 16), shape(2, 8, 8, 8, 0));
    let (no_in2, no_out2) = (shape2(2, 0, 16, 16, 16), shape2(2, 8, 16, 16, 0));
    for (no_in, no_out) in [(no_in, no_out), (no_in2, no_out2)] {
        let direct = [
            direct3x3::applies(&no_in, 16),
            direct3x3::applies_to_filter(&no_in),
            direct3x3::applies(&no_out, 8),
        ];
        assert_eq!(
            direct,
            [cpu_has_direct_path(); 3],
            "forward and filter without inputs, data without outputs"
        );
    }
    for (i, s) in [no_in, no_out, no_in2, no_out2].iter().enumerate() {
        let mut g = rng(960 + i as u64);
        let (x, w, dy) = (uniform(&mut g, s.x_len()), uniform(&mut g, s.w_len()), uniform(&mut g, s.y_len()));
        let im2col = backend_passes::<f64>(s, &x, &w, &dy);
        assert!(im2col.iter().flatten().all(|&v| v == 0.0), "{s:?}: im2col gives zeros");
        assert_eq!(backend_passes::<f32>(s, &x, &w, &dy), im2col, "{s:?}: direct (f32) and im2col (f64)");
    }
    // The empty outputs: y without output channels, dx without input channels, dw for both.
    assert_eq!([no_out.y_len(), no_in.x_len(), no_in.w_len(), no_out.w_len()], [0; 4]);
    assert_eq!([no_out2.y_len(), no_in2.x_len(), no_in2.w_len(), no_out2.w_len()], [0; 4]);
}

/// `backward_filter` is safe, and in bounds only where it applies (an even output width, among
/// others): it panics elsewhere, in release builds too, before reading anything. The same for the
/// other two passes where they do not apply.
#[test]
fn the_direct_passes_panic_where_they_do_not_apply() {
    let base = shape(2, 4, 8, 8, 16);
    let cases = [
        ConvShape { w: 7, ..base },
        ConvShape { h: 1, w: 3, ..base },
        ConvShape { c_out: 12, ..base },
        ConvShape { stride: 2, w: 2, ..base },
        ConvShape { stride: 2, w: 18, ..base },
        ConvShape { stride: 3, w: 32, ..base },
        ConvShape { kernel: 5, pad: 2, ..base },
    ];
    for s in cases {
        assert!(!direct3x3::applies_to_filter(&s), "{s:?}");
        let (x, dy) = (vec![1.0f32; s.x_len()], vec![1.0f32; s.y_len()]);
        let mut dw = vec![0.0f32; s.w_len()];
        assert!(panics(move || direct3x3::backward_filter(&s, &x, &dy, &mut dw)), "{s:?}");
    }
    // Stride 2 with 1 output column, and with 2 output pixels; stride 3; 6 channels (not a
    // multiple of 4).
    for s in [
        shape2(2, 8, 8, 2, 16),
        shape2(2, 8, 2, 4, 16),
        ConvShape { stride: 3, ..shape(2, 8, 8, 32, 16) },
        shape2(2, 6, 16, 16, 6),
    ] {
        assert!(!direct3x3::applies(&s, s.c_out) && !direct3x3::applies(&s, s.c_in), "{s:?}");
        let (x, w, dy) = (vec![1.0f32; s.x_len()], vec![1.0f32; s.w_len()], vec![1.0f32; s.y_len()]);
        let (mut y, mut dx) = (vec![0.0f32; s.y_len()], vec![0.0f32; s.x_len()]);
        let (xc, wc) = (x.clone(), w.clone());
        assert!(panics(move || direct3x3::forward(&s, &xc, &wc, &mut y)), "{s:?}");
        assert!(panics(move || direct3x3::backward_data(&s, &dy, &w, &mut dx)), "{s:?}");
    }
}

/// The f32 backend takes the direct path for 3×3 stride-1 convs on planes a multiple of 8 wide or of
/// at least 4 pixels and for 3×3 stride-2 convs with at least 2 output columns and 4 output pixels,
/// all three passes, and agrees with the reference there; everything else (stride 2 with 1 output
/// column or 2 output pixels, stride 3, stride-1 planes of fewer than 4 pixels, 1×1, output
/// channels not a multiple of 4) stays on im2col.
#[test]
fn the_direct_path_is_taken_exactly_where_it_applies() {
    let wide_3x3 = SHAPES[2];
    let has = cpu_has_direct_path();
    let cases = [
        (ConvShape { stride: 2, ..wide_3x3 }, has),
        (ConvShape { stride: 2, w: 15, ..wide_3x3 }, has),
        (ConvShape { stride: 2, w: 14, ..wide_3x3 }, has),
        (ConvShape { stride: 2, h: 8, w: 8, ..wide_3x3 }, has),
        (ConvShape { stride: 2, h: 4, w: 4, ..wide_3x3 }, has),
        (ConvShape { stride: 2, w: 2, ..wide_3x3 }, false),
        (ConvShape { stride: 2, h: 2, w: 4, ..wide_3x3 }, false),
        (ConvShape { stride: 3, ..wide_3x3 }, false),
        (ConvShape { h: 4, w: 4, ..wide_3x3 }, has),
        (ConvShape { h: 2, w: 2, ..wide_3x3 }, has),
        (ConvShape { h: 31, w: 28, ..wide_3x3 }, has),
        (ConvShape { h: 1, w: 3, ..wide_3x3 }, false),
        (ConvShape { h: 3, w: 1, ..wide_3x3 }, false),
        (ConvShape { w: 28, ..wide_3x3 }, has),
        (ConvShape { kernel: 1, pad: 0, ..wide_3x3 }, false),
        (ConvShape { kernel: 1, pad: 0, stride: 2, ..wide_3x3 }, false),
        (ConvShape { c_out: 6, ..wide_3x3 }, false),
        (ConvShape { c_out: 6, stride: 2, ..wide_3x3 }, false),
        (wide_3x3, has),
    ];
    for (s, direct) in cases {
        assert_eq!(direct3x3::applies(&s, s.c_out), direct, "{s:?}");
    }
    for (i, s) in [wide_3x3, ConvShape { stride: 2, ..wide_3x3 }, shape2(3, 8, 15, 17, 16)].iter().enumerate()
    {
        let mut g = rng(950 + i as u64);
        let (x, w, dy) = (
            to_f32(&uniform(&mut g, s.x_len())),
            to_f32(&uniform(&mut g, s.w_len())),
            to_f32(&uniform(&mut g, s.y_len())),
        );
        let via_backend = backend_passes::<f32>(s, &to_f64(&x), &to_f64(&w), &to_f64(&dy));
        let (mut y, mut dx, mut dw) =
            (vec![0.0f32; s.y_len()], vec![0.0f32; s.x_len()], vec![0.0f32; s.w_len()]);
        let mut taken = [false; 3];
        if direct3x3::applies(s, s.c_out) {
            direct3x3::forward(s, &x, &w, &mut y);
            taken[0] = to_f64(&y) == via_backend[0];
        }
        if direct3x3::applies(s, s.c_in) {
            direct3x3::backward_data(s, &dy, &w, &mut dx);
            taken[1] = to_f64(&dx) == via_backend[1];
        }
        if direct3x3::applies_to_filter(s) {
            direct3x3::backward_filter(s, &x, &dy, &mut dw);
            taken[2] = to_f64(&dw) == via_backend[2];
        }
        // All three passes apply to the first two shapes, forward and data to the third (9 output
        // columns: no filter gradient).
        let want = [has, has, has && i < 2];
        assert_eq!(taken, want, "{s:?}: passes through the direct path (forward, data, filter)");
        assert!(rel_err(&via_backend[0], &naive_conv(s, &to_f64(&x), &to_f64(&w))) < tol(9 * s.c_in));
    }
}

/// The AVX-512 kernels give the AVX2 kernels' bits, on every shape above, for all three passes:
/// every output is the same sequence of f32 operations in both (docs/PERFORMANCE.md). Skipped on a
/// CPU without AVX-512F.
#[test]
fn the_avx512_kernels_give_the_avx2_bits() {
    use direct3x3::Simd;
    if !direct3x3::supported(Simd::Avx512) {
        eprintln!("skipped: this CPU lacks AVX-512F (or AVX2 and FMA)");
        return;
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let mut passes = [0; 3];
    // The shapes above, and the nets' 16-, 32- and 64-channel layers (AVX-512 tiles of 16 output
    // channels; the shapes above have tiles of 16, 8 and 4), and their stride-2 convs.
    let nets = [
        shape(3, 16, 32, 32, 16),
        shape(5, 32, 16, 16, 32),
        shape(9, 64, 8, 8, 64),
        shape(4, 8, 8, 8, 24),
        shape2(3, 16, 32, 32, 32),
        shape2(5, 32, 16, 16, 64),
    ];
    for (i, s) in SHAPES.iter().chain(&SHAPES2).chain(&nets).enumerate() {
        let mut g = rng(970 + i as u64);
        let (x, w, dy) = (
            to_f32(&uniform(&mut g, s.x_len())),
            to_f32(&uniform(&mut g, s.w_len())),
            to_f32(&uniform(&mut g, s.y_len())),
        );
        let run = |isa: Simd| {
            let (mut y, mut dx, mut dw) =
                (vec![f32::NAN; s.y_len()], vec![f32::NAN; s.x_len()], vec![f32::NAN; s.w_len()]);
            if direct3x3::applies(s, s.c_out) {
                direct3x3::forward_with(isa, s, &x, &w, &mut y);
            }
            if direct3x3::applies(s, s.c_in) {
                direct3x3::backward_data_with(isa, s, &dy, &w, &mut dx);
            }
            if direct3x3::applies_to_filter(s) {
                direct3x3::backward_filter_with(isa, s, &x, &dy, &mut dw);
            }
            [bits(&y), bits(&dx), bits(&dw)]
        };
        let (avx2, avx512) = (run(Simd::Avx2), run(Simd::Avx512));
        for (pass, (a, b)) in avx2.iter().zip(&avx512).enumerate() {
            assert!(a == b, "{s:?}: pass {pass} differs between AVX2 and AVX-512");
            passes[pass] += usize::from(!f32::from_bits(a[0]).is_nan());
        }
    }
    assert_eq!(passes, [43, 39, 36], "passes compared (forward, backward data, backward filter)");
}
