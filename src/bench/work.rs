//! The benchmarked workloads, generic over the backend: each one allocates its buffers once
//! ([`Work::build`]) and returns a closure that runs one call. `ilr bench` and the criterion benches
//! take their cases from here, so both time exactly the same thing.

use super::cost::{self, Cost, Reduction};
use super::ops::BenchOps;
use crate::backend::{BnShape, Real, Segment, StepSums};
use crate::model::PreResNet;
use crate::optim::{OptimConfig, Sgd};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One call of a workload, with its buffers captured.
pub type Runner<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// What one benchmark case runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// dst = src over `bytes` bytes: the bandwidth ceiling.
    Copy {
        bytes: usize,
    },
    BnForward(BnShape),
    BnBackward(BnShape),
    /// `Sgd::step` over every trained tensor of PreResNet-`depth`, with or without the fused
    /// statistics sums.
    Sgd {
        depth: usize,
        sums: bool,
    },
    /// A per-segment reduction over the parameters of PreResNet-`depth`, one segment per tensor.
    Reduce {
        depth: usize,
        kind: Reduction,
    },
    /// One training step of PreResNet-`depth` on 32×32 images: upload the batch, forward, loss,
    /// backward, SGD step (without statistics).
    TrainStep {
        depth: usize,
        batch: usize,
    },
}

/// Values uniform in [−1, 1), reproducible from `seed`.
fn random<T: Real>(len: usize, seed: u64) -> Vec<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| T::from_f64(rng.gen_range(-1.0..1.0))).collect()
}

fn upload<B: BenchOps>(be: &B, host: &[B::Elem]) -> Result<B::Buf> {
    let mut b = be.alloc(host.len())?;
    be.upload(host, &mut b)?;
    Ok(b)
}

fn all<B: BenchOps>(be: &B, b: &B::Buf) -> std::ops::Range<usize> {
    0..be.len(b)
}

/// One segment per tensor of the layout (the shape of the per-layer statistics).
fn tensor_segments(depth: usize) -> (usize, Vec<Segment>) {
    let l = cost::net_layout(depth);
    let segs = l
        .tensors
        .iter()
        .map(|t| Segment { offset: t.offset, len: t.len, lr: 0.1, wd: 5e-4, momentum: 0.9 })
        .collect();
    (l.num_params, segs)
}

impl Work {
    pub fn name(&self) -> &'static str {
        match self {
            Work::Copy { .. } => "copy",
            Work::BnForward(_) => "bn_fwd_train",
            Work::BnBackward(_) => "bn_bwd",
            Work::Sgd { sums: false, .. } => "sgd_step",
            Work::Sgd { sums: true, .. } => "sgd_step_sums",
            Work::Reduce { kind, .. } => kind.name(),
            Work::TrainStep { .. } => "train_step",
        }
    }

    /// The shape, as a label that peers (bench/pytorch) reproduce exactly.
    pub fn shape(&self) -> String {
        match self {
            Work::Copy { bytes } => format!("{} MiB", bytes >> 20),
            Work::BnForward(s) | Work::BnBackward(s) => cost::bn_label(s),
            Work::Sgd { depth, .. } | Work::Reduce { depth, .. } => {
                format!("preresnet{depth} p{}", cost::net_layout(*depth).num_params)
            }
            Work::TrainStep { depth, batch } => format!("preresnet{depth} b{batch} 32x32"),
        }
    }

    /// Bytes and FLOPs of one call (a training step counts only its conv/linear FLOPs).
    pub fn cost(&self) -> Cost {
        match self {
            Work::Copy { bytes } => cost::copy(*bytes),
            Work::BnForward(s) => cost::bn_forward_train(s),
            Work::BnBackward(s) => cost::bn_backward(s),
            Work::Sgd { depth, sums } => cost::sgd_step(cost::net_layout(*depth).num_params, *sums),
            Work::Reduce { depth, kind } => cost::reduction(*kind, cost::net_layout(*depth).num_params),
            Work::TrainStep { depth, batch } => Cost {
                bytes: 0,
                min_bytes: 0,
                flops: cost::train_step_flops(&cost::net_layout(*depth), *batch),
            },
        }
    }

    /// Images processed per call (training steps only).
    pub fn images(&self) -> Option<usize> {
        match self {
            Work::TrainStep { batch, .. } => Some(*batch),
            _ => None,
        }
    }

    /// Allocates and fills the buffers on `be`, and returns one call.
    pub fn build<'a, B: BenchOps>(&self, be: &'a B) -> Result<Runner<'a>> {
        Ok(match *self {
            Work::Copy { bytes } => {
                let n = bytes / std::mem::size_of::<B::Elem>();
                // Written, not just allocated: untouched zero pages would make a CPU copy look fast.
                let src = upload(be, &vec![B::Elem::from_f64(1.0); n])?;
                let mut dst = be.alloc(n)?;
                Box::new(move || be.copy(&src, &mut dst))
            }
            Work::BnForward(s) => {
                let x = upload(be, &random::<B::Elem>(s.len(), 2))?;
                let affine = upload(be, &random::<B::Elem>(2 * s.c, 3))?;
                let (mut running, mut saved, mut y) =
                    (be.alloc(2 * s.c)?, be.alloc(2 * s.c)?, be.alloc(s.len())?);
                Box::new(move || {
                    let (ra, rs, ry) = (all(be, &running), all(be, &saved), all(be, &y));
                    be.batchnorm_forward_train(
                        &s,
                        be.view(&x, all(be, &x)),
                        be.view(&affine, 0..2 * s.c),
                        be.view_mut(&mut running, ra),
                        be.view_mut(&mut saved, rs),
                        be.view_mut(&mut y, ry),
                    );
                    Ok(())
                })
            }
            Work::BnBackward(s) => {
                let x = upload(be, &random::<B::Elem>(s.len(), 2))?;
                let dy = upload(be, &random::<B::Elem>(s.len(), 4))?;
                let affine = upload(be, &random::<B::Elem>(2 * s.c, 3))?;
                let (mut running, mut saved, mut y) =
                    (be.alloc(2 * s.c)?, be.alloc(2 * s.c)?, be.alloc(s.len())?);
                let (ra, rs, ry) = (all(be, &running), all(be, &saved), all(be, &y));
                // A real forward gives y (the ReLU mask) and the saved statistics.
                be.batchnorm_forward_train(
                    &s,
                    be.view(&x, all(be, &x)),
                    be.view(&affine, 0..2 * s.c),
                    be.view_mut(&mut running, ra),
                    be.view_mut(&mut saved, rs),
                    be.view_mut(&mut y, ry.clone()),
                );
                let (mut dx, mut d_affine) = (be.alloc(s.len())?, be.alloc(2 * s.c)?);
                Box::new(move || {
                    be.batchnorm_backward(
                        &s,
                        be.view(&x, ry.clone()),
                        be.view(&y, ry.clone()),
                        be.view(&dy, ry.clone()),
                        be.view(&affine, 0..2 * s.c),
                        be.view(&saved, 0..2 * s.c),
                        be.view_mut(&mut dx, ry.clone()),
                        be.view_mut(&mut d_affine, 0..2 * s.c),
                    );
                    Ok(())
                })
            }
            Work::Sgd { depth, sums } => {
                let layout = cost::net_layout(depth);
                let host: Vec<B::Elem> =
                    crate::model::init_params(&layout, 0).into_iter().map(B::Elem::from_f64).collect();
                let mut params = upload(be, &host)?;
                let grads = upload(be, &random::<B::Elem>(layout.num_params, 5))?;
                let mut opt = Sgd::new(be, &OptimConfig::default(), &layout)?;
                let h = opt.hyper_at(0.0);
                Box::new(move || opt.step(be, &h, &mut params, &grads, sums).map(|_| ()))
            }
            Work::Reduce { depth, kind } => {
                let (n, segs) = tensor_segments(depth);
                let w = upload(be, &random::<B::Elem>(n, 6))?;
                let g = upload(be, &random::<B::Elem>(n, 7))?;
                let wn = upload(be, &random::<B::Elem>(n, 8))?;
                let mut out = vec![StepSums::default(); segs.len()];
                Box::new(move || match kind {
                    Reduction::SqNorm => be.segment_sums(&segs, &w, None, None, &mut out),
                    Reduction::Sums4 => be.segment_sums(&segs, &w, Some(&g), Some(&wn), &mut out),
                })
            }
            Work::TrainStep { depth, batch } => {
                let mut step = TrainStep::new(be, depth, batch)?;
                Box::new(move || step.run(be))
            }
        })
    }
}

/// A PreResNet, its optimizer and one fixed random batch: the unit of `train_step`.
pub struct TrainStep<B: BenchOps> {
    pub model: PreResNet<B>,
    opt: Sgd<B>,
    images: Vec<B::Elem>,
    labels: Vec<u32>,
}

impl<B: BenchOps> TrainStep<B> {
    /// PreResNet-`depth` on 32×32×3 inputs with 10 classes, SGD with η = 0.1, λ = 5e-4, γ = 0.9.
    pub fn new(be: &B, depth: usize, batch: usize) -> Result<Self> {
        let cfg = cost::net_config(depth);
        let mut model = PreResNet::new(be, &cfg, cost::IN_CHANNELS, cost::IMAGE_SIZE, cost::CLASSES, batch)?;
        model.init(be, 0)?;
        let opt = Sgd::new(be, &OptimConfig::default(), &model.layout)?;
        let images = random(batch * cost::IN_CHANNELS * cost::IMAGE_SIZE * cost::IMAGE_SIZE, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let labels = (0..batch).map(|_| rng.gen_range(0..cost::CLASSES as u32)).collect();
        Ok(Self { model, opt, images, labels })
    }

    pub fn run(&mut self, be: &B) -> Result<()> {
        self.model.set_batch(be, &self.images, &self.labels)?;
        self.model.forward(be, true);
        self.model.loss_and_backward(be)?;
        let h = self.opt.hyper_at(0.0);
        self.opt.step(be, &h, &mut self.model.params, &self.model.grads, false)?;
        Ok(())
    }
}

/// Which nets and batch sizes a suite covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub depths: Vec<usize>,
    /// Batch sizes of the BatchNorm shapes.
    pub kernel_batches: Vec<usize>,
    /// Batch sizes of the training steps.
    pub train_batches: Vec<usize>,
    pub copy_bytes: usize,
}

impl Suite {
    /// The CPU suite: kernels at batch 128 and 512, training steps at 128.
    pub fn cpu() -> Self {
        Suite {
            depths: vec![20, 32, 56],
            kernel_batches: vec![128, 512],
            train_batches: vec![128],
            copy_bytes: 256 << 20,
        }
    }

    /// The GPU suite: training steps at 128 and 512 too, and a copy far larger than L2 (60 MiB on
    /// H200).
    pub fn gpu() -> Self {
        Suite { train_batches: vec![128, 512], copy_bytes: 1 << 30, ..Self::cpu() }
    }

    /// Copy first (the ceiling the others are compared with), then BN, optimizer, reductions.
    pub fn kernels(&self) -> Vec<Work> {
        let mut v = vec![Work::Copy { bytes: self.copy_bytes }];
        for &b in &self.kernel_batches {
            for (s, _) in cost::distinct_bn_shapes(&self.depths, b) {
                v.push(Work::BnForward(s));
                v.push(Work::BnBackward(s));
            }
        }
        for &depth in &self.depths {
            v.push(Work::Sgd { depth, sums: false });
            v.push(Work::Sgd { depth, sums: true });
        }
        for &depth in &self.depths {
            v.push(Work::Reduce { depth, kind: Reduction::SqNorm });
            v.push(Work::Reduce { depth, kind: Reduction::Sums4 });
        }
        v
    }

    pub fn train_steps(&self) -> Vec<Work> {
        let mut v = Vec::new();
        for &batch in &self.train_batches {
            for &depth in &self.depths {
                v.push(Work::TrainStep { depth, batch });
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn every_small_case_builds_and_runs() {
        let be = Cpu::<f32>::new();
        let suite =
            Suite { depths: vec![8], kernel_batches: vec![2], train_batches: vec![2], copy_bytes: 1 << 20 };
        let cases: Vec<Work> = suite.kernels().into_iter().chain(suite.train_steps()).collect();
        assert_eq!(cases.iter().filter(|w| w.name() == "bn_fwd_train").count(), 3);
        for w in cases {
            let mut run = w.build(&be).unwrap();
            run().unwrap();
            run().unwrap();
            assert!(w.cost().flops > 0 || w.name() == "copy", "{w:?}");
        }
    }
}
