//! Convolutions through cuDNN: NCHW, cross-correlation (as the CPU's im2col), no bias, in f32 or
//! (with `train.precision = "bf16-conv"`) in bf16.
//!
//! Per distinct ([`ConvShape`], precision) a plan holds the descriptors and the three algorithms
//! (forward, backward-data, backward-filter), chosen once from cuDNN's heuristics
//! (`cudnnGet*Algorithm_v7`, read as raw values: see conv_algo.rs, which also says which algorithms
//! each precision allows): the first result that succeeded, uses an allowed algorithm and math
//! type and is deterministic, within a workspace limit. Each direction has its own convolution
//! descriptor, set to the math type of its algorithm (as PyTorch does). One workspace, shared by
//! every call on the stream, grows when a new plan needs more, which happens when a shape is first
//! seen (the first training step). All outputs are overwritten (β = 0, so cuDNN never reads them).
//!
//! - **f32**: f32 tensors, f32 compute, strict FP32 FMA math only (no TF32: the results are
//!   compared with the CPU in f32).
//! - **bf16** (cuDNN's PSEUDO_BFLOAT16 configuration: bf16 x, w and y descriptors, f32 compute
//!   type, tensor-core math allowed): the f32 operands are rounded to bf16 (round to nearest even,
//!   `cast_f32_to_bf16`) into staging buffers, cuDNN convolves them accumulating in f32 and writes
//!   a bf16 result, which is widened exactly into the f32 output view. So every convolution output
//!   (y, dx and dw) is bf16-rounded; the master weights, the gradients' f32 buffers, BatchNorm, the
//!   loss and the optimizer are untouched. The legacy API has no "bf16 in, f32 out" configuration.
//!   Three staging buffers (grown on first use, like the workspace) serve every call: the stream
//!   orders their reuse. bf16 plans use only implicit-GEMM forward and ALGO_1 backward algorithms
//!   (no Winograd/FFT transforms, no split-K bf16 partials), asked for with tensor-core, then
//!   default, then FMA math. If cuDNN offers none for a shape, the call fails with an error naming
//!   the shape (and suggesting `--precision f32`): never a silent f32 convolution in a bf16 run.
//!
//! Unverified on hardware (no GPU was available when this was written): that cuDNN 9's legacy
//! API offers deterministic PSEUDO_BFLOAT16 algorithms for every shape of the CIFAR PreResNets
//! (including the 3-channel stem and the 1×1 stride-2 projection) in NCHW among the allowed
//! algorithms; if not, bf16-conv training stops with that error.
//!
//! cuDNN is used through cudarc's `result` layer with raw handles: its `safe` wrappers are neither
//! `Send` nor `Sync`, and the backend must be `Sync`. Every handle lives behind the backend's
//! mutex and is only used with the context bound to the calling thread.

use super::context::{addr_mut, Grow};
use super::conv_algo::{allowed_math, choose, RawPerf};
use super::ops::{cast_bf16_to_f32, cast_f32_to_bf16};
use super::{expect_len, lock, Cuda, DevView, DevViewMut, Gpu};
use crate::backend::ConvShape;
use anyhow::{anyhow, ensure, Context as _, Result};
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::CudaContext;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

fn dnn_err(what: &str) -> impl FnOnce(dnn::CudnnError) -> anyhow::Error + '_ {
    move |e| anyhow!("cuDNN {what}: {e:?}")
}

/// The cuDNN version as "9.x.y", e.g. for the device description.
pub(crate) fn cudnn_version() -> String {
    // The library was found at open (cudnn_present), so calling into it cannot panic.
    let v = dnn::get_version();
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}

/// A cuDNN handle bound to the backend's stream.
struct Handle {
    raw: sys::cudnnHandle_t,
    ctx: Arc<CudaContext>,
}

// SAFETY: the handle is used only under the backend's mutex (never from two threads at once), and
// each use binds the CUDA context to the calling thread first.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: created by cudnnCreate, destroyed once; errors at teardown are ignored.
        let _ = unsafe { dnn::destroy_handle(self.raw) };
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);
struct FilterDesc(sys::cudnnFilterDescriptor_t);
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);
// SAFETY: plain descriptors (host memory owned by cuDNN), used only under the backend's mutex.
unsafe impl Send for TensorDesc {}
unsafe impl Send for FilterDesc {}
unsafe impl Send for ConvDesc {}
impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { dnn::destroy_tensor_descriptor(self.0) };
    }
}
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { dnn::destroy_filter_descriptor(self.0) };
    }
}
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { dnn::destroy_convolution_descriptor(self.0) };
    }
}

/// The element type of a plan's tensors.
fn data_type(bf16: bool) -> sys::cudnnDataType_t {
    if bf16 {
        sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16
    } else {
        sys::cudnnDataType_t::CUDNN_DATA_FLOAT
    }
}

fn tensor4d(dims: [c_int; 4], dt: sys::cudnnDataType_t) -> Result<TensorDesc> {
    let d = TensorDesc(dnn::create_tensor_descriptor().map_err(dnn_err("creating a tensor descriptor"))?);
    // SAFETY: a freshly created descriptor.
    unsafe { dnn::set_tensor4d_descriptor(d.0, sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, dt, dims) }
        .map_err(dnn_err("setting a tensor descriptor"))?;
    Ok(d)
}

/// The descriptors and algorithms of one convolution shape at one precision.
struct Plan {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    /// One convolution descriptor per direction, each with its algorithm's math type.
    conv_fwd: ConvDesc,
    conv_bwd_data: ConvDesc,
    conv_bwd_filter: ConvDesc,
    /// bf16 tensors: the operands must be cast to bf16 and the result back to f32.
    bf16: bool,
    fwd: sys::cudnnConvolutionFwdAlgo_t,
    fwd_ws: usize,
    bwd_data: sys::cudnnConvolutionBwdDataAlgo_t,
    bwd_data_ws: usize,
    bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    bwd_filter_ws: usize,
}

fn dims_i32(s: &ConvShape) -> Result<[c_int; 8]> {
    let v = [s.n, s.c_in, s.h, s.w, s.c_out, s.kernel, s.stride, s.pad];
    let mut out = [0; 8];
    for (o, x) in out.iter_mut().zip(v) {
        *o =
            c_int::try_from(x).with_context(|| format!("conv shape {s:?} exceeds cuDNN's int dimensions"))?;
    }
    Ok(out)
}

/// A convolution descriptor for `s` with compute type f32 and math type `math`.
fn conv_desc(s: &ConvShape, math: sys::cudnnMathType_t) -> Result<ConvDesc> {
    let [_, _, _, _, _, _, st, pad] = dims_i32(s)?;
    let conv =
        ConvDesc(dnn::create_convolution_descriptor().map_err(dnn_err("creating a convolution descriptor"))?);
    // SAFETY: a fresh descriptor; plain integer arguments.
    unsafe {
        dnn::set_convolution2d_descriptor(
            conv.0,
            pad,
            pad,
            st,
            st,
            1,
            1,
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        )
    }
    .map_err(dnn_err("setting the convolution descriptor"))?;
    // SAFETY: as above.
    unsafe { dnn::set_convolution_math_type(conv.0, math) }.map_err(dnn_err("setting the math type"))?;
    Ok(conv)
}

impl Plan {
    fn new(h: sys::cudnnHandle_t, s: &ConvShape, bf16: bool) -> Result<Plan> {
        let [n, ci, hh, ww, co, k, _, _] = dims_i32(s)?;
        let (oh, ow) = (c_int::try_from(s.out_h())?, c_int::try_from(s.out_w())?);
        let dt = data_type(bf16);
        let x = tensor4d([n, ci, hh, ww], dt)?;
        let y = tensor4d([n, co, oh, ow], dt)?;
        let w = FilterDesc(dnn::create_filter_descriptor().map_err(dnn_err("creating a filter descriptor"))?);
        // SAFETY: fresh descriptors; plain integer arguments.
        unsafe {
            dnn::set_filter4d_descriptor(w.0, dt, sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, [co, ci, k, k])
        }
        .map_err(dnn_err("setting the filter descriptor"))?;
        // The heuristics are asked with each allowed math type in turn (f32: strict FMA only; bf16:
        // tensor cores, then default, then FMA) until one offers an allowed algorithm; each result
        // says which math type its algorithm uses, and that is what its direction's descriptor gets.
        let queries =
            allowed_math(bf16).iter().map(|&m| conv_desc(s, m)).collect::<Result<Vec<ConvDesc>>>()?;

        // cuDNN must agree with ConvShape about the output size.
        let mut od = [0 as c_int; 4];
        // SAFETY: four out-parameters; descriptors set above.
        unsafe {
            sys::cudnnGetConvolution2dForwardOutputDim(
                queries[0].0,
                x.0,
                w.0,
                &mut od[0],
                &mut od[1],
                &mut od[2],
                &mut od[3],
            )
        }
        .result()
        .map_err(dnn_err("computing the output size"))?;
        ensure!(
            od == [n, co, oh, ow],
            "cuDNN computes output {od:?} for {s:?}, expected [{n}, {co}, {oh}, {ow}]"
        );

        // SAFETY (the three queries): valid handle and descriptors; cuDNN writes at most the
        // requested number of results into an array of `RawPerf`, which has the layout of each
        // direction's perf struct (checked at compile time) with raw u32 in place of the enums.
        let heuristics =
            |what: &'static str| move |e: dnn::CudnnError| anyhow!("cuDNN's {what} heuristics: {e:?}");
        let fwd = choose(s, bf16, queries.len(), |i, n, got, r: *mut RawPerf| {
            unsafe {
                dnn::get_convolution_forward_algorithm(h, x.0, w.0, queries[i].0, y.0, n, got, r.cast())
            }
            .map_err(heuristics("forward"))
        })?;
        let bwd_data = choose(s, bf16, queries.len(), |i, n, got, r: *mut RawPerf| {
            unsafe {
                dnn::get_convolution_backward_data_algorithm(h, w.0, y.0, queries[i].0, x.0, n, got, r.cast())
            }
            .map_err(heuristics("backward-data"))
        })?;
        let bwd_filter = choose(s, bf16, queries.len(), |i, n, got, r: *mut RawPerf| {
            unsafe {
                dnn::get_convolution_backward_filter_algorithm(
                    h,
                    x.0,
                    y.0,
                    queries[i].0,
                    w.0,
                    n,
                    got,
                    r.cast(),
                )
            }
            .map_err(heuristics("backward-filter"))
        })?;
        drop(queries);
        let (conv_fwd, conv_bwd_data, conv_bwd_filter) =
            (conv_desc(s, fwd.1)?, conv_desc(s, bwd_data.1)?, conv_desc(s, bwd_filter.1)?);

        // SAFETY: valid handle, descriptors and algorithms.
        let fwd_ws =
            unsafe { dnn::get_convolution_forward_workspace_size(h, x.0, w.0, conv_fwd.0, y.0, fwd.0) }
                .map_err(dnn_err("sizing the forward workspace"))?;
        let bwd_data_ws = unsafe {
            dnn::get_convolution_backward_data_workspace_size(h, w.0, y.0, conv_bwd_data.0, x.0, bwd_data.0)
        }
        .map_err(dnn_err("sizing the backward-data workspace"))?;
        let bwd_filter_ws = unsafe {
            dnn::get_convolution_backward_filter_workspace_size(
                h,
                x.0,
                y.0,
                conv_bwd_filter.0,
                w.0,
                bwd_filter.0,
            )
        }
        .map_err(dnn_err("sizing the backward-filter workspace"))?;
        Ok(Plan {
            x,
            y,
            w,
            conv_fwd,
            conv_bwd_data,
            conv_bwd_filter,
            bf16,
            fwd: fwd.0,
            fwd_ws,
            bwd_data: bwd_data.0,
            bwd_data_ws,
            bwd_filter: bwd_filter.0,
            bwd_filter_ws,
        })
    }

    fn max_workspace(&self) -> usize {
        self.fwd_ws.max(self.bwd_data_ws).max(self.bwd_filter_ws)
    }
}

/// A plan's key: the shape and whether bf16 was asked for.
type PlanKey = ([usize; 8], bool);

/// The cuDNN state of the backend: handle, plans by shape and precision, shared workspace, bf16
/// staging buffers.
pub(crate) struct Convs {
    plans: HashMap<PlanKey, Plan>,
    workspace: Grow<u8>,
    workspace_len: usize,
    /// bf16 copies of a call's two operands and its result.
    stage: [Grow<u16>; 3],
    /// Declared last: dropped after the plans' descriptors.
    handle: Handle,
}

impl Convs {
    pub fn new(gpu: &Gpu) -> Result<Convs> {
        gpu.bind()?;
        // The convolution and ops sub-libraries (libcudnn_cnn.so.9, libcudnn_ops.so.9) load lazily;
        // check them now so that a broken install fails here, with its name.
        // SAFETY: plain calls into the loaded library.
        unsafe { sys::cudnnOpsVersionCheck() }
            .result()
            .map_err(|e| anyhow!("cuDNN's ops sub-library (libcudnn_ops.so.9) failed to load: {e:?}"))?;
        unsafe { sys::cudnnCnnVersionCheck() }.result().map_err(|e| {
            anyhow!("cuDNN's convolution sub-library (libcudnn_cnn.so.9) failed to load: {e:?}")
        })?;
        let raw = dnn::create_handle().map_err(dnn_err("creating a handle"))?;
        let handle = Handle { raw, ctx: gpu.ctx.clone() };
        // SAFETY: a fresh handle and the backend's live stream.
        unsafe { dnn::set_stream(handle.raw, gpu.stream.cu_stream() as _) }
            .map_err(dnn_err("setting the stream"))?;
        Ok(Convs {
            plans: HashMap::new(),
            workspace: Grow::new(),
            workspace_len: 0,
            stage: [Grow::new(), Grow::new(), Grow::new()],
            handle,
        })
    }

    /// Makes the plan of `s` at the asked precision (on first use; an error when cuDNN has no
    /// allowed algorithm for it, see conv_algo.rs), grows the workspace if the plan needs more, and,
    /// for a bf16 plan, the staging buffers to `stage_lens` elements. Returns the plan's key, the
    /// workspace address and the staging addresses (None for an f32 plan).
    fn prepare(
        &mut self,
        gpu: &Gpu,
        s: &ConvShape,
        bf16: bool,
        stage_lens: [usize; 3],
    ) -> Result<(PlanKey, u64, Option<[u64; 3]>)> {
        let key = ([s.n, s.c_in, s.h, s.w, s.c_out, s.kernel, s.stride, s.pad], bf16);
        if !self.plans.contains_key(&key) {
            // No fallback: a bf16 run whose convolution cuDNN cannot do in bf16 fails with an error
            // that names the shape, rather than run in f32 under a bf16 label.
            let p = Plan::new(self.handle.raw, s, bf16)?;
            self.plans.insert(key, p);
        }
        let p = &self.plans[&key];
        let need = p.max_workspace();
        let staged = p.bf16;
        self.workspace_len = self.workspace_len.max(need);
        let ws = addr_mut(gpu, self.workspace.ensure(gpu, self.workspace_len)?);
        let stage = if staged {
            let mut a = [0u64; 3];
            for (i, (g, len)) in self.stage.iter_mut().zip(stage_lens).enumerate() {
                a[i] = addr_mut(gpu, g.ensure(gpu, len)?);
            }
            Some(a)
        } else {
            None
        };
        Ok((key, ws, stage))
    }
}

/// Validates a shape as the CPU reference does, and the lengths of its x, w and y views, each
/// named as the caller names it.
fn check(op: &str, s: &ConvShape, [x, w, y]: [(&str, usize); 3]) -> Result<()> {
    ensure!(s.stride > 0 && s.kernel > 0, "{op}: kernel and stride must be positive: {s:?}");
    ensure!(
        s.h + 2 * s.pad >= s.kernel && s.w + 2 * s.pad >= s.kernel,
        "{op}: kernel larger than padded input: {s:?}"
    );
    expect_len(op, x.0, x.1, s.x_len())?;
    expect_len(op, w.0, w.1, s.w_len())?;
    expect_len(op, y.0, y.1, s.y_len())
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn scalar(v: &f32) -> *const c_void {
    v as *const f32 as *const c_void
}

/// Null for an empty workspace.
fn ws_ptr(ws: u64, bytes: usize) -> *mut c_void {
    if bytes == 0 {
        std::ptr::null_mut()
    } else {
        ws as *mut c_void
    }
}

fn precision(p: &Plan) -> &'static str {
    if p.bf16 {
        "bf16"
    } else {
        "f32"
    }
}

/// One convolution call, after [`check`]: reads the inputs `ins` and overwrites `out` (zeroed when
/// any of the three is empty). `call(handle, plan, [in0, in1], out, workspace)` makes the cuDNN
/// call on the addresses it is given: the views, or for a bf16 plan their bf16 copies in the
/// staging buffers (the inputs cast before the call, the output widened into `out` after it).
fn convolve(
    be: &Cuda,
    s: &ConvShape,
    ins: [DevView<'_>; 2],
    out: DevViewMut<'_>,
    call: impl FnOnce(sys::cudnnHandle_t, &Plan, [*const c_void; 2], *mut c_void, u64) -> Result<()>,
) -> Result<()> {
    if ins[0].len == 0 || ins[1].len == 0 || out.len == 0 {
        return super::ops::zero(be, &out);
    }
    let gpu = &be.gpu;
    gpu.bind()?;
    let mut convs = lock(&be.convs);
    let h = convs.handle.raw;
    let (key, ws, stage) = convs.prepare(gpu, s, be.bf16_conv(), [ins[0].len, ins[1].len, out.len])?;
    let p = &convs.plans[&key];
    let (srcs, dst) = match stage {
        Some([a, b, o]) => {
            cast_f32_to_bf16(be, ins[0].ptr, a, ins[0].len)?;
            cast_f32_to_bf16(be, ins[1].ptr, b, ins[1].len)?;
            ([a, b], o)
        }
        None => ([ins[0].ptr, ins[1].ptr], out.ptr),
    };
    call(h, p, srcs.map(|a| a as *const c_void), dst as *mut c_void, ws)?;
    if stage.is_some() {
        cast_bf16_to_f32(be, dst, out.ptr, out.len)?;
    }
    Ok(())
}

/// y = conv(x, w), overwritten.
pub(crate) fn forward(
    be: &Cuda,
    s: &ConvShape,
    x: DevView<'_>,
    w: DevView<'_>,
    y: DevViewMut<'_>,
) -> Result<()> {
    check("conv2d_forward", s, [("x", x.len), ("w", w.len), ("y", y.len)])?;
    convolve(be, s, [x, w], y, |h, p, [x, w], y, ws| {
        // SAFETY: descriptors match the validated view lengths (and the staging buffers hold at
        // least as many bf16 elements); the workspace holds at least fwd_ws bytes; β = 0 so the
        // output is only written.
        unsafe {
            dnn::convolution_forward(
                h,
                scalar(&ONE),
                p.x.0,
                x,
                p.w.0,
                w,
                p.conv_fwd.0,
                p.fwd,
                ws_ptr(ws, p.fwd_ws),
                p.fwd_ws,
                scalar(&ZERO),
                p.y.0,
                y,
            )
        }
        .map_err(|e| anyhow!("cuDNN convolution forward ({:?}, {}) for {s:?}: {e:?}", p.fwd, precision(p)))
    })
}

/// dx = conv_transpose(dy, w), overwritten.
pub(crate) fn backward_data(
    be: &Cuda,
    s: &ConvShape,
    dy: DevView<'_>,
    w: DevView<'_>,
    dx: DevViewMut<'_>,
) -> Result<()> {
    check("conv2d_backward_data", s, [("dx", dx.len), ("w", w.len), ("dy", dy.len)])?;
    convolve(be, s, [dy, w], dx, |h, p, [dy, w], dx, ws| {
        // SAFETY: as in `forward`.
        unsafe {
            dnn::convolution_backward_data(
                h,
                scalar(&ONE),
                p.w.0,
                w,
                p.y.0,
                dy,
                p.conv_bwd_data.0,
                p.bwd_data,
                ws_ptr(ws, p.bwd_data_ws),
                p.bwd_data_ws,
                scalar(&ZERO),
                p.x.0,
                dx,
            )
        }
        .map_err(|e| {
            anyhow!("cuDNN convolution backward-data ({:?}, {}) for {s:?}: {e:?}", p.bwd_data, precision(p))
        })
    })
}

/// dw = Σ_n dy ⋆ x, overwritten.
pub(crate) fn backward_filter(
    be: &Cuda,
    s: &ConvShape,
    x: DevView<'_>,
    dy: DevView<'_>,
    dw: DevViewMut<'_>,
) -> Result<()> {
    check("conv2d_backward_filter", s, [("x", x.len), ("dw", dw.len), ("dy", dy.len)])?;
    convolve(be, s, [x, dy], dw, |h, p, [x, dy], dw, ws| {
        // SAFETY: as in `forward`.
        unsafe {
            dnn::convolution_backward_filter(
                h,
                scalar(&ONE),
                p.x.0,
                x,
                p.y.0,
                dy,
                p.conv_bwd_filter.0,
                p.bwd_filter,
                ws_ptr(ws, p.bwd_filter_ws),
                p.bwd_filter_ws,
                scalar(&ZERO),
                p.w.0,
                dw,
            )
        }
        .map_err(|e| {
            anyhow!(
                "cuDNN convolution backward-filter ({:?}, {}) for {s:?}: {e:?}",
                p.bwd_filter,
                precision(p)
            )
        })
    })
}
