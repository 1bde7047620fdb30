//! Shared test fixtures: small f64 PreResNets on random batches, and the files under a folder.
#![allow(dead_code)]

use ilr::backend::cpu::Cpu;
use ilr::model::{ModelConfig, PreResNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::{Path, PathBuf};

pub const SIZE: usize = 8;
pub const CLASSES: usize = 5;
pub const BATCH: usize = 6;

/// A PreResNet in f64 loaded with a random batch (images N(0,1), random labels).
pub fn net(cfg: &ModelConfig, seed: u64) -> (Cpu<f64>, PreResNet<Cpu<f64>>) {
    let be = Cpu::<f64>::new();
    let mut m = PreResNet::new(&be, cfg, 3, SIZE, CLASSES, BATCH).unwrap();
    m.init(&be, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
    let images: Vec<f64> = (0..BATCH * 3 * SIZE * SIZE).map(|_| StandardNormal.sample(&mut rng)).collect();
    let labels: Vec<u32> = (0..BATCH).map(|_| rng.gen_range(0..CLASSES as u32)).collect();
    m.set_batch(&be, &images, &labels).unwrap();
    // Perturb BN affine away from (1, 0) where it is trained, so their gradients are generic.
    if cfg.affine_trained() {
        for t in m.layout.tensors.clone() {
            if matches!(t.kind, ilr::model::TensorKind::BnWeight | ilr::model::TensorKind::BnBias) {
                for v in &mut m.params[t.range()] {
                    *v += 0.2 * rng.gen_range(-1.0..1.0);
                }
            }
        }
    }
    (be, m)
}

/// Mean training-mode loss at the model's current parameters, with gradients into `m.grads`.
pub fn loss(be: &Cpu<f64>, m: &mut PreResNet<Cpu<f64>>) -> f64 {
    m.forward(be, true);
    m.loss_and_backward(be).unwrap().loss_sum / BATCH as f64
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}
