//! The CPU backend gives bit-identical training whatever the thread count: a few SGD steps of a
//! PreResNet on 1, 2 and 3 rayon threads, in f32 and in f64, must leave the same parameters,
//! momenta and optimizer statistics to the last bit; and so must AdamW, Adam + L2 and Lion (f32)
//! with their state (m, v).
//!
//! The shapes are chosen so that every fixed chunking in src/backend/cpu is ragged: batch 37 splits
//! into uneven conv blocks and filter-gradient chunks, and the SGD segments into partial chunks.
//! At 16×16 input (channels 8, 16, 32 at 16×16, 8×8, 4×4) the direct 3×3 convolutions run too on a
//! CPU with AVX2 and FMA, their filter gradient at 8×8; so does the stride-2 8 → 16 conv from 16×16
//! to 8×8, all three passes (its filter gradient in 8 fixed chunks: 7 of 5 images and one of 2), while the 16 → 32 one to 4×4 stays on im2col + GEMM.

use ilr::backend::cpu::Cpu;
use ilr::backend::{Backend, Real};
use ilr::model::PreResNet;
use ilr::optim::{OptimKind, Optimizer};
use ilr::train::TrainConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const BATCH: usize = 37;
const SIZE: usize = 16;
const CLASSES: usize = 10;
const STEPS: usize = 3;

/// Everything a training step leaves behind, as bits.
#[derive(Debug, PartialEq)]
struct State {
    params: Vec<u64>,
    /// The optimizer's state buffers.
    state: Vec<Vec<u64>>,
    sums: Vec<[u64; 4]>,
    losses: Vec<u64>,
}

/// `STEPS` steps of PreResNet-8 ×0.5 (with BN-projection shortcuts, so strided 1×1 convs run too)
/// on fresh random batches with optimizer `kind`, on a rayon pool of `threads` threads.
fn train<T: Real>(threads: usize, kind: OptimKind) -> State {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let optim = match kind {
            OptimKind::Sgd => "lr = 0.1\nwd = 5e-3\nmomentum = 0.9".to_string(),
            other => format!("kind = \"{other}\"\nlr = 1e-3\nwd = 0.1"),
        };
        let cfg = TrainConfig::from_toml_str(&format!(
            "[model]\ndepth = 8\nwidth = 0.5\nshortcut = \"bn-projection\"\n[optim]\n{optim}\n"
        ))
        .unwrap();
        let be = Cpu::<T>::new();
        let mut m = PreResNet::new(&be, &cfg.model, 3, SIZE, CLASSES, BATCH).unwrap();
        m.init(&be, 7).unwrap();
        let mut opt = Optimizer::new(&be, &cfg.optim, &m.layout).unwrap();
        let h = opt.hyper_at(0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut sums, mut losses) = (Vec::new(), Vec::new());
        for _ in 0..STEPS {
            let images: Vec<T> =
                (0..BATCH * 3 * SIZE * SIZE).map(|_| T::from_f64(StandardNormal.sample(&mut rng))).collect();
            let labels: Vec<u32> = (0..BATCH).map(|_| rng.gen_range(0..CLASSES as u32)).collect();
            m.set_batch(&be, &images, &labels).unwrap();
            m.forward(&be, true);
            losses.push(m.loss_and_backward(&be).unwrap().loss_sum.to_bits());
            let step = opt.step(&be, &h, &mut m.params, &m.grads, true).unwrap().unwrap();
            sums.extend(step.iter().map(|(_, s)| [s.ww, s.gg, s.dd, s.wd].map(f64::to_bits)));
        }
        let bits = |b: &Vec<T>| b.iter().map(|&v| Real::to_f64(v).to_bits()).collect::<Vec<_>>();
        assert_eq!(be.len(&m.params), m.layout.num_params);
        let state = opt.state().map(|(_, b)| bits(b)).collect();
        State { params: bits(&m.params), state, sums, losses }
    })
}

fn assert_thread_count_does_not_matter<T: Real>(what: &str, kind: OptimKind) {
    let one = train::<T>(1, kind);
    assert!(one.params.iter().all(|&b| f64::from_bits(b).is_finite()), "{what}: non-finite parameters");
    assert_eq!(one.state.len(), kind.state_names().len());
    for threads in [2, 3] {
        let other = train::<T>(threads, kind);
        assert!(other == one, "{what} {kind}: {threads} threads differ from 1 thread");
    }
}

#[test]
fn f32_training_is_bit_identical_on_1_2_and_3_threads() {
    assert_thread_count_does_not_matter::<f32>("cpu-f32", OptimKind::Sgd);
}

#[test]
fn f64_training_is_bit_identical_on_1_2_and_3_threads() {
    assert_thread_count_does_not_matter::<f64>("cpu-f64", OptimKind::Sgd);
}

#[test]
fn adam_family_and_lion_training_is_bit_identical_on_1_2_and_3_threads() {
    for kind in [OptimKind::AdamW, OptimKind::Adam, OptimKind::Lion] {
        assert_thread_count_does_not_matter::<f32>("cpu-f32", kind);
    }
}
