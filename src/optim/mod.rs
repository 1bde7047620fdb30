//! The optimizers, with PyTorch's semantics (`optim.kind`, see [`OptimKind`]):
//! - sgd (default): g' = ∇L(w) + λw;  v ← γv + g';  w ← w − ηv (torch.optim.SGD, dampening 0);
//! - adamw: torch.optim.AdamW, decoupled decay w ← w(1 − ηλ), then the Adam step;
//! - adam: torch.optim.Adam with weight_decay = λ, the L2 term λw added to the gradient;
//! - lion: lion-pytorch's Lion, decoupled decay, w ← w − η·sign(β₁m + (1−β₁)g).
//!
//! Hyperparameters are given as (η, λ) or as (η, λ_e) with λ = λ_e/η, whatever the kind; schedules
//! scale both. Each scale-invariant group has its own λ (by default the same), and trained tensors
//! outside any group use `wd_other`. What the theory predicts for each kind is in [`rule`].

pub mod config;
pub mod rule;
pub mod schedule;

pub use config::{OptimConfig, OptimKind, DEFAULT_EPS};
pub use rule::Rule;
pub use schedule::{Schedule, ScheduleConfig};

use crate::backend::{AdamHyper, AdamStep, Backend, LionHyper, LionStep, Segment, SgdStep, StepSums};
use crate::model::Layout;
use anyhow::{bail, Result};
use serde::Serialize;

/// Hyperparameters in force at one step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hyper {
    pub lr: f64,
    pub wd: f64,
    pub rule: Rule,
}

impl Hyper {
    /// SGD at (η, λ, γ).
    pub fn sgd(lr: f64, wd: f64, momentum: f64) -> Self {
        Self { lr, wd, rule: Rule::Sgd { momentum } }
    }
    /// λ_e = η·λ.
    pub fn lambda_e(&self) -> f64 {
        self.lr * self.wd
    }
    /// SGD's heavy-ball γ (0 for the other kinds): see [`Rule::momentum`].
    pub fn momentum(&self) -> f64 {
        self.rule.momentum()
    }
    /// The equilibrium angular update Δ* of this rule (None: no prediction); [`Rule::angular_theory`].
    pub fn angular_theory(&self) -> Option<f64> {
        self.rule.angular_theory(self.lr, self.wd)
    }
    /// The effective LR of a vector with ‖w‖² = `sq_norm`; [`Rule::effective_lr`].
    pub fn effective_lr(&self, sq_norm: f64) -> f64 {
        self.rule.effective_lr(self.lr, sq_norm)
    }
}

/// The optimizer: its rule, schedule, the per-tensor λ multipliers, and its state: the
/// per-parameter buffers of its kind ([`OptimKind::state_names`]) and the steps taken.
pub struct Optimizer<B: Backend> {
    schedule: Schedule,
    rule: Rule,
    /// (tensor index, offset, len, λ multiplier relative to the schedule's λ) of every trained tensor.
    trained: Vec<(usize, usize, usize, f64)>,
    /// One buffer per state name, tiled like the parameters (zero for untrained tensors).
    state: Vec<B::Buf>,
    /// Steps taken: Adam's next step is t = steps + 1.
    steps: u64,
}

impl<B: Backend> Optimizer<B> {
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
        let state =
            cfg.kind.state_names().iter().map(|_| be.alloc(layout.num_params)).collect::<Result<_>>()?;
        Ok(Self {
            schedule: Schedule::new(&cfg.schedule, cfg.lr, base)?,
            rule: cfg.rule(),
            trained,
            state,
            steps: 0,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The schedule's (η, λ) at `epoch` with the rule; λ is that of the scale-invariant groups.
    pub fn hyper_at(&self, epoch: f64) -> Hyper {
        let (lr, wd) = self.schedule.at(epoch);
        Hyper { lr, wd, rule: self.rule }
    }

    /// The λ of tensor `t` under `h` (group overrides applied), or None if it is not trained.
    pub fn tensor_wd(&self, t: usize, h: &Hyper) -> Option<f64> {
        self.trained.iter().find(|x| x.0 == t).map(|x| h.wd * x.3)
    }

    /// The state buffers with their PyTorch names (`momentum_buffer`; `exp_avg`, `exp_avg_sq`).
    pub fn state(&self) -> impl Iterator<Item = (&'static str, &B::Buf)> {
        self.rule.kind().state_names().iter().copied().zip(&self.state)
    }

    /// The state buffers, writable (to restore a checkpoint).
    pub fn state_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut B::Buf)> {
        self.rule.kind().state_names().iter().copied().zip(&mut self.state)
    }

    /// The state buffer called `name`, if this kind has one.
    pub fn buffer(&self, name: &str) -> Option<&B::Buf> {
        self.state().find(|(n, _)| *n == name).map(|(_, b)| b)
    }

    /// Steps taken (Adam's step count t).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Set the steps taken (when restoring a checkpoint).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// One step at `h`, whose rule must be this optimizer's kind. With `want_sums`, returns
    /// (tensor index, sums) for every trained tensor.
    pub fn step(
        &mut self,
        be: &B,
        h: &Hyper,
        params: &mut B::Buf,
        grads: &B::Buf,
        want_sums: bool,
    ) -> Result<Option<Vec<(usize, StepSums)>>> {
        let momentum = h.momentum();
        let segments: Vec<Segment> = self
            .trained
            .iter()
            .map(|&(_, offset, len, rel)| Segment { offset, len, lr: h.lr, wd: h.wd * rel, momentum })
            .collect();
        let segments = &segments[..];
        let mut sums = want_sums.then(|| vec![StepSums::default(); segments.len()]);
        let sums_arg = sums.as_deref_mut();
        let t = self.steps + 1;
        match (h.rule, &mut self.state[..]) {
            (Rule::Sgd { .. }, [momenta]) => {
                be.sgd_step(SgdStep { segments, params, grads, momenta, sums: sums_arg })?
            }
            (Rule::AdamW { beta1, beta2, eps } | Rule::Adam { beta1, beta2, eps }, [m, v]) => {
                let decoupled = matches!(h.rule, Rule::AdamW { .. });
                let hyper = AdamHyper { beta1, beta2, eps, t, decoupled };
                be.adam_step(AdamStep { segments, hyper, params, grads, m, v, sums: sums_arg })?
            }
            (Rule::Lion { beta1, beta2 }, [m]) => {
                let hyper = LionHyper { beta1, beta2 };
                be.lion_step(LionStep { segments, hyper, params, grads, m, sums: sums_arg })?
            }
            _ => bail!("a {} step was asked of a {} optimizer", h.rule.kind(), self.rule.kind()),
        }
        self.steps = t;
        Ok(sums.map(|s| self.trained.iter().map(|x| x.0).zip(s).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::ModelConfig;

    #[test]
    fn hyper_gives_lambda_e_momentum_and_each_rules_theory() {
        let h = Hyper::sgd(0.5, 4e-3, 0.9);
        assert_eq!((h.lambda_e(), h.momentum()), (0.5 * 4e-3, 0.9));
        let delta = h.angular_theory().unwrap();
        assert!((delta - (2.0 * 2e-3 / 1.9f64).sqrt()).abs() < 1e-15);
        // SGD's effective LR is η/‖w‖², the Adam family's η/‖w‖.
        assert_eq!(h.effective_lr(4.0), 0.5 / 4.0);
        let adamw = Hyper { lr: 1e-3, wd: 2.0, rule: Rule::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 } };
        assert_eq!((adamw.momentum(), adamw.effective_lr(4.0)), (0.0, 1e-3 / 2.0));
        assert!(adamw.angular_theory().is_some_and(|d| d > 0.0 && d != delta));
    }

    #[test]
    fn each_tensor_gets_its_groups_weight_decay() {
        let layout = Layout::new(&ModelConfig { depth: 8, width: 0.5, ..ModelConfig::default() }, 3, 8, 10);
        let mut cfg = OptimConfig { lr: 0.1, wd: Some(1e-3), wd_other: Some(0.0), ..OptimConfig::default() };
        cfg.group_wd.insert("layer2.0.conv1".into(), 5e-3);
        let opt = Optimizer::new(&Cpu::<f32>::new(), &cfg, &layout).unwrap();
        let h = opt.hyper_at(0.0);
        assert_eq!((h.lr, h.wd, opt.rule()), (0.1, 1e-3, cfg.rule()));
        assert_eq!(h, Hyper::sgd(0.1, 1e-3, cfg.momentum));
        let wd_of = |name: &str| opt.tensor_wd(layout.tensor_by_name(name).unwrap(), &h);
        assert_eq!(wd_of("layer1.0.conv1.weight"), Some(1e-3));
        assert!((wd_of("layer2.0.conv1.weight").unwrap() - 5e-3).abs() < 1e-18);
        assert_eq!(wd_of("fc.weight"), Some(0.0));
        let untrained = layout.tensors.iter().position(|t| !t.trainable);
        assert!(untrained.is_none_or(|t| opt.tensor_wd(t, &h).is_none()));
    }

    #[test]
    fn state_buffers_carry_each_kinds_pytorch_names() {
        let layout = Layout::new(&ModelConfig { depth: 8, width: 0.5, ..ModelConfig::default() }, 3, 8, 10);
        let be = Cpu::<f32>::new();
        for (kind, names) in [
            (OptimKind::Sgd, &["momentum_buffer"][..]),
            (OptimKind::AdamW, &["exp_avg", "exp_avg_sq"][..]),
            (OptimKind::Lion, &["exp_avg"][..]),
        ] {
            let momentum = if kind == OptimKind::Sgd { 0.9 } else { 0.0 };
            let cfg = OptimConfig { kind, lr: 1e-3, wd: Some(0.1), momentum, ..OptimConfig::default() };
            let mut opt = Optimizer::new(&be, &cfg, &layout).unwrap();
            let got: Vec<(&str, usize)> = opt.state().map(|(n, b)| (n, b.len())).collect();
            assert_eq!(got, names.iter().map(|&n| (n, layout.num_params)).collect::<Vec<_>>());
            let writable: Vec<&str> = opt.state_mut().map(|(n, _)| n).collect();
            assert_eq!(writable, names);
            assert!(opt.buffer(names[0]).is_some_and(|b| b.len() == layout.num_params));
            assert!(opt.buffer("nope").is_none());
        }
    }

    #[test]
    fn a_step_of_every_kind_decays_each_tensor_by_its_own_lambda_and_counts_itself() {
        // With zero gradients every kind's update is the decay alone (Adam's m̂/(√v̂ + ε) = 0 at
        // t = 1, Lion's sign(0) = 0; SGD's λw goes through the momentum buffer, which starts at 0):
        // w ← w(1 − ηλ_t) with λ_t the tensor's group λ. A wrong step count t = 0 would make Adam's
        // bias correction 0/0.
        let layout = Layout::new(&ModelConfig { depth: 8, width: 0.5, ..ModelConfig::default() }, 3, 8, 10);
        let be = Cpu::<f64>::new();
        let params: Vec<f64> = (0..layout.num_params).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect();
        let grads = vec![0.0; layout.num_params];
        let (g1, g2) = (
            layout.tensor_by_name("layer1.0.conv1.weight").unwrap(),
            layout.tensor_by_name("layer2.0.conv1.weight").unwrap(),
        );
        for kind in [OptimKind::Sgd, OptimKind::AdamW, OptimKind::Lion] {
            let mut cfg =
                OptimConfig { kind, lr: 0.01, wd: Some(2.0), momentum: 0.0, ..OptimConfig::default() };
            cfg.group_wd.insert("layer2.0.conv1".into(), 5.0);
            let mut opt = Optimizer::new(&be, &cfg, &layout).unwrap();
            let h = opt.hyper_at(0.0);
            let mut p = params.clone();
            let sums = opt.step(&be, &h, &mut p, &grads, true).unwrap().expect("sums were asked for");
            assert_eq!(opt.steps(), 1, "{kind:?}");
            assert_eq!(sums.len(), layout.tensors.iter().filter(|t| t.trainable).count());
            for (t, lambda) in [(g1, 2.0), (g2, 5.0)] {
                let r = layout.tensors[t].range();
                for (new, old) in p[r.clone()].iter().zip(&params[r]) {
                    assert!((new - old * (1.0 - 0.01 * lambda)).abs() < 1e-15, "{kind:?} {new} {old}");
                }
            }
            opt.set_steps(41);
            assert_eq!(opt.steps(), 41);
        }
    }
}
