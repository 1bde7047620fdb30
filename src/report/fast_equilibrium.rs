//! The Fast Equilibrium analysis: runs grouped into fit groups (arms), each group's log-log fit of
//! T_eq against 1/λ_e and its judgement, and the norm-term fits within each group and over all.

use super::collect::{LoadedRun, RunInfo, Status};
use super::extent;
use super::fit::{self, LinearFit, LogLogFit, WithinFit};
use super::norms::{self, RunNorms};
use super::table;
use super::verdict::{self, SlopeJudgement};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// The Fast Equilibrium analysis of a set of runs.
#[derive(Clone, Debug)]
pub struct FastEquilibrium {
    pub groups: Vec<FitGroup>,
    /// [`verdict::judge`] of each group, in the same order.
    pub judgements: Vec<SlopeJudgement>,
    /// b with one intercept per λ_e over all groups ([`within_norm_fit`]).
    pub within: Option<WithinFit>,
    /// One intercept for all λ_e over all groups ([`pooled_norm_fit`]).
    pub pooled: Option<LinearFit>,
}

impl FastEquilibrium {
    /// The judgements and the all-group norm-term fits of `groups`.
    pub fn new(groups: Vec<FitGroup>) -> Self {
        Self {
            judgements: groups.iter().map(verdict::judge).collect(),
            within: within_norm_fit(&groups),
            pooled: pooled_norm_fit(&groups),
            groups,
        }
    }

    /// Group and fit the completed and diverged runs ([`fit_groups`]).
    pub fn of(runs: &[LoadedRun]) -> Result<Self> {
        Ok(Self::new(fit_groups(runs)?))
    }
}

/// A run left out of a Fast Equilibrium fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Excluded {
    pub run_id: String,
    pub lambda_e: f64,
    /// Censored runs: the steps trained (their T_eq is longer); diverged runs: the step of divergence.
    pub steps: u64,
}

/// One group of runs in the Fast Equilibrium analysis (an arm of the init-norm control when runs
/// differ in `model.init_norm` / `model.init_scale`). Its runs share every config key but the seed
/// and the λ_e-related ones, so one momentum γ (see [`fit_key`]).
#[derive(Clone, Debug)]
pub struct FitGroup {
    pub label: String,
    /// Heavy-ball momentum γ of the runs: times are in units of (1 − γ)/λ_e
    /// ([`crate::stats::relaxation_rate`]).
    pub momentum: f64,
    /// (run id, λ_e, T_eq) of the runs that reached equilibrium.
    pub points: Vec<(String, f64, u64)>,
    /// Completed runs without T_eq (censored: left out of the fit; see [`verdict::censored_by_lambda_e`]).
    pub censored: Vec<Excluded>,
    /// Diverged runs (left out of the fit).
    pub diverged: Vec<Excluded>,
    /// log T_eq on log(1/λ_e) over the per-λ_e means: the CI that verdicts use
    /// ([`fit::fit_loglog_clusters`]).
    pub fit: Option<LogLogFit>,
    /// The same with every run a point ([`fit::fit_loglog`]): secondary, labelled "seeds as points".
    pub fit_seeds: Option<LogLogFit>,
    /// The norm-decay numbers of each point's run (same order as `points`; None where the run has
    /// no logged group statistics).
    pub norms: Vec<Option<RunNorms>>,
    /// T_eq·λ_e/(1 − γ) = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 over the points (see [`norm_term_fit`]).
    pub norm_fit: Option<LinearFit>,
}

impl FitGroup {
    /// The relaxation rate λ_e/(1 − γ) of this group's runs at λ_e: T_eq times it is T_eq in units
    /// of (1 − γ)/λ_e, comparable across γ (T_eq·λ_e when γ = 0).
    pub fn rate(&self, lambda_e: f64) -> f64 {
        crate::stats::relaxation_rate(lambda_e, self.momentum)
    }

    /// The unit of [`Self::rate`]-scaled times: "1/λ_e" or "(1−γ)/λ_e".
    pub fn unit(&self) -> &'static str {
        crate::stats::unit_label(self.momentum)
    }

    /// T_eq·λ_e/(1 − γ) of each point.
    pub fn t_eq_units(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.2 as f64 * self.rate(p.1))
    }

    /// (λ_e, norm term, T_eq·λ_e/(1 − γ)) of the points with norm data.
    pub fn norm_points_by_lambda_e(&self) -> Vec<(f64, f64, f64)> {
        self.points
            .iter()
            .zip(&self.norms)
            .filter_map(|((_, le, t), n)| Some((*le, n.as_ref()?.norm_term(), *t as f64 * self.rate(*le))))
            .collect()
    }

    /// (norm term, T_eq·λ_e/(1 − γ)) of the points with norm data.
    pub fn norm_points(&self) -> Vec<(f64, f64)> {
        self.norm_points_by_lambda_e().into_iter().map(|(_, x, y)| (x, y)).collect()
    }

    /// [min, max] of T_eq·λ_e/(1 − γ) over the points.
    pub fn t_eq_units_range(&self) -> Option<[f64; 2]> {
        (!self.points.is_empty()).then(|| extent(self.t_eq_units()))
    }
}

/// The least spread (max − min) of the norm term over a fit's points for b to be determined. Where
/// the recipe holds the norm term fixed (the `matched` arm at ≈ 0, `large` at ≈ ln 10), the
/// regressor is nearly constant and b's CI spans tens of units: no fit is reported there.
pub const MIN_NORM_TERM_SPREAD: f64 = 0.5;

/// T_eq·λ_e/(1 − γ) = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2 over (norm term, T_eq·λ_e/(1 − γ)) points,
/// or None when the norm term spreads over less than [`MIN_NORM_TERM_SPREAD`]. The norm decays from
/// ‖w₀‖ to ‖w*‖ in ≈ ln(‖w₀‖²/‖w*‖²)/(2λ_e/(1 − γ)) steps, so b ≈ 1 when that decay is what T_eq
/// waits for, and a is the time to equilibrium that is left, in units of (1 − γ)/λ_e.
pub fn norm_term_fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    // No points give −∞ − ∞ = −∞: no fit.
    let [lo, hi] = extent(points.iter().map(|p| p.0));
    if hi - lo < MIN_NORM_TERM_SPREAD {
        return None;
    }
    fit::fit_linear(points)
}

/// Keys that vary between the λ_e points of one Fast Equilibrium group.
fn fit_free(key: &str) -> bool {
    table::is_sweep_key(key)
        || matches!(key, "train.steps" | "train.eval_every" | "train.stats_every" | "train.device")
}

/// The init-norm arm of a config: `default` (the Kaiming init), `matched` (`model.init_norm` set,
/// as `ilr reproduce fast-equilibrium` sets it to the equilibrium norms of the λ_e), `large` or
/// `small` (init_norm set and then scaled by init_scale > 1 or < 1), `init_scale=s` (no init_norm).
pub fn init_arm(cfg: &crate::model::ModelConfig) -> String {
    let s = cfg.init_scale;
    match (&cfg.init_norm, s == 1.0) {
        (None, true) => "default".into(),
        (None, false) => format!("init_scale={s}"),
        (Some(_), true) => "matched".into(),
        (Some(_), false) if s > 1.0 => "large".into(),
        (Some(_), false) => "small".into(),
    }
}

/// The key that groups runs into one Fast Equilibrium fit: every flattened config key but the
/// λ_e-related ones and the seed; `model.init_norm` (set per λ_e) and `model.init_scale` are
/// replaced by the run's init arm.
fn fit_key(r: &RunInfo) -> BTreeMap<String, String> {
    let mut key: BTreeMap<String, String> = table::flatten(&r.config)
        .into_iter()
        .filter(|(k, _)| !fit_free(k) && !k.starts_with("model.init_"))
        .collect();
    key.insert("init".into(), init_arm(&r.config.model));
    key
}

/// Group completed and diverged runs by everything but the λ_e-related keys and the seed (so runs of
/// different γ fall in different groups), and fit each group.
pub fn fit_groups(runs: &[LoadedRun]) -> Result<Vec<FitGroup>> {
    let mut groups: Vec<(BTreeMap<String, String>, Vec<&LoadedRun>)> = Vec::new();
    for r in runs.iter().filter(|r| matches!(r.info.status, Status::Completed | Status::Diverged)) {
        let key = fit_key(&r.info);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let n_groups = groups.len();
    let keys: Vec<BTreeMap<String, String>> = groups.iter().map(|g| g.0.clone()).collect();
    groups
        .into_iter()
        .map(|(key, rs)| {
            let label = if n_groups == 1 {
                "all runs".to_string()
            } else {
                key.iter()
                    .filter(|(k, v)| keys.iter().any(|o| o.get(*k) != Some(v)))
                    .map(
                        |(k, v)| if k == "init" { v.clone() } else { format!("{k}={}", v.trim_matches('"')) },
                    )
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut points = Vec::new();
            let mut censored = Vec::new();
            let mut diverged = Vec::new();
            let mut norms = Vec::new();
            for LoadedRun { info: r, metrics, .. } in &rs {
                let s = r.summary.as_ref().expect("completed and diverged runs have a summary");
                let excluded = |steps| Excluded { run_id: r.id.clone(), lambda_e: s.lambda_e, steps };
                match (r.status, s.t_eq_steps) {
                    (Status::Diverged, _) => {
                        diverged.push(excluded(s.divergence.as_ref().map_or(s.steps, |d| d.step)))
                    }
                    (_, Some(t)) => {
                        points.push((r.id.clone(), s.lambda_e, t));
                        norms.push(norms::run_norms(r, metrics)?);
                    }
                    (_, None) => censored.push(excluded(s.steps)),
                }
            }
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.1, p.2 as f64)).collect();
            let mut g = FitGroup {
                label,
                momentum: rs[0].info.config.optim.momentum,
                points,
                censored,
                diverged,
                fit: fit::fit_loglog_clusters(&xy),
                fit_seeds: fit::fit_loglog(&xy),
                norms,
                norm_fit: None,
            };
            g.norm_fit = norm_term_fit(&g.norm_points());
            Ok(g)
        })
        .collect()
}

/// The norm-term fit over every group's points together with one intercept a for all λ_e (None
/// with a single group): secondary to [`within_norm_fit`], since a that moves with λ_e biases b.
pub fn pooled_norm_fit(fits: &[FitGroup]) -> Option<LinearFit> {
    (fits.len() > 1).then(|| norm_term_fit(&fits.iter().flat_map(|g| g.norm_points()).collect::<Vec<_>>()))?
}

/// b of T_eq·λ_e/(1 − γ) = a_λ + b·(norm term) with one intercept a_λ per λ_e (and γ), over every
/// group's points ([`fit::fit_within`]): only runs at the same λ_e are compared, which in the
/// init-norm control differ only in ‖w₀‖, so nothing that depends on λ_e biases b. None unless some
/// λ_e has norm terms spread over at least [`MIN_NORM_TERM_SPREAD`] (seeds of one arm alone do not
/// determine b).
pub fn within_norm_fit(fits: &[FitGroup]) -> Option<WithinFit> {
    let mut momenta: Vec<f64> = fits.iter().map(|g| g.momentum).collect();
    momenta.sort_by(f64::total_cmp);
    momenta.dedup();
    let clusters: Vec<(f64, Vec<(f64, f64)>)> = momenta
        .iter()
        .flat_map(|&m| {
            fit::group_by_lambda_e(
                fits.iter()
                    .filter(|g| g.momentum == m)
                    .flat_map(|g| g.norm_points_by_lambda_e())
                    .map(|(le, x, y)| (le, (x, y))),
            )
        })
        .collect();
    let spread = |pts: &[(f64, f64)]| {
        let [lo, hi] = extent(pts.iter().map(|p| p.0));
        hi - lo
    };
    if !clusters.iter().any(|(_, pts)| spread(pts) >= MIN_NORM_TERM_SPREAD) {
        return None;
    }
    fit::fit_within(&clusters)
}

/// A test group "arm" of γ = 0 runs at (λ_e, T_eq) named r0, r1, …, with censored runs c0, … and
/// diverged runs d0, … at (λ_e, steps), fitted as [`fit_groups`] fits it.
#[cfg(test)]
pub(crate) fn test_group(
    points: &[(f64, u64)],
    censored: &[(f64, u64)],
    diverged: &[(f64, u64)],
) -> FitGroup {
    let pts: Vec<(String, f64, u64)> =
        points.iter().enumerate().map(|(i, &(le, t))| (format!("r{i}"), le, t)).collect();
    let ex = |v: &[(f64, u64)], p: &str| -> Vec<Excluded> {
        v.iter()
            .enumerate()
            .map(|(i, &(le, s))| Excluded { run_id: format!("{p}{i}"), lambda_e: le, steps: s })
            .collect()
    };
    let xy: Vec<(f64, f64)> = points.iter().map(|&(le, t)| (le, t as f64)).collect();
    FitGroup {
        label: "arm".into(),
        momentum: 0.0,
        norms: vec![None; pts.len()],
        points: pts,
        censored: ex(censored, "c"),
        diverged: ex(diverged, "d"),
        fit: fit::fit_loglog_clusters(&xy),
        fit_seeds: fit::fit_loglog(&xy),
        norm_fit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{norm_term_fit, MIN_NORM_TERM_SPREAD};

    /// T_eq·λ_e = 1.3 + 1·(norm term) with a little scatter: b is found where the norm term spreads,
    /// and withheld where it is (nearly) constant, as in the recipe's `matched` and `large` arms.
    #[test]
    fn the_norm_term_fit_needs_a_spread_of_norm_terms() {
        let scatter = [0.05, -0.04, 0.02, -0.03, 0.01];
        let line = |xs: &[f64]| -> Vec<(f64, f64)> {
            xs.iter().zip(scatter).map(|(&x, e)| (x, 1.3 + x + e)).collect()
        };
        let f = norm_term_fit(&line(&[0.9, 1.2, 1.45, 1.75, 2.2])).expect("a spread of 1.3 is enough");
        assert!((f.slope - 1.0).abs() < 0.1 && (f.intercept - 1.3).abs() < 0.2, "{f:?}");
        assert!(
            norm_term_fit(&line(&[2.23, 2.3, 2.27, 2.35, 2.25])).is_none(),
            "a spread of 0.12 determines no b"
        );
        let edge = [0.0, MIN_NORM_TERM_SPREAD / 2.0, MIN_NORM_TERM_SPREAD];
        assert!(norm_term_fit(&line(&edge)).is_some(), "a spread of exactly the minimum is fitted");
    }
}
