//! The update rules with their fixed settings, and what the theory predicts for each on a
//! scale-invariant weight vector w of C elements decayed with λ at learning rate η:
//!
//! | rule             | Δ*: equilibrium RMS angle per step              | ‖w*‖            | effective LR |
//! |------------------|-------------------------------------------------|-----------------|--------------|
//! | sgd, momentum γ  | sqrt(2ηλ/(1+γ))                                 | needs ⟨‖∇L‖²⟩   | η/‖w‖²       |
//! | adamw, β₁        | the balance of `stats::rotational` (→ REQ's sqrt(2ηλ(1−β₁)/(1+β₁)))  | → sqrt(ηC/(2λ)) | η/‖w‖ |
//! | lion, β₁, β₂     | the balance with Lion's sign autocorrelation    | η·sqrt(C/x)     | η/‖w‖        |
//! | adam (coupled L2)| none                                            | none            | η/‖w‖        |
//!
//! SGD's Δ* is Li, Lyu & Arora (2020) and Wan et al. (2021), as before. AdamW's and Lion's come
//! from one balance of decay against update noise (`stats::rotational`, derived in
//! docs/OPTIMIZERS.md): as λ_e → 0 AdamW's is Kosson, Messmer & Jaggi's (ICML 2024; epfml/REQ
//! `adamw_etar_func`), with the O(λ_e·memory) terms that matter at the recipes' λ_e; Lion's replaces
//! REQ's linearized sign (`lion_etar_func`, √(π/2) high at β₁ = 0) by the arcsin sign correlation.
//! `ilr calibrate` checks both on a toy (within 0.6%). Adam with coupled L2 has none: the decay
//! term λw goes through Adam's normalization, so the balance depends on the gradient's size element
//! by element (REQ refuses it too: "No etar_func provided for Adam").
//!
//! The update of the Adam family and of Lion has a size that does not scale with 1/‖w‖, so a
//! vector's rotation per step goes as η/‖w‖, not SGD's η/‖w‖²: that is the effective LR recorded.

use super::config::OptimKind;
use crate::stats::rotational::{
    adamw_angular_update, adamw_equilibrium_norm, lion_angular_update, lion_equilibrium_norm,
    sgd_angular_update,
};
use serde::Serialize;

/// An update rule with its fixed (unscheduled) settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Rule {
    /// SGD with heavy-ball momentum γ.
    Sgd { momentum: f64 },
    /// AdamW (decoupled weight decay).
    AdamW { beta1: f64, beta2: f64, eps: f64 },
    /// Adam with weight_decay = λ (coupled L2).
    Adam { beta1: f64, beta2: f64, eps: f64 },
    /// Lion (decoupled weight decay).
    Lion { beta1: f64, beta2: f64 },
}

impl Rule {
    pub fn kind(&self) -> OptimKind {
        match self {
            Self::Sgd { .. } => OptimKind::Sgd,
            Self::AdamW { .. } => OptimKind::AdamW,
            Self::Adam { .. } => OptimKind::Adam,
            Self::Lion { .. } => OptimKind::Lion,
        }
    }

    /// The heavy-ball momentum γ that sets the clock of the equilibrium (`stats::relaxation_rate`):
    /// SGD's γ; 0 for the others, whose weight decay w ← w(1 − ηλ) (or Adam's normalized L2) is not
    /// amplified by a momentum sum, so their unit is 1/λ_e.
    pub fn momentum(&self) -> f64 {
        match self {
            Self::Sgd { momentum } => *momentum,
            _ => 0.0,
        }
    }

    /// Whether the theory predicts Δ* for this rule (all but adam).
    pub fn has_prediction(&self) -> bool {
        !matches!(self, Self::Adam { .. })
    }

    /// Δ*, the equilibrium RMS angular update per step of a scale-invariant vector decayed with λ at
    /// learning rate η (see the module table); None where there is no prediction (adam).
    pub fn angular_theory(&self, lr: f64, wd: f64) -> Option<f64> {
        let lambda_e = lr * wd;
        match *self {
            Self::Sgd { momentum } => Some(sgd_angular_update(lambda_e, momentum)),
            Self::AdamW { beta1, .. } => Some(adamw_angular_update(lambda_e, beta1)),
            Self::Lion { beta1, beta2 } => Some(lion_angular_update(lambda_e, beta1, beta2)),
            Self::Adam { .. } => None,
        }
    }

    /// The predicted equilibrium norm ‖w*‖ of a scale-invariant vector of `numel` elements, for the
    /// rules whose update size does not depend on the gradient's (adamw, lion); None for sgd (its
    /// ‖w*‖ needs the measured gradient norms: `report::norms::predicted_equilibrium_norm`) and adam.
    pub fn normalized_equilibrium_norm(&self, lr: f64, wd: f64, numel: usize) -> Option<f64> {
        match *self {
            Self::AdamW { beta1, .. } => Some(adamw_equilibrium_norm(lr, wd, beta1, numel)),
            Self::Lion { beta1, beta2 } => Some(lion_equilibrium_norm(lr, wd, beta1, beta2, numel)),
            Self::Sgd { .. } | Self::Adam { .. } => None,
        }
        .filter(|n| n.is_finite())
    }

    /// The effective learning rate of a vector with ‖w‖² = `sq_norm`: η/‖w‖² for sgd, η/‖w‖ for
    /// the others (see the module doc). Infinite at w = 0.
    pub fn effective_lr(&self, lr: f64, sq_norm: f64) -> f64 {
        if sq_norm <= 0.0 {
            return f64::INFINITY;
        }
        match self {
            Self::Sgd { .. } => lr / sq_norm,
            _ => lr / sq_norm.sqrt(),
        }
    }

    /// How the effective LR is formed, for table headers.
    pub fn effective_lr_label(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "η/‖w‖²",
            _ => "η/‖w‖",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_per_rule() {
        let (lr, wd) = (0.1, 5e-4);
        // SGD: as before the rules existed.
        let sgd = Rule::Sgd { momentum: 0.9 };
        assert_eq!(sgd.angular_theory(lr, wd), Some((2.0f64 * lr * wd / 1.9).sqrt()));
        // AdamW and Lion: the balance of stats::rotational; at this small λ_e (5e-5) AdamW's is
        // REQ's √(2ηλ(1−β₁)/(1+β₁)) within 0.1%, and Lion's at (0.9, 0.99) within 1% of REQ's.
        let adamw = |beta1| Rule::AdamW { beta1, beta2: 0.999, eps: 1e-8 };
        let got = adamw(0.9).angular_theory(lr, wd).unwrap();
        assert_eq!(got, adamw_angular_update(lr * wd, 0.9));
        assert!((got / (1e-2 * (0.1f64 / 1.9).sqrt()) - 1.0).abs() < 1e-3, "{got}");
        let lion = Rule::Lion { beta1: 0.9, beta2: 0.99 };
        let req = (std::f64::consts::PI / 2.0).sqrt() * 1e-2 * (0.01f64 + 0.81 * 0.01 / 1.99).sqrt();
        assert!((lion.angular_theory(lr, wd).unwrap() / req - 1.0).abs() < 1e-2);
        assert_eq!(Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }.angular_theory(lr, wd), None);

        // Norms: AdamW → √(ηC/(2λ)) at small λ_e; Lion's from its balance.
        let n = adamw(0.9).normalized_equilibrium_norm(lr, wd, 1000).unwrap();
        assert!((n / (100.0f64 / 1e-3).sqrt() - 1.0).abs() < 1e-3, "{n}");
        let n = lion.normalized_equilibrium_norm(lr, wd, 1000).unwrap();
        assert_eq!(n, lion_equilibrium_norm(lr, wd, 0.9, 0.99, 1000));
        assert_eq!(sgd.normalized_equilibrium_norm(lr, wd, 1000), None);
        assert_eq!(adamw(0.9).normalized_equilibrium_norm(lr, 0.0, 1000), None, "no decay: no equilibrium");

        // Effective LR: η/‖w‖² for SGD, η/‖w‖ for the others.
        assert_eq!(sgd.effective_lr(0.1, 4.0), 0.025);
        assert_eq!(lion.effective_lr(0.1, 4.0), 0.05);
        assert_eq!(adamw(0.9).effective_lr(0.1, 0.0), f64::INFINITY);
        assert_eq!((sgd.momentum(), lion.momentum()), (0.9, 0.0));
    }

    #[test]
    fn each_rule_names_its_kind_and_only_adam_has_no_prediction() {
        let adam = Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let rules = [
            (Rule::Sgd { momentum: 0.0 }, OptimKind::Sgd, true, "η/‖w‖²"),
            (Rule::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, OptimKind::AdamW, true, "η/‖w‖"),
            (adam, OptimKind::Adam, false, "η/‖w‖"),
            (Rule::Lion { beta1: 0.9, beta2: 0.99 }, OptimKind::Lion, true, "η/‖w‖"),
        ];
        for (rule, kind, predicts, label) in rules {
            assert_eq!(
                (rule.kind(), rule.has_prediction(), rule.effective_lr_label()),
                (kind, predicts, label)
            );
            assert_eq!(rule.angular_theory(1e-3, 1.0).is_some(), predicts, "{rule:?}");
        }
    }
}
