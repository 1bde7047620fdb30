//! Opening the GPU: the availability probe, the context, one non-default stream, and the kernel
//! modules of [`crate::kernels::PTX`], loaded once with every function cached by name.
//!
//! cudarc (with `dynamic-loading`) panics when a library it calls into is missing, so every library
//! is probed with cudarc's `is_culib_present` before the first call into it, and absence becomes an
//! error that names the library and the fix. The probe order is: driver, visible devices, kernels
//! in this build, cuBLAS, cuDNN, then the context itself.

use anyhow::{anyhow, bail, Result};
use cudarc::driver::{
    result as drv, sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, DriverError,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Every kernel the backend launches; opening fails if the PTX lacks one (a stale build).
pub(crate) const REQUIRED_KERNELS: &[&str] = &[
    "bn_fwd_train_fused",
    "bn_fwd_stats_partial",
    "bn_fwd_apply",
    "bn_fwd_eval",
    "bn_bwd_fused",
    "bn_bwd_partial",
    "bn_bwd_apply",
    "add_assign_f32",
    "shortcut_fwd",
    "shortcut_bwd_acc",
    "avgpool_fwd",
    "avgpool_bwd",
    "softmax_xent",
    "sgd_step_multi",
    "adam_step_multi",
    "lion_step_multi",
    "cast_f32_to_bf16",
    "cast_bf16_to_f32",
];

/// Whether the NVIDIA driver library (libcuda.so.1) can be loaded. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: tries to dlopen the candidate names and drops the handles; no symbol is called.
    unsafe { sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded (libcublas.so.13/.12, with its libcublasLt). Never panics.
pub fn cublas_present() -> bool {
    // SAFETY: as for `driver_present`.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// Whether cuDNN can be loaded (libcudnn.so.9). Never panics.
pub fn cudnn_present() -> bool {
    // SAFETY: as for `driver_present`.
    unsafe { cudarc::cudnn::sys::is_culib_present() }
}

fn visible_devices() -> String {
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => format!("CUDA_VISIBLE_DEVICES={v:?}"),
        Err(_) => "CUDA_VISIBLE_DEVICES is unset".into(),
    }
}

/// The driver's CUDA version as (major, minor), e.g. (13, 0).
fn driver_version() -> Result<(i32, i32)> {
    let mut v = 0;
    // SAFETY: writes one int; the driver library is loaded (checked by the caller).
    unsafe { sys::cuDriverGetVersion(&mut v) }.result().map_err(|e| anyhow!("cuDriverGetVersion: {e}"))?;
    Ok((v / 1000, (v % 1000) / 10))
}

/// Turns a driver error into an error with a hint where one helps.
pub(crate) fn driver_error(e: DriverError, what: &str) -> anyhow::Error {
    use sys::cudaError_enum as E;
    match e.0 {
        E::CUDA_ERROR_OUT_OF_MEMORY => anyhow!("{what}: out of GPU memory ({e})"),
        E::CUDA_ERROR_ILLEGAL_ADDRESS
        | E::CUDA_ERROR_MISALIGNED_ADDRESS
        | E::CUDA_ERROR_ILLEGAL_INSTRUCTION
        | E::CUDA_ERROR_LAUNCH_FAILED => anyhow!(
            "{what}: {e}. A kernel faulted; CUDA reports that at a later call, so the operation named \
             here may not be the faulting one: rerun with CUDA_LAUNCH_BLOCKING=1 to find it"
        ),
        _ => anyhow!("{what}: {e}"),
    }
}

/// The opened device: context, stream and kernels. Everything runs on `stream`.
pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    /// A non-default stream (the legacy default stream cannot be captured into a CUDA graph).
    pub stream: Arc<CudaStream>,
    funcs: HashMap<String, CudaFunction>,
    /// Streaming multiprocessors, for grid sizes.
    pub sms: u32,
    pub device_name: String,
    pub compute_capability: (i32, i32),
    pub driver_version: (i32, i32),
    /// True while `stream` is capturing a CUDA graph: allocating or freeing device memory then
    /// would break the capture (or end up inside the graph), so [`Gpu::alloc_zeros`] and
    /// [`Grow::ensure`] refuse.
    capturing: AtomicBool,
    /// Bumped whenever something a captured graph depends on changes outside it: a workspace is
    /// reallocated (its address changes), or the BatchNorm variant or the convolution precision
    /// is switched. A graph captured at another epoch is stale and is captured again.
    epoch: AtomicU64,
}

impl Gpu {
    /// Probes the libraries and the device, then creates the context, the stream and the kernels.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        if !driver_present() {
            bail!("no NVIDIA driver (libcuda.so.1 not found): install the driver, or run with --device cpu");
        }
        if let Err(e) = drv::init() {
            if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE {
                bail!(
                    "no CUDA GPU visible ({}): check nvidia-smi, or run with --device cpu",
                    visible_devices()
                );
            }
            bail!("the NVIDIA driver failed to initialise (cuInit: {e}); check nvidia-smi, or run with --device cpu");
        }
        let count = drv::device::get_count().map_err(|e| driver_error(e, "counting GPUs"))?;
        if count <= 0 {
            bail!("no CUDA GPU visible ({}): check nvidia-smi, or run with --device cpu", visible_devices());
        }
        if ordinal >= count as usize {
            bail!("GPU {ordinal} requested but only {count} visible ({})", visible_devices());
        }
        if !crate::kernels::BUILT {
            bail!("this build has no kernels: {}", crate::kernels::NOT_BUILT_REASON);
        }
        if !cublas_present() {
            bail!(
                "cuBLAS not found (libcublas.so.13 or .12, with libcublasLt): pip install nvidia-cublas-cu13 \
                 (or use a PyTorch install's nvidia/cublas/lib) and add its lib dir to LD_LIBRARY_PATH"
            );
        }
        if !cudnn_present() {
            bail!("cuDNN not found (libcudnn.so.9): pip install nvidia-cudnn-cu13 and add its lib dir to LD_LIBRARY_PATH");
        }
        let driver_version = driver_version()?;

        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(e, &format!("creating a context on GPU {ordinal}")))?;
        // SAFETY: every buffer, kernel, copy, cuDNN and cuBLAS call of this backend is issued on the
        // one stream created below, so stream order alone orders every use of every buffer; the
        // per-buffer events that cudarc would otherwise record are not needed (and would get in the
        // way of CUDA-graph capture).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| driver_error(e, "creating a stream"))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| driver_error(e, "querying the SM count"))?
            .max(1) as u32;
        let device_name = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        let compute_capability =
            ctx.compute_capability().map_err(|e| driver_error(e, "querying the compute capability"))?;

        let mut funcs = HashMap::new();
        for (module, ptx) in crate::kernels::PTX {
            let m = ctx.load_module(Ptx::from_src(*ptx)).map_err(|e| {
                if matches!(
                    e.0,
                    sys::cudaError_enum::CUDA_ERROR_UNSUPPORTED_PTX_VERSION | sys::cudaError_enum::CUDA_ERROR_INVALID_PTX
                ) {
                    anyhow!(
                        "loading kernel module {module}: {e}. The driver supports CUDA {}.{} but the kernels were \
                         compiled by nvcc {} for {}: update the driver, or rebuild with an nvcc no newer than the \
                         driver (see docs/KERNELS.md)",
                        driver_version.0,
                        driver_version.1,
                        crate::kernels::NVCC_VERSION.unwrap_or("?"),
                        crate::kernels::PTX_ARCH
                    )
                } else {
                    driver_error(e, &format!("loading kernel module {module}"))
                }
            })?;
            let names =
                crate::kernels::ENTRY_POINTS.iter().find(|(n, _)| n == module).map_or(&[][..], |(_, e)| *e);
            for name in names {
                let f =
                    m.load_function(name).map_err(|e| driver_error(e, &format!("loading kernel {name}")))?;
                funcs.insert(name.to_string(), f);
            }
        }
        if let Some(missing) = REQUIRED_KERNELS.iter().find(|k| !funcs.contains_key(**k)) {
            bail!("kernel {missing} is missing from this build's PTX: rebuild (touch build.rs)");
        }
        Ok(Gpu {
            ctx,
            stream,
            funcs,
            sms,
            device_name,
            compute_capability,
            driver_version,
            capturing: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        })
    }

    /// A kernel by name (all were loaded at open).
    pub fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs.get(name).ok_or_else(|| anyhow!("kernel {name} is not loaded"))
    }

    pub fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Acquire)
    }

    pub(crate) fn set_capturing(&self, on: bool) {
        self.capturing.store(on, Ordering::Release);
    }

    /// See the field. Read when a graph is captured and before each replay.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks every captured graph stale (see the field).
    pub fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Errors when a CUDA graph is being captured (an allocation would break it).
    fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            bail!(
                "{what} while a CUDA graph is being captured: the step needs memory that its warm-up step did \
                 not allocate (a bug; run with --cuda-graphs false to train without graphs)"
            );
        }
        Ok(())
    }

    /// A zero-filled device buffer; out of memory becomes "out of GPU memory allocating N MiB".
    /// Refused while a CUDA graph is being captured.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.refuse_while_capturing("allocating device memory")?;
        let r = if len == 0 { self.stream.null::<T>() } else { self.stream.alloc_zeros::<T>(len) };
        r.map_err(|e| {
            let mib = (len * std::mem::size_of::<T>()) as f64 / (1024.0 * 1024.0);
            if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                anyhow!("out of GPU memory allocating {mib:.1} MiB")
            } else {
                driver_error(e, &format!("allocating {mib:.1} MiB on the GPU"))
            }
        })
    }

    /// Binds the context to the calling thread (needed before raw cuDNN/cuBLAS calls).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| driver_error(e, "binding the CUDA context"))
    }

    /// Waits for all queued work; asynchronous kernel faults surface here.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| driver_error(e, "waiting for the GPU"))
    }
}

/// A device buffer that only grows: `ensure` reallocates (zero-filled) when asked for more than it
/// holds. The backend grows its workspaces the first time it meets a shape, i.e. during the first
/// step; later steps reuse them, so a step captured after a warm-up step allocates nothing. A
/// reallocation bumps the GPU's epoch (a captured graph holds the old address), and is refused
/// during a capture (before the old buffer is freed).
pub(crate) struct Grow<T> {
    buf: Option<CudaSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Grow<T> {
    pub fn new() -> Self {
        Grow { buf: None }
    }

    /// The buffer, holding at least `len` elements (at least one).
    pub fn ensure(&mut self, gpu: &Gpu, len: usize) -> Result<&mut CudaSlice<T>> {
        let len = len.max(1);
        let big_enough = matches!(&self.buf, Some(b) if b.len() >= len);
        if !big_enough {
            gpu.refuse_while_capturing("growing a workspace")?;
            gpu.bump_epoch();
            // The old buffer is freed in stream order, after the work already queued that uses it.
            self.buf = None;
            self.buf = Some(gpu.alloc_zeros::<T>(len)?);
        }
        Ok(self.buf.as_mut().expect("just ensured"))
    }
}

/// The raw device address of a whole buffer.
pub(crate) fn addr<T>(gpu: &Gpu, b: &CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    // With event tracking off the returned guard records nothing; the address is all we need.
    let (p, _guard) = b.device_ptr(&gpu.stream);
    p
}

/// The raw device address of a whole buffer, for writing.
pub(crate) fn addr_mut<T>(gpu: &Gpu, b: &mut CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtrMut;
    let (p, _guard) = b.device_ptr_mut(&gpu.stream);
    p
}
