//! SGD with L2 weight decay and heavy-ball momentum, with PyTorch's semantics:
//! g_t = ∇L(w_t) + λ w_t;  v_t = γ v_{t−1} + g_t;  w_{t+1} = w_t − η v_t.
//!
//! Hyperparameters are given as (η, λ) or as (η, λ_e) with λ = λ_e/η. Each scale-invariant group has
//! its own λ (by default the same), and trained tensors outside any group use `wd_other`.

pub mod schedule;

pub use schedule::{Schedule, ScheduleConfig};

use crate::backend::{Backend, Segment, SgdStep, StepSums};
use crate::model::Layout;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate η.
    pub lr: f64,
    /// L2 weight decay λ. Give either this or `lambda_e` (an absent one is None, not the default).
    #[serde(default)]
    pub wd: Option<f64>,
    /// Intrinsic learning rate λ_e = η·λ; sets λ = λ_e/η.
    #[serde(default)]
    pub lambda_e: Option<f64>,
    /// Heavy-ball momentum γ (0 for plain SGD).
    pub momentum: f64,
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
}

/// Hyperparameters in force at one step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hyper {
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
}

impl Hyper {
    /// λ_e = η·λ.
    pub fn lambda_e(&self) -> f64 {
        self.lr * self.wd
    }
    /// The equilibrium angular update per step, Δ* = sqrt(2ηλ/(1+γ)).
    pub fn angular_theory(&self) -> f64 {
        (2.0 * self.lr * self.wd / (1.0 + self.momentum)).sqrt()
    }
}

/// The optimizer: its schedule, the per-tensor λ multipliers and the momentum buffer.
pub struct Sgd<B: Backend> {
    schedule: Schedule,
    momentum: f64,
    /// (tensor index, offset, len, λ multiplier relative to the schedule's λ) of every trained tensor.
    trained: Vec<(usize, usize, usize, f64)>,
    pub momenta: B::Buf,
}

impl<B: Backend> Sgd<B> {
    pub fn new(be: &B, cfg: &OptimConfig, layout: &Layout) -> Result<Self> {
        cfg.validate()?;
        let base = cfg.base_wd()?;
        for name in cfg.group_wd.keys() {
            if !layout.groups.iter().any(|g| &g.name == name) {
                let known: Vec<_> = layout.groups.iter().map(|g| g.name.as_str()).collect();
                bail!("optim.group_wd names unknown group {name:?}; the model's groups are {known:?}");
            }
        }
        let rel = |w: f64| if base > 0.0 { w / base } else { 0.0 };
        let trained = layout
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.trainable)
            .map(|(i, t)| {
                let wd = match t.group {
                    Some(g) => cfg.group_wd.get(&layout.groups[g].name).copied().unwrap_or(base),
                    None => cfg.wd_other.unwrap_or(base),
                };
                (i, t.offset, t.len, rel(wd))
            })
            .collect();
        Ok(Self {
            schedule: Schedule::new(&cfg.schedule, cfg.lr, base)?,
            momentum: cfg.momentum,
            trained,
            momenta: be.alloc(layout.num_params)?,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The schedule's (η, λ, γ) at `epoch`; λ is that of the scale-invariant groups.
    pub fn hyper_at(&self, epoch: f64) -> Hyper {
        let (lr, wd) = self.schedule.at(epoch);
        Hyper { lr, wd, momentum: self.momentum }
    }

    /// The λ of tensor `t` under `h` (group overrides applied), or None if it is not trained.
    pub fn tensor_wd(&self, t: usize, h: &Hyper) -> Option<f64> {
        self.trained.iter().find(|x| x.0 == t).map(|x| h.wd * x.3)
    }

    /// One step at `h`. With `want_sums`, returns (tensor index, sums) for every trained tensor.
    pub fn step(
        &mut self,
        be: &B,
        h: &Hyper,
        params: &mut B::Buf,
        grads: &B::Buf,
        want_sums: bool,
    ) -> Result<Option<Vec<(usize, StepSums)>>> {
        let segments: Vec<Segment> = self
            .trained
            .iter()
            .map(|&(_, offset, len, rel)| Segment {
                offset,
                len,
                lr: h.lr,
                wd: h.wd * rel,
                momentum: h.momentum,
            })
            .collect();
        if want_sums {
            let mut sums = vec![StepSums::default(); segments.len()];
            be.sgd_step(SgdStep {
                segments: &segments,
                params,
                grads,
                momenta: &mut self.momenta,
                sums: Some(&mut sums),
            })?;
            Ok(Some(self.trained.iter().map(|x| x.0).zip(sums).collect()))
        } else {
            be.sgd_step(SgdStep {
                segments: &segments,
                params,
                grads,
                momenta: &mut self.momenta,
                sums: None,
            })?;
            Ok(None)
        }
    }
}
