//! One way to train one config into its run directory, shared by `ilr train` and sweep workers:
//! the backend it runs on ([`AnyBackend`]) and [`run_config`] (claim, finished check, resume,
//! training), which says what became of the run ([`Outcome`]).

use super::claim::{claim, Claim};
use super::config::{Device, Dtype, TrainConfig};
use super::data::Datasets;
use super::progress::Progress;
use super::record::Summary;
use super::rundir::RunDir;
use super::trainer::{train_with, TrainOptions};
use crate::backend::cpu::Cpu;
use crate::backend::cuda::Cuda;
use crate::util::atomic::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The file a sweep worker's failed run leaves its error in (removed when it is tried again).
pub const ERROR_FILE: &str = "error.txt";

/// The backend a run trains on.
pub enum AnyBackend {
    CpuF32(Cpu<f32>),
    CpuF64(Cpu<f64>),
    Cuda(Box<Cuda>),
}

impl AnyBackend {
    /// The backend for `device` and `dtype`: f64 is the CPU's (no GPU is probed); `cuda` opens GPU 0
    /// or fails with the reason; `auto` takes GPU 0 when it opens and otherwise the CPU, with a
    /// one-line note saying why. An opened GPU is named on stderr. Never panics.
    pub fn open(device: Device, dtype: Dtype) -> Result<Self> {
        if dtype == Dtype::F64 {
            if device == Device::Cuda {
                bail!(
                    "train.dtype = \"f64\" runs on the CPU only: use --device cpu, or --dtype f32 on the GPU"
                );
            }
            return Ok(Self::CpuF64(Cpu::new()));
        }
        let gpu = match device {
            Device::Cpu => return Ok(Self::CpuF32(Cpu::new())),
            Device::Cuda => Self::gpu(0).context("--device cuda")?,
            Device::Auto => match Self::gpu(0) {
                Ok(gpu) => gpu,
                Err(e) => {
                    eprintln!("note: training on the CPU: {e:#}");
                    return Ok(Self::CpuF32(Cpu::new()));
                }
            },
        };
        if let Self::Cuda(be) = &gpu {
            eprintln!("device: {}", be.device_description());
        }
        Ok(gpu)
    }

    /// GPU `ordinal`, silently; a missing driver or GPU is an error (see [`Cuda::new`]).
    pub fn gpu(ordinal: usize) -> Result<Self> {
        Ok(Self::Cuda(Box::new(Cuda::new(ordinal)?)))
    }

    /// [`train_with`] on this backend; a config that sets `train.device = "cuda"` is refused on the
    /// CPU.
    pub fn train(
        &self,
        cfg: &TrainConfig,
        data: &Datasets,
        dir: &mut RunDir,
        progress: Progress,
        opts: &TrainOptions,
    ) -> Result<Summary> {
        if cfg.train.device == Device::Cuda && !matches!(self, Self::Cuda(_)) {
            bail!("the run's config sets train.device = \"cuda\", but this worker trains on the CPU");
        }
        match self {
            Self::CpuF32(be) => train_with(be, cfg, data, Some(dir), progress, opts),
            Self::CpuF64(be) => train_with(be, cfg, data, Some(dir), progress, opts),
            Self::Cuda(be) => train_with(be.as_ref(), cfg, data, Some(dir), progress, opts),
        }
    }
}

/// How [`run_config`] behaves for its caller.
#[derive(Clone, Debug)]
pub struct Mode {
    /// `ilr train --force`: a directory holding records is moved aside and the run starts afresh.
    pub force: bool,
    /// A sweep worker: silent, and a failure to train is written to the run's [`ERROR_FILE`] and
    /// returned as [`Outcome::Failed`]. Otherwise (`ilr train`): what the claim found and what is
    /// trained are said on stderr, and a failure is returned as the error.
    pub worker: bool,
    pub progress: Progress,
    /// Checkpoint cadence and resuming.
    pub options: TrainOptions,
}

/// What became of one run.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Trained (or finished training) by this process.
    Trained(Summary),
    /// Finished before: summary.json was there.
    AlreadyDone(Summary),
    /// Another process holds its lock.
    Busy,
    Failed(String),
}

/// Train `cfg` into `root/<run-id>/` unless it is finished or another process holds its lock (see
/// [`claim`]). `open` gives the backend and the datasets; it is called only once the run is claimed
/// and needs training. An unreadable summary.json is an error (the run may be finished).
pub fn run_config<'a>(
    root: &Path,
    cfg: &TrainConfig,
    open: impl FnOnce() -> Result<(&'a AnyBackend, &'a Datasets)>,
    mode: &Mode,
) -> Result<Outcome> {
    let (path, _lock) = match claim(root, &cfg.run_id(), mode.force)? {
        Claim::Busy { .. } => return Ok(Outcome::Busy),
        Claim::Finished { summary, .. } => return Ok(Outcome::AlreadyDone(*summary)),
        Claim::Ready { path, lock, unfinished, moved_aside } => {
            if mode.worker {
                let _ = std::fs::remove_file(path.join(ERROR_FILE));
            } else if let Some(aside) = moved_aside {
                eprintln!("note: --force: moved the earlier {} to {}", path.display(), aside.display());
            } else if unfinished {
                eprintln!(
                    "note: {} holds an unfinished run: continuing it from its newest checkpoint \
                     (from step 0 if it has none); --force starts it over",
                    path.display()
                );
            }
            (path, lock)
        }
    };
    let result = (|| {
        let (be, data) = open()?;
        let mut dir = RunDir::open(root, cfg)?;
        if !mode.worker {
            eprintln!(
                "training {} on {} ({} train / {} test images), {}, λ_e = {:.3e}, {} steps → {}",
                cfg.model.label(),
                data.train.name,
                data.train.len(),
                data.test.len(),
                cfg.optim.kind,
                cfg.optim.lambda_e()?,
                cfg.train.steps,
                dir.path.display()
            );
        }
        be.train(cfg, data, &mut dir, mode.progress, &mode.options)
    })();
    match result {
        Ok(s) => Ok(Outcome::Trained(s)),
        Err(e) if mode.worker => {
            let msg = format!("{e:#}");
            write_atomic(&path.join(ERROR_FILE), format!("{msg}\n").as_bytes())?;
            Ok(Outcome::Failed(msg))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::lock::RunLock;

    fn tiny() -> (TrainConfig, Datasets) {
        let mut cfg = TrainConfig::default();
        cfg.train.steps = 2;
        cfg.train.batch_size = 4;
        cfg.train.stats_every = 1;
        cfg.train.device = Device::Cpu;
        cfg.model.depth = 8;
        cfg.model.width = 0.25;
        cfg.data.synthetic.train = 16;
        cfg.data.synthetic.test = 8;
        cfg.data.synthetic.size = 8;
        let data = crate::train::load_datasets(&cfg.data).unwrap();
        (cfg, data)
    }

    fn worker() -> Mode {
        Mode { force: false, worker: true, progress: Progress::Quiet, options: TrainOptions::default() }
    }

    #[test]
    fn a_run_is_trained_once_and_a_held_one_is_busy() {
        let root = tempfile::tempdir().unwrap();
        let (cfg, data) = tiny();
        let be = AnyBackend::open(Device::Cpu, Dtype::F32).unwrap();
        let dir = root.path().join(cfg.run_id());

        let lock = RunLock::try_acquire(&dir).unwrap().unwrap();
        let opened = std::cell::Cell::new(false);
        let open = || {
            opened.set(true);
            Ok((&be, &data))
        };
        assert!(matches!(run_config(root.path(), &cfg, open, &worker()).unwrap(), Outcome::Busy));
        assert!(!opened.get(), "a busy run opens nothing");
        drop(lock);

        std::fs::write(dir.join(ERROR_FILE), "old\n").unwrap();
        let Outcome::Trained(s) = run_config(root.path(), &cfg, || Ok((&be, &data)), &worker()).unwrap()
        else {
            panic!("a new run is trained")
        };
        assert_eq!(s.steps, 2);
        assert!(!dir.join(ERROR_FILE).exists(), "a retried run's old error is removed");

        let open = || -> Result<(&AnyBackend, &Datasets)> { panic!("a finished run is not trained again") };
        let Outcome::AlreadyDone(again) = run_config(root.path(), &cfg, open, &worker()).unwrap() else {
            panic!("finished before")
        };
        assert_eq!(again.run_id, s.run_id);
    }

    #[test]
    fn a_worker_records_a_failure_and_a_cpu_refuses_a_cuda_config() {
        let root = tempfile::tempdir().unwrap();
        let (mut cfg, data) = tiny();
        cfg.train.device = Device::Cuda;
        let be = AnyBackend::open(Device::Cpu, Dtype::F32).unwrap();
        let Outcome::Failed(msg) = run_config(root.path(), &cfg, || Ok((&be, &data)), &worker()).unwrap()
        else {
            panic!("a cuda config fails on the CPU")
        };
        assert!(msg.contains("trains on the CPU"), "{msg}");
        let written = std::fs::read_to_string(root.path().join(cfg.run_id()).join(ERROR_FILE)).unwrap();
        assert_eq!(written, format!("{msg}\n"));

        let command = Mode { worker: false, ..worker() };
        let e = run_config(root.path(), &cfg, || Ok((&be, &data)), &command).unwrap_err();
        assert!(format!("{e:#}").contains("trains on the CPU"), "ilr train returns the error");
        assert!(AnyBackend::open(Device::Cuda, Dtype::F64).is_err(), "f64 is the CPU's");
    }
}
