//! The angle between w_t and w_{t+1} without cancellation.
//!
//! With a = w_t, d = w_{t+1} − w_t and sums in f64: s_aa = Σa², s_dd = Σd², s_ad = Σa·d.
//! The part of d orthogonal to a has squared norm d⊥² = s_dd − s_ad²/s_aa (clamped at 0), and
//! angle = atan2(‖a‖·‖d⊥‖, a·(a+d)) = atan2(sqrt(d⊥²·s_aa), s_aa + s_ad).
//! Unlike arccos of a cosine near 1, this keeps full relative precision for tiny angles. What is left
//! is the cancellation in d⊥² when d is almost parallel to a: its relative error is about
//! ε·(radial/tangential)². In SGD + WD the radial part of a step is ηλ‖w‖ and the tangential part
//! about sqrt(2ηλ)‖w‖, a ratio of sqrt(ηλ/2) ≪ 1, so the angle keeps nearly full precision.

/// The angle in radians between a and a + d, from the sums above. 0 when a = 0.
pub fn angle_from_sums(s_aa: f64, s_dd: f64, s_ad: f64) -> f64 {
    if s_aa <= 0.0 {
        return 0.0;
    }
    let d_perp2 = (s_dd - s_ad * s_ad / s_aa).max(0.0);
    (d_perp2 * s_aa).sqrt().atan2(s_aa + s_ad)
}

/// The same angle computed from the vectors, accumulating in f64.
pub fn angle_between_steps(w_old: &[f64], w_new: &[f64]) -> f64 {
    let (mut aa, mut dd, mut ad) = (0.0, 0.0, 0.0);
    for (&a, &b) in w_old.iter().zip(w_new) {
        let d = b - a;
        aa += a * a;
        dd += d * d;
        ad += a * d;
    }
    angle_from_sums(aa, dd, ad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotate a in the plane of two orthonormal vectors by θ and shrink it by a radial factor: the
    /// angle is θ exactly, whatever the shrink. Reference values are exact by construction.
    fn rotated(theta: f64, shrink: f64, n: usize) -> (Vec<f64>, Vec<f64>) {
        // a = 3·e0 (norm 3); b = shrink·3·(cos θ e0 + sin θ e1); padded with zeros.
        let mut a = vec![0.0; n];
        let mut b = vec![0.0; n];
        a[0] = 3.0;
        b[0] = shrink * 3.0 * theta.cos();
        b[1] = shrink * 3.0 * theta.sin();
        (a, b)
    }

    #[test]
    fn matches_exact_angles_down_to_1e_minus_9() {
        for &theta in &[1.0, 0.3, 1e-2, 1e-4, 1e-6, 1e-7, 1e-9] {
            // Radial shrinks as SGD + WD makes them (ηλ ≤ θ²/2 at equilibrium), and larger ones
            // where the ε·(radial/tangential)² bound still allows 1e-7.
            for shrink in [1.0, 1.0 - theta * theta / 2.0, 1.0 - theta, 1.0 - 1e3 * theta]
                .into_iter()
                .filter(|s| *s > 0.1)
            {
                let (a, b) = rotated(theta, shrink, 5);
                let got = angle_between_steps(&a, &b);
                let rel = (got - theta).abs() / theta;
                assert!(rel < 1e-7, "θ={theta} shrink={shrink}: got {got}, rel err {rel}");
            }
        }
    }

    #[test]
    fn arccos_would_fail_where_this_succeeds() {
        // At 1e-8 rad, 1 − cos θ = 5e-17 is below f64's resolution: arccos of the computed cosine is
        // off by ~100%, this formula is exact.
        let (a, b) = rotated(1e-8, 1.0, 2);
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let cos = dot / (9.0f64.sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt());
        assert!((cos.min(1.0).acos() - 1e-8).abs() > 0.3e-8);
        assert!((angle_between_steps(&a, &b) - 1e-8).abs() < 1e-15);
    }

    #[test]
    fn random_high_dimensional_vectors_agree_with_a_long_double_style_reference() {
        // Reference: the angle via the cross-norm identity computed with compensated (Kahan) sums.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &scale in &[1e-1, 1e-3, 1e-6] {
            let a: Vec<f64> = (0..4096).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let d: Vec<f64> = (0..4096).map(|_| scale * rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f64> = a.iter().zip(&d).map(|(x, y)| x + y).collect();
            // ‖a×b‖² = ‖a‖²‖b‖² − (a·b)² = ‖a‖²‖d‖² − (a·d)², evaluated from d (no cancellation in b).
            let kahan = |it: &mut dyn Iterator<Item = f64>| {
                let (mut s, mut c) = (0.0f64, 0.0f64);
                for x in it {
                    let y = x - c;
                    let t = s + y;
                    c = (t - s) - y;
                    s = t;
                }
                s
            };
            let aa = kahan(&mut a.iter().map(|x| x * x));
            let dd = kahan(&mut d.iter().map(|x| x * x));
            let ad = kahan(&mut a.iter().zip(&d).map(|(x, y)| x * y));
            let cross = (aa * dd - ad * ad).sqrt();
            let reference = cross.atan2(aa + ad);
            let got = angle_between_steps(&a, &b);
            assert!((got - reference).abs() / reference < 1e-9, "scale {scale}: {got} vs {reference}");
        }
    }
}
