//! The GPU side of the benches: finding a GPU, a [`Clock`] of CUDA events, [`BenchOps`] for the CUDA
//! backend, and the GPU suite (every BatchNorm case under each launch variant of kernels/batchnorm.cu;
//! training steps eager, as CUDA graphs, and as graphs with bf16 convolutions).
//!
//! Pending in the CUDA backend, and so here: the standalone reductions (reduce.cu's
//! `multi_sums4`/`multi_sqnorm`). The backend does not expose them, so [`BenchOps::segment_sums`]
//! fails on it and the GPU suite skips those cases; the statistics fused into the optimizer step
//! (`sgd_step_sums`) are timed.

use super::ops::BenchOps;
use super::report::{BenchFile, BenchResult};
use super::timing::{Clock, Plan};
use super::work::Work;
use super::{run_cases, Target};
use crate::backend::cuda::{BnMode, Cuda};
use crate::backend::{Backend, Segment, StepSums};
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaSlice, CudaStream};
use std::sync::Arc;

/// Why the standalone reductions have no GPU rows.
pub const REDUCTIONS_PENDING: &str =
    "GPU reduce_sqnorm/reduce_sums4 pending: the CUDA backend does not expose \
     reduce.cu's multi_sqnorm/multi_sums4 yet (the fused statistics are timed as sgd_step_sums)";
/// The name of GPU 0, or why there is none. Never panics when the driver library is missing.
pub fn detect() -> Result<String, String> {
    // SAFETY: only tries to dlopen libcuda.
    if !unsafe { sys::is_culib_present() } {
        return Err("no GPU: the NVIDIA driver library (libcuda) was not found".into());
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err("no GPU: the driver reports no CUDA device".into()),
        Err(e) => return Err(format!("no GPU: CUDA driver initialisation failed ({e:?})")),
    }
    CudaContext::new(0).and_then(|c| c.name()).map_err(|e| format!("no GPU: cannot open device 0 ({e:?})"))
}

/// Times GPU work with CUDA events recorded on the stream the backend launches on (the host does
/// not wait between ops, so wall-clock timing would measure launches, not kernels).
#[derive(Clone, Debug)]
pub struct EventClock {
    stream: Arc<CudaStream>,
}

impl EventClock {
    /// The clock of `be`'s stream (the CUDA backend issues everything on one stream; a buffer it
    /// allocates carries that stream).
    pub fn new(be: &Cuda) -> Result<Self> {
        let probe = be.alloc(1)?;
        Ok(Self { stream: probe.stream().clone() })
    }
}

fn timing_event(stream: &CudaStream) -> Result<CudaEvent> {
    stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| anyhow!("recording a CUDA event: {e:?}"))
}

impl<B: Backend> Clock<B> for EventClock {
    type Mark = CudaEvent;
    fn mark(&self, _: &B) -> CudaEvent {
        timing_event(&self.stream).expect("a CUDA event can be recorded on the backend's stream")
    }
    fn seconds(&self, _: &B, start: &CudaEvent, end: &CudaEvent) -> Result<f64> {
        Ok(start.elapsed_ms(end).map_err(|e| anyhow!("reading CUDA event times: {e:?}"))? as f64 * 1e-3)
    }
}

impl BenchOps for Cuda {
    fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
        if src.len() != dst.len() {
            bail!("copy: {} elements into {}", src.len(), dst.len());
        }
        let stream = dst.stream().clone();
        stream.memcpy_dtod(src, dst).map_err(|e| anyhow!("device copy: {e:?}"))
    }
    fn segment_sums(
        &self,
        _: &[Segment],
        _: &CudaSlice<f32>,
        _: Option<&CudaSlice<f32>>,
        _: Option<&CudaSlice<f32>>,
        _: &mut [StepSums],
    ) -> Result<()> {
        bail!("{REDUCTIONS_PENDING}")
    }
    fn finish(&self) -> Result<()> {
        self.synchronize()
    }
}

/// The BatchNorm launch variants timed side by side (kernels/batchnorm.cu; `Auto` is what training
/// uses).
pub const BN_MODES: [BnMode; 4] = [BnMode::Auto, BnMode::Fused, BnMode::FusedNoCache, BnMode::Split];

pub fn bn_mode_label(m: BnMode) -> &'static str {
    match m {
        BnMode::Auto => "auto",
        BnMode::Fused => "fused",
        BnMode::FusedNoCache => "fused-nocache",
        BnMode::Split => "split",
    }
}

/// Runs the GPU cases: `kernels` (BatchNorm under every [`BN_MODES`] variant, the reductions skipped
/// with a note) and then `steps`, appending to `file`.
#[allow(clippy::too_many_arguments)]
pub fn run_suite(
    be: &Cuda,
    clock: &EventClock,
    plan: &Plan,
    kernels: &[Work],
    steps: &[Work],
    cold_bytes: usize,
    file: &mut BenchFile,
    done: &mut dyn FnMut(&BenchResult),
) -> Result<()> {
    let label = format!("ilr {}", be.name());
    let target = |implementation| Target { implementation, device: "cuda", cold_bytes };
    let labels: Vec<String> = BN_MODES.iter().map(|&m| format!("{label} bn={}", bn_mode_label(m))).collect();
    let is_bn = |w: &Work| matches!(w, Work::BnForward(_) | Work::BnBackward(_));
    let (bn, rest): (Vec<Work>, Vec<Work>) =
        kernels.iter().copied().filter(|w| !matches!(w, Work::Reduce { .. })).partition(is_bn);
    if kernels.iter().any(|w| matches!(w, Work::Reduce { .. })) {
        file.notes.push(REDUCTIONS_PENDING.into());
    }
    let (copy, rest): (Vec<Work>, Vec<Work>) = rest.into_iter().partition(|w| matches!(w, Work::Copy { .. }));
    run_cases(be, clock, plan, &copy, &target(&label), file, done)?;
    for (mode, l) in BN_MODES.into_iter().zip(&labels) {
        be.set_bn_mode(mode);
        let r = run_cases(be, clock, plan, &bn, &target(l), file, done);
        be.set_bn_mode(BnMode::Auto);
        r?;
    }
    run_cases(be, clock, plan, &rest, &target(&label), file, done)?;
    run_cases(be, clock, plan, steps, &target(&label), file, done)
}
