//! [`Layer`]: a backend built on another one. It names its inner backend and overrides only what
//! it changes; every other op goes to the inner backend through [`Layer::around`], and
//! `impl Layer` gives `impl Backend`. `bench::Timed` times each op in `around`; `cuda::Bf16Cpu`
//! rounds the convolutions' operands; tests/step_hooks.rs emulates the CUDA backend's hooks.
//!
//! The forwarding is written once, from the op list ([`super::ops::for_each_op!`]).

use super::ops::{for_each_op, op_args, OpArgs, OpShape};
use super::{Backend, ComputePrecision, DeferredStep};
use crate::util::provenance::GpuProvenance;
use anyhow::Result;
use std::ops::Range;

/// The element, buffer and view types of `L`'s inner backend.
type Inner<L> = <L as Layer>::Inner;
type Elem<L> = <Inner<L> as Backend>::Elem;
type Buf<L> = <Inner<L> as Backend>::Buf;
type Labels<L> = <Inner<L> as Backend>::Labels;
type ViewMut<'a, L> = <Inner<L> as Backend>::ViewMut<'a>;

/// Declares each op with a default body that runs it on the inner backend through `around`.
macro_rules! default_ops {
    ([] $B:ty; $($name:ident($($args:tt)*) -> $ret:ty;)*) => {$(
        fn $name(&self, a: op_args!($B, $($args)*)) -> $ret {
            let shape = a.shape();
            self.around(stringify!($name), shape, |b| b.$name(a))
        }
    )*};
}

/// Implements each op of `Backend` for a layer by calling its `Layer` method.
macro_rules! forward_ops {
    ([] $B:ty; $($name:ident($($args:tt)*) -> $ret:ty;)*) => {$(
        fn $name(&self, a: op_args!($B, $($args)*)) -> $ret {
            Layer::$name(self, a)
        }
    )*};
}

/// A backend on top of `Inner`; see the module docs. Memory management (`alloc`, `len`, the
/// views) always goes straight to the inner backend; transfers, fills and every compute op go
/// through [`Layer::around`].
pub trait Layer: Sync {
    type Inner: Backend;
    fn inner(&self) -> &Self::Inner;
    /// A short name for logs, as [`Backend::name`].
    fn name(&self) -> String;

    /// Runs one op, `f(inner)`, named `op` and working on `shape`. Override it to act around every
    /// op (time it, check a state); the default just runs it.
    fn around<R>(&self, op: &'static str, shape: OpShape<'_>, f: impl FnOnce(&Self::Inner) -> R) -> R {
        let _ = (op, shape);
        f(self.inner())
    }

    fn gpu_provenance(&self) -> Option<GpuProvenance> {
        self.inner().gpu_provenance()
    }
    fn alloc(&self, len: usize) -> Result<Buf<Self>> {
        self.inner().alloc(len)
    }
    fn alloc_labels(&self, len: usize) -> Result<Labels<Self>> {
        self.inner().alloc_labels(len)
    }
    fn upload(&self, src: &[Elem<Self>], dst: &mut Buf<Self>) -> Result<()> {
        self.around("upload", OpShape::Len(src.len()), |b| b.upload(src, dst))
    }
    fn upload_labels(&self, src: &[u32], dst: &mut Labels<Self>) -> Result<()> {
        self.around("upload_labels", OpShape::Len(src.len()), |b| b.upload_labels(src, dst))
    }
    fn download(&self, src: &Buf<Self>, dst: &mut [Elem<Self>]) -> Result<()> {
        self.around("download", OpShape::Len(dst.len()), |b| b.download(src, dst))
    }
    fn zero(&self, x: ViewMut<'_, Self>) {
        self.around("zero", OpShape::None, |b| b.zero(x))
    }

    for_each_op!(default_ops! [] <Self as Layer>::Inner);

    fn set_conv_precision(&self, p: ComputePrecision) -> bool {
        self.inner().set_conv_precision(p)
    }
    fn step_begin(&self) -> Result<bool> {
        self.inner().step_begin()
    }
    fn step_end(&self) -> Result<DeferredStep> {
        self.inner().step_end()
    }
    fn step_reset(&self) {
        self.inner().step_reset()
    }
}

impl<L: Layer> Backend for L {
    type Elem = Elem<L>;
    type Buf = Buf<L>;
    type Labels = Labels<L>;
    type View<'a>
        = <L::Inner as Backend>::View<'a>
    where
        Self: 'a;
    type ViewMut<'a>
        = ViewMut<'a, L>
    where
        Self: 'a;

    fn name(&self) -> String {
        Layer::name(self)
    }
    fn gpu_provenance(&self) -> Option<GpuProvenance> {
        Layer::gpu_provenance(self)
    }
    fn alloc(&self, len: usize) -> Result<Buf<L>> {
        Layer::alloc(self, len)
    }
    fn alloc_labels(&self, len: usize) -> Result<Labels<L>> {
        Layer::alloc_labels(self, len)
    }
    fn len(&self, b: &Buf<L>) -> usize {
        self.inner().len(b)
    }
    fn view<'a>(&'a self, b: &'a Buf<L>, r: Range<usize>) -> Self::View<'a> {
        self.inner().view(b, r)
    }
    fn view_mut<'a>(&'a self, b: &'a mut Buf<L>, r: Range<usize>) -> Self::ViewMut<'a> {
        self.inner().view_mut(b, r)
    }
    fn upload(&self, src: &[Elem<L>], dst: &mut Buf<L>) -> Result<()> {
        Layer::upload(self, src, dst)
    }
    fn upload_labels(&self, src: &[u32], dst: &mut Labels<L>) -> Result<()> {
        Layer::upload_labels(self, src, dst)
    }
    fn download(&self, src: &Buf<L>, dst: &mut [Elem<L>]) -> Result<()> {
        Layer::download(self, src, dst)
    }
    fn zero(&self, x: ViewMut<'_, L>) {
        Layer::zero(self, x)
    }

    for_each_op!(forward_ops! [] L::Inner);

    fn set_conv_precision(&self, p: ComputePrecision) -> bool {
        Layer::set_conv_precision(self, p)
    }
    fn step_begin(&self) -> Result<bool> {
        Layer::step_begin(self)
    }
    fn step_end(&self) -> Result<DeferredStep> {
        Layer::step_end(self)
    }
    fn step_reset(&self) {
        Layer::step_reset(self)
    }
}
