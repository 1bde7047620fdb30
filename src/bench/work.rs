//! The benchmarked workloads, generic over the backend: each one allocates its buffers once
//! ([`Work::build`]) and returns a closure that runs one call. `ilr bench` and the criterion benches
//! take their cases from here, so both time exactly the same thing.

use super::cost::{self, Cost, Net, Reduction};
use super::ops::BenchOps;
use crate::backend::{
    AdamHyper, AdamStep, Backend, BnBackward, BnShape, BnTrain, ComputePrecision, LionHyper, LionStep, Real,
    Segment, StepSums,
};
use crate::model::PreResNet;
use crate::optim::{OptimConfig, Optimizer};
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
    /// `Optimizer::step` (SGD) over every trained tensor of PreResNet-`depth`, with or without the fused
    /// statistics sums.
    Sgd {
        depth: usize,
        sums: bool,
    },
    /// One fused AdamW (`Backend::adam_step`, decoupled) or Lion (`Backend::lion_step`) step over
    /// every tensor of PreResNet-`depth`, one segment per tensor, without the statistics sums.
    Adam {
        depth: usize,
    },
    Lion {
        depth: usize,
    },
    /// A per-segment reduction over the parameters of PreResNet-`depth`, one segment per tensor.
    Reduce {
        depth: usize,
        kind: Reduction,
    },
    /// One training step of `net`: upload the batch, forward, loss, backward, SGD step (without
    /// statistics), as `mode` says.
    TrainStep {
        net: Net,
        batch: usize,
        mode: StepMode,
    },
}

/// How a training step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepMode {
    /// Bracket the step with `Backend::step_begin`/`step_end` as the trainer does: captured and
    /// replayed as a CUDA graph where the backend can.
    pub graphs: bool,
    /// The arithmetic of the convolutions.
    pub precision: ComputePrecision,
}

impl StepMode {
    /// As the trainer runs on a GPU by default: graphs, f32.
    pub const GRAPHS: StepMode = StepMode { graphs: true, precision: ComputePrecision::F32 };
    pub const GRAPHS_BF16: StepMode = StepMode { graphs: true, precision: ComputePrecision::Bf16Conv };
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

/// A training-mode BatchNorm forward over whole buffers: [x, affine] → [running, saved, y].
fn bn_forward<B: BenchOps>(
    be: &B,
    s: &BnShape,
    [x, affine]: [&B::Buf; 2],
    [running, saved, y]: [&mut B::Buf; 3],
) {
    let (ra, rs, ry) = (all(be, running), all(be, saved), all(be, y));
    be.batchnorm_forward_train(BnTrain {
        s,
        x: be.view(x, all(be, x)),
        affine: be.view(affine, 0..2 * s.c),
        running: be.view_mut(running, ra),
        saved: be.view_mut(saved, rs),
        y: be.view_mut(y, ry),
    });
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
            Work::Adam { .. } => "adamw_step",
            Work::Lion { .. } => "lion_step",
            Work::Reduce { kind, .. } => kind.name(),
            Work::TrainStep { .. } => "train_step",
        }
    }

    /// The shape, as a label that peers (peers/pytorch) reproduce exactly.
    pub fn shape(&self) -> String {
        match self {
            Work::Copy { bytes } => format!("{} MiB", bytes >> 20),
            Work::BnForward(s) | Work::BnBackward(s) => cost::bn_label(s),
            Work::Sgd { depth, .. }
            | Work::Adam { depth }
            | Work::Lion { depth }
            | Work::Reduce { depth, .. } => {
                format!("preresnet{depth} p{}", cost::net_layout(*depth).num_params)
            }
            Work::TrainStep { net, batch, .. } => net.step_label(*batch),
        }
    }

    /// Whether `--filter` `f` selects this case: its name or its shape label contains `f`.
    pub fn matches(&self, f: &str) -> bool {
        self.name().contains(f) || self.shape().contains(f)
    }

    /// Bytes and FLOPs of one call (a training step counts only its conv/linear FLOPs).
    pub fn cost(&self) -> Cost {
        match self {
            Work::Copy { bytes } => cost::copy(*bytes),
            Work::BnForward(s) => cost::bn_forward_train(s),
            Work::BnBackward(s) => cost::bn_backward(s),
            Work::Sgd { depth, sums } => cost::sgd_step(cost::net_layout(*depth).num_params, *sums),
            Work::Adam { depth } => cost::adamw_step(cost::net_layout(*depth).num_params),
            Work::Lion { depth } => cost::lion_step(cost::net_layout(*depth).num_params),
            Work::Reduce { depth, kind } => cost::reduction(*kind, cost::net_layout(*depth).num_params),
            Work::TrainStep { net, batch, .. } => {
                Cost { bytes: 0, min_bytes: 0, flops: cost::train_step_flops(&net.layout(), *batch) }
            }
        }
    }

    /// How this case differs from the plain one of the same name and shape, appended to the
    /// implementation label: "", " graphs" or " graphs bf16-conv".
    pub fn variant(&self) -> String {
        match self {
            Work::TrainStep { mode, .. } => {
                let graphs = if mode.graphs { " graphs" } else { "" };
                match mode.precision {
                    ComputePrecision::F32 => graphs.to_string(),
                    p => format!("{graphs} {}", p.label()),
                }
            }
            _ => String::new(),
        }
    }

    /// Images processed per call (training steps only).
    pub fn images(&self) -> Option<usize> {
        match self {
            Work::TrainStep { batch, .. } => Some(*batch),
            _ => None,
        }
    }

    /// Bytes of the distinct buffers one call touches.
    pub fn footprint(&self) -> usize {
        let params = |d: usize| cost::net_layout(d).num_params;
        match *self {
            Work::Copy { bytes } => 2 * bytes,
            Work::BnForward(s) => 8 * s.len(),
            Work::BnBackward(s) => 16 * s.len(),
            Work::Sgd { depth, .. } | Work::Lion { depth } => 12 * params(depth),
            Work::Adam { depth } => 16 * params(depth),
            Work::Reduce { depth, kind } => cost::reduction(kind, params(depth)).min_bytes as usize,
            Work::TrainStep { .. } => usize::MAX,
        }
    }

    /// Allocates and fills the buffers on `be`, and returns one call.
    ///
    /// A kernel whose buffers are smaller than `cold_bytes` gets enough independent copies of them to
    /// fill `cold_bytes` (each run once here), and the calls cycle through the copies: each call then
    /// streams its data from DRAM, as in training (where a whole forward and backward pass runs
    /// between two optimizer steps), instead of finding it in a cache warmed by the previous call.
    /// Make `cold_bytes` a few times the last-level cache (0: warm).
    pub fn build<'a, B: BenchOps>(&self, be: &'a B, cold_bytes: usize) -> Result<Runner<'a>> {
        let sets = match self {
            Work::Copy { .. } | Work::TrainStep { .. } => 1,
            _ => cold_bytes.div_ceil(self.footprint().max(1)).clamp(1, 1 << 16),
        };
        let mut runners: Vec<Runner<'a>> = Vec::with_capacity(sets);
        match *self {
            Work::Copy { bytes } => {
                let n = bytes / std::mem::size_of::<B::Elem>();
                // Written, not just allocated: untouched zero pages would make a CPU copy look fast.
                let src = upload(be, &vec![B::Elem::from_f64(1.0); n])?;
                let mut dst = be.alloc(n)?;
                runners.push(Box::new(move || be.copy(&src, &mut dst)));
            }
            Work::BnForward(s) => {
                let (hx, ha) = (random::<B::Elem>(s.len(), 2), random::<B::Elem>(2 * s.c, 3));
                for _ in 0..sets {
                    let (x, affine) = (upload(be, &hx)?, upload(be, &ha)?);
                    let (mut running, mut saved, mut y) =
                        (be.alloc(2 * s.c)?, be.alloc(2 * s.c)?, be.alloc(s.len())?);
                    runners.push(Box::new(move || {
                        bn_forward(be, &s, [&x, &affine], [&mut running, &mut saved, &mut y]);
                        Ok(())
                    }));
                }
            }
            Work::BnBackward(s) => {
                let (hx, hdy) = (random::<B::Elem>(s.len(), 2), random::<B::Elem>(s.len(), 4));
                let ha = random::<B::Elem>(2 * s.c, 3);
                for _ in 0..sets {
                    let (x, dy, affine) = (upload(be, &hx)?, upload(be, &hdy)?, upload(be, &ha)?);
                    let (mut running, mut saved, mut y) =
                        (be.alloc(2 * s.c)?, be.alloc(2 * s.c)?, be.alloc(s.len())?);
                    let ry = all(be, &y);
                    // A real forward gives y (the ReLU mask) and the saved statistics.
                    bn_forward(be, &s, [&x, &affine], [&mut running, &mut saved, &mut y]);
                    let (mut dx, mut d_affine) = (be.alloc(s.len())?, be.alloc(2 * s.c)?);
                    runners.push(Box::new(move || {
                        be.batchnorm_backward(BnBackward {
                            s: &s,
                            x: be.view(&x, ry.clone()),
                            y: be.view(&y, ry.clone()),
                            dy: be.view(&dy, ry.clone()),
                            affine: be.view(&affine, 0..2 * s.c),
                            saved: be.view(&saved, 0..2 * s.c),
                            dx: be.view_mut(&mut dx, ry.clone()),
                            d_affine: be.view_mut(&mut d_affine, 0..2 * s.c),
                        });
                        Ok(())
                    }));
                }
            }
            Work::Sgd { depth, sums } => {
                let layout = cost::net_layout(depth);
                let hw: Vec<B::Elem> =
                    crate::model::init_params(&layout, 0).into_iter().map(B::Elem::from_f64).collect();
                let hg = random::<B::Elem>(layout.num_params, 5);
                for _ in 0..sets {
                    let (mut params, grads) = (upload(be, &hw)?, upload(be, &hg)?);
                    let mut opt = Optimizer::new(be, &OptimConfig::default(), &layout)?;
                    let h = opt.hyper_at(0.0);
                    runners.push(Box::new(move || opt.step(be, &h, &mut params, &grads, sums).map(|_| ())));
                }
            }
            Work::Adam { depth } | Work::Lion { depth } => {
                let (n, mut segs) = tensor_segments(depth);
                // The lion-pytorch and torch.optim.AdamW defaults' scale: η = 1e-3, λ = 1e-2.
                segs.iter_mut().for_each(|s| (s.lr, s.wd, s.momentum) = (1e-3, 1e-2, 0.0));
                let (hw, hg) = (random::<B::Elem>(n, 5), random::<B::Elem>(n, 6));
                let adam = matches!(self, Work::Adam { .. });
                for _ in 0..sets {
                    let (mut w, g, mut m, mut v) =
                        (upload(be, &hw)?, upload(be, &hg)?, be.alloc(n)?, be.alloc(n)?);
                    let (segs, mut t) = (segs.clone(), 0u64);
                    runners.push(Box::new(move || {
                        t += 1;
                        if adam {
                            let hyper = AdamHyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, t, decoupled: true };
                            let (params, grads, m, v) = (&mut w, &g, &mut m, &mut v);
                            be.adam_step(AdamStep { segments: &segs, hyper, params, grads, m, v, sums: None })
                        } else {
                            let hyper = LionHyper { beta1: 0.9, beta2: 0.99 };
                            let (params, grads, m) = (&mut w, &g, &mut m);
                            be.lion_step(LionStep { segments: &segs, hyper, params, grads, m, sums: None })
                        }
                    }));
                }
            }
            Work::Reduce { depth, kind } => {
                let (n, segs) = tensor_segments(depth);
                let host: Vec<Vec<B::Elem>> = (6..9).map(|seed| random(n, seed)).collect();
                for _ in 0..sets {
                    let (w, g, wn) = (upload(be, &host[0])?, upload(be, &host[1])?, upload(be, &host[2])?);
                    let (segs, mut out) = (segs.clone(), vec![StepSums::default(); segs.len()]);
                    runners.push(Box::new(move || match kind {
                        Reduction::SqNorm => be.segment_sums(&segs, &w, None, None, &mut out),
                        Reduction::Sums4 => be.segment_sums(&segs, &w, Some(&g), Some(&wn), &mut out),
                    }));
                }
            }
            Work::TrainStep { net, batch, mode } => {
                let guard = StepGuard::new(be, mode.precision)?;
                let mut step = TrainStep::new(be, &net, batch)?;
                step.graphs = mode.graphs;
                if mode.graphs {
                    // Warm-up and capture, so that the timed calls replay the graph.
                    step.run(be)?;
                    step.run(be)?;
                }
                runners.push(Box::new(move || {
                    let _ = &guard;
                    step.run(be)
                }));
            }
        }
        if runners.len() == 1 {
            return Ok(runners.pop().expect("one runner"));
        }
        // One call per copy now, so that no timed call pays for first-touch page faults (buffers
        // the backend allocated zeroed, such as the momenta, are not mapped until first written).
        for r in &mut runners {
            r()?;
        }
        let mut next = 0;
        Ok(Box::new(move || {
            let r = runners[next]();
            next = (next + 1) % runners.len();
            r
        }))
    }
}

/// Sets the convolution precision and forgets any captured step; when dropped, forgets the step
/// (its buffers are about to be freed) and restores f32.
struct StepGuard<'a, B: Backend>(&'a B);

impl<'a, B: Backend> StepGuard<'a, B> {
    fn new(be: &'a B, precision: ComputePrecision) -> Result<Self> {
        be.step_reset();
        if !be.set_conv_precision(precision) {
            be.set_conv_precision(ComputePrecision::F32);
            anyhow::bail!("{} cannot compute convolutions in {}", be.name(), precision.label());
        }
        Ok(StepGuard(be))
    }
}

impl<B: Backend> Drop for StepGuard<'_, B> {
    fn drop(&mut self) {
        self.0.step_reset();
        self.0.set_conv_precision(ComputePrecision::F32);
    }
}

/// A PreResNet, its optimizer and one fixed random batch: the unit of `train_step`.
pub struct TrainStep<B: BenchOps> {
    pub model: PreResNet<B>,
    opt: Optimizer<B>,
    images: Vec<B::Elem>,
    labels: Vec<u32>,
    /// Bracket the step with `step_begin`/`step_end` (CUDA graphs where the backend has them).
    pub graphs: bool,
}

impl<B: BenchOps> TrainStep<B> {
    /// `net` (on its `size`×`size`×3 inputs, 10 classes), SGD with η = 0.1, λ = 5e-4, γ = 0.9.
    pub fn new(be: &B, net: &Net, batch: usize) -> Result<Self> {
        let mut model = PreResNet::new(be, &net.config(), cost::IN_CHANNELS, net.size, cost::CLASSES, batch)?;
        model.init(be, 0)?;
        let opt = Optimizer::new(be, &OptimConfig::default(), &model.layout)?;
        let images = random(batch * cost::IN_CHANNELS * net.size * net.size, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let labels = (0..batch).map(|_| rng.gen_range(0..cost::CLASSES as u32)).collect();
        Ok(Self { model, opt, images, labels, graphs: false })
    }

    /// One step, as the trainer runs it (the batch upload stays outside a deferred step).
    pub fn run(&mut self, be: &B) -> Result<()> {
        self.model.set_batch(be, &self.images, &self.labels)?;
        let deferred = self.graphs && be.step_begin()?;
        self.model.forward(be, true);
        self.model.loss_and_backward(be)?;
        let h = self.opt.hyper_at(0.0);
        self.opt.step(be, &h, &mut self.model.params, &self.model.grads, false)?;
        if deferred {
            be.step_end()?;
        }
        Ok(())
    }
}

/// The training steps of the tiny recipes (experiments/*.tiny.toml): PreResNet-8 ×0.5 at batch 32
/// on 8×8 and 16×16 images.
pub const TINY_STEPS: [(Net, usize); 2] = [(Net::tiny(8), 32), (Net::tiny(16), 32)];

/// Which nets and batch sizes a suite covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    /// Depths of the width-1 PreResNets on 32×32 images (kernel shapes and training steps).
    pub depths: Vec<usize>,
    /// Batch sizes of the BatchNorm shapes.
    pub kernel_batches: Vec<usize>,
    /// Batch sizes of the training steps of the `depths` nets.
    pub train_batches: Vec<usize>,
    /// More training steps, each (net, batch) as given, after those of `depths` (by default
    /// [`TINY_STEPS`]).
    pub extra_steps: Vec<(Net, usize)>,
    pub copy_bytes: usize,
    /// How the training steps run (one case per mode).
    pub step_modes: Vec<StepMode>,
    /// Kernels cycle through copies of their buffers that fill this many bytes (see
    /// [`Work::build`]): several times the last-level cache, so each call runs from DRAM.
    pub cold_bytes: usize,
}

impl Suite {
    /// The CPU suite: kernels at batch 128 and 512, training steps at 128, and the tiny recipes'
    /// steps.
    pub fn cpu() -> Self {
        Suite {
            depths: vec![20, 32, 56],
            kernel_batches: vec![128, 512],
            train_batches: vec![128],
            extra_steps: TINY_STEPS.to_vec(),
            copy_bytes: 256 << 20,
            step_modes: vec![StepMode::default()],
            cold_bytes: 256 << 20,
        }
    }

    /// The GPU suite: training steps at 128 and 512 too (the tiny recipes' at their batch 32), each
    /// eager, as a CUDA graph and as a graph with bf16 convolutions, and copy and cold sets far larger
    /// than L2 (60 MiB on H200).
    pub fn gpu() -> Self {
        Suite {
            train_batches: vec![128, 512],
            copy_bytes: 1 << 30,
            step_modes: vec![StepMode::default(), StepMode::GRAPHS, StepMode::GRAPHS_BF16],
            cold_bytes: 1 << 30,
            ..Self::cpu()
        }
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
            v.push(Work::Adam { depth });
            v.push(Work::Lion { depth });
        }
        for &depth in &self.depths {
            v.push(Work::Reduce { depth, kind: Reduction::SqNorm });
            v.push(Work::Reduce { depth, kind: Reduction::Sums4 });
        }
        v
    }

    /// Per mode: every depth at every train batch, then the extra steps.
    pub fn train_steps(&self) -> Vec<Work> {
        let mut v = Vec::new();
        for &mode in &self.step_modes {
            for &batch in &self.train_batches {
                for &depth in &self.depths {
                    v.push(Work::TrainStep { net: Net::cifar(depth), batch, mode });
                }
            }
            for &(net, batch) in &self.extra_steps {
                v.push(Work::TrainStep { net, batch, mode });
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
        let suite = Suite {
            depths: vec![8],
            kernel_batches: vec![2],
            train_batches: vec![2],
            extra_steps: vec![(Net::tiny(8), 2)],
            copy_bytes: 1 << 20,
            // On the CPU a "graphs" step runs eagerly (step_begin declines).
            step_modes: vec![StepMode::default(), StepMode::GRAPHS],
            cold_bytes: 1 << 20,
        };
        let cases: Vec<Work> = suite.kernels().into_iter().chain(suite.train_steps()).collect();
        assert_eq!(cases.iter().filter(|w| w.name() == "bn_fwd_train").count(), 3);
        for w in cases {
            // The small kernels cycle through several copies of their buffers.
            let mut run = w.build(&be, suite.cold_bytes).unwrap();
            for _ in 0..3 {
                run().unwrap();
            }
            assert!(w.cost().flops > 0 || w.name() == "copy", "{w:?}");
        }
        let bf16 = Work::TrainStep { net: Net::cifar(8), batch: 2, mode: StepMode::GRAPHS_BF16 };
        assert_eq!(bf16.variant(), " graphs bf16-conv");
        assert!(bf16.build(&be, 0).is_err(), "the CPU computes convolutions in f32 only");
    }

    #[test]
    fn default_train_steps_have_the_peer_labels() {
        let shapes = |s: Suite| s.train_steps().iter().map(Work::shape).collect::<Vec<_>>();
        // The 32×32 labels are those of stored JSON and of peers/pytorch: unchanged.
        let cifar = ["preresnet20 b128 32x32", "preresnet32 b128 32x32", "preresnet56 b128 32x32"];
        let tiny = ["preresnet8x0.5 b32 8x8", "preresnet8x0.5 b32 16x16"];
        assert_eq!(shapes(Suite::cpu()), [&cifar[..], &tiny[..]].concat());
        let gpu = Suite::gpu().train_steps();
        assert_eq!(gpu.len(), 3 * (2 * 3 + 2));
        for mode in Suite::gpu().step_modes {
            let of_mode: Vec<String> = gpu
                .iter()
                .filter(|w| matches!(w, Work::TrainStep { mode: m, .. } if *m == mode))
                .map(Work::shape)
                .collect();
            assert_eq!(of_mode.len(), 8);
            assert_eq!(&of_mode[6..], tiny);
        }
        // `--filter preresnet8x0.5` keeps exactly the tiny steps (and no kernel but the copy, which
        // always runs).
        let cpu = Suite::cpu();
        let kept: Vec<String> =
            cpu.train_steps().iter().filter(|w| w.matches("preresnet8x0.5")).map(Work::shape).collect();
        assert_eq!(kept, tiny);
        assert!(!cpu.kernels().iter().any(|w| w.matches("preresnet8x0.5")));
        assert_eq!(cpu.train_steps().iter().filter(|w| w.matches("train_step")).count(), 5);
    }

    #[test]
    fn tiny_step_flops_from_the_conv_shapes() {
        // PreResNet-8 ×0.5: stages of 8, 16, 32 channels, one block each, option-A shortcuts (no
        // conv); stages 2 and 3 start with a stride-2 conv1. MACs per image of a 3×3 conv: c_out ·
        // c_in · 9 · output pixels.
        let macs = |c_out: u64, c_in: u64, side: u64| c_out * c_in * 9 * side * side;
        for (size, want) in [(8u64, 37_220_352u64), (16, 148_697_088)] {
            let stem = macs(8, 3, size);
            let rest = 2 * macs(8, 8, size)
                + macs(16, 8, size / 2)
                + macs(16, 16, size / 2)
                + macs(32, 16, size / 4)
                + macs(32, 32, size / 4);
            // 2 FLOPs per MAC; forward + weight gradient for the stem, + input gradient for the
            // others; the linear layer 32 → 10 three times.
            let per_image = 2 * (2 * stem + 3 * rest) + 2 * 3 * 32 * 10;
            assert_eq!(32 * per_image, want);
            let w = Work::TrainStep { net: Net::tiny(size as usize), batch: 32, mode: StepMode::default() };
            assert_eq!(w.cost(), Cost { bytes: 0, min_bytes: 0, flops: want }, "{}", w.shape());
            assert_eq!((w.name(), w.images(), w.variant().as_str()), ("train_step", Some(32), ""));
        }
        // The tiny net's layout: 8×8 inputs end in a 2×2 plane with 32 features.
        let l = Net::tiny(8).layout();
        assert_eq!((l.image_size, l.features, l.blocks.last().unwrap().size_out()), (8, 32, 2));
    }
}
