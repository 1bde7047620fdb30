//! Per-tensor and per-group statistics of one optimizer step.

use super::angle::angle_from_sums;
use crate::backend::StepSums;
use crate::optim::Hyper;
use serde::{Deserialize, Serialize};

/// Statistics of one weight vector (a tensor, or a group's concatenation) over one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorStats {
    pub name: String,
    /// ‖w_t‖.
    pub norm: f64,
    /// ‖∇L(w_t)‖, without the weight-decay term.
    pub grad_norm: f64,
    /// ‖w_{t+1} − w_t‖.
    pub update_norm: f64,
    /// Δ = ∠(w_t, w_{t+1}) in radians.
    pub angular_update: f64,
    /// The effective learning rate: η/‖w_t‖² for SGD, η/‖w_t‖ for adam, adamw and lion (whose
    /// update size does not scale with 1/‖w‖; `optim::Rule::effective_lr`).
    pub effective_lr: f64,
    /// Δ* of the optimizer with this vector's λ (SGD: sqrt(2ηλ/(1+γ)); `optim::Rule::angular_theory`);
    /// null where the theory does not apply or the optimizer has no prediction (adam).
    pub angular_theory: Option<f64>,
    /// Δ/Δ*; null where the vector is not scale-invariant.
    pub angular_ratio: Option<f64>,
}

impl VectorStats {
    /// `invariant_wd`: Some(λ) if the vector is scale-invariant and decayed with λ.
    pub fn new(name: &str, s: &StepSums, h: &Hyper, invariant_wd: Option<f64>) -> Self {
        let theory = invariant_wd.and_then(|wd| Hyper { wd, ..*h }.angular_theory());
        let angle = angle_from_sums(s.ww, s.dd, s.wd);
        Self {
            name: name.to_string(),
            norm: s.ww.sqrt(),
            grad_norm: s.gg.sqrt(),
            update_norm: s.dd.sqrt(),
            angular_update: angle,
            effective_lr: h.effective_lr(s.ww),
            angular_theory: theory,
            angular_ratio: theory.filter(|t| *t > 0.0).map(|t| angle / t),
        }
    }
}
