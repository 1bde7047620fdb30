//! Comparison of results with a reference, element by element, under a stated tolerance.

/// f32 machine epsilon (one ulp of 1.0).
pub(super) const EPS: f64 = f32::EPSILON as f64;
/// bf16 unit roundoff: 8 significant bits, round to nearest, so |bf16(a) − a| ≤ 2⁻⁸·|a|.
pub(crate) const U_BF16: f64 = 1.0 / 256.0;

/// How the allowance of each element is computed.
pub(crate) enum Tol<'a> {
    /// Bitwise equality (NaN matches NaN).
    Exact,
    /// rel·|ref| + abs·max|ref|.
    Rel { rel: f64, abs: f64 },
    /// Sums of k products: 4·max(k,16)·ε·(mag_i + 0.01·max mag), mag = Σ|a·b| per element.
    Sum { k: usize, mag: &'a [f64] },
    /// A given allowance per element.
    Abs(&'a [f64]),
    /// bf16 convolutions (PSEUDO_BFLOAT16: bf16 operands and output, f32 sums) against the exact
    /// result of the f32 inputs: (3u + 4·max(k,16)·ε)·(mag_i + 0.01·max mag), u = 2⁻⁸. Why: each
    /// operand is rounded to bf16 (≤ u relative), so a product is off by ≤ (2u + u²)·|a·b|; the f32
    /// sum adds ≤ k·ε·Σ|a·b|; rounding the sum to bf16 adds ≤ u·|sum| ≤ u·Σ|a·b|. Altogether
    /// ≤ (3u + u² + kε)·Σ|a·b|, a worst case (random-sign errors give ~u·sqrt(Σ(a·b)²)). The
    /// 4·max(k,16)·ε and 0.01·max-magnitude terms are the f32 allowance's, kept for transform
    /// algorithms (Winograd/FFT), whose errors scale with the largest magnitudes.
    Bf16 { k: usize, mag: &'a [f64] },
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub(super) max_abs: f64,
    pub(super) max_rel: f64,
    pub(crate) worst: f64,
    /// (index, got, want) of the worst element when it fails.
    pub(super) bad: Option<(usize, f64, f64)>,
}

pub(crate) fn compare(got: &[f64], want: &[f64], tol: &Tol) -> Stats {
    if got.len() != want.len() {
        return Stats {
            worst: f64::INFINITY,
            bad: Some((usize::MAX, got.len() as f64, want.len() as f64)),
            ..Default::default()
        };
    }
    let max_want = want.iter().fold(0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let max_mag = match tol {
        Tol::Sum { mag, .. } | Tol::Bf16 { mag, .. } => mag.iter().fold(0f64, |m, v| m.max(*v)),
        _ => 0.0,
    };
    let mut s = Stats::default();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (ratio, d) = if g.is_nan() || w.is_nan() {
            if g.is_nan() && w.is_nan() {
                (0.0, 0.0)
            } else {
                (f64::INFINITY, f64::INFINITY)
            }
        } else {
            let d = (g - w).abs();
            let allowed = match tol {
                Tol::Exact => 0.0,
                Tol::Rel { rel, abs } => rel * w.abs() + abs * max_want,
                Tol::Sum { k, mag } => 4.0 * (*k).max(16) as f64 * EPS * (mag[i] + 0.01 * max_mag),
                Tol::Abs(allowed) => allowed[i],
                Tol::Bf16 { k, mag } => {
                    (3.0 * U_BF16 + 4.0 * (*k).max(16) as f64 * EPS) * (mag[i] + 0.01 * max_mag)
                }
            };
            let ratio = match tol {
                Tol::Exact if g.to_bits() == w.to_bits() => 0.0,
                Tol::Exact => f64::INFINITY,
                _ if d == 0.0 => 0.0,
                _ if allowed > 0.0 => d / allowed,
                _ => f64::INFINITY,
            };
            (ratio, d)
        };
        s.max_abs = s.max_abs.max(d);
        if d > 0.0 {
            s.max_rel = s.max_rel.max(d / w.abs().max(f64::MIN_POSITIVE));
        }
        if ratio > s.worst {
            s.worst = ratio;
            if ratio > 1.0 {
                s.bad = Some((i, g, w));
            }
        }
    }
    s
}

pub(crate) fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub(super) fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_nan_and_respects_allowances() {
        let s = compare(&[1.0, f64::NAN], &[1.0, 2.0], &Tol::Exact);
        assert!(s.worst.is_infinite());
        assert_eq!(s.bad.map(|b| b.0), Some(1));
        let s = compare(&[1.0 + 1e-7], &[1.0], &Tol::Rel { rel: 2.0 * EPS, abs: 0.0 });
        assert!(s.worst <= 1.0, "{s:?}");
        let s = compare(&[1.0 + 1e-6], &[1.0], &Tol::Rel { rel: 2.0 * EPS, abs: 0.0 });
        assert!(s.worst > 1.0, "{s:?}");
        let s = compare(&[f64::NAN], &[f64::NAN], &Tol::Exact);
        assert_eq!(s.worst, 0.0);
        let s = compare(&[-0.0], &[0.0], &Tol::Exact);
        assert!(s.worst.is_infinite(), "bitwise means the sign of zero too");
        let mag = [10.0];
        let s = compare(&[1.0 + 1e-5], &[1.0], &Tol::Sum { k: 16, mag: &mag });
        assert!(s.worst <= 1.0, "{s:?}");
    }
}
