//! Function-space equilibrium across runs that share (η, λ, γ) from some step on but started
//! differently (other seeds, or other schedules in a first phase).
//!
//! Runs are grouped when their configs agree except for the seed, η, λ/λ_e and the schedule, and
//! their last records have the same (η, λ, γ). S, the start of the common phase, is the latest step
//! at which any of them last changed (η, λ, γ). At every evaluation step t ≥ S that all runs have,
//! over all pairs of runs:
//! - acc_gap(t)  = mean |test acc_i − test acc_j|,
//! - loss_gap(t) = mean |test loss_i − test loss_j|,
//! - disagreement(t) = mean fraction of test samples whose predicted classes differ.
//!
//! The reference window W is the last quarter of those steps (at least one), where the runs are taken
//! to be at equilibrium: there each metric's level F (its mean over W) is the seed-to-seed noise, and
//! F for the disagreement is that of two independent runs at equilibrium. A metric is within noise at
//! t when m(t) ≤ F + 3·max(sd over W, σ_sample), with σ_sample the binomial standard error on N
//! test samples (sqrt(2p(1−p)/N) for the accuracy gap at mean accuracy p, sqrt(F(1−F)/N) for the
//! disagreement, 0 for the loss). T_fs is the first evaluation step from which all three stay
//! within noise; reported as T_fs − S, (T_fs − S)·λ_e and (T_fs − S)·λ_e/(1 − γ) (in units of (1 − γ)/λ_e).
//!
//! Informative groups. Two independent classifiers with accuracies p_i, p_j over K classes, each
//! spreading its errors uniformly over the K − 1 wrong classes, agree on an image when both are right
//! (p_i·p_j) or both wrong in the same way ((1 − p_i)(1 − p_j)/(K − 1)), so they disagree on
//! c = 1 − p_i·p_j − (1 − p_i)(1 − p_j)/(K − 1) of the images (0.83 at p = 35%, 0.28 at 85%, K = 10).
//! That is the chance level: runs that disagree that much share nothing beyond their accuracy. With
//! p_i each run's mean test accuracy over W and c the mean over pairs, a group is informative when
//! F ≤ [`INFORMATIVE_FRACTION_OF_CHANCE`]·c = 0.75·c: the seeds' shared function removes at least a
//! quarter of the disagreement that chance would leave. Why 0.75 and not 0.5: independently trained
//! networks typically disagree on about their test error e = 1 − p (the generalization-disagreement
//! equality, Jiang et al., ICLR 2022), and against c = 2e − e²·K/(K − 1) that is a ratio
//! F/c = 1/(2 − e·K/(K − 1)), above 0.5 for every e > 0: a cutoff of 0.5 would call every such pair
//! uninformative, at any accuracy. 0.75 passes them from 40% accuracy up (K = 10: e ≤ 0.6) and fails
//! groups that share less than trained networks do. Above the cutoff the runs' equilibrium is mostly
//! the noise of the dynamics (a lower λ_e or a net that learns the task brings it down), and T_fs
//! only says how soon noise looks like noise. The margin 0.25·c is far outside sampling noise: the
//! binomial SE of a disagreement c on N test images,
//! sqrt(c(1 − c)/N), is at most 0.011 at N = 2000. Fits of T_fs leave uninformative groups out.

use super::collect::RunInfo;
use crate::train::{MetricsRecord, Predictions};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// See the module doc: a group is informative when its equilibrium disagreement is at most this
/// fraction of the chance disagreement at the runs' accuracy ([`chance_disagreement`]).
pub const INFORMATIVE_FRACTION_OF_CHANCE: f64 = 0.75;

/// c = 1 − p_i·p_j − (1 − p_i)(1 − p_j)/(K − 1): the fraction of images on which two independent
/// classifiers with accuracies p_i and p_j over K classes (errors spread uniformly) disagree. NaN
/// for K < 2.
pub fn chance_disagreement(p_i: f64, p_j: f64, classes: usize) -> f64 {
    if classes < 2 {
        return f64::NAN;
    }
    1.0 - p_i * p_j - (1.0 - p_i) * (1.0 - p_j) / (classes - 1) as f64
}

/// Informative: the disagreement floor is at most [`INFORMATIVE_FRACTION_OF_CHANCE`] of chance
/// (false when the chance level is not positive or not finite).
pub fn is_informative(floor: f64, chance: f64) -> bool {
    chance > 0.0 && floor <= INFORMATIVE_FRACTION_OF_CHANCE * chance
}

/// The three gaps at one evaluation step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Gaps {
    pub acc_gap: f64,
    pub loss_gap: f64,
    pub disagreement: f64,
}

impl Gaps {
    fn all_le(&self, t: &Gaps) -> bool {
        self.acc_gap <= t.acc_gap && self.loss_gap <= t.loss_gap && self.disagreement <= t.disagreement
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub step: u64,
    pub steps_since_common: u64,
    #[serde(flatten)]
    pub gaps: Gaps,
    pub within_noise: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupResult {
    pub label: String,
    pub runs: Vec<String>,
    /// (η, λ, γ) shared from `common_from` on.
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub lambda_e: f64,
    pub common_from: u64,
    pub test_samples: usize,
    /// [first, last] step of the reference window.
    pub reference_window: [u64; 2],
    pub floor: Gaps,
    pub threshold: Gaps,
    pub t_fs: Option<u64>,
    pub t_fs_since_common: Option<u64>,
    pub t_fs_lambda_e: Option<f64>,
    /// (T_fs − S)·λ_e/(1 − γ): T_fs − S in units of (1 − γ)/λ_e ([`crate::stats::relaxation_rate`]).
    pub t_fs_units: Option<f64>,
    /// Whether T_fs comes before the reference window (else equilibrium is not clearly shown:
    /// train longer).
    pub reached_before_reference: bool,
    /// K, the number of classes the predictions range over.
    pub classes: usize,
    /// Mean test accuracy of the runs over the reference window.
    pub test_accuracy: f64,
    /// c: the disagreement of two independent classifiers at the runs' accuracies (mean over pairs
    /// of [`chance_disagreement`] of each run's mean test accuracy over the reference window).
    pub chance_disagreement: f64,
    /// floor.disagreement / chance_disagreement.
    pub disagreement_to_chance: f64,
    /// disagreement_to_chance ≤ [`INFORMATIVE_FRACTION_OF_CHANCE`] (see the module doc).
    pub informative: bool,
    pub points: Vec<Point>,
}

impl GroupResult {
    /// "61% of the test images, 0.80 × chance (76% for two independent classifiers at 45% test
    /// accuracy over 10 classes)": the equilibrium disagreement against chance.
    pub fn chance_text(&self) -> String {
        format!(
            "{:.0}% of the test images, {:.2} × chance ({:.0}% for two independent classifiers at {:.0}% test \
             accuracy over {} classes)",
            100.0 * self.floor.disagreement,
            self.disagreement_to_chance,
            100.0 * self.chance_disagreement,
            100.0 * self.test_accuracy,
            self.classes
        )
    }
}

/// What one run contributes.
pub struct RunData<'a> {
    pub info: &'a RunInfo,
    pub metrics: &'a [MetricsRecord],
    pub predictions: &'a Predictions,
}

fn hyper(r: &MetricsRecord) -> (f64, f64, f64) {
    (r.lr, r.wd, r.momentum)
}

/// Config with the keys that may differ inside a group removed, plus the final (η, λ, γ).
fn group_key(d: &RunData) -> Option<String> {
    let last = d.metrics.last()?;
    let mut v = serde_json::to_value(&d.info.config).ok()?;
    v.as_object_mut()?.remove("seed");
    let optim = v.get_mut("optim")?.as_object_mut()?;
    for k in ["lr", "wd", "lambda_e", "schedule"] {
        optim.remove(k);
    }
    v.get_mut("train")?.as_object_mut()?.remove("device");
    Some(format!("{v}|{:?}", hyper(last)))
}

/// Step from which the run's (η, λ, γ) equals its final one (to the logging resolution).
fn phase_start(m: &[MetricsRecord]) -> u64 {
    let Some(last) = m.last() else { return 0 };
    m.iter().rev().find(|r| hyper(r) != hyper(last)).map_or(0, |r| r.step)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v.iter().copied());
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Analyse one group (≥ 2 runs); None when they share fewer than 2 evaluation steps.
fn analyse(label: String, runs: &[&RunData]) -> Option<GroupResult> {
    let s = runs.iter().map(|d| phase_start(d.metrics)).max()?;
    let n = runs[0].predictions.samples;
    if runs.iter().any(|d| d.predictions.samples != n) {
        return None;
    }
    let tests: Vec<BTreeMap<u64, (f64, f64)>> = runs
        .iter()
        .map(|d| d.metrics.iter().filter_map(|r| Some((r.step, (r.test_acc?, r.test_loss?)))).collect())
        .collect();
    let steps: Vec<u64> = runs[0]
        .predictions
        .steps
        .iter()
        .copied()
        .filter(|&t| t >= s)
        .filter(|t| {
            runs.iter().all(|d| d.predictions.at_step(*t).is_some())
                && tests.iter().all(|m| m.contains_key(t))
        })
        .collect();
    if steps.len() < 2 {
        return None;
    }
    let pairs: Vec<(usize, usize)> =
        (0..runs.len()).flat_map(|i| (i + 1..runs.len()).map(move |j| (i, j))).collect();
    let gaps: Vec<Gaps> = steps
        .iter()
        .map(|t| {
            let preds: Vec<&[u8]> =
                runs.iter().map(|d| d.predictions.at_step(*t).expect("filtered")).collect();
            let at = |k: usize| tests[k][t];
            Gaps {
                acc_gap: mean(pairs.iter().map(|&(i, j)| (at(i).0 - at(j).0).abs())),
                loss_gap: mean(pairs.iter().map(|&(i, j)| (at(i).1 - at(j).1).abs())),
                disagreement: mean(pairs.iter().map(|&(i, j)| {
                    preds[i].iter().zip(preds[j]).filter(|(a, b)| a != b).count() as f64 / n.max(1) as f64
                })),
            }
        })
        .collect();
    let w0 = steps.len() - steps.len().div_ceil(4);
    let win = &gaps[w0..];
    let col = |f: fn(&Gaps) -> f64| win.iter().map(f).collect::<Vec<f64>>();
    let (acc, loss, dis) = (col(|g| g.acc_gap), col(|g| g.loss_gap), col(|g| g.disagreement));
    let floor = Gaps {
        acc_gap: mean(acc.iter().copied()),
        loss_gap: mean(loss.iter().copied()),
        disagreement: mean(dis.iter().copied()),
    };
    let p = mean(steps[w0..].iter().flat_map(|t| tests.iter().map(move |m| m[t].0)));
    // Each run's mean test accuracy over W, and the chance disagreement of its pairs.
    let acc_w: Vec<f64> = tests.iter().map(|m| mean(steps[w0..].iter().map(|t| m[t].0))).collect();
    let classes = runs[0].predictions.classes;
    let chance = mean(pairs.iter().map(|&(i, j)| chance_disagreement(acc_w[i], acc_w[j], classes)));
    let nf = n.max(1) as f64;
    let threshold = Gaps {
        acc_gap: floor.acc_gap + 3.0 * sd(&acc).max((2.0 * p * (1.0 - p) / nf).sqrt()),
        loss_gap: floor.loss_gap + 3.0 * sd(&loss),
        disagreement: floor.disagreement
            + 3.0 * sd(&dis).max((floor.disagreement * (1.0 - floor.disagreement) / nf).sqrt()),
    };
    let within: Vec<bool> = gaps.iter().map(|g| g.all_le(&threshold)).collect();
    // First index from which every later point is within noise.
    let first = (0..within.len()).rev().take_while(|&k| within[k]).last();
    let t_fs = first.map(|k| steps[k]);
    let last = runs[0].metrics.last().expect("grouped runs have records");
    let lambda_e = last.lr * last.wd;
    Some(GroupResult {
        label,
        runs: runs.iter().map(|d| d.info.id.clone()).collect(),
        lr: last.lr,
        wd: last.wd,
        momentum: last.momentum,
        lambda_e,
        common_from: s,
        test_samples: n,
        reference_window: [steps[w0], *steps.last().expect("≥ 2")],
        floor,
        threshold,
        t_fs,
        t_fs_since_common: t_fs.map(|t| t - s),
        t_fs_lambda_e: t_fs.map(|t| (t - s) as f64 * lambda_e),
        t_fs_units: t_fs.map(|t| (t - s) as f64 * crate::stats::relaxation_rate(lambda_e, last.momentum)),
        reached_before_reference: first.is_some_and(|k| k < w0),
        classes,
        test_accuracy: p,
        chance_disagreement: chance,
        disagreement_to_chance: floor.disagreement / chance,
        informative: is_informative(floor.disagreement, chance),
        points: steps
            .iter()
            .zip(&gaps)
            .zip(&within)
            .map(|((&step, &gaps), &w)| Point { step, steps_since_common: step - s, gaps, within_noise: w })
            .collect(),
    })
}

/// Group the runs and analyse every group of two or more.
pub fn function_space(runs: &[RunData]) -> Result<Vec<GroupResult>> {
    let mut groups: Vec<(String, Vec<&RunData>)> = Vec::new();
    for d in runs {
        let Some(k) = group_key(d) else { continue };
        match groups.iter_mut().find(|(key, _)| *key == k) {
            Some((_, v)) => v.push(d),
            None => groups.push((k, vec![d])),
        }
    }
    Ok(groups
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .filter_map(|(_, v)| {
            let last = v[0].metrics.last()?;
            let label = format!(
                "η={} λ={:.3e} γ={} (λ_e={:.2e}), {} runs",
                last.lr,
                last.wd,
                last.momentum,
                last.lr * last.wd,
                v.len()
            );
            analyse(label, &v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_noise_from_the_first_step_after_the_last_excursion() {
        let g = |a: f64| Gaps { acc_gap: a, loss_gap: 0.0, disagreement: 0.0 };
        let t = g(0.1);
        let within: Vec<bool> = [0.5, 0.05, 0.3, 0.05, 0.08, 0.09].iter().map(|&a| g(a).all_le(&t)).collect();
        let first = (0..within.len()).rev().take_while(|&k| within[k]).last();
        assert_eq!(first, Some(3));
        assert_eq!(sd(&[1.0, 3.0]), 2f64.sqrt());
    }

    /// By hand, K = 10: p = 0.35: 1 − 0.1225 − 0.4225/9 = 0.830556; p = 0.85: 1 − 0.7225 − 0.0225/9
    /// = 0.275; p = 0.5 and 0.7: 1 − 0.35 − 0.15/9 = 0.633333. A chance classifier (p = 1/K)
    /// disagrees on 1 − 1/K.
    #[test]
    fn chance_disagreement_at_accuracy_and_classes() {
        assert!((chance_disagreement(0.35, 0.35, 10) - 0.830_555_6).abs() < 1e-6);
        assert!((chance_disagreement(0.85, 0.85, 10) - 0.275).abs() < 1e-12);
        assert!((chance_disagreement(0.5, 0.7, 10) - 0.633_333_3).abs() < 1e-6);
        assert!((chance_disagreement(0.1, 0.1, 10) - 0.9).abs() < 1e-12);
        assert!(chance_disagreement(0.5, 0.5, 1).is_nan());
        // The small CIFAR-10 groups (floor 0.61 at 45% accuracy: c = 0.7636, 0.75·c = 0.5727) are
        // uninformative; the same floor at 85% accuracy is above chance itself; at 85% the cutoff is
        // 0.75·0.275 = 0.20625.
        assert!(!is_informative(0.61, chance_disagreement(0.45, 0.45, 10)));
        assert!(is_informative(0.57, chance_disagreement(0.45, 0.45, 10)));
        assert!(!is_informative(0.61, chance_disagreement(0.85, 0.85, 10)));
        assert!(is_informative(0.20, chance_disagreement(0.85, 0.85, 10)));
        assert!(!is_informative(0.21, chance_disagreement(0.85, 0.85, 10)));
        // Networks whose disagreement equals their test error e (F/c = 1/(2 − e·10/9)) pass from 40%
        // accuracy up and never pass a cutoff of 0.5.
        for p in [0.41, 0.6, 0.85, 0.95, 0.99] {
            let (e, c) = (1.0 - p, chance_disagreement(p, p, 10));
            assert!(is_informative(e, c) && e / c > 0.5, "p = {p}");
        }
        assert!(!is_informative(0.61, chance_disagreement(0.39, 0.39, 10)));
        assert!(!is_informative(0.0, f64::NAN));
    }
}
