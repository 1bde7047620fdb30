//! Whole training runs on the CPU: reproducibility, and the equilibrium the theory predicts.

use ilr::backend::cpu::Cpu;
use ilr::train::{self, Progress, RunDir, RunStatus, TrainConfig};

/// A tiny scale-invariant setting with a large λ_e, so that equilibrium comes within a few hundred
/// steps: PreResNet-8 ×0.5 on 8×8 synthetic images.
fn tiny(lr: f64, wd: f64, momentum: f64, steps: u64) -> TrainConfig {
    let mut c = TrainConfig::from_toml_str(&format!(
        "[data.synthetic]\ntrain = 1024\ntest = 256\nsize = 8\n\
         [model]\ndepth = 8\nwidth = 0.5\nscale_invariant = true\n\
         [optim]\nlr = {lr}\nwd = {wd}\nmomentum = {momentum}\n\
         [train]\nsteps = {steps}\nbatch_size = 64\nstats_every = 2\neval_every = 0\n"
    ))
    .unwrap();
    c.train.device = ilr::train::Device::Cpu;
    c
}

fn run(cfg: &TrainConfig, root: &std::path::Path) -> (train::Summary, std::path::PathBuf) {
    let data = train::load_datasets(&cfg.data).unwrap();
    let mut dir = RunDir::create(root, cfg).unwrap();
    let s = train::train(&Cpu::<f32>::new(), cfg, &data, Some(&mut dir), Progress::Quiet).unwrap();
    (s, dir.path.clone())
}

#[test]
fn the_same_seed_gives_bit_identical_metrics() {
    let cfg = tiny(0.5, 1e-2, 0.9, 60);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, pa) = run(&cfg, a.path());
    let (_, pb) = run(&cfg, b.path());
    let ma = std::fs::read(pa.join("metrics.jsonl")).unwrap();
    assert!(!ma.is_empty());
    assert_eq!(ma, std::fs::read(pb.join("metrics.jsonl")).unwrap(), "same seed, different metrics");
    let mut other = cfg.clone();
    other.seed = 1;
    let (_, pc) = run(&other, a.path());
    assert_ne!(ma, std::fs::read(pc.join("metrics.jsonl")).unwrap(), "a different seed changed nothing");
}

fn assert_equilibrium(cfg: &TrainConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = run(cfg, dir.path());
    assert_eq!(s.status, RunStatus::Completed);
    let t_eq = s.t_eq_steps.unwrap_or_else(|| panic!("no T_eq within {} steps: {s:#?}", s.steps));
    assert!(t_eq > 0 && t_eq < s.steps);
    assert!(s.t_eq_lambda_e.unwrap().is_finite());
    let invariant_alone = s.layers.iter().filter(|l| l.angular_ratio.is_some()).count();
    assert!(invariant_alone >= 3, "each block's conv1 is invariant on its own");
    for v in s.groups.iter().chain(&s.layers) {
        if let Some(r) = v.angular_ratio {
            assert!(
                (r - 1.0).abs() <= 0.1,
                "{}: Δ/Δ* = {r} (Δ = {}, Δ* = {:?})",
                v.name,
                v.angular_update,
                v.angular_theory
            );
        }
    }
    // The outputs the README promises.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("summary.json")).unwrap()).unwrap();
    for key in ["t_eq_steps", "t_eq_lambda_e", "groups", "layers", "wall_time_s", "steps_per_s", "final"] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    let records = train::read_metrics(&path.join("metrics.jsonl")).unwrap();
    assert_eq!(records.len() as u64, cfg.train.steps / cfg.train.stats_every);
    assert!(TrainConfig::from_toml_file(&path.join("config.toml")).unwrap() == *cfg);
}

#[test]
fn reaches_the_theoretical_angular_update_without_momentum() {
    // λ_e = 5e-3: Δ* = sqrt(2ηλ) = 0.1 rad per step.
    assert_equilibrium(&tiny(0.5, 1e-2, 0.0, 1200));
}

#[test]
fn reaches_the_theoretical_angular_update_with_momentum() {
    // γ = 0.9, λ_e = 5e-3: Δ* = sqrt(2ηλ/(1+γ)) ≈ 0.073 rad per step.
    assert_equilibrium(&tiny(0.05, 0.1, 0.9, 1200));
}
