//! The toy's mean dynamics, exactly in discrete time (docs/CALIBRATION.md derives them).
//!
//! Toy: g_t = s_t·P⊥(w_t)ξ_t/‖w_t‖ with ξ ~ N(0, I_d), E s² = 1, so g ⊥ w and E‖g‖² = G²/‖w‖² with
//! G² = E‖P⊥ξ‖² = d − 1. PyTorch's SGD: v' = γv + g + λw, w' = w − ηv'. With a = ‖w‖², b = w·v,
//! c = ‖v‖² (v before the step) and u = w·v' = γb + λa (w·g = 0), the second moments obey
//!
//!   c' = γ²c + G²/a + λ²a + 2γλb,   a' = a − 2ηu + η²c',   b' = u − ηc'.
//!
//! This is exact for the mean except that it replaces E[G²/a] by G²/E[a] and E[(w·v)²] by b²
//! (mean field: the relative spread of a is about sqrt(λ_e/(1−γ)), see the module tests of
//! `calibrate`). The angle of the step: d = −ηv', d⊥² = η²(c' − u²/a), w·d = −ηu, so
//! tan²Δ = a·d⊥²/(a − ηu)² and the RMS ratio is R = sqrt(E tan²Δ)/Δ* (Δ ≤ 0.2 rad here: tan and
//! the angle differ by under 1.4%).
//!
//! Fixed point: b = −λa/(1+γ), c = 2λa/(η(1+γ)), a*² = ηG²/((1−γ)λ(2 − ηλ/(1+γ))), where
//! R² = (1 − ηλ/(2(1+γ)))/(1 − ηλ/(1+γ))² ≈ 1 + 1.5ηλ/(1+γ).

/// The toy's hyperparameters and noise scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToyHyper {
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    /// G² = E‖P⊥ξ‖².
    pub g2: f64,
}

impl ToyHyper {
    /// Equilibrium angular update Δ* = sqrt(2ηλ/(1+γ)) (as `optim::Hyper::angular_theory`).
    pub fn delta_star(&self) -> f64 {
        let h = crate::optim::Hyper::sgd(self.lr, self.wd, self.momentum);
        h.angular_theory().expect("SGD always has a prediction")
    }

    /// The fixed point a* = ‖w*‖² of the mean recursion.
    pub fn equilibrium_sq_norm(&self) -> f64 {
        let (eta, lam, gam) = (self.lr, self.wd, self.momentum);
        (eta * self.g2 / ((1.0 - gam) * lam * (2.0 - eta * lam / (1.0 + gam)))).sqrt()
    }
}

/// State of the mean recursion: a = E‖w‖², b = E w·v, c = E‖v‖².
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl Moments {
    /// A start at ‖w₀‖² = a with no momentum yet.
    pub fn at_rest(a: f64) -> Self {
        Self { a, b: 0.0, c: 0.0 }
    }

    /// One step; returns the next state and the RMS ratio R = sqrt(E tan²Δ)/Δ* of this step.
    pub fn step(&self, h: &ToyHyper) -> (Moments, f64) {
        let (eta, lam, gam) = (h.lr, h.wd, h.momentum);
        let Moments { a, b, c } = *self;
        let u = gam * b + lam * a;
        let c1 = gam * gam * c + h.g2 / a + lam * lam * a + 2.0 * gam * lam * b;
        let next = Moments { a: a - 2.0 * eta * u + eta * eta * c1, b: u - eta * c1, c: c1 };
        let d_perp2 = (eta * eta * (c1 - u * u / a)).max(0.0);
        let tan2 = a * d_perp2 / (a - eta * u).powi(2);
        (next, tan2.sqrt() / h.delta_star())
    }
}

/// The RMS ratios R_1, R_2, … of steps 1..=n from `start` (R_k belongs to the k-th update, the one
/// the trainer logs as step k).
pub fn ratios(h: &ToyHyper, start: Moments, n: usize) -> Vec<f64> {
    let mut m = start;
    (0..n)
        .map(|_| {
            let (next, r) = m.step(h);
            m = next;
            r
        })
        .collect()
}

/// The detector's criterion applied to the exact R with no noise and no smoothing: the first step k
/// (1-based) of the earliest run of steps with |R − 1| ≤ tol that lasts `window_steps`; None if
/// there is none within `ratios`.
pub fn band_entry(ratios: &[f64], tol: f64, window_steps: f64) -> Option<u64> {
    let mut start: Option<usize> = None;
    for (i, r) in ratios.iter().enumerate() {
        if (r - 1.0).abs() <= tol {
            let s = *start.get_or_insert(i);
            if (i - s) as f64 >= window_steps {
                return Some(s as u64 + 1);
            }
        } else {
            start = None;
        }
    }
    None
}

/// The continuous-time band entry from far above, in units of (1−γ)/λ_e: with y = ‖w‖²/‖w*‖²,
/// y² − 1 = (y₀² − 1)·e^{−4t} and R ≈ 1/y, so R reaches 1 − tol at t = ln((y₀²−1)/(y_b²−1))/4 with
/// y_b = 1/(1 − tol). 0 when y₀ ≤ y_b.
pub fn closed_form_entry(y0: f64, tol: f64) -> f64 {
    let yb = 1.0 / (1.0 - tol);
    if y0 <= yb {
        0.0
    } else {
        ((y0 * y0 - 1.0) / (yb * yb - 1.0)).ln() / 4.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_point_is_a_fixed_point_with_the_stated_ratio() {
        for &(lam_e, gam) in &[(1e-3, 0.0), (1.6e-2, 0.0), (1e-3, 0.9), (4e-4, 0.5)] {
            let h = ToyHyper { lr: 0.1, wd: lam_e / 0.1, momentum: gam, g2: 511.0 };
            let a = h.equilibrium_sq_norm();
            let star = Moments { a, b: -h.wd * a / (1.0 + gam), c: 2.0 * h.wd * a / (h.lr * (1.0 + gam)) };
            let (next, r) = star.step(&h);
            assert!((next.a / a - 1.0).abs() < 1e-12 && (next.c / star.c - 1.0).abs() < 1e-12, "{next:?}");
            let k = lam_e / (1.0 + gam);
            let want = ((1.0 - k / 2.0) / (1.0 - k).powi(2)).sqrt();
            assert!((r - want).abs() < 1e-12, "R = {r}, want {want}");
            // And the recursion converges there from 10× the norm.
            let rs = ratios(&h, Moments::at_rest(100.0 * a), (40.0 * (1.0 - gam) / lam_e) as usize);
            assert!((rs.last().unwrap() - want).abs() < 1e-6, "{}", rs.last().unwrap());
        }
    }

    #[test]
    fn the_discrete_entry_time_agrees_with_the_closed_form_at_small_lambda_e() {
        // The closed form is the continuous limit: its relative error is O(λ_e) without momentum
        // and O(λ_e/(1−γ)²) with it (the decay factor per step of the linear (w, v) system is
        // 1 − ηλ/(1−γ) + O((ηλ)²/(1−γ)³)); at a rate λ_e/(1−γ) = 2.5e-4 both are ≤ 0.3%, under
        // 0.01 units of the 2.67. (At rate 8e-3 and γ = 0.9 the discrete entry is 8% earlier.)
        for &gam in &[0.0, 0.9] {
            let le = 2.5e-4 * (1.0 - gam);
            let h = ToyHyper { lr: 0.1, wd: le / 0.1, momentum: gam, g2: 1023.0 };
            let unit = (1.0 - gam) / le;
            let a = h.equilibrium_sq_norm();
            let rs = ratios(&h, Moments::at_rest(100.0 * a), (5.0 * unit) as usize);
            let t = band_entry(&rs, 0.1, 0.0).unwrap() as f64 / unit;
            let cf = closed_form_entry(100.0, 0.1);
            assert!((t - cf).abs() < 0.02, "γ = {gam}: discrete {t}, closed form {cf}");
        }
    }

    #[test]
    fn band_entry_needs_the_whole_window() {
        let r = [0.5, 0.95, 1.2, 0.95, 1.0, 1.05, 1.0];
        assert_eq!(band_entry(&r, 0.1, 3.0), Some(4));
        assert_eq!(band_entry(&r, 0.1, 4.0), None);
        assert_eq!(closed_form_entry(1.0, 0.1), 0.0);
    }
}
