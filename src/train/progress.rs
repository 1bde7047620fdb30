//! What a run shows while it trains: a progress bar on a terminal, plain lines every few seconds
//! elsewhere (a SLURM log, a pipe), or nothing.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar (for a terminal).
    Bar,
    /// A plain line "step S/N: loss … acc … smoothed RMS Δ/Δ* …" (the detector's R̂) at the first logged step at least `every`
    /// after the previous line (for logs).
    Lines {
        every: Duration,
    },
    Quiet,
}

/// Shows the progress of one run as [`Progress`] says.
pub(super) struct Reporter {
    bar: ProgressBar,
    lines: Option<(Duration, Instant)>,
    steps: u64,
}

impl Reporter {
    pub fn new(progress: Progress, steps: u64, start: u64) -> Self {
        let bar = match progress {
            Progress::Bar => ProgressBar::new(steps),
            Progress::Lines { .. } | Progress::Quiet => ProgressBar::hidden(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(start);
        let lines = match progress {
            Progress::Lines { every } => Some((every, Instant::now())),
            _ => None,
        };
        Self { bar, lines, steps }
    }

    /// The state after logged step `step`, e.g. "loss 1.234 acc 56.7% smoothed RMS Δ/Δ* 0.95–1.02".
    pub fn logged(&mut self, step: u64, state: String) {
        if let Some((every, last)) = &mut self.lines {
            if last.elapsed() >= *every {
                eprintln!("step {step}/{}: {state}", self.steps);
                *last = Instant::now();
            }
        }
        self.bar.set_message(state);
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
