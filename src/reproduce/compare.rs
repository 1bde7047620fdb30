//! Do two arms sit at the same equilibrium? Per metric: the arms' means over seeds, and a tolerance
//! from the noise.
//!
//! Noise of a metric: the pooled seed-to-seed standard deviation within arms when some arm has two or
//! more seeds, else the mean temporal standard deviation over the runs' final windows. Two arm means
//! agree when |a − b| ≤ max(3·noise·sqrt(1/n_a + 1/n_b), floor), with floors that reflect what
//! "the same" can mean at all on a finite test set and a drifting run: 10% relative for the scale
//! quantities (‖w‖, η/‖w‖², Δ), 5% relative for losses, 2 points absolute for accuracies.

use super::state::{metric, EqState};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ArmMean {
    pub arm: String,
    pub seeds: usize,
    pub mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricComparison {
    pub metric: String,
    pub arms: Vec<ArmMean>,
    pub noise: f64,
    /// Largest |difference| between two arm means, and the tolerance it is held to.
    pub max_gap: f64,
    pub tolerance: f64,
    pub agree: bool,
}

fn floor(metric: &str, scale: f64) -> f64 {
    match metric {
        "train_acc" | "test_acc" => 0.02,
        "train_loss" | "test_loss" => 0.05 * scale.abs(),
        _ => 0.10 * scale.abs(),
    }
}

/// Compare `metric` across the arms of `states` (arms in first-seen order).
pub fn compare(states: &[&EqState], name: &str) -> Option<MetricComparison> {
    let mut arms: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for s in states {
        let v = metric(s, name)?;
        let sd = s.sd.get(name).copied().unwrap_or(0.0);
        match arms.iter_mut().find(|a| a.0 == s.arm) {
            Some(a) => {
                a.1.push(v);
                a.2.push(sd);
            }
            None => arms.push((s.arm.clone(), vec![v], vec![sd])),
        }
    }
    if arms.len() < 2 {
        return None;
    }
    let (mut ss, mut dof) = (0.0, 0usize);
    for (_, v, _) in &arms {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        ss += v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        dof += v.len() - 1;
    }
    let noise = if dof > 0 {
        (ss / dof as f64).sqrt()
    } else {
        let all: Vec<f64> = arms.iter().flat_map(|a| a.2.iter().copied()).collect();
        all.iter().sum::<f64>() / all.len() as f64
    };
    let means: Vec<ArmMean> = arms
        .iter()
        .map(|(arm, v, _)| ArmMean {
            arm: arm.clone(),
            seeds: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
        .collect();
    let scale = means.iter().map(|m| m.mean.abs()).sum::<f64>() / means.len() as f64;
    let (mut max_gap, mut tolerance) = (0.0f64, f64::INFINITY);
    for i in 0..means.len() {
        for j in i + 1..means.len() {
            let gap = (means[i].mean - means[j].mean).abs();
            let tol = (3.0 * noise * (1.0 / means[i].seeds as f64 + 1.0 / means[j].seeds as f64).sqrt())
                .max(floor(name, scale));
            if gap - tol > max_gap - tolerance || max_gap == 0.0 {
                max_gap = gap;
                tolerance = tol;
            }
        }
    }
    Some(MetricComparison {
        metric: name.to_string(),
        arms: means,
        noise,
        max_gap,
        tolerance,
        agree: max_gap <= tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state(arm: &str, seed: u64, eff: f64) -> EqState {
        EqState {
            run_id: format!("{arm}-{seed}"),
            arm: arm.into(),
            seed,
            lr: 0.1,
            wd: 0.01,
            momentum: 0.0,
            lambda_e: 1e-3,
            phase_start: 0,
            window: [0, 1],
            group: "stream".into(),
            train_acc: 0.5,
            train_loss: 1.0,
            test_acc: Some(0.5),
            test_loss: Some(1.0),
            norm: 1.0,
            effective_lr: eff,
            angular_update: 0.1,
            angular_ratio: Some(1.0),
            sd: BTreeMap::new(),
            t_eq_steps: None,
        }
    }

    #[test]
    fn agreement_is_judged_against_seed_noise_and_floors() {
        let same = [state("a", 0, 1.00), state("a", 1, 1.04), state("b", 0, 1.02), state("b", 1, 0.98)];
        let c = compare(&same.iter().collect::<Vec<_>>(), "effective_lr").unwrap();
        assert!(c.agree, "{c:?}");
        let differ = [state("a", 0, 1.00), state("a", 1, 1.01), state("b", 0, 2.0), state("b", 1, 2.02)];
        let c = compare(&differ.iter().collect::<Vec<_>>(), "effective_lr").unwrap();
        assert!(!c.agree && (c.max_gap - 1.005).abs() < 1e-9, "{c:?}");
        assert!(compare(&[&same[0], &same[1]], "effective_lr").is_none(), "one arm: nothing to compare");
    }
}
