//! The Adam (decoupled and coupled decay) and Lion steps against straightforward per-element
//! references in f64, written from the textbook formulas (not the kernels' order of operations),
//! in f32 and f64, over a segment table with a gap, adjacent segments, a segment longer than one
//! parallel chunk (65536 elements) and segments listed out of offset order; three steps, so that
//! the bias corrections (t = 1, 2, 3) and carried state are exercised. The statistics sums are
//! checked against sums of the op's own inputs and outputs.

use super::{rel_err, rng, uniform, Cpu};
use crate::backend::{AdamHyper, AdamStep, Backend, LionHyper, LionStep, Real, Segment, StepSums};

const LEN: usize = 150_000;
const STEPS: u64 = 3;

/// Out of offset order; 70_010..80_000 is a gap the steps must leave alone; the last two are
/// adjacent; the first is longer than one chunk.
fn segments() -> [Segment; 3] {
    let seg = |offset, len, lr, wd| Segment { offset, len, lr, wd, momentum: 0.0 };
    [seg(83_333, 66_667, 2e-3, 0.05), seg(10, 70_000, 1e-3, 0.1), seg(80_000, 3_333, 5e-3, 0.0)]
}

/// f64 inputs that are exact in f32: weights and gradients in (−1, 1), m in (−0.1, 0.1), v in
/// [0, 0.01) (so that the first step's state is not zero).
fn inputs(seed: u64) -> [Vec<f64>; 4] {
    let mut g = rng(seed);
    let mut draw = |scale: f64| -> Vec<f64> {
        uniform(&mut g, LEN).into_iter().map(|x| (x * scale) as f32 as f64).collect()
    };
    let (w, gr, m) = (draw(1.0), draw(1.0), draw(0.1));
    let v = draw(0.1).into_iter().map(|x| x * x).collect();
    [w, gr, m, v]
}

fn cast<T: Real>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn wide<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.to_f64()).collect()
}

/// Σw², Σg², Σd², Σw·d of one segment from `old`, `g` and the op's `new` (d = new − old as stored).
fn sums_of(seg: &Segment, old: &[f64], g: &[f64], new: &[f64]) -> StepSums {
    let mut s = StepSums::default();
    for i in seg.offset..seg.offset + seg.len {
        let d = new[i] - old[i];
        s.ww += old[i] * old[i];
        s.gg += g[i] * g[i];
        s.dd += d * d;
        s.wd += old[i] * d;
    }
    s
}

/// The sums agree with those of the op's own values up to summation order: the op adds pieces of
/// 65536 in order, the reference element by element; both sum ≤ 70_000 positive (or, for Σw·d,
/// mixed) f64 terms, so they differ by ≤ 70_000·2⁻⁵³·Σ|terms| ≈ 1e-11 of it. Σw·d has mixed signs:
/// compared relative to Σ|w·d| ≤ sqrt(Σw²·Σd²).
#[track_caller]
fn assert_sums(what: &str, got: &StepSums, want: &StepSums) {
    let wd_scale = (want.ww * want.dd).sqrt();
    for (name, a, b, scale) in [
        ("ww", got.ww, want.ww, want.ww),
        ("gg", got.gg, want.gg, want.gg),
        ("dd", got.dd, want.dd, want.dd),
        ("wd", got.wd, want.wd, wd_scale),
    ] {
        assert!((a - b).abs() <= 1e-11 * scale, "{what} {name}: {a} ≠ {b}");
    }
}

/// Tolerances for a whole tensor against the f64 reference, as [`rel_err`] (largest |a − b| over the
/// largest |b|). f64: each element passes through ≤ 12 roundings of 2⁻⁵³ relative to values no
/// larger than the tensor's largest, so ≤ 1.5e-15; 1e-14 leaves room. f32: the same chain at 2⁻²⁴
/// (6e-8) gives ≤ 7.2e-7, and the inputs are exact in f32; 1e-6 (17 ulps of the largest value).
fn tolerance<T: Real>() -> f64 {
    if std::mem::size_of::<T>() == 8 {
        1e-14
    } else {
        1e-6
    }
}

/// adam_step against the reference, decoupled (AdamW) or coupled (Adam + L2).
fn check_adam<T: Real>(decoupled: bool) {
    let segs = segments();
    let (beta1, beta2, eps) = (0.9, 0.999, 1e-8);
    let [w0, g, m0, v0] = inputs(if decoupled { 70 } else { 71 });
    let (mut w, mut m, mut v) = (cast::<T>(&w0), cast::<T>(&m0), cast::<T>(&v0));
    let gt = cast::<T>(&g);
    let (mut wr, mut mr, mut vr) = (w0.clone(), m0.clone(), v0.clone());
    let what =
        |t| format!("{} {} t={t}", if decoupled { "adamw" } else { "adam" }, std::any::type_name::<T>());
    for t in 1..=STEPS {
        let old = wide(&w);
        let mut sums = [StepSums { ww: f64::NAN, ..StepSums::default() }; 3];
        let hyper = AdamHyper { beta1, beta2, eps, t, decoupled };
        let args = AdamStep {
            segments: &segs,
            hyper,
            params: &mut w,
            grads: &gt,
            m: &mut m,
            v: &mut v,
            sums: Some(&mut sums),
        };
        Cpu::<T>::new().adam_step(args).unwrap();

        // The reference, as torch.optim.Adam(W)'s documentation writes it.
        let (bc1, bc2) = (1.0 - beta1.powi(t as i32), 1.0 - beta2.powi(t as i32));
        for s in &segs {
            for i in s.offset..s.offset + s.len {
                let gi = if decoupled { g[i] } else { g[i] + s.wd * wr[i] };
                if decoupled {
                    wr[i] *= 1.0 - s.lr * s.wd;
                }
                mr[i] = beta1 * mr[i] + (1.0 - beta1) * gi;
                vr[i] = beta2 * vr[i] + (1.0 - beta2) * gi * gi;
                let (m_hat, v_hat) = (mr[i] / bc1, vr[i] / bc2);
                wr[i] -= s.lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
        let tol = tolerance::<T>();
        for (name, got, want) in [("w", &w, &wr), ("m", &m, &mr), ("v", &v, &vr)] {
            let e = rel_err(&wide(got), want);
            assert!(e <= tol, "{}: {name} relative error {e:e} > {tol:e}", what(t));
        }
        let new = wide(&w);
        assert!(new[70_010..80_000] == w0[70_010..80_000] && new[..10] == w0[..10], "{}: gap moved", what(t));
        for (s, got) in segs.iter().zip(&sums) {
            assert_sums(&what(t), got, &sums_of(s, &old, &g, &new));
        }
    }
}

#[test]
fn adamw_step_matches_reference() {
    check_adam::<f32>(true);
    check_adam::<f64>(true);
}

#[test]
fn adam_l2_step_matches_reference() {
    check_adam::<f32>(false);
    check_adam::<f64>(false);
}

/// lion_step against the reference. Where c = β₁m + (1−β₁)g is within rounding of 0 the f32 and
/// f64 signs may differ (a step of 2η); those elements are counted (a handful at most: |c| below
/// 1e-6 has probability ~1e-5 per element here) and left out of the w comparison, the rest is held
/// to the tolerances of [`tolerance`]. m does not depend on the sign and is compared whole.
fn check_lion<T: Real>() {
    let segs = segments();
    let (beta1, beta2) = (0.9, 0.99);
    let [w0, g, m0, _] = inputs(72);
    let (mut w, mut m, gt) = (cast::<T>(&w0), cast::<T>(&m0), cast::<T>(&g));
    let (mut wr, mut mr) = (w0.clone(), m0.clone());
    let mut near_zero = 0;
    for t in 1..=STEPS {
        let what = format!("lion {} step {t}", std::any::type_name::<T>());
        let old = wide(&w);
        let mut sums = [StepSums::default(); 3];
        let hyper = LionHyper { beta1, beta2 };
        let args =
            LionStep { segments: &segs, hyper, params: &mut w, grads: &gt, m: &mut m, sums: Some(&mut sums) };
        Cpu::<T>::new().lion_step(args).unwrap();

        let mut keep = vec![true; LEN];
        for s in &segs {
            for i in s.offset..s.offset + s.len {
                let c: f64 = beta1 * mr[i] + (1.0 - beta1) * g[i];
                if c.abs() <= 1e-6 {
                    keep[i] = false;
                    near_zero += 1;
                }
                let sign = if c > 0.0 {
                    1.0
                } else if c < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                wr[i] = wr[i] * (1.0 - s.lr * s.wd) - s.lr * sign;
                mr[i] = beta2 * mr[i] + (1.0 - beta2) * g[i];
            }
        }
        let new = wide(&w);
        let pick = |v: &[f64]| v.iter().zip(&keep).filter(|(_, k)| **k).map(|(x, _)| *x).collect::<Vec<_>>();
        let tol = tolerance::<T>();
        let e = rel_err(&pick(&new), &pick(&wr));
        assert!(e <= tol, "{what}: w relative error {e:e} > {tol:e}");
        let e = rel_err(&wide(&m), &mr);
        assert!(e <= tol, "{what}: m relative error {e:e} > {tol:e}");
        // Where the signs agree the reference continues from the op's w, so that one sign flip
        // does not follow into the next step's comparison.
        wr = new.clone();
        assert!(new[70_010..80_000] == w0[70_010..80_000], "{what}: gap moved");
        for (s, got) in segs.iter().zip(&sums) {
            assert_sums(&what, got, &sums_of(s, &old, &g, &new));
        }
    }
    assert!(
        near_zero <= 20,
        "{near_zero} elements with |c| ≤ 1e-6: the inputs are not what this test assumes"
    );
}

#[test]
fn lion_step_matches_reference() {
    check_lion::<f32>();
    check_lion::<f64>();
}

#[test]
fn adam_and_lion_reject_bad_arguments() {
    let cpu = Cpu::<f32>::new();
    let (mut w, g, mut m, mut v) = (vec![0.0f32; 10], vec![0.0f32; 10], vec![0.0f32; 10], vec![0.0f32; 10]);
    let seg = |offset, len| Segment { offset, len, lr: 0.1, wd: 0.0, momentum: 0.0 };
    let hyper = AdamHyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 0, decoupled: true };
    let adam = |segments: &[Segment], t, m: &mut Vec<f32>, v: &mut Vec<f32>, w: &mut Vec<f32>| {
        let a =
            AdamStep { segments, hyper: AdamHyper { t, ..hyper }, params: w, grads: &g, m, v, sums: None };
        cpu.adam_step(a)
    };
    assert!(adam(&[seg(0, 10)], 0, &mut m, &mut v, &mut w)
        .unwrap_err()
        .to_string()
        .contains("t must be ≥ 1"));
    assert!(adam(&[seg(5, 6)], 1, &mut m, &mut v, &mut w).is_err(), "past the end");
    assert!(adam(&[seg(0, 5), seg(4, 2)], 1, &mut m, &mut v, &mut w).is_err(), "overlap");
    assert!(adam(&[seg(0, 10)], 1, &mut m, &mut vec![0.0; 9], &mut w).is_err(), "v length");
    adam(&[seg(0, 5), seg(5, 5)], 1, &mut m, &mut v, &mut w).unwrap();
    let lion = |segments: &[Segment], m: &mut Vec<f32>| {
        let hyper = LionHyper { beta1: 0.9, beta2: 0.99 };
        cpu.lion_step(LionStep { segments, hyper, params: &mut w.clone(), grads: &g, m, sums: None })
    };
    assert!(lion(&[seg(0, 10)], &mut vec![0.0; 11]).is_err(), "m length");
    assert!(lion(&[seg(0, 11)], &mut m).is_err(), "past the end");
    lion(&[seg(0, 10)], &mut m).unwrap();
}
