//! The norm-decay model of Fast Equilibrium (../shared/DESIGN.md, "Where the log factor comes from").
//!
//! For a scale-invariant group without momentum, with x = ‖w‖² and G = ‖∇L‖ at unit norm (by scale
//! invariance G = ‖∇L(w)‖·‖w‖ at any w): x_{t+1} = (1 − λ_e)²·x_t + η²G²/x_t, so the equilibrium is
//! x*² = η²⟨G²⟩/(λ_e(2 − λ_e)) ≈ η²⟨G²⟩/(2λ_e). From far above it the norm decays like (1 − 2λ_e)^t,
//! which takes τ = ln(‖w₀‖²/‖w*‖²)/(2λ_e) steps: the log term the conjecture's "up to log factors"
//! allows. With heavy-ball momentum γ the same holds with λ_e replaced by the relaxation rate
//! ρ = λ_e/(1 − γ) (stats::units), and x*² ≈ η²⟨G²⟩/(2λ_e(1 − γ)). Per run and group this module gives ‖w₀‖, the measured ‖w*‖ (mean over the summary's
//! averaging window), τ (signed: negative when the norm must grow) and the predicted ‖w*‖.

use super::collect::RunInfo;
use super::fit::group_by_lambda_e;
use crate::model::{init_params, rescale_init, Layout};
use crate::optim::OptimKind;
use crate::stats::relaxation_rate;
use crate::train::rundir::SUMMARY_FILE;
use crate::train::{MetricsRecord, TrainConfig};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupNorms {
    pub group: String,
    /// ‖w₀‖.
    pub initial: f64,
    /// ‖w*‖ measured: mean ‖w‖ over the averaging window.
    pub equilibrium: f64,
    /// ‖w*‖ predicted from the measured gradient norms by [`predicted_equilibrium_norm`] (with
    /// momentum too); for AdamW and Lion by `optim::Rule::normalized_equilibrium_norm`; none for
    /// Adam + L2.
    pub predicted: Option<f64>,
    /// ln(‖w₀‖²/‖w*‖²).
    pub log_ratio: f64,
    /// τ = ln(‖w₀‖²/‖w*‖²)/(2ρ), in steps, with ρ = λ_e/(1 − γ) (negative: the norm must grow).
    pub tau_steps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunNorms {
    pub run_id: String,
    pub lambda_e: f64,
    pub groups: Vec<GroupNorms>,
}

impl RunNorms {
    /// The norm term of the fit T_eq·λ_e = a + b·max(0, ln(‖w₀‖²/‖w*‖²))/2, taken at the group with
    /// the most norm to shed (every group must be at equilibrium for T_eq).
    pub fn norm_term(&self) -> f64 {
        self.groups.iter().map(|g| g.log_ratio.max(0.0) / 2.0).fold(0.0, f64::max)
    }

    /// The group that sets [`Self::norm_term`] (the largest ln(‖w₀‖²/‖w*‖²)).
    pub fn deciding_group(&self) -> Option<&GroupNorms> {
        self.groups.iter().max_by(|a, b| a.log_ratio.total_cmp(&b.log_ratio))
    }
}

/// ‖w₀‖ of every scale-invariant group, by name: summary.json's `initial_norm` where the trainer
/// recorded it, else rebuilt from the run's config (the init is deterministic from the seed; the
/// group tensors' shapes do not depend on the image size or the number of classes).
pub fn initial_norms(run: &RunInfo) -> Result<Vec<(String, f64)>> {
    let path = run.dir.join(SUMMARY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let recorded: Option<Vec<(String, f64)>> = v["groups"].as_array().and_then(|gs| {
            gs.iter().map(|g| Some((g["name"].as_str()?.to_string(), g["initial_norm"].as_f64()?))).collect()
        });
        if let Some(r) = recorded.filter(|r| !r.is_empty()) {
            return Ok(r);
        }
    }
    config_initial_norms(&run.config)
}

/// The parameter layout of a run's config (the group tensors' shapes do not depend on the image
/// size or the number of classes).
fn config_layout(cfg: &TrainConfig) -> Layout {
    Layout::new(&cfg.model, 3, cfg.data.synthetic.size.max(4), cfg.data.synthetic.classes.max(2))
}

/// ‖w₀‖ of every scale-invariant group as the config's init (seed, `init_norm`, `init_scale`) makes it.
pub fn config_initial_norms(cfg: &TrainConfig) -> Result<Vec<(String, f64)>> {
    let layout = config_layout(cfg);
    let mut params = init_params(&layout, cfg.seed);
    rescale_init(&layout, &cfg.model, &mut params)?;
    let norms = layout.group_norms(&params);
    Ok(layout.groups.iter().zip(norms).map(|(g, n)| (g.name.clone(), n)).collect())
}

/// ‖w*‖ from η, λ_e, γ and ⟨G²⟩ (G = ‖∇L‖ at unit norm): x*² = η²⟨G²⟩/((1 − γ)·λ_e·(2 − ρ)) with
/// x = ‖w‖² and ρ = λ_e/(1 − γ) the relaxation rate. Without momentum this is the exact fixed point
/// of x ← (1 − λ_e)²x + η²G²/x; with momentum the weight decay acts at rate ρ and the gradient
/// noise enters with gain 1/(1 − γ)², so the leading term is η²⟨G²⟩/(2λ_e(1 − γ)), which gives
/// Δ*² = η²⟨G²⟩/(x*²(1 − γ²)) = 2λ_e/(1 + γ) as the theory's angular update (docs/CALIBRATION.md);
/// the (2 − ρ) keeps the γ = 0 formula exact and is an O(ρ) correction otherwise.
pub fn predicted_equilibrium_norm(lr: f64, lambda_e: f64, momentum: f64, g2: f64) -> f64 {
    let rate = relaxation_rate(lambda_e, momentum);
    (lr * lr * g2 / ((1.0 - momentum) * lambda_e * (2.0 - rate))).powf(0.25)
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// The norm-decay numbers of a finished run; None without a summary or logged group statistics.
pub fn run_norms(run: &RunInfo, metrics: &[MetricsRecord]) -> Result<Option<RunNorms>> {
    let Some(s) = &run.summary else { return Ok(None) };
    let [w0, w1] = s.averaging_window;
    let window: Vec<&MetricsRecord> = metrics.iter().filter(|r| r.step >= w0 && r.step <= w1).collect();
    let Some(last) = window.last() else { return Ok(None) };
    let le = s.lambda_e;
    // Other optimizers than SGD: ‖w*‖ from optim::Rule (AdamW, Lion; none for Adam + L2), which
    // needs each group's number of elements.
    let rule = run.config.optim.rule();
    let layout = (rule.kind() != OptimKind::Sgd).then(|| config_layout(&run.config));
    let numel = |name: &str| -> usize {
        let Some(l) = &layout else { return 0 };
        let members = l.groups.iter().filter(|g| g.name == name).flat_map(|g| &g.members);
        members.map(|&m| l.tensors[m].len).sum()
    };
    let mut groups = Vec::new();
    for (name, initial) in initial_norms(run)? {
        let Some(gi) = last.groups.iter().position(|g| g.stats.name == name) else { continue };
        let stats = || window.iter().filter_map(|r| r.groups.get(gi)).map(|g| &g.stats);
        let Some(equilibrium) = mean(stats().map(|g| g.norm)) else { continue };
        let g2 = mean(stats().map(|g| (g.grad_norm * g.norm).powi(2))).unwrap_or(f64::NAN);
        let rate = relaxation_rate(le, last.momentum);
        let predicted = if rule.kind() == OptimKind::Sgd {
            (le > 0.0 && last.momentum < 1.0)
                .then(|| predicted_equilibrium_norm(last.lr, le, last.momentum, g2))
                .filter(|p| p.is_finite())
        } else {
            rule.normalized_equilibrium_norm(last.lr, last.wd, numel(&name))
        };
        let log_ratio = (initial * initial / (equilibrium * equilibrium)).ln();
        groups.push(GroupNorms {
            group: name,
            initial,
            equilibrium,
            predicted,
            log_ratio,
            tau_steps: log_ratio / (2.0 * rate),
        });
    }
    Ok((!groups.is_empty()).then(|| RunNorms { run_id: run.id.clone(), lambda_e: le, groups }))
}

/// Per λ_e (to 1e-9 relative), the mean ‖w*‖ of each group over `runs`: what a `matched` arm
/// starts from. Groups keep the layout order of the first run.
pub fn equilibrium_norms_by_lambda_e(runs: &[RunNorms]) -> Vec<(f64, Vec<f64>)> {
    let by_le = group_by_lambda_e(
        runs.iter().map(|r| (r.lambda_e, r.groups.iter().map(|g| g.equilibrium).collect::<Vec<f64>>())),
    );
    by_le
        .into_iter()
        .map(|(le, vs)| {
            let k = vs[0].len();
            let m = (0..k).map(|g| vs.iter().map(|v| v[g]).sum::<f64>() / vs.len() as f64).collect();
            (le, m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_momentum_the_prediction_is_the_fixed_point_of_the_norm_recursion() {
        // x = (1 − λ_e)²x + η²G²/x at x = ‖w*‖²: the recursion's fixed point, exactly.
        let (lr, le, g2) = (0.2, 1e-2, 3.7);
        let x = predicted_equilibrium_norm(lr, le, 0.0, g2).powi(2);
        let next = (1.0 - le) * (1.0 - le) * x + lr * lr * g2 / x;
        assert!((next / x - 1.0).abs() < 1e-12, "{next} vs {x}");
    }

    #[test]
    fn with_momentum_the_prediction_gives_the_theory_angular_update() {
        // Δ² = η²‖v‖²/x with the stationary ‖v‖² = G²/(x(1 − γ²)): at x*, Δ² = 2λ_e/(1 + γ) up to
        // the O(ρ) term, ρ = λ_e/(1 − γ) = 1e-3 here.
        let (lr, le, gamma, g2) = (0.05, 1e-4, 0.9, 2.0);
        let x = predicted_equilibrium_norm(lr, le, gamma, g2).powi(2);
        let delta2 = lr * lr * g2 / (x * x * (1.0 - gamma * gamma));
        let theory = 2.0 * le / (1.0 + gamma);
        assert!((delta2 / theory - 1.0).abs() < 1e-3, "{delta2} vs {theory}");
        // Momentum raises ‖w*‖ by (1 − γ)^{-1/4} at the same η, λ_e and G.
        let ratio =
            predicted_equilibrium_norm(lr, le, gamma, g2) / predicted_equilibrium_norm(lr, le, 0.0, g2);
        assert!((ratio / (0.1f64).powf(-0.25) - 1.0).abs() < 1e-3, "{ratio}");
    }
}
