//! The Fast Equilibrium fits: least squares of y = log T_eq on x = log(1/λ_e), with a 95% confidence
//! interval on the slope from Student's t with n − 2 degrees of freedom.
//!
//! slope b = Sxy/Sxx, intercept a = ȳ − b·x̄, residual variance s² = Σ(y − a − bx)²/(n − 2),
//! SE(b) = sqrt(s²/Sxx), CI = b ± t_{0.975, n−2}·SE(b). The conjecture is an upper bound: T_eq =
//! O(1/λ_e) up to log factors, i.e. T_eq·λ_e bounded up to a log factor; a slope below 1 is within
//! it, and a slope of 1 is what a T_eq exactly proportional to 1/λ_e would give.
//!
//! Seeds at one λ_e are not independent points of that line: they share the λ_e's deviation from
//! it. [`fit_loglog_clusters`] therefore fits the per-λ_e means (n_λ points, n_λ − 2 dof), the CI
//! that verdicts use; [`fit_loglog`] (every run a point) is kept as the secondary "seeds as points"
//! figure. [`fit_within`] fits a slope with one intercept per λ_e (fixed effects), for the norm term.

use serde::Serialize;

/// What the points of a [`LogLogFit`] are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FitPoints {
    /// Every run is a point (seeds at one λ_e counted as independent).
    SeedsAsPoints,
    /// One point per λ_e: the mean of log T over its runs.
    LambdaEMeans,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogLogFit {
    pub points: FitPoints,
    /// Points used (runs, or λ_e values for [`FitPoints::LambdaEMeans`]).
    pub n: usize,
    /// Distinct λ_e among them.
    pub n_lambda: usize,
    pub slope: f64,
    /// Natural-log intercept: T_eq ≈ e^a · (1/λ_e)^b.
    pub intercept: f64,
    /// Standard error of the slope; null with fewer than 3 points.
    pub slope_se: Option<f64>,
    /// 95% confidence interval of the slope; null with fewer than 3 points.
    pub slope_ci95: Option<[f64; 2]>,
    pub r_squared: f64,
}

/// Ordinary least squares of y = a + b·x with 95% confidence intervals on a and b.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearFit {
    pub n: usize,
    /// a.
    pub intercept: f64,
    /// b.
    pub slope: f64,
    /// Standard errors and 95% intervals (Student's t, n − 2 df); null with fewer than 3 points.
    pub intercept_se: Option<f64>,
    pub slope_se: Option<f64>,
    pub intercept_ci95: Option<[f64; 2]>,
    pub slope_ci95: Option<[f64; 2]>,
    pub r_squared: f64,
}

/// Fit y = a + b·x over finite (x, y) pairs: b = Sxy/Sxx, a = ȳ − b·x̄, s² = SSR/(n − 2),
/// SE(b) = s/sqrt(Sxx), SE(a) = s·sqrt(1/n + x̄²/Sxx). None without two distinct x.
pub fn fit_linear(points: &[(f64, f64)]) -> Option<LinearFit> {
    let pts: Vec<(f64, f64)> =
        points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let n = pts.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 1e-300 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ssr: f64 = pts.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
    let r_squared = if syy > 0.0 { 1.0 - ssr / syy } else { 1.0 };
    let mut fit = LinearFit {
        n,
        intercept,
        slope,
        intercept_se: None,
        slope_se: None,
        intercept_ci95: None,
        slope_ci95: None,
        r_squared,
    };
    if n >= 3 {
        let s = (ssr / (nf - 2.0)).sqrt();
        let t = t_quantile(0.975, nf - 2.0);
        let (se_b, se_a) = (s / sxx.sqrt(), s * (1.0 / nf + mx * mx / sxx).sqrt());
        fit.slope_se = Some(se_b);
        fit.intercept_se = Some(se_a);
        fit.slope_ci95 = Some([slope - t * se_b, slope + t * se_b]);
        fit.intercept_ci95 = Some([intercept - t * se_a, intercept + t * se_a]);
    }
    Some(fit)
}

/// Two λ_e values are the same λ_e when they agree to 1e-9 relative.
pub fn same_lambda_e(a: f64, b: f64) -> bool {
    (a / b - 1.0).abs() < 1e-9
}

/// Items grouped by λ_e ([`same_lambda_e`]), groups in order of first appearance, items in input
/// order: the λ_e clusters of the slope's cluster CI and of the within-λ_e norm-term fit.
pub fn group_by_lambda_e<T>(items: impl IntoIterator<Item = (f64, T)>) -> Vec<(f64, Vec<T>)> {
    let mut out: Vec<(f64, Vec<T>)> = Vec::new();
    for (le, v) in items {
        match out.iter_mut().find(|(l, _)| same_lambda_e(*l, le)) {
            Some((_, vs)) => vs.push(v),
            None => out.push((le, vec![v])),
        }
    }
    out
}

/// (λ_e, ln T) of the usable (λ_e, T) pairs: both positive and finite.
fn log_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|(le, t)| *le > 0.0 && *t > 0.0 && le.is_finite() && t.is_finite())
        .map(|&(le, t)| (le, t.ln()))
        .collect()
}

fn loglog(points: FitPoints, xy: &[(f64, f64)], n_lambda: usize) -> Option<LogLogFit> {
    let f = fit_linear(xy)?;
    Some(LogLogFit {
        points,
        n: f.n,
        n_lambda,
        slope: f.slope,
        intercept: f.intercept,
        slope_se: f.slope_se,
        slope_ci95: f.slope_ci95,
        r_squared: f.r_squared,
    })
}

/// Seeds as points: log T against log(1/λ_e) over every (λ_e, T) pair, n − 2 dof; None without two
/// distinct λ_e. Its CI treats seeds at one λ_e as independent and is too narrow when they are not.
pub fn fit_loglog(points: &[(f64, f64)]) -> Option<LogLogFit> {
    let lp = log_points(points);
    let n_lambda = group_by_lambda_e(lp.iter().map(|p| (p.0, ()))).len();
    let xy: Vec<(f64, f64)> = lp.iter().map(|&(le, y)| ((1.0 / le).ln(), y)).collect();
    loglog(FitPoints::SeedsAsPoints, &xy, n_lambda)
}

/// λ_e clusters: ȳ_j = mean of ln T over the runs at λ_e_j, then OLS of ȳ_j on x_j = ln(1/λ_e_j);
/// SE and CI from Student's t with n_λ − 2 dof (no CI with 2 λ_e). None without two distinct λ_e.
pub fn fit_loglog_clusters(points: &[(f64, f64)]) -> Option<LogLogFit> {
    let means: Vec<(f64, f64)> = group_by_lambda_e(log_points(points))
        .into_iter()
        .map(|(le, ys)| ((1.0 / le).ln(), ys.iter().sum::<f64>() / ys.len() as f64))
        .collect();
    loglog(FitPoints::LambdaEMeans, &means, means.len())
}

/// The intercept of one cluster in a [`WithinFit`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterIntercept {
    pub lambda_e: f64,
    /// Points in the cluster.
    pub n: usize,
    /// a_j = ȳ_j − b·x̄_j.
    pub a: f64,
}

/// y = a_j + b·x with one intercept a_j per cluster (fixed effects), fitted on within-cluster
/// contrasts only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WithinFit {
    /// Points in clusters of two or more (a single point has no contrast within its cluster).
    pub n: usize,
    /// Those clusters.
    pub n_lambda: usize,
    /// n − n_λ − 1.
    pub dof: usize,
    pub slope: f64,
    /// Null when dof = 0.
    pub slope_se: Option<f64>,
    pub slope_ci95: Option<[f64; 2]>,
    pub intercepts: Vec<ClusterIntercept>,
}

/// Fixed-effects slope over (key, points) clusters: with x̃ = x − x̄_j and ỹ = y − ȳ_j inside cluster
/// j, b = Σx̃ỹ/Σx̃² (OLS through the origin on the demeaned points), s² = Σ(ỹ − b·x̃)²/(n − n_λ − 1),
/// SE(b) = s/sqrt(Σx̃²), CI = b ± t_{0.975, n−n_λ−1}·SE(b). Clusters of one point are left out.
/// A cluster-level offset (anything that shifts all y of one λ_e) cancels in ỹ, so it cannot bias
/// b. None when no cluster has two distinct x.
pub fn fit_within(clusters: &[(f64, Vec<(f64, f64)>)]) -> Option<WithinFit> {
    // (key, finite points, x̄_j, ȳ_j) of the clusters with two or more points.
    struct Cluster {
        key: f64,
        pts: Vec<(f64, f64)>,
        mx: f64,
        my: f64,
    }
    let used: Vec<Cluster> = clusters
        .iter()
        .map(|(key, pts)| {
            let pts: Vec<(f64, f64)> =
                pts.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            let m = pts.len().max(1) as f64;
            let (mx, my) =
                (pts.iter().map(|p| p.0).sum::<f64>() / m, pts.iter().map(|p| p.1).sum::<f64>() / m);
            Cluster { key: *key, pts, mx, my }
        })
        .filter(|c| c.pts.len() >= 2)
        .collect();
    let demeaned = || used.iter().flat_map(|c| c.pts.iter().map(move |(x, y)| (x - c.mx, y - c.my)));
    let sxx: f64 = demeaned().map(|(x, _)| x * x).sum();
    if sxx <= 1e-300 {
        return None;
    }
    let slope = demeaned().map(|(x, y)| x * y).sum::<f64>() / sxx;
    let ssr: f64 = demeaned().map(|(x, y)| (y - slope * x).powi(2)).sum();
    let n: usize = used.iter().map(|c| c.pts.len()).sum();
    let dof = n - used.len() - 1;
    let (slope_se, slope_ci95) = if dof >= 1 {
        let se = (ssr / dof as f64 / sxx).sqrt();
        let t = t_quantile(0.975, dof as f64);
        (Some(se), Some([slope - t * se, slope + t * se]))
    } else {
        (None, None)
    };
    Some(WithinFit {
        n,
        n_lambda: used.len(),
        dof,
        slope,
        slope_se,
        slope_ci95,
        intercepts: used
            .iter()
            .map(|c| ClusterIntercept { lambda_e: c.key, n: c.pts.len(), a: c.my - slope * c.mx })
            .collect(),
    })
}

/// The log-log slope that a log factor alone gives over [λ_min, λ_max]: T = C·ln(1/λ_e)/λ_e has
/// slope 1 + ln(ln(1/λ_min)/ln(1/λ_max))/ln(λ_max/λ_min). 1 when the range is empty or reaches λ_e ≥ 1.
pub fn log_factor_slope(le_min: f64, le_max: f64) -> f64 {
    if !(le_min > 0.0 && le_max < 1.0 && le_max > le_min) {
        return 1.0;
    }
    1.0 + ((1.0 / le_min).ln() / (1.0 / le_max).ln()).ln() / (le_max / le_min).ln()
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in
            [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))]
        {
            d = 1.0 + aa * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + aa / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(1.0 - x, b, a) / b
    }
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * inc_beta(df / (df + t * t), 0.5 * df, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The p-quantile of Student's t (p in (0, 1)), by bisection on the CDF.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let mut hi = 1.0;
    while t_cdf(hi, df) < p && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        for (df, q) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (5.0, 2.570_581_836),
            (10.0, 2.228_138_852),
            (30.0, 2.042_272_456),
            (1000.0, 1.962_339_081),
        ] {
            let got = t_quantile(0.975, df);
            assert!((got - q).abs() < 1e-6, "df {df}: {got} vs {q}");
        }
        assert!((t_cdf(0.0, 3.0) - 0.5).abs() < 1e-15);
        assert!((t_quantile(0.025, 5.0) + 2.570_581_836).abs() < 1e-6);
        assert!(t_quantile(0.5, 5.0).abs() < 1e-12, "the median of t is 0");
    }

    #[test]
    fn recovers_a_power_law_and_its_interval() {
        // T = 2.5/λ_e exactly: slope 1, zero-width interval.
        let exact: Vec<(f64, f64)> = [1e-2, 5e-3, 2e-3, 1e-3].iter().map(|&le| (le, 2.5 / le)).collect();
        let f = fit_loglog(&exact).unwrap();
        assert!((f.slope - 1.0).abs() < 1e-12 && (f.intercept - 2.5f64.ln()).abs() < 1e-10);
        let [lo, hi] = f.slope_ci95.unwrap();
        assert!(hi - lo < 1e-9);
        // Hand-checked: x = ln(1/λ) for λ = 1, e^-1, e^-2 → x = 0, 1, 2; y = 0, 1, 3.
        let e = std::f64::consts::E;
        let f = fit_loglog(&[(1.0, 1.0), (1.0 / e, e), (1.0 / (e * e), e.powi(3))]).unwrap();
        assert!((f.slope - 1.5).abs() < 1e-12);
        // SSR = 1/6, s² = 1/6, Sxx = 2: SE = sqrt(1/12); t_{0.975,1} = 12.7062.
        let se = f.slope_se.unwrap();
        assert!((se - (1.0f64 / 12.0).sqrt()).abs() < 1e-12);
        let [lo, hi] = f.slope_ci95.unwrap();
        assert!((hi - lo - 2.0 * 12.706_204_736 * se).abs() < 1e-6);
        assert!(fit_loglog(&[(1e-3, 10.0), (1e-3, 20.0)]).is_none(), "one λ_e: no slope");
        assert!(fit_loglog(&[(1e-3, 10.0), (2e-3, 5.0)]).unwrap().slope_ci95.is_none());
    }

    #[test]
    fn linear_fit_intercept_interval_matches_the_textbook_formula() {
        // x = 0, 1, 2; y = 0, 1, 3: b = 1.5, a = −1/6, s² = 1/6, Sxx = 2, x̄ = 1:
        // SE(a) = s·sqrt(1/3 + 1/2) = sqrt(5/36).
        let f = fit_linear(&[(0.0, 0.0), (1.0, 1.0), (2.0, 3.0)]).unwrap();
        assert!((f.slope - 1.5).abs() < 1e-12 && (f.intercept + 1.0 / 6.0).abs() < 1e-12);
        let se = f.intercept_se.unwrap();
        assert!((se - (5.0f64 / 36.0).sqrt()).abs() < 1e-12);
        let [lo, hi] = f.intercept_ci95.unwrap();
        assert!((hi - lo - 2.0 * 12.706_204_736 * se).abs() < 1e-6);
        assert!(fit_linear(&[(1.0, 2.0), (1.0, 3.0)]).is_none(), "one x: no slope");
    }

    /// x = 0, 1, 2; y = 0, 1, 3: ȳ = 4/3, Syy = 14/3, SSR = 1/6, so R² = 1 − (1/6)/(14/3) = 27/28.
    /// A constant y has Syy = 0 and is fitted exactly: R² = 1. Points with a NaN or an infinity
    /// are left out, not fitted.
    #[test]
    fn linear_fit_r_squared_and_non_finite_points() {
        let pts = [(0.0, 0.0), (1.0, 1.0), (2.0, 3.0)];
        let f = fit_linear(&pts).unwrap();
        assert!((f.r_squared - 27.0 / 28.0).abs() < 1e-12, "{f:?}");
        let flat = fit_linear(&[(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)]).unwrap();
        assert_eq!((flat.slope, flat.r_squared), (0.0, 1.0));
        let mut noisy = pts.to_vec();
        noisy.extend([(f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0), (0.5, f64::NEG_INFINITY)]);
        assert_eq!(fit_linear(&noisy).unwrap(), f);
    }

    /// The sums are centred (Sxx = Σ(x − x̄)², Sxy = Σ(x − x̄)(y − ȳ)), so data far from the origin
    /// keep their digits: x = 1e8 + (0, 1, 3), y = 1e8 + (0, 1, 2.5) has the slope of
    /// x' = 0, 1, 3, y' = 0, 1, 2.5: x̄' = 4/3, Sxx = 42/9, Sxy = (−4/3)(−7/6) + (−1/3)(−1/6) +
    /// (5/3)(4/3) = 14/9 + 1/18 + 20/9 = 69/18, b = (69/18)/(42/9) = 69/84. Uncentred sums, or
    /// x̄ and ȳ rounded at 1e8 (ulp 1.5e-8) and not cancelled, are off by O(1).
    #[test]
    fn linear_fit_keeps_its_digits_far_from_the_origin() {
        let pts: Vec<(f64, f64)> =
            [(0.0, 0.0), (1.0, 1.0), (3.0, 2.5)].iter().map(|&(x, y)| (1e8 + x, 1e8 + y)).collect();
        let f = fit_linear(&pts).unwrap();
        assert!((f.slope - 69.0 / 84.0).abs() < 1e-9, "{f:?}");
    }

    /// The same x' = 0, 1, 3, y' = 0, 1, 2.5 at the origin, where x̄ = 4/3 ≠ 1 separates x̄² from
    /// x̄/x̄: a = ȳ − b·x̄ = 7/6 − (23/28)(4/3) = 1/14; residuals −1/14, 3/28, −1/28, SSR = 1/56 on
    /// 1 dof; SE(a)² = s²(1/n + x̄²/Sxx) = (1/56)(1/3 + (16/9)/(14/3)) = 5/392.
    #[test]
    fn linear_fit_intercept_error_grows_with_the_mean_x() {
        let f = fit_linear(&[(0.0, 0.0), (1.0, 1.0), (3.0, 2.5)]).unwrap();
        assert!((f.intercept - 1.0 / 14.0).abs() < 1e-12, "{f:?}");
        assert!((f.intercept_se.unwrap() - (5.0f64 / 392.0).sqrt()).abs() < 1e-12, "{f:?}");
    }

    /// Four λ_e (x = ln(1/λ_e) = 0, 1, 2, 3) with 2, 3, 4 and 2 seeds; ln T per seed:
    /// x = 0: −0.5, 0.5 (mean 0); x = 1: 0.5, 1, 1.5 (mean 1); x = 2: 2, 2.5, 3.5, 4 (mean 3);
    /// x = 3: 2, 4 (mean 3). By hand on the four means: x̄ = 1.5, ȳ = 1.75, Sxx = 5, Sxy = 5.5,
    /// b = 1.1, a = 0.1; residuals −0.1, −0.2, 0.7, −0.4, SSR = 0.7, s² = 0.35 on 2 dof,
    /// SE = sqrt(0.35/5) = sqrt(0.07), t_{0.975,2} = 4.302653: CI = 1.1 ± 1.138375.
    /// Seeds as points (11 points): Sxx = 37 − 17²/11 = 118/11, Sxy = 45 − 17·21/11 = 138/11,
    /// b = 138/118, SSR = 913/118 on 9 dof, SE = sqrt(913·11/9)/118 = 0.283093, half-width
    /// 2.262157·SE = 0.6404: 1.28 wide against the cluster CI's 2.28, from the same data.
    #[test]
    fn the_cluster_ci_fits_the_lambda_e_means_on_n_lambda_minus_2_dof() {
        let seeds: [(f64, &[f64]); 4] =
            [(0.0, &[-0.5, 0.5]), (1.0, &[0.5, 1.0, 1.5]), (2.0, &[2.0, 2.5, 3.5, 4.0]), (3.0, &[2.0, 4.0])];
        let pts: Vec<(f64, f64)> =
            seeds.iter().flat_map(|(x, ys)| ys.iter().map(move |y| ((-x).exp(), y.exp()))).collect();
        let c = fit_loglog_clusters(&pts).unwrap();
        assert_eq!((c.points, c.n, c.n_lambda), (FitPoints::LambdaEMeans, 4, 4));
        assert!((c.slope - 1.1).abs() < 1e-12 && (c.intercept - 0.1).abs() < 1e-12, "{c:?}");
        assert!((c.slope_se.unwrap() - 0.07f64.sqrt()).abs() < 1e-12);
        let [lo, hi] = c.slope_ci95.unwrap();
        assert!((lo - (1.1 - 1.138_375)).abs() < 1e-5 && (hi - (1.1 + 1.138_375)).abs() < 1e-5, "{lo} {hi}");
        let s = fit_loglog(&pts).unwrap();
        assert_eq!((s.points, s.n, s.n_lambda), (FitPoints::SeedsAsPoints, 11, 4));
        assert!((s.slope - 138.0 / 118.0).abs() < 1e-12, "{s:?}");
        assert!((s.slope_se.unwrap() - (913.0f64 * 11.0 / 9.0).sqrt() / 118.0).abs() < 1e-12, "{s:?}");
        let [slo, shi] = s.slope_ci95.unwrap();
        assert!((shi - slo - 2.0 * 0.6404).abs() < 1e-3 && shi - slo < hi - lo, "{slo} {shi}");
        // Two λ_e: a slope, no CI.
        let two = fit_loglog_clusters(&pts[..5]).unwrap();
        assert_eq!(two.n_lambda, 2);
        assert!(two.slope_ci95.is_none() && (two.slope - 1.0).abs() < 1e-12);
    }

    /// Cluster A: (0, 0), (2, 2); cluster B: (0, 5), (1, 5.5), (2, 7); a singleton C is left out.
    /// Demeaned: A x̃ = ∓1, ỹ = ∓1; B x̃ = −1, 0, 1, ỹ = −5/6, −1/3, 7/6. Σx̃ỹ = 4, Σx̃² = 4: b = 1.
    /// Residuals 0, 0, 1/6, −1/3, 1/6: SSR = 1/6 on 5 − 2 − 1 = 2 dof, SE = sqrt(1/12/4),
    /// t_{0.975,2} = 4.302653; intercepts a_A = 1 − 1 = 0, a_B = 35/6 − 1 = 29/6.
    #[test]
    fn the_within_fit_uses_contrasts_inside_each_cluster() {
        let f = fit_within(&[
            (1.0, vec![(0.0, 0.0), (2.0, 2.0)]),
            (2.0, vec![(0.0, 5.0), (1.0, 5.5), (2.0, 7.0)]),
            (3.0, vec![(9.0, -40.0)]),
        ])
        .unwrap();
        assert_eq!((f.n, f.n_lambda, f.dof), (5, 2, 2));
        assert!((f.slope - 1.0).abs() < 1e-12, "{f:?}");
        let se = f.slope_se.unwrap();
        assert!((se - (1.0f64 / 48.0).sqrt()).abs() < 1e-12);
        let [lo, hi] = f.slope_ci95.unwrap();
        assert!((hi - lo - 2.0 * 4.302_652_730 * se).abs() < 1e-6);
        assert!(f.intercepts[0].a.abs() < 1e-12 && (f.intercepts[1].a - 29.0 / 6.0).abs() < 1e-12);
        assert!(fit_within(&[(1.0, vec![(1.0, 0.0), (1.0, 3.0)])]).is_none(), "no x contrast: no b");
    }

    /// y = a(λ_e) + 1.2·x with a(λ_e) rising as λ_e falls while the arms' mean norm term falls
    /// (as when ‖w*‖ grows at a fixed ‖w₀‖): the within fit recovers b = 1.2, one intercept for all
    /// λ_e (the pooled fit) does not.
    #[test]
    fn the_within_fit_is_not_biased_by_a_lambda_e_dependent_intercept() {
        let b = 1.2;
        let noise = [0.02, -0.015, 0.01, -0.02, 0.015, -0.01];
        let mut clusters = Vec::new();
        for (j, le) in [8e-3, 4e-3, 2e-3, 1e-3].into_iter().enumerate() {
            let a = 0.5 + 0.8 * j as f64;
            // matched ≈ 0.1, default falls 2.3 → 0.8, large ≈ 2.3.
            let xs = [0.1, 0.15, 2.3 - 0.5 * j as f64, 2.25 - 0.5 * j as f64, 2.3, 2.35];
            let pts: Vec<(f64, f64)> =
                xs.iter().zip(noise).map(|(&x, e)| (x, a + b * x + e * (1.0 + j as f64 / 4.0))).collect();
            clusters.push((le, pts));
        }
        let w = fit_within(&clusters).unwrap();
        let [lo, hi] = w.slope_ci95.unwrap();
        assert!((w.slope - b).abs() < 0.02 && lo < b && b < hi, "{w:?}");
        assert_eq!((w.n, w.n_lambda, w.dof), (24, 4, 19));
        for (j, c) in w.intercepts.iter().enumerate() {
            assert!((c.a - (0.5 + 0.8 * j as f64)).abs() < 0.03, "{c:?}");
        }
        let all: Vec<(f64, f64)> = clusters.iter().flat_map(|c| c.1.clone()).collect();
        // One intercept for all λ_e: b = 1.02 (hand-checked in Python), outside the within CI.
        let pooled = fit_linear(&all).unwrap();
        assert!(pooled.slope < b - 0.15 && pooled.slope < lo, "pooled: {pooled:?}");
    }

    /// Pairs that have no log (λ_e or T zero, negative, infinite or NaN) are not points of
    /// either log-log fit, nor new λ_e; a non-finite point is not part of a within-cluster fit.
    #[test]
    fn unusable_points_are_left_out_of_every_fit() {
        let clean: Vec<(f64, f64)> =
            [(8e-3, 300.0), (4e-3, 500.0), (4e-3, 700.0), (2e-3, 1500.0), (1e-3, 2600.0)].to_vec();
        let mut noisy = clean.clone();
        noisy.extend([
            (0.0, 10.0),
            (-1e-3, 10.0),
            (f64::INFINITY, 10.0),
            (f64::NAN, 10.0),
            (5e-4, 0.0),
            (5e-4, -1.0),
            (2e-4, f64::INFINITY),
            (2e-4, f64::NAN),
        ]);
        assert_eq!(fit_loglog(&noisy), fit_loglog(&clean));
        assert_eq!(fit_loglog_clusters(&noisy), fit_loglog_clusters(&clean));
        let within = |extra: &[(f64, f64)]| {
            let mut a = vec![(0.0, 0.0), (2.0, 2.0)];
            a.extend_from_slice(extra);
            fit_within(&[(1.0, a), (2.0, vec![(0.0, 5.0), (1.0, 5.5), (2.0, 7.0)])])
        };
        assert_eq!(within(&[(f64::NAN, 1.0), (1.0, f64::INFINITY)]), within(&[]));
    }

    /// Student's t CDF against its closed forms for 1, 2 and 3 degrees of freedom:
    /// F₁(t) = 1/2 + atan(t)/π (Cauchy), F₂(t) = 1/2 + t/(2·sqrt(2 + t²)),
    /// F₃(t) = 1/2 + (atan(t/√3) + √3·t/(3 + t²))/π. Small |t| take the continued fraction of
    /// 1 − I_{1−x}(b, a), large |t| that of I_x(a, b) (x = df/(df + t²)): both branches are checked.
    #[test]
    fn t_cdf_matches_closed_forms_on_both_branches() {
        use std::f64::consts::PI;
        type Cdf = fn(f64) -> f64;
        let closed: [(f64, Cdf); 3] = [
            (1.0, |t| 0.5 + t.atan() / PI),
            (2.0, |t| 0.5 + t / (2.0 * (2.0 + t * t).sqrt())),
            (3.0, |t| 0.5 + ((t / 3f64.sqrt()).atan() + 3f64.sqrt() * t / (3.0 + t * t)) / PI),
        ];
        for (df, f) in closed {
            for t in [-20.0, -3.0, -1.2, -0.5, -0.1, 0.1, 0.3, 0.5, 0.9, 1.2, 2.0, 5.0, 40.0] {
                let (got, want) = (t_cdf(t, df), f(t));
                assert!((got - want).abs() < 1e-13, "df {df}, t {t}: {got} vs {want}");
            }
        }
        // Even ν: F(t) = 1/2 + t/(2·sqrt(ν + t²))·Σ_{j<ν/2} c_j·(1 + t²/ν)^(−j), c_0 = 1,
        // c_j = c_{j−1}(2j − 1)/(2j). Far on the wrong side of x = (a + 1)/(a + b + 2) a continued
        // fraction converges too slowly for its 300 steps: I_x(a, b) taken directly at ν = 10,
        // t = 0.05 (x = 0.99975) is off by 5e-9.
        let even = |t: f64, nu: usize| {
            let q = 1.0 / (1.0 + t * t / nu as f64);
            let (mut c, mut qj, mut sum) = (1.0, 1.0, 0.0);
            for j in 0..nu / 2 {
                if j > 0 {
                    c *= (2 * j - 1) as f64 / (2 * j) as f64;
                    qj *= q;
                }
                sum += c * qj;
            }
            0.5 + t / (2.0 * (nu as f64 + t * t).sqrt()) * sum
        };
        for nu in [4, 10, 1000] {
            for t in [-2.5, -0.3, 0.05, 0.3, 1.0, 1.96, 4.0] {
                let (got, want) = (t_cdf(t, nu as f64), even(t, nu));
                assert!((got - want).abs() < 1e-12, "df {nu}, t {t}: {got} vs {want}");
            }
        }
    }

    /// ln Γ against Python's math.lgamma, both sides of the reflection at x = 0.5 (the t CDF only
    /// asks for x ≥ 0.5, so only this test reaches the reflection).
    #[test]
    fn ln_gamma_matches_lgamma_on_both_sides_of_one_half() {
        for (x, want) in [
            (0.1, 2.252_712_651_734_205_5),
            (0.25, 1.288_022_524_698_077_2),
            (0.5, 0.572_364_942_924_700_4),
            (1.0, 0.0),
            (3.5, 1.200_973_602_347_073_8),
            (10.0, 12.801_827_480_081_467),
        ] {
            assert!((ln_gamma(x) - want).abs() < 1e-13, "x = {x}: {} vs {want}", ln_gamma(x));
        }
    }

    /// Outside 0 < λ_min < λ_max < 1 there is no log-factor slope to compute: 1, never NaN or ∞.
    #[test]
    fn log_factor_slope_is_one_outside_its_range() {
        for (lo, hi) in [(0.0, 1e-2), (-1e-3, 1e-2), (1e-3, 1.0), (1e-3, 2.0), (1e-2, 1e-2), (1e-2, 1e-3)] {
            assert_eq!(log_factor_slope(lo, hi), 1.0, "[{lo}, {hi}]");
        }
    }

    #[test]
    fn lambda_e_groups_keep_first_appearance_order() {
        let g = group_by_lambda_e([(2e-3, 'a'), (1e-3, 'b'), (2e-3 * (1.0 + 1e-12), 'c')]);
        assert_eq!(g, vec![(2e-3, vec!['a', 'c']), (1e-3, vec!['b'])]);
        // ln(ln 1e3 / ln 1e2)/ln 10 = ln 1.5/ln 10.
        assert!((log_factor_slope(1e-3, 1e-2) - (1.0 + 1.5f64.ln() / 10f64.ln())).abs() < 1e-12);
    }
}
