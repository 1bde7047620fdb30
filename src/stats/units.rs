//! The clock of the equilibrium: how many steps one "unit" of relaxation takes.
//!
//! Without momentum, ‖w‖² of a scale-invariant group relaxes at rate 4λ_e per step near equilibrium
//! and decays like (1 − 2λ_e)^t from far above it, so times are measured in units of 1/λ_e steps
//! (λ_e = ηλ). With PyTorch's heavy-ball momentum γ (v ← γv + g, w ← w − ηv) the weight decay acts
//! through the slowly varying part of v, which sums to ηλw/(1 − γ) per step, and the gradient noise
//! accumulates with the same low-frequency gain: the norm's dynamics are those of γ = 0 with
//! λ_e replaced by λ_e/(1 − γ). The unit is then (1 − γ)/λ_e steps (docs/CALIBRATION.md).

/// The relaxation rate per step, λ_e/(1 − γ): one unit of equilibrium time is its inverse in steps.
/// With γ = 0 it is λ_e, so every γ = 0 figure is unchanged.
pub fn relaxation_rate(lambda_e: f64, momentum: f64) -> f64 {
    lambda_e / (1.0 - momentum)
}

/// The label of the unit, for tables: "1/λ_e" without momentum, "(1−γ)/λ_e" with it.
pub fn unit_label(momentum: f64) -> &'static str {
    if momentum == 0.0 {
        "1/λ_e"
    } else {
        "(1−γ)/λ_e"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_momentum_the_rate_is_lambda_e_and_momentum_speeds_it_up() {
        assert_eq!(relaxation_rate(2e-3, 0.0), 2e-3);
        assert!((relaxation_rate(2e-3, 0.9) - 2e-2).abs() < 1e-15);
        assert_eq!(unit_label(0.0), "1/λ_e");
        assert_eq!(unit_label(0.9), "(1−γ)/λ_e");
    }
}
