//! The narrow set of operations that training needs, behind one trait.
//!
//! Two implementations: [`cpu::Cpu`], the readable reference (generic over f32/f64, reductions in f64),
//! and (with the CUDA issue) a cudarc backend. Everything the model does to tensors goes through this
//! trait, so the model, the optimizer and the trainer are written once.
//!
//! Layout conventions, shared by every backend:
//! - activations are NCHW, contiguous, in `Elem`;
//! - a conv weight is `[c_out][c_in][k][k]`;
//! - a BatchNorm's affine parameters are one view of `2·C` elements: `[γ (C) | β (C)]`; its running
//!   statistics likewise `[mean (C) | var (C)]`, and its saved batch statistics `[mean (C) | 1/σ (C)]`;
//! - a linear layer's parameters are one view `[W (out·in, row-major) | b (out)]`.
//!
//! Parameters, gradients and momenta each live in one flat buffer, so that the optimizer step and the
//! per-layer statistics are single passes over a segment table (one launch on a GPU).

pub mod cpu;
pub mod cuda;
pub mod layer;
pub mod ops;
pub mod real;
pub mod shapes;

pub use layer::Layer;
pub use ops::{
    AdamHyper, AdamStep, AddAssign, BnBackward, BnEval, BnTrain, ConvBackwardData, ConvBackwardFilter,
    ConvForward, LinearBackward, LinearForward, LionHyper, LionStep, OpArgs, OpShape, PoolBackward,
    PoolForward, SgdStep, ShortcutBackward, ShortcutForward, SoftmaxXent, SoftmaxXentEval,
};
pub use real::{GemmArgs, Real};
pub use shapes::{BnShape, ConvShape, LinearShape, LossShape, PoolShape, ShortcutShape};

use ops::{for_each_op, op_args};

/// Declares each op of the list in the trait.
macro_rules! declare_ops {
    ([] $B:ty; $($name:ident($($args:tt)*) -> $ret:ty;)*) => {$(
        #[doc = concat!("The op `", stringify!($name), "`: see its argument struct in ops.rs.")]
        fn $name(&self, a: op_args!($B, $($args)*)) -> $ret;
    )*};
}

use anyhow::{bail, ensure, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The arithmetic of the convolutions (`train.precision`). Master weights, gradients, BatchNorm and
/// its statistics, the loss, the optimizer and the statistics sums stay in the backend's `Elem`
/// whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum ComputePrecision {
    /// Convolutions in `Elem` (on the GPU: strict FP32, no TF32).
    #[default]
    #[serde(rename = "f32")]
    #[value(name = "f32")]
    F32,
    /// Convolutions with bf16 inputs, weights and outputs and f32 accumulation (cuDNN's
    /// PSEUDO_BFLOAT16 configuration); CUDA only. Not the default until validated on hardware
    /// (`ilr check` has rows for it).
    #[serde(rename = "bf16-conv")]
    #[value(name = "bf16-conv")]
    Bf16Conv,
}

impl ComputePrecision {
    pub fn label(self) -> &'static str {
        match self {
            ComputePrecision::F32 => "f32",
            ComputePrecision::Bf16Conv => "bf16-conv",
        }
    }
}

/// The host-visible results of a training step that the backend deferred (captured or replayed
/// as a CUDA graph): what `softmax_cross_entropy` and `sgd_step` would have returned, read once the
/// step has run. See [`Backend::step_begin`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeferredStep {
    pub loss: LossSums,
    /// One entry per segment of the step's `sgd_step`, when it was given a `sums` slice.
    pub sums: Option<Vec<StepSums>>,
}

/// Hyperparameters of one contiguous run of trained parameters in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Element range in the flat parameter buffer.
    pub offset: usize,
    pub len: usize,
    /// Learning rate η, L2 weight decay λ and heavy-ball momentum γ for this segment.
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
}

/// Per-segment sums for the statistics, accumulated in f64 during the optimizer step:
/// with w = w_t, g = ∇L (without the WD term) and d = w_{t+1} − w_t.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepSums {
    pub ww: f64,
    pub gg: f64,
    pub dd: f64,
    pub wd: f64,
}

impl std::ops::AddAssign for StepSums {
    fn add_assign(&mut self, o: Self) {
        self.ww += o.ww;
        self.gg += o.gg;
        self.dd += o.dd;
        self.wd += o.wd;
    }
}

/// Loss and accuracy counts of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSums {
    /// Σ over the batch of −log softmax(z)_y, in f64.
    pub loss_sum: f64,
    /// Number of samples whose arg-max logit equals the label (ties go to the lowest index).
    pub correct: usize,
}

/// Checks the arguments of an optimizer step (`sgd_step`, `adam_step`, `lion_step`), as every
/// backend does: the parameters and the other `buffers` (gradients, optimizer state; by name) have
/// one length `len`, every segment lies inside it, no two segments overlap, and `sums` (its length,
/// when given) has one entry per segment.
pub(crate) fn check_step_args(
    op: &str,
    segments: &[Segment],
    len: usize,
    buffers: &[(&str, usize)],
    sums: Option<usize>,
) -> Result<()> {
    if buffers.iter().any(|&(_, n)| n != len) {
        let lens: Vec<String> = buffers.iter().map(|(name, n)| format!("{name} {n}")).collect();
        bail!("{op}: buffer lengths differ: params {len}, {}", lens.join(", "));
    }
    let mut ranges = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        let end = s.offset.checked_add(s.len).with_context(|| format!("{op}: segment {i} overflows"))?;
        ensure!(end <= len, "{op}: segment {i} ({}..{end}) exceeds the buffer of {len}", s.offset);
        ranges.push((s.offset, end));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        ensure!(pair[0].1 <= pair[1].0, "{op}: segments {:?} and {:?} overlap", pair[0], pair[1]);
    }
    if let Some(n) = sums {
        ensure!(n == segments.len(), "{op}: {n} sums for {} segments", segments.len());
    }
    Ok(())
}

/// The operations a training step needs. `View`/`ViewMut` borrow a range of a buffer.
pub trait Backend: Sync {
    type Elem: Real;
    /// An owned buffer of `Elem` (host memory on the CPU, device memory on a GPU).
    type Buf: Send;
    /// An owned buffer of class labels.
    type Labels: Send;
    type View<'a>: Copy
    where
        Self: 'a;
    type ViewMut<'a>
    where
        Self: 'a;

    /// A short name for logs, e.g. "cpu-f32".
    fn name(&self) -> String;

    /// The GPU a run's provenance names (summary.json); None on the CPU.
    fn gpu_provenance(&self) -> Option<crate::util::provenance::GpuProvenance> {
        None
    }

    // ---- memory -------------------------------------------------------------------------------
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn alloc_labels(&self, len: usize) -> Result<Self::Labels>;
    fn len(&self, b: &Self::Buf) -> usize;
    fn view<'a>(&'a self, b: &'a Self::Buf, r: Range<usize>) -> Self::View<'a>;
    fn view_mut<'a>(&'a self, b: &'a mut Self::Buf, r: Range<usize>) -> Self::ViewMut<'a>;
    fn upload(&self, src: &[Self::Elem], dst: &mut Self::Buf) -> Result<()>;
    fn upload_labels(&self, src: &[u32], dst: &mut Self::Labels) -> Result<()>;
    fn download(&self, src: &Self::Buf, dst: &mut [Self::Elem]) -> Result<()>;
    /// Fill a view with zeros.
    fn zero(&self, x: Self::ViewMut<'_>);

    // ---- compute ops: one argument struct each (see ops.rs for their math) ---------------------
    for_each_op!(declare_ops! [] Self);

    // ---- precision and step capture (defaults: a backend without either) -----------------------
    /// Selects the arithmetic of the convolutions from now on. Returns whether this backend
    /// computes as asked: the default (the CPU) always computes in `Elem`, so it honours only
    /// [`ComputePrecision::F32`] and ignores (returns false for) anything else; the trainer then
    /// refuses to train rather than record full-precision results as bf16 ones.
    fn set_conv_precision(&self, p: ComputePrecision) -> bool {
        p == ComputePrecision::F32
    }

    /// Announces one training step: from this call to [`Self::step_end`] the caller issues exactly
    /// a training-mode forward pass, the loss and backward pass, and one `sgd_step`, on the same
    /// buffers every step, with the batch already uploaded, and no upload, download or evaluation.
    ///
    /// Returns false when the step runs eagerly as usual (always, by default; and a CUDA backend's
    /// warm-up step); then `step_end` must not be called. Returns true when the backend defers the
    /// step (captures it as a CUDA graph, or replays the graph captured earlier): the `LossSums`
    /// that `softmax_cross_entropy` returns and the sums that `sgd_step` writes are then
    /// placeholders (NaN), and [`Self::step_end`] runs the step and returns the real values.
    fn step_begin(&self) -> Result<bool> {
        Ok(false)
    }

    /// Ends a step for which [`Self::step_begin`] returned true: runs it and reads back its loss
    /// and (when `sgd_step` was asked for them) its statistics sums.
    fn step_end(&self) -> Result<DeferredStep> {
        bail!("{}: step_end without a deferred step_begin", self.name())
    }

    /// Forgets any captured step (its buffers are about to change or be freed) and ends a capture
    /// in progress. The next `step_begin` starts over with a warm-up step. No-op by default.
    fn step_reset(&self) {}
}
