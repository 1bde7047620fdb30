//! The CPU reference backend: plain slices of `T` (f32 for training, f64 for gradient checks),
//! reductions in fixed blocks added in f64, rayon for parallel loops, and single-threaded GEMMs (the
//! `gemm` crate and matrixmultiply, chosen per pass by measurement: see gemm.rs) on fixed blocks of
//! images for conv, matrixmultiply for linear. In f32 on a CPU with AVX2 and FMA, the 3×3 stride-1
//! and stride-2 convolutions are computed directly instead (direct3x3.rs and direct3x3/stride2.rs,
//! core::arch intrinsics; runtime-detected, so a binary without AVX2 falls back to im2col + GEMM;
//! with AVX-512 most passes read x in place and skip the taps in the padding, with the same bits:
//! direct3x3/rows.rs, direct3x3/lanes.rs and the plain filter kernel; transpose.rs moves their
//! channel-innermost layouts), and BatchNorm's loops run compiled for AVX-512 or AVX2
//! (vectorize.rs), with the baseline's bits.
//! Results are bit-reproducible on one machine; on a CPU without AVX2 + FMA the convolutions differ
//! in the last bits, as the GEMM libraries' kernels already do.
//!
//! Every op is deterministic whatever the thread count: parallel work is cut into chunks fixed by
//! the shape alone, and partial results are added in chunk order, so a run is bit-reproducible from
//! its seed on a given machine (tests/thread_determinism.rs checks 1, 2 and 3 threads). Shape
//! mismatches in the ops that cannot return an error are programming errors and panic; memory
//! transfers, the loss and the optimizer step return errors.

mod adam;
mod batchnorm;
mod conv;
mod direct3x3;
mod elementwise;
mod gemm;
mod linear;
mod lion;
mod loss;
mod segments;
mod sgd;
#[cfg(test)]
mod tests;
mod transpose;
mod vectorize;

use super::ops::{
    AdamStep, AddAssign, BnBackward, BnEval, BnTrain, ConvBackwardData, ConvBackwardFilter, ConvForward,
    LinearBackward, LinearForward, LionStep, PoolBackward, PoolForward, SgdStep, ShortcutBackward,
    ShortcutForward, SoftmaxXent, SoftmaxXentEval,
};
use super::{Backend, LossSums, Real};
use anyhow::{ensure, Result};
use std::marker::PhantomData;
use std::ops::Range;

/// Widens an element to f64. (A free function, because on a `&T` receiver `.to_f64()` would
/// resolve to num_traits' `ToPrimitive::to_f64`, which returns an `Option`.)
#[inline]
fn wide<T: Real>(v: T) -> f64 {
    Real::to_f64(v)
}

/// The SIMD kernels the f32 direct 3×3 convolutions run with on this CPU ("avx512" or "avx2"), or
/// None where they never run (no AVX2 + FMA, or not x86-64: im2col + GEMM everywhere), which are
/// also the vectors BatchNorm's loops are compiled for (vectorize.rs). Recorded in provenance: the
/// two give the same bits, but this says which code ran.
pub fn direct_conv_simd() -> Option<&'static str> {
    direct3x3::simd().map(direct3x3::Simd::name)
}

/// The CPU backend computing in `T`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<T: Real> {
    _elem: PhantomData<T>,
}

impl<T: Real> Cpu<T> {
    pub fn new() -> Self {
        Cpu { _elem: PhantomData }
    }
}

impl<T: Real> Backend for Cpu<T> {
    type Elem = T;
    type Buf = Vec<T>;
    type Labels = Vec<u32>;
    type View<'a> = &'a [T];
    type ViewMut<'a> = &'a mut [T];

    fn name(&self) -> String {
        format!("cpu-f{}", 8 * std::mem::size_of::<T>())
    }

    // ---- memory ---------------------------------------------------------------------------------
    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }
    fn alloc_labels(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }
    fn len(&self, b: &Vec<T>) -> usize {
        b.len()
    }
    fn view<'a>(&'a self, b: &'a Vec<T>, r: Range<usize>) -> &'a [T] {
        &b[r]
    }
    fn view_mut<'a>(&'a self, b: &'a mut Vec<T>, r: Range<usize>) -> &'a mut [T] {
        &mut b[r]
    }
    fn upload(&self, src: &[T], dst: &mut Vec<T>) -> Result<()> {
        ensure!(src.len() == dst.len(), "upload: {} elements into a buffer of {}", src.len(), dst.len());
        dst.copy_from_slice(src);
        Ok(())
    }
    fn upload_labels(&self, src: &[u32], dst: &mut Vec<u32>) -> Result<()> {
        ensure!(src.len() == dst.len(), "upload_labels: {} labels into a buffer of {}", src.len(), dst.len());
        dst.copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &Vec<T>, dst: &mut [T]) -> Result<()> {
        ensure!(src.len() == dst.len(), "download: a buffer of {} into {} elements", src.len(), dst.len());
        dst.copy_from_slice(src);
        Ok(())
    }
    fn zero(&self, x: &mut [T]) {
        x.fill(T::zero());
    }

    // ---- convolution ----------------------------------------------------------------------------
    fn conv2d_forward(&self, a: ConvForward<'_, &[T], &mut [T]>) {
        conv::forward(a.s, a.x, a.w, a.y)
    }
    fn conv2d_backward_data(&self, a: ConvBackwardData<'_, &[T], &mut [T]>) {
        conv::backward_data(a.s, a.dy, a.w, a.dx)
    }
    fn conv2d_backward_filter(&self, a: ConvBackwardFilter<'_, &[T], &mut [T]>) {
        conv::backward_filter(a.s, a.x, a.dy, a.dw)
    }

    // ---- BatchNorm ------------------------------------------------------------------------------
    fn batchnorm_forward_train(&self, a: BnTrain<'_, &[T], &mut [T]>) {
        batchnorm::forward_train(a)
    }
    fn batchnorm_forward_eval(&self, a: BnEval<'_, &[T], &mut [T]>) {
        batchnorm::forward_eval(a)
    }
    fn batchnorm_backward(&self, a: BnBackward<'_, &[T], &mut [T]>) {
        batchnorm::backward(a)
    }

    // ---- elementwise and shape ops --------------------------------------------------------------
    fn add_assign(&self, a: AddAssign<&[T], &mut [T]>) {
        elementwise::add_assign(a.y, a.x)
    }
    fn shortcut_forward(&self, a: ShortcutForward<'_, &[T], &mut [T]>) {
        elementwise::shortcut_forward(a.s, a.x, a.y)
    }
    fn shortcut_backward_acc(&self, a: ShortcutBackward<'_, &[T], &mut [T]>) {
        elementwise::shortcut_backward_acc(a.s, a.dy, a.dx)
    }
    fn avgpool_forward(&self, a: PoolForward<'_, &[T], &mut [T]>) {
        elementwise::avgpool_forward(a.s, a.x, a.y)
    }
    fn avgpool_backward(&self, a: PoolBackward<'_, &[T], &mut [T]>) {
        elementwise::avgpool_backward(a.s, a.dy, a.dx)
    }

    // ---- linear + loss --------------------------------------------------------------------------
    fn linear_forward(&self, a: LinearForward<&[T], &mut [T]>) {
        linear::forward(a)
    }
    fn linear_backward(&self, a: LinearBackward<&[T], &mut [T]>) {
        linear::backward(a)
    }
    fn softmax_cross_entropy(&self, a: SoftmaxXent<'_, &[T], &mut [T], Vec<u32>>) -> Result<LossSums> {
        loss::train(a.s.n, a.s.classes, a.logits, a.labels, a.dlogits)
    }
    fn softmax_cross_entropy_eval(&self, a: SoftmaxXentEval<'_, &[T], Vec<u32>>) -> Result<LossSums> {
        loss::eval(a.s.n, a.s.classes, a.logits, a.labels, a.predictions)
    }

    // ---- optimizer ------------------------------------------------------------------------------
    fn sgd_step(&self, a: SgdStep<'_, Vec<T>>) -> Result<()> {
        sgd::step(a)
    }
    fn adam_step(&self, a: AdamStep<'_, Vec<T>>) -> Result<()> {
        adam::step(a)
    }
    fn lion_step(&self, a: LionStep<'_, Vec<T>>) -> Result<()> {
        lion::step(a)
    }
}
