//! Finite-difference gradient checks in f64 for every op with a backward, on L = ⟨op(x), r⟩ for a
//! random r. Gradient outputs start as NaN, which also checks that the backward ops overwrite.

use super::{bn_backward, bn_forward, check_gradient, dot, rng, uniform, Cpu};
use crate::backend::{
    Backend, BnShape, ConvBackwardData, ConvBackwardFilter, ConvForward, ConvShape, LinearBackward,
    LinearForward, LinearShape, LossShape, PoolBackward, PoolForward, PoolShape, ShortcutBackward,
    ShortcutForward, ShortcutShape, SoftmaxXent,
};

fn cpu() -> Cpu<f64> {
    Cpu::new()
}

/// conv(x, w) contracted with r.
fn conv_loss(s: &ConvShape, x: &[f64], w: &[f64], r: &[f64]) -> f64 {
    let mut y = vec![f64::NAN; s.y_len()];
    cpu().conv2d_forward(ConvForward { s, x, w, y: &mut y });
    dot(&y, r)
}

/// [n, c_in, h, w, c_out, kernel, stride, pad].
const fn conv([n, c_in, h, w, c_out, kernel, stride, pad]: [usize; 8]) -> ConvShape {
    ConvShape { n, c_in, h, w, c_out, kernel, stride, pad }
}

/// Odd and even sizes, kernel 1/3/5, stride 1/2/3, padding 0/1/2, c_in ≠ c_out.
pub(super) const CONV_SHAPES: [ConvShape; 8] = [
    conv([2, 3, 7, 6, 4, 3, 1, 1]),
    conv([2, 3, 7, 7, 5, 3, 2, 1]),
    conv([2, 2, 8, 6, 3, 3, 2, 1]),
    conv([1, 2, 5, 6, 3, 3, 1, 0]),
    conv([2, 3, 8, 7, 2, 3, 2, 0]),
    conv([2, 4, 6, 5, 2, 1, 2, 0]),
    conv([3, 2, 5, 5, 3, 1, 1, 0]),
    conv([1, 2, 7, 8, 2, 5, 3, 2]),
];

#[test]
fn conv_gradients() {
    for (i, s) in CONV_SHAPES.iter().enumerate() {
        let mut g = rng(100 + i as u64);
        let (x, w, r) = (uniform(&mut g, s.x_len()), uniform(&mut g, s.w_len()), uniform(&mut g, s.y_len()));
        let mut dx = vec![f64::NAN; s.x_len()];
        let mut dw = vec![f64::NAN; s.w_len()];
        cpu().conv2d_backward_data(ConvBackwardData { s, dy: &r, w: &w, dx: &mut dx });
        cpu().conv2d_backward_filter(ConvBackwardFilter { s, x: &x, dy: &r, dw: &mut dw });
        check_gradient(&format!("conv dx {s:?}"), &x, &dx, |x| conv_loss(s, x, &w, &r));
        check_gradient(&format!("conv dw {s:?}"), &w, &dw, |w| conv_loss(s, &x, w, &r));
    }
}

fn bn_loss(s: &BnShape, x: &[f64], affine: &[f64], r: &[f64]) -> f64 {
    let (y, _) = bn_forward(s, x, affine, &mut vec![0.0; 2 * s.c]);
    dot(&y, r)
}

fn bn_gradients(relu: bool, seed: u64) {
    let s = BnShape { n: 3, c: 4, hw: 5, eps: 1e-5, momentum: 0.1, relu };
    let mut g = rng(seed);
    // Channels with distinct means and scales; γ away from 0, β around 0 so ReLU cuts about half.
    let x: Vec<f64> = uniform(&mut g, s.len())
        .iter()
        .enumerate()
        .map(|(i, v)| 2.0 * v + ((i / s.hw) % s.c) as f64 - 1.5)
        .collect();
    let affine: Vec<f64> =
        (0..2 * s.c).map(|i| if i < s.c { 0.5 + i as f64 * 0.3 } else { 0.1 * i as f64 - 0.6 }).collect();
    let r = uniform(&mut g, s.len());

    let mut running = vec![0.0; 2 * s.c];
    let (y, saved) = bn_forward(&s, &x, &affine, &mut running);
    if relu {
        // The pre-activations must stay clear of the kink for the differences to be valid.
        let linear = BnShape { relu: false, ..s };
        let (pre, _) = bn_forward(&linear, &x, &affine, &mut running.clone());
        assert!(pre.iter().all(|v| v.abs() > 1e-3), "a pre-activation sits at the ReLU kink");
        assert!(y.iter().filter(|&&v| v == 0.0).count() >= 4, "ReLU should cut some outputs");
    }
    let (dx, d_affine) = bn_backward(&s, [&x, &y, &r, &affine, &saved]);
    check_gradient(&format!("bn dx relu={relu}"), &x, &dx, |x| bn_loss(&s, x, &affine, &r));
    check_gradient(&format!("bn d_affine relu={relu}"), &affine, &d_affine, |a| bn_loss(&s, &x, a, &r));
}

#[test]
fn batchnorm_gradients() {
    bn_gradients(false, 7);
}

#[test]
fn batchnorm_relu_gradients() {
    bn_gradients(true, 8);
}

#[test]
fn linear_gradients() {
    let (n, inp, out) = (3, 5, 4);
    let mut g = rng(9);
    let (x, params, r) =
        (uniform(&mut g, n * inp), uniform(&mut g, out * inp + out), uniform(&mut g, n * out));
    let loss = |x: &[f64], p: &[f64]| {
        let mut y = vec![f64::NAN; n * out];
        cpu().linear_forward(LinearForward { s: LinearShape { n, inp, out }, x, params: p, y: &mut y });
        dot(&y, &r)
    };
    let (mut dx, mut dp) = (vec![f64::NAN; n * inp], vec![f64::NAN; params.len()]);
    cpu().linear_backward(LinearBackward {
        s: LinearShape { n, inp, out },
        x: &x,
        params: &params,
        dy: &r,
        dx: &mut dx,
        d_params: &mut dp,
    });
    check_gradient("linear dx", &x, &dx, |x| loss(x, &params));
    check_gradient("linear d_params", &params, &dp, |p| loss(&x, p));
}

#[test]
fn avgpool_gradient() {
    let s = PoolShape { n: 2, c: 3, hw: 7 };
    let mut g = rng(10);
    let (x, r) = (uniform(&mut g, s.n * s.c * s.hw), uniform(&mut g, s.n * s.c));
    let mut dx = vec![f64::NAN; x.len()];
    cpu().avgpool_backward(PoolBackward { s: &s, dy: &r, dx: &mut dx });
    check_gradient("avgpool dx", &x, &dx, |x| {
        let mut y = vec![f64::NAN; r.len()];
        cpu().avgpool_forward(PoolForward { s: &s, x, y: &mut y });
        dot(&y, &r)
    });
}

#[test]
fn softmax_cross_entropy_gradient() {
    let (n, classes) = (4, 5);
    let mut g = rng(11);
    let logits: Vec<f64> = uniform(&mut g, n * classes).iter().map(|v| 3.0 * v).collect();
    let labels = vec![0, 4, 2, 2];
    let mean_loss = |z: &[f64]| {
        let mut d = vec![0.0; z.len()];
        cpu()
            .softmax_cross_entropy(SoftmaxXent {
                s: LossShape { n, classes },
                logits: z,
                labels: &labels,
                dlogits: &mut d,
            })
            .unwrap()
            .loss_sum
            / n as f64
    };
    let mut dz = vec![f64::NAN; logits.len()];
    cpu()
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n, classes },
            logits: &logits,
            labels: &labels,
            dlogits: &mut dz,
        })
        .unwrap();
    check_gradient("softmax-CE dlogits", &logits, &dz, mean_loss);
}

/// The shortcut is linear, so its backward must be its adjoint: ⟨S x, y⟩ = ⟨x, Sᵀ y⟩. Also checks
/// that the backward accumulates into dx.
#[test]
fn shortcut_adjoint() {
    let shapes = [
        ShortcutShape { n: 2, c_in: 3, h: 5, w: 5, c_out: 6, stride: 2 },
        ShortcutShape { n: 2, c_in: 3, h: 6, w: 4, c_out: 8, stride: 2 },
        ShortcutShape { n: 1, c_in: 3, h: 4, w: 5, c_out: 3, stride: 1 },
        ShortcutShape { n: 2, c_in: 2, h: 7, w: 6, c_out: 5, stride: 3 },
    ];
    for (i, s) in shapes.iter().enumerate() {
        let mut g = rng(20 + i as u64);
        let x_len = s.n * s.c_in * s.h * s.w;
        let (x, y, base) = (
            uniform(&mut g, x_len),
            uniform(&mut g, s.n * s.c_out * s.out_h() * s.out_w()),
            uniform(&mut g, x_len),
        );
        let mut sx = vec![f64::NAN; y.len()];
        cpu().shortcut_forward(ShortcutForward { s, x: &x, y: &mut sx });
        let mut sty = vec![0.0; x_len];
        cpu().shortcut_backward_acc(ShortcutBackward { s, dy: &y, dx: &mut sty });
        let (lhs, rhs) = (dot(&sx, &y), dot(&x, &sty));
        assert!((lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0), "{s:?}: ⟨Sx, y⟩ = {lhs} ≠ ⟨x, Sᵀy⟩ = {rhs}");
        // Each input element receives at most one term, so accumulating onto `base` is exact.
        let mut acc = base.clone();
        cpu().shortcut_backward_acc(ShortcutBackward { s, dy: &y, dx: &mut acc });
        assert!(acc.iter().zip(&base).zip(&sty).all(|((a, b), t)| *a == b + t), "{s:?}: not accumulated");
    }
}
