//! Why Lion rotates faster than its predicted Δ* in the angular-update recipe's net: the control of
//! docs/REPRODUCTION.md §1, measured in the net.
//!
//! Lion's Δ* (`stats::rotational`) assumes white gradient noise: the update u_t = sign(c_t) then has
//! the sign autocorrelation of an EMA of white noise, summed into S_white = Σ_k (1−δ)^k ρ_k, and
//! Δ*² ≈ 2δ/(1 + 2S). This example trains the recipe's Lion run (PreResNet-8 ×0.5, 16×16 synthetic
//! images, η = 1e-4, λ = 25, β = (0.9, 0.99), 2,500 steps) through a backend layer that watches every
//! `lion_step` and measures, per tensor over the last 20% of the run:
//! - the lag-1 cosine of the minibatch gradients, cos(g_t, g_{t−1}) (0 for white noise);
//! - the lag-1 sign agreement of the updates, u_t·u_{t−1}/d (white noise: (2/π)·arcsin r₁);
//! - ‖m‖²/‖g‖² over its white-noise value (1−β₂)/(1+β₂): how much of the gradient's variance survives
//!   β₂'s 100-step average (below 1 when the noise's low frequencies are suppressed);
//! - S_meas = A_t·u_t/d with A_t = Σ_{k≥1} (1−δ)^k u_{t−k} (A_{t+1} = (1−δ)(A_t + u_t)), the sum the
//!   balance needs, and Δ from the same balance with S_meas in place of S_white.
//!
//! Run: `cargo run --release --example lion_autocorrelation` (about 30 s on 2 cores).

use anyhow::Result;
use ilr::backend::cpu::Cpu;
use ilr::backend::{Backend, Layer, LionStep};
use ilr::model::Layout;
use ilr::stats::rotational::{balance, lion_angular_update, lion_autocorrelation_sum, lion_c_correlation};
use ilr::train::{self, Progress, TrainConfig};
use std::sync::Mutex;

const CONFIG: &str = "[data.synthetic]\ntrain = 4096\ntest = 1024\nsize = 16\n\
    [model]\ndepth = 8\nwidth = 0.5\nscale_invariant = true\n\
    [optim]\nkind = \"lion\"\nlr = 1e-4\nwd = 25.0\nmomentum = 0.0\n\
    [train]\nsteps = 2500\nbatch_size = 64\nstats_every = 2\neval_every = 0\ndevice = \"cpu\"\n";
/// Measured over the steps after this one (the last 20%, as the recipe's Δ).
const FROM: u64 = 2000;

/// One tensor's running state and sums.
#[derive(Clone, Default)]
struct Track {
    offset: usize,
    prev_g: Vec<f32>,
    prev_u: Vec<f32>,
    acc: Vec<f64>,
    g_cos: f64,
    sign_agree: f64,
    s_meas: f64,
    m_over_g: f64,
    n: f64,
}

struct Probe {
    cpu: Cpu<f32>,
    delta: f64,
    state: Mutex<(u64, Vec<Track>)>,
}

impl Layer for Probe {
    type Inner = Cpu<f32>;
    fn inner(&self) -> &Cpu<f32> {
        &self.cpu
    }
    fn name(&self) -> String {
        "lion-probe".into()
    }

    /// Before the step: u_t = sign(β₁m + (1−β₁)g) from the state the step will use.
    fn lion_step(&self, a: LionStep<'_, Vec<f32>>) -> Result<()> {
        let mut guard = self.state.lock().expect("probe state");
        let (step, tracks) = &mut *guard;
        *step += 1;
        tracks.resize(a.segments.len(), Track::default());
        let b1 = a.hyper.beta1 as f32;
        for (s, t) in a.segments.iter().zip(tracks.iter_mut()) {
            let g = &a.grads[s.offset..s.offset + s.len];
            let m = &a.m[s.offset..s.offset + s.len];
            let u: Vec<f32> = g.iter().zip(m).map(|(&g, &m)| (b1 * m + (1.0 - b1) * g).signum()).collect();
            if t.acc.is_empty() {
                (t.offset, t.acc) = (s.offset, vec![0.0; s.len]);
            }
            if *step > FROM {
                let d = s.len as f64;
                let dot =
                    |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                t.g_cos += dot(g, &t.prev_g) / (dot(g, g) * dot(&t.prev_g, &t.prev_g)).sqrt();
                t.sign_agree += dot(&u, &t.prev_u) / d;
                t.s_meas += t.acc.iter().zip(&u).map(|(&a, &b)| a * b as f64).sum::<f64>() / d;
                t.m_over_g += dot(m, m) / dot(g, g);
                t.n += 1.0;
            }
            let keep = 1.0 - self.delta;
            t.acc.iter_mut().zip(&u).for_each(|(a, &b)| *a = keep * (*a + b as f64));
            t.prev_g = g.to_vec();
            t.prev_u = u;
        }
        drop(guard);
        self.cpu.lion_step(a)
    }
}

fn main() -> Result<()> {
    let cfg = TrainConfig::from_toml_str(CONFIG)?;
    let data = train::load_datasets(&cfg.data)?;
    let [beta1, beta2] = cfg.optim.betas.unwrap_or([0.9, 0.99]);
    let delta = cfg.optim.lambda_e()?;
    let probe = Probe { cpu: Cpu::new(), delta, state: Mutex::new((0, Vec::new())) };
    let summary = train::train(&probe, &cfg, &data, None, Progress::Quiet)?;
    let t = &data.train;
    let layout = Layout::new(&cfg.model, t.channels, t.height, t.classes);
    let (_, tracks) = &*probe.state.lock().expect("probe state");
    let s_white = lion_autocorrelation_sum(delta, beta1, beta2);
    println!(
        "Lion, λ_e = {delta:.1e}, β = ({beta1}, {beta2}); white noise: cos(g_t, g_t−1) = 0, u_t·u_t−1/d = {:.3}, \
         S = {s_white:.3}, Δ* = {:.4e}\n",
        std::f64::consts::FRAC_2_PI * lion_c_correlation(beta1, beta2, 1).asin(),
        lion_angular_update(delta, beta1, beta2)
    );
    println!(
        "{:<22} {:>6} {:>14} {:>13} {:>12} {:>8} {:>11} {:>11} {:>7}",
        "tensor",
        "d",
        "cos(g_t,g_t-1)",
        "m²/g² / white",
        "u_t·u_t-1/d",
        "S_meas",
        "Δ(S_meas)",
        "Δ measured",
        "ratio"
    );
    for info in layout.tensors.iter().filter(|i| i.invariant_alone) {
        let Some(tr) = tracks.iter().find(|t| t.offset == info.offset && t.n > 0.0) else { continue };
        let s_meas = tr.s_meas / tr.n;
        let predicted = balance(delta, s_meas).1;
        let measured =
            summary.layers.iter().find(|l| l.name == info.name).map_or(f64::NAN, |l| l.angular_update);
        println!(
            "{:<22} {:>6} {:>14.3} {:>13.3} {:>12.3} {:>8.3} {:>11.4e} {:>11.4e} {:>7.3}",
            info.name,
            info.len,
            tr.g_cos / tr.n,
            tr.m_over_g / tr.n / ((1.0 - beta2) / (1.0 + beta2)),
            tr.sign_agree / tr.n,
            s_meas,
            predicted,
            measured,
            measured / predicted
        );
    }
    Ok(())
}
