//! Why AdamW and Lion miss their predicted Δ* in the angular-update recipe's net: the controls of
//! docs/REPRODUCTION.md §1, measured in the net. `equilibrium_probes lion` and `equilibrium_probes adamw`
//! train the recipe's run of that optimizer through a backend layer that watches every optimizer
//! step; the statistics are taken per tensor over the last 20% of the run.
//!
//! **lion.**
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
//!
//! **adamw** (β = (0.9, 0.999), η = 1e-3, λ = 2.5). The `stream` group (the stem and every conv2) is
//! scale-invariant only jointly: Σ over its tensors of w_t·g_t is 0, but each tensor's own w·g need
//! not be, and that is a signal along the tensors' relative scales. Per tensor:
//! - cos(w, g), the radial part of the gradient (0 for a tensor invariant on its own), with its
//!   standard error over the window's steps;
//! - cos(w, u) of the update direction u = m̂/(√v̂ + ε) against its white-noise value
//!   −√x·S/(1 − δ) (x = η²‖u‖²/‖w‖², S = β₁(1−δ)/(1 − β₁(1−δ)): the part of u along w that the
//!   balance of docs/OPTIMIZERS.md expects from the memory of m alone);
//! - ‖w‖ over the tensor's own AdamW balance sqrt(ηd/(2λ))·k (`adamw_equilibrium_norm`).
//!
//! Run: `cargo run --release --example equilibrium_probes -- lion|adamw` (about a minute each on
//! 2 cores).

use anyhow::{bail, Result};
use ilr::backend::cpu::Cpu;
use ilr::backend::{AdamStep, Backend, Layer, LionStep, Segment};
use ilr::model::Layout;
use ilr::stats::rotational::{
    adamw_equilibrium_norm, balance, lion_angular_update, lion_autocorrelation_sum, lion_c_correlation,
};
use ilr::train::{self, Progress, Summary, TrainConfig};
use std::sync::Mutex;

/// The angular-update recipe's run of `kind` (experiments/angular-update.tiny.toml).
fn config(kind: &str, lr: f64, wd: f64) -> Result<TrainConfig> {
    TrainConfig::from_toml_str(&format!(
        "[data.synthetic]\ntrain = 4096\ntest = 1024\nsize = 16\n\
         [model]\ndepth = 8\nwidth = 0.5\nscale_invariant = true\n\
         [optim]\nkind = \"{kind}\"\nlr = {lr}\nwd = {wd}\nmomentum = 0.0\n\
         [train]\nsteps = 2500\nbatch_size = 64\nstats_every = 2\neval_every = 0\ndevice = \"cpu\"\n"
    ))
}
/// Measured over the steps after this one (the last 20%, as the recipe's Δ).
const FROM: u64 = 2000;

fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// One tensor's running state and sums over the window.
#[derive(Clone, Default)]
struct Track {
    offset: usize,
    prev_g: Vec<f32>,
    prev_u: Vec<f32>,
    /// Lion: A_t = Σ_{k≥1} (1−δ)^k u_{t−k}.
    acc: Vec<f64>,
    /// Window sums of the per-step statistics (see `row` of each mode), and their squares.
    sums: [f64; 4],
    squares: [f64; 4],
    n: f64,
}

impl Track {
    fn add(&mut self, values: [f64; 4]) {
        for (k, v) in values.into_iter().enumerate() {
            self.sums[k] += v;
            self.squares[k] += v * v;
        }
        self.n += 1.0;
    }
    fn mean(&self, k: usize) -> f64 {
        self.sums[k] / self.n
    }
    /// Standard error of the mean over the window's steps (consecutive steps are correlated, so
    /// this is a lower bound; only its order of magnitude is read).
    fn se(&self, k: usize) -> f64 {
        let m = self.mean(k);
        ((self.squares[k] / self.n - m * m).max(0.0) / self.n).sqrt()
    }
}

struct Probe {
    cpu: Cpu<f32>,
    delta: f64,
    state: Mutex<(u64, Vec<Track>)>,
}

impl Probe {
    /// Runs `each(step, segment, track)` for every segment, after counting the step.
    fn each_segment(&self, segments: &[Segment], mut each: impl FnMut(u64, &Segment, &mut Track)) {
        let mut guard = self.state.lock().expect("probe state");
        let (step, tracks) = &mut *guard;
        *step += 1;
        tracks.resize(segments.len(), Track::default());
        for (s, t) in segments.iter().zip(tracks.iter_mut()) {
            t.offset = s.offset;
            each(*step, s, t);
        }
    }
}

impl Layer for Probe {
    type Inner = Cpu<f32>;
    fn inner(&self) -> &Cpu<f32> {
        &self.cpu
    }
    fn name(&self) -> String {
        "probe".into()
    }

    /// Before the step: u_t = sign(β₁m + (1−β₁)g) from the state the step will use. Statistics:
    /// cos(g_t, g_{t−1}), ‖m‖²/‖g‖², u_t·u_{t−1}/d, A_t·u_t/d.
    fn lion_step(&self, a: LionStep<'_, Vec<f32>>) -> Result<()> {
        let b1 = a.hyper.beta1 as f32;
        let keep = 1.0 - self.delta;
        self.each_segment(a.segments, |step, s, t| {
            let g = &a.grads[s.offset..s.offset + s.len];
            let m = &a.m[s.offset..s.offset + s.len];
            let u: Vec<f32> = g.iter().zip(m).map(|(&g, &m)| (b1 * m + (1.0 - b1) * g).signum()).collect();
            if t.acc.is_empty() {
                t.acc = vec![0.0; s.len];
            }
            if step > FROM {
                let d = s.len as f64;
                t.add([
                    dot(g, &t.prev_g) / (dot(g, g) * dot(&t.prev_g, &t.prev_g)).sqrt(),
                    dot(m, m) / dot(g, g),
                    dot(&u, &t.prev_u) / d,
                    t.acc.iter().zip(&u).map(|(&a, &b)| a * b as f64).sum::<f64>() / d,
                ]);
            }
            t.acc.iter_mut().zip(&u).for_each(|(a, &b)| *a = keep * (*a + b as f64));
            t.prev_g = g.to_vec();
            t.prev_u = u;
        });
        self.cpu.lion_step(a)
    }

    /// Around the step: w before it, u = m̂/(√v̂ + ε) from the state after it. Statistics:
    /// cos(w, g), cos(w, u), its white-noise value −√x·S/(1 − δ), ‖w‖.
    fn adam_step(&self, a: AdamStep<'_, Vec<f32>>) -> Result<()> {
        let AdamStep { segments, hyper: h, params, grads, m, v, sums } = a;
        let before = params.clone();
        let (p, m2, v2) = (&mut *params, &mut *m, &mut *v);
        self.cpu.adam_step(AdamStep { segments, hyper: h, params: p, grads, m: m2, v: v2, sums })?;
        let (c1, c2) = (1.0 - h.beta1.powi(h.t as i32), 1.0 - h.beta2.powi(h.t as i32));
        self.each_segment(segments, |step, s, t| {
            if step <= FROM {
                return;
            }
            let r = s.offset..s.offset + s.len;
            let (w, g) = (&before[r.clone()], &grads[r.clone()]);
            let u: Vec<f32> = m[r.clone()]
                .iter()
                .zip(&v[r])
                .map(|(&m, &v)| (m as f64 / c1 / ((v as f64 / c2).sqrt() + h.eps)) as f32)
                .collect();
            let keep = 1.0 - s.lr * s.wd;
            let s_white = h.beta1 * keep / (1.0 - h.beta1 * keep);
            let (ww, uu) = (dot(w, w), dot(&u, &u));
            let x = s.lr * s.lr * uu / ww;
            t.add([
                dot(w, g) / (ww * dot(g, g)).sqrt(),
                dot(w, &u) / (ww * uu).sqrt(),
                -x.sqrt() * s_white / keep,
                ww.sqrt(),
            ]);
        });
        Ok(())
    }
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let cfg = match mode.as_str() {
        "lion" => config("lion", 1e-4, 25.0)?,
        "adamw" => config("adamw", 1e-3, 2.5)?,
        _ => bail!("usage: equilibrium_probes lion|adamw"),
    };
    let data = train::load_datasets(&cfg.data)?;
    let delta = cfg.optim.lambda_e()?;
    let probe = Probe { cpu: Cpu::new(), delta, state: Mutex::new((0, Vec::new())) };
    let summary = train::train(&probe, &cfg, &data, None, Progress::Quiet)?;
    let t = &data.train;
    let layout = Layout::new(&cfg.model, t.channels, t.height, t.classes);
    let (_, tracks) = &*probe.state.lock().expect("probe state");
    let track = |offset: usize| tracks.iter().find(|t| t.offset == offset && t.n > 0.0);
    let measured = |summary: &Summary, name: &str| {
        summary.layers.iter().find(|l| l.name == name).map_or(f64::NAN, |l| l.angular_update)
    };
    if mode == "lion" {
        let [beta1, beta2] = cfg.optim.betas.unwrap_or([0.9, 0.99]);
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
            let Some(tr) = track(info.offset) else { continue };
            let predicted = balance(delta, tr.mean(3)).1;
            let got = measured(&summary, &info.name);
            println!(
                "{:<22} {:>6} {:>14.3} {:>13.3} {:>12.3} {:>8.3} {:>11.4e} {:>11.4e} {:>7.3}",
                info.name,
                info.len,
                tr.mean(0),
                tr.mean(1) / ((1.0 - beta2) / (1.0 + beta2)),
                tr.mean(2),
                tr.mean(3),
                predicted,
                got,
                got / predicted
            );
        }
    } else {
        let [beta1, beta2] = cfg.optim.betas.unwrap_or([0.9, 0.999]);
        let (lr, wd) = (cfg.optim.lr, delta / cfg.optim.lr);
        println!(
            "AdamW, λ_e = {delta:.1e}, β = ({beta1}, {beta2}); per tensor over steps {FROM}-{}:\n",
            cfg.train.steps
        );
        println!(
            "{:<22} {:<8} {:>6} {:>18} {:>10} {:>12} {:>8} {:>12} {:>8} {:>10}",
            "tensor",
            "group",
            "d",
            "cos(w,g) ± SE",
            "cos(w,u)",
            "white-noise",
            "‖w‖",
            "own balance",
            "ratio",
            "Δ"
        );
        for info in layout.tensors.iter().filter(|i| i.group.is_some()) {
            let Some(tr) = track(info.offset) else { continue };
            let group = info.group.map_or("—".into(), |g| layout.groups[g].name.clone());
            let own = adamw_equilibrium_norm(lr, wd, beta1, info.len);
            println!(
                "{:<22} {:<8} {:>6} {:>18} {:>10.4} {:>12.4} {:>8.3} {:>12.3} {:>8.3} {:>10.4e}",
                info.name,
                group,
                info.len,
                format!("{:+.4} ± {:.4}", tr.mean(0), tr.se(0)),
                tr.mean(1),
                tr.mean(2),
                tr.mean(3),
                own,
                tr.mean(3) / own,
                measured(&summary, &info.name)
            );
        }
    }
    Ok(())
}
