//! `ilr calibrate`: the equilibrium detector on a toy whose dynamics are known in closed form.
//!
//! Each (arm, λ_e) runs `seeds` independent toys (`toy`) through the project's SGD step, logs Δ/Δ*
//! at the recipes' cadence (every step up to λ_e = 1e-3, then 1,000 logs per unit) and feeds each
//! seed's ratios to its own [`Detector`] with the training settings. The detector's T_eq is
//! compared with the analytic band entry of the exact RMS ratio (`analytic`), in units of
//! (1 − γ)/λ_e; the bias is their difference. Arms:
//! - large: ‖w₀‖ = 10‖w*‖, γ = 0 (T_eq has the norm's log term, ln(10⁴/0.235)/4 ≈ 2.66 units);
//! - matched: ‖w₀‖ = ‖w*‖, γ = 0 (analytic T_eq ≈ 0, so the detector's T_eq is its own delay);
//! - momentum: the large arm at γ = 0.9 at λ_e = (1 − γ)·rate for a few rates of the large arm.
//!
//! The slope of log T_eq on log(1/λ_e) is fitted on the per-λ_e means of the large arm
//! (`report::fit::fit_loglog`: n_λ − 2 degrees of freedom). docs/CALIBRATION.md has the math.

pub mod adamw_detector;
pub mod analytic;
pub mod optimizers;
pub mod toy;

use crate::report::fit::{fit_loglog, same_lambda_e, LogLogFit};
use crate::report::plot::{Figure, Panel, Series, Style};
use crate::stats::{relaxation_rate, Detector, EquilibriumConfig};
use adamw_detector::AdamwCalibration;
use analytic::{band_entry, closed_form_entry, Moments, ToyHyper};
use anyhow::{ensure, Result};
use optimizers::OptimizerRow;
use serde::Serialize;
use std::path::Path;
use toy::Toy;

/// How far the toy's measured Δ (its 95% CI over seeds) and ‖w‖ may lie from an optimizer's
/// prediction: the toy's noise at 16 seeds of d = 512 is about 0.3% (calibration.json), so 2% would
/// show a formula error of the size of REQ's at β₁ = 0 (25%) or of the O(δ·memory) terms (2–5%).
pub const OPTIMIZER_TOLERANCE: f64 = 0.02;

/// What to run.
#[derive(Clone, Debug)]
pub struct CalibrationConfig {
    /// Dimension d of each weight vector.
    pub dim: usize,
    /// Seeds per (arm, λ_e).
    pub seeds: usize,
    /// The λ_e of the large and matched arms.
    pub lambda_es: Vec<f64>,
    /// Learning rate η (λ = λ_e/η; by scale invariance only λ_e matters).
    pub lr: f64,
    /// σ of the per-step gradient-norm factor s = exp(σz − σ²).
    pub spread: f64,
    /// ‖w₀‖/‖w*‖ of the large arm.
    pub large_init: f64,
    /// Momentum of the momentum arm, and the relaxation rates λ_e/(1 − γ) it runs at.
    pub momentum: f64,
    pub momentum_rates: Vec<f64>,
    /// Steps per run, in units: large (and momentum) arm, matched arm.
    pub units_large: f64,
    pub units_matched: f64,
    /// The detector's settings (as in training).
    pub equilibrium: EquilibriumConfig,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            dim: 512,
            seeds: 16,
            lambda_es: vec![1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3, 5e-4, 2.5e-4],
            lr: 0.1,
            spread: 0.5,
            large_init: 10.0,
            momentum: 0.9,
            momentum_rates: vec![8e-3, 2e-3, 5e-4],
            units_large: 16.0,
            units_matched: 6.0,
            equilibrium: EquilibriumConfig::default(),
        }
    }
}

impl CalibrationConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!((2..=1 << 16).contains(&self.dim), "--dim must lie in 2..=65536 (got {})", self.dim);
        ensure!(self.seeds >= 2, "--seeds must be at least 2, for a spread (got {})", self.seeds);
        ensure!(self.lambda_es.len() >= 3, "give at least 3 λ_e values, for a slope with a CI");
        let ok = |v: f64| v.is_finite() && v > 0.0;
        ensure!(
            self.lambda_es.iter().chain(&self.momentum_rates).all(|&l| ok(l) && l < 0.5),
            "every λ_e and momentum rate must lie in (0, 0.5) (got {:?} and {:?})",
            self.lambda_es,
            self.momentum_rates
        );
        ensure!(
            ok(self.lr) && ok(self.large_init) && self.spread.is_finite() && self.spread >= 0.0,
            "bad lr/init/spread"
        );
        ensure!((0.0..1.0).contains(&self.momentum), "--momentum must lie in [0, 1)");
        ensure!(ok(self.units_large) && ok(self.units_matched), "run lengths must be positive");
        self.equilibrium.validate()
    }
}

/// The recipes' logging cadence: every step while a unit is at most 1,000 steps, then 1,000 logs
/// per unit (experiments/fast-equilibrium.tiny.toml: 1 up to λ_e = 1e-3, 2 at 5e-4, 4 at 2.5e-4).
pub fn stats_every(unit_steps: f64) -> u64 {
    ((unit_steps / 1000.0).floor() as u64).max(1)
}

/// One (arm, λ_e) of the calibration.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub arm: String,
    pub lambda_e: f64,
    pub momentum: f64,
    /// Steps per unit, (1 − γ)/λ_e.
    pub unit_steps: f64,
    pub stats_every: u64,
    pub seeds: usize,
    /// Seeds whose detector confirmed equilibrium within the run.
    pub reached: usize,
    /// The detector's T_eq·λ_e: mean over the seeds that reached it, and its sample SD.
    pub t_eq_lambda_e: Option<f64>,
    pub t_eq_lambda_e_sd: Option<f64>,
    /// The same in units of (1 − γ)/λ_e (equal to T_eq·λ_e at γ = 0).
    pub t_eq_units: Option<f64>,
    pub t_eq_units_sd: Option<f64>,
    /// Every seed's T_eq in units (null where not reached), in seed order.
    pub t_eq_units_per_seed: Vec<Option<f64>>,
    /// Mean T_eq in steps (the slope's input).
    pub t_eq_steps: Option<f64>,
    /// The analytic band entry of the exact RMS ratio (discrete mean recursion), ×λ_e and in units.
    pub analytic_t_eq_lambda_e: f64,
    pub analytic_t_eq_units: f64,
    /// The continuous closed form in units, ln((y₀²−1)/(y_b²−1))/4.
    pub closed_form_t_eq_units: f64,
    /// Detector − analytic, in units of (1 − γ)/λ_e (1/λ_e at γ = 0).
    pub bias: Option<f64>,
    /// Mean over seeds and the last half of the run of the simulated ‖w‖²/‖w*‖² (1 at equilibrium).
    pub final_norm_sq_ratio: f64,
}

/// The whole calibration (calibration.json).
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Slope of log T_eq on log(1/λ_e) over the large arm's per-λ_e means, with its 95% CI.
    pub slope: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n_lambda: usize,
    /// Largest over smallest λ_e of the fit.
    pub lambda_e_span: f64,
    pub fit: Option<LogLogFit>,
    /// The criterion: the large arm's slope CI contains 1 and lies within [0.95, 1.05].
    pub slope_passes: bool,
    /// The matched arm's delay: pooled mean and SD of T_eq·λ_e over every seed and λ_e, and whether
    /// each λ_e's mean lies within 3 standard errors of the pooled mean.
    pub matched_lag: Option<f64>,
    pub matched_lag_sd: Option<f64>,
    pub matched_lag_uniform: bool,
    /// Momentum vs γ = 0 at the same rate: the largest |difference of means| in units, and whether
    /// every difference lies within 3 combined standard errors.
    pub momentum_max_diff_units: Option<f64>,
    pub momentum_matches: bool,
    /// What the toy gives for the norm-term coefficient b of the nets' fit, from the contrast that
    /// fit uses (see [`NormTermContrast`]).
    pub norm_term_b: Option<NormTermContrast>,
    /// AdamW's and Lion's predicted Δ* and ‖w*‖ on the toy (`optimizers`), and whether every row
    /// holds within [`OPTIMIZER_TOLERANCE`].
    pub optimizers: Vec<OptimizerRow>,
    pub optimizers_hold: bool,
    /// Both detectors (against Δ* and against the plateau) on AdamW's toy at the settings of
    /// `ilr reproduce fast-equilibrium-adamw` (`adamw_detector`).
    pub adamw: AdamwCalibration,
    pub rows: Vec<Row>,
    pub lag_rows: Vec<Row>,
    pub momentum_rows: Vec<Row>,
    pub settings: Settings,
    pub wall_time_s: f64,
}

/// b of T_eq·λ_e = a_λ + b·ln(‖w₀‖/‖w*‖) from the contrast of the large and matched arms at each λ_e,
/// (T_large − T_matched)/ln(large_init), the within-λ_e contrast of `ilr report`'s norm-term fit: the
/// value that a toy whose norm decays exactly as modelled gives, through the detector and exactly.
/// It exceeds 1 even exactly: the 10% band adds ln(1/(y_b² − 1))/4 ≈ 0.36 units to the large arm's
/// entry, while the matched arm starts inside the band; and the detector's delay is longer when the
/// ratio must climb from near 0 than when it starts near 1.
#[derive(Clone, Debug, Serialize)]
pub struct NormTermContrast {
    /// ln(‖w₀‖/‖w*‖) of the large arm (ln 10 by default).
    pub norm_term: f64,
    /// Mean and SD over λ_e of the detector's contrast.
    pub detector_b: f64,
    pub detector_b_sd: f64,
    /// Mean over λ_e of the exact (analytic) contrast.
    pub analytic_b: f64,
    pub n_lambda: usize,
}

fn norm_term_contrast(large: &[Row], matched: &[Row], large_init: f64) -> Option<NormTermContrast> {
    let norm_term = large_init.ln();
    let pairs: Vec<(f64, f64)> = large
        .iter()
        .filter_map(|l| {
            let m = matched.iter().find(|m| same_lambda_e(m.lambda_e, l.lambda_e))?;
            let detector = (l.t_eq_units? - m.t_eq_units?) / norm_term;
            Some((detector, (l.analytic_t_eq_units - m.analytic_t_eq_units) / norm_term))
        })
        .collect();
    let n = pairs.len();
    if n < 2 || norm_term <= 0.0 {
        return None;
    }
    let mean = pairs.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let sd = (pairs.iter().map(|p| (p.0 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let analytic = pairs.iter().map(|p| p.1).sum::<f64>() / n as f64;
    Some(NormTermContrast {
        norm_term,
        detector_b: mean,
        detector_b_sd: sd,
        analytic_b: analytic,
        n_lambda: n,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub dim: usize,
    pub seeds: usize,
    pub lr: f64,
    pub spread: f64,
    pub large_init: f64,
    pub momentum: f64,
    pub tolerance: f64,
    pub window: f64,
    pub smoothing: f64,
    pub samples_per_unit: f64,
    pub units_large: f64,
    pub units_matched: f64,
}

/// The slope criterion of the large arms: a 95% CI that contains 1 and lies within [0.95, 1.05].
fn slope_ci_passes(ci95: Option<[f64; 2]>) -> bool {
    ci95.is_some_and(|[lo, hi]| lo <= 1.0 && hi >= 1.0 && lo >= 0.95 && hi <= 1.05)
}

/// Mean and sample SD of `v` (None when empty; the SD None with fewer than 2 values).
fn mean_sd(v: &[f64]) -> (Option<f64>, Option<f64>) {
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.len() > 1).then(|| (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (Some(m), sd)
}

/// Run one (arm, λ_e, γ) with `init` = ‖w₀‖/‖w*‖; `stream` keeps every cell's noise distinct.
pub fn run_cell(
    cfg: &CalibrationConfig,
    arm: &str,
    lambda_e: f64,
    momentum: f64,
    init: f64,
    units: f64,
    stream: u64,
) -> Result<Row> {
    let h = ToyHyper { lr: cfg.lr, wd: lambda_e / cfg.lr, momentum, g2: Toy::g2(cfg.dim) };
    let unit = 1.0 / relaxation_rate(lambda_e, momentum);
    let every = stats_every(unit);
    let steps = (units * unit).ceil() as u64;
    let a_star = h.equilibrium_sq_norm();
    let a0 = init * init * a_star;
    let seeds: Vec<u64> = (0..cfg.seeds as u64).collect();
    let mut toy = Toy::new(cfg.dim, &seeds, stream, h, cfg.spread, a0)?;
    let mut detectors: Vec<Detector> =
        seeds.iter().map(|_| Detector::new(&cfg.equilibrium, 1, lambda_e, momentum, every, 0)).collect();
    let (mut norm_sum, mut norm_n) = (0.0, 0usize);
    for t in 0..steps {
        let completed = t + 1;
        if let Some(logged) = toy.step(completed % every == 0)? {
            for (d, (r, ww)) in detectors.iter_mut().zip(logged) {
                d.observe(completed, &[r]);
                if completed > steps / 2 {
                    norm_sum += ww / a_star;
                    norm_n += 1;
                }
            }
        }
    }
    let per_seed = detectors.iter().map(|d| d.t_eq().map(|t| t as f64 / unit)).collect();
    let t_eq: Vec<f64> = detectors.iter().filter_map(|d| d.t_eq()).map(|t| t as f64).collect();
    let (steps_mean, _) = mean_sd(&t_eq);
    let units_of: Vec<f64> = t_eq.iter().map(|t| t / unit).collect();
    let (u_mean, u_sd) = mean_sd(&units_of);
    let (l_mean, l_sd) = mean_sd(&t_eq.iter().map(|t| t * lambda_e).collect::<Vec<_>>());
    let window = detectors[0].window_steps();
    let exact = analytic::ratios(&h, Moments::at_rest(a0), steps as usize);
    let entry = band_entry(&exact, cfg.equilibrium.tolerance, window).map_or(f64::NAN, |t| t as f64);
    Ok(Row {
        arm: arm.to_string(),
        lambda_e,
        momentum,
        unit_steps: unit,
        stats_every: every,
        seeds: cfg.seeds,
        reached: t_eq.len(),
        t_eq_lambda_e: l_mean,
        t_eq_lambda_e_sd: l_sd,
        t_eq_units: u_mean,
        t_eq_units_sd: u_sd,
        t_eq_units_per_seed: per_seed,
        t_eq_steps: steps_mean,
        analytic_t_eq_lambda_e: entry * lambda_e,
        analytic_t_eq_units: entry / unit,
        closed_form_t_eq_units: closed_form_entry(init * init, cfg.equilibrium.tolerance),
        bias: u_mean.map(|m| m - entry / unit),
        final_norm_sq_ratio: norm_sum / norm_n.max(1) as f64,
    })
}

/// Run every arm and summarise.
pub fn run(
    cfg: &CalibrationConfig,
    mut on_row: impl FnMut(&Row),
    on_adamw_row: impl FnMut(&adamw_detector::AdamwRow),
) -> Result<Calibration> {
    cfg.validate()?;
    let t0 = std::time::Instant::now();
    let mut cell = |arm: &str, le: f64, gam: f64, init: f64, units: f64, stream: u64| -> Result<Row> {
        let r = run_cell(cfg, arm, le, gam, init, units, stream)?;
        on_row(&r);
        Ok(r)
    };
    let mut rows = Vec::new();
    let mut lag_rows = Vec::new();
    let mut momentum_rows = Vec::new();
    for (i, &le) in cfg.lambda_es.iter().enumerate() {
        rows.push(cell("large", le, 0.0, cfg.large_init, cfg.units_large, 1000 + i as u64)?);
    }
    for (i, &le) in cfg.lambda_es.iter().enumerate() {
        lag_rows.push(cell("matched", le, 0.0, 1.0, cfg.units_matched, 2000 + i as u64)?);
    }
    for (i, &rate) in cfg.momentum_rates.iter().enumerate() {
        let le = rate * (1.0 - cfg.momentum);
        momentum_rows.push(cell(
            "momentum",
            le,
            cfg.momentum,
            cfg.large_init,
            cfg.units_large,
            3000 + i as u64,
        )?);
    }
    let points: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.t_eq_steps.map(|t| (r.lambda_e, t))).collect();
    let fit = fit_loglog(&points);
    let ci95 = fit.as_ref().and_then(|f| f.slope_ci95);
    let slope_passes = slope_ci_passes(ci95);
    let [lo, hi] = crate::report::extent(points.iter().map(|p| p.0));
    let span = if points.is_empty() { 0.0 } else { hi / lo };
    // Matched arm: pooled over seeds (each row's mean and SD give its sum of squares back).
    let (mut n, mut s, mut ss) = (0.0, 0.0, 0.0);
    for r in &lag_rows {
        if let (Some(m), Some(sd)) = (r.t_eq_units, r.t_eq_units_sd) {
            let k = r.reached as f64;
            n += k;
            s += k * m;
            ss += (k - 1.0) * sd * sd + k * m * m;
        }
    }
    let pooled = (n > 1.0).then(|| s / n);
    let pooled_sd = pooled.map(|m| ((ss - n * m * m) / (n - 1.0)).max(0.0).sqrt());
    let matched_lag_uniform = match (pooled, pooled_sd) {
        (Some(m), Some(sd)) => lag_rows.iter().all(|r| {
            r.reached == r.seeds
                && r.t_eq_units.is_some_and(|x| (x - m).abs() <= 3.0 * sd / (r.reached as f64).sqrt())
        }),
        _ => false,
    };
    // Momentum vs the γ = 0 row at the same rate.
    let mut max_diff: Option<f64> = None;
    let mut momentum_matches = !momentum_rows.is_empty();
    for m in &momentum_rows {
        let rate = relaxation_rate(m.lambda_e, m.momentum);
        let twin = rows.iter().find(|r| same_lambda_e(r.lambda_e, rate));
        match (twin, m.t_eq_units, m.t_eq_units_sd) {
            (Some(r), Some(mu), Some(msd)) if r.t_eq_units.is_some() => {
                let d = (mu - r.t_eq_units.unwrap_or(f64::NAN)).abs();
                let se = (msd * msd / m.reached as f64
                    + r.t_eq_units_sd.unwrap_or(0.0).powi(2) / r.reached as f64)
                    .sqrt();
                max_diff = Some(max_diff.map_or(d, |x: f64| x.max(d)));
                momentum_matches &= d <= 3.0 * se && m.reached == m.seeds;
            }
            _ => momentum_matches = false,
        }
    }
    let norm_term_b = norm_term_contrast(&rows, &lag_rows, cfg.large_init);
    let optimizers = optimizers::default_cases()
        .into_iter()
        .enumerate()
        .map(|(i, (o, lr, wd))| optimizers::run_case(o, lr, wd, cfg.dim, cfg.seeds, 4000 + i as u64))
        .collect::<Result<Vec<_>>>()?;
    let optimizers_hold = optimizers.iter().all(|r| r.holds(OPTIMIZER_TOLERANCE));
    let adamw = adamw_detector::run(&cfg.equilibrium, cfg.dim, cfg.seeds, on_adamw_row)?;
    let e = &cfg.equilibrium;
    Ok(Calibration {
        slope: fit.as_ref().map(|f| f.slope),
        ci95,
        n_lambda: points.len(),
        lambda_e_span: span,
        fit,
        slope_passes,
        matched_lag: pooled,
        matched_lag_sd: pooled_sd,
        matched_lag_uniform,
        momentum_max_diff_units: max_diff,
        momentum_matches,
        norm_term_b,
        optimizers,
        optimizers_hold,
        adamw,
        rows,
        lag_rows,
        momentum_rows,
        settings: Settings {
            dim: cfg.dim,
            seeds: cfg.seeds,
            lr: cfg.lr,
            spread: cfg.spread,
            large_init: cfg.large_init,
            momentum: cfg.momentum,
            tolerance: e.tolerance,
            window: e.window,
            smoothing: e.smoothing,
            samples_per_unit: e.samples_per_unit,
            units_large: cfg.units_large,
            units_matched: cfg.units_matched,
        },
        wall_time_s: t0.elapsed().as_secs_f64(),
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

/// The table header and one line per row: T_eq and the bias in units of (1 − γ)/λ_e.
pub fn table_header() -> String {
    format!(
        "{:<9} {:>4} {:>8} {:>6} {:>7} {:>15} {:>9} {:>8} {:>7}",
        "arm", "γ", "λ_e", "every", "reached", "T_eq (units)", "analytic", "bias", "‖w‖²/‖w*‖²"
    )
}

pub fn table_line(r: &Row) -> String {
    format!(
        "{:<9} {:>4} {:>8.1e} {:>6} {:>7} {:>15} {:>9.3} {:>8} {:>7.3}",
        r.arm,
        r.momentum,
        r.lambda_e,
        r.stats_every,
        format!("{}/{}", r.reached, r.seeds),
        format!("{} ± {}", opt(r.t_eq_units, 2), opt(r.t_eq_units_sd, 2)),
        r.analytic_t_eq_units,
        r.bias.map_or("—".into(), |b| format!("{b:+.2}")),
        r.final_norm_sq_ratio,
    )
}

/// Write DIR/calibration.json and DIR/calibration.{png,svg}, each atomically.
pub fn write(dir: &Path, c: &Calibration) -> Result<()> {
    crate::util::atomic::write_json_atomic(&dir.join("calibration.json"), c)?;
    let pts = |rows: &[Row], f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| f(r).map(|y| (relaxation_rate(r.lambda_e, r.momentum), y))).collect()
    };
    let series = |label: &str, points, color, style| Series { label: label.into(), points, color, style };
    let teq = Panel {
        title: "T_eq in units of (1−γ)/λ_e: detector vs analytic".into(),
        x_label: "λ_e/(1−γ)".into(),
        y_label: "T_eq·λ_e/(1−γ)".into(),
        log_x: true,
        log_y: false,
        legend: true,
        markers: Vec::new(),
        series: vec![
            series("large: detector", pts(&c.rows, &|r| r.t_eq_units), 0, Style::Line),
            series("large: analytic", pts(&c.rows, &|r| Some(r.analytic_t_eq_units)), 0, Style::Dashed),
            series("matched: detector", pts(&c.lag_rows, &|r| r.t_eq_units), 1, Style::Line),
            series("matched: analytic", pts(&c.lag_rows, &|r| Some(r.analytic_t_eq_units)), 1, Style::Dashed),
            series(
                &format!("large, γ={}: detector", c.settings.momentum),
                pts(&c.momentum_rows, &|r| r.t_eq_units),
                2,
                Style::Points,
            ),
        ],
    };
    let slope = c.slope.map_or("no fit".into(), |s| {
        let [lo, hi] = c.ci95.unwrap_or([f64::NAN; 2]);
        format!("slope {s:.3} [{lo:.3}, {hi:.3}]")
    });
    let mut fit_line = Vec::new();
    if let Some(f) = &c.fit {
        for r in &c.rows {
            fit_line.push((1.0 / r.lambda_e, (f.intercept + f.slope * (1.0 / r.lambda_e).ln()).exp()));
        }
    }
    let loglog = Panel {
        title: format!("large arm, γ = 0: T_eq vs 1/λ_e ({slope})"),
        x_label: "1/λ_e".into(),
        y_label: "T_eq (steps)".into(),
        log_x: true,
        log_y: true,
        legend: true,
        markers: Vec::new(),
        series: vec![
            series(
                "detector (mean over seeds)",
                c.rows.iter().filter_map(|r| r.t_eq_steps.map(|t| (1.0 / r.lambda_e, t))).collect(),
                0,
                Style::Points,
            ),
            series("fit", fit_line, 0, Style::Line),
            series(
                "analytic",
                c.rows.iter().map(|r| (1.0 / r.lambda_e, r.analytic_t_eq_lambda_e / r.lambda_e)).collect(),
                3,
                Style::Dashed,
            ),
        ],
    };
    Figure {
        title: "ilr calibrate: the equilibrium detector on the toy".into(),
        panels: vec![teq, loglog],
        cols: 2,
        panel_size: (640, 420),
    }
    .save(&dir.join("calibration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulated toy against the mean recursion, with and without momentum, from ‖w₀‖ = 3‖w*‖
    /// (a₀ = 9a*) over 3 units of 250 steps, 16 seeds of d = 1024.
    ///
    /// Tolerances: a seed's ‖w‖² has relative SD ≈ sqrt(0.86·λ_e/(1−γ)) ≈ 6% at equilibrium (an
    /// OU process: kicks 2λ_e·(s²−1) of variance 1.72·4λ_e² per step, relaxation 4λ_e; less during
    /// the decay), so the mean over 16 seeds is within 5% at 3 SD. The RMS ratio is pooled over
    /// a quarter unit (62 steps × 16 seeds ≈ 1,000 samples of r², relative SD 1.31/√1000 ≈ 4%,
    /// plus 2× the norm's 1.5%), so R = sqrt(mean r²) is within 8% at 3 SD.
    #[test]
    fn the_toy_follows_the_mean_recursion_with_and_without_momentum() {
        for &gam in &[0.0, 0.9] {
            let le = 4e-3 * (1.0 - gam);
            let (dim, seeds) = (1024, 16u64);
            let h = ToyHyper { lr: 0.1, wd: le / 0.1, momentum: gam, g2: Toy::g2(dim) };
            let unit = 1.0 / relaxation_rate(le, gam);
            assert!((unit - 250.0).abs() < 1e-9);
            let a_star = h.equilibrium_sq_norm();
            let seed_list: Vec<u64> = (0..seeds).collect();
            let mut toy = Toy::new(dim, &seed_list, 7, h, 0.5, 9.0 * a_star).unwrap();
            let mut m = Moments::at_rest(9.0 * a_star);
            let (mut r2_sum, mut r2_an, mut n) = (0.0, 0.0, 0usize);
            for t in 1..=750u64 {
                let a_an = m.a;
                let (next, r_an) = m.step(&h);
                m = next;
                let logged = toy.step(true).unwrap().unwrap();
                let a_sim = logged.iter().map(|x| x.1).sum::<f64>() / seeds as f64;
                if t % 125 == 1 {
                    assert!((a_sim / a_an - 1.0).abs() < 0.05, "γ={gam} t={t}: ‖w‖² {a_sim} vs {a_an}");
                }
                r2_sum += logged.iter().map(|x| x.0 * x.0).sum::<f64>();
                r2_an += r_an * r_an * seeds as f64;
                n += seeds as usize;
                if t % 62 == 0 {
                    let (sim, an) = ((r2_sum / n as f64).sqrt(), (r2_an / n as f64).sqrt());
                    assert!((sim / an - 1.0).abs() < 0.08, "γ={gam} t={t}: RMS Δ/Δ* {sim} vs {an}");
                    (r2_sum, r2_an, n) = (0.0, 0.0, 0);
                }
            }
            // After 3 units the exact RMS ratio is within 0.2% of its fixed point.
            assert!((m.step(&h).1 - 1.0).abs() < 0.01);
        }
    }

    #[test]
    fn the_cadence_is_the_recipes_and_bad_settings_are_refused() {
        assert_eq!(stats_every(62.5), 1);
        assert_eq!(stats_every(1000.0), 1);
        assert_eq!(stats_every(2000.0), 2);
        assert_eq!(stats_every(4000.0), 4);
        let bad = |f: &dyn Fn(&mut CalibrationConfig)| {
            let mut c = CalibrationConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.lambda_es = vec![1e-3, 2e-3]).contains("at least 3"));
        assert!(bad(&|c| c.lambda_es[0] = -1.0).contains("(0, 0.5)"));
        assert!(bad(&|c| c.momentum = 1.0).contains("[0, 1)"));
        assert!(bad(&|c| c.seeds = 1).contains("at least 2"));
        assert!(bad(&|c| c.equilibrium.smoothing = 0.0).contains("positive"));
    }

    /// A short calibration (3 λ_e over 4×, 4 seeds, d = 128) runs end to end and writes its files;
    /// its analytic times are those of the closed form within discretisation error.
    #[test]
    fn a_small_calibration_writes_json_and_a_plot() {
        let cfg = CalibrationConfig {
            dim: 128,
            seeds: 4,
            lambda_es: vec![1.6e-2, 8e-3, 4e-3],
            momentum_rates: vec![8e-3],
            units_large: 8.0,
            units_matched: 3.0,
            ..CalibrationConfig::default()
        };
        let c = run(&cfg, |_| {}, |_| {}).unwrap();
        assert_eq!((c.rows.len(), c.lag_rows.len(), c.momentum_rows.len()), (3, 3, 1));
        assert_eq!(c.adamw.rows.len(), 2 * adamw_detector::LAMBDA_ES.len());
        for r in &c.rows {
            assert!((r.analytic_t_eq_units - r.closed_form_t_eq_units).abs() < 0.1, "{r:?}");
            assert!(r.reached > 0, "{r:?}");
        }
        assert!(c.lag_rows.iter().all(|r| r.analytic_t_eq_units < 0.05));
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &c).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("calibration.json")).unwrap()).unwrap();
        for k in ["slope", "ci95", "n_lambda", "lambda_e_span", "rows", "lag_rows", "momentum_rows", "adamw"]
        {
            assert!(json.get(k).is_some(), "calibration.json lacks {k}");
        }
        assert!(
            json["rows"][0].get("bias").is_some() && json["rows"][0].get("analytic_t_eq_lambda_e").is_some()
        );
        assert!(dir.path().join("calibration.png").exists());
    }
}
