//! What a PreResNet is made of: depth, width, shortcut type and the BatchNorm options.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How a block that changes resolution or width carries its input to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortcutKind {
    /// Parameter-free: subsample by the stride and zero-pad the new channels (He et al., option A).
    /// Linear in its input, so the residual stream stays one scale-invariant group.
    OptionA,
    /// A 1×1 strided conv followed by a BatchNorm. Its BN resets the stream's scale, which splits
    /// the stream into separate groups.
    BnProjection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Network depth 6n+2 (8, 20, 32, 56, 110, ...): n pre-activation blocks per stage, 3 stages.
    pub depth: usize,
    /// Width multiplier k: the stages have 16k, 32k and 64k channels (rounded, at least 1).
    pub width: f64,
    pub shortcut: ShortcutKind,
    /// Whether BatchNorm has trainable γ and β (off: γ = 1 and β = 0, fixed).
    pub bn_affine: bool,
    /// The paper's setting: fix the last linear layer at its random init and fix BN's affine, so
    /// every trained tensor belongs to a scale-invariant group.
    pub scale_invariant: bool,
    /// BatchNorm ε and running-statistics momentum.
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Multiplies the initial weights of every scale-invariant group by s (after `init_norm`). By
    /// scale invariance the function at step 0 is unchanged; only ‖w₀‖, and so the effective LR
    /// η/‖w₀‖², changes. Written to config files (and so part of the run id) only when not 1.
    #[serde(skip_serializing_if = "is_one")]
    pub init_scale: f64,
    /// Target ‖w₀‖ of the scale-invariant groups: one number for every group, or a list with one
    /// norm per group in the layout's order (the order of `ilr train`'s group table and of
    /// summary.json's `groups`). Each group's initial vector is rescaled to its target, then
    /// multiplied by `init_scale`. Absent: the Kaiming init's own norms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_norm: Option<InitNorm>,
}

/// `model.init_norm`: target initial norms of the scale-invariant groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitNorm {
    /// The same ‖w₀‖ for every group.
    All(f64),
    /// One ‖w₀‖ per group, in layout order.
    PerGroup(Vec<f64>),
}

impl InitNorm {
    /// The target of group `g` of `groups`; an error names the mismatch.
    pub fn target(&self, g: usize, groups: usize) -> Result<f64> {
        match self {
            InitNorm::All(v) => Ok(*v),
            InitNorm::PerGroup(v) if v.len() == groups => Ok(v[g]),
            InitNorm::PerGroup(v) => bail!(
                "model.init_norm lists {} norms but this net has {groups} scale-invariant groups \
                 (give one per group, in the order of summary.json's `groups`, or one number for all)",
                v.len()
            ),
        }
    }

    fn values(&self) -> &[f64] {
        match self {
            InitNorm::All(v) => std::slice::from_ref(v),
            InitNorm::PerGroup(v) => v,
        }
    }
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            depth: 20,
            width: 1.0,
            shortcut: ShortcutKind::OptionA,
            bn_affine: true,
            scale_invariant: false,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            init_scale: 1.0,
            init_norm: None,
        }
    }
}

impl ModelConfig {
    /// Blocks per stage, n = (depth − 2)/6.
    pub fn blocks_per_stage(&self) -> usize {
        (self.depth - 2) / 6
    }

    /// Channels of the three stages.
    pub fn stage_widths(&self) -> [usize; 3] {
        [16.0, 32.0, 64.0].map(|c: f64| ((c * self.width).round() as usize).max(1))
    }

    /// Whether BN's γ and β are trained.
    pub fn affine_trained(&self) -> bool {
        self.bn_affine && !self.scale_invariant
    }

    pub fn validate(&self) -> Result<()> {
        if self.depth < 8 || (self.depth - 2) % 6 != 0 {
            bail!("model.depth = {} is not of the form 6n+2 with n ≥ 1 (try 8, 20, 32 or 56)", self.depth);
        }
        if !(self.width.is_finite() && self.width > 0.0) {
            bail!(
                "model.width = {} must be a positive number (the stages get 16k, 32k, 64k channels)",
                self.width
            );
        }
        if !(self.bn_eps.is_finite() && self.bn_eps >= 0.0) {
            bail!("model.bn_eps = {} must be ≥ 0", self.bn_eps);
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            bail!("model.bn_momentum = {} must lie in [0, 1]", self.bn_momentum);
        }
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            bail!(
                "model.init_scale = {} must be a positive number (it multiplies the initial scale-invariant weights)",
                self.init_scale
            );
        }
        if let Some(n) = &self.init_norm {
            if let Some(v) = n.values().iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                bail!("model.init_norm: {v} is not a positive norm (each target ‖w₀‖ must be > 0)");
            }
        }
        Ok(())
    }

    /// A short readable name, e.g. "preresnet20" or "preresnet8x0.5".
    pub fn label(&self) -> String {
        if self.width == 1.0 {
            format!("preresnet{}", self.depth)
        } else {
            format!("preresnet{}x{}", self.depth, self.width)
        }
    }
}
