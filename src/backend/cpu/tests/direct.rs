//! The direct 3×3 convolutions (f32, AVX2 + FMA) against the f64 references: the naive loop for the
//! forward pass, the f64 im2col backend (itself checked by finite differences in gradcheck.rs) for
//! the two backward passes.
//!
//! Tolerance: each output is one f32 FMA chain of K = 9·c_in terms (forward, data), or per image a
//! sum of ≤ H·W/8 = 128 terms in each of 8 f32 lanes, then f64 (filter). With inputs in U(−1, 1) the
//! rounding error of such a sum is a random walk of about √(terms)·u·|term| ≤ √288·6e-8 ≈ 1e-6 of
//! the largest output; 2e-6 allows for it, while a wrong tap, offset or flip errs at O(1).

use super::reference::naive_conv;
use super::{assert_close, rel_err, rng, to_f32, to_f64, uniform, Cpu};
use crate::backend::cpu::direct3x3;
use crate::backend::{Backend, ConvShape};

const TOL: f64 = 2e-6;

/// Shapes for the direct path: ragged q (7 rows of 24 + 2 is not a multiple of the 16-q tile), a
/// tall and a one-row plane, the first CIFAR stage, input channel counts that are and are not
/// multiples of 4 (the filter gradient's tasks take 4), 4 output channels (no filter gradient: not
/// a multiple of 16), and 8×8 planes over 20 images (the filter gradient's f32 partial sums span 16
/// images there, so a ragged last group).
const SHAPES: [ConvShape; 5] = [
    ConvShape { n: 3, c_in: 5, h: 7, w: 24, c_out: 16, kernel: 3, stride: 1, pad: 1 },
    ConvShape { n: 2, c_in: 8, h: 30, w: 24, c_out: 4, kernel: 3, stride: 1, pad: 1 },
    ConvShape { n: 2, c_in: 16, h: 32, w: 32, c_out: 16, kernel: 3, stride: 1, pad: 1 },
    ConvShape { n: 1, c_in: 3, h: 1, w: 40, c_out: 32, kernel: 3, stride: 1, pad: 1 },
    ConvShape { n: 20, c_in: 8, h: 8, w: 8, c_out: 16, kernel: 3, stride: 1, pad: 1 },
];

#[test]
fn direct_convolutions_match_the_f64_references() {
    if !direct3x3::applies(&SHAPES[0], 8) {
        eprintln!("skipped: this CPU lacks AVX2 or FMA, so the direct path is never used");
        return;
    }
    for (i, s) in SHAPES.iter().enumerate() {
        let mut g = rng(900 + i as u64);
        let (x32, w32, dy32) = (
            to_f32(&uniform(&mut g, s.x_len())),
            to_f32(&uniform(&mut g, s.w_len())),
            to_f32(&uniform(&mut g, s.y_len())),
        );
        let cpu = Cpu::<f64>::new();

        let mut y = vec![f32::NAN; s.y_len()];
        direct3x3::forward(s, &x32, &w32, &mut y);
        // The reference from the f32-rounded inputs, so that only the arithmetic is compared.
        assert_close(&format!("direct forward {s:?}"), &y, &naive_conv(s, &to_f64(&x32), &to_f64(&w32)), TOL);

        if direct3x3::applies(s, s.c_in) {
            let (mut dx, mut want) = (vec![f32::NAN; s.x_len()], vec![f64::NAN; s.x_len()]);
            direct3x3::backward_data(s, &dy32, &w32, &mut dx);
            cpu.conv2d_backward_data(s, &to_f64(&dy32), &to_f64(&w32), &mut want);
            assert_close(&format!("direct backward data {s:?}"), &dx, &want, TOL);
        }

        if !direct3x3::applies_to_filter(s) {
            continue;
        }
        let (mut dw, mut want) = (vec![f32::NAN; s.w_len()], vec![f64::NAN; s.w_len()]);
        direct3x3::backward_filter(s, &x32, &dy32, &mut dw);
        cpu.conv2d_backward_filter(s, &to_f64(&x32), &to_f64(&dy32), &mut want);
        assert_close(&format!("direct backward filter {s:?}"), &dw, &want, TOL);
    }
}

/// The f32 backend takes the direct path for 3×3 stride-1 convs on planes a multiple of 8 wide and
/// agrees with the reference there; everything else (stride 2, 4×4 planes, widths like 28, 1×1,
/// output channels not a multiple of 4) stays on im2col.
#[test]
fn the_direct_path_is_taken_exactly_where_it_applies() {
    let wide_3x3 = SHAPES[2];
    let cases = [
        (ConvShape { stride: 2, ..wide_3x3 }, false),
        (ConvShape { h: 4, w: 4, ..wide_3x3 }, false),
        (ConvShape { w: 28, ..wide_3x3 }, false),
        (ConvShape { kernel: 1, pad: 0, ..wide_3x3 }, false),
        (ConvShape { c_out: 6, ..wide_3x3 }, false),
        (wide_3x3, direct3x3::applies(&SHAPES[0], 8)),
    ];
    for (s, direct) in cases {
        assert_eq!(direct3x3::applies(&s, s.c_out), direct, "{s:?}");
    }
    let s = wide_3x3;
    let mut g = rng(950);
    let (x, w) = (to_f32(&uniform(&mut g, s.x_len())), to_f32(&uniform(&mut g, s.w_len())));
    let (mut via_backend, mut direct) = (vec![0.0f32; s.y_len()], vec![0.0f32; s.y_len()]);
    Cpu::<f32>::new().conv2d_forward(&s, &x, &w, &mut via_backend);
    if direct3x3::applies(&s, s.c_out) {
        direct3x3::forward(&s, &x, &w, &mut direct);
        assert_eq!(via_backend, direct, "the f32 backend should use the direct path here");
    }
    assert!(rel_err(&via_backend, &naive_conv(&s, &to_f64(&x), &to_f64(&w))) < TOL);
}
