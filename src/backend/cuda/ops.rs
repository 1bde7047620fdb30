//! Launchers of the hand-written kernels (kernels/batchnorm.cu, kernels/elementwise.cu): BatchNorm,
//! the residual add, the option-A shortcut, global average pooling, the softmax cross-entropy (in
//! an eager form that reads its totals back, and a captured form that leaves them on the device
//! for `step_end`), and the f32 ⇄ bf16 casts of the bf16 convolutions. Signatures and launch
//! limits are those of docs/KERNELS.md; each launcher validates its views against the shape first,
//! as the CPU reference asserts.

use super::context::{addr, addr_mut, driver_error, Grow};
use super::{expect_len, lock, BnMode, Cuda, DevView, DevViewMut};
use crate::backend::{BnBackward, BnEval, BnShape, BnTrain, LossSums, PoolShape, ShortcutShape};
use anyhow::{bail, ensure, Context as _, Result};
use cudarc::driver::{result as drv, CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use std::sync::MutexGuard;

/// Threads per block of the grid-stride, split and eval kernels.
const BLOCK: u32 = 256;
/// Threads per block of the fused BatchNorm kernels (one block per channel).
const FUSED_BLOCK: u32 = 1024;
/// Dynamic shared memory the fused BatchNorm kernels may use without the opt-in attribute: the
/// 48 KiB default per block, less 1 KiB for their static shared memory (512 bytes).
const FUSED_SMEM_MAX: usize = 47 * 1024;
/// Largest 32-bit signed value: several kernels index with `int`/`unsigned int`.
const I32_MAX: usize = i32::MAX as usize;

/// Device buffers of the ops in this file, grown on first need.
pub(crate) struct Workspaces {
    /// BatchNorm split partial sums: C·S·2 doubles.
    bn_partials: Grow<f64>,
    /// softmax_xent per-sample loss (n doubles) and arg-max (n u32).
    loss: Grow<f64>,
    pred: Grow<u32>,
    /// softmax_xent totals [Σloss, #correct] and its last-block counter (zeroed once, reset by the
    /// kernel itself).
    totals: CudaSlice<f64>,
    counter: CudaSlice<u32>,
}

impl Workspaces {
    pub fn new(gpu: &super::Gpu) -> Result<Self> {
        Ok(Workspaces {
            bn_partials: Grow::new(),
            loss: Grow::new(),
            pred: Grow::new(),
            totals: gpu.alloc_zeros::<f64>(2)?,
            counter: gpu.alloc_zeros::<u32>(1)?,
        })
    }
}

fn cfg(grid: (u32, u32, u32), block: u32, smem: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem as u32 }
}

/// A grid-stride launch of `BLOCK`-thread blocks over `work` items.
fn grid_stride(be: &Cuda, work: usize) -> LaunchConfig {
    cfg((be.blocks_for(work, BLOCK), 1, 1), BLOCK, 0)
}

/// Launches `kernel` with `cfg`, after `args` pushed its arguments in the order of its C signature.
///
/// # Safety
/// The arguments must have the types of the kernel's C parameters, and every pointer must cover
/// what the kernel accesses on this grid.
pub(super) unsafe fn launch<'a>(
    be: &'a Cuda,
    kernel: &str,
    cfg: LaunchConfig,
    args: impl FnOnce(&mut LaunchArgs<'a>),
) -> Result<()> {
    let gpu = &be.gpu;
    let mut b = gpu.stream.launch_builder(gpu.func(kernel)?);
    args(&mut b);
    // SAFETY: the caller's contract.
    unsafe { b.launch(cfg) }.map(drop).map_err(|e| driver_error(e, &format!("launching {kernel}")))
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).with_context(|| format!("{what} = {v} exceeds the kernels' 32-bit index range"))
}

/// x = 0.
pub(crate) fn zero(be: &Cuda, x: &DevViewMut<'_>) -> Result<()> {
    if x.is_empty() {
        return Ok(());
    }
    be.gpu.bind()?;
    // SAFETY: the view covers len·4 bytes of a live buffer borrowed exclusively.
    unsafe { drv::memset_d8_async(x.ptr, 0, x.len * 4, be.gpu.stream.cu_stream()) }
        .map_err(|e| driver_error(e, "memset"))
}

// ---- BatchNorm ----------------------------------------------------------------------------------

/// Checks the views of a BatchNorm op, `full` (N·C·HW elements each) and `per_channel` (2·C each),
/// then M = N·HW < 2^31 and M > 0 when C > 0. Returns (N, C, HW) as kernel ints and M, or None when
/// there are no channels (nothing to do).
fn bn_check(
    op: &str,
    s: &BnShape,
    full: &[(&str, usize)],
    per_channel: &[(&str, usize)],
) -> Result<Option<(i32, i32, i32, usize)>> {
    for &(what, len) in full {
        expect_len(op, what, len, s.len())?;
    }
    for &(what, len) in per_channel {
        expect_len(op, what, len, 2 * s.c)?;
    }
    let m = s.n.checked_mul(s.hw).with_context(|| format!("{op}: N·HW overflows"))?;
    ensure!(m <= I32_MAX, "{op}: N·HW = {m} values per channel exceeds the kernels' limit of 2^31 − 1");
    ensure!(s.c == 0 || m > 0, "{op}: a channel has no values (N·HW = 0)");
    ensure!(s.c <= 65535, "{op}: {} channels exceed the grid's y limit of 65535", s.c);
    let dims = (to_i32("N", s.n)?, to_i32("C", s.c)?, to_i32("HW", s.hw)?, m);
    Ok((s.c > 0).then_some(dims))
}

/// The split kernels' launch: S blocks per channel on an (S, C) grid, and the partial sums
/// (C·S·2 doubles) in the workspace, which stays locked while this lives.
struct Split<'a> {
    grid: (u32, u32, u32),
    /// S as a kernel int.
    s_arg: i32,
    partials: u64,
    _ws: MutexGuard<'a, Workspaces>,
}

fn split<'a>(be: &'a Cuda, s: &BnShape, m: usize) -> Result<Split<'a>> {
    let gpu = &be.gpu;
    let splits = split_count(be, s.c, m);
    let mut ws = lock(&be.ws);
    let partials = addr_mut(gpu, ws.bn_partials.ensure(gpu, s.c * splits as usize * 2)?);
    Ok(Split { grid: (splits, s.c as u32, 1), s_arg: splits as i32, partials, _ws: ws })
}

/// Blocks per channel for the split and eval kernels: about 4 blocks per SM over all channels,
/// but no more than there are float4 groups of 256-thread blocks to fill.
fn split_count(be: &Cuda, c: usize, m: usize) -> u32 {
    let target = (4 * be.gpu.sms as usize).div_ceil(c.max(1));
    let useful = m.div_ceil(4 * BLOCK as usize).max(1);
    target.clamp(1, useful).min(1024) as u32
}

/// Fused (Some(cache)) or split (None) for a pass whose cache needs `bytes_per_value`·M bytes.
fn bn_variant(mode: BnMode, m: usize, bytes_per_value: usize) -> Option<bool> {
    let fits = m * bytes_per_value <= FUSED_SMEM_MAX;
    match mode {
        BnMode::Auto => fits.then_some(true),
        BnMode::Fused => Some(fits),
        BnMode::FusedNoCache => Some(false),
        BnMode::Split => None,
    }
}

pub(crate) fn bn_forward_train(be: &Cuda, a: BnTrain<'_, DevView<'_>, DevViewMut<'_>>) -> Result<()> {
    let BnTrain { s, x, affine, running, saved, y } = a;
    let full = [("x", x.len), ("y", y.len)];
    let per_channel = [("affine", affine.len), ("running", running.len), ("saved", saved.len)];
    let Some((n, c, hw, m)) = bn_check("batchnorm_forward_train", s, &full, &per_channel)? else {
        return Ok(());
    };
    let (eps, mom, relu) = (s.eps, s.momentum, i32::from(s.relu));
    match bn_variant(be.bn_mode(), m, 4) {
        Some(cache) => {
            let use_cache = i32::from(cache);
            let smem = if cache { m * 4 } else { 0 };
            // SAFETY: argument types follow the kernel's C signature (docs/KERNELS.md); every
            // pointer covers the length validated above; the grid is one block per channel.
            unsafe {
                launch(be, "bn_fwd_train_fused", cfg((c as u32, 1, 1), FUSED_BLOCK, smem), |b| {
                    b.arg(&x.ptr).arg(&affine.ptr).arg(&running.ptr).arg(&saved.ptr).arg(&y.ptr);
                    b.arg(&n).arg(&c).arg(&hw).arg(&eps).arg(&mom).arg(&relu).arg(&use_cache);
                })
            }?;
        }
        None => {
            let Split { grid, s_arg, partials, _ws } = split(be, s, m)?;
            // SAFETY: as above; `partials` holds C·S·2 doubles.
            unsafe {
                launch(be, "bn_fwd_stats_partial", cfg(grid, BLOCK, 0), |b| {
                    b.arg(&x.ptr).arg(&partials).arg(&n).arg(&c).arg(&hw);
                })
            }?;
            // SAFETY: as above; the apply grid reads the S partials written by the stats grid.
            unsafe {
                launch(be, "bn_fwd_apply", cfg(grid, BLOCK, 0), |b| {
                    b.arg(&x.ptr).arg(&affine.ptr).arg(&partials).arg(&s_arg);
                    b.arg(&running.ptr).arg(&saved.ptr).arg(&y.ptr);
                    b.arg(&n).arg(&c).arg(&hw).arg(&eps).arg(&mom).arg(&relu);
                })
            }?;
        }
    }
    Ok(())
}

pub(crate) fn bn_forward_eval(be: &Cuda, a: BnEval<'_, DevView<'_>, DevViewMut<'_>>) -> Result<()> {
    let BnEval { s, x, affine, running, y } = a;
    let full = [("x", x.len), ("y", y.len)];
    let per_channel = [("affine", affine.len), ("running", running.len)];
    let Some((n, c, hw, m)) = bn_check("batchnorm_forward_eval", s, &full, &per_channel)? else {
        return Ok(());
    };
    let (eps, relu) = (s.eps, i32::from(s.relu));
    let grid = (split_count(be, s.c, m), c as u32, 1);
    // SAFETY: argument types follow the kernel's C signature; pointers cover the validated lengths.
    unsafe {
        launch(be, "bn_fwd_eval", cfg(grid, BLOCK, 0), |b| {
            b.arg(&x.ptr).arg(&affine.ptr).arg(&running.ptr).arg(&y.ptr);
            b.arg(&n).arg(&c).arg(&hw).arg(&eps).arg(&relu);
        })
    }
}

pub(crate) fn bn_backward(be: &Cuda, a: BnBackward<'_, DevView<'_>, DevViewMut<'_>>) -> Result<()> {
    let BnBackward { s, x, y, dy, affine, saved, dx, d_affine } = a;
    let full = [("x", x.len), ("y", y.len), ("dy", dy.len), ("dx", dx.len)];
    let per_channel = [("affine", affine.len), ("saved", saved.len), ("d_affine", d_affine.len)];
    let Some((n, c, hw, m)) = bn_check("batchnorm_backward", s, &full, &per_channel)? else {
        return Ok(());
    };
    // The forward output is read only for the ReLU mask; 0 switches the mask off.
    let y_ptr: u64 = if s.relu { y.ptr } else { 0 };
    match bn_variant(be.bn_mode(), m, 8) {
        Some(cache) => {
            let use_cache = i32::from(cache);
            let smem = if cache { m * 8 } else { 0 };
            // SAFETY: argument types follow the kernel's C signature; pointers cover the validated
            // lengths; one block per channel.
            unsafe {
                launch(be, "bn_bwd_fused", cfg((c as u32, 1, 1), FUSED_BLOCK, smem), |b| {
                    b.arg(&x.ptr).arg(&y_ptr).arg(&dy.ptr).arg(&affine.ptr).arg(&saved.ptr);
                    b.arg(&dx.ptr).arg(&d_affine.ptr);
                    b.arg(&n).arg(&c).arg(&hw).arg(&use_cache);
                })
            }?;
        }
        None => {
            let Split { grid, s_arg, partials, _ws } = split(be, s, m)?;
            // SAFETY: as above; block 256 respects the kernel's bound; `partials` holds C·S·2 doubles.
            unsafe {
                launch(be, "bn_bwd_partial", cfg(grid, BLOCK, 0), |b| {
                    b.arg(&x.ptr).arg(&y_ptr).arg(&dy.ptr).arg(&saved.ptr).arg(&partials);
                    b.arg(&n).arg(&c).arg(&hw);
                })
            }?;
            // SAFETY: as above.
            unsafe {
                launch(be, "bn_bwd_apply", cfg(grid, BLOCK, 0), |b| {
                    b.arg(&x.ptr).arg(&y_ptr).arg(&dy.ptr).arg(&affine.ptr).arg(&saved.ptr);
                    b.arg(&partials).arg(&s_arg);
                    b.arg(&dx.ptr).arg(&d_affine.ptr);
                    b.arg(&n).arg(&c).arg(&hw);
                })
            }?;
        }
    }
    Ok(())
}

// ---- elementwise and shape ops ------------------------------------------------------------------

pub(crate) fn add_assign(be: &Cuda, y: DevViewMut<'_>, x: DevView<'_>) -> Result<()> {
    ensure!(y.len == x.len, "add_assign: y has {} elements, x has {}", y.len, x.len);
    if y.is_empty() {
        return Ok(());
    }
    let n = y.len as i64;
    // SAFETY: (float* y, const float* x, long long n); both views hold n elements.
    unsafe {
        launch(be, "add_assign_f32", grid_stride(be, y.len), |b| {
            b.arg(&y.ptr).arg(&x.ptr).arg(&n);
        })
    }
}

/// Validates a shortcut and returns (N, C_in, H, W, C_out, stride) as kernel ints and the sizes of
/// x and y.
fn shortcut_dims(op: &str, s: &ShortcutShape) -> Result<([i32; 6], usize, usize)> {
    ensure!(s.stride > 0, "{op}: stride must be positive");
    ensure!(s.c_out >= s.c_in, "{op}: c_out < c_in: {s:?}");
    let x_len = s.n * s.c_in * s.h * s.w;
    let y_len = s.n * s.c_out * s.out_h() * s.out_w();
    ensure!(
        x_len <= I32_MAX && y_len <= I32_MAX,
        "{op}: tensors of more than 2^31 − 1 elements exceed the kernels' index range"
    );
    let d = [to_i32("N", s.n)?, to_i32("C_in", s.c_in)?, to_i32("H", s.h)?, to_i32("W", s.w)?];
    Ok(([d[0], d[1], d[2], d[3], to_i32("C_out", s.c_out)?, to_i32("stride", s.stride)?], x_len, y_len))
}

pub(crate) fn shortcut_forward(
    be: &Cuda,
    s: &ShortcutShape,
    x: DevView<'_>,
    y: DevViewMut<'_>,
) -> Result<()> {
    const OP: &str = "shortcut_forward";
    let (d, x_len, y_len) = shortcut_dims(OP, s)?;
    expect_len(OP, "x", x.len, x_len)?;
    expect_len(OP, "y", y.len, y_len)?;
    if y_len == 0 {
        return Ok(());
    }
    // SAFETY: (const float* x, float* y, int N, int C_in, int H, int W, int C_out, int stride).
    unsafe {
        launch(be, "shortcut_fwd", grid_stride(be, y_len), |b| {
            b.arg(&x.ptr).arg(&y.ptr);
            b.arg(&d[0]).arg(&d[1]).arg(&d[2]).arg(&d[3]).arg(&d[4]).arg(&d[5]);
        })
    }
}

pub(crate) fn shortcut_backward_acc(
    be: &Cuda,
    s: &ShortcutShape,
    dy: DevView<'_>,
    dx: DevViewMut<'_>,
) -> Result<()> {
    const OP: &str = "shortcut_backward_acc";
    let (d, x_len, y_len) = shortcut_dims(OP, s)?;
    expect_len(OP, "dx", dx.len, x_len)?;
    expect_len(OP, "dy", dy.len, y_len)?;
    let copied = s.n * s.c_in * s.out_h() * s.out_w();
    if copied == 0 {
        return Ok(());
    }
    // SAFETY: (const float* dy, float* dx, int N, int C_in, int H, int W, int C_out, int stride).
    unsafe {
        launch(be, "shortcut_bwd_acc", grid_stride(be, copied), |b| {
            b.arg(&dy.ptr).arg(&dx.ptr);
            b.arg(&d[0]).arg(&d[1]).arg(&d[2]).arg(&d[3]).arg(&d[4]).arg(&d[5]);
        })
    }
}

fn pool_dims(op: &str, s: &PoolShape) -> Result<(i32, i32, usize)> {
    let total = s.n * s.c * s.hw;
    ensure!(total <= I32_MAX, "{op}: {total} elements exceed the kernels' index range");
    Ok((to_i32("rows", s.n * s.c)?, to_i32("hw", s.hw)?, total))
}

pub(crate) fn avgpool_forward(be: &Cuda, s: &PoolShape, x: DevView<'_>, y: DevViewMut<'_>) -> Result<()> {
    const OP: &str = "avgpool_forward";
    let (rows, hw, total) = pool_dims(OP, s)?;
    expect_len(OP, "x", x.len, total)?;
    expect_len(OP, "y", y.len, s.n * s.c)?;
    if rows == 0 {
        return Ok(());
    }
    let gpu = &be.gpu;
    // One warp per row: 8 rows per 256-thread block. (hw = 0 gives 0/0 = NaN, as the CPU.)
    let rows_per_block = (BLOCK / 32) as usize;
    let blocks = (rows as usize).div_ceil(rows_per_block).min(8 * gpu.sms as usize).max(1) as u32;
    // SAFETY: (const float* x, float* y, int rows, int hw).
    unsafe {
        launch(be, "avgpool_fwd", cfg((blocks, 1, 1), BLOCK, 0), |b| {
            b.arg(&x.ptr).arg(&y.ptr).arg(&rows).arg(&hw);
        })
    }
}

pub(crate) fn avgpool_backward(be: &Cuda, s: &PoolShape, dy: DevView<'_>, dx: DevViewMut<'_>) -> Result<()> {
    const OP: &str = "avgpool_backward";
    let (rows, hw, total) = pool_dims(OP, s)?;
    expect_len(OP, "dx", dx.len, total)?;
    expect_len(OP, "dy", dy.len, s.n * s.c)?;
    if total == 0 {
        return Ok(());
    }
    // SAFETY: (const float* dy, float* dx, int rows, int hw).
    unsafe {
        launch(be, "avgpool_bwd", grid_stride(be, total), |b| {
            b.arg(&dy.ptr).arg(&dx.ptr).arg(&rows).arg(&hw);
        })
    }
}

// ---- loss ---------------------------------------------------------------------------------------

/// The checks every form of the loss makes on its arguments (the CPU reference's).
fn check_xent(
    n: usize,
    classes: usize,
    logits: &DevView<'_>,
    labels: &CudaSlice<u32>,
    dlogits: Option<&DevViewMut<'_>>,
    predictions: Option<usize>,
) -> Result<()> {
    ensure!(
        logits.len == n * classes,
        "cross-entropy: {} logits for {n} samples × {classes} classes",
        logits.len
    );
    ensure!(labels.len() >= n, "cross-entropy: {} labels for {n} samples", labels.len());
    if let Some(d) = dlogits {
        ensure!(d.len == logits.len, "cross-entropy: dlogits length {} ≠ {}", d.len, logits.len);
    }
    if let Some(p) = predictions {
        ensure!(p == n, "cross-entropy: {p} predictions for {n} samples");
    }
    Ok(())
}

/// Launches `softmax_xent` (n > 0, classes > 0): per-sample loss and arg-max into the workspace,
/// dlogits when given, and the totals [Σ loss, #correct] into the device buffer `ws.totals`.
fn launch_xent(
    be: &Cuda,
    n: usize,
    classes: usize,
    logits: &DevView<'_>,
    labels: &CudaSlice<u32>,
    dlogits: Option<&DevViewMut<'_>>,
) -> Result<()> {
    let gpu = &be.gpu;
    let (n_i, classes_i) = (to_i32("n", n)?, to_i32("classes", classes)?);
    let dl_ptr: u64 = dlogits.map_or(0, |d| d.ptr);
    let mut ws = lock(&be.ws);
    let loss_ptr = addr_mut(gpu, ws.loss.ensure(gpu, n)?);
    let pred_ptr = addr_mut(gpu, ws.pred.ensure(gpu, n)?);
    let totals_ptr = addr_mut(gpu, &mut ws.totals);
    let counter_ptr = addr_mut(gpu, &mut ws.counter);
    let labels_ptr = addr(gpu, labels);
    let rows_per_block = (BLOCK / 32) as usize;
    let blocks = n.div_ceil(rows_per_block) as u32;
    // SAFETY: (const float* logits, const unsigned* labels, int n, int classes, float* dlogits,
    // double* loss, unsigned* pred, double* totals, unsigned* counter): logits and dlogits hold
    // n·classes floats, labels ≥ n, loss/pred ≥ n, totals 2, counter 1 (zero between launches).
    unsafe {
        launch(be, "softmax_xent", cfg((blocks, 1, 1), BLOCK, 0), |b| {
            b.arg(&logits.ptr).arg(&labels_ptr).arg(&n_i).arg(&classes_i);
            b.arg(&dl_ptr).arg(&loss_ptr).arg(&pred_ptr).arg(&totals_ptr).arg(&counter_ptr);
        })
    }
}

/// Queues the copy of the loss totals [Σ loss, #correct] of the last `softmax_xent` into `host`;
/// the caller synchronises before reading it.
pub(crate) fn queue_totals_readback(be: &Cuda, host: &mut [f64; 2]) -> Result<()> {
    let ws = lock(&be.ws);
    be.gpu.stream.memcpy_dtoh(&ws.totals, &mut host[..]).map_err(|e| driver_error(e, "reading the loss"))
}

/// The totals as [`LossSums`].
pub(crate) fn loss_sums(totals: &[f64; 2]) -> LossSums {
    LossSums { loss_sum: totals[0], correct: totals[1] as usize }
}

/// Softmax cross-entropy over `n` rows of `classes` logits: with `dlogits`, the training form;
/// with `predictions`, the evaluation form. Returns the loss sum and the correct count, which
/// costs one synchronisation.
pub(crate) fn softmax_xent(
    be: &Cuda,
    n: usize,
    classes: usize,
    logits: DevView<'_>,
    labels: &CudaSlice<u32>,
    dlogits: Option<DevViewMut<'_>>,
    predictions: Option<&mut [u32]>,
) -> Result<LossSums> {
    check_xent(n, classes, &logits, labels, dlogits.as_ref(), predictions.as_deref().map(<[u32]>::len))?;
    if n == 0 {
        return Ok(LossSums::default());
    }
    let gpu = &be.gpu;
    if classes == 0 {
        // Every label is out of range; say which, as the CPU does.
        let first =
            gpu.stream.clone_dtoh(&labels.slice(0..1)).map_err(|e| driver_error(e, "reading labels"))?;
        bail!("cross-entropy: label {} of sample 0 is out of range for 0 classes", first[0]);
    }
    launch_xent(be, n, classes, &logits, labels, dlogits.as_ref())?;
    let mut totals = [0f64; 2];
    queue_totals_readback(be, &mut totals)?;
    if let Some(p) = predictions {
        let mut ws = lock(&be.ws);
        let pred = ws.pred.ensure(gpu, n)?;
        gpu.stream.memcpy_dtoh(&pred.slice(0..n), p).map_err(|e| driver_error(e, "reading predictions"))?;
    }
    gpu.sync()?;
    if totals[0].is_nan() {
        // The kernel gives NaN for a label ≥ classes; report it as the CPU does.
        let host =
            gpu.stream.clone_dtoh(&labels.slice(0..n)).map_err(|e| driver_error(e, "reading labels"))?;
        if let Some((i, l)) = host.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            bail!("cross-entropy: label {l} of sample {i} is out of range for {classes} classes");
        }
    }
    Ok(loss_sums(&totals))
}

/// The training form inside a CUDA-graph capture: the launch only; the totals stay on the device
/// until `step_end` reads them after the graph ran. A label ≥ classes then shows up as a NaN loss
/// (reported as a divergence) rather than as a label error: the datasets check their labels when
/// loaded, and the eager warm-up step and every evaluation still check them.
pub(crate) fn softmax_xent_captured(
    be: &Cuda,
    n: usize,
    classes: usize,
    logits: DevView<'_>,
    labels: &CudaSlice<u32>,
    dlogits: DevViewMut<'_>,
) -> Result<()> {
    check_xent(n, classes, &logits, labels, Some(&dlogits), None)?;
    ensure!(
        n > 0 && classes > 0,
        "cross-entropy: a captured step needs samples and classes (n {n}, classes {classes})"
    );
    launch_xent(be, n, classes, &logits, labels, Some(&dlogits))
}

// ---- bf16 casts (kernels/elementwise.cu) ----------------------------------------------------------

fn launch_cast(be: &Cuda, kernel: &str, src: u64, dst: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let len = i64::try_from(n).context("cast: too many elements")?;
    // SAFETY: (const T* x, U* y, long long n): the callers pass buffers of at least n elements of the
    // kernel's source and destination types (f32 and bf16 = 2 bytes), which do not overlap.
    unsafe {
        launch(be, kernel, grid_stride(be, n), |b| {
            b.arg(&src).arg(&dst).arg(&len);
        })
    }
}

/// dst (n bf16) = round-to-nearest-even(src (n f32)).
pub(crate) fn cast_f32_to_bf16(be: &Cuda, src: u64, dst: u64, n: usize) -> Result<()> {
    launch_cast(be, "cast_f32_to_bf16", src, dst, n)
}

/// dst (n f32) = src (n bf16), exactly.
pub(crate) fn cast_bf16_to_f32(be: &Cuda, src: u64, dst: u64, n: usize) -> Result<()> {
    launch_cast(be, "cast_bf16_to_f32", src, dst, n)
}
