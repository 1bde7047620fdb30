//! The Fast Equilibrium fits: least squares of y = log T_eq on x = log(1/λ_e), with a 95% confidence
//! interval on the slope from Student's t with n − 2 degrees of freedom.
//!
//! slope b = Sxy/Sxx, intercept a = ȳ − b·x̄, residual variance s² = Σ(y − a − bx)²/(n − 2),
//! SE(b) = sqrt(s²/Sxx), CI = b ± t_{0.975, n−2}·SE(b). The conjecture is an upper bound: T_eq =
//! O(1/λ_e) up to log factors, i.e. T_eq·λ_e bounded up to a log factor; a slope below 1 is within
//! it, and a slope of 1 is what a T_eq exactly proportional to 1/λ_e would give.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogLogFit {
    /// Points used.
    pub n: usize,
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

/// Fit log T_eq against log(1/λ_e) over (λ_e, T_eq) pairs; None without two distinct λ_e.
pub fn fit_loglog(points: &[(f64, f64)]) -> Option<LogLogFit> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(le, t)| *le > 0.0 && *t > 0.0 && le.is_finite() && t.is_finite())
        .map(|(le, t)| ((1.0 / le).ln(), t.ln()))
        .collect();
    let f = fit_linear(&pts)?;
    Some(LogLogFit {
        n: f.n,
        slope: f.slope,
        intercept: f.intercept,
        slope_se: f.slope_se,
        slope_ci95: f.slope_ci95,
        r_squared: f.r_squared,
    })
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
}
