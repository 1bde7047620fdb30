//! The parameter-space equilibrium detector.
//!
//! Time is measured in units of relaxation, u = 1/`relaxation_rate(λ_e, γ)` = (1 − γ)/λ_e steps
//! (`stats::units`). For every scale-invariant group the detector estimates the RMS ratio
//!
//!   R = sqrt(E[(Δ/Δ*)²]),
//!
//! because Δ* = sqrt(2ηλ/(1+γ)) is the equilibrium value of sqrt(E Δ²), not of E Δ (with a
//! per-step gradient-norm spread the mean of Δ is below its RMS: 0.88 of it for a lognormal spread
//! of 0.5, outside a 10% band).
//!
//! - Samples: the logged ratios r = Δ/Δ* on a grid of spacing h = max(`stats_every`, u/K) steps
//!   (K = `samples_per_unit`); logged steps between grid points are skipped. The estimate then
//!   averages the same number of samples per unit at every λ_e (where u/K ≥ `stats_every`), so its
//!   noise, and the delay that noise causes, are the same in units of u: more samples at small λ_e
//!   would make it quieter there and bias the slope of log T_eq on log(1/λ_e).
//! - Smoothing: an exponentially weighted mean of r² with time constant τ = `smoothing`·u steps,
//!   debiased as in Adam: m = Σ_i e^{−(t−t_i)/τ} r_i² / Σ_i e^{−(t−t_i)/τ}. Early on it is the
//!   running mean of the samples so far, not anchored at the first sample r₁; R̂ = sqrt(m).
//! - Criterion: every R̂ within `tolerance` of 1 at every grid sample of a window of
//!   `window`·u steps. T_eq is the first step of the earliest such window, counted from the last
//!   change of (η, λ, γ) (the equilibrium depends on them; a change restarts the detector).
//!
//! The detector is a pure function of the logged (step, ratios) since its restart, so a resumed run
//! replays it exactly. `ilr calibrate` (docs/CALIBRATION.md) measures its delay and the slope it
//! gives on a toy with known dynamics.

use super::units::relaxation_rate;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EquilibriumConfig {
    /// |R̂ − 1| ≤ tolerance counts as in equilibrium (R̂: the smoothed RMS of Δ/Δ*).
    pub tolerance: f64,
    /// How long it must hold, in units of (1 − γ)/λ_e steps.
    pub window: f64,
    /// Time constant of the exponentially weighted mean of (Δ/Δ*)², in units of (1 − γ)/λ_e. The
    /// default 1.0 is what `ilr calibrate` supports: with K = 60 samples per unit and a per-step
    /// gradient-norm spread of 0.5, τ = 0.3 leaves R̂ too noisy to hold a 10% band
    /// (docs/CALIBRATION.md).
    pub smoothing: f64,
    /// Logged samples used per unit of (1 − γ)/λ_e (the rest are skipped), so that the estimate is
    /// equally noisy at every λ_e. Not serialized at its default, so run ids are unchanged.
    #[serde(skip_serializing_if = "is_default_samples")]
    pub samples_per_unit: f64,
    /// What each group's Δ is compared with: Δ* (`predicted`, the default) or the group's own
    /// plateau at the end of the phase (`plateau`, `stats::plateau`), for optimizers whose Δ* the
    /// nets do not reach. Not serialized at its default, so run ids are unchanged.
    #[serde(skip_serializing_if = "Reference::is_predicted")]
    pub reference: Reference,
}

/// The equilibrium value that the detector's ratios are taken against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reference {
    /// Δ* of the optimizer (`optim::Rule::angular_theory`): T_eq is the time to reach the theory.
    #[default]
    Predicted,
    /// The group's own RMS Δ over the last units of the phase (`stats::plateau`): T_eq is the time to
    /// settle where the run ends up, whatever the theory says that is.
    Plateau,
}

impl Reference {
    fn is_predicted(&self) -> bool {
        *self == Reference::Predicted
    }
}

/// The default K of [`EquilibriumConfig::samples_per_unit`]: at the recipes' largest λ_e, 1.6e-2 with
/// statistics every step, a unit is 62.5 steps, so K = 60 keeps every λ_e ≤ 1.6e-2 on the same
/// footing.
pub const DEFAULT_SAMPLES_PER_UNIT: f64 = 60.0;

fn is_default_samples(k: &f64) -> bool {
    *k == DEFAULT_SAMPLES_PER_UNIT
}

impl Default for EquilibriumConfig {
    fn default() -> Self {
        Self {
            tolerance: 0.1,
            window: 0.5,
            smoothing: 1.0,
            samples_per_unit: DEFAULT_SAMPLES_PER_UNIT,
            reference: Reference::Predicted,
        }
    }
}

impl EquilibriumConfig {
    /// Every setting must be a positive finite number.
    pub fn validate(&self) -> anyhow::Result<()> {
        let all = [self.tolerance, self.window, self.smoothing, self.samples_per_unit];
        if !all.iter().all(|v| v.is_finite() && *v > 0.0) {
            anyhow::bail!(
                "equilibrium.tolerance, window, smoothing and samples_per_unit must all be positive; got {self:?}"
            );
        }
        Ok(())
    }
}

/// One group's debiased exponentially weighted mean of r²: m = num/den.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Ewm {
    num: f64,
    den: f64,
}

/// Online detector over the logged steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detector {
    tolerance: f64,
    window_steps: f64,
    tau_steps: f64,
    /// Grid spacing h in steps.
    grid_steps: f64,
    /// Per group.
    means: Vec<Ewm>,
    /// Whether the last grid sample of every group was finite.
    finite: bool,
    /// Last grid sample's step.
    last_step: Option<u64>,
    /// The next grid point, in steps since `phase_start`.
    next_grid: f64,
    /// Step of the last hyperparameter change (the detector's origin).
    phase_start: u64,
    /// First grid step after the last out-of-tolerance one.
    candidate: Option<u64>,
    /// Absolute step at which equilibrium began, once confirmed.
    reached: Option<u64>,
}

impl Detector {
    /// `lambda_e` and `momentum` set the unit (1 − γ)/λ_e; `log_every` bounds the grid, τ and the
    /// window from below.
    pub fn new(
        cfg: &EquilibriumConfig,
        groups: usize,
        lambda_e: f64,
        momentum: f64,
        log_every: u64,
        start: u64,
    ) -> Self {
        let rate = relaxation_rate(lambda_e, momentum);
        let unit = if rate > 0.0 { 1.0 / rate } else { f64::INFINITY };
        let every = log_every.max(1) as f64;
        Self {
            tolerance: cfg.tolerance,
            window_steps: (cfg.window * unit).max(5.0 * every),
            tau_steps: (cfg.smoothing * unit).max(2.0 * every),
            grid_steps: (unit / cfg.samples_per_unit).max(every),
            means: vec![Ewm::default(); groups],
            finite: false,
            last_step: None,
            next_grid: 0.0,
            phase_start: start,
            candidate: None,
            reached: None,
        }
    }

    pub fn window_steps(&self) -> f64 {
        self.window_steps
    }

    /// Feed the ratios Δ/Δ* of every group at `step` (steps must increase). Steps off the grid are
    /// skipped; a non-finite ratio counts as out of tolerance and leaves that group's mean as it was.
    pub fn observe(&mut self, step: u64, ratios: &[f64]) {
        let since = step.saturating_sub(self.phase_start) as f64;
        if since < self.next_grid {
            return;
        }
        // The next grid point after this one (a fixed grid, so skipped steps do not shift it).
        self.next_grid +=
            self.grid_steps * ((since - self.next_grid) / self.grid_steps).floor().max(0.0) + self.grid_steps;
        let decay = match self.last_step {
            Some(prev) => (-(step.saturating_sub(prev) as f64) / self.tau_steps).exp(),
            None => 0.0,
        };
        self.last_step = Some(step);
        self.finite = true;
        for (m, &r) in self.means.iter_mut().zip(ratios) {
            m.num *= decay;
            m.den *= decay;
            if r.is_finite() {
                m.num += r * r;
                m.den += 1.0;
            } else {
                self.finite = false;
            }
        }
        if self.reached.is_some() {
            return;
        }
        if !self.inside_now() {
            self.candidate = None;
        } else {
            let c = *self.candidate.get_or_insert(step);
            if (step - c) as f64 >= self.window_steps {
                self.reached = Some(c);
            }
        }
    }

    /// The smoothed RMS ratios R̂ = sqrt(m), one per group (None before the first finite sample).
    pub fn smoothed(&self) -> Vec<Option<f64>> {
        self.means.iter().map(|m| (m.den > 0.0).then(|| (m.num / m.den).sqrt())).collect()
    }

    /// Whether every smoothed ratio is within tolerance now (and the last grid sample was finite).
    pub fn inside_now(&self) -> bool {
        self.finite && self.smoothed().iter().all(|s| s.is_some_and(|v| (v - 1.0).abs() <= self.tolerance))
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

    /// λ_e = 0.01, γ = 0: u = 100 steps; window 50 steps, τ = 5 steps, grid 1 step (K = 100).
    fn cfg() -> EquilibriumConfig {
        EquilibriumConfig {
            tolerance: 0.1,
            window: 0.5,
            smoothing: 0.05,
            samples_per_unit: 100.0,
            ..Default::default()
        }
    }

    fn detector() -> Detector {
        Detector::new(&cfg(), 2, 0.01, 0.0, 1, 0)
    }

    /// The grid is fixed: a step that jumps past grid points is sampled, and the next sample is
    /// the next point of the same grid (40 after 37 on a grid of 10), not one counted from the jump.
    #[test]
    fn skipped_steps_do_not_shift_the_grid() {
        let cfg = EquilibriumConfig { samples_per_unit: 10.0, ..cfg() };
        let mut d = Detector::new(&cfg, 1, 0.01, 0.0, 1, 0);
        for (step, sampled) in [(0, true), (37, true), (39, false), (40, true), (45, false), (50, true)] {
            d.observe(step, &[1.0]);
            assert_eq!(d.last_step == Some(step), sampled, "step {step}");
        }
    }

    #[test]
    fn finds_the_start_of_the_first_stable_window() {
        let mut d = detector();
        for t in 0..400u64 {
            // Group 0 settles at step 100, group 1 at step 150 (step changes).
            let r0 = if t < 100 { 2.0 } else { 1.0 };
            let r1 = if t < 150 { 0.5 } else { 1.02 };
            d.observe(t, &[r0, r1]);
        }
        let t = d.t_eq().expect("reached");
        // m₁ = 1.02² + (0.5² − 1.02²)·e^{−(t−150)/5} (the debiasing weight is ≈ 1 after 30τ) enters
        // [0.9², 1.1²] when e^{−k/5} = (1.0404 − 0.81)/(1.0404 − 0.25), k = 5·ln(3.43) ≈ 6.2 steps.
        assert!((156..159).contains(&t), "t_eq = {t}");
        assert!(d.inside_now());
        // The same run in a phase that starts at step 1000: the same T_eq, counted from there.
        let mut late = Detector::new(&cfg(), 2, 0.01, 0.0, 1, 1000);
        for t in 0..400u64 {
            late.observe(1000 + t, &[if t < 100 { 2.0 } else { 1.0 }, if t < 150 { 0.5 } else { 1.02 }]);
        }
        assert_eq!((late.phase_start(), late.t_eq()), (1000, Some(t)));
    }

    #[test]
    fn smooths_the_square_so_it_measures_the_rms_and_starts_from_a_running_mean() {
        // Alternating 0.6 and 1.28: mean 0.94, RMS sqrt((0.36 + 1.6384)/2) = 0.9995.
        let mut d = Detector::new(&EquilibriumConfig { smoothing: 5.0, ..cfg() }, 1, 0.01, 0.0, 1, 0);
        d.observe(0, &[0.6]);
        assert!((d.smoothed()[0].unwrap() - 0.6).abs() < 1e-12);
        d.observe(1, &[1.28]);
        // Debiased: two samples with weights e^{−1/500} and 1, not "0.6 nudged towards 1.28".
        let w = (-1.0f64 / 500.0).exp();
        let want = ((w * 0.36 + 1.6384) / (w + 1.0)).sqrt();
        assert!((d.smoothed()[0].unwrap() - want).abs() < 1e-12);
        for t in 2..2000u64 {
            d.observe(t, &[if t % 2 == 0 { 0.6 } else { 1.28 }]);
        }
        assert!((d.smoothed()[0].unwrap() - 0.9995).abs() < 2e-3, "{:?}", d.smoothed());
    }

    #[test]
    fn uses_the_same_number_of_samples_per_unit_at_every_lambda_e() {
        // K = 10: at λ_e = 0.01 (u = 100 steps) one logged step in 10 is used. A ratio that is 3
        // at every step off that grid is never seen.
        let c = EquilibriumConfig { samples_per_unit: 10.0, ..cfg() };
        let mut d = Detector::new(&c, 1, 0.01, 0.0, 1, 0);
        for t in 0..300u64 {
            d.observe(t, &[if t % 10 == 0 { 1.0 } else { 3.0 }]);
        }
        assert_eq!(d.smoothed()[0], Some(1.0));
        assert_eq!(d.t_eq(), Some(0));
        // With momentum 0.9 the unit is (1 − γ)/λ_e = 10 steps: the grid is every logged step and the
        // window 5 steps.
        let m = Detector::new(&c, 1, 0.01, 0.9, 1, 0);
        assert_eq!(m.grid_steps, 1.0);
        assert_eq!(m.window_steps(), 5.0);
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
        let mut nan = detector();
        for t in 0..1000u64 {
            nan.observe(t, &[f64::NAN, 1.0]);
        }
        assert_eq!(nan.t_eq(), None);
        assert_eq!(nan.smoothed()[0], None);
    }

    #[test]
    fn bad_settings_are_refused_and_the_default_k_is_not_serialized() {
        assert!(EquilibriumConfig { samples_per_unit: 0.0, ..cfg() }.validate().is_err());
        assert!(EquilibriumConfig { tolerance: f64::NAN, ..cfg() }.validate().is_err());
        let s = serde_json::to_string(&EquilibriumConfig::default()).unwrap();
        assert!(!s.contains("samples_per_unit"), "{s}");
        let s = serde_json::to_string(&cfg()).unwrap();
        assert!(s.contains("samples_per_unit"), "{s}");
        assert!(!s.contains("reference"), "{s}");
        let p = EquilibriumConfig { reference: Reference::Plateau, ..cfg() };
        assert!(serde_json::to_string(&p).unwrap().contains(r#""reference":"plateau""#));
    }
}
