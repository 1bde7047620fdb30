//! The CUDA backend: cudarc for memory and launches, the PTX kernels of `kernels/*.cu` for
//! BatchNorm, the elementwise ops, the loss and the optimizer step, cuDNN for the convolutions and
//! cuBLAS for the linear layer. f32 throughout, except the convolutions in bf16-conv mode; the CPU
//! backend ([`super::cpu::Cpu`]) is the spec, and `ilr check` (the top-level `check` module) compares
//! every op with it.
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
//!   `softmax_cross_entropy*`, the optimizer steps, `alloc`, `step_end`) returns it. Kernel faults are
//!   asynchronous: the driver reports them at the next synchronisation, which may name a later
//!   op. Nothing panics on a GPU failure; out-of-range views are recorded as errors (the CPU
//!   backend panics there).
//! - **Workspaces** (cuDNN's, the bf16 staging buffers, BN partial sums, the loss and optimizer
//!   reduction buffers) grow when a shape first needs more, i.e. during the first training step,
//!   and are reused afterwards. cuDNN algorithms are chosen once per convolution shape and
//!   precision (heuristics, deterministic algorithms; f32: strict FP32 math, no TF32) and cached.
//! - **Numerics.** The kernels follow the CPU reference operation by operation (see
//!   docs/KERNELS.md): the optimizer steps (SGD, Adam(W), Lion) are bitwise equal, BatchNorm and the loss agree to an ulp or two, and
//!   convolutions/GEMMs differ by f32 reassociation.
//!
//! # CUDA graphs (`train.cuda_graphs`, default on; see graph.rs for the life cycle)
//! The trainer brackets each training step with [`Backend::step_begin`]/[`Backend::step_end`].
//! The first step after a reset runs eagerly (the warm-up: every plan, workspace and kernel comes
//! into being); the second is captured on the backend's stream and launched; every later one is
//! replayed: the trainer's calls are checked against the captured sequence (a fingerprint of op
//! names, device addresses and lengths) but not executed, and `step_end` copies the step's optimizer
//! segment table (its lr/wd, and Adam's bias corrections of this step) to the device, launches the graph, and reads back the loss totals and
//! (when asked) the statistics sums with one synchronisation. A step is deferred only between
//! `step_begin` and `step_end`; evaluation, checkpoints and `ilr check`'s op tests stay eager.
//! A replayed step runs the same kernels with the same arguments in the same order as an eager
//! one, so its results are bitwise equal (`ilr check` compares them); the captured optimizer
//! launch always computes the statistics sums (the parameters do not depend on that).
//!
//! Unverified assumptions (no GPU was available when this was written; `ilr check` and a short
//! `ilr train` on hardware settle them):
//! - cuDNN 9's legacy convolution calls and cuBLAS's sgemm (with its workspace set) are
//!   capturable after a warm-up call, and neither allocates or synchronises inside a capture
//!   (PyTorch relies on the same for its graphs). If one does, the capture fails and `step_end`
//!   returns an error that says to run with `--cuda-graphs false`.
//! - The instantiated graph reads the device segment table at launch time (it holds its address,
//!   not its contents), so a table written before `cuGraphLaunch` on the same stream is seen.
//! - Kernel modules are loaded eagerly at open and every kernel ran during the warm-up step, so
//!   lazy module loading (CUDA_MODULE_LOADING=LAZY) cannot happen inside the capture (cuDNN's and
//!   cuBLAS's own kernels are likewise loaded by their warm-up calls).
//! - Kernels, and any memset cuDNN issues on its workspace, may be captured on memory from
//!   cudarc's stream-ordered pool (`cuMemAllocAsync`), allocated before the capture.
//! - After an op fails inside a capture, `cuStreamEndCapture` takes the stream out of capture
//!   mode (returning an error, or a graph that is then dropped), so the backend can report the
//!   op's error; the backend stays failed afterwards, like after any recorded GPU error.
//! - The captured step holds raw addresses: the trainer keeps the model's buffers for the whole
//!   run and resets the captured step at its start and end; a workspace that grows afterwards
//!   bumps an epoch that makes the next step warm up and capture again; any other mismatch is
//!   caught by the fingerprint before a replay is launched.
//!
//! # bf16 convolutions (`train.precision = "bf16-conv"`, default "f32" until validated on hardware)
//! See conv.rs: operands rounded to bf16, cuDNN accumulates in f32 (PSEUDO_BFLOAT16), the result
//! is bf16-rounded and widened into the f32 output. Master weights, BatchNorm and its statistics,
//! the loss, the optimizer and the statistics sums stay f32. Only implicit-GEMM forward and ALGO_1
//! backward algorithms are allowed (conv_algo.rs); a shape without one is an error, never an f32
//! convolution under the bf16 label.
//!
//! # Not done yet
//! - **Tuning.** The BatchNorm fused/split choice and split counts are reasoned, not measured; the
//!   fused kernels use at most 47 KiB of dynamic shared memory (no opt-in to 227 KiB). In bf16
//!   mode each convolution re-casts its operands (weights included) on every call.

pub mod bf16emu;
pub mod check;
mod context;
mod conv;
mod conv_algo;
mod graph;
mod linear;
mod ops;
mod optim_step;

pub use bf16emu::Bf16Cpu;
pub use check::{print_table, CheckRow};
pub use context::{cublas_present, cudnn_present, driver_present};

use super::ops::{
    AdamStep, AddAssign, BnBackward, BnEval, BnTrain, ConvBackwardData, ConvBackwardFilter, ConvForward,
    LinearBackward, LinearForward, LionStep, PoolBackward, PoolForward, SgdStep, ShortcutBackward,
    ShortcutForward, SoftmaxXent, SoftmaxXentEval,
};
use super::{Backend, ComputePrecision, DeferredStep, LossShape, LossSums, Segment, StepSums};
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use context::{addr, addr_mut, driver_error, Gpu};
use cudarc::driver::{sys as drv_sys, CudaGraph, CudaSlice, DeviceRepr};
use graph::{Begin, Mode, PendingStep, StepState};
use optim_step::{Operands, Optimizer};
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

/// The accessors both view types share.
macro_rules! view_accessors {
    ($($view:ident),*) => {$(
        impl $view<'_> {
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
    )*};
}

view_accessors!(DevView, DevViewMut);

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

/// An instantiated CUDA graph of one training step.
struct StepGraph(CudaGraph);

// SAFETY: cudarc's CudaGraph is not Send because graph objects are not internally synchronised;
// this one is only ever touched under the backend's `graph` mutex, one thread at a time.
unsafe impl Send for StepGraph {}

/// The captured step: the host-side state (graph.rs) and the graph itself.
#[derive(Default)]
struct GraphSlot {
    state: StepState,
    exec: Option<StepGraph>,
}

impl GraphSlot {
    fn reset(&mut self) {
        self.state.reset();
        self.exec = None;
    }
}

/// Labels the loss of a deferred step before `step_end` has read it.
const PLACEHOLDER_LOSS: LossSums = LossSums { loss_sum: f64::NAN, correct: 0 };
const PLACEHOLDER_SUMS: StepSums = StepSums { ww: f64::NAN, gg: f64::NAN, dd: f64::NAN, wd: f64::NAN };

/// The CUDA backend on one GPU. See the module docs.
pub struct Cuda {
    /// The captured step. First, so that its graph is destroyed before the handles and workspaces
    /// it refers to are.
    graph: Mutex<GraphSlot>,
    convs: Mutex<conv::Convs>,
    blas: Mutex<linear::Blas>,
    ws: Mutex<ops::Workspaces>,
    optim: Mutex<optim_step::StepWorkspace>,
    bn_mode: Mutex<BnMode>,
    /// Convolutions in bf16 (`ComputePrecision::Bf16Conv`).
    bf16: AtomicBool,
    /// How ops execute now ([`Mode`] as u8): eagerly, into a capture, or skipped for a replay.
    mode: AtomicU8,
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
        let optim = optim_step::StepWorkspace::new(&gpu)?;
        gpu.sync()?;
        Ok(Cuda {
            graph: Mutex::new(GraphSlot::default()),
            convs: Mutex::new(convs),
            blas: Mutex::new(blas),
            ws: Mutex::new(ws),
            optim: Mutex::new(optim),
            bn_mode: Mutex::new(BnMode::Auto),
            bf16: AtomicBool::new(false),
            mode: AtomicU8::new(Mode::Eager as u8),
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

    /// Forces a BatchNorm variant (for checks and benchmarks); `BnMode::Auto` is the default. A
    /// captured training step is then captured again (after a warm-up step).
    pub fn set_bn_mode(&self, mode: BnMode) {
        let mut m = lock(&self.bn_mode);
        if *m != mode {
            *m = mode;
            self.gpu.bump_epoch();
        }
    }

    /// Whether convolutions run in bf16.
    fn bf16_conv(&self) -> bool {
        self.bf16.load(Ordering::Acquire)
    }

    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Acquire))
    }

    fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Release);
    }

    /// Errors inside a deferred (captured or replayed) step, where `what` cannot run; otherwise
    /// returns [`Self::status`].
    fn eager_only(&self, what: &str) -> Result<()> {
        if self.mode() != Mode::Eager {
            bail!(
                "{what} inside a training step that is being captured or replayed as a CUDA graph (between \
                 step_begin and step_end); {}",
                graph::hint()
            );
        }
        self.status()
    }

    /// Waits for all queued work and returns the first recorded or pending error.
    pub fn synchronize(&self) -> Result<()> {
        self.eager_only("synchronising")?;
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

    /// Runs one op of a `()` trait method: skipped after a failure, its error recorded. Inside a
    /// deferred step the op is first folded into the step's fingerprint with `words` (its operands'
    /// addresses and lengths), and in a replay it is skipped (the graph runs it).
    fn run(&self, op: &str, words: &[u64], f: impl FnOnce() -> Result<()>) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let mode = self.mode();
        if mode != Mode::Eager {
            lock(&self.graph).state.record_op(op, words);
            if mode == Mode::Replay {
                return;
            }
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

impl Cuda {
    /// `upload` and `upload_labels`: `src` into `dst` (of the same length). `doing`, `op` and
    /// `unit` name the call in its errors.
    fn copy_to_device<T: DeviceRepr>(
        &self,
        [doing, op, unit]: [&str; 3],
        src: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.eager_only(doing)?;
        ensure!(src.len() == dst.len(), "{op}: {} {unit} into a buffer of {}", src.len(), dst.len());
        if src.is_empty() {
            return Ok(());
        }
        self.gpu.stream.memcpy_htod(src, dst).map_err(|e| context::driver_error(e, op))
    }
}

impl Drop for Cuda {
    /// A capture left open (a caller that never ended its step) is ended before the stream's
    /// handles are destroyed.
    fn drop(&mut self) {
        if self.mode() == Mode::Capture {
            self.step_reset();
        }
    }
}

fn check_range(r: &Range<usize>, len: usize) -> Result<()> {
    ensure!(r.start <= r.end && r.end <= len, "view {r:?} is out of range for a buffer of {len} elements");
    Ok(())
}

/// (address, length) words of views, for the step fingerprint.
macro_rules! words {
    ($($v:expr),* $(,)?) => { [$($v.ptr, $v.len as u64),*] };
}

impl Cuda {
    /// The launch half of `step_end`: the step's segment table to the device, the graph, and the
    /// read-back of the loss totals and (when asked) the statistics sums, with one sync.
    fn launch_step(&self, exec: &StepGraph, step: &PendingStep) -> Result<DeferredStep> {
        // This step's scalars: the captured optimizer kernel reads the table from device memory.
        optim_step::upload_table(self, &step.table)?;
        exec.0.launch().map_err(|e| driver_error(e, "launching the training step's CUDA graph"))?;
        let mut totals = [0f64; 2];
        ops::queue_totals_readback(self, &mut totals)?;
        let n = step.table.len();
        let mut host = vec![0f64; if step.want_sums { 4 * n } else { 0 }];
        if step.want_sums && step.total_chunks > 0 {
            optim_step::queue_sums_readback(self, n, &mut host)?;
        }
        self.gpu.sync()?;
        Ok(DeferredStep {
            loss: ops::loss_sums(&totals),
            sums: step.want_sums.then(|| optim_step::unpack_sums(&host)),
        })
    }

    /// An optimizer step of `p` on `ops`: eager, or (inside a deferred step) fingerprinted,
    /// launched when capturing, and left for `step_end`, which uploads this step's table before
    /// launching the graph and reads the sums back when `sums` asks for them (the captured kernel
    /// always computes them).
    fn optimizer_step(
        &self,
        p: optim_step::Prepared,
        ops: &Operands,
        sums: Option<&mut [StepSums]>,
    ) -> Result<()> {
        let mode = self.mode();
        if mode == Mode::Eager {
            return optim_step::step(self, &p, ops, sums);
        }
        let mut words = ops.words();
        words.extend([p.table.len() as u64, p.total as u64]);
        lock(&self.graph).state.record_op(p.opt.op(), &words);
        if mode == Mode::Capture {
            optim_step::launch_captured(self, &p, ops)?;
        }
        let want_sums = sums.is_some();
        if let Some(s) = sums {
            s.fill(PLACEHOLDER_SUMS);
        }
        lock(&self.graph).state.record_step(PendingStep { table: p.table, total_chunks: p.total, want_sums });
        Ok(())
    }

    /// `step_end` of a capture: ends it and instantiates the graph; on failure the capture's
    /// first recorded error (clearer than the driver's "capture invalidated") or the driver's.
    fn end_capture(&self, slot: &mut GraphSlot) -> Result<PendingStep> {
        let ended = self.gpu.stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
        self.gpu.set_capturing(false);
        let graph = match (self.status(), ended) {
            (Err(e), _) => return Err(e),
            (Ok(()), Err(e)) => return Err(driver_error(e, "ending the capture of the training step")),
            (Ok(()), Ok(None)) => bail!("the capture of the training step produced no graph"),
            (Ok(()), Ok(Some(g))) => g,
        };
        let pending = slot.state.end_capture(self.gpu.epoch())?;
        slot.exec = Some(StepGraph(graph));
        Ok(pending)
    }
}

impl Backend for Cuda {
    type Elem = f32;
    type Buf = CudaSlice<f32>;
    type Labels = CudaSlice<u32>;
    type View<'a> = DevView<'a>;
    type ViewMut<'a> = DevViewMut<'a>;

    fn name(&self) -> String {
        let p = if self.bf16_conv() { "f32/bf16-conv" } else { "f32" };
        format!("cuda-{p} ({})", self.gpu.device_name)
    }

    fn gpu_provenance(&self) -> Option<crate::util::provenance::GpuProvenance> {
        let ((ma, mi), (da, di)) = (self.gpu.compute_capability, self.gpu.driver_version);
        Some(crate::util::provenance::GpuProvenance {
            name: self.gpu.device_name.clone(),
            compute_capability: format!("sm_{ma}{mi}"),
            driver_cuda: format!("{da}.{di}"),
            cudnn: conv::cudnn_version(),
            ptx_sha256: crate::util::provenance::sha256_of_modules(crate::kernels::PTX.iter().copied()),
        })
    }

    // ---- memory ---------------------------------------------------------------------------------
    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.eager_only("allocating").and_then(|()| self.gpu.alloc_zeros::<f32>(len))
    }
    fn alloc_labels(&self, len: usize) -> Result<CudaSlice<u32>> {
        self.eager_only("allocating").and_then(|()| self.gpu.alloc_zeros::<u32>(len))
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
        self.copy_to_device(["uploading", "upload", "elements"], src, dst)
    }
    fn upload_labels(&self, src: &[u32], dst: &mut CudaSlice<u32>) -> Result<()> {
        self.copy_to_device(["uploading labels", "upload_labels", "labels"], src, dst)
    }
    fn download(&self, src: &CudaSlice<f32>, dst: &mut [f32]) -> Result<()> {
        self.eager_only("downloading")?;
        ensure!(src.len() == dst.len(), "download: a buffer of {} into {} elements", src.len(), dst.len());
        if dst.is_empty() {
            return Ok(());
        }
        self.gpu.stream.memcpy_dtoh(src, dst).map_err(|e| context::driver_error(e, "download"))?;
        self.gpu.sync()
    }
    fn zero(&self, x: DevViewMut<'_>) {
        self.run("zero", &words!(x), || ops::zero(self, &x));
    }

    // ---- convolution ----------------------------------------------------------------------------
    fn conv2d_forward(&self, a: ConvForward<'_, DevView<'_>, DevViewMut<'_>>) {
        let ConvForward { s, x, w, y } = a;
        self.run("conv2d_forward", &words!(x, w, y), || conv::forward(self, s, x, w, y));
    }
    fn conv2d_backward_data(&self, a: ConvBackwardData<'_, DevView<'_>, DevViewMut<'_>>) {
        let ConvBackwardData { s, dy, w, dx } = a;
        self.run("conv2d_backward_data", &words!(dy, w, dx), || conv::backward_data(self, s, dy, w, dx));
    }
    fn conv2d_backward_filter(&self, a: ConvBackwardFilter<'_, DevView<'_>, DevViewMut<'_>>) {
        let ConvBackwardFilter { s, x, dy, dw } = a;
        self.run("conv2d_backward_filter", &words!(x, dy, dw), || conv::backward_filter(self, s, x, dy, dw));
    }

    // ---- BatchNorm ------------------------------------------------------------------------------
    fn batchnorm_forward_train(&self, a: BnTrain<'_, DevView<'_>, DevViewMut<'_>>) {
        let w = words!(a.x, a.affine, a.running, a.saved, a.y);
        self.run("batchnorm_forward_train", &w, || ops::bn_forward_train(self, a));
    }
    fn batchnorm_forward_eval(&self, a: BnEval<'_, DevView<'_>, DevViewMut<'_>>) {
        let w = words!(a.x, a.affine, a.running, a.y);
        self.run("batchnorm_forward_eval", &w, || ops::bn_forward_eval(self, a));
    }
    fn batchnorm_backward(&self, a: BnBackward<'_, DevView<'_>, DevViewMut<'_>>) {
        let w = words!(a.x, a.y, a.dy, a.affine, a.saved, a.dx, a.d_affine);
        self.run("batchnorm_backward", &w, || ops::bn_backward(self, a));
    }

    // ---- elementwise and shape ops --------------------------------------------------------------
    fn add_assign(&self, a: AddAssign<DevView<'_>, DevViewMut<'_>>) {
        let AddAssign { y, x } = a;
        self.run("add_assign", &words!(y, x), || ops::add_assign(self, y, x));
    }
    fn shortcut_forward(&self, a: ShortcutForward<'_, DevView<'_>, DevViewMut<'_>>) {
        let ShortcutForward { s, x, y } = a;
        self.run("shortcut_forward", &words!(x, y), || ops::shortcut_forward(self, s, x, y));
    }
    fn shortcut_backward_acc(&self, a: ShortcutBackward<'_, DevView<'_>, DevViewMut<'_>>) {
        let ShortcutBackward { s, dy, dx } = a;
        self.run("shortcut_backward_acc", &words!(dy, dx), || ops::shortcut_backward_acc(self, s, dy, dx));
    }
    fn avgpool_forward(&self, a: PoolForward<'_, DevView<'_>, DevViewMut<'_>>) {
        let PoolForward { s, x, y } = a;
        self.run("avgpool_forward", &words!(x, y), || ops::avgpool_forward(self, s, x, y));
    }
    fn avgpool_backward(&self, a: PoolBackward<'_, DevView<'_>, DevViewMut<'_>>) {
        let PoolBackward { s, dy, dx } = a;
        self.run("avgpool_backward", &words!(dy, dx), || ops::avgpool_backward(self, s, dy, dx));
    }

    // ---- linear + loss --------------------------------------------------------------------------
    fn linear_forward(&self, a: LinearForward<DevView<'_>, DevViewMut<'_>>) {
        let w = words!(a.x, a.params, a.y);
        self.run("linear_forward", &w, || linear::forward(self, a));
    }
    fn linear_backward(&self, a: LinearBackward<DevView<'_>, DevViewMut<'_>>) {
        let w = words!(a.x, a.params, a.dy, a.dx, a.d_params);
        self.run("linear_backward", &w, || linear::backward(self, a));
    }
    fn softmax_cross_entropy(
        &self,
        a: SoftmaxXent<'_, DevView<'_>, DevViewMut<'_>, CudaSlice<u32>>,
    ) -> Result<LossSums> {
        let SoftmaxXent { s: LossShape { n, classes }, logits, labels, dlogits } = a;
        self.status()?;
        let mode = self.mode();
        if mode == Mode::Eager {
            return ops::softmax_xent(self, n, classes, logits, labels, Some(dlogits), None);
        }
        // Deferred: the totals stay on the device; step_end reads them after the graph ran.
        let w = words!(logits, dlogits);
        let words =
            [w[0], w[1], w[2], w[3], addr(&self.gpu, labels), labels.len() as u64, n as u64, classes as u64];
        {
            let mut g = lock(&self.graph);
            g.state.record_op("softmax_cross_entropy", &words);
            g.state.record_loss();
        }
        if mode == Mode::Capture {
            ops::softmax_xent_captured(self, n, classes, logits, labels, dlogits)?;
        }
        Ok(PLACEHOLDER_LOSS)
    }
    fn softmax_cross_entropy_eval(
        &self,
        a: SoftmaxXentEval<'_, DevView<'_>, CudaSlice<u32>>,
    ) -> Result<LossSums> {
        let SoftmaxXentEval { s: LossShape { n, classes }, logits, labels, predictions } = a;
        self.eager_only("evaluating")?;
        ops::softmax_xent(self, n, classes, logits, labels, None, Some(predictions))
    }

    // ---- optimizer ------------------------------------------------------------------------------
    fn sgd_step(&self, a: SgdStep<'_, CudaSlice<f32>>) -> Result<()> {
        let SgdStep { segments, params, grads, momenta, sums } = a;
        self.status()?;
        let ops = Operands::new(&self.gpu, params, grads, [momenta]);
        let n = sums.as_deref().map(<[StepSums]>::len);
        let h = |s: &Segment| optim_step::scalars([s.lr, s.wd, s.momentum]);
        let p = optim_step::prepare(Optimizer::Sgd, segments, &ops, n, h)?;
        self.optimizer_step(p, &ops, sums)
    }
    fn adam_step(&self, a: AdamStep<'_, CudaSlice<f32>>) -> Result<()> {
        let AdamStep { segments, hyper, params, grads, m, v, sums } = a;
        self.status()?;
        hyper.check()?;
        let ops = Operands::new(&self.gpu, params, grads, [m, v]);
        let n = sums.as_deref().map(<[StepSums]>::len);
        let h = |s: &Segment| optim_step::scalars(hyper.scalars(s));
        let p = optim_step::prepare(Optimizer::Adam, segments, &ops, n, h)?;
        self.optimizer_step(p, &ops, sums)
    }
    fn lion_step(&self, a: LionStep<'_, CudaSlice<f32>>) -> Result<()> {
        let LionStep { segments, hyper, params, grads, m, sums } = a;
        self.status()?;
        let ops = Operands::new(&self.gpu, params, grads, [m]);
        let n = sums.as_deref().map(<[StepSums]>::len);
        let h = |s: &Segment| optim_step::scalars(hyper.scalars(s));
        let p = optim_step::prepare(Optimizer::Lion, segments, &ops, n, h)?;
        self.optimizer_step(p, &ops, sums)
    }

    // ---- precision and step capture -------------------------------------------------------------
    fn set_conv_precision(&self, p: ComputePrecision) -> bool {
        let want = p == ComputePrecision::Bf16Conv;
        if self.bf16.swap(want, Ordering::AcqRel) != want {
            self.gpu.bump_epoch();
        }
        true
    }

    fn step_begin(&self) -> Result<bool> {
        self.eager_only("step_begin")?;
        let mut slot = lock(&self.graph);
        match slot.state.begin(self.gpu.epoch())? {
            Begin::WarmUp => {
                slot.exec = None;
                Ok(false)
            }
            Begin::Capture => {
                slot.exec = None;
                // Surface any pending asynchronous error before capturing.
                let started = self.gpu.sync().and_then(|()| {
                    self.gpu.set_capturing(true);
                    self.gpu
                        .stream
                        .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                        .map_err(|e| driver_error(e, "beginning the capture of the training step"))
                });
                if let Err(e) = started {
                    self.gpu.set_capturing(false);
                    slot.reset();
                    return Err(e.context(graph::hint()));
                }
                self.set_mode(Mode::Capture);
                Ok(true)
            }
            Begin::Replay => {
                self.set_mode(Mode::Replay);
                Ok(true)
            }
        }
    }

    fn step_end(&self) -> Result<DeferredStep> {
        let mut slot = lock(&self.graph);
        let mode = self.mode();
        self.set_mode(Mode::Eager);
        let pending = match mode {
            Mode::Eager => bail!("step_end without a deferred step_begin"),
            Mode::Capture => self.end_capture(&mut slot),
            Mode::Replay => self.status().and_then(|()| slot.state.end_replay()),
        };
        let result = pending.and_then(|p| {
            let exec = slot.exec.as_ref().context("no captured graph to launch")?;
            self.launch_step(exec, &p)
        });
        if result.is_err() {
            slot.reset();
        }
        result
            .map_err(|e| e.context(format!("a training step run as a CUDA graph failed; {}", graph::hint())))
    }

    fn step_reset(&self) {
        let mut slot = lock(&self.graph);
        if self.mode() == Mode::Capture {
            // Discard the partial capture (the driver ends it even when it was invalidated).
            let _ = self.gpu.stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
            self.gpu.set_capturing(false);
        }
        self.set_mode(Mode::Eager);
        slot.reset();
    }
}
