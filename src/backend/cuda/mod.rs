//! The CUDA backend: cudarc for memory and launches, the PTX kernels of `kernels/*.cu` for
//! BatchNorm, the elementwise ops, the loss and the optimizer step, cuDNN for the convolutions and
//! cuBLAS for the linear layer. f32 throughout; the CPU backend ([`super::cpu::Cpu`]) is the spec,
//! and `ilr check` ([`check::run_checks`]) compares every op with it.
//!
//! # Design
//! - **One stream.** Every copy, kernel, cuDNN and cuBLAS call goes to one non-default stream, so
//!   stream order alone orders all uses of all buffers. cudarc's per-buffer event tracking is
//!   switched off (it is redundant here and blocks CUDA-graph capture).
//! - **Views.** `Buf` is a `CudaSlice<f32>`; [`DevView`]/[`DevViewMut`] are (device address,
//!   length) pairs that borrow the buffer for `'a` (shared or exclusive, like `&[f32]`/`&mut [f32]`),
//!   so a buffer cannot be dropped or mutably aliased while a view of it lives. They are `Copy`
//!   where the trait asks for it, which cudarc's own view types are not.
//! - **Errors.** Trait methods that return `()` cannot fail loudly. When one fails (a CUDA, cuDNN or
//!   cuBLAS error, or a shape that does not match its views), the first error is recorded, every
//!   later op is skipped, and the next method that returns a `Result` (`download`, `upload`,
//!   `softmax_cross_entropy*`, `sgd_step`, `alloc`) returns it. Kernel faults are asynchronous: the
//!   driver reports them at the next synchronisation, which may name a later op. Nothing panics on
//!   a GPU failure; out-of-range views are recorded as errors (the CPU backend panics there).
//! - **Workspaces** (cuDNN's, BN partial sums, the loss and SGD reduction buffers) grow when a shape
//!   first needs more, i.e. during the first training step, and are reused afterwards. cuDNN
//!   algorithms are chosen once per convolution shape (heuristics, deterministic algorithms, strict
//!   FP32 math: no TF32) and cached.
//! - **Numerics.** The kernels follow the CPU reference operation by operation (see
//!   docs/KERNELS.md): SGD is bitwise equal, BatchNorm and the loss agree to an ulp or two, and
//!   convolutions/GEMMs differ by f32 reassociation.
//!
//! # Not done yet
//! - **CUDA graphs.** The pieces are graph-ready (non-default stream, no event tracking, workspaces
//!   fixed after the first step, device-resident segment table, self-resetting reduction counters),
//!   but a whole step cannot be captured through the current trait: `softmax_cross_entropy` returns
//!   the loss to the host inside the step (a sync), `sgd_step` uploads its segment table from
//!   pageable host memory (not capturable), and cuBLAS would need `cublasSetWorkspace` with memory
//!   allocated up front. Capture needs (1) the loss sums kept on the device and read after replay,
//!   (2) the segment table written from pinned memory outside the graph (the table is read from
//!   device memory by the kernel, so new lr/wd values reach a replayed graph), (3) a cuBLAS
//!   workspace, (4) a warm-up step before capture so every workspace and cuDNN plan exists.
//! - **bf16 convolutions** (the `cast_*` kernels exist; the cuDNN path is f32 only).
//! - **Tuning.** The BatchNorm fused/split choice and split counts are reasoned, not measured; the
//!   fused kernels use at most 47 KiB of dynamic shared memory (no opt-in to 227 KiB).

pub mod check;
mod context;
mod conv;
mod linear;
mod ops;
mod sgd;

pub use check::{print_table, run_checks, CheckRow};
pub use context::{cublas_present, cudnn_present, driver_present};

use super::{Backend, BnShape, ConvShape, LossSums, PoolShape, Segment, ShortcutShape, StepSums};
use anyhow::{anyhow, bail, ensure, Result};
use context::{addr, addr_mut, Gpu};
use cudarc::driver::CudaSlice;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How BatchNorm is launched (see kernels/batchnorm.cu). `Auto` picks per shape; the others force
/// one variant, for `ilr check` and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BnMode {
    /// Fused with the channel cached in shared memory when it fits, else split.
    #[default]
    Auto,
    /// One block per channel; the channel is cached in shared memory when it fits.
    Fused,
    /// One block per channel, never cached.
    FusedNoCache,
    /// Partial sums over a (S, C) grid, then an apply kernel.
    Split,
}

/// A shared view of `len` f32 elements of a device buffer, borrowed for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct DevView<'a> {
    ptr: u64,
    len: usize,
    _buf: PhantomData<&'a CudaSlice<f32>>,
}

/// An exclusive view of `len` f32 elements of a device buffer, borrowed for `'a`.
#[derive(Debug)]
pub struct DevViewMut<'a> {
    ptr: u64,
    len: usize,
    _buf: PhantomData<&'a mut CudaSlice<f32>>,
}

impl DevView<'_> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Device address of element `i` (i ≤ len).
    fn at(&self, i: usize) -> u64 {
        debug_assert!(i <= self.len);
        self.ptr + (i * 4) as u64
    }
}

impl DevViewMut<'_> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn at(&self, i: usize) -> u64 {
        debug_assert!(i <= self.len);
        self.ptr + (i * 4) as u64
    }
}

/// Locks a mutex, ignoring poisoning (the guarded state stays consistent: every update is a
/// whole-value assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks a view's length against what the shape needs.
fn expect_len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    ensure!(got == want, "{op}: {what} has {got} elements, the shape needs {want}");
    Ok(())
}

/// The CUDA backend on one GPU. See the module docs.
pub struct Cuda {
    convs: Mutex<conv::Convs>,
    blas: Mutex<linear::Blas>,
    ws: Mutex<ops::Workspaces>,
    sgd: Mutex<sgd::SgdWorkspace>,
    bn_mode: Mutex<BnMode>,
    first_error: Mutex<Option<String>>,
    failed: AtomicBool,
    /// Last, so that it is dropped after the cuDNN/cuBLAS handles and the workspaces.
    gpu: Gpu,
}

impl Cuda {
    /// Opens GPU `ordinal`. Never panics: a missing driver, GPU, cuBLAS, cuDNN or kernels is an
    /// error that says what is missing and how to fix it.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        match std::panic::catch_unwind(|| Self::open(ordinal)) {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic");
                bail!("the CUDA libraries failed while starting ({msg}); run with --device cpu")
            }
        }
    }

    fn open(ordinal: usize) -> Result<Cuda> {
        let gpu = Gpu::open(ordinal)?;
        let convs = conv::Convs::new(&gpu)?;
        let blas = linear::Blas::new(&gpu)?;
        let ws = ops::Workspaces::new(&gpu)?;
        let sgd = sgd::SgdWorkspace::new(&gpu)?;
        gpu.sync()?;
        Ok(Cuda {
            convs: Mutex::new(convs),
            blas: Mutex::new(blas),
            ws: Mutex::new(ws),
            sgd: Mutex::new(sgd),
            bn_mode: Mutex::new(BnMode::Auto),
            first_error: Mutex::new(None),
            failed: AtomicBool::new(false),
            gpu,
        })
    }

    /// e.g. "NVIDIA H200 (sm_90, driver CUDA 13.0, cuDNN 9.x)".
    pub fn device_description(&self) -> String {
        let (ma, mi) = self.gpu.compute_capability;
        let (da, di) = self.gpu.driver_version;
        format!(
            "{} (sm_{ma}{mi}, {} SMs, driver CUDA {da}.{di}, cuDNN {})",
            self.gpu.device_name,
            self.gpu.sms,
            conv::cudnn_version()
        )
    }

    pub fn bn_mode(&self) -> BnMode {
        *lock(&self.bn_mode)
    }

    /// Forces a BatchNorm variant (for checks and benchmarks); `BnMode::Auto` is the default.
    pub fn set_bn_mode(&self, mode: BnMode) {
        *lock(&self.bn_mode) = mode;
    }

    /// Waits for all queued work and returns the first recorded or pending error.
    pub fn synchronize(&self) -> Result<()> {
        self.status()?;
        self.gpu.sync()
    }

    /// The first error recorded by an op that could not return it, if any.
    pub fn status(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let msg = lock(&self.first_error).clone().unwrap_or_else(|| "unknown error".into());
        Err(anyhow!("an earlier GPU operation failed: {msg}"))
    }

    /// Forgets the recorded error so that later ops run again (used by `ilr check` to go on after a
    /// failing case). Only meaningful after errors that left the CUDA context intact (a shape
    /// mismatch, a cuDNN/cuBLAS refusal); after a kernel fault every later call fails anyway.
    pub fn clear_error(&self) {
        *lock(&self.first_error) = None;
        self.failed.store(false, Ordering::Release);
    }

    fn record(&self, op: &str, e: anyhow::Error) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(format!("{op}: {e:#}"));
        }
        self.failed.store(true, Ordering::Release);
    }

    /// Runs one op of a `()` trait method: skipped after a failure, its error recorded.
    fn run(&self, op: &str, f: impl FnOnce() -> Result<()>) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = f() {
            self.record(op, e);
        }
    }

    fn empty_view<'a>() -> DevView<'a> {
        DevView { ptr: 0, len: 0, _buf: PhantomData }
    }

    /// The grid-stride block count for `work` items at `block` threads (at least 1, at most 8 per
    /// SM, which is plenty for a memory-bound loop).
    fn blocks_for(&self, work: usize, block: u32) -> u32 {
        let want = work.div_ceil(block as usize).max(1);
        want.min(8 * self.gpu.sms as usize) as u32
    }
}

fn check_range(r: &Range<usize>, len: usize) -> Result<()> {
    ensure!(r.start <= r.end && r.end <= len, "view {r:?} is out of range for a buffer of {len} elements");
    Ok(())
}

impl Backend for Cuda {
    type Elem = f32;
    type Buf = CudaSlice<f32>;
    type Labels = CudaSlice<u32>;
    type View<'a> = DevView<'a>;
    type ViewMut<'a> = DevViewMut<'a>;

    fn name(&self) -> String {
        format!("cuda-f32 ({})", self.gpu.device_name)
    }

    // ---- memory ---------------------------------------------------------------------------------
    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.status()?;
        self.gpu.alloc_zeros::<f32>(len)
    }
    fn alloc_labels(&self, len: usize) -> Result<CudaSlice<u32>> {
        self.status()?;
        self.gpu.alloc_zeros::<u32>(len)
    }
    fn len(&self, b: &CudaSlice<f32>) -> usize {
        b.len()
    }
    fn view<'a>(&'a self, b: &'a CudaSlice<f32>, r: Range<usize>) -> DevView<'a> {
        if let Err(e) = check_range(&r, b.len()) {
            self.record("view", e);
            return Self::empty_view();
        }
        DevView { ptr: addr(&self.gpu, b) + (r.start * 4) as u64, len: r.len(), _buf: PhantomData }
    }
    fn view_mut<'a>(&'a self, b: &'a mut CudaSlice<f32>, r: Range<usize>) -> DevViewMut<'a> {
        if let Err(e) = check_range(&r, b.len()) {
            self.record("view_mut", e);
            return DevViewMut { ptr: 0, len: 0, _buf: PhantomData };
        }
        DevViewMut { ptr: addr_mut(&self.gpu, b) + (r.start * 4) as u64, len: r.len(), _buf: PhantomData }
    }
    fn upload(&self, src: &[f32], dst: &mut CudaSlice<f32>) -> Result<()> {
        self.status()?;
        ensure!(src.len() == dst.len(), "upload: {} elements into a buffer of {}", src.len(), dst.len());
        if src.is_empty() {
            return Ok(());
        }
        self.gpu.stream.memcpy_htod(src, dst).map_err(|e| context::driver_error(e, "upload"))
    }
    fn upload_labels(&self, src: &[u32], dst: &mut CudaSlice<u32>) -> Result<()> {
        self.status()?;
        ensure!(src.len() == dst.len(), "upload_labels: {} labels into a buffer of {}", src.len(), dst.len());
        if src.is_empty() {
            return Ok(());
        }
        self.gpu.stream.memcpy_htod(src, dst).map_err(|e| context::driver_error(e, "upload_labels"))
    }
    fn download(&self, src: &CudaSlice<f32>, dst: &mut [f32]) -> Result<()> {
        self.status()?;
        ensure!(src.len() == dst.len(), "download: a buffer of {} into {} elements", src.len(), dst.len());
        if dst.is_empty() {
            return Ok(());
        }
        self.gpu.stream.memcpy_dtoh(src, dst).map_err(|e| context::driver_error(e, "download"))?;
        self.gpu.sync()
    }
    fn zero(&self, x: DevViewMut<'_>) {
        self.run("zero", || ops::zero(self, &x));
    }

    // ---- convolution ----------------------------------------------------------------------------
    fn conv2d_forward(&self, s: &ConvShape, x: DevView<'_>, w: DevView<'_>, y: DevViewMut<'_>) {
        self.run("conv2d_forward", || conv::forward(self, s, x, w, y));
    }
    fn conv2d_backward_data(&self, s: &ConvShape, dy: DevView<'_>, w: DevView<'_>, dx: DevViewMut<'_>) {
        self.run("conv2d_backward_data", || conv::backward_data(self, s, dy, w, dx));
    }
    fn conv2d_backward_filter(&self, s: &ConvShape, x: DevView<'_>, dy: DevView<'_>, dw: DevViewMut<'_>) {
        self.run("conv2d_backward_filter", || conv::backward_filter(self, s, x, dy, dw));
    }

    // ---- BatchNorm ------------------------------------------------------------------------------
    fn batchnorm_forward_train(
        &self,
        s: &BnShape,
        x: DevView<'_>,
        affine: DevView<'_>,
        running: DevViewMut<'_>,
        saved: DevViewMut<'_>,
        y: DevViewMut<'_>,
    ) {
        self.run("batchnorm_forward_train", || ops::bn_forward_train(self, s, x, affine, running, saved, y));
    }
    fn batchnorm_forward_eval(
        &self,
        s: &BnShape,
        x: DevView<'_>,
        affine: DevView<'_>,
        running: DevView<'_>,
        y: DevViewMut<'_>,
    ) {
        self.run("batchnorm_forward_eval", || ops::bn_forward_eval(self, s, x, affine, running, y));
    }
    fn batchnorm_backward(
        &self,
        s: &BnShape,
        x: DevView<'_>,
        y: DevView<'_>,
        dy: DevView<'_>,
        affine: DevView<'_>,
        saved: DevView<'_>,
        dx: DevViewMut<'_>,
        d_affine: DevViewMut<'_>,
    ) {
        self.run("batchnorm_backward", || ops::bn_backward(self, s, x, y, dy, affine, saved, dx, d_affine));
    }

    // ---- elementwise and shape ops --------------------------------------------------------------
    fn add_assign(&self, y: DevViewMut<'_>, x: DevView<'_>) {
        self.run("add_assign", || ops::add_assign(self, y, x));
    }
    fn shortcut_forward(&self, s: &ShortcutShape, x: DevView<'_>, y: DevViewMut<'_>) {
        self.run("shortcut_forward", || ops::shortcut_forward(self, s, x, y));
    }
    fn shortcut_backward_acc(&self, s: &ShortcutShape, dy: DevView<'_>, dx: DevViewMut<'_>) {
        self.run("shortcut_backward_acc", || ops::shortcut_backward_acc(self, s, dy, dx));
    }
    fn avgpool_forward(&self, s: &PoolShape, x: DevView<'_>, y: DevViewMut<'_>) {
        self.run("avgpool_forward", || ops::avgpool_forward(self, s, x, y));
    }
    fn avgpool_backward(&self, s: &PoolShape, dy: DevView<'_>, dx: DevViewMut<'_>) {
        self.run("avgpool_backward", || ops::avgpool_backward(self, s, dy, dx));
    }

    // ---- linear + loss --------------------------------------------------------------------------
    fn linear_forward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: DevView<'_>,
        params: DevView<'_>,
        y: DevViewMut<'_>,
    ) {
        self.run("linear_forward", || linear::forward(self, n, inp, out, x, params, y));
    }
    fn linear_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: DevView<'_>,
        params: DevView<'_>,
        dy: DevView<'_>,
        dx: DevViewMut<'_>,
        d_params: DevViewMut<'_>,
    ) {
        self.run("linear_backward", || linear::backward(self, n, inp, out, x, params, dy, dx, d_params));
    }
    fn softmax_cross_entropy(
        &self,
        n: usize,
        classes: usize,
        logits: DevView<'_>,
        labels: &CudaSlice<u32>,
        dlogits: DevViewMut<'_>,
    ) -> Result<LossSums> {
        self.status()?;
        ops::softmax_xent(self, n, classes, logits, labels, Some(dlogits), None)
    }
    fn softmax_cross_entropy_eval(
        &self,
        n: usize,
        classes: usize,
        logits: DevView<'_>,
        labels: &CudaSlice<u32>,
        predictions: &mut [u32],
    ) -> Result<LossSums> {
        self.status()?;
        ops::softmax_xent(self, n, classes, logits, labels, None, Some(predictions))
    }

    // ---- optimizer ------------------------------------------------------------------------------
    fn sgd_step(
        &self,
        segments: &[Segment],
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        momenta: &mut CudaSlice<f32>,
        sums: Option<&mut [StepSums]>,
    ) -> Result<()> {
        self.status()?;
        sgd::step(self, segments, params, grads, momenta, sums)
    }
}
