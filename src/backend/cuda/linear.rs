//! The linear layer through cuBLAS sgemm (column-major), with params = [W (out×inp, row-major) |
//! b (out)].
//!
//! A row-major r×c matrix is the column-major c×r matrix of the same bytes, so with primes for
//! column-major views: x' is inp×n (ld inp), W' is inp×out (ld inp), y' and dy' are out×n (ld out).
//! - forward:  y' = b·1ᵀ (a rank-1 GEMM with a vector of ones, β = 0), then y' += W'ᵀ x';
//! - dx' = W' dy'             (inp×n);
//! - dW' = x' dy'ᵀ            (inp×out, i.e. dW = dyᵀ x row-major);
//! - db  = dy' 1              (out, summed in f32 by cuBLAS; the CPU sums in f64).
//!
//! Math mode CUBLAS_DEFAULT_MATH: FP32 without TF32. Every output is overwritten with β = 0
//! except the forward's second GEMM, which adds onto the bias it just wrote.
//!
//! CUDA graphs: cuBLAS is given its own workspace (`cublasSetWorkspace`, 32 MiB as NVIDIA
//! recommends for Hopper) right after its stream, so that a captured GEMM never makes cuBLAS
//! allocate; α and β are host scalars (pointer mode host), which a capture records by value
//! (they never change here). The linear layer stays in f32 in every precision mode.

use super::context::{addr, addr_mut, Grow};
use super::{expect_len, lock, Cuda, DevView, DevViewMut, Gpu};
use crate::backend::{LinearBackward, LinearForward, LinearShape};
use anyhow::{anyhow, ensure, Context as _, Result};
use cudarc::cublas::{result as blas, sys};
use cudarc::driver::CudaContext;
use std::ffi::c_int;
use std::sync::{Arc, MutexGuard};

/// A cuBLAS handle bound to the backend's stream.
struct Handle {
    raw: sys::cublasHandle_t,
    ctx: Arc<CudaContext>,
}

// SAFETY: used only under the backend's mutex, with the context bound to the calling thread.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: created by cublasCreate, destroyed once; errors at teardown are ignored.
        let _ = unsafe { blas::destroy_handle(self.raw) };
    }
}

/// cuBLAS's workspace (NVIDIA's recommendation for Hopper; more than enough for these GEMMs).
const CUBLAS_WORKSPACE: usize = 32 << 20;

/// The cuBLAS state: handle and a device vector of ones (for the bias broadcast and db).
pub(crate) struct Blas {
    ones: Grow<f32>,
    ones_len: usize,
    handle: Handle,
    /// Declared after the handle: freed after it is destroyed. None if its address was not
    /// 256-byte aligned (cuBLAS's requirement; device allocations are), leaving cuBLAS's own pool.
    _workspace: Option<cudarc::driver::CudaSlice<u8>>,
}

impl Blas {
    pub fn new(gpu: &Gpu) -> Result<Blas> {
        gpu.bind()?;
        let raw = blas::create_handle().map_err(|e| anyhow!("cuBLAS: creating a handle: {e:?}"))?;
        let handle = Handle { raw, ctx: gpu.ctx.clone() };
        // SAFETY: a fresh handle and the backend's live stream.
        unsafe { blas::set_stream(handle.raw, gpu.stream.cu_stream() as _) }
            .map_err(|e| anyhow!("cuBLAS: setting the stream: {e:?}"))?;
        // SAFETY: a valid handle.
        unsafe { sys::cublasSetMathMode(handle.raw, sys::cublasMath_t::CUBLAS_DEFAULT_MATH) }
            .result()
            .map_err(|e| anyhow!("cuBLAS: setting the math mode: {e:?}"))?;
        // After set_stream, which resets the workspace to cuBLAS's default pool.
        let mut ws = gpu.alloc_zeros::<u8>(CUBLAS_WORKSPACE)?;
        let ptr = addr_mut(gpu, &mut ws);
        let workspace = if ptr % 256 == 0 {
            // SAFETY: a valid handle and a live device buffer of CUBLAS_WORKSPACE bytes that
            // outlives the handle (field order).
            unsafe { sys::cublasSetWorkspace_v2(handle.raw, ptr as *mut std::ffi::c_void, CUBLAS_WORKSPACE) }
                .result()
                .map_err(|e| anyhow!("cuBLAS: setting the workspace: {e:?}"))?;
            Some(ws)
        } else {
            None
        };
        Ok(Blas { ones: Grow::new(), ones_len: 0, handle, _workspace: workspace })
    }

    /// The address of at least `n` ones.
    fn ones(&mut self, gpu: &Gpu, n: usize) -> Result<u64> {
        if self.ones_len < n {
            let buf = self.ones.ensure(gpu, n)?;
            let host = vec![1.0f32; buf.len()];
            gpu.stream
                .memcpy_htod(&host, buf)
                .map_err(|e| super::context::driver_error(e, "filling ones"))?;
            self.ones_len = buf.len();
        }
        Ok(addr(gpu, self.ones.ensure(gpu, n)?))
    }
}

/// Checks the views that both directions read: x (n×inp) and params (out×inp + out).
fn check(d: LinearShape, x: &DevView<'_>, params: &DevView<'_>) -> Result<()> {
    expect_len("linear", "x", x.len, d.n * d.inp)?;
    expect_len("linear", "params", params.len, d.out * d.inp + d.out)
}

/// (n, inp, out) as cuBLAS ints.
fn ints(d: LinearShape) -> Result<(c_int, c_int, c_int)> {
    let int = |what: &str, v: usize| {
        c_int::try_from(v).with_context(|| format!("linear: {what} = {v} exceeds cuBLAS's int dimensions"))
    };
    Ok((int("n", d.n)?, int("inp", d.inp)?, int("out", d.out)?))
}

/// What the GEMMs of one call need: cuBLAS locked (its handle), the address of at least n ones,
/// and (n, inp, out) as cuBLAS ints.
struct Gemms<'a> {
    blas: MutexGuard<'a, Blas>,
    ones: u64,
    dims: (c_int, c_int, c_int),
}

/// Binds the context and prepares the GEMMs of `d`.
fn begin(be: &Cuda, d: LinearShape) -> Result<Gemms<'_>> {
    let gpu = &be.gpu;
    gpu.bind()?;
    let mut blas = lock(&be.blas);
    let ones = blas.ones(gpu, d.n)?;
    Ok(Gemms { blas, ones, dims: ints(d)? })
}

/// An operand of [`sgemm`]: a column-major matrix at a device address with leading dimension
/// `ld`, used as it is (`t` false) or transposed.
#[derive(Clone, Copy)]
struct Operand {
    ptr: u64,
    ld: c_int,
    t: bool,
}

/// The matrix at `ptr` as it is.
fn plain(ptr: u64, ld: c_int) -> Operand {
    Operand { ptr, ld, t: false }
}

/// The matrix at `ptr` transposed.
fn transposed(ptr: u64, ld: c_int) -> Operand {
    Operand { ptr, ld, t: true }
}

/// C (m×n, at `c` with leading dimension ldc) = op(A) op(B) + β C, column-major, α = 1.
fn sgemm(
    h: sys::cublasHandle_t,
    (m, n, k): (c_int, c_int, c_int),
    a: Operand,
    b: Operand,
    beta: f32,
    (c, ldc): (u64, c_int),
) -> Result<()> {
    let op =
        |t: bool| if t { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
    let alpha = 1.0f32;
    // SAFETY: the callers pass device pointers covering the matrices their dimensions describe,
    // with leading dimensions ≥ max(1, rows); α and β are host scalars (the default pointer mode).
    unsafe {
        blas::sgemm(
            h,
            op(a.t),
            op(b.t),
            m,
            n,
            k,
            &alpha,
            a.ptr as *const f32,
            a.ld,
            b.ptr as *const f32,
            b.ld,
            &beta,
            c as *mut f32,
            ldc,
        )
    }
    .map_err(|e| anyhow!("cuBLAS sgemm (m={m}, n={n}, k={k}): {e:?}"))
}

/// y = x Wᵀ + b, overwritten.
pub(crate) fn forward(be: &Cuda, a: LinearForward<DevView<'_>, DevViewMut<'_>>) -> Result<()> {
    let LinearForward { s: d, x, params, y } = a;
    let LinearShape { n, inp, out } = d;
    check(d, &x, &params)?;
    expect_len("linear", "y", y.len, n * out)?;
    if n == 0 || out == 0 {
        return Ok(());
    }
    let Gemms { blas, ones, dims: (ni, ii, oi) } = begin(be, d)?;
    let h = blas.handle.raw;
    let bias = params.at(out * inp);
    // y' (out×n) = b (out×1) · onesᵀ (1×n), β = 0.
    sgemm(h, (oi, ni, 1), plain(bias, oi), plain(ones, 1), 0.0, (y.ptr, oi))?;
    if inp > 0 {
        // y' += W'ᵀ (out×inp) · x' (inp×n).
        sgemm(h, (oi, ni, ii), transposed(params.ptr, ii), plain(x.ptr, ii), 1.0, (y.ptr, oi))?;
    }
    Ok(())
}

/// dx = dy W and d_params = [dyᵀ x | Σ_n dy], all overwritten.
pub(crate) fn backward(be: &Cuda, a: LinearBackward<DevView<'_>, DevViewMut<'_>>) -> Result<()> {
    let LinearBackward { s: d, x, params, dy, dx, d_params } = a;
    let LinearShape { n, inp, out } = d;
    check(d, &x, &params)?;
    expect_len("linear", "dy", dy.len, n * out)?;
    expect_len("linear", "dx", dx.len, n * inp)?;
    ensure!(
        d_params.len == params.len,
        "linear: d_params has {} elements, params {}",
        d_params.len,
        params.len
    );
    // Degenerate sizes: a sum over nothing is zero.
    if n == 0 || out == 0 {
        super::ops::zero(be, &dx)?;
        return super::ops::zero(be, &d_params);
    }
    let Gemms { blas, ones, dims: (ni, ii, oi) } = begin(be, d)?;
    let h = blas.handle.raw;
    if inp > 0 {
        // dx' (inp×n) = W' (inp×out) · dy' (out×n).
        sgemm(h, (ii, ni, oi), plain(params.ptr, ii), plain(dy.ptr, oi), 0.0, (dx.ptr, ii))?;
        // dW' (inp×out) = x' (inp×n) · dy'ᵀ (n×out).
        sgemm(h, (ii, oi, ni), plain(x.ptr, ii), transposed(dy.ptr, oi), 0.0, (d_params.ptr, ii))?;
    }
    // db (out×1) = dy' (out×n) · ones (n×1).
    sgemm(h, (oi, 1, ni), plain(dy.ptr, oi), plain(ones, ni), 0.0, (d_params.at(out * inp), oi))?;
    Ok(())
}
