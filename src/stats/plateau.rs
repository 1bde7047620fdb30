//! T_eq against each group's own plateau (`equilibrium.reference = "plateau"`).
//!
//! The detector ([`Detector`]) compares each group's smoothed RMS of r = Δ/Δ* with 1. Where Δ* is
//! only roughly the equilibrium (AdamW's and Lion's rotational-equilibrium Δ* miss some groups of
//! the nets by 30–40%: docs/REPRODUCTION.md §1) that band is never entered, though the run settles.
//! With the plateau reference each group's ratios are divided by its plateau
//!
//!   P_g = sqrt(mean of r² over the logged steps of the last [`PLATEAU_UNITS`] units of the phase),
//!
//! and the same detector, with the same settings, runs over r/P_g: T_eq is the time to settle within
//! the tolerance of where the run ends up. The plateau is measured on the run itself, so a T_eq whose
//! confirming window reaches into the plateau's own steps would be self-fulfilling: it counts only
//! if the window closes before the plateau's first step (so a phase needs more than
//! PLATEAU_UNITS + `window` units to give one). `ilr calibrate` checks this detector on AdamW's toy
//! (docs/CALIBRATION.md).

use super::equilibrium::{Detector, EquilibriumConfig};
use super::units::relaxation_rate;

/// The plateau's length, in units of (1 − γ)/λ_e: long enough that P_g's own noise is a fraction of
/// the tolerance (the detector's smoothing is 1 unit), short enough to leave the rest of a recipe's
/// run (5–10 units) for T_eq.
pub const PLATEAU_UNITS: f64 = 2.0;

/// The plateau detector's result for one phase.
#[derive(Clone, Debug, PartialEq)]
pub struct PlateauEquilibrium {
    /// T_eq in steps since the phase started, if confirmed before the plateau.
    pub t_eq: Option<u64>,
    /// P_g of each group: the measured equilibrium Δ/Δ* (None where no ratio was finite).
    pub plateau: Vec<Option<f64>>,
    /// Whether every group's smoothed r/P_g was within tolerance at the last logged step.
    pub inside_at_end: bool,
}

/// The plateau detector over a phase's logged `ratios` (G per step of `steps`, in order) that
/// started at step `start`, with (λ_e, γ) setting the unit and `log_every` the logging interval.
pub fn plateau_equilibrium(
    cfg: &EquilibriumConfig,
    lambda_e: f64,
    momentum: f64,
    log_every: u64,
    start: u64,
    steps: &[u64],
    ratios: &[f64],
) -> PlateauEquilibrium {
    let groups = if steps.is_empty() { 0 } else { ratios.len() / steps.len() };
    let rows = || steps.iter().zip(ratios.chunks_exact(groups.max(1)));
    let last = steps.last().copied().unwrap_or(start);
    let plateau_from = last as f64 - PLATEAU_UNITS / relaxation_rate(lambda_e, momentum);
    let plateau: Vec<Option<f64>> = (0..groups)
        .map(|g| {
            let tail: Vec<f64> = rows()
                .filter(|(&s, r)| s as f64 > plateau_from && r[g].is_finite())
                .map(|(_, r)| r[g] * r[g])
                .collect();
            (!tail.is_empty()).then(|| (tail.iter().sum::<f64>() / tail.len() as f64).sqrt())
        })
        .collect();
    let mut d = Detector::new(cfg, groups, lambda_e, momentum, log_every, start);
    let mut scaled = vec![0.0; groups];
    for (&s, r) in rows() {
        for ((x, &r), p) in scaled.iter_mut().zip(r).zip(&plateau) {
            *x = p.map_or(f64::NAN, |p| r / p);
        }
        d.observe(s, &scaled);
    }
    let confirmed_before_plateau = |t: &u64| ((start + t) as f64 + d.window_steps()) < plateau_from;
    PlateauEquilibrium {
        t_eq: d.t_eq().filter(confirmed_before_plateau),
        plateau,
        inside_at_end: d.inside_now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// λ_e = 0.01, γ = 0: u = 100 steps; window 50 steps, τ = 5 steps, grid every step.
    fn cfg() -> EquilibriumConfig {
        EquilibriumConfig { smoothing: 0.05, samples_per_unit: 100.0, ..Default::default() }
    }

    #[test]
    fn a_group_that_settles_off_the_prediction_gets_the_time_it_settled() {
        // Group 0 settles at 0.7 of Δ* at step 150, group 1 at 1.0 from the start; 1,000 steps.
        let steps: Vec<u64> = (1..=1000).collect();
        let ratios: Vec<f64> = steps.iter().flat_map(|&s| [if s < 150 { 2.0 } else { 0.7 }, 1.0]).collect();
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &ratios);
        let [p0, p1] = [p.plateau[0].unwrap(), p.plateau[1].unwrap()];
        assert!((p0 - 0.7).abs() < 1e-12 && (p1 - 1.0).abs() < 1e-12, "{:?}", p.plateau);
        // The smoothed r² falls from (2/0.7)² to 1: m = 1 + (8.16 − 1)·e^{−k/5} reaches 1.1² after
        // k = 5·ln(7.16/0.21) ≈ 17.6 steps.
        let t = p.t_eq.expect("confirmed");
        assert!((165..170).contains(&t), "t_eq = {t}");
        assert!(p.inside_at_end);
        // Against Δ* the same run never reaches equilibrium.
        let mut d = Detector::new(&cfg(), 2, 0.01, 0.0, 1, 0);
        steps.iter().zip(ratios.chunks_exact(2)).for_each(|(&s, r)| d.observe(s, r));
        assert_eq!(d.t_eq(), None);
    }

    #[test]
    fn a_t_eq_confirmed_inside_the_plateau_is_not_counted() {
        // Settles at step 880 of 1,000: the plateau (the last 200 steps) starts at 800, so the
        // window that would confirm it lies inside the plateau's own steps.
        let steps: Vec<u64> = (1..=1000).collect();
        let ratios: Vec<f64> = steps.iter().map(|&s| if s < 880 { 3.0 } else { 1.2 }).collect();
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &ratios);
        assert_eq!(p.t_eq, None);
        // Settling at step 500 is confirmed (by step ≈ 566, before 800), counted from `start`: r/P
        // falls from 2.5 to 1, m = 1 + 5.25·e^{−k/5} reaches 1.21 after k ≈ 16 steps.
        let late: Vec<u64> = steps.iter().map(|s| s + 300).collect();
        let ratios: Vec<f64> = steps.iter().map(|&s| if s < 500 { 3.0 } else { 1.2 }).collect();
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 300, &late, &ratios);
        assert!(p.t_eq.is_some_and(|t| (514..519).contains(&t)), "{:?}", p.t_eq);
    }

    #[test]
    fn no_finite_ratio_gives_no_plateau_and_no_t_eq() {
        let steps: Vec<u64> = (1..=1000).collect();
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &vec![f64::NAN; 1000]);
        assert_eq!((p.plateau, p.t_eq, p.inside_at_end), (vec![None], None, false));
        let empty = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &[], &[]);
        assert_eq!((empty.plateau.len(), empty.t_eq), (0, None));
    }

    /// The plateau is the logged steps after `last − 2 units` (here 1000 − 200 = 800), step 800
    /// itself excluded: an outlier logged at step 800 is not part of it, one at 801 is.
    #[test]
    fn the_plateau_starts_after_its_first_step() {
        let steps: Vec<u64> = (1..=1000).collect();
        let at = |outlier: u64| -> Vec<f64> {
            steps.iter().map(|&s| if s == outlier { 3.0 } else { 1.0 }).collect()
        };
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &at(800));
        assert_eq!(p.plateau, vec![Some(1.0)]);
        let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &at(801));
        assert!((p.plateau[0].unwrap() - ((199.0 + 9.0) / 200.0f64).sqrt()).abs() < 1e-12, "{:?}", p.plateau);
    }

    /// A T_eq counts only if its confirming window (50 steps) closes before the plateau (step
    /// 800): T_eq + 50 < 800. The settling step s₀ is placed so that the detector's own T_eq is
    /// exactly 750 (window closing at 800: not counted) and 749 (counted).
    #[test]
    fn a_t_eq_counts_only_if_its_window_closes_before_the_plateau() {
        let steps: Vec<u64> = (1..=1000).collect();
        let settle =
            |s0: u64| -> Vec<f64> { steps.iter().map(|&s| if s < s0 { 3.0 } else { 1.2 }).collect() };
        // The detector on r/P alone, with no plateau cut.
        let raw_t_eq = |s0: u64| {
            let ratios = settle(s0);
            let p = plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &ratios).plateau[0].unwrap();
            let mut d = Detector::new(&cfg(), 1, 0.01, 0.0, 1, 0);
            steps.iter().zip(&ratios).for_each(|(&s, r)| d.observe(s, &[r / p]));
            d.t_eq().unwrap()
        };
        let lag = raw_t_eq(500) - 500;
        let s0 = 750 - lag;
        assert_eq!(raw_t_eq(s0), 750, "the lag after settling is the same at every s₀");
        assert_eq!(plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &settle(s0)).t_eq, None);
        assert_eq!(plateau_equilibrium(&cfg(), 0.01, 0.0, 1, 0, &steps, &settle(s0 - 1)).t_eq, Some(749));
    }
}
