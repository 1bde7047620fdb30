//! The parameter-space equilibrium detector.
//!
//! Criterion: for every scale-invariant group, the exponentially smoothed ratio r = Δ/Δ* (smoothing
//! time constant τ steps) lies within `tolerance` of 1 at every logged step of a window of
//! `window` steps. T_eq is the first step of the earliest such window, counted from the last change
//! of (η, λ, γ) (the equilibrium depends on them; a change restarts the detector). Defaults:
//! tolerance 0.1, window 0.5/λ_e, τ = 0.2/λ_e (both at least a few logged steps).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EquilibriumConfig {
    /// |smoothed Δ/Δ* − 1| ≤ tolerance counts as in equilibrium.
    pub tolerance: f64,
    /// How long it must hold, in units of 1/λ_e.
    pub window: f64,
    /// EMA time constant of the ratio, in units of 1/λ_e.
    pub smoothing: f64,
}

impl Default for EquilibriumConfig {
    fn default() -> Self {
        Self { tolerance: 0.1, window: 0.5, smoothing: 0.2 }
    }
}

/// Online detector over the logged steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detector {
    tolerance: f64,
    window_steps: f64,
    tau_steps: f64,
    /// Smoothed ratio per group.
    smoothed: Vec<Option<f64>>,
    last_step: Option<u64>,
    /// Step of the last hyperparameter change (the detector's origin).
    phase_start: u64,
    /// First logged step after the last out-of-tolerance one.
    candidate: Option<u64>,
    /// Absolute step at which equilibrium began, once confirmed.
    reached: Option<u64>,
}

impl Detector {
    /// `lambda_e` sets the units; `log_every` bounds τ and the window from below.
    pub fn new(cfg: &EquilibriumConfig, groups: usize, lambda_e: f64, log_every: u64, start: u64) -> Self {
        let unit = if lambda_e > 0.0 { 1.0 / lambda_e } else { f64::INFINITY };
        let every = log_every.max(1) as f64;
        Self {
            tolerance: cfg.tolerance,
            window_steps: (cfg.window * unit).max(5.0 * every),
            tau_steps: (cfg.smoothing * unit).max(2.0 * every),
            smoothed: vec![None; groups],
            last_step: None,
            phase_start: start,
            candidate: None,
            reached: None,
        }
    }

    pub fn window_steps(&self) -> f64 {
        self.window_steps
    }

    /// Feed the ratios Δ/Δ* of every group at `step`.
    pub fn observe(&mut self, step: u64, ratios: &[f64]) {
        let alpha = match self.last_step {
            Some(prev) => 1.0 - (-((step - prev) as f64) / self.tau_steps).exp(),
            None => 1.0,
        };
        self.last_step = Some(step);
        let mut inside = true;
        for (s, &r) in self.smoothed.iter_mut().zip(ratios) {
            let v = match *s {
                Some(old) if r.is_finite() => old + alpha * (r - old),
                _ => r,
            };
            *s = Some(v);
            inside &= (v - 1.0).abs() <= self.tolerance;
        }
        if self.reached.is_some() {
            return;
        }
        if !inside {
            self.candidate = None;
        } else {
            let c = *self.candidate.get_or_insert(step);
            if (step - c) as f64 >= self.window_steps {
                self.reached = Some(c);
            }
        }
    }

    /// The smoothed ratios, one per group.
    pub fn smoothed(&self) -> Vec<Option<f64>> {
        self.smoothed.clone()
    }

    /// Whether every smoothed ratio is within tolerance now.
    pub fn inside_now(&self) -> bool {
        self.smoothed.iter().all(|s| s.is_some_and(|v| (v - 1.0).abs() <= self.tolerance))
    }

    /// T_eq in steps since the last hyperparameter change, once confirmed.
    pub fn t_eq(&self) -> Option<u64> {
        self.reached.map(|r| r - self.phase_start)
    }

    pub fn phase_start(&self) -> u64 {
        self.phase_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        // λ_e = 0.01: window 0.5/λ_e = 50 steps, τ = 0.05/λ_e = 5 steps.
        let cfg = EquilibriumConfig { tolerance: 0.1, window: 0.5, smoothing: 0.05 };
        Detector::new(&cfg, 2, 0.01, 1, 0)
    }

    #[test]
    fn finds_the_start_of_the_first_stable_window() {
        let mut d = detector();
        for t in 0..400u64 {
            // Group 0 settles at step 100, group 1 at step 150 (step changes, smoothing ~5 steps).
            let r0 = if t < 100 { 2.0 } else { 1.0 };
            let r1 = if t < 150 { 0.5 } else { 1.02 };
            d.observe(t, &[r0, r1]);
        }
        let t = d.t_eq().expect("reached");
        // Smoothed r1 enters the band 1.02 ± 0.1 a few τ after 150: ln(0.48/0.08)·5 ≈ 9 steps.
        assert!((155..170).contains(&t), "t_eq = {t}");
        assert!(d.inside_now());
    }

    #[test]
    fn a_late_excursion_restarts_the_window_and_none_is_reported_if_it_never_holds() {
        let mut d = detector();
        for t in 0..200u64 {
            let r = if t == 30 { 5.0 } else { 1.0 };
            d.observe(t, &[r, r]);
        }
        assert!(d.t_eq().unwrap() > 30);
        let mut never = detector();
        for t in 0..1000u64 {
            never.observe(t, &[1.3, 1.0]);
        }
        assert_eq!(never.t_eq(), None);
        assert!(!never.inside_now());
    }
}
