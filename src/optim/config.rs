//! The `[optim]` section of a run's config: the update rule, (η, λ) and their schedule, per-group λ.

use super::rule::Rule;
use super::schedule::{Schedule, ScheduleConfig};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The update rule (`optim.kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// torch.optim.SGD: L2 weight decay coupled into the gradient, heavy-ball momentum γ.
    #[default]
    Sgd,
    /// torch.optim.AdamW: decoupled weight decay w ← w(1 − ηλ).
    AdamW,
    /// torch.optim.Adam with weight_decay = λ: L2 coupled into the gradient, which Adam then
    /// normalizes (the negative control: no equilibrium angular update is predicted).
    Adam,
    /// Lion (Chen et al. 2023) as the lion-pytorch package: decoupled weight decay, sign updates.
    Lion,
}

impl OptimKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::AdamW => "adamw",
            Self::Adam => "adam",
            Self::Lion => "lion",
        }
    }

    fn is_sgd(&self) -> bool {
        *self == Self::Sgd
    }

    /// The default [β₁, β₂] (None for SGD, which has none).
    pub fn default_betas(self) -> Option<[f64; 2]> {
        match self {
            Self::Sgd => None,
            Self::AdamW | Self::Adam => Some([0.9, 0.999]),
            Self::Lion => Some([0.9, 0.99]),
        }
    }

    /// Whether the rule has an ε (Adam's denominator).
    pub fn has_eps(self) -> bool {
        matches!(self, Self::AdamW | Self::Adam)
    }

    /// The per-parameter state buffers, under PyTorch's state names (lion-pytorch's for Lion), in
    /// the order the optimizer holds them.
    pub fn state_names(self) -> &'static [&'static str] {
        match self {
            Self::Sgd => &["momentum_buffer"],
            Self::AdamW | Self::Adam => &["exp_avg", "exp_avg_sq"],
            Self::Lion => &["exp_avg"],
        }
    }

    /// Whether the rule keeps a step count (Adam's bias corrections; PyTorch's state `step`).
    pub fn counts_steps(self) -> bool {
        matches!(self, Self::AdamW | Self::Adam)
    }
}

impl std::fmt::Display for OptimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The default ε of adam and adamw (PyTorch's).
pub const DEFAULT_EPS: f64 = 1e-8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate η.
    pub lr: f64,
    /// Weight decay λ (coupled L2 for sgd and adam, decoupled for adamw and lion). Give either this
    /// or `lambda_e` (an absent one is None, not the default).
    #[serde(default)]
    pub wd: Option<f64>,
    /// Intrinsic learning rate λ_e = η·λ; sets λ = λ_e/η.
    #[serde(default)]
    pub lambda_e: Option<f64>,
    /// Heavy-ball momentum γ of sgd (0 for plain SGD); must be 0 for the other kinds, whose
    /// momentum is β₁.
    pub momentum: f64,
    /// The update rule. Left out of config files (and so of run ids) at "sgd", so that ids from
    /// before the key existed stay valid.
    #[serde(skip_serializing_if = "OptimKind::is_sgd")]
    pub kind: OptimKind,
    /// [β₁, β₂] of adam, adamw and lion; absent: [0.9, 0.999] (adam, adamw), [0.9, 0.99] (lion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// ε of adam and adamw; absent: 1e-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// λ for trained tensors in no scale-invariant group (BN affine, last layer); default: λ.
    pub wd_other: Option<f64>,
    /// Per-group λ overrides, by group name (e.g. `stream = 1e-3`).
    pub group_wd: BTreeMap<String, f64>,
    pub schedule: ScheduleConfig,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            wd: Some(5e-4),
            lambda_e: None,
            momentum: 0.9,
            kind: OptimKind::Sgd,
            betas: None,
            eps: None,
            wd_other: None,
            group_wd: BTreeMap::new(),
            schedule: ScheduleConfig::Constant,
        }
    }
}

impl OptimConfig {
    /// λ, from `wd` or from `lambda_e`/η.
    pub fn base_wd(&self) -> Result<f64> {
        match (self.wd, self.lambda_e) {
            (Some(_), Some(_)) => {
                bail!("optim: give either wd (λ) or lambda_e (λ_e = η·λ), not both")
            }
            (Some(wd), None) => Ok(wd),
            (None, Some(le)) => Ok(le / self.lr),
            (None, None) => bail!("optim: give wd (λ) or lambda_e (λ_e = η·λ)"),
        }
    }

    /// The intrinsic learning rate λ_e = η·λ at the start of training.
    pub fn lambda_e(&self) -> Result<f64> {
        Ok(self.lr * self.base_wd()?)
    }

    /// The update rule with its settings, defaults filled in.
    pub fn rule(&self) -> Rule {
        let [beta1, beta2] = self.betas.or(self.kind.default_betas()).unwrap_or([0.0; 2]);
        let eps = self.eps.unwrap_or(DEFAULT_EPS);
        match self.kind {
            OptimKind::Sgd => Rule::Sgd { momentum: self.momentum },
            OptimKind::AdamW => Rule::AdamW { beta1, beta2, eps },
            OptimKind::Adam => Rule::Adam { beta1, beta2, eps },
            OptimKind::Lion => Rule::Lion { beta1, beta2 },
        }
    }

    /// The same config with the betas and ε left out where they equal their defaults, so that
    /// writing a default out does not change the run id.
    pub fn canonical(&self) -> Self {
        let mut c = self.clone();
        if c.betas == c.kind.default_betas() {
            c.betas = None;
        }
        if c.eps == Some(DEFAULT_EPS) && c.kind.has_eps() {
            c.eps = None;
        }
        c
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("optim.lr = {} must be a positive number", self.lr);
        }
        let wd = self.base_wd()?;
        if !(wd.is_finite() && wd >= 0.0) {
            bail!("optim.wd = {wd} must be ≥ 0 (and lambda_e ≥ 0)");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("optim.momentum = {} must lie in [0, 1)", self.momentum);
        }
        self.validate_rule()?;
        for (name, v) in self
            .wd_other
            .iter()
            .map(|v| ("wd_other".to_string(), v))
            .chain(self.group_wd.iter().map(|(k, v)| (format!("group_wd.{k}"), v)))
        {
            if !(v.is_finite() && *v >= 0.0) {
                bail!("optim.{name} = {v} must be ≥ 0");
            }
        }
        if wd == 0.0 && (!self.group_wd.is_empty() || self.wd_other.is_some_and(|w| w > 0.0)) {
            bail!("optim.group_wd and wd_other are relative to a non-zero wd; set optim.wd > 0");
        }
        Schedule::new(&self.schedule, self.lr, wd)?;
        Ok(())
    }

    /// The keys of one kind are errors with another: a heavy-ball momentum with adam, adamw or lion
    /// (their momentum is β₁; silently ignoring it would give a run that is not what was asked),
    /// betas with sgd, ε with sgd or lion.
    fn validate_rule(&self) -> Result<()> {
        let kind = self.kind;
        if kind != OptimKind::Sgd && self.momentum != 0.0 {
            bail!(
                "optim.momentum = {} is SGD's heavy-ball momentum; optim.kind = \"{kind}\" takes its momentum from \
                 optim.betas (β₁): set optim.momentum = 0 (ilr train's default) or leave --momentum out",
                self.momentum
            );
        }
        if let Some(b) = self.betas {
            if kind == OptimKind::Sgd {
                bail!(
                    "optim.betas applies to adam, adamw and lion; optim.kind = \"sgd\" uses optim.momentum"
                );
            }
            if !b.iter().all(|b| (0.0..1.0).contains(b)) {
                bail!("optim.betas = {b:?}: each β must lie in [0, 1)");
            }
        }
        if let Some(eps) = self.eps {
            if !kind.has_eps() {
                bail!("optim.eps applies to adam and adamw, not to optim.kind = \"{kind}\"");
            }
            if !(eps.is_finite() && eps >= 0.0) {
                bail!("optim.eps = {eps} must be ≥ 0");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [OptimKind; 4] = [OptimKind::Sgd, OptimKind::AdamW, OptimKind::Adam, OptimKind::Lion];

    fn adamw() -> OptimConfig {
        OptimConfig { kind: OptimKind::AdamW, momentum: 0.0, ..OptimConfig::default() }
    }

    #[test]
    fn each_kind_is_named_as_in_config_files() {
        for kind in KINDS {
            let serde_name = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_name, format!("\"{}\"", kind.name()), "{kind:?}");
            assert_eq!(kind.to_string(), kind.name());
        }
    }

    #[test]
    fn only_adam_and_adamw_count_steps_and_have_an_eps() {
        for kind in KINDS {
            let adam = matches!(kind, OptimKind::AdamW | OptimKind::Adam);
            assert_eq!(kind.counts_steps(), adam, "{kind:?}");
            assert_eq!(kind.has_eps(), adam, "{kind:?}");
        }
    }

    #[test]
    fn non_finite_or_negative_settings_are_refused() {
        for lr in [f64::INFINITY, f64::NAN, -0.1, 0.0] {
            let c = OptimConfig { lr, ..OptimConfig::default() };
            assert!(c.validate().is_err(), "lr = {lr}");
        }
        for wd in [f64::INFINITY, f64::NAN, -1e-4] {
            let c = OptimConfig { wd: Some(wd), ..OptimConfig::default() };
            assert!(c.validate().is_err(), "wd = {wd}");
            let c = OptimConfig { wd: None, lambda_e: Some(wd), ..OptimConfig::default() };
            assert!(c.validate().is_err(), "lambda_e = {wd}");
        }
        for v in [f64::INFINITY, f64::NAN, -1e-4] {
            let other = OptimConfig { wd_other: Some(v), ..OptimConfig::default() };
            assert!(other.validate().is_err(), "wd_other = {v}");
            let group = OptimConfig {
                group_wd: BTreeMap::from([("stream".to_string(), v)]),
                ..OptimConfig::default()
            };
            assert!(group.validate().is_err(), "group_wd.stream = {v}");
            let eps = OptimConfig { eps: Some(v), ..adamw() };
            assert!(eps.validate().is_err(), "eps = {v}");
        }
        let fine = OptimConfig { eps: Some(0.0), wd_other: Some(0.0), ..adamw() };
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn relative_weight_decays_need_a_nonzero_wd() {
        let no_wd = OptimConfig { wd: Some(0.0), ..OptimConfig::default() };
        assert!(no_wd.validate().is_ok(), "wd = 0 alone is plain SGD");
        let zero_other = OptimConfig { wd_other: Some(0.0), ..no_wd.clone() };
        assert!(zero_other.validate().is_ok(), "wd_other = 0 asks for no decay: consistent");
        let other = OptimConfig { wd_other: Some(1e-4), ..no_wd.clone() };
        assert!(other.validate().is_err());
        let group = OptimConfig { group_wd: BTreeMap::from([("stream".to_string(), 1e-3)]), ..no_wd };
        assert!(group.validate().is_err());
    }
}
