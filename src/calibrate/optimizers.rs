//! The optimizers' predicted equilibria (`stats::rotational`) checked on the toy: independent
//! scale-invariant vectors with white gradient noise (σ = 0, the premise of the predictions),
//! stepped by the CPU backend's own `adam_step` (AdamW) and `lion_step` in f64, started at the
//! predicted ‖w*‖ and measured over the second half of 8 units (1/λ_e steps each): the RMS angular
//! update per step and the mean ‖w‖ of each seed, against Δ* and ‖w*‖.

use super::toy::{fill_gradients, random_directions, seed_rngs};
use crate::backend::cpu::Cpu;
use crate::backend::{AdamHyper, AdamStep, Backend, LionHyper, LionStep, Segment, StepSums};
use crate::report::fit::t_quantile;
use crate::stats::angle_from_sums;
use crate::stats::rotational::{
    adamw_angular_update, adamw_angular_update_req, adamw_equilibrium_norm, lion_angular_update,
    lion_angular_update_req, lion_equilibrium_norm,
};
use anyhow::{bail, Result};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Run length and measurement window, in units of 1/λ_e.
const UNITS: f64 = 8.0;
const WINDOW_UNITS: f64 = 4.0;

/// An optimizer of the toy check, with its betas.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ToyOptimizer {
    AdamW { beta1: f64, beta2: f64 },
    Lion { beta1: f64, beta2: f64 },
}

/// One optimizer at one (η, λ) on the toy.
#[derive(Clone, Debug, Serialize)]
pub struct OptimizerRow {
    pub optimizer: ToyOptimizer,
    pub lr: f64,
    pub wd: f64,
    pub lambda_e: f64,
    pub seeds: usize,
    pub dim: usize,
    pub steps: u64,
    /// Each seed's RMS angular update over the window: their mean and sample SD.
    pub rms_delta: f64,
    pub rms_delta_sd: f64,
    /// Δ* and measured/predicted, with a 95% CI over the seeds (t with seeds − 1 dof).
    pub predicted: f64,
    pub ratio: f64,
    pub ratio_ci95: [f64; 2],
    /// Kosson et al.'s published formula (REQ's code), and measured/it.
    pub req: f64,
    pub req_ratio: f64,
    /// Mean ‖w‖ over the window (mean over seeds) over the predicted ‖w*‖.
    pub norm_ratio: f64,
}

impl OptimizerRow {
    /// Whether the prediction holds within `tolerance`: the ratio's CI inside [1 − tol, 1 + tol]
    /// and the norm within the same.
    pub fn holds(&self, tolerance: f64) -> bool {
        let inside = |x: f64| (x - 1.0).abs() <= tolerance;
        inside(self.ratio_ci95[0]) && inside(self.ratio_ci95[1]) && inside(self.norm_ratio)
    }
}

/// The default cases: AdamW and Lion at their PyTorch/lion-pytorch betas at two λ_e, and each
/// without first-moment memory (β₁ = 0, where REQ's Lion formula is √(π/2) high).
pub fn default_cases() -> Vec<(ToyOptimizer, f64, f64)> {
    let adamw = ToyOptimizer::AdamW { beta1: 0.9, beta2: 0.999 };
    let lion = ToyOptimizer::Lion { beta1: 0.9, beta2: 0.99 };
    vec![
        (adamw, 1e-3, 4.0),
        (adamw, 1e-3, 1.0),
        (ToyOptimizer::AdamW { beta1: 0.0, beta2: 0.999 }, 1e-3, 1.0),
        (lion, 1e-4, 40.0),
        (lion, 1e-4, 10.0),
        (ToyOptimizer::Lion { beta1: 0.5, beta2: 0.99 }, 1e-4, 10.0),
        (ToyOptimizer::Lion { beta1: 0.0, beta2: 0.99 }, 1e-4, 10.0),
    ]
}

/// `seeds` independent vectors of dimension `dim` with white gradient noise, stepped together by
/// the CPU backend's AdamW or Lion step in f64 (one segment per seed).
pub struct OptimizerToy {
    be: Cpu<f64>,
    opt: ToyOptimizer,
    dim: usize,
    segments: Vec<Segment>,
    params: Vec<f64>,
    grads: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    sums: Vec<StepSums>,
    rngs: Vec<ChaCha8Rng>,
    t: u64,
}

impl OptimizerToy {
    /// Every w₀ a random direction with ‖w₀‖² = `a0`; `stream` keeps the noise distinct.
    pub fn new(opt: ToyOptimizer, lr: f64, wd: f64, dim: usize, seeds: usize, stream: u64, a0: f64) -> Self {
        let ids: Vec<u64> = (0..seeds as u64).collect();
        let mut rngs = seed_rngs(&ids, stream);
        let params = random_directions(dim, a0, &mut rngs);
        let n = params.len();
        let segments =
            (0..seeds).map(|k| Segment { offset: k * dim, len: dim, lr, wd, momentum: 0.0 }).collect();
        Self {
            be: Cpu::new(),
            opt,
            dim,
            segments,
            params,
            grads: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            sums: vec![StepSums::default(); seeds],
            rngs,
            t: 0,
        }
    }

    /// One step of every seed; with `log`, each seed's sums (Σw², Σd², Σw·d) of the step.
    pub fn step(&mut self, log: bool) -> Result<Option<&[StepSums]>> {
        self.t += 1;
        fill_gradients(self.dim, 0.0, &self.params, &mut self.grads, &mut self.rngs);
        let sums = log.then_some(&mut self.sums[..]);
        match self.opt {
            ToyOptimizer::AdamW { beta1, beta2 } => self.be.adam_step(AdamStep {
                segments: &self.segments,
                hyper: AdamHyper { beta1, beta2, eps: 1e-8, t: self.t, decoupled: true },
                params: &mut self.params,
                grads: &self.grads,
                m: &mut self.m,
                v: &mut self.v,
                sums,
            })?,
            ToyOptimizer::Lion { beta1, beta2 } => self.be.lion_step(LionStep {
                segments: &self.segments,
                hyper: LionHyper { beta1, beta2 },
                params: &mut self.params,
                grads: &self.grads,
                m: &mut self.m,
                sums,
            })?,
        }
        Ok(log.then_some(&self.sums[..]))
    }
}

/// Runs one case with `seeds` vectors of dimension `dim`; `stream` keeps its noise distinct.
pub fn run_case(
    opt: ToyOptimizer,
    lr: f64,
    wd: f64,
    dim: usize,
    seeds: usize,
    stream: u64,
) -> Result<OptimizerRow> {
    let lambda_e = lr * wd;
    let (predicted, norm, req) = match opt {
        ToyOptimizer::AdamW { beta1, .. } => (
            adamw_angular_update(lambda_e, beta1),
            adamw_equilibrium_norm(lr, wd, beta1, dim),
            adamw_angular_update_req(lambda_e, beta1),
        ),
        ToyOptimizer::Lion { beta1, beta2 } => (
            lion_angular_update(lambda_e, beta1, beta2),
            lion_equilibrium_norm(lr, wd, beta1, beta2, dim),
            lion_angular_update_req(lambda_e, beta1, beta2),
        ),
    };
    let mut toy = OptimizerToy::new(opt, lr, wd, dim, seeds, stream, norm * norm);
    let steps = (UNITS / lambda_e).ceil() as u64;
    let from = steps - (WINDOW_UNITS / lambda_e).ceil() as u64;
    let (mut delta2, mut norms, mut n) = (vec![0.0; seeds], vec![0.0; seeds], 0usize);
    for t in 1..=steps {
        if let Some(sums) = toy.step(t > from)? {
            for (k, s) in sums.iter().enumerate() {
                delta2[k] += angle_from_sums(s.ww, s.dd, s.wd).powi(2);
                norms[k] += s.ww.sqrt();
            }
            n += 1;
        }
    }
    let per_seed: Vec<f64> = delta2.iter().map(|d| (d / n as f64).sqrt()).collect();
    let (Some(mean), Some(sd)) = super::mean_sd(&per_seed) else {
        bail!("the optimizer toy needs at least 2 seeds, for a spread (got {seeds})");
    };
    let half = t_quantile(0.975, (seeds - 1) as f64) * sd / (seeds as f64).sqrt();
    Ok(OptimizerRow {
        optimizer: opt,
        lr,
        wd,
        lambda_e,
        seeds,
        dim,
        steps,
        rms_delta: mean,
        rms_delta_sd: sd,
        predicted,
        ratio: mean / predicted,
        ratio_ci95: [(mean - half) / predicted, (mean + half) / predicted],
        req,
        req_ratio: mean / req,
        norm_ratio: norms.iter().sum::<f64>() / (n * seeds) as f64 / norm,
    })
}

/// The table's header and one line per row.
pub fn table_header() -> String {
    format!(
        "{:<22} {:>9} {:>9} {:>11} {:>11} {:>22} {:>11} {:>9}",
        "optimizer", "λ_e", "RMS Δ", "Δ*", "Δ/Δ*", "95% CI", "Δ/Δ*(REQ)", "‖w‖/‖w*‖"
    )
}

pub fn table_line(r: &OptimizerRow) -> String {
    let name = match r.optimizer {
        ToyOptimizer::AdamW { beta1, beta2 } => format!("adamw β=({beta1}, {beta2})"),
        ToyOptimizer::Lion { beta1, beta2 } => format!("lion β=({beta1}, {beta2})"),
    };
    format!(
        "{:<22} {:>9.1e} {:>9.5} {:>11.5} {:>11.4} {:>22} {:>11} {:>9.4}",
        name,
        r.lambda_e,
        r.rms_delta,
        r.predicted,
        r.ratio,
        format!("[{:.4}, {:.4}]", r.ratio_ci95[0], r.ratio_ci95[1]),
        format!("{:.4}", r.req_ratio),
        r.norm_ratio
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_and_lion_reach_the_predicted_rotation_on_a_small_toy() {
        // d = 256, 8 seeds, λ_e = 2.5e-3 (3,200 steps): small, so 3% covers the seeds' noise.
        for (opt, lr, wd) in [
            (ToyOptimizer::AdamW { beta1: 0.9, beta2: 0.99 }, 1e-3, 2.5),
            (ToyOptimizer::Lion { beta1: 0.9, beta2: 0.9 }, 1e-3, 2.5),
            (ToyOptimizer::Lion { beta1: 0.0, beta2: 0.9 }, 1e-3, 2.5),
        ] {
            let r = run_case(opt, lr, wd, 256, 8, 7).unwrap();
            println!("{}", table_line(&r));
            assert!(r.holds(0.03), "{}", table_line(&r));
        }
    }
}
