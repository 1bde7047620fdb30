//! Learning-rate and weight-decay schedules, as functions of the (fractional) epoch.
//!
//! LR and WD are decayed independently, as in the paper: a run named `wd_x_y_lr_z_u` divides the WD
//! by 10 at epochs x and y and the LR by 10 at epochs z and u.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// η and λ constant throughout.
    #[default]
    Constant,
    /// Multiply the LR by `factor` at each epoch in `lr_epochs`, and the WD at each in `wd_epochs`.
    Step {
        #[serde(default)]
        lr_epochs: Vec<f64>,
        #[serde(default)]
        wd_epochs: Vec<f64>,
        #[serde(default = "default_factor")]
        factor: f64,
    },
    /// A first phase of `phase_epochs` with `decays` LR decays and `decays` WD decays at epochs drawn
    /// uniformly from (0, phase_epochs) by `seed`; then, from `phase_epochs` on, the common (η, λ) =
    /// (`common_lr`, `common_wd`), step-decayed at `lr_epochs`/`wd_epochs` counted from the phase's end.
    RandomThenCommon {
        phase_epochs: f64,
        #[serde(default = "default_decays")]
        decays: usize,
        seed: u64,
        #[serde(default = "default_factor")]
        factor: f64,
        common_lr: f64,
        common_wd: f64,
        #[serde(default)]
        lr_epochs: Vec<f64>,
        #[serde(default)]
        wd_epochs: Vec<f64>,
    },
}

fn default_factor() -> f64 {
    0.1
}
fn default_decays() -> usize {
    2
}

/// A resolved schedule: (η, λ) at any epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    base_lr: f64,
    base_wd: f64,
    factor: f64,
    lr_epochs: Vec<f64>,
    wd_epochs: Vec<f64>,
    common: Option<CommonPhase>,
}

/// The common phase after a random one: from epoch `start`, (η, λ) = (`lr`, `wd`), decayed at
/// `lr_epochs`/`wd_epochs` counted from `start`.
#[derive(Clone, Debug, PartialEq)]
struct CommonPhase {
    start: f64,
    lr: f64,
    wd: f64,
    lr_epochs: Vec<f64>,
    wd_epochs: Vec<f64>,
}

fn check_epochs(name: &str, v: &[f64]) -> Result<()> {
    if let Some(e) = v.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
        bail!("schedule.{name} contains {e}: decay epochs must be finite and ≥ 0");
    }
    Ok(())
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// factor^(number of decay epochs ≤ epoch)
fn decayed(base: f64, factor: f64, decays: &[f64], epoch: f64) -> f64 {
    decays.iter().filter(|&&d| d <= epoch).fold(base, |v, _| v * factor)
}

fn tag(v: &[f64]) -> String {
    v.iter().map(|e| format!("{e}")).collect::<Vec<_>>().join("_")
}

impl Schedule {
    pub fn new(cfg: &ScheduleConfig, base_lr: f64, base_wd: f64) -> Result<Self> {
        let check_factor = |f: f64| {
            if !(f.is_finite() && f > 0.0) {
                bail!("schedule.factor = {f} must be a positive number (0.1 divides by 10)");
            }
            Ok(())
        };
        Ok(match cfg {
            ScheduleConfig::Constant => {
                Self { base_lr, base_wd, factor: 1.0, lr_epochs: vec![], wd_epochs: vec![], common: None }
            }
            ScheduleConfig::Step { lr_epochs, wd_epochs, factor } => {
                check_epochs("lr_epochs", lr_epochs)?;
                check_epochs("wd_epochs", wd_epochs)?;
                check_factor(*factor)?;
                Self {
                    base_lr,
                    base_wd,
                    factor: *factor,
                    lr_epochs: sorted(lr_epochs.clone()),
                    wd_epochs: sorted(wd_epochs.clone()),
                    common: None,
                }
            }
            ScheduleConfig::RandomThenCommon {
                phase_epochs,
                decays,
                seed,
                factor,
                common_lr,
                common_wd,
                lr_epochs,
                wd_epochs,
            } => {
                if !(phase_epochs.is_finite() && *phase_epochs > 0.0) {
                    bail!("schedule.phase_epochs = {phase_epochs} must be a positive number of epochs");
                }
                if !(*common_lr > 0.0 && *common_wd >= 0.0) {
                    bail!("schedule.common_lr must be > 0 and schedule.common_wd ≥ 0");
                }
                check_factor(*factor)?;
                check_epochs("lr_epochs", lr_epochs)?;
                check_epochs("wd_epochs", wd_epochs)?;
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                let mut draw = || sorted((0..*decays).map(|_| rng.gen_range(0.0..*phase_epochs)).collect());
                let (wd_random, lr_random) = (draw(), draw());
                Self {
                    base_lr,
                    base_wd,
                    factor: *factor,
                    lr_epochs: lr_random,
                    wd_epochs: wd_random,
                    common: Some(CommonPhase {
                        start: *phase_epochs,
                        lr: *common_lr,
                        wd: *common_wd,
                        lr_epochs: sorted(lr_epochs.clone()),
                        wd_epochs: sorted(wd_epochs.clone()),
                    }),
                }
            }
        })
    }

    /// (η, λ) in force at `epoch`.
    pub fn at(&self, epoch: f64) -> (f64, f64) {
        match &self.common {
            Some(c) if epoch >= c.start => {
                let rel = epoch - c.start;
                (decayed(c.lr, self.factor, &c.lr_epochs, rel), decayed(c.wd, self.factor, &c.wd_epochs, rel))
            }
            _ => (
                decayed(self.base_lr, self.factor, &self.lr_epochs, epoch),
                decayed(self.base_wd, self.factor, &self.wd_epochs, epoch),
            ),
        }
    }

    /// The paper's name for the schedule: `wd_x_y_lr_z_u` (empty lists dropped), plus the common
    /// phase if any, e.g. `wd_3.1_40_lr_12_then_common@50`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if !self.wd_epochs.is_empty() {
            s += &format!("wd_{}", tag(&self.wd_epochs));
        }
        if !self.lr_epochs.is_empty() {
            s += &format!("{}lr_{}", if s.is_empty() { "" } else { "_" }, tag(&self.lr_epochs));
        }
        if s.is_empty() {
            s = "constant".into();
        }
        if let Some(c) = &self.common {
            s += &format!("_then_common@{}", c.start);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_decays_lr_and_wd_independently() {
        let cfg = ScheduleConfig::Step { lr_epochs: vec![20.0, 10.0], wd_epochs: vec![5.0], factor: 0.1 };
        let s = Schedule::new(&cfg, 1.0, 1e-3).unwrap();
        assert_eq!(s.at(0.0), (1.0, 1e-3));
        assert_eq!(s.at(5.0), (1.0, 1e-3 * 0.1));
        assert_eq!(s.at(10.0), (0.1, 1e-3 * 0.1));
        let (lr, _) = s.at(25.0);
        assert!((lr - 0.01).abs() < 1e-15);
        assert_eq!(s.describe(), "wd_5_lr_10_20");
    }

    #[test]
    fn random_phase_then_common() {
        let cfg = ScheduleConfig::RandomThenCommon {
            phase_epochs: 10.0,
            decays: 2,
            seed: 7,
            factor: 0.1,
            common_lr: 0.5,
            common_wd: 2e-3,
            lr_epochs: vec![1.0],
            wd_epochs: vec![],
        };
        let s = Schedule::new(&cfg, 0.1, 1e-4).unwrap();
        let again = Schedule::new(&cfg, 0.1, 1e-4).unwrap();
        assert_eq!(s, again, "same seed, same schedule");
        assert_eq!(s.lr_epochs.len(), 2);
        assert!(s.lr_epochs.iter().chain(&s.wd_epochs).all(|&e| (0.0..10.0).contains(&e)));
        assert!(s.at(9.99).0 <= 0.1 * 0.1 * 1.0000001);
        assert_eq!(s.at(10.0), (0.5, 2e-3));
        assert!((s.at(11.0).0 - 0.05).abs() < 1e-15);
        let mut other_cfg = cfg.clone();
        if let ScheduleConfig::RandomThenCommon { seed, .. } = &mut other_cfg {
            *seed = 8;
        }
        let other = Schedule::new(&other_cfg, 0.1, 1e-4).unwrap();
        assert_ne!(s.lr_epochs, other.lr_epochs);
    }

    /// A config that leaves them out gets the paper's defaults: decays divide by 10, and the random
    /// phase draws 2 LR and 2 WD decays.
    #[test]
    fn defaults_divide_by_ten_with_two_random_decays() {
        let step: ScheduleConfig = toml::from_str("kind = \"step\"\nlr_epochs = [1.0]").unwrap();
        assert_eq!(step, ScheduleConfig::Step { lr_epochs: vec![1.0], wd_epochs: vec![], factor: 0.1 });
        let random: ScheduleConfig = toml::from_str(
            "kind = \"random-then-common\"\nphase_epochs = 10.0\nseed = 1\ncommon_lr = 0.1\ncommon_wd = 1e-4",
        )
        .unwrap();
        let ScheduleConfig::RandomThenCommon { decays, factor, .. } = random else { panic!("{random:?}") };
        assert_eq!((decays, factor), (2, 0.1));
    }

    #[test]
    fn rejects_bad_values() {
        for e in [f64::NAN, -1.0, f64::INFINITY] {
            let bad = ScheduleConfig::Step { lr_epochs: vec![e], wd_epochs: vec![], factor: 0.1 };
            assert!(Schedule::new(&bad, 0.1, 0.0).unwrap_err().to_string().contains("lr_epochs"), "{e}");
        }
        let bad = ScheduleConfig::Step { lr_epochs: vec![], wd_epochs: vec![], factor: 0.0 };
        assert!(Schedule::new(&bad, 0.1, 0.0).unwrap_err().to_string().contains("factor"));
    }
}
