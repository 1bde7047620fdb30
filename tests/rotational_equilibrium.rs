//! The equilibrium predictions of `optim::Rule` against the CPU optimizer steps on a random-gradient
//! toy: one scale-invariant vector of C = 1000 elements whose gradient is random noise orthogonal
//! to it, scaled by 1/‖w‖ as a scale-invariant loss makes it: g = P⊥(w)ξ/‖w‖, ξ ~ N(0, I).
//! Started at the predicted ‖w*‖ (in a random direction) and run for a few relaxation times before
//! measuring, the RMS angular update per step is compared with Δ* and the mean ‖w‖ with ‖w*‖.
//! docs/OPTIMIZERS.md quotes the ratios these tests print.
//!
//! Statistical margin: at C = 1000 one step's angle varies by a few % around its mean, and the
//! norm wanders with relaxation time ~1/(2λ_e) steps by ~sqrt(λ_e) relative; over ≥ 8 relaxation
//! times the measured RMS is good to ~1%, so the tolerances below (2–4%) leave room.

use ilr::backend::cpu::Cpu;
use ilr::backend::{AdamHyper, AdamStep, Backend, LionHyper, LionStep, Segment, StepSums};
use ilr::optim::Rule;
use ilr::stats::angle_from_sums;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const DIM: usize = 1000;

/// (RMS angle per step, mean ‖w‖) over `measure` steps after `burn_in` steps of `rule` at (η, λ),
/// from ‖w₀‖ = `start_norm`.
fn toy(rule: Rule, lr: f64, wd: f64, start_norm: f64, burn_in: usize, measure: usize) -> (f64, f64) {
    let be = Cpu::<f64>::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut w: Vec<f64> = (0..DIM).map(|_| StandardNormal.sample(&mut rng)).collect();
    let n0 = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    w.iter_mut().for_each(|x| *x *= start_norm / n0);
    let (mut m, mut v, mut g) = (vec![0.0; DIM], vec![0.0; DIM], vec![0.0; DIM]);
    let segments = [Segment { offset: 0, len: DIM, lr, wd, momentum: 0.0 }];
    let (mut sum_sq_angle, mut sum_norm) = (0.0, 0.0);
    for t in 1..=(burn_in + measure) {
        let ww: f64 = w.iter().map(|x| x * x).sum();
        g.iter_mut().for_each(|x| *x = StandardNormal.sample(&mut rng));
        let p = g.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / ww;
        g.iter_mut().zip(&w).for_each(|(x, wi)| *x = (*x - p * wi) / ww.sqrt());
        let mut sums = [StepSums::default()];
        let sums_arg = Some(&mut sums[..]);
        match rule {
            Rule::AdamW { beta1, beta2, eps } => {
                let hyper = AdamHyper { beta1, beta2, eps, t: t as u64, decoupled: true };
                let a = AdamStep {
                    segments: &segments,
                    hyper,
                    params: &mut w,
                    grads: &g,
                    m: &mut m,
                    v: &mut v,
                    sums: sums_arg,
                };
                be.adam_step(a).unwrap()
            }
            Rule::Lion { beta1, beta2 } => {
                let hyper = LionHyper { beta1, beta2 };
                let a = LionStep {
                    segments: &segments,
                    hyper,
                    params: &mut w,
                    grads: &g,
                    m: &mut m,
                    sums: sums_arg,
                };
                be.lion_step(a).unwrap()
            }
            other => panic!("the toy runs AdamW and Lion, not {other:?}"),
        }
        if t > burn_in {
            let s = sums[0];
            sum_sq_angle += angle_from_sums(s.ww, s.dd, s.wd).powi(2);
            sum_norm += s.ww.sqrt();
        }
    }
    ((sum_sq_angle / measure as f64).sqrt(), sum_norm / measure as f64)
}

/// Runs the toy at the rule's predicted ‖w*‖ and returns (measured/predicted Δ, measured/predicted
/// ‖w‖), printing both.
fn ratios(rule: Rule, lr: f64, wd: f64, burn_in: usize, measure: usize) -> (f64, f64) {
    let delta = rule.angular_theory(lr, wd).unwrap();
    let norm = rule.normalized_equilibrium_norm(lr, wd, DIM).unwrap();
    let (rms, mean_norm) = toy(rule, lr, wd, norm, burn_in, measure);
    let r = (rms / delta, mean_norm / norm);
    println!("{rule:?} ηλ = {:e}: RMS Δ/Δ* = {:.4}, mean ‖w‖/‖w*‖ = {:.4}", lr * wd, r.0, r.1);
    r
}

#[test]
fn adamw_matches_its_prediction() {
    for beta1 in [0.9, 0.0] {
        // λ_e = 1e-3: a relaxation time of ~500 steps; 3 of them to settle, 20 measured.
        let rule = Rule::AdamW { beta1, beta2: 0.999, eps: 1e-8 };
        let (delta, norm) = ratios(rule, 1e-3, 1.0, 3_000, 10_000);
        assert!((delta - 1.0).abs() < 0.02, "β₁ = {beta1}: RMS Δ/Δ* = {delta}");
        assert!((norm - 1.0).abs() < 0.03, "β₁ = {beta1}: ‖w‖/‖w*‖ = {norm}");
    }
}

#[test]
fn lion_matches_its_prediction_where_it_holds_and_not_without_momentum() {
    // (0.9, 0.99) at λ_e = 1e-4 ≪ 1 − β₂: REQ's formula holds (the toy measures ~1% below it).
    let (delta, norm) = ratios(Rule::Lion { beta1: 0.9, beta2: 0.99 }, 1e-3, 0.1, 10_000, 40_000);
    assert!((delta - 1.0).abs() < 0.04, "RMS Δ/Δ* = {delta}");
    assert!((norm - 1.0).abs() < 0.04, "‖w‖/‖w*‖ = {norm}");
    // Without momentum each update η·sign(g) is independent of the last, the norm balances as
    // ‖w*‖² = ηC/(2λ) and Δ = sqrt(2ηλ): REQ's formula, sqrt(π/2)·sqrt(2ηλ), is 25% high. This
    // pins the known limit of the formula (docs/OPTIMIZERS.md), not a requirement on Lion.
    let (delta, _) = ratios(Rule::Lion { beta1: 0.0, beta2: 0.0 }, 1e-3, 1.0, 3_000, 10_000);
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    assert!((delta / sqrt_2_over_pi - 1.0).abs() < 0.02, "β = 0: RMS Δ/Δ* = {delta}, not √(2/π)");
}
