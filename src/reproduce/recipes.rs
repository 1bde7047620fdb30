//! The named recipes: the claim each tests and its sweep specs (experiments/<name>.<scale>.toml,
//! embedded so that `ilr reproduce` works from any directory).

use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    AngularUpdate,
    FastEquilibrium,
    FastEquilibriumAdamw,
    IntrinsicLr,
    ScheduleIndependence,
    SmallLr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// Minutes on 2 CPU cores: PreResNet-8 ×0.5 on small synthetic images, large λ_e.
    Tiny,
    /// About an hour per recipe on 2 CPU cores on real CIFAR-10 (needs --data): PreResNet-8 ×0.5,
    /// batch 64, a 10,000-image training subset.
    Small,
    /// The paper's setting: PreResNet-32 on CIFAR-10, batch 128, η = 0.1, λ = 5e-4 (a GPU job).
    Paper,
}

impl Recipe {
    pub const ALL: [Recipe; 6] = [
        Recipe::AngularUpdate,
        Recipe::FastEquilibrium,
        Recipe::FastEquilibriumAdamw,
        Recipe::IntrinsicLr,
        Recipe::ScheduleIndependence,
        Recipe::SmallLr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Recipe::AngularUpdate => "angular-update",
            Recipe::FastEquilibrium => "fast-equilibrium",
            Recipe::FastEquilibriumAdamw => "fast-equilibrium-adamw",
            Recipe::IntrinsicLr => "intrinsic-lr",
            Recipe::ScheduleIndependence => "schedule-independence",
            Recipe::SmallLr => "small-lr",
        }
    }

    pub fn claim(self) -> &'static str {
        match self {
            Recipe::AngularUpdate => {
                "At constant (η, λ, γ) the angular update of every scale-invariant group and tensor converges to \
                 Δ* = sqrt(2ηλ/(1+γ)) (within 10%); likewise under AdamW and Lion to their rotational-equilibrium \
                 Δ* (docs/OPTIMIZERS.md), and Adam with coupled L2 has no such prediction (the control)."
            }
            Recipe::FastEquilibrium => {
                "Equilibrium is reached within O(1/λ_e) steps, up to log factors (an upper bound): over a sweep of \
                 λ_e, T_eq·λ_e stays bounded up to a log factor and curves collapse against steps·λ_e, in \
                 parameter space and in function space. (A slope of log T_eq on log(1/λ_e) below 1 does not \
                 refute it.)"
            }
            Recipe::FastEquilibriumAdamw => {
                "Under AdamW (decoupled weight decay), equilibrium is reached within O(1/(ηλ)) steps up to log \
                 factors (Wang and Aitchison's EMA timescale): over λ at fixed η, T_eq·ηλ stays bounded up to a \
                 log factor, with matched initial norms, and the norm's log term where the init is large. T_eq \
                 is measured against each group's own plateau (equilibrium.reference = \"plateau\"), since the \
                 nets do not reach AdamW's predicted Δ* in every group (angular-update)."
            }
            Recipe::IntrinsicLr => {
                "Runs with the same λ_e = ηλ but different (η, λ) reach the same equilibrium in accuracy, effective \
                 LR and angular update, within noise; a run with a different λ_e does not."
            }
            Recipe::ScheduleIndependence => {
                "Runs with different random LR/WD schedules in a first phase, then a common (η, λ), converge to the \
                 same train/test accuracy, weight norm and effective LR within O(1/λ_e) steps."
            }
            Recipe::SmallLr => {
                "A small initial LR reaches the same equilibrium as a large one once given O(1/λ_e) steps; so does a \
                 small LR throughout at the same λ_e."
            }
        }
    }

    /// The recipe (a sweep spec in TOML, perhaps with a `[reproduce]` table) of this claim at
    /// `scale`; None where the scale has no recipe for it yet.
    pub fn spec(self, scale: Scale) -> Option<&'static str> {
        use Recipe::*;
        use Scale::*;
        Some(match (self, scale) {
            (AngularUpdate, Tiny) => include_str!("../../experiments/angular-update.tiny.toml"),
            (AngularUpdate, Paper) => include_str!("../../experiments/angular-update.paper.toml"),
            (FastEquilibrium, Tiny) => include_str!("../../experiments/fast-equilibrium.tiny.toml"),
            (FastEquilibrium, Paper) => include_str!("../../experiments/fast-equilibrium.paper.toml"),
            (FastEquilibriumAdamw, Tiny) => {
                include_str!("../../experiments/fast-equilibrium-adamw.tiny.toml")
            }
            (FastEquilibriumAdamw, Paper) => {
                include_str!("../../experiments/fast-equilibrium-adamw.paper.toml")
            }
            (IntrinsicLr, Tiny) => include_str!("../../experiments/intrinsic-lr.tiny.toml"),
            (IntrinsicLr, Paper) => include_str!("../../experiments/intrinsic-lr.paper.toml"),
            (ScheduleIndependence, Tiny) => include_str!("../../experiments/schedule-independence.tiny.toml"),
            (ScheduleIndependence, Paper) => {
                include_str!("../../experiments/schedule-independence.paper.toml")
            }
            (SmallLr, Tiny) => include_str!("../../experiments/small-lr.tiny.toml"),
            (SmallLr, Paper) => include_str!("../../experiments/small-lr.paper.toml"),
            (FastEquilibrium, Small) => include_str!("../../experiments/fast-equilibrium.small.toml"),
            (_, Small) => return None,
        })
    }

    pub fn parse(name: &str) -> Result<Self> {
        match Recipe::ALL.into_iter().find(|r| r.name() == name) {
            Some(r) => Ok(r),
            None => {
                bail!("unknown recipe {name:?}; the recipes are {}", Recipe::ALL.map(|r| r.name()).join(", "))
            }
        }
    }
}

impl Scale {
    pub const ALL: [Scale; 3] = [Scale::Tiny, Scale::Small, Scale::Paper];

    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::Paper => "paper",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Spec;

    #[test]
    fn every_spec_expands_and_tiny_specs_train_on_synthetic_data() {
        for r in Recipe::ALL {
            for scale in Scale::ALL {
                let Some(text) = r.spec(scale) else {
                    assert_eq!(
                        scale,
                        Scale::Small,
                        "{}: tiny and paper recipes exist for every claim",
                        r.name()
                    );
                    continue;
                };
                let (doc, _) = super::super::derived::split(text).unwrap();
                let spec = Spec::parse(&toml::to_string(&doc).unwrap(), r.name()).unwrap();
                let runs = spec.expand().unwrap_or_else(|e| panic!("{} {}: {e:#}", r.name(), scale.name()));
                assert!(runs.len() >= 2, "{}: a recipe compares runs", r.name());
                for run in &runs {
                    let c = &run.config;
                    match scale {
                        Scale::Tiny => assert!(c.data.dir.is_none() && c.model.depth == 8),
                        Scale::Small => assert!(c.data.train_limit.is_some() && c.model.depth <= 14),
                        Scale::Paper => {
                            assert_eq!((c.model.depth, c.train.batch_size), (32, 128));
                            assert!(c.model.scale_invariant);
                        }
                    }
                }
            }
            assert_eq!(Recipe::parse(r.name()).unwrap(), r);
        }
        assert!(Recipe::parse("nope").unwrap_err().to_string().contains("angular-update"));
    }

    /// The control specs (experiments/controls/) are plain sweep specs: 3 init-norm arms × 3 λ_e × 4
    /// seeds, the derived arms' runs written out with their init_norm.
    #[test]
    fn the_fast_equilibrium_control_expands_to_three_arms_of_four_seeds() {
        let text = include_str!("../../experiments/controls/fast-equilibrium-4-seeds.toml");
        let runs = Spec::parse(text, "control").unwrap().expand().unwrap();
        assert_eq!(runs.len(), 36);
        let arm = |r: &&crate::sweep::PlannedRun| crate::report::init_arm(&r.config.model);
        for name in ["default", "matched", "large"] {
            assert_eq!(runs.iter().filter(|r| arm(r) == name).count(), 12, "{name}");
        }
    }

    /// The momentum control pairs γ = 0 and γ = 0.9 at the same relaxation rate ρ = λ_e/(1 − γ) and the
    /// same λ, with 8/ρ steps in both arms.
    #[test]
    fn the_momentum_control_matches_the_relaxation_rate_of_its_two_arms() {
        let text = include_str!("../../experiments/controls/fast-equilibrium-momentum.toml");
        let runs = Spec::parse(text, "control").unwrap().expand().unwrap();
        assert_eq!(runs.len(), 24);
        let rate = |r: &crate::sweep::PlannedRun| {
            let o = &r.config.optim;
            crate::stats::relaxation_rate(o.lambda_e().unwrap(), o.momentum)
        };
        let (plain, heavy): (Vec<_>, Vec<_>) = runs.iter().partition(|r| r.config.optim.momentum == 0.0);
        assert_eq!((plain.len(), heavy.len()), (12, 12));
        for (a, b) in plain.iter().zip(&heavy) {
            assert!((rate(a) / rate(b) - 1.0).abs() < 1e-12);
            let wd = |r: &crate::sweep::PlannedRun| r.config.optim.lambda_e().unwrap() / r.config.optim.lr;
            assert!((wd(a) / wd(b) - 1.0).abs() < 1e-12);
            assert_eq!(a.config.train.steps, b.config.train.steps);
            assert!((a.config.train.steps as f64 * rate(a) - 8.0).abs() < 0.01);
        }
    }
}
