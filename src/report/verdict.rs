//! What one Fast Equilibrium fit group shows, in words and in the numbers behind the words: the
//! slope judgement and the runs left out of the fit. `ilr report` prints these sentences and the
//! fast-equilibrium recipe's verdict is built from them, so both say the same thing.
//!
//! The judgement uses the λ_e-cluster CI of the slope ([`super::fit::fit_loglog_clusters`]); the
//! seeds-as-points CI is quoted beside it, labelled, and never decides anything.

use super::fit::{group_by_lambda_e, log_factor_slope, same_lambda_e, LogLogFit};
use super::FitGroup;
use serde::Serialize;

/// What the cluster CI of a group's slope says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlopeJudgement {
    /// The slope that 1/λ_e times a log factor gives over the group's λ_e range
    /// ([`log_factor_slope`]).
    pub log_factor_slope: f64,
    /// Some(true): the data do not reject O(1/λ_e) up to a log factor (the cluster CI's lower end
    /// is at most `log_factor_slope`); Some(false): they reject it; None: undetermined (no fit, or
    /// fewer than 3 λ_e and so no CI).
    pub bounded: Option<bool>,
    /// Whether the cluster CI contains 1; None without a cluster CI.
    pub contains_one: Option<bool>,
}

pub fn judge(g: &FitGroup) -> SlopeJudgement {
    let [lo, hi] = super::extent(g.points.iter().map(|p| p.1));
    let allowed = log_factor_slope(lo, hi);
    let ci = g.fit.as_ref().and_then(|f| f.slope_ci95);
    SlopeJudgement {
        log_factor_slope: allowed,
        bounded: ci.map(|[l, _]| l <= allowed),
        contains_one: ci.map(|[l, h]| l <= 1.0 && 1.0 <= h),
    }
}

/// "[lo, hi]" with 3 decimals, or more (up to 6) where 3 would make an interval that excludes 1 look
/// as if it reached 1: [1.0004, 1.035] is not written "[1.000, 1.035]".
pub fn ci_text([lo, hi]: [f64; 2]) -> String {
    let shown = |v: f64, d: usize| format!("{v:.d$}").parse::<f64>().unwrap_or(v);
    let d =
        (3..=6).find(|&d| !(lo > 1.0 && shown(lo, d) <= 1.0 || hi < 1.0 && shown(hi, d) >= 1.0)).unwrap_or(6);
    format!("[{lo:.d$}, {hi:.d$}]")
}

/// The slope part of a group's verdict: the cluster fit and CI, the seeds-as-points figure, and what
/// the cluster CI shows.
pub fn slope_text(g: &FitGroup) -> String {
    let n = g.points.len();
    let Some(f) = &g.fit else {
        let k = group_by_lambda_e(g.points.iter().map(|p| (p.1, ()))).len();
        return format!(
            "undetermined: no fit ({n} run(s) reached equilibrium, at {k} λ_e value(s); a slope needs two λ_e)"
        );
    };
    let Some(ci) = f.slope_ci95 else {
        return format!(
            "slope {:.3} from {} λ_e values, too few for a confidence interval (n_λ − 2 = 0 dof): undetermined",
            f.slope, f.n_lambda
        );
    };
    let j = judge(g);
    let seeds = g.fit_seeds.as_ref().map_or(String::new(), seeds_text);
    let bound = if j.bounded == Some(true) {
        format!(
            "the data do not reject O(1/λ_e) up to a log factor (the CI's lower end {:.3} is at most {:.3}, the \
             slope of 1/λ_e times a log factor over this λ_e range)",
            ci[0], j.log_factor_slope
        )
    } else {
        format!(
            "the data reject O(1/λ_e) up to a log factor: T_eq grows faster (the CI's lower end {:.3} exceeds \
             {:.3}, the slope of 1/λ_e times a log factor over this λ_e range)",
            ci[0], j.log_factor_slope
        )
    };
    let one = if j.contains_one == Some(true) {
        "consistent with slope 1 (the cluster CI contains 1)"
    } else if ci[1] < 1.0 {
        "the cluster CI excludes 1: T_eq grows more slowly than 1/λ_e over this range"
    } else {
        "the cluster CI excludes 1: T_eq grows faster than 1/λ_e over this range"
    };
    format!(
        "slope of log T_eq on log(1/λ_e) {:.3}, 95% CI {} from {} λ_e clusters (OLS on the per-λ_e means of \
         log T_eq, t with {} dof){seeds}; {bound}; {one}",
        f.slope,
        ci_text(ci),
        f.n_lambda,
        f.n_lambda - 2
    )
}

/// "; seeds as points: slope [CI], n = …": the secondary figure.
fn seeds_text(f: &LogLogFit) -> String {
    format!(
        "; seeds as points: {:.3}{}, n = {} (treats seeds at one λ_e as independent; not used for the verdict)",
        f.slope,
        f.slope_ci95.map_or(String::new(), |ci| format!(" {}", ci_text(ci))),
        f.n
    )
}

/// Which way the runs left out at one λ_e move the cluster slope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlopeBias {
    Up,
    Down,
    /// The λ_e sits at the centre of the fitted range: the intercept is biased, not the slope.
    None,
    /// The whole λ_e is missing and its lower bound does not place it above the fitted line.
    Unknown,
}

/// The censored runs at one λ_e and the bias that dropping them causes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CensoredAt {
    pub lambda_e: f64,
    pub run_ids: Vec<String>,
    /// The shortest of their runs, in steps: every one's T_eq is longer than its run.
    pub min_steps: u64,
    /// No run at this λ_e has a T_eq, so the fit has no point there.
    pub whole_lambda_e: bool,
    pub slope_bias: SlopeBias,
}

/// Censored runs by λ_e, with the direction of the bias on the cluster slope. On the per-λ_e means
/// ȳ_j at x_j = ln(1/λ_e_j), ∂b/∂ȳ_j = (x_j − x̄)/Sxx. A dropped run's T_eq is longer than its run,
/// so ȳ_j is biased low: the slope is biased up where x_j < x̄ (λ_e above the centre of the fitted
/// range) and down where x_j > x̄. A λ_e with no T_eq at all is missing from the fit; adding its
/// true point (x₀, y₀) would move the slope by the sign of (x₀ − x̄)(y₀ − ŷ(x₀)), and y₀ > ln(steps),
/// so the same rule holds when ln(steps) ≥ ŷ(x₀), the fitted line there; otherwise it is unknown.
pub fn censored_by_lambda_e(g: &FitGroup) -> Vec<CensoredAt> {
    let xs: Vec<f64> =
        group_by_lambda_e(g.points.iter().map(|p| (p.1, ()))).iter().map(|(le, _)| (1.0 / le).ln()).collect();
    let centre = (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    group_by_lambda_e(g.censored.iter().map(|c| (c.lambda_e, c)))
        .into_iter()
        .map(|(le, runs)| {
            let x = (1.0 / le).ln();
            let min_steps = runs.iter().map(|c| c.steps).min().unwrap_or(0);
            let whole = !g.points.iter().any(|p| same_lambda_e(p.1, le));
            let side = |centre: f64| {
                if (x - centre).abs() < 1e-9 {
                    SlopeBias::None
                } else if x < centre {
                    SlopeBias::Up
                } else {
                    SlopeBias::Down
                }
            };
            let above_line =
                |f: &LogLogFit| min_steps > 0 && (min_steps as f64).ln() >= f.intercept + f.slope * x;
            let slope_bias = match (centre, &g.fit) {
                (Some(c), _) if !whole => side(c),
                (Some(c), Some(f)) if above_line(f) => side(c),
                _ => SlopeBias::Unknown,
            };
            CensoredAt {
                lambda_e: le,
                run_ids: runs.iter().map(|c| c.run_id.clone()).collect(),
                min_steps,
                whole_lambda_e: whole,
                slope_bias,
            }
        })
        .collect()
}

/// The runs left out of a group's fit, named, with the direction of the bias they cause; None when
/// none are.
pub fn excluded_text(g: &FitGroup) -> Option<String> {
    let mut parts = Vec::new();
    let censored = censored_by_lambda_e(g);
    if !censored.is_empty() {
        let names: Vec<String> = g
            .censored
            .iter()
            .map(|c| {
                format!(
                    "{} (λ_e {:.2e}, T_eq > {} steps = {:.2} × {})",
                    c.run_id,
                    c.lambda_e,
                    c.steps,
                    c.steps as f64 * g.rate(c.lambda_e),
                    g.unit()
                )
            })
            .collect();
        let clauses: Vec<String> = censored
            .iter()
            .map(|c| {
                let bias = match c.slope_bias {
                    SlopeBias::Up => "above the centre of the fitted λ_e range, so the slope is biased up",
                    SlopeBias::Down => {
                        "below the centre of the fitted λ_e range, so the slope is biased down"
                    }
                    SlopeBias::None => {
                        "at the centre of the fitted λ_e range, so the intercept is biased low, not the slope"
                    }
                    SlopeBias::Unknown => "the direction of the bias on the slope is unknown",
                };
                if c.whole_lambda_e {
                    format!(
                        "no run at λ_e {:.2e} has a T_eq, so the fit has no point there ({}; {bias})",
                        c.lambda_e,
                        if c.slope_bias == SlopeBias::Unknown {
                            "its T_eq exceeds its run, which need not put it above the fitted line"
                        } else {
                            "its T_eq exceeds its run, which puts it above the fitted line"
                        }
                    )
                } else {
                    format!("at λ_e {:.2e} the mean log T_eq is biased low, {bias}", c.lambda_e)
                }
            })
            .collect();
        parts.push(format!(
            "{} completed run(s) reached no equilibrium by their end and are dropped: {}. Their T_eq is longer \
             than their runs: {}",
            g.censored.len(),
            names.join(", "),
            clauses.join("; ")
        ));
    }
    if !g.diverged.is_empty() {
        let by_le = group_by_lambda_e(g.diverged.iter().map(|d| (d.lambda_e, d)));
        parts.push(format!(
            "{} diverged run(s) are excluded: {}; the fit says nothing about {} (a diverging run has no \
             equilibrium to time)",
            g.diverged.len(),
            g.diverged
                .iter()
                .map(|d| format!("{} (λ_e {:.2e}, diverged at step {})", d.run_id, d.lambda_e, d.steps))
                .collect::<Vec<_>>()
                .join(", "),
            by_le.iter().map(|(le, _)| format!("λ_e {le:.2e}")).collect::<Vec<_>>().join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join(". "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_group as group;

    #[test]
    fn no_fit_is_undetermined() {
        let g = group(&[(4e-3, 1000)], &[], &[]);
        let j = judge(&g);
        assert_eq!((j.bounded, j.contains_one), (None, None));
        assert_eq!(
            slope_text(&g),
            "undetermined: no fit (1 run(s) reached equilibrium, at 1 λ_e value(s); a slope needs two λ_e)"
        );
        let two = group(&[(4e-3, 1000), (2e-3, 2000)], &[], &[]);
        assert_eq!(judge(&two).bounded, None);
        assert!(slope_text(&two).ends_with("(n_λ − 2 = 0 dof): undetermined"), "{}", slope_text(&two));
    }

    /// T_eq = 3/λ_e with one seed of each λ_e off by a few %: slope ≈ 1, the cluster CI contains 1.
    /// λ_e means exactly on T_eq ∝ λ_e^−1.04: a narrow cluster CI above 1 says so.
    #[test]
    fn slope_one_is_claimed_only_when_the_cluster_ci_contains_it() {
        let les = [8e-3, 4e-3, 2e-3, 1e-3];
        let scatter = [1.03, 0.98, 1.01, 0.97];
        let pts: Vec<(f64, u64)> = les
            .iter()
            .zip(scatter)
            .flat_map(|(&le, s)| [(le, (3.0 * s / le) as u64), (le, (3.0 / le) as u64)])
            .collect();
        let t = slope_text(&group(&pts, &[], &[]));
        assert!(t.contains("consistent with slope 1 (the cluster CI contains 1)"), "{t}");
        assert!(t.contains("from 4 λ_e clusters") && t.contains("seeds as points: "), "{t}");
        assert!(t.contains("the data do not reject O(1/λ_e) up to a log factor"), "{t}");

        // Slope 1.04 at λ_e 8e-3 … 1e-3 with the λ_e means on the line: a narrow CI above 1.
        let steep: Vec<(f64, u64)> = les
            .iter()
            .flat_map(|&le| {
                let t = 3.0 * (1.0f64 / le).powf(1.04);
                [(le, (t * 1.01) as u64), (le, (t / 1.01) as u64)]
            })
            .collect();
        let g = group(&steep, &[], &[]);
        let ci = g.fit.as_ref().unwrap().slope_ci95.unwrap();
        assert!(ci[0] > 1.0 && ci[1] < 1.1, "{ci:?}");
        let t = slope_text(&g);
        assert!(!t.contains("consistent with slope 1"), "{t}");
        assert!(t.contains("the cluster CI excludes 1: T_eq grows faster than 1/λ_e"), "{t}");
        // A log factor over 8× at λ_e ≈ 1e-3 allows a slope of 1 + ln(ln 1000/ln 125)/ln 8 = 1.17.
        assert!(t.contains("the data do not reject O(1/λ_e) up to a log factor"), "{t}");
    }

    #[test]
    fn interval_text_never_rounds_across_one() {
        assert_eq!(ci_text([1.001, 1.035]), "[1.001, 1.035]");
        assert_eq!(ci_text([1.0004, 1.035]), "[1.0004, 1.0350]");
        assert_eq!(ci_text([0.5, 0.99996]), "[0.50000, 0.99996]");
        assert_eq!(ci_text([0.99996, 1.2]), "[1.000, 1.200]", "contains 1, and reads so");
        assert_eq!(ci_text([0.5, 0.8]), "[0.500, 0.800]");
    }

    /// A run censored at the highest λ_e lowers the mean there: slope biased up; at the lowest λ_e:
    /// biased down. Diverged runs are named and said to leave their λ_e unfitted.
    #[test]
    fn censored_and_diverged_runs_are_named_with_the_direction_of_their_bias() {
        let pts = [(8e-3, 500), (4e-3, 1000), (4e-3, 1100), (2e-3, 2000), (1e-3, 4000)];
        let high = group(&pts, &[(8e-3, 750)], &[]);
        let c = censored_by_lambda_e(&high);
        assert_eq!((c.len(), c[0].slope_bias, c[0].whole_lambda_e), (1, SlopeBias::Up, false));
        let t = excluded_text(&high).unwrap();
        assert!(t.starts_with("1 completed run(s) reached no equilibrium by their end and are dropped: c0 (λ_e 8.00e-3, T_eq > 750 steps = 6.00 × 1/λ_e)"), "{t}");
        assert!(t.contains("at λ_e 8.00e-3 the mean log T_eq is biased low, above the centre of the fitted λ_e range, so the slope is biased up"), "{t}");

        let low = group(&pts, &[(1e-3, 6000)], &[]);
        assert_eq!(censored_by_lambda_e(&low)[0].slope_bias, SlopeBias::Down);
        assert!(excluded_text(&low).unwrap().contains("so the slope is biased down"));

        // A whole λ_e missing: 5e-4 ran 12,000 steps (6/λ_e), above the line's 4000·2 = 8000: down.
        let whole = group(&pts, &[(5e-4, 12_000), (5e-4, 12_000)], &[]);
        let c = censored_by_lambda_e(&whole);
        assert_eq!((c.len(), c[0].whole_lambda_e, c[0].slope_bias), (1, true, SlopeBias::Down));
        // … but after only 2,000 steps (1/λ_e), below the line: unknown.
        let short = group(&pts, &[(5e-4, 2000)], &[]);
        assert_eq!(censored_by_lambda_e(&short)[0].slope_bias, SlopeBias::Unknown);
        assert!(excluded_text(&short).unwrap().contains("the direction of the bias on the slope is unknown"));

        let div = group(&pts, &[], &[(1.6e-2, 120)]);
        assert_eq!(
            excluded_text(&div).unwrap(),
            "1 diverged run(s) are excluded: d0 (λ_e 1.60e-2, diverged at step 120); the fit says nothing \
             about λ_e 1.60e-2 (a diverging run has no equilibrium to time)"
        );
        assert!(excluded_text(&group(&pts, &[], &[])).is_none());
    }
}
