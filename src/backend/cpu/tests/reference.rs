//! Forward ops against naive loops written from the definitions, the optimizer against a
//! per-element loop, the loss against hand values, and the f32 backend against the f64 one.

use super::{
    assert_close, bn_forward, cpu_has_direct_path, rng, sgd_with_sums, to_f32, to_f64, uniform, Cpu,
};
use crate::backend::cpu::direct3x3;
use crate::backend::{
    AddAssign, Backend, BnBackward, BnEval, BnShape, BnTrain, ConvBackwardData, ConvBackwardFilter,
    ConvForward, ConvShape, LinearBackward, LinearForward, LinearShape, LossShape, PoolBackward, PoolForward,
    PoolShape, Real, Segment, SgdStep, ShortcutForward, ShortcutShape, SoftmaxXent, SoftmaxXentEval,
    StepSums,
};

/// The definition: y[b][co][oh][ow] = Σ_{ci,ki,kj} x[b][ci][oh·s+ki−p][ow·s+kj−p] · w[co][ci][ki][kj].
pub(super) fn naive_conv(s: &ConvShape, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (oh_n, ow_n, k) = (s.out_h(), s.out_w(), s.kernel);
    let mut y = vec![0.0; s.y_len()];
    for b in 0..s.n {
        for co in 0..s.c_out {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = 0.0;
                    for ci in 0..s.c_in {
                        for ki in 0..k {
                            for kj in 0..k {
                                let ih = (oh * s.stride + ki) as isize - s.pad as isize;
                                let iw = (ow * s.stride + kj) as isize - s.pad as isize;
                                if ih < 0 || iw < 0 || ih >= s.h as isize || iw >= s.w as isize {
                                    continue;
                                }
                                let xi = ((b * s.c_in + ci) * s.h + ih as usize) * s.w + iw as usize;
                                acc += x[xi] * w[((co * s.c_in + ci) * k + ki) * k + kj];
                            }
                        }
                    }
                    y[((b * s.c_out + co) * oh_n + oh) * ow_n + ow] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn conv_forward_matches_naive() {
    let extra = ConvShape { n: 3, c_in: 16, h: 9, w: 9, c_out: 8, kernel: 3, stride: 1, pad: 1 };
    for (i, s) in super::gradcheck::CONV_SHAPES.iter().chain([&extra]).enumerate() {
        let mut g = rng(200 + i as u64);
        let (x, w) = (uniform(&mut g, s.x_len()), uniform(&mut g, s.w_len()));
        let mut y = vec![f64::NAN; s.y_len()];
        Cpu::<f64>::new().conv2d_forward(ConvForward { s, x: &x, w: &w, y: &mut y });
        assert_close(&format!("conv forward {s:?}"), &y, &naive_conv(s, &x, &w), 1e-14);
    }
}

/// Per-channel values of an [n][c][hw] tensor.
fn channel(s: &BnShape, x: &[f64], c: usize) -> Vec<f64> {
    (0..s.n).flat_map(|b| x[(b * s.c + c) * s.hw..][..s.hw].to_vec()).collect()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64)
}

#[test]
fn batchnorm_train_forward_statistics() {
    let s = BnShape { n: 8, c: 3, hw: 16, eps: 1e-5, momentum: 0.1, relu: false };
    let mut g = rng(30);
    let x: Vec<f64> = uniform(&mut g, s.len())
        .iter()
        .enumerate()
        .map(|(i, v)| 3.0 * v + ((i / s.hw) % s.c) as f64)
        .collect();
    let affine = [0.5, 1.5, -2.0, 0.3, -1.0, 2.0];
    let running0 = [0.2, -0.1, 0.4, 1.5, 0.7, 2.0];
    let mut running = running0.to_vec();
    let (y, saved) = bn_forward(&s, &x, &affine, &mut running);

    let m = (s.n * s.hw) as f64;
    for c in 0..s.c {
        let (mean, var) = mean_var(&channel(&s, &x, c));
        let (gamma, beta) = (affine[c], affine[s.c + c]);
        let (y_mean, y_var) = mean_var(&channel(&s, &y, c));
        assert!((y_mean - beta).abs() < 1e-12, "channel {c}: mean of y {y_mean} ≠ β {beta}");
        let want = gamma * gamma * var / (var + s.eps);
        assert!((y_var - want).abs() < 1e-12 * want, "channel {c}: var of y {y_var} ≠ γ²σ²/(σ²+ε) {want}");
        assert!(
            (saved[c] - mean).abs() < 1e-14 && (saved[s.c + c] - 1.0 / (var + s.eps).sqrt()).abs() < 1e-12
        );
        let want_rm = 0.9 * running0[c] + 0.1 * mean;
        let want_rv = 0.9 * running0[s.c + c] + 0.1 * var * m / (m - 1.0);
        assert!((running[c] - want_rm).abs() < 1e-14, "running mean {c}: {} ≠ {want_rm}", running[c]);
        assert!(
            (running[s.c + c] - want_rv).abs() < 1e-14,
            "running var {c}: {} ≠ {want_rv}",
            running[s.c + c]
        );
    }
}

#[test]
fn batchnorm_eval_and_relu_by_hand() {
    let s = BnShape { n: 2, c: 2, hw: 3, eps: 1e-3, momentum: 0.1, relu: true };
    let x = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0, 2.5, -0.5, 1.0, 4.0, -3.0];
    let affine = [2.0, 0.5, -0.25, 1.0];
    let running = [0.5, 1.0, 4.0, 0.25];
    let mut y = vec![f64::NAN; x.len()];
    Cpu::<f64>::new().batchnorm_forward_eval(BnEval {
        s: &s,
        x: &x,
        affine: &affine,
        running: &running,
        y: &mut y,
    });
    for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
        let c = (i / s.hw) % s.c;
        let pre = affine[c] * (xv - running[c]) / (running[s.c + c] + s.eps).sqrt() + affine[s.c + c];
        assert!((yv - pre.max(0.0)).abs() < 1e-14, "element {i}: {yv} ≠ {}", pre.max(0.0));
    }
    assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0));
}

#[test]
fn shortcut_forward_by_hand() {
    // c_out − c_in = 3: the input channels land at offset 1 (channel_offset rounds down).
    let s = ShortcutShape { n: 2, c_in: 2, h: 3, w: 4, c_out: 5, stride: 2 };
    let x: Vec<f64> = (0..s.n * s.c_in * s.h * s.w).map(|i| i as f64 + 1.0).collect();
    let (oh, ow) = (s.out_h(), s.out_w());
    assert_eq!((oh, ow), (2, 2));
    let mut y = vec![f64::NAN; s.n * s.c_out * oh * ow];
    Cpu::<f64>::new().shortcut_forward(ShortcutForward { s: &s, x: &x, y: &mut y });
    for b in 0..s.n {
        for co in 0..s.c_out {
            for i in 0..oh {
                for j in 0..ow {
                    let got = y[((b * s.c_out + co) * oh + i) * ow + j];
                    let want = if (1..3).contains(&co) {
                        x[((b * s.c_in + co - 1) * s.h + 2 * i) * s.w + 2 * j]
                    } else {
                        0.0
                    };
                    assert_eq!(got, want, "y[{b}][{co}][{i}][{j}]");
                }
            }
        }
    }
}

#[test]
fn add_assign_and_avgpool_by_hand() {
    let cpu = Cpu::<f64>::new();
    let mut y = vec![1.0, 2.0, 3.0];
    cpu.add_assign(AddAssign { y: &mut y, x: &[0.5, -2.0, 1.0] });
    assert_eq!(y, [1.5, 0.0, 4.0]);
    let s = PoolShape { n: 1, c: 2, hw: 4 };
    let mut p = vec![f64::NAN; 2];
    cpu.avgpool_forward(PoolForward { s: &s, x: &[1.0, 2.0, 3.0, 6.0, -1.0, 1.0, 0.0, 4.0], y: &mut p });
    assert_eq!(p, [3.0, 1.0]);
    let mut dx = vec![f64::NAN; 8];
    cpu.avgpool_backward(PoolBackward { s: &s, dy: &[4.0, -2.0], dx: &mut dx });
    assert_eq!(dx, [1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5]);
}

#[test]
fn softmax_cross_entropy_by_hand() {
    let cpu = Cpu::<f64>::new();
    // Sample 0: a tie between classes 1 and 2 (arg-max 1, the label: correct); sample 1: huge
    // logits, which a naive exp would overflow; sample 2: label 0 is not the arg-max.
    let logits = [0.0, 3.0, 3.0, 1000.0, 0.0, 999.0, 1.0, 2.0, -1.0];
    let labels = vec![1, 2, 0];
    let mut d = vec![f64::NAN; 9];
    let sums = cpu
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n: 3, classes: 3 },
            logits: &logits,
            labels: &labels,
            dlogits: &mut d,
        })
        .unwrap();
    let l0 = (1.0 + 2.0 * 3f64.exp()).ln() - 3.0;
    let l1 = 1.0 + (1.0 + (-1.0f64).exp() + (-1000.0f64).exp()).ln();
    let l2 = (1f64.exp() + 2f64.exp() + (-1f64).exp()).ln() - 1.0;
    assert!((sums.loss_sum - (l0 + l1 + l2)).abs() < 1e-12, "{} ≠ {}", sums.loss_sum, l0 + l1 + l2);
    assert_eq!(sums.correct, 1);
    // dlogits rows sum to zero; the label entry is (p − 1)/n.
    for row in d.chunks(3) {
        assert!(row.iter().sum::<f64>().abs() < 1e-15);
    }
    assert!((d[1] - ((-l0).exp() - 1.0) / 3.0).abs() < 1e-15);

    let mut preds = vec![9; 3];
    let eval = cpu
        .softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n: 3, classes: 3 },
            logits: &logits,
            labels: &labels,
            predictions: &mut preds,
        })
        .unwrap();
    assert_eq!(eval, sums);
    assert_eq!(preds, [1, 0, 1]);
}

#[test]
fn softmax_cross_entropy_rejects_bad_labels() {
    let cpu = Cpu::<f32>::new();
    let logits = [0.0f32; 6];
    let mut d = vec![7.0f32; 6];
    assert!(cpu
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n: 2, classes: 3 },
            logits: &logits,
            labels: &vec![0, 3],
            dlogits: &mut d
        })
        .is_err());
    assert_eq!(d, [7.0; 6], "nothing is written on error");
    assert!(cpu
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n: 2, classes: 3 },
            logits: &logits,
            labels: &vec![0],
            dlogits: &mut d
        })
        .is_err());
    assert!(cpu
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n: 3, classes: 3 },
            logits: &logits,
            labels: &vec![0, 1, 2],
            dlogits: &mut d
        })
        .is_err());
    assert!(cpu
        .softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n: 2, classes: 3 },
            logits: &logits,
            labels: &vec![5, 0],
            predictions: &mut [0; 2]
        })
        .is_err());
    assert!(cpu
        .softmax_cross_entropy_eval(SoftmaxXentEval {
            s: LossShape { n: 2, classes: 3 },
            logits: &logits,
            labels: &vec![1, 0],
            predictions: &mut [0; 3]
        })
        .is_err());
}

/// The optimizer against a per-element loop in f32, with a gap between segments and a segment
/// longer than one parallel chunk.
#[test]
fn sgd_step_matches_loop() {
    let len = 150_000;
    let mut g = rng(40);
    let (w0, gr, v0) =
        (to_f32(&uniform(&mut g, len)), to_f32(&uniform(&mut g, len)), to_f32(&uniform(&mut g, len)));
    let segments = [
        Segment { offset: 10, len: 70_000, lr: 0.1, wd: 5e-4, momentum: 0.9 },
        Segment { offset: 80_000, len: 65_539, lr: 0.05, wd: 0.0, momentum: 0.0 },
    ];
    let (mut w, mut v) = (w0.clone(), v0.clone());
    let sums = sgd_with_sums(&segments, &mut w, &gr, &mut v);

    let (mut w_ref, mut v_ref) = (w0.clone(), v0.clone());
    for (seg, got) in segments.iter().zip(&sums) {
        let (lr, wd, mom) = (seg.lr as f32, seg.wd as f32, seg.momentum as f32);
        let mut want = StepSums::default();
        for i in seg.offset..seg.offset + seg.len {
            let old = w_ref[i];
            v_ref[i] = mom * v_ref[i] + (gr[i] + wd * old);
            w_ref[i] = old - lr * v_ref[i];
            let d = w_ref[i] as f64 - old as f64;
            want.ww += (old as f64).powi(2);
            want.gg += (gr[i] as f64).powi(2);
            want.dd += d * d;
            want.wd += old as f64 * d;
        }
        for (name, a, b) in [
            ("ww", got.ww, want.ww),
            ("gg", got.gg, want.gg),
            ("dd", got.dd, want.dd),
            ("wd", got.wd, want.wd),
        ] {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{name}: {a} ≠ {b}");
        }
    }
    assert!(w == w_ref && v == v_ref, "updated values differ from the loop (gaps must stay untouched)");
    assert!(w[..10] == w0[..10] && w[70_010..80_000] == w0[70_010..80_000]);
}

#[test]
fn sgd_step_rejects_bad_segments() {
    let cpu = Cpu::<f32>::new();
    let (mut w, gr, mut v) = (vec![0.0f32; 10], vec![0.0f32; 10], vec![0.0f32; 10]);
    let seg = |offset, len| Segment { offset, len, lr: 0.1, wd: 0.0, momentum: 0.0 };
    assert!(
        cpu.sgd_step(SgdStep {
            segments: &[seg(5, 6)],
            params: &mut w,
            grads: &gr,
            momenta: &mut v,
            sums: None
        })
        .is_err(),
        "past the end"
    );
    assert!(
        cpu.sgd_step(SgdStep {
            segments: &[seg(usize::MAX, 2)],
            params: &mut w,
            grads: &gr,
            momenta: &mut v,
            sums: None
        })
        .is_err(),
        "overflow"
    );
    assert!(
        cpu.sgd_step(SgdStep {
            segments: &[seg(0, 5), seg(4, 2)],
            params: &mut w,
            grads: &gr,
            momenta: &mut v,
            sums: None
        })
        .is_err(),
        "overlap"
    );
    let mut one = [StepSums::default()];
    assert!(
        cpu.sgd_step(SgdStep {
            segments: &[seg(0, 5), seg(5, 5)],
            params: &mut w,
            grads: &gr,
            momenta: &mut v,
            sums: Some(&mut one)
        })
        .is_err(),
        "sums length"
    );
    assert!(
        cpu.sgd_step(SgdStep {
            segments: &[seg(0, 5)],
            params: &mut w,
            grads: &gr[..9].to_vec(),
            momenta: &mut v,
            sums: None
        })
        .is_err(),
        "grads length"
    );
    cpu.sgd_step(SgdStep {
        segments: &[seg(0, 5), seg(5, 5)],
        params: &mut w,
        grads: &gr,
        momenta: &mut v,
        sums: None,
    })
    .unwrap();
}

/// One training step of a small net, conv → BN + ReLU → average pool → linear → softmax-CE, back
/// through every op (each backward fed by the next op's), then an SGD step on all its parameters,
/// in `Cpu<T>` from data and parameters exact in f32 (seeded). Returns each output widened to f64.
fn train_step<T: Real>(cs: &ConvShape, seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let cpu = Cpu::<T>::new();
    let t = |v: &[f64]| -> Vec<T> { v.iter().map(|&x| T::from_f64(x as f32 as f64)).collect() };
    let wide = to_f64::<T>;
    let mut g = rng(seed);
    let (n, c, classes) = (cs.n, cs.c_out, 5);
    let (bs, ps) = (
        BnShape { n, c, hw: cs.out_h() * cs.out_w(), eps: 1e-5, momentum: 0.1, relu: true },
        PoolShape { n, c, hw: cs.out_h() * cs.out_w() },
    );
    // The parameters in one buffer, as a model lays them out: conv w | BN γ, β | linear W, b.
    let (affine_at, linear_at) = (cs.w_len(), cs.w_len() + 2 * c);
    let mut params = t(&uniform(&mut g, linear_at + classes * c + classes));
    let x = t(&uniform(&mut g, cs.x_len()));
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 3) % classes as u32).collect();
    let zeros = |len| vec![T::zero(); len];
    let mut out = Vec::new();

    let (w, affine, lin) = (&params[..affine_at], &params[affine_at..linear_at], &params[linear_at..]);
    let (mut y, mut by, mut pooled, mut logits) =
        (zeros(cs.y_len()), zeros(bs.len()), zeros(n * c), zeros(n * classes));
    let (mut running, mut saved) = (t(&vec![1.0; 2 * c]), zeros(2 * c));
    cpu.conv2d_forward(ConvForward { s: cs, x: &x, w, y: &mut y });
    cpu.batchnorm_forward_train(BnTrain {
        s: &bs,
        x: &y,
        affine,
        running: &mut running,
        saved: &mut saved,
        y: &mut by,
    });
    cpu.avgpool_forward(PoolForward { s: &ps, x: &by, y: &mut pooled });
    cpu.linear_forward(LinearForward {
        s: LinearShape { n, inp: c, out: classes },
        x: &pooled,
        params: lin,
        y: &mut logits,
    });
    out.extend([("conv y", wide(&y)), ("bn y", wide(&by)), ("bn saved", wide(&saved))]);
    out.extend([("bn running", wide(&running)), ("pool", wide(&pooled)), ("logits", wide(&logits))]);

    let mut grads = zeros(params.len());
    let (dw, rest) = grads.split_at_mut(affine_at);
    let (d_affine, d_lin) = rest.split_at_mut(2 * c);
    let (mut dlogits, mut dpool, mut dby, mut dy, mut dx) =
        (zeros(n * classes), zeros(n * c), zeros(bs.len()), zeros(cs.y_len()), zeros(cs.x_len()));
    let sums = cpu
        .softmax_cross_entropy(SoftmaxXent {
            s: LossShape { n, classes },
            logits: &logits,
            labels: &labels,
            dlogits: &mut dlogits,
        })
        .unwrap();
    cpu.linear_backward(LinearBackward {
        s: LinearShape { n, inp: c, out: classes },
        x: &pooled,
        params: lin,
        dy: &dlogits,
        dx: &mut dpool,
        d_params: d_lin,
    });
    cpu.avgpool_backward(PoolBackward { s: &ps, dy: &dpool, dx: &mut dby });
    cpu.batchnorm_backward(BnBackward {
        s: &bs,
        x: &y,
        y: &by,
        dy: &dby,
        affine,
        saved: &saved,
        dx: &mut dy,
        d_affine,
    });
    cpu.conv2d_backward_data(ConvBackwardData { s: cs, dy: &dy, w, dx: &mut dx });
    cpu.conv2d_backward_filter(ConvBackwardFilter { s: cs, x: &x, dy: &dy, dw });
    out.extend([("loss", vec![sums.loss_sum]), ("dlogits", wide(&dlogits)), ("linear dx", wide(&dpool))]);
    out.extend([("bn dx", wide(&dy)), ("conv dx", wide(&dx)), ("conv dw", wide(&grads[..affine_at]))]);
    out.extend([
        ("bn d_affine", wide(&grads[affine_at..linear_at])),
        ("linear d_params", wide(&grads[linear_at..])),
    ]);

    let mut momenta = zeros(params.len());
    let all = [Segment { offset: 0, len: params.len(), lr: 0.1, wd: 5e-4, momentum: 0.9 }];
    cpu.sgd_step(SgdStep {
        segments: &all,
        params: &mut params,
        grads: &grads,
        momenta: &mut momenta,
        sums: None,
    })
    .unwrap();
    out.extend([("updated params", wide(&params)), ("momenta", wide(&momenta))]);
    out
}

/// Asserts that one training step in f32 agrees with the same step in f64, output by output.
///
/// Tolerance: the inputs are exact in f32, so only the arithmetic differs. An op's own rounding
/// errs by about ε·√K relative for its longest f32 sum of K terms (ε = 2⁻²³; see direct.rs), at most
/// 1.4e-6 here (K = 9·16 = 144); it passes on its inputs' errors with gains of order 1 (BN
/// normalizes, the pool averages, softmax is 1-Lipschitz). 5e-6 allows a few such stages; measured
/// at these seeds: ≤ 4.1e-7. A wrong index, tap or channel errs at O(1). (A pre-activation within
/// rounding of ReLU's kink would flip one element of the mask between f32 and f64; at these fixed
/// seeds none is.)
fn assert_step_agrees(cs: &ConvShape, seed: u64) {
    for ((name, a), (_, b)) in train_step::<f32>(cs, seed).iter().zip(train_step::<f64>(cs, seed)) {
        assert_close(&format!("f32 vs f64 {cs:?}: {name}"), a, &b, 5e-6);
    }
}

/// [`assert_step_agrees`] for a conv whose three passes all take the direct path on a CPU with
/// AVX2 + FMA (checked first).
fn assert_direct_step_agrees(cs: &ConvShape, seed: u64) {
    let direct =
        [direct3x3::applies(cs, cs.c_out), direct3x3::applies(cs, cs.c_in), direct3x3::applies_to_filter(cs)];
    assert_eq!(direct, [cpu_has_direct_path(); 3], "forward, backward data, backward filter");
    assert_step_agrees(cs, seed);
}

/// A stride-2 conv with 6 input and output channels (not a multiple of 4): im2col + GEMM in f32 for
/// all three passes, the path of every CPU without AVX2 + FMA.
#[test]
fn f32_agrees_with_f64() {
    let cs = ConvShape { n: 4, c_in: 6, h: 9, w: 9, c_out: 6, kernel: 3, stride: 2, pad: 1 };
    assert!(!direct3x3::applies(&cs, cs.c_out) && !direct3x3::applies(&cs, cs.c_in));
    assert_step_agrees(&cs, 50);
}

/// A 3×3 stride-2 conv, 8 → 16 channels from 15 × 16 (odd height) to 8 × 8: in f32 on a CPU with
/// AVX2 + FMA, all three passes take the direct stride-2 path.
#[test]
fn f32_agrees_with_f64_through_the_direct_stride_2_convolutions() {
    let cs = ConvShape { n: 4, c_in: 8, h: 15, w: 16, c_out: 16, kernel: 3, stride: 2, pad: 1 };
    assert_direct_step_agrees(&cs, 52);
}

/// A 3×3 stride-1 conv on 8×8 planes with 8 → 16 channels: in f32 on a CPU with AVX2 + FMA, all
/// three passes take the direct path.
#[test]
fn f32_agrees_with_f64_through_the_direct_convolutions() {
    let cs = ConvShape { n: 4, c_in: 8, h: 8, w: 8, c_out: 16, kernel: 3, stride: 1, pad: 1 };
    assert_direct_step_agrees(&cs, 51);
}

/// The AVX-512 paths that read x in place and skip the padding's taps, in a whole training step:
/// 32 → 32 at 8×8 (channel-lane forward and input gradient), 16 → 32 at 16×16 (row tiles with
/// masked loads: the forward into 32, the input gradient into 16), and 16 → 32 at stride 2 from
/// 16×16 (channel-lane stride-2 forward); every filter gradient here takes the in-place kernel
/// (stride 1 and 2). On a CPU without AVX-512 the same steps take the AVX2 kernels.
#[test]
fn f32_agrees_with_f64_through_the_in_place_convolutions() {
    let shapes = [
        ConvShape { n: 4, c_in: 32, h: 8, w: 8, c_out: 32, kernel: 3, stride: 1, pad: 1 },
        ConvShape { n: 3, c_in: 16, h: 16, w: 16, c_out: 32, kernel: 3, stride: 1, pad: 1 },
        ConvShape { n: 3, c_in: 16, h: 16, w: 16, c_out: 32, kernel: 3, stride: 2, pad: 1 },
    ];
    for (i, cs) in shapes.iter().enumerate() {
        assert_direct_step_agrees(cs, 53 + i as u64);
    }
}
