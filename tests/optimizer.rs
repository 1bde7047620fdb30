//! The optimizer against a hand-written reference of PyTorch's SGD, step by step, with momentum,
//! per-group weight decay, frozen tensors and a step schedule.

use ilr::backend::cpu::Cpu;
use ilr::backend::Backend;
use ilr::model::{Layout, ModelConfig};
use ilr::optim::{OptimConfig, OptimKind, Optimizer, ScheduleConfig};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

#[test]
fn matches_reference_sgd_with_momentum_groups_and_schedule() {
    // Affine trained and the last layer trained: tensors outside any group use wd_other.
    let cfg = ModelConfig { depth: 8, width: 0.25, ..ModelConfig::default() };
    let layout = Layout::new(&cfg, 3, 8, 4);
    let mut group_wd = BTreeMap::new();
    group_wd.insert("stream".to_string(), 3e-3);
    let ocfg = OptimConfig {
        lr: 0.2,
        wd: Some(1e-3),
        lambda_e: None,
        momentum: 0.9,
        kind: OptimKind::Sgd,
        betas: None,
        eps: None,
        wd_other: Some(5e-4),
        group_wd,
        schedule: ScheduleConfig::Step { lr_epochs: vec![2.0], wd_epochs: vec![1.0, 3.0], factor: 0.1 },
    };
    let be = Cpu::<f64>::new();
    let mut opt = Optimizer::new(&be, &ocfg, &layout).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = layout.num_params;
    let mut w: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut w_ref = w.clone();
    let mut v_ref = vec![0.0; n];
    // λ per element under the reference rules: group override, then base, wd_other outside groups.
    let rel_wd: Vec<Option<f64>> = {
        let mut r = vec![None; n];
        for t in layout.tensors.iter().filter(|t| t.trainable) {
            let wd = match t.group.map(|g| layout.groups[g].name.as_str()) {
                Some("stream") => 3e-3,
                Some(_) => 1e-3,
                None => 5e-4,
            };
            r[t.range()].iter_mut().for_each(|x| *x = Some(wd / 1e-3));
        }
        r
    };
    for (step, epoch) in [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5].into_iter().enumerate() {
        let g: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let h = opt.hyper_at(epoch);
        // The schedule by hand: LR ×0.1 from epoch 2, WD ×0.1 from 1 and again from 3.
        let lr = if epoch >= 2.0 { 0.02 } else { 0.2 };
        let wd = 1e-3
            * if epoch >= 3.0 {
                0.01
            } else if epoch >= 1.0 {
                0.1
            } else {
                1.0
            };
        assert!((h.lr - lr).abs() < 1e-15 && (h.wd - wd).abs() < 1e-18, "step {step}: {h:?}");
        let sums = opt.step(&be, &h, &mut w, &g, true).unwrap().unwrap();
        for i in 0..n {
            let Some(rel) = rel_wd[i] else { continue };
            let d_p = g[i] + wd * rel * w_ref[i];
            v_ref[i] = 0.9 * v_ref[i] + d_p;
            w_ref[i] -= lr * v_ref[i];
        }
        for (i, (a, b)) in w.iter().zip(&w_ref).enumerate() {
            assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "step {step}, element {i}: {a} vs {b}");
        }
        // Frozen tensors never move (none here are frozen except by design; check the trained set).
        assert_eq!(sums.len(), layout.tensors.iter().filter(|t| t.trainable).count());
    }
    // A frozen layer: scale_invariant fixes the last layer and BN affine exactly.
    let cfg = ModelConfig { scale_invariant: true, ..cfg };
    let layout = Layout::new(&cfg, 3, 8, 4);
    let ocfg = OptimConfig { group_wd: BTreeMap::new(), ..ocfg };
    let mut opt = Optimizer::new(&be, &ocfg, &layout).unwrap();
    let mut w: Vec<f64> = (0..layout.num_params).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let before = w.clone();
    let g: Vec<f64> = (0..layout.num_params).map(|_| 1.0).collect();
    let h = opt.hyper_at(0.0);
    opt.step(&be, &h, &mut w, &g, false).unwrap();
    for t in &layout.tensors {
        let moved = w[t.range()] != before[t.range()];
        assert_eq!(moved, t.trainable, "{}", t.name);
    }
    assert_eq!(be.len(opt.buffer("momentum_buffer").unwrap()), layout.num_params);
}

#[test]
fn step_sums_give_the_statistics_of_the_update() {
    let cfg = ModelConfig { depth: 8, width: 0.25, scale_invariant: true, ..ModelConfig::default() };
    let layout = Layout::new(&cfg, 3, 8, 4);
    let ocfg = OptimConfig { lr: 0.3, wd: Some(1e-2), momentum: 0.5, ..OptimConfig::default() };
    let be = Cpu::<f64>::new();
    let mut opt = Optimizer::new(&be, &ocfg, &layout).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = layout.num_params;
    let mut w: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let g: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let old = w.clone();
    let h = opt.hyper_at(0.0);
    let sums = opt.step(&be, &h, &mut w, &g, true).unwrap().unwrap();
    for (t, s) in sums {
        let r = layout.tensors[t].range();
        let ww: f64 = old[r.clone()].iter().map(|x| x * x).sum();
        let gg: f64 = g[r.clone()].iter().map(|x| x * x).sum();
        let dd: f64 = old[r.clone()].iter().zip(&w[r.clone()]).map(|(a, b)| (b - a) * (b - a)).sum();
        let wd: f64 = old[r.clone()].iter().zip(&w[r]).map(|(a, b)| a * (b - a)).sum();
        for (got, want) in [(s.ww, ww), (s.gg, gg), (s.dd, dd), (s.wd, wd)] {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-12),
                "{}: {got} vs {want}",
                layout.tensors[t].name
            );
        }
    }
}
