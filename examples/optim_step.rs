//! ilr's side of the optimizer parity check with PyTorch (peers/pytorch/optim_parity.py): STEPS
//! steps of one optimizer on the trained tensors of a PreResNet-8 ×0.25 with BN affine and last
//! layer trained (23 tensors, 5006 parameters), from its seeded init and a fixed sequence of random
//! gradients, in f32 on the CPU, through `optim::Optimizer` as training uses it.
//!
//!   cargo run --release --example optim_step -- OUT STEPS KEY=VALUE...
//!
//! KEY=VALUE are `[optim]` keys in TOML syntax, e.g. 'kind="adamw"' lr=1e-3 wd=0.1
//! 'betas=[0.9, 0.999]'. Writes to OUT, every array as little-endian f32: `w0.f32` (the weights),
//! `grads.f32` (STEPS × n, step-major), and `after_1/`, `after_STEPS/`, each with `params.f32` and
//! one `<state name>.f32` per optimizer buffer (`exp_avg`, `exp_avg_sq`; `momentum_buffer`); and
//! `layout.json`: the trained tensors (name, offset, len, shape), the state names, η, λ and the
//! resolved rule (kind, betas, eps).
//!
//! The gradients are N(0, 1)·s with s = 1, 0.1, 0.01, 0.001 by tensor (so that Adam's ε and
//! scales matter), and every 97th element of the first step's gradient is 0 (Lion's sign(0) = 0
//! at m = 0; Adam's 0/(0 + ε)).

use anyhow::{bail, Context, Result};
use ilr::backend::cpu::Cpu;
use ilr::model::{init_params, Layout, ModelConfig};
use ilr::optim::{Optimizer, Rule};
use ilr::train::TrainConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;
use std::path::Path;

/// The model whose trained tensors are stepped.
pub fn layout() -> Layout {
    let cfg = ModelConfig { depth: 8, width: 0.25, scale_invariant: false, ..ModelConfig::default() };
    Layout::new(&cfg, 3, 8, 10)
}

fn write_f32(path: &Path, v: impl IntoIterator<Item = f32>) -> Result<()> {
    let bytes: Vec<u8> = v.into_iter().flat_map(f32::to_le_bytes).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Runs `steps` steps of the optimizer that `optim_keys` (TOML lines of an `[optim]` section)
/// configures and writes everything to `out` (see the module doc).
pub fn run(out: &Path, steps: usize, optim_keys: &[String]) -> Result<()> {
    if steps == 0 {
        bail!("STEPS must be at least 1");
    }
    let cfg = TrainConfig::from_toml_str(&format!("[optim]\n{}\n", optim_keys.join("\n")))?;
    cfg.optim.validate()?;
    let layout = layout();
    let n = layout.num_params;
    let be = Cpu::<f32>::new();
    let mut opt = Optimizer::new(&be, &cfg.optim, &layout)?;
    let h = opt.hyper_at(0.0);
    let mut w: Vec<f32> = init_params(&layout, 3).into_iter().map(|x| x as f32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let grads: Vec<Vec<f32>> = (0..steps)
        .map(|s| {
            let mut g = vec![0.0f32; n];
            for (k, t) in layout.tensors.iter().enumerate() {
                let scale = 10f64.powi(-((k % 4) as i32));
                for x in &mut g[t.range()] {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *x = (scale * z) as f32;
                }
            }
            if s == 0 {
                g.iter_mut().step_by(97).for_each(|x| *x = 0.0);
            }
            g
        })
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_f32(&out.join("w0.f32"), w.iter().copied())?;
    write_f32(&out.join("grads.f32"), grads.iter().flatten().copied())?;
    for (s, g) in grads.iter().enumerate() {
        opt.step(&be, &h, &mut w, g, false)?;
        if s + 1 == 1 || s + 1 == steps {
            let dir = out.join(format!("after_{}", s + 1));
            std::fs::create_dir_all(&dir)?;
            write_f32(&dir.join("params.f32"), w.iter().copied())?;
            for (name, b) in opt.state() {
                write_f32(&dir.join(format!("{name}.f32")), b.iter().copied())?;
            }
        }
    }
    let (betas, eps) = match h.rule {
        Rule::AdamW { beta1, beta2, eps } | Rule::Adam { beta1, beta2, eps } => {
            (Some([beta1, beta2]), Some(eps))
        }
        Rule::Lion { beta1, beta2 } => (Some([beta1, beta2]), None),
        Rule::Sgd { .. } => (None, None),
    };
    let tensors: Vec<_> = layout
        .tensors
        .iter()
        .filter(|t| t.trainable)
        .map(|t| json!({"name": t.name, "offset": t.offset, "len": t.len, "shape": t.shape}))
        .collect();
    let meta = json!({
        "kind": cfg.optim.kind.name(),
        "lr": h.lr,
        "wd": h.wd,
        "momentum": h.momentum(),
        "betas": betas,
        "eps": eps,
        "steps": steps,
        "num_params": n,
        "state_names": cfg.optim.kind.state_names(),
        "tensors": tensors,
    });
    std::fs::write(out.join("layout.json"), serde_json::to_string_pretty(&meta)?)?;
    Ok(())
}

#[allow(dead_code)] // unused where tests/optim_parity.rs includes this file as a module
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(steps)) = (args.first(), args.get(1)) else {
        bail!("usage: optim_step OUT STEPS KEY=VALUE... (e.g. 'kind=\"adamw\"' lr=1e-3 wd=0.1)")
    };
    run(Path::new(out), steps.parse().context("STEPS")?, &args[2..])
}
