//! One whole training step (forward, loss + backward, optimizer step) captured as a CUDA graph once and
//! replayed every step after: the host-side bookkeeping of [`Backend::step_begin`] /
//! [`Backend::step_end`] for the CUDA backend. The GPU calls themselves live in `mod.rs`
//! (`Cuda::step_begin`, `Cuda::step_end`); this file is pure state, unit-tested without a GPU.
//!
//! # The life cycle
//! ```text
//!   Idle ──step_begin──▶ WarmedUp ──step_begin──▶ Capturing ──step_end──▶ Ready ◀──step_end── Replaying
//!    ▲   (eager step:      (eager)   (begin_capture)          (end_capture,         │ ──step_begin──▶ │
//!    │    warm-up)                                             launch, read back)   └─────────────────┘
//!    └── step_reset, any error, or a stale graph (the GPU's epoch moved: a workspace was
//!        reallocated, the BatchNorm variant or the conv precision changed) ──▶ next step is a warm-up
//! ```
//! - **Warm-up.** The first step after a reset runs eagerly (`step_begin` returns false). It makes
//!   every cuDNN plan, grows every workspace (the optimizer's statistics workspaces included, although the
//!   step may not ask for statistics), fills cuBLAS's vector of ones and loads every kernel, so the
//!   captured step allocates nothing (allocation is refused during a capture).
//! - **Capture.** The next step is recorded on the backend's stream (capture mode thread-local).
//!   Nothing executes while capturing; `step_end` ends the capture, instantiates the graph and
//!   launches it, which runs the captured step for the first time.
//! - **Replay.** Every later step: the trainer issues the same calls, which the backend checks
//!   (each one is folded into a [`Fingerprint`] that must equal the captured one) but does not
//!   execute; `step_end` launches the graph instead.
//!
//! # What crosses the graph boundary
//! - **In**: the batch (uploaded by the trainer into the model's input buffers before
//!   `step_begin`) and the optimizer's segment table (each segment's scalars of this step: lr, wd,
//!   momentum for SGD; also Adam's bias corrections, which change every step), which `sgd_step`,
//!   `adam_step` or `lion_step` records and `step_end` copies into the device table right before
//!   the launch: the captured kernel reads the table from device memory, so each replay uses that
//!   step's hyperparameters. Which optimizer ran is part of the fingerprint.
//! - **Out**: the loss totals (`softmax_xent` writes [Σ loss, #correct] to a device buffer) and the
//!   per-segment statistics sums. The captured step **always** computes the statistics (one graph
//!   serves steps with and without statistics: no re-capture when the trainer asks for them, at
//!   the cost of 32 bytes per chunk of partial sums and one last-block reduction over ~100 segments
//!   per step); `step_end` reads them back only when the optimizer step was given a `sums` slice. The
//!   parameters and momenta do not depend on whether statistics are computed (same per-element f32
//!   arithmetic), so a replayed step is bitwise an eager step.

use super::optim_step::MtSegment;
use anyhow::{bail, Result};

/// How the backend executes ops at the moment (kept in an atomic by `Cuda` for the per-op check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Ops run as they are called.
    Eager = 0,
    /// Ops are recorded into the graph being captured (and fingerprinted).
    Capture = 1,
    /// Ops are fingerprinted and skipped: the graph will run them.
    Replay = 2,
}

impl Mode {
    pub fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Capture,
            2 => Mode::Replay,
            _ => Mode::Eager,
        }
    }
}

/// Where the captured step's life cycle stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    WarmedUp,
    Capturing,
    Ready,
    Replaying,
}

/// What `step_begin` must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Run this step eagerly (it warms up the next capture).
    WarmUp,
    /// Begin a capture: this step is recorded, then launched by `step_end`.
    Capture,
    /// Skip the ops of this step; `step_end` replays the graph.
    Replay,
}

/// A running hash of the ops of a step: their names and the device addresses and lengths of their
/// operands (FNV-1a over bytes and 64-bit words). A replayed step must issue exactly the captured
/// sequence on exactly the captured buffers; anything else (another model, a reallocated buffer, a
/// missing op) changes the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    hash: u64,
    ops: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint { hash: FNV_OFFSET, ops: 0 }
    }
}

impl Fingerprint {
    fn byte(&mut self, b: u8) {
        self.hash ^= b as u64;
        self.hash = self.hash.wrapping_mul(FNV_PRIME);
    }

    /// Folds in one op: its name, then its words (addresses, lengths, sizes).
    pub fn op(&mut self, name: &str, words: &[u64]) {
        self.ops += 1;
        for b in name.bytes() {
            self.byte(b);
        }
        self.byte(0xff);
        for w in words {
            for b in w.to_le_bytes() {
                self.byte(b);
            }
        }
        self.byte(0xfe);
    }

    pub fn ops(&self) -> u64 {
        self.ops
    }
}

/// The optimizer step of a deferred step, for `step_end`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingStep {
    /// The segment table of this step (its per-segment scalars), copied to the device before the launch.
    pub table: Vec<MtSegment>,
    /// Total chunks (grid size); 0 means there is nothing to update (the sums are then zero).
    pub total_chunks: u32,
    /// Whether the optimizer step was given a `sums` slice: then they are read back after the launch.
    pub want_sums: bool,
}

/// What the ops of a deferred step left for `step_end`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Pending {
    /// Calls of `softmax_cross_entropy` (a step has exactly one).
    pub losses: u32,
    /// The optimizer step of the step (exactly one).
    pub step: Option<PendingStep>,
    /// A second optimizer step (an error at `step_end`).
    pub extra_step: bool,
}

/// The host-side state of the captured step.
#[derive(Debug)]
pub(crate) struct StepState {
    phase: Phase,
    /// The fingerprint of the captured step and the GPU epoch it was captured at.
    captured: Option<(Fingerprint, u64)>,
    /// The fingerprint of the step in progress.
    current: Fingerprint,
    pending: Pending,
}

impl Default for StepState {
    fn default() -> Self {
        StepState {
            phase: Phase::Idle,
            captured: None,
            current: Fingerprint::default(),
            pending: Pending::default(),
        }
    }
}

const HINT: &str = "run with --cuda-graphs false (train.cuda_graphs = false) to train without CUDA graphs";

impl StepState {
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Back to `Idle`: the next step is a warm-up.
    pub fn reset(&mut self) {
        *self = StepState::default();
    }

    /// `step_begin`, given the GPU's current epoch.
    pub fn begin(&mut self, epoch: u64) -> Result<Begin> {
        match self.phase {
            Phase::Capturing | Phase::Replaying => {
                bail!("step_begin inside a deferred step (step_end was not called)")
            }
            Phase::Idle => {
                self.phase = Phase::WarmedUp;
                Ok(Begin::WarmUp)
            }
            Phase::WarmedUp => {
                self.start_step();
                self.phase = Phase::Capturing;
                Ok(Begin::Capture)
            }
            Phase::Ready => match self.captured {
                Some((_, at)) if at == epoch => {
                    self.start_step();
                    self.phase = Phase::Replaying;
                    Ok(Begin::Replay)
                }
                _ => {
                    // Stale: this step warms up, the next one is captured again.
                    self.captured = None;
                    self.phase = Phase::WarmedUp;
                    Ok(Begin::WarmUp)
                }
            },
        }
    }

    fn start_step(&mut self) {
        self.current = Fingerprint::default();
        self.pending = Pending::default();
    }

    /// Whether ops are inside a deferred step.
    fn deferring(&self) -> bool {
        matches!(self.phase, Phase::Capturing | Phase::Replaying)
    }

    /// An op of a deferred step (ignored outside one).
    pub fn record_op(&mut self, name: &str, words: &[u64]) {
        if self.deferring() {
            self.current.op(name, words);
        }
    }

    /// The deferred step's `softmax_cross_entropy`.
    pub fn record_loss(&mut self) {
        if self.deferring() {
            self.pending.losses += 1;
        }
    }

    /// The deferred step's optimizer step (`sgd_step`, `adam_step` or `lion_step`).
    pub fn record_step(&mut self, step: PendingStep) {
        if !self.deferring() {
            return;
        }
        if self.pending.step.is_some() {
            self.pending.extra_step = true;
        } else {
            self.pending.step = Some(step);
        }
    }

    /// The deferred step must have had exactly one loss and one optimizer step.
    fn take_pending(&mut self) -> Result<PendingStep> {
        let p = std::mem::take(&mut self.pending);
        if p.losses != 1 || p.extra_step {
            bail!(
                "a deferred training step must compute the loss once and take one optimizer step; this one \
                 computed the loss {} times and took {} optimizer steps",
                p.losses,
                usize::from(p.step.is_some()) + usize::from(p.extra_step)
            );
        }
        match p.step {
            Some(s) => Ok(s),
            None => bail!("a deferred training step ended without its optimizer step (sgd_step, adam_step or lion_step)"),
        }
    }

    /// `step_end` of a captured step (the capture has ended and the graph is instantiated):
    /// remembers the step's fingerprint and `epoch`, and returns what the launch needs. On error
    /// the state is reset.
    pub fn end_capture(&mut self, epoch: u64) -> Result<PendingStep> {
        if self.phase != Phase::Capturing {
            bail!("step_end without a captured step_begin");
        }
        match self.take_pending() {
            Ok(p) => {
                self.captured = Some((self.current, epoch));
                self.phase = Phase::Ready;
                Ok(p)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    /// `step_end` of a replayed step: the step must match the captured one. On error the state is
    /// reset (the graph is dropped and the next step warms up again).
    pub fn end_replay(&mut self) -> Result<PendingStep> {
        if self.phase != Phase::Replaying {
            bail!("step_end without a replayed step_begin");
        }
        let captured = self.captured.map(|c| c.0);
        if captured != Some(self.current) {
            let (want, got) = (captured.map_or(0, |c| c.ops()), self.current.ops());
            self.reset();
            bail!(
                "the replayed training step differs from the captured one ({got} ops against {want}, or on other \
                 buffers): a CUDA graph can only replay the same step on the same buffers. This is a bug in the \
                 caller; {HINT}"
            );
        }
        match self.take_pending() {
            Ok(p) => {
                self.phase = Phase::Ready;
                Ok(p)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }
}

/// The hint appended to graph errors.
pub(crate) fn hint() -> &'static str {
    HINT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(want_sums: bool) -> PendingStep {
        PendingStep { table: vec![MtSegment { len: 3, ..Default::default() }], total_chunks: 1, want_sums }
    }

    /// One deferred step's calls: the same ops on the same buffers, one loss, one sgd step.
    fn step(st: &mut StepState, base: u64, want_sums: bool) {
        st.record_op("conv2d_forward", &[base, 10, base + 64, 9]);
        st.record_op("batchnorm_forward_train", &[base + 128, 4]);
        st.record_loss();
        st.record_op("conv2d_backward_filter", &[base, 10]);
        st.record_step(sgd(want_sums));
    }

    #[test]
    fn warm_up_then_capture_then_replay() {
        let mut st = StepState::default();
        assert_eq!(st.begin(7).unwrap(), Begin::WarmUp);
        // The warm-up step's ops are eager: nothing is recorded.
        st.record_op("x", &[1]);
        st.record_loss();
        assert_eq!(st.pending, Pending::default());
        assert_eq!(st.begin(8).unwrap(), Begin::Capture, "epoch changes during the warm-up do not matter");
        step(&mut st, 1000, false);
        let p = st.end_capture(8).unwrap();
        assert!(!p.want_sums);
        assert_eq!(st.phase(), Phase::Ready);
        for want in [true, false, true] {
            assert_eq!(st.begin(8).unwrap(), Begin::Replay);
            step(&mut st, 1000, want);
            let p = st.end_replay().unwrap();
            assert_eq!(p.want_sums, want, "statistics on or off without a new capture");
            assert_eq!(p.table.len(), 1);
        }
    }

    /// A state that warmed up and captured one step (1000 chunks, no statistics) at epoch 0.
    fn captured() -> StepState {
        let mut st = StepState::default();
        st.begin(0).unwrap();
        st.begin(0).unwrap();
        step(&mut st, 1000, false);
        st.end_capture(0).unwrap();
        st
    }

    #[test]
    fn a_stale_graph_is_warmed_up_and_captured_again() {
        let mut st = captured();
        // A workspace grew (or the BN variant / precision changed) between steps.
        assert_eq!(st.begin(1).unwrap(), Begin::WarmUp);
        assert_eq!(st.begin(2).unwrap(), Begin::Capture);
        step(&mut st, 1000, false);
        st.end_capture(2).unwrap();
        assert_eq!(st.begin(2).unwrap(), Begin::Replay);
    }

    #[test]
    fn a_different_step_is_refused_and_resets() {
        let mut st = captured();
        st.begin(0).unwrap();
        step(&mut st, 2000, false); // other buffers: another model
        let e = st.end_replay().unwrap_err().to_string();
        assert!(e.contains("differs from the captured one") && e.contains("--cuda-graphs false"), "{e}");
        assert_eq!(st.phase(), Phase::Idle);
        assert_eq!(st.begin(0).unwrap(), Begin::WarmUp);

        // A missing op.
        st.begin(0).unwrap();
        step(&mut st, 1000, false);
        st.end_capture(0).unwrap();
        st.begin(0).unwrap();
        st.record_op("conv2d_forward", &[1000, 10, 1064, 9]);
        st.record_loss();
        st.record_step(sgd(false));
        assert!(st.end_replay().is_err());
    }

    #[test]
    fn a_step_needs_one_loss_and_one_sgd_step() {
        let mut st = StepState::default();
        st.begin(0).unwrap();
        st.begin(0).unwrap();
        st.record_op("a", &[]);
        st.record_step(sgd(false));
        let e = st.end_capture(0).unwrap_err().to_string();
        assert!(e.contains("loss 0 times"), "{e}");
        assert_eq!(st.phase(), Phase::Idle);

        st.begin(0).unwrap();
        st.begin(0).unwrap();
        st.record_loss();
        assert!(st.end_capture(0).unwrap_err().to_string().contains("without its optimizer step"));

        st.begin(0).unwrap();
        st.begin(0).unwrap();
        st.record_loss();
        st.record_step(sgd(false));
        st.record_step(sgd(true));
        assert!(st.end_capture(0).unwrap_err().to_string().contains("2 optimizer steps"));
    }

    #[test]
    fn misuse_is_an_error() {
        let mut st = StepState::default();
        assert!(st.end_capture(0).is_err());
        assert!(st.end_replay().is_err());
        st.begin(0).unwrap();
        st.begin(0).unwrap();
        assert!(st.begin(0).is_err(), "step_begin twice");
        st.reset();
        assert_eq!(st.phase(), Phase::Idle);
    }

    #[test]
    fn fingerprints_see_names_words_and_order() {
        let fp = |ops: &[(&str, &[u64])]| {
            let mut f = Fingerprint::default();
            for (n, w) in ops {
                f.op(n, w);
            }
            f
        };
        let a = fp(&[("conv", &[1, 2]), ("bn", &[3])]);
        assert_eq!(a, fp(&[("conv", &[1, 2]), ("bn", &[3])]));
        assert_ne!(a, fp(&[("bn", &[3]), ("conv", &[1, 2])]));
        assert_ne!(a, fp(&[("conv", &[1, 2]), ("bn", &[4])]));
        assert_ne!(a, fp(&[("conv", &[1]), ("bn", &[2, 3])]));
        assert_ne!(a, fp(&[("conv", &[1, 2]), ("bn", &[3]), ("bn", &[3])]));
        assert_eq!(a.ops(), 2);
    }
}
