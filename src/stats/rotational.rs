//! Predicted rotational equilibrium of a scale-invariant group under each optimizer: the angular
//! update per step Δ* and the weight norm ‖w*‖ that weight decay and gradient noise balance at
//! (docs/OPTIMIZERS.md derives them; `ilr calibrate` checks them on a toy).
//!
//! One balance covers every optimizer whose update is w ← (1 − δ)w − η·u, with δ the per-step decay
//! fraction and u the update direction. If the gradient noise is white, ‖u‖² is steady and u_t has
//! per-coordinate autocorrelation ρ_k at lag k; the gradients behind u_{t−k} were orthogonal to
//! the w of their time, so w_t·u_t = −η Σ_{k≥1} (1−δ)^{k−1} u_{t−k}·u_t, and ‖w‖² is steady when
//!
//!   (2δ − δ²)‖w‖² = η²·E‖u‖²·(1 + 2S),    S = Σ_{k≥1} (1−δ)^k ρ_k.
//!
//! So x = η²E‖u‖²/‖w*‖² = (2δ − δ²)/(1 + 2S). The angle between w_t and w_{t+1} counts only the
//! part of ηu orthogonal to w; the part along w, u·ŵ = −η‖u‖²S/((1−δ)‖w‖), is √x·S/(1−δ) of ‖u‖,
//! which at λ_e = 1e-2 and β₁ = 0.9 is 8% of ‖u‖². With it,
//!
//!   Δ*² = x·(1 − x S²/(1−δ)²) / ((1−δ) + x S/(1−δ))²,    ‖w*‖² = η²E‖u‖²/x.
//!
//! As δ → 0 with S → S₀ = Σ ρ_k this is Kosson et al.'s Δ*² = 2δ/(1 + 2S₀); the corrections are
//! O(δ·memory) and matter where the update's memory (1/(1−β)) is not small against 1/δ.
//! - SGD with heavy-ball momentum γ (PyTorch): the decay passes through the momentum buffer,
//!   δ = ηλ/(1 − γ) on the slow part, and Δ*² = 2ηλ/(1 + γ) (Li, Lyu & Arora; Kosson et al.); ilr
//!   keeps this form, calibrated by `ilr calibrate`'s exact recursion.
//! - AdamW: δ = ηλ, u = m̂/√v̂ ≈ m/σ per coordinate, an EMA of white noise: ρ_k = β₁^k and
//!   E‖u‖² = d(1 − β₁)/(1 + β₁). Kosson, Messmer & Jaggi 2024 ("Rotational Equilibrium"; REQ's
//!   `adamw_etar_func`): Δ*² = 2ηλ(1 − β₁)/(1 + β₁), and ‖w*‖² → ηd/(2λ) as δ → 0.
//! - Lion: δ = ηλ, u = sign(c) with c = β₁m + (1 − β₁)g a Gaussian per coordinate, so ‖u‖² = d and
//!   ρ_k = (2/π)·arcsin(r_k), r_k the correlation of c_t and c_{t−k} (the sign correlation of jointly
//!   Gaussian variables). REQ's `lion_etar_func` linearizes the sign instead, which is high by up to
//!   √(π/2) (at β₁ = 0); [`lion_angular_update_req`] keeps it for comparison.
//! - Adam with coupled L2: the decay term λw is divided by √v̂ like the gradient, so the balance
//!   depends on the gradient scale: no prediction.

/// Δ* of SGD with heavy-ball momentum γ at λ_e = ηλ: sqrt(2λ_e/(1 + γ)).
pub fn sgd_angular_update(lambda_e: f64, momentum: f64) -> f64 {
    (2.0 * lambda_e / (1.0 + momentum)).sqrt()
}

/// The balance above for decay fraction δ and summed autocorrelation S: (x, Δ*) with
/// x = η²E‖u‖²/‖w*‖².
pub fn balance(delta: f64, s: f64) -> (f64, f64) {
    let keep = 1.0 - delta;
    let x = (2.0 * delta - delta * delta) / (1.0 + 2.0 * s);
    let along = x * s * s / (keep * keep);
    let radial = keep + x * s / keep;
    (x, (x * (1.0 - along)).max(0.0).sqrt() / radial)
}

/// AdamW's S = Σ_k (1−δ)^k β₁^k = β₁(1−δ)/(1 − β₁(1−δ)).
fn adamw_autocorrelation_sum(lambda_e: f64, beta1: f64) -> f64 {
    let r = beta1 * (1.0 - lambda_e);
    r / (1.0 - r)
}

/// Δ* of AdamW at λ_e = ηλ (the balance above).
pub fn adamw_angular_update(lambda_e: f64, beta1: f64) -> f64 {
    balance(lambda_e, adamw_autocorrelation_sum(lambda_e, beta1)).1
}

/// REQ's AdamW formula (`adamw_etar_func`): sqrt(2λ_e(1 − β₁)/(1 + β₁)), the δ → 0 limit.
pub fn adamw_angular_update_req(lambda_e: f64, beta1: f64) -> f64 {
    (2.0 * lambda_e * (1.0 - beta1) / (1.0 + beta1)).sqrt()
}

/// ‖w*‖ of AdamW for a group of `d` weights: η·sqrt(E‖u‖²/x) with E‖u‖² = d(1 − β₁)/(1 + β₁);
/// sqrt(ηd/(2λ)) as δ → 0, whatever the gradient scale.
pub fn adamw_equilibrium_norm(lr: f64, wd: f64, beta1: f64, d: usize) -> f64 {
    let le = lr * wd;
    let (x, _) = balance(le, adamw_autocorrelation_sum(le, beta1));
    lr * (d as f64 * (1.0 - beta1) / (1.0 + beta1) / x).sqrt()
}

/// Correlation r_k of Lion's c_t = β₁m_{t−1} + (1 − β₁)g_t with c_{t−k} for white g, where
/// m_t = β₂m_{t−1} + (1 − β₂)g_t: c_t = Σ_j a_j g_{t−j} with a_0 = 1 − β₁ and
/// a_j = β₁(1 − β₂)β₂^{j−1}, so r_k = Σ_j a_{j+k}a_j / Σ_j a_j².
pub fn lion_c_correlation(beta1: f64, beta2: f64, k: u32) -> f64 {
    let var = (1.0 - beta1).powi(2) + beta1 * beta1 * (1.0 - beta2) / (1.0 + beta2);
    let cov =
        beta1 * (1.0 - beta2) * beta2.powi(k as i32 - 1) * ((1.0 - beta1) + beta1 * beta2 / (1.0 + beta2));
    if var > 0.0 {
        (cov / var).min(1.0)
    } else {
        0.0
    }
}

/// S = Σ_{k≥1} (1 − λ_e)^k (2/π) arcsin(r_k): Lion's summed update autocorrelation. The terms fall
/// like β₂^k; the sum stops when they are below 1e-15 of the first (or after 10⁶ terms).
pub fn lion_autocorrelation_sum(lambda_e: f64, beta1: f64, beta2: f64) -> f64 {
    let mut sum = 0.0;
    for k in 1..=1_000_000u32 {
        let term = (1.0 - lambda_e).powi(k as i32)
            * std::f64::consts::FRAC_2_PI
            * lion_c_correlation(beta1, beta2, k).asin();
        sum += term;
        if term.abs() <= 1e-15 * sum.abs().max(f64::MIN_POSITIVE) {
            break;
        }
    }
    sum
}

/// Δ* of Lion at λ_e = ηλ (the balance above, with the sign autocorrelation sum).
pub fn lion_angular_update(lambda_e: f64, beta1: f64, beta2: f64) -> f64 {
    balance(lambda_e, lion_autocorrelation_sum(lambda_e, beta1, beta2)).1
}

/// ‖w*‖ of Lion for a group of `d` weights: η·sqrt(d/x) (‖u‖² = d).
pub fn lion_equilibrium_norm(lr: f64, wd: f64, beta1: f64, beta2: f64, d: usize) -> f64 {
    let le = lr * wd;
    let (x, _) = balance(le, lion_autocorrelation_sum(le, beta1, beta2));
    lr * (d as f64 / x).sqrt()
}

/// REQ's Lion formula (`lion_etar_func`): sqrt(π/2)·sqrt(2λ_e)·sqrt((1 − β₁)² + β₁²(1 − β₂)/(1 + β₂)).
pub fn lion_angular_update_req(lambda_e: f64, beta1: f64, beta2: f64) -> f64 {
    let spread = (1.0 - beta1).powi(2) + beta1 * beta1 * (1.0 - beta2) / (1.0 + beta2);
    std::f64::consts::FRAC_PI_2.sqrt() * (2.0 * lambda_e).sqrt() * spread.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_first_moment_memory_every_optimizer_rotates_by_sqrt_2_lambda_e() {
        // β₁ = 0: AdamW's and Lion's updates are uncorrelated across steps (S = 0), as plain SGD's,
        // and Δ*² = (2δ − δ²)/(1 − δ)² = 2δ + O(δ²).
        let le = 1e-3f64;
        let exact = (2.0 * le - le * le).sqrt() / (1.0 - le);
        assert!((adamw_angular_update(le, 0.0) - exact).abs() < 1e-15);
        assert!((lion_angular_update(le, 0.0, 0.99) - exact).abs() < 1e-15);
        assert!((exact / sgd_angular_update(le, 0.0) - 1.0).abs() < 1e-3);
        // REQ's linearized Lion formula is √(π/2) high there.
        let req = lion_angular_update_req(le, 0.0, 0.99);
        assert!((req / (2.0 * le).sqrt() - std::f64::consts::FRAC_PI_2.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn for_small_lambda_e_adamw_is_reqs_formula_and_its_norm_is_sqrt_eta_d_over_2_lambda() {
        let (lr, wd, d) = (1e-4, 1e-4, 1000);
        let le = lr * wd;
        assert!((adamw_angular_update(le, 0.9) / adamw_angular_update_req(le, 0.9) - 1.0).abs() < 1e-6);
        let n = adamw_equilibrium_norm(lr, wd, 0.9, d);
        assert!((n / (lr * d as f64 / (2.0 * wd)).sqrt() - 1.0).abs() < 1e-6);
        // At λ_e = 1e-2 the update's 10-step memory shrinks the norm by ~4% (the toy: 0.956).
        let n = adamw_equilibrium_norm(1e-3, 10.0, 0.9, d);
        let ratio = n / (1e-3 * d as f64 / 20.0).sqrt();
        assert!((0.95..0.96).contains(&ratio), "{ratio}");
    }

    #[test]
    fn lion_correlations_follow_the_ema_weights() {
        // With β₁ = 1 c is m itself, whose lag-k correlation is β₂^k.
        for k in [1, 2, 10] {
            assert!((lion_c_correlation(1.0, 0.9, k) - 0.9f64.powi(k as i32)).abs() < 1e-12);
        }
        // Sign correlations shrink the rotation below √(2λ_e), and more with a longer memory.
        let (a, b) = (lion_angular_update(1e-4, 0.9, 0.99), lion_angular_update(1e-4, 0.5, 0.99));
        assert!(a < b && b < (2e-4f64).sqrt(), "{a} {b}");
        // At the lion-pytorch defaults REQ's formula and the arcsin one agree within 1%.
        let req = lion_angular_update_req(1e-4, 0.9, 0.99);
        assert!((req / a - 1.0).abs() < 0.01, "{req} {a}");
        // Lion's norm: η·sqrt(d/x), with x = η²d/‖w*‖² the uncorrected Δ*².
        let (lr, wd, d) = (1e-4, 10.0, 4096);
        let n = lion_equilibrium_norm(lr, wd, 0.9, 0.99, d);
        let (x, _) = balance(lr * wd, lion_autocorrelation_sum(lr * wd, 0.9, 0.99));
        assert!((lr * lr * d as f64 / (n * n) / x - 1.0).abs() < 1e-12);
    }

    fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
        assert!((got / want - 1.0).abs() < tol, "{what}: {got} vs {want}");
    }

    /// balance(δ = 0.1, S = 0.5) by hand: x = (0.2 − 0.01)/2 = 0.095; the part along w is
    /// x·S²/(1 − δ)² = 0.0293210, the radial factor (1 − δ) + x·S/(1 − δ) = 0.9527778, so
    /// Δ* = sqrt(0.095·(1 − 0.0293210))/0.9527778 = 0.31871903598609486.
    #[test]
    fn the_balance_matches_its_formula_by_hand() {
        let (x, delta) = balance(0.1, 0.5);
        assert_rel(x, 0.095, 1e-14, "x");
        assert_rel(delta, 0.318_719_035_986_094_86, 1e-14, "Δ*");
    }

    /// Values from an independent Python evaluation of the module's formulas, the sums taken as
    /// plain series (math.fsum of 2·10⁵ terms) rather than closed forms or early stops:
    /// - AdamW, λ_e = 1e-2, β₁ = 0.9: S = Σ_k (0.99·0.9)^k = 8.174311926605503, Δ* =
    ///   0.032534305057445936, ‖w*‖ (η = 1e-3, d = 1000) = 0.21420478929451425;
    /// - Lion, (λ_e, β₁, β₂) = (1e-3, 0.9, 0.99): S = 20.42886041638726, Δ* = 0.00684145207987953;
    ///   (1e-2, 0.5, 0.9): S = 0.8105419204604705, Δ* = 0.08724180141444134; (1e-3, 0.01, 0.99):
    ///   S = 0.0058747504205923584;
    /// - SGD, λ_e = 0.02, γ = 0.9: sqrt(0.04/1.9) = 0.14509525002200235; REQ's AdamW at
    ///   (1e-2, 0.9): sqrt(0.002/1.9) = 0.03244428422615251; REQ's Lion at (1e-3, 0.9, 0.99):
    ///   0.00664855726596766.
    ///
    /// The tolerance 1e-11 covers the order of summation over the ~3,000 terms Lion's sum keeps.
    #[test]
    fn predictions_match_an_independent_evaluation() {
        assert_rel(adamw_autocorrelation_sum(1e-2, 0.9), 8.174_311_926_605_503, 1e-12, "AdamW S");
        assert_rel(adamw_angular_update(1e-2, 0.9), 0.032_534_305_057_445_936, 1e-12, "AdamW Δ*");
        assert_rel(
            adamw_equilibrium_norm(1e-3, 10.0, 0.9, 1000),
            0.214_204_789_294_514_25,
            1e-12,
            "AdamW ‖w*‖",
        );
        assert_rel(lion_autocorrelation_sum(1e-3, 0.9, 0.99), 20.428_860_416_387_26, 1e-11, "Lion S");
        assert_rel(lion_angular_update(1e-3, 0.9, 0.99), 0.006_841_452_079_879_53, 1e-11, "Lion Δ*");
        assert_rel(lion_autocorrelation_sum(1e-2, 0.5, 0.9), 0.810_541_920_460_470_5, 1e-11, "Lion S");
        assert_rel(lion_angular_update(1e-2, 0.5, 0.9), 0.087_241_801_414_441_34, 1e-11, "Lion Δ*");
        // A small S (β₁ = 0.01): the stop at 1e-15 of the sum must be relative to the sum.
        assert_rel(lion_autocorrelation_sum(1e-3, 0.01, 0.99), 0.005_874_750_420_592_358_4, 1e-11, "Lion S");
        assert_rel(sgd_angular_update(0.02, 0.9), 0.145_095_250_022_002_35, 1e-14, "SGD Δ*");
        assert_rel(adamw_angular_update_req(1e-2, 0.9), 0.032_444_284_226_152_51, 1e-14, "REQ AdamW");
        assert_rel(lion_angular_update_req(1e-3, 0.9, 0.99), 0.006_648_557_265_967_66, 1e-14, "REQ Lion");
    }

    /// The closed form of r_k against Σ_j a_{j+k}a_j / Σ_j a_j² over the explicit EMA weights
    /// a_0 = 1 − β₁, a_j = β₁(1 − β₂)β₂^{j−1} (20,000 of them; β₂^20000 underflows to 0).
    #[test]
    fn lion_correlation_is_the_ema_weights_autocorrelation() {
        let (b1, b2) = (0.9f64, 0.99f64);
        let a: Vec<f64> =
            (0..20_000).map(|j| if j == 0 { 1.0 - b1 } else { b1 * (1.0 - b2) * b2.powi(j - 1) }).collect();
        let var: f64 = a.iter().map(|v| v * v).sum();
        for k in [1usize, 5, 50] {
            let cov: f64 = a.iter().zip(&a[k..]).map(|(x, y)| x * y).sum();
            assert_rel(lion_c_correlation(b1, b2, k as u32), cov / var, 1e-12, &format!("r_{k}"));
        }
        // A constant c (β₁ = 1, β₂ = 1) has no variance to correlate: 0, not NaN.
        assert_eq!(lion_c_correlation(1.0, 1.0, 3), 0.0);
    }
}
