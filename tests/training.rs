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

#[test]
fn the_plateau_reference_times_adamw_against_each_groups_own_level() {
    // AdamW at λ_e = 8e-3 (a unit is 125 steps) for 10 units from the Kaiming init; the summary's
    // T_eq must be the plateau detector's over the ratios that metrics.jsonl records, and the plateau
    // the groups' RMS Δ/Δ* over the last 2 units.
    let mut cfg = tiny(1e-3, 8.0, 0.0, 1250);
    cfg.optim.kind = ilr::optim::OptimKind::AdamW;
    cfg.optim.betas = Some([0.9, 0.95]);
    cfg.equilibrium.reference = ilr::stats::Reference::Plateau;
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = run(&cfg, dir.path());
    let plateau = s.plateau.clone().expect("the plateau reference records the plateaus");
    assert_eq!(plateau.len(), s.groups.len());
    let records = train::read_metrics(&path.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = records.iter().map(|r| r.step).collect();
    let ratios: Vec<f64> = records
        .iter()
        .flat_map(|r| r.groups.iter().map(|g| g.stats.angular_ratio.unwrap_or(f64::NAN)))
        .collect();
    let want = ilr::stats::plateau::plateau_equilibrium(&cfg.equilibrium, 8e-3, 0.0, 2, 0, &steps, &ratios);
    // metrics.jsonl's floats parse back within an ulp (serde_json's default parser), so the plateaus
    // are compared to 1e-12; T_eq and the end state exactly.
    assert_eq!((s.t_eq_steps, s.in_equilibrium_at_end), (want.t_eq, want.inside_at_end));
    for (got, want) in plateau.iter().zip(&want.plateau) {
        assert!((got.unwrap() - want.unwrap()).abs() < 1e-12, "{plateau:?} vs {:?}", want);
    }
    let t = s.t_eq_steps.expect("AdamW settles within 10 units");
    assert!(t > 0 && t < 1250 - 250, "T_eq {t} must be confirmed before the plateau's 2 units");
    let json = std::fs::read_to_string(path.join("summary.json")).unwrap();
    assert!(json.contains("\"plateau\""), "{json}");
    assert!(std::fs::read_to_string(path.join("config.toml")).unwrap().contains("reference = \"plateau\""));
}
