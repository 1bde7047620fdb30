//! The equilibrium detector on AdamW's toy: what `ilr reproduce fast-equilibrium-adamw` measures,
//! checked where the answer is known.
//!
//! Each (arm, λ_e) steps `seeds` white-noise toy vectors (`optimizers::OptimizerToy`) with AdamW at
//! the recipe's η and β, from ‖w₀‖ = init·‖w*‖ (predicted ‖w*‖), logging Δ/Δ* at the recipes'
//! cadence. Every seed gets both detectors: against Δ* (`Detector`) and against its own plateau
//! (`stats::plateau`). The truth is the band entry of the ensemble's RMS ratio (over the seeds, every
//! step, no smoothing): with d = 512 a step's Δ/Δ* varies by a few % between seeds, so the ensemble
//! RMS is the mean trajectory. For the plateau detector the truth is taken against the ensemble's own
//! plateau. Under AdamW ‖w‖² relaxes at 2λ_e per step (SGD: 4λ_e), so from 10‖w*‖ the exact entry is
//! near ln((10² − 1)/(1/0.9² − 1))/2 ≈ 3.0 units; the slope of log T_eq on log(1/λ_e) is 1 if the
//! time scales as 1/λ_e, as the recipe tests on nets.

use super::analytic::band_entry;
use super::optimizers::{OptimizerToy, ToyOptimizer};
use super::{mean_sd, slope_ci_passes, stats_every};
use crate::report::fit::{fit_loglog_clusters, LogLogFit};
use crate::stats::plateau::{plateau_equilibrium, PLATEAU_UNITS};
use crate::stats::rotational::{adamw_angular_update, adamw_equilibrium_norm};
use crate::stats::{angle_from_sums, Detector, EquilibriumConfig};
use anyhow::Result;
use serde::Serialize;

/// The recipe's settings (experiments/fast-equilibrium-adamw.tiny.toml): η, β and the λ_e.
pub const LR: f64 = 1e-3;
pub const BETAS: (f64, f64) = (0.9, 0.95);
pub const LAMBDA_ES: [f64; 5] = [8e-3, 4e-3, 2e-3, 1e-3, 5e-4];
/// Run lengths in units of 1/λ_e: the recipe's large arm (12) and default/matched arms (10).
const UNITS_LARGE: f64 = 12.0;
const UNITS_MATCHED: f64 = 10.0;

/// One detector's T_eq over the seeds of a cell, in units of 1/λ_e, against the truth.
#[derive(Clone, Debug, Serialize)]
pub struct DetectorResult {
    /// Seeds whose T_eq was confirmed.
    pub reached: usize,
    pub t_eq_units: Option<f64>,
    pub t_eq_units_sd: Option<f64>,
    /// Every seed's T_eq in steps (null where not confirmed), in seed order.
    pub t_eq_steps_per_seed: Vec<Option<u64>>,
    /// The ensemble's band entry in units (null if it has none).
    pub truth_units: Option<f64>,
    /// Detector − truth, in units.
    pub bias: Option<f64>,
}

/// One (arm, λ_e) of AdamW's toy.
#[derive(Clone, Debug, Serialize)]
pub struct AdamwRow {
    pub arm: String,
    pub lambda_e: f64,
    /// ‖w₀‖/‖w*‖.
    pub init: f64,
    pub steps: u64,
    pub stats_every: u64,
    pub seeds: usize,
    pub predicted: DetectorResult,
    pub plateau: DetectorResult,
    /// The ensemble's plateau: its RMS Δ/Δ* over the last PLATEAU_UNITS units (1 where Δ* holds).
    pub ensemble_plateau: f64,
}

/// The AdamW arm of the calibration.
#[derive(Clone, Debug, Serialize)]
pub struct AdamwCalibration {
    pub lr: f64,
    pub betas: (f64, f64),
    pub rows: Vec<AdamwRow>,
    /// Slopes of log T_eq on log(1/λ_e) of the large arm (λ_e clusters), per detector.
    pub slope_predicted: Option<LogLogFit>,
    pub slope_plateau: Option<LogLogFit>,
    /// Both slope CIs contain 1 and lie within [0.95, 1.05].
    pub slopes_pass: bool,
    /// The matched arm's slope against the plateau (its T_eq is the detector's delay plus AdamW's
    /// start-up transient, which lasts a number of steps, not of units: what the nets' matched arm
    /// should be compared with).
    pub slope_matched_plateau: Option<LogLogFit>,
}

/// The band entry of `ratios` (one per step from step 1) over `reference`, in steps.
fn entry(ratios: &[f64], reference: f64, tol: f64, window: f64) -> Option<u64> {
    let scaled: Vec<f64> = ratios.iter().map(|r| r / reference).collect();
    band_entry(&scaled, tol, window)
}

fn result(per_seed: Vec<Option<u64>>, truth: Option<u64>, unit: f64) -> DetectorResult {
    let units: Vec<f64> = per_seed.iter().flatten().map(|&t| t as f64 / unit).collect();
    let (mean, sd) = mean_sd(&units);
    let truth_units = truth.map(|t| t as f64 / unit);
    DetectorResult {
        reached: units.len(),
        t_eq_units: mean,
        t_eq_units_sd: sd,
        t_eq_steps_per_seed: per_seed,
        truth_units,
        bias: mean.zip(truth_units).map(|(m, t)| m - t),
    }
}

/// Run one (arm, λ_e) from ‖w₀‖ = `init`·‖w*‖.
pub fn run_cell(
    eq: &EquilibriumConfig,
    dim: usize,
    seeds: usize,
    arm: &str,
    lambda_e: f64,
    init: f64,
    stream: u64,
) -> Result<AdamwRow> {
    let (beta1, beta2) = BETAS;
    let wd = lambda_e / LR;
    let delta_star = adamw_angular_update(lambda_e, beta1);
    let norm = adamw_equilibrium_norm(LR, wd, beta1, dim);
    let unit = 1.0 / lambda_e;
    let every = stats_every(unit);
    let units = if init > 1.0 { UNITS_LARGE } else { UNITS_MATCHED };
    let steps = (units * unit).ceil() as u64;
    let mut toy = OptimizerToy::new(
        ToyOptimizer::AdamW { beta1, beta2 },
        LR,
        wd,
        dim,
        seeds,
        stream,
        (init * norm).powi(2),
    );
    let mut detectors: Vec<Detector> =
        (0..seeds).map(|_| Detector::new(eq, 1, lambda_e, 0.0, every, 0)).collect();
    let mut logged_steps = Vec::new();
    let mut logged: Vec<Vec<f64>> = vec![Vec::new(); seeds];
    let mut ensemble = Vec::with_capacity(steps as usize);
    for t in 1..=steps {
        let sums = toy.step(true)?.expect("sums were requested");
        let ratios: Vec<f64> = sums.iter().map(|s| angle_from_sums(s.ww, s.dd, s.wd) / delta_star).collect();
        ensemble.push((ratios.iter().map(|r| r * r).sum::<f64>() / seeds as f64).sqrt());
        if t % every == 0 {
            logged_steps.push(t);
            for ((d, log), &r) in detectors.iter_mut().zip(&mut logged).zip(&ratios) {
                d.observe(t, &[r]);
                log.push(r);
            }
        }
    }
    let window = detectors[0].window_steps();
    let tail = &ensemble[ensemble.len() - (PLATEAU_UNITS * unit) as usize..];
    let ensemble_plateau = (tail.iter().map(|r| r * r).sum::<f64>() / tail.len() as f64).sqrt();
    let plateau_t_eq =
        |log: &Vec<f64>| plateau_equilibrium(eq, lambda_e, 0.0, every, 0, &logged_steps, log).t_eq;
    Ok(AdamwRow {
        arm: arm.to_string(),
        lambda_e,
        init,
        steps,
        stats_every: every,
        seeds,
        predicted: result(
            detectors.iter().map(Detector::t_eq).collect(),
            entry(&ensemble, 1.0, eq.tolerance, window),
            unit,
        ),
        plateau: result(
            logged.iter().map(plateau_t_eq).collect(),
            entry(&ensemble, ensemble_plateau, eq.tolerance, window),
            unit,
        ),
        ensemble_plateau,
    })
}

/// The large arm (10‖w*‖) and the matched arm at every λ_e of the recipe, and the slopes.
pub fn run(
    eq: &EquilibriumConfig,
    dim: usize,
    seeds: usize,
    mut on_row: impl FnMut(&AdamwRow),
) -> Result<AdamwCalibration> {
    let mut rows = Vec::new();
    for (arm, init, base) in [("adamw-large", 10.0, 5000), ("adamw-matched", 1.0, 6000)] {
        for (i, &le) in LAMBDA_ES.iter().enumerate() {
            let r = run_cell(eq, dim, seeds, arm, le, init, base + i as u64)?;
            on_row(&r);
            rows.push(r);
        }
    }
    let slope = |arm: &str, pick: fn(&AdamwRow) -> &DetectorResult| {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.arm == arm)
            .flat_map(|r| pick(r).t_eq_steps_per_seed.iter().flatten().map(|&t| (r.lambda_e, t as f64)))
            .collect();
        fit_loglog_clusters(&points)
    };
    let (slope_predicted, slope_plateau) =
        (slope("adamw-large", |r| &r.predicted), slope("adamw-large", |r| &r.plateau));
    let slope_matched_plateau = slope("adamw-matched", |r| &r.plateau);
    let passes = |f: &Option<LogLogFit>| slope_ci_passes(f.as_ref().and_then(|f| f.slope_ci95));
    Ok(AdamwCalibration {
        lr: LR,
        betas: BETAS,
        slopes_pass: passes(&slope_predicted) && passes(&slope_plateau),
        rows,
        slope_predicted,
        slope_plateau,
        slope_matched_plateau,
    })
}

fn units(d: &DetectorResult) -> String {
    match (d.t_eq_units, d.t_eq_units_sd) {
        (Some(m), Some(sd)) => format!("{m:.2} ± {sd:.2}"),
        (Some(m), None) => format!("{m:.2}"),
        _ => "—".into(),
    }
}

/// The table's header and one line per row: T_eq and truth in units of 1/λ_e, per detector.
pub fn table_header() -> String {
    format!(
        "{:<13} {:>8} {:>7} {:>14} {:>6} {:>7} {:>14} {:>6} {:>7} {:>8}",
        "arm", "λ_e", "reached", "T_eq vs Δ*", "truth", "bias", "T_eq vs plat.", "truth", "bias", "plateau"
    )
}

pub fn table_line(r: &AdamwRow) -> String {
    let opt = |v: Option<f64>, sign: bool| match v {
        Some(x) if sign => format!("{x:+.2}"),
        Some(x) => format!("{x:.2}"),
        None => "—".into(),
    };
    format!(
        "{:<13} {:>8.1e} {:>7} {:>14} {:>6} {:>7} {:>14} {:>6} {:>7} {:>8.3}",
        r.arm,
        r.lambda_e,
        format!("{}+{}/{}", r.predicted.reached, r.plateau.reached, r.seeds),
        units(&r.predicted),
        opt(r.predicted.truth_units, false),
        opt(r.predicted.bias, true),
        units(&r.plateau),
        opt(r.plateau.truth_units, false),
        opt(r.plateau.bias, true),
        r.ensemble_plateau
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_detectors_find_the_norm_decay_of_adamw_from_a_large_init() {
        // d = 128, 4 seeds, λ_e = 8e-3 (1,500 steps): from 10‖w*‖ the ensemble enters the band near
        // ln(99/0.235)/2 ≈ 3.0 units (‖w‖² relaxes at 2λ_e); each detector confirms it within about
        // 2.5 units after (its smoothing is 1 unit, its window 0.5), never before.
        let r = run_cell(&EquilibriumConfig::default(), 128, 4, "large", 8e-3, 10.0, 9).unwrap();
        println!("{}\n{}", table_header(), table_line(&r));
        for d in [&r.predicted, &r.plateau] {
            let truth = d.truth_units.expect("the ensemble enters the band");
            assert!((2.5..4.0).contains(&truth), "truth {truth}");
            assert_eq!(d.reached, 4);
            let bias = d.bias.unwrap();
            assert!((0.0..2.5).contains(&bias), "bias {bias}");
        }
        assert!((r.ensemble_plateau - 1.0).abs() < 0.03, "plateau {}", r.ensemble_plateau);
    }
}
