//! What a run's equilibrium looks like: means over the final window of its last (η, λ, γ) phase.

use crate::optim::Schedule;
use crate::report::collect::RunInfo;
use crate::report::figures::main_group;
use crate::report::table::{differing_keys, flatten};
use crate::train::MetricsRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// The last quarter of the final phase is averaged.
const FINAL_FRACTION: f64 = 0.25;

/// A run at the end of training, averaged over the final window. Scale quantities are those of the
/// run's main scale-invariant group (the residual stream for option-A nets).
#[derive(Clone, Debug, Serialize)]
pub struct EqState {
    pub run_id: String,
    /// The run's arm: its config keys that differ from the other runs', the seed left out.
    pub arm: String,
    pub seed: u64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub lambda_e: f64,
    /// First step of the final phase (the last change of (η, λ, γ)) and the averaging window.
    pub phase_start: u64,
    pub window: [u64; 2],
    pub group: String,
    pub train_acc: f64,
    pub train_loss: f64,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub norm: f64,
    pub effective_lr: f64,
    pub angular_update: f64,
    pub angular_ratio: Option<f64>,
    /// Temporal standard deviation of each metric over the window (a noise scale for runs without
    /// a second seed).
    pub sd: BTreeMap<String, f64>,
    pub t_eq_steps: Option<u64>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// The arm labels of `runs`: the flattened config keys whose values differ between runs, without
/// the seed and the bookkeeping keys; a differing schedule is named once, by its short description.
pub fn arms(runs: &[&RunInfo]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, String>> = runs.iter().map(|r| flatten(&r.config)).collect();
    let bookkeeping = |k: &str| k == "seed" || k == "data.synthetic.seed" || k.starts_with("train.");
    let mut keys = differing_keys(&flat);
    keys.retain(|k| !bookkeeping(k));
    let schedule_varies = keys.iter().any(|k| k.starts_with("optim.schedule"));
    keys.retain(|k| !k.starts_with("optim.schedule"));
    runs.iter()
        .zip(&flat)
        .map(|(r, f)| {
            let mut parts: Vec<String> = keys
                .iter()
                .filter_map(|k| {
                    f.get(k).map(|v| format!("{}={}", k.trim_start_matches("optim."), v.trim_matches('"')))
                })
                .collect();
            if schedule_varies {
                let o = &r.config.optim;
                let name = Schedule::new(&o.schedule, o.lr, o.base_wd().unwrap_or(0.0))
                    .map_or_else(|_| format!("{:?}", o.schedule), |s| s.describe());
                parts.push(format!("schedule={name}"));
            }
            if parts.is_empty() {
                "all".into()
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

/// The equilibrium state of one run from its metrics; None without records.
pub fn eq_state(run: &RunInfo, arm: &str, recs: &[MetricsRecord]) -> Option<EqState> {
    let last = recs.last()?;
    let hyper = |r: &MetricsRecord| (r.lr, r.wd, r.momentum);
    let phase_start = recs.iter().rev().take_while(|r| hyper(r) == hyper(last)).last().map_or(0, |r| r.step);
    let from = last.step - ((last.step - phase_start) as f64 * FINAL_FRACTION) as u64;
    let window: Vec<&MetricsRecord> = recs.iter().filter(|r| r.step >= from).collect();
    let g = main_group(recs)?;
    let col = |f: &dyn Fn(&MetricsRecord) -> Option<f64>| -> Vec<f64> {
        window.iter().filter_map(|r| f(r)).filter(|v| v.is_finite()).collect()
    };
    let mut sd = BTreeMap::new();
    let mut stat = |name: &str, f: &dyn Fn(&MetricsRecord) -> Option<f64>| -> Option<f64> {
        let v = col(f);
        if v.is_empty() {
            return None;
        }
        let (m, s) = mean_sd(&v);
        sd.insert(name.to_string(), s);
        Some(m)
    };
    let gs = |r: &MetricsRecord| r.groups.get(g).map(|x| x.stats.clone());
    let train_acc = stat("train_acc", &|r| Some(r.train_acc))?;
    let train_loss = stat("train_loss", &|r| Some(r.train_loss))?;
    let test_acc = stat("test_acc", &|r| r.test_acc);
    let test_loss = stat("test_loss", &|r| r.test_loss);
    let norm = stat("norm", &|r| gs(r).map(|s| s.norm))?;
    let effective_lr = stat("effective_lr", &|r| gs(r).map(|s| s.effective_lr))?;
    let angular_update = stat("angular_update", &|r| gs(r).map(|s| s.angular_update))?;
    let theory = gs(last).and_then(|s| s.angular_theory);
    Some(EqState {
        run_id: run.id.clone(),
        arm: arm.to_string(),
        seed: run.config.seed,
        lr: last.lr,
        wd: last.wd,
        momentum: last.momentum,
        lambda_e: last.lambda_e,
        phase_start,
        window: [window.first().map_or(from, |r| r.step), last.step],
        group: last.groups[g].stats.name.clone(),
        train_acc,
        train_loss,
        test_acc,
        test_loss,
        norm,
        effective_lr,
        angular_update,
        angular_ratio: theory.filter(|t| *t > 0.0).map(|t| angular_update / t),
        sd,
        t_eq_steps: run.summary.as_ref().and_then(|s| s.t_eq_steps),
    })
}

/// One metric of an [`EqState`] by name.
pub fn metric(s: &EqState, name: &str) -> Option<f64> {
    match name {
        "train_acc" => Some(s.train_acc),
        "train_loss" => Some(s.train_loss),
        "test_acc" => s.test_acc,
        "test_loss" => s.test_loss,
        "norm" => Some(s.norm),
        "effective_lr" => Some(s.effective_lr),
        "angular_update" => Some(s.angular_update),
        _ => None,
    }
}
