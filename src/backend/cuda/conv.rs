//! Convolutions through cuDNN: NCHW f32, cross-correlation (as the CPU's im2col), no bias.
//!
//! Per distinct [`ConvShape`] a plan holds the descriptors and the three algorithms (forward,
//! backward-data, backward-filter), chosen once from cuDNN's heuristics
//! (`cudnnGet*Algorithm_v7`): the first result that succeeded, uses strict FP32 FMA math (no TF32:
//! the results are compared with the CPU in f32) and is deterministic, within a workspace limit.
//! One workspace, shared by every call on the stream, grows when a new plan needs more, which
//! happens when a shape is first seen (the first training step). All outputs are overwritten
//! (β = 0, so cuDNN never reads them).
//!
//! cuDNN is used through cudarc's `result` layer with raw handles: its `safe` wrappers are neither
//! `Send` nor `Sync`, and the backend must be `Sync`. Every handle lives behind the backend's
//! mutex and is only used with the context bound to the calling thread.

use super::context::{addr_mut, Grow};
use super::{expect_len, lock, Cuda, DevView, DevViewMut, Gpu};
use crate::backend::ConvShape;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::CudaContext;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

/// Largest workspace an algorithm may ask for.
const WORKSPACE_LIMIT: usize = 1 << 30;

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

fn tensor4d(dims: [c_int; 4]) -> Result<TensorDesc> {
    let d = TensorDesc(dnn::create_tensor_descriptor().map_err(dnn_err("creating a tensor descriptor"))?);
    // SAFETY: a freshly created descriptor.
    unsafe {
        dnn::set_tensor4d_descriptor(
            d.0,
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            dims,
        )
    }
    .map_err(dnn_err("setting a tensor descriptor"))?;
    Ok(d)
}

/// The descriptors and algorithms of one convolution shape.
struct Plan {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    fwd: sys::cudnnConvolutionFwdAlgo_t,
    fwd_ws: usize,
    bwd_data: sys::cudnnConvolutionBwdDataAlgo_t,
    bwd_data_ws: usize,
    bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    bwd_filter_ws: usize,
}

/// One heuristic result, whatever the direction.
struct Candidate<A> {
    algo: A,
    status: sys::cudnnStatus_t,
    memory: usize,
    deterministic: bool,
    math: sys::cudnnMathType_t,
}

/// The first successful strict-FP32 candidate within the workspace limit, deterministic if any is.
fn pick<A: Copy + std::fmt::Debug>(
    what: &str,
    s: &ConvShape,
    c: &[Candidate<A>],
) -> Result<(A, sys::cudnnMathType_t)> {
    let ok = |x: &&Candidate<A>| {
        x.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
            && x.math == sys::cudnnMathType_t::CUDNN_FMA_MATH
            && x.memory <= WORKSPACE_LIMIT
    };
    if let Some(x) = c.iter().filter(ok).find(|x| x.deterministic) {
        return Ok((x.algo, x.math));
    }
    if let Some(x) = c.iter().find(ok) {
        eprintln!(
            "warning: cuDNN offers no deterministic {what} algorithm for {s:?}; using {:?} (results may vary run to run)",
            x.algo
        );
        return Ok((x.algo, x.math));
    }
    let seen: Vec<String> = c.iter().map(|x| format!("{:?}/{:?}/{:?}", x.algo, x.status, x.math)).collect();
    bail!("cuDNN has no FP32 {what} algorithm for {s:?} (heuristics returned: {})", seen.join(", "))
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

impl Plan {
    fn new(h: sys::cudnnHandle_t, s: &ConvShape) -> Result<Plan> {
        let [n, ci, hh, ww, co, k, st, pad] = dims_i32(s)?;
        let (oh, ow) = (c_int::try_from(s.out_h())?, c_int::try_from(s.out_w())?);
        let x = tensor4d([n, ci, hh, ww])?;
        let y = tensor4d([n, co, oh, ow])?;
        let w = FilterDesc(dnn::create_filter_descriptor().map_err(dnn_err("creating a filter descriptor"))?);
        // SAFETY: fresh descriptors; plain integer arguments.
        unsafe {
            dnn::set_filter4d_descriptor(
                w.0,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [co, ci, k, k],
            )
        }
        .map_err(dnn_err("setting the filter descriptor"))?;
        let conv = ConvDesc(
            dnn::create_convolution_descriptor().map_err(dnn_err("creating a convolution descriptor"))?,
        );
        // SAFETY: as above.
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
        // Strict FP32: no TF32 tensor cores (their 10-bit mantissa would fail the CPU comparison).
        // SAFETY: as above.
        unsafe { dnn::set_convolution_math_type(conv.0, sys::cudnnMathType_t::CUDNN_FMA_MATH) }
            .map_err(dnn_err("setting the math type"))?;

        // cuDNN must agree with ConvShape about the output size.
        let mut od = [0 as c_int; 4];
        // SAFETY: four out-parameters; descriptors set above.
        unsafe {
            sys::cudnnGetConvolution2dForwardOutputDim(
                conv.0, x.0, w.0, &mut od[0], &mut od[1], &mut od[2], &mut od[3],
            )
        }
        .result()
        .map_err(dnn_err("computing the output size"))?;
        ensure!(
            od == [n, co, oh, ow],
            "cuDNN computes output {od:?} for {s:?}, expected [{n}, {co}, {oh}, {ow}]"
        );

        // SAFETY (the three queries): valid handle and descriptors; the out arrays hold `N` entries.
        let fwd = {
            const N: usize = 8;
            let mut r = [unsafe { std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>() }; N];
            let mut got = 0;
            unsafe {
                dnn::get_convolution_forward_algorithm(
                    h,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    N as c_int,
                    &mut got,
                    r.as_mut_ptr(),
                )
            }
            .map_err(dnn_err("choosing the forward algorithm"))?;
            let c: Vec<_> = r[..(got.max(0) as usize).min(N)]
                .iter()
                .map(|p| Candidate {
                    algo: p.algo,
                    status: p.status,
                    memory: p.memory,
                    deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                    math: p.mathType,
                })
                .collect();
            pick("forward", s, &c)?
        };
        let bwd_data = {
            const N: usize = 8;
            let mut r = [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>() }; N];
            let mut got = 0;
            unsafe {
                dnn::get_convolution_backward_data_algorithm(
                    h,
                    w.0,
                    y.0,
                    conv.0,
                    x.0,
                    N as c_int,
                    &mut got,
                    r.as_mut_ptr(),
                )
            }
            .map_err(dnn_err("choosing the backward-data algorithm"))?;
            let c: Vec<_> = r[..(got.max(0) as usize).min(N)]
                .iter()
                .map(|p| Candidate {
                    algo: p.algo,
                    status: p.status,
                    memory: p.memory,
                    deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                    math: p.mathType,
                })
                .collect();
            pick("backward-data", s, &c)?
        };
        let bwd_filter = {
            const N: usize = 8;
            let mut r = [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>() }; N];
            let mut got = 0;
            unsafe {
                dnn::get_convolution_backward_filter_algorithm(
                    h,
                    x.0,
                    y.0,
                    conv.0,
                    w.0,
                    N as c_int,
                    &mut got,
                    r.as_mut_ptr(),
                )
            }
            .map_err(dnn_err("choosing the backward-filter algorithm"))?;
            let c: Vec<_> = r[..(got.max(0) as usize).min(N)]
                .iter()
                .map(|p| Candidate {
                    algo: p.algo,
                    status: p.status,
                    memory: p.memory,
                    deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                    math: p.mathType,
                })
                .collect();
            pick("backward-filter", s, &c)?
        };
        // All three chose FMA math, which the descriptor already has.
        debug_assert!([fwd.1, bwd_data.1, bwd_filter.1]
            .iter()
            .all(|m| *m == sys::cudnnMathType_t::CUDNN_FMA_MATH));

        // SAFETY: valid handle, descriptors and algorithms.
        let fwd_ws = unsafe { dnn::get_convolution_forward_workspace_size(h, x.0, w.0, conv.0, y.0, fwd.0) }
            .map_err(dnn_err("sizing the forward workspace"))?;
        let bwd_data_ws = unsafe {
            dnn::get_convolution_backward_data_workspace_size(h, w.0, y.0, conv.0, x.0, bwd_data.0)
        }
        .map_err(dnn_err("sizing the backward-data workspace"))?;
        let bwd_filter_ws = unsafe {
            dnn::get_convolution_backward_filter_workspace_size(h, x.0, y.0, conv.0, w.0, bwd_filter.0)
        }
        .map_err(dnn_err("sizing the backward-filter workspace"))?;
        Ok(Plan {
            x,
            y,
            w,
            conv,
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

/// The cuDNN state of the backend: handle, plans by shape, shared workspace.
pub(crate) struct Convs {
    plans: HashMap<[usize; 8], Plan>,
    workspace: Grow<u8>,
    workspace_len: usize,
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
        Ok(Convs { plans: HashMap::new(), workspace: Grow::new(), workspace_len: 0, handle })
    }

    /// The plan of `s` (made on first use) and the workspace (grown if the plan needs more).
    fn plan(&mut self, gpu: &Gpu, s: &ConvShape) -> Result<(&Plan, u64)> {
        let key = [s.n, s.c_in, s.h, s.w, s.c_out, s.kernel, s.stride, s.pad];
        if !self.plans.contains_key(&key) {
            let p = Plan::new(self.handle.raw, s)?;
            self.plans.insert(key, p);
        }
        let need = self.plans[&key].max_workspace();
        self.workspace_len = self.workspace_len.max(need);
        let ws = addr_mut(gpu, self.workspace.ensure(gpu, self.workspace_len)?);
        Ok((&self.plans[&key], ws))
    }
}

/// Validates a shape as the CPU reference does and returns (x, w, y) lengths.
fn check(op: &str, s: &ConvShape) -> Result<(usize, usize, usize)> {
    ensure!(s.stride > 0 && s.kernel > 0, "{op}: kernel and stride must be positive: {s:?}");
    ensure!(
        s.h + 2 * s.pad >= s.kernel && s.w + 2 * s.pad >= s.kernel,
        "{op}: kernel larger than padded input: {s:?}"
    );
    Ok((s.x_len(), s.w_len(), s.y_len()))
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

/// y = conv(x, w), overwritten.
pub(crate) fn forward(
    be: &Cuda,
    s: &ConvShape,
    x: DevView<'_>,
    w: DevView<'_>,
    y: DevViewMut<'_>,
) -> Result<()> {
    const OP: &str = "conv2d_forward";
    let (xl, wl, yl) = check(OP, s)?;
    expect_len(OP, "x", x.len, xl)?;
    expect_len(OP, "w", w.len, wl)?;
    expect_len(OP, "y", y.len, yl)?;
    if xl == 0 || wl == 0 || yl == 0 {
        return super::ops::zero(be, &y);
    }
    let gpu = &be.gpu;
    gpu.bind()?;
    let mut convs = lock(&be.convs);
    let h = convs.handle.raw;
    let (p, ws) = convs.plan(gpu, s)?;
    // SAFETY: descriptors match the validated view lengths; the workspace holds at least fwd_ws
    // bytes; β = 0 so y is only written.
    unsafe {
        dnn::convolution_forward(
            h,
            scalar(&ONE),
            p.x.0,
            x.ptr as *const c_void,
            p.w.0,
            w.ptr as *const c_void,
            p.conv.0,
            p.fwd,
            ws_ptr(ws, p.fwd_ws),
            p.fwd_ws,
            scalar(&ZERO),
            p.y.0,
            y.ptr as *mut c_void,
        )
    }
    .map_err(|e| anyhow!("cuDNN convolution forward ({:?}) for {s:?}: {e:?}", p.fwd))
}

/// dx = conv_transpose(dy, w), overwritten.
pub(crate) fn backward_data(
    be: &Cuda,
    s: &ConvShape,
    dy: DevView<'_>,
    w: DevView<'_>,
    dx: DevViewMut<'_>,
) -> Result<()> {
    const OP: &str = "conv2d_backward_data";
    let (xl, wl, yl) = check(OP, s)?;
    expect_len(OP, "dx", dx.len, xl)?;
    expect_len(OP, "w", w.len, wl)?;
    expect_len(OP, "dy", dy.len, yl)?;
    if xl == 0 || wl == 0 || yl == 0 {
        return super::ops::zero(be, &dx);
    }
    let gpu = &be.gpu;
    gpu.bind()?;
    let mut convs = lock(&be.convs);
    let h = convs.handle.raw;
    let (p, ws) = convs.plan(gpu, s)?;
    // SAFETY: as in `forward`.
    unsafe {
        dnn::convolution_backward_data(
            h,
            scalar(&ONE),
            p.w.0,
            w.ptr as *const c_void,
            p.y.0,
            dy.ptr as *const c_void,
            p.conv.0,
            p.bwd_data,
            ws_ptr(ws, p.bwd_data_ws),
            p.bwd_data_ws,
            scalar(&ZERO),
            p.x.0,
            dx.ptr as *mut c_void,
        )
    }
    .map_err(|e| anyhow!("cuDNN convolution backward-data ({:?}) for {s:?}: {e:?}", p.bwd_data))
}

/// dw = Σ_n dy ⋆ x, overwritten.
pub(crate) fn backward_filter(
    be: &Cuda,
    s: &ConvShape,
    x: DevView<'_>,
    dy: DevView<'_>,
    dw: DevViewMut<'_>,
) -> Result<()> {
    const OP: &str = "conv2d_backward_filter";
    let (xl, wl, yl) = check(OP, s)?;
    expect_len(OP, "x", x.len, xl)?;
    expect_len(OP, "dw", dw.len, wl)?;
    expect_len(OP, "dy", dy.len, yl)?;
    if xl == 0 || wl == 0 || yl == 0 {
        return super::ops::zero(be, &dw);
    }
    let gpu = &be.gpu;
    gpu.bind()?;
    let mut convs = lock(&be.convs);
    let h = convs.handle.raw;
    let (p, ws) = convs.plan(gpu, s)?;
    // SAFETY: as in `forward`.
    unsafe {
        dnn::convolution_backward_filter(
            h,
            scalar(&ONE),
            p.x.0,
            x.ptr as *const c_void,
            p.y.0,
            dy.ptr as *const c_void,
            p.conv.0,
            p.bwd_filter,
            ws_ptr(ws, p.bwd_filter_ws),
            p.bwd_filter_ws,
            scalar(&ZERO),
            p.w.0,
            dw.ptr as *mut c_void,
        )
    }
    .map_err(|e| anyhow!("cuDNN convolution backward-filter ({:?}) for {s:?}: {e:?}", p.bwd_filter))
}
