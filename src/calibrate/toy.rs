//! The toy: independent scale-invariant weight vectors w ∈ R^d (one per seed), trained by the
//! project's own SGD step.
//!
//! Gradient: g = s·P⊥(w)ξ/‖w‖ with ξ ~ N(0, I_d) and a per-step gradient-norm factor
//! s = exp(σz − σ²), z ~ N(0, 1), so E s² = 1 and E s = e^{−σ²/2} (0.88 at σ = 0.5: the mean of Δ
//! is below its RMS). This is the gradient of a scale-invariant loss: g ⊥ w and g(cw) = g(w)/c.
//!
//! The step is the CPU backend's `Backend::sgd_step` (the reference every backend is checked
//! against), with one segment per seed, so the update, the f64 sums Σw², Σd², Σw·d and the angle
//! (`VectorStats`, `angle_from_sums`) are those of training; only the gradient comes from here.

use super::analytic::ToyHyper;
use crate::backend::cpu::Cpu;
use crate::backend::{Backend, Segment, SgdStep, StepSums};
use crate::data::rng::keyed_rng;
use crate::optim::Hyper;
use crate::stats::VectorStats;
use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Keeps the toy's random streams apart from those of training (`data::rng`'s domains are 1–5).
const DOMAIN_CALIBRATE: u64 = 0xCA11B;

/// The toy's gradients of every seed's w (`dim` each, one stream per seed):
/// g = s·(ξ − (ξ·w/‖w‖²)w)/‖w‖ with ξ ~ N(0, I) and s = exp(σz − σ²), σ = `spread`.
pub fn fill_gradients(dim: usize, spread: f64, params: &[f64], grads: &mut [f64], rngs: &mut [ChaCha8Rng]) {
    let sigma = spread;
    for ((w, g), rng) in params.chunks(dim).zip(grads.chunks_mut(dim)).zip(rngs) {
        g.iter_mut().for_each(|x| *x = rng.sample::<f64, _>(StandardNormal));
        let z: f64 = rng.sample(StandardNormal);
        let s = (sigma * z - sigma * sigma).exp();
        let (ww, wx) = w.iter().zip(g.iter()).fold((0.0, 0.0), |(a, b), (wi, xi)| (a + wi * wi, b + wi * xi));
        let (p, f) = (wx / ww, s / ww.sqrt());
        g.iter_mut().zip(w).for_each(|(x, wi)| *x = f * (*x - p * wi));
    }
}

/// Seeds' weight vectors of dimension `dim`, each a random direction scaled to ‖w₀‖² = `a0`.
pub fn random_directions(dim: usize, a0: f64, rngs: &mut [ChaCha8Rng]) -> Vec<f64> {
    let mut params = vec![0.0; rngs.len() * dim];
    for (w, rng) in params.chunks_mut(dim).zip(rngs) {
        w.iter_mut().for_each(|x| *x = rng.sample::<f64, _>(StandardNormal));
        let scale = (a0 / w.iter().map(|x| x * x).sum::<f64>()).sqrt();
        w.iter_mut().for_each(|x| *x *= scale);
    }
    params
}

/// One random stream per seed for the toy's cell `stream`.
pub fn seed_rngs(seeds: &[u64], stream: u64) -> Vec<ChaCha8Rng> {
    seeds.iter().map(|&s| keyed_rng(s, DOMAIN_CALIBRATE, stream)).collect()
}

/// `seeds` weight vectors of dimension `dim`, stepped together.
pub struct Toy {
    be: Cpu<f64>,
    dim: usize,
    hyper: ToyHyper,
    spread: f64,
    segments: Vec<Segment>,
    params: Vec<f64>,
    grads: Vec<f64>,
    momenta: Vec<f64>,
    sums: Vec<StepSums>,
    rngs: Vec<ChaCha8Rng>,
}

impl Toy {
    /// Seeds `seeds` (each its own stream `stream`), every w₀ a random direction with ‖w₀‖² = `a0`.
    pub fn new(
        dim: usize,
        seeds: &[u64],
        stream: u64,
        hyper: ToyHyper,
        spread: f64,
        a0: f64,
    ) -> Result<Self> {
        anyhow::ensure!(dim >= 2, "the toy needs d ≥ 2 (got {dim})");
        let n = seeds.len();
        let mut rngs = seed_rngs(seeds, stream);
        let params = random_directions(dim, a0, &mut rngs);
        let segments = (0..n)
            .map(|k| Segment {
                offset: k * dim,
                len: dim,
                lr: hyper.lr,
                wd: hyper.wd,
                momentum: hyper.momentum,
            })
            .collect();
        Ok(Self {
            be: Cpu::new(),
            dim,
            hyper,
            spread,
            segments,
            params,
            grads: vec![0.0; n * dim],
            momenta: vec![0.0; n * dim],
            sums: vec![StepSums::default(); n],
            rngs,
        })
    }

    /// G² = E‖P⊥ξ‖² = d − 1.
    pub fn g2(dim: usize) -> f64 {
        dim as f64 - 1.0
    }

    /// One step of every seed. With `log`, returns each seed's Δ/Δ* and ‖w_t‖² (before the step).
    pub fn step(&mut self, log: bool) -> Result<Option<Vec<(f64, f64)>>> {
        fill_gradients(self.dim, self.spread, &self.params, &mut self.grads, &mut self.rngs);
        let sums = log.then_some(&mut self.sums[..]);
        self.be.sgd_step(SgdStep {
            segments: &self.segments,
            params: &mut self.params,
            grads: &self.grads,
            momenta: &mut self.momenta,
            sums,
        })?;
        if !log {
            return Ok(None);
        }
        let h = Hyper::sgd(self.hyper.lr, self.hyper.wd, self.hyper.momentum);
        let out = self
            .sums
            .iter()
            .map(|s| {
                let st = VectorStats::new("toy", s, &h, Some(self.hyper.wd));
                (st.angular_ratio.unwrap_or(f64::NAN), s.ww)
            })
            .collect();
        Ok(Some(out))
    }
}
