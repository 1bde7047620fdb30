//! The CPU reference backend: plain slices of `T` (f32 for training, f64 for gradient checks),
//! reductions in f64, rayon for parallel loops, and single-threaded GEMMs (the `gemm` crate and
//! matrixmultiply, chosen per pass by measurement: see gemm.rs) on fixed blocks of images for conv,
//! matrixmultiply for linear. In f32 on a CPU with AVX2 and FMA, the 3×3 stride-1 convolutions are
//! computed directly instead (direct3x3.rs, core::arch intrinsics; runtime-detected, so a binary
//! without AVX2 falls back to im2col + GEMM). Results are bit-reproducible on one machine; on a
//! CPU without AVX2 + FMA they differ in the last bits, as the GEMM libraries' kernels already do.
//!
//! Every op is deterministic whatever the thread count: parallel work is cut into chunks fixed by
//! the shape alone, and partial results are added in chunk order, so a run is bit-reproducible from
//! its seed on a given machine (tests/thread_determinism.rs checks 1, 2 and 3 threads). Shape
//! mismatches in the ops that cannot return an error are programming errors and panic; memory transfers, the loss and the
//! optimizer step return errors.

mod batchnorm;
mod conv;
mod direct3x3;
mod elementwise;
mod gemm;
mod linear;
mod loss;
mod sgd;
#[cfg(test)]
mod tests;

use super::{Backend, BnShape, ConvShape, LossSums, PoolShape, Real, Segment, ShortcutShape, StepSums};
use anyhow::{ensure, Result};
use std::marker::PhantomData;
use std::ops::Range;

/// Widens an element to f64. (A free function, because on a `&T` receiver `.to_f64()` would
/// resolve to num_traits' `ToPrimitive::to_f64`, which returns an `Option`.)
#[inline]
fn wide<T: Real>(v: T) -> f64 {
    Real::to_f64(v)
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
    fn conv2d_forward(&self, s: &ConvShape, x: &[T], w: &[T], y: &mut [T]) {
        conv::forward(s, x, w, y)
    }
    fn conv2d_backward_data(&self, s: &ConvShape, dy: &[T], w: &[T], dx: &mut [T]) {
        conv::backward_data(s, dy, w, dx)
    }
    fn conv2d_backward_filter(&self, s: &ConvShape, x: &[T], dy: &[T], dw: &mut [T]) {
        conv::backward_filter(s, x, dy, dw)
    }

    // ---- BatchNorm ------------------------------------------------------------------------------
    fn batchnorm_forward_train(
        &self,
        s: &BnShape,
        x: &[T],
        affine: &[T],
        running: &mut [T],
        saved: &mut [T],
        y: &mut [T],
    ) {
        batchnorm::forward_train(s, x, affine, running, saved, y)
    }
    fn batchnorm_forward_eval(&self, s: &BnShape, x: &[T], affine: &[T], running: &[T], y: &mut [T]) {
        batchnorm::forward_eval(s, x, affine, running, y)
    }
    fn batchnorm_backward(
        &self,
        s: &BnShape,
        x: &[T],
        y: &[T],
        dy: &[T],
        affine: &[T],
        saved: &[T],
        dx: &mut [T],
        d_affine: &mut [T],
    ) {
        batchnorm::backward(s, x, y, dy, affine, saved, dx, d_affine)
    }

    // ---- elementwise and shape ops --------------------------------------------------------------
    fn add_assign(&self, y: &mut [T], x: &[T]) {
        elementwise::add_assign(y, x)
    }
    fn shortcut_forward(&self, s: &ShortcutShape, x: &[T], y: &mut [T]) {
        elementwise::shortcut_forward(s, x, y)
    }
    fn shortcut_backward_acc(&self, s: &ShortcutShape, dy: &[T], dx: &mut [T]) {
        elementwise::shortcut_backward_acc(s, dy, dx)
    }
    fn avgpool_forward(&self, s: &PoolShape, x: &[T], y: &mut [T]) {
        elementwise::avgpool_forward(s, x, y)
    }
    fn avgpool_backward(&self, s: &PoolShape, dy: &[T], dx: &mut [T]) {
        elementwise::avgpool_backward(s, dy, dx)
    }

    // ---- linear + loss --------------------------------------------------------------------------
    fn linear_forward(&self, n: usize, inp: usize, out: usize, x: &[T], params: &[T], y: &mut [T]) {
        linear::forward(n, inp, out, x, params, y)
    }
    fn linear_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &[T],
        params: &[T],
        dy: &[T],
        dx: &mut [T],
        d_params: &mut [T],
    ) {
        linear::backward(n, inp, out, x, params, dy, dx, d_params)
    }
    fn softmax_cross_entropy(
        &self,
        n: usize,
        classes: usize,
        logits: &[T],
        labels: &Vec<u32>,
        dlogits: &mut [T],
    ) -> Result<LossSums> {
        loss::train(n, classes, logits, labels, dlogits)
    }
    fn softmax_cross_entropy_eval(
        &self,
        n: usize,
        classes: usize,
        logits: &[T],
        labels: &Vec<u32>,
        predictions: &mut [u32],
    ) -> Result<LossSums> {
        loss::eval(n, classes, logits, labels, predictions)
    }

    // ---- optimizer ------------------------------------------------------------------------------
    fn sgd_step(
        &self,
        segments: &[Segment],
        params: &mut Vec<T>,
        grads: &Vec<T>,
        momenta: &mut Vec<T>,
        sums: Option<&mut [StepSums]>,
    ) -> Result<()> {
        sgd::step(segments, params, grads, momenta, sums)
    }
}
