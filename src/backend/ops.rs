//! The compute ops of [`super::Backend`]: one argument struct per op, and [`for_each_op!`], the one
//! list that the trait ([`super::Backend`]), the layering adapter ([`super::Layer`]) and its
//! forwarding impl are written from.
//!
//! Each struct is generic over the backend's read view `V` and write view `M` (and, for the loss,
//! its label buffer `L`; for the optimizer, its owned buffer `B`), so that a wrapper whose views
//! are its inner backend's passes the struct on unchanged. Each names its operands as the math
//! does; the shape comes first. Outputs marked "overwritten" are written whole; "+=" accumulates.
//!
//! Adding an op: its struct here with an [`OpArgs`] impl, a line in [`for_each_op!`], the CPU
//! code (src/backend/cpu) and the CUDA code (src/backend/cuda). Nothing else repeats it.

use super::{BnShape, ConvShape, LinearShape, LossShape, PoolShape, Segment, ShortcutShape, StepSums};

/// y = conv(x, w), overwritten. x: [n][c_in][h][w], w: [c_out][c_in][k][k], y: [n][c_out][h'][w'].
pub struct ConvForward<'a, V, M> {
    pub s: &'a ConvShape,
    pub x: V,
    pub w: V,
    pub y: M,
}

/// dx = conv_transpose(dy, w), overwritten.
pub struct ConvBackwardData<'a, V, M> {
    pub s: &'a ConvShape,
    pub dy: V,
    pub w: V,
    pub dx: M,
}

/// dw = Σ_n dy ⋆ x, overwritten.
pub struct ConvBackwardFilter<'a, V, M> {
    pub s: &'a ConvShape,
    pub x: V,
    pub dy: V,
    pub dw: M,
}

/// BatchNorm in training mode. Per channel c: μ = mean(x), σ² = biased var(x);
/// y = γ (x−μ)/sqrt(σ²+ε) + β, then ReLU if `s.relu` (overwritten). Writes `saved` =
/// [μ | 1/sqrt(σ²+ε)] and updates running = (1−m)·running + m·[μ | unbiased σ²].
/// `affine` = [γ | β].
pub struct BnTrain<'a, V, M> {
    pub s: &'a BnShape,
    pub x: V,
    pub affine: V,
    pub running: M,
    pub saved: M,
    pub y: M,
}

/// BatchNorm in eval mode: y = γ (x − running μ)/sqrt(running σ² + ε) + β (+ ReLU), overwritten.
pub struct BnEval<'a, V, M> {
    pub s: &'a BnShape,
    pub x: V,
    pub affine: V,
    pub running: V,
    pub y: M,
}

/// Backward of [`BnTrain`]. `y` is the forward output (read for the ReLU mask only). Writes dx and
/// d_affine = [dγ | dβ], both overwritten.
pub struct BnBackward<'a, V, M> {
    pub s: &'a BnShape,
    pub x: V,
    pub y: V,
    pub dy: V,
    pub affine: V,
    pub saved: V,
    pub dx: M,
    pub d_affine: M,
}

/// y += x.
pub struct AddAssign<V, M> {
    pub y: M,
    pub x: V,
}

/// Option-A shortcut: y = zero-pad channels(subsample(x, stride)), overwritten; y has c_out ≥ c_in
/// channels, the input channels placed at offset (c_out − c_in)/2.
pub struct ShortcutForward<'a, V, M> {
    pub s: &'a ShortcutShape,
    pub x: V,
    pub y: M,
}

/// dx += the adjoint of the shortcut applied to dy.
pub struct ShortcutBackward<'a, V, M> {
    pub s: &'a ShortcutShape,
    pub dy: V,
    pub dx: M,
}

/// y[n][c] = mean over h,w of x[n][c], overwritten.
pub struct PoolForward<'a, V, M> {
    pub s: &'a PoolShape,
    pub x: V,
    pub y: M,
}

/// dx[n][c][i] = dy[n][c] / hw, overwritten.
pub struct PoolBackward<'a, V, M> {
    pub s: &'a PoolShape,
    pub dy: V,
    pub dx: M,
}

/// y = x Wᵀ + b, overwritten, with x: [n][inp], params = [W (out×inp) | b (out)], y: [n][out].
pub struct LinearForward<V, M> {
    pub s: LinearShape,
    pub x: V,
    pub params: V,
    pub y: M,
}

/// dx = dy W and d_params = [dyᵀ x | Σ_n dy], both overwritten.
pub struct LinearBackward<V, M> {
    pub s: LinearShape,
    pub x: V,
    pub params: V,
    pub dy: V,
    pub dx: M,
    pub d_params: M,
}

/// Mean softmax cross-entropy over the batch: writes dlogits = (softmax − onehot)/n (overwritten)
/// and returns the loss sum and the number correct. `logits`: [n][classes].
pub struct SoftmaxXent<'a, V, M, L> {
    pub s: LossShape,
    pub logits: V,
    pub labels: &'a L,
    pub dlogits: M,
}

/// Loss and correct count without a gradient (evaluation); `predictions` gets each arg-max
/// (ties to the lowest index).
pub struct SoftmaxXentEval<'a, V, L> {
    pub s: LossShape,
    pub logits: V,
    pub labels: &'a L,
    pub predictions: &'a mut [u32],
}

/// One SGD step over every segment (PyTorch semantics, dampening 0, momenta start at zero, so the
/// first step's buffer is g' exactly as PyTorch's clone):
/// g' = g + λ w;  v = γ v + g';  w ← w − η v.
/// Reads w, g, v and writes w, v: 20 bytes per f32 parameter. When `sums` is given (one entry per
/// segment), it also fills the f64 statistics sums (Σw², Σg², Σd², Σw·d with d = w_new − w), so
/// statistics cost no extra pass.
pub struct SgdStep<'a, B> {
    pub segments: &'a [Segment],
    pub params: &'a mut B,
    pub grads: &'a B,
    pub momenta: &'a mut B,
    pub sums: Option<&'a mut [StepSums]>,
}

/// The per-step settings of an Adam step (shared by every segment; each segment gives η and λ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// The step count t ≥ 1 of the bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub t: u64,
    /// AdamW's decoupled decay w ← w(1 − ηλ) (true), or Adam's coupled L2 g ← g + λw (false).
    pub decoupled: bool,
}

impl AdamHyper {
    /// The step count must be ≥ 1 (the bias corrections divide by 1 − β₁ᵗ).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.t >= 1, "adam: the step count t must be ≥ 1 (it is {})", self.t);
        Ok(())
    }

    /// The scalars of segment `seg` for this step, formed in f64 (as PyTorch forms them, in Python
    /// floats); every backend rounds each to its element type once:
    /// [decay, l2, 1−β₁, β₂, 1−β₂, η/(1−β₁ᵗ), √(1−β₂ᵗ), ε] with (decay, l2) = (1 − ηλ, 0) for AdamW
    /// and (1, λ) for Adam's coupled L2. (kernels/optim.cu reads its table in this order.)
    pub fn scalars(&self, seg: &Segment) -> [f64; 8] {
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let (decay, l2) = if self.decoupled { (1.0 - seg.lr * seg.wd, 0.0) } else { (1.0, seg.wd) };
        [decay, l2, 1.0 - self.beta1, self.beta2, 1.0 - self.beta2, seg.lr / bc1, bc2.sqrt(), self.eps]
    }
}

/// One Adam step over every segment, as torch.optim.AdamW (`decoupled`) or torch.optim.Adam with
/// weight_decay = λ (not), computed in the element type, with scalars formed in f64:
/// [AdamW: w ← w(1 − ηλ) | Adam: g ← g + λw];  m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;
/// w ← w − (η/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε).
/// Reads w, g, m, v and writes w, m, v: 28 bytes per f32 parameter. `sums` as for [`SgdStep`]
/// (Σg² of the gradient before any L2 term).
pub struct AdamStep<'a, B> {
    pub segments: &'a [Segment],
    pub hyper: AdamHyper,
    pub params: &'a mut B,
    pub grads: &'a B,
    pub m: &'a mut B,
    pub v: &'a mut B,
    pub sums: Option<&'a mut [StepSums]>,
}

/// The per-step settings of a Lion step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionHyper {
    pub beta1: f64,
    pub beta2: f64,
}

impl LionHyper {
    /// The scalars of segment `seg`, formed in f64 and rounded to the element type once by every
    /// backend: [η, 1 − ηλ, β₁, 1−β₁, β₂, 1−β₂] (kernels/optim.cu reads its table in this order).
    pub fn scalars(&self, seg: &Segment) -> [f64; 6] {
        [seg.lr, 1.0 - seg.lr * seg.wd, self.beta1, 1.0 - self.beta1, self.beta2, 1.0 - self.beta2]
    }
}

/// One Lion step over every segment (Chen et al. 2023, as the lion-pytorch package):
/// c = β₁m + (1−β₁)g;  w ← w(1 − ηλ) − η·sign(c);  m ← β₂m + (1−β₂)g, with sign(0) = 0.
/// Reads w, g, m and writes w, m: 20 bytes per f32 parameter. `sums` as for [`SgdStep`].
pub struct LionStep<'a, B> {
    pub segments: &'a [Segment],
    pub hyper: LionHyper,
    pub params: &'a mut B,
    pub grads: &'a B,
    pub m: &'a mut B,
    pub sums: Option<&'a mut [StepSums]>,
}

/// What an op works on, for labels (profiles, logs): borrowed from its arguments, so it can be
/// taken before the arguments move into the op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpShape<'a> {
    None,
    /// A transfer or fill of this many elements.
    Len(usize),
    Conv(&'a ConvShape),
    Bn(&'a BnShape),
    Shortcut(&'a ShortcutShape),
    Pool(&'a PoolShape),
    Linear(LinearShape),
    Loss(LossShape),
    /// Parameters and segments of an optimizer step, and whether it fills the statistics sums.
    Step {
        params: usize,
        segments: usize,
        sums: bool,
    },
}

/// Implemented by every argument struct: the op's shape, for labels.
pub trait OpArgs<'a> {
    fn shape(&self) -> OpShape<'a>;
}

macro_rules! shaped {
    ($([$($p:ident),*] $args:ty => $variant:ident;)*) => {$(
        impl<'a, $($p),*> OpArgs<'a> for $args {
            fn shape(&self) -> OpShape<'a> {
                OpShape::$variant(self.s)
            }
        }
    )*};
}

shaped! {
    [V, M] ConvForward<'a, V, M> => Conv;
    [V, M] ConvBackwardData<'a, V, M> => Conv;
    [V, M] ConvBackwardFilter<'a, V, M> => Conv;
    [V, M] BnTrain<'a, V, M> => Bn;
    [V, M] BnEval<'a, V, M> => Bn;
    [V, M] BnBackward<'a, V, M> => Bn;
    [V, M] ShortcutForward<'a, V, M> => Shortcut;
    [V, M] ShortcutBackward<'a, V, M> => Shortcut;
    [V, M] PoolForward<'a, V, M> => Pool;
    [V, M] PoolBackward<'a, V, M> => Pool;
    [V, M] LinearForward<V, M> => Linear;
    [V, M] LinearBackward<V, M> => Linear;
    [V, M, L] SoftmaxXent<'a, V, M, L> => Loss;
    [V, L] SoftmaxXentEval<'a, V, L> => Loss;
}

impl<'a, V, M> OpArgs<'a> for AddAssign<V, M> {
    fn shape(&self) -> OpShape<'a> {
        OpShape::None
    }
}

/// The label of an optimizer step over `segments`.
fn step_shape<'a>(segments: &[Segment], sums: bool) -> OpShape<'a> {
    OpShape::Step { params: segments.iter().map(|s| s.len).sum(), segments: segments.len(), sums }
}

impl<'a, B> OpArgs<'a> for SgdStep<'a, B> {
    fn shape(&self) -> OpShape<'a> {
        step_shape(self.segments, self.sums.is_some())
    }
}

impl<'a, B> OpArgs<'a> for AdamStep<'a, B> {
    fn shape(&self) -> OpShape<'a> {
        step_shape(self.segments, self.sums.is_some())
    }
}

impl<'a, B> OpArgs<'a> for LionStep<'a, B> {
    fn shape(&self) -> OpShape<'a> {
        step_shape(self.segments, self.sums.is_some())
    }
}

/// The op list: calls `$callback! { [$($prefix)*] $B; name(Args<…>) -> Output; … }` with every
/// compute op of the backend, its argument struct written with the placeholders `View`, `ViewMut`,
/// `Labels` and `Buf` (see [`op_type!`]) for the views and buffers of the backend `$B`.
macro_rules! for_each_op {
    ($callback:ident! [$($prefix:tt)*] $B:ty) => {
        $callback! { [$($prefix)*] $B;
            conv2d_forward(ConvForward<'_, View, ViewMut>) -> ();
            conv2d_backward_data(ConvBackwardData<'_, View, ViewMut>) -> ();
            conv2d_backward_filter(ConvBackwardFilter<'_, View, ViewMut>) -> ();
            batchnorm_forward_train(BnTrain<'_, View, ViewMut>) -> ();
            batchnorm_forward_eval(BnEval<'_, View, ViewMut>) -> ();
            batchnorm_backward(BnBackward<'_, View, ViewMut>) -> ();
            add_assign(AddAssign<View, ViewMut>) -> ();
            shortcut_forward(ShortcutForward<'_, View, ViewMut>) -> ();
            shortcut_backward_acc(ShortcutBackward<'_, View, ViewMut>) -> ();
            avgpool_forward(PoolForward<'_, View, ViewMut>) -> ();
            avgpool_backward(PoolBackward<'_, View, ViewMut>) -> ();
            linear_forward(LinearForward<View, ViewMut>) -> ();
            linear_backward(LinearBackward<View, ViewMut>) -> ();
            softmax_cross_entropy(SoftmaxXent<'_, View, ViewMut, Labels>) -> ::anyhow::Result<$crate::backend::LossSums>;
            softmax_cross_entropy_eval(SoftmaxXentEval<'_, View, Labels>) -> ::anyhow::Result<$crate::backend::LossSums>;
            sgd_step(SgdStep<'_, Buf>) -> ::anyhow::Result<()>;
            adam_step(AdamStep<'_, Buf>) -> ::anyhow::Result<()>;
            lion_step(LionStep<'_, Buf>) -> ::anyhow::Result<()>;
        }
    };
}
pub(crate) use for_each_op;

/// A placeholder of [`for_each_op!`] as the type of backend `$B`.
macro_rules! op_type {
    ($B:ty, View) => { <$B as $crate::backend::Backend>::View<'_> };
    ($B:ty, ViewMut) => { <$B as $crate::backend::Backend>::ViewMut<'_> };
    ($B:ty, Labels) => { <$B as $crate::backend::Backend>::Labels };
    ($B:ty, Buf) => { <$B as $crate::backend::Backend>::Buf };
}
pub(crate) use op_type;

/// An op's argument type for backend `$B`, from its entry in [`for_each_op!`].
macro_rules! op_args {
    ($B:ty, $args:ident<$($lt:lifetime,)? $($t:ident),*>) => {
        $crate::backend::ops::$args<$($lt,)? $($crate::backend::ops::op_type!($B, $t)),*>
    };
}
pub(crate) use op_args;
