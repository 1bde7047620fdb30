//! A training run's full configuration: TOML file, then CLI overrides, then validation.

use crate::backend::ComputePrecision;
use crate::data::SyntheticConfig;
use crate::model::ModelConfig;
use crate::optim::OptimConfig;
use crate::stats::EquilibriumConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where a run computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// The GPU when one works, else the CPU.
    #[default]
    Auto,
    /// The CPU reference backend.
    Cpu,
    /// The GPU; a missing driver, GPU, library or kernel build is an error that names it.
    Cuda,
}

/// The element type every tensor of a run is computed and stored in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats (both backends).
    #[default]
    F32,
    /// 64-bit floats: the CPU only; the exact reference (slower than f32).
    F64,
}

impl Dtype {
    pub fn label(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A CIFAR-10 or CIFAR-100 binary directory; synthetic data when absent.
    pub dir: Option<PathBuf>,
    /// The synthetic dataset used when `dir` is absent.
    pub synthetic: SyntheticConfig,
    /// Random crop (4-px zero padding) and horizontal flip on training batches. Default: on for
    /// CIFAR, off for the synthetic set (its samples are already randomly shifted, and crops with
    /// black borders and mirror images of its periodic prototypes only make it harder).
    pub augment: Option<bool>,
    /// Use only the first N training images (all when absent).
    pub train_limit: Option<usize>,
    /// Evaluate on only the first N test images (all when absent).
    pub test_limit: Option<usize>,
}

impl DataConfig {
    /// Whether training batches are augmented (see `augment`).
    pub fn augment_enabled(&self) -> bool {
        self.augment.unwrap_or(self.dir.is_some())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Optimizer steps to run.
    pub steps: u64,
    pub batch_size: usize,
    /// Compute and log per-layer statistics every this many steps.
    pub stats_every: u64,
    /// Evaluate on the test set every this many steps (0: only at the end).
    pub eval_every: u64,
    pub device: Device,
    /// CUDA backend: capture one training step as a CUDA graph (after one eager warm-up step) and
    /// replay it every step; the results are bitwise those of eager steps. Ignored on the CPU.
    /// Written to config files only when turned off, and never part of the run id.
    #[serde(skip_serializing_if = "is_true")]
    pub cuda_graphs: bool,
    /// Arithmetic of the convolutions: "f32", or "bf16-conv" (CUDA only, the CPU refuses it: bf16
    /// operands and outputs, f32 accumulation; master weights, BatchNorm, the optimizer and the
    /// statistics stay f32). The default stays "f32" until bf16-conv is validated on hardware.
    /// Written to config files (and so part of the run id) only when not "f32".
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: ComputePrecision,
    /// Element type of the whole computation: "f32", or "f64" (CPU only). Written to config files
    /// (and so part of the run id) only when "f64".
    #[serde(skip_serializing_if = "is_f32_dtype")]
    pub dtype: Dtype,
}

fn is_f32_dtype(d: &Dtype) -> bool {
    *d == Dtype::F32
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_f32(p: &ComputePrecision) -> bool {
    *p == ComputePrecision::F32
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 128,
            stats_every: 10,
            eval_every: 500,
            device: Device::Auto,
            cuda_graphs: true,
            precision: ComputePrecision::F32,
            dtype: Dtype::F32,
        }
    }
}

/// Keys that config files omit while they hold their default (each added after run ids existed, so
/// that its default left every id unchanged). A sweep spec may still set them, to their default too:
/// the spec's check that every key it sets exists in the resolved config skips these.
pub const KEYS_OMITTED_AT_DEFAULT: &[&str] = &[
    "optim.kind",
    "model.init_scale",
    "train.cuda_graphs",
    "train.precision",
    "train.dtype",
    "equilibrium.samples_per_unit",
    "equilibrium.reference",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seeds the weights, the data order, the augmentation and the synthetic data.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub train: LoopConfig,
    pub equilibrium: EquilibriumConfig,
}

impl Default for TrainConfig {
    /// The quick default: a scale-invariant PreResNet-8 (width ×0.5) on 16×16 synthetic data at a
    /// large λ_e, so that it reaches equilibrium in a couple of thousand steps on 2 CPU cores.
    fn default() -> Self {
        Self {
            seed: 0,
            data: DataConfig {
                synthetic: SyntheticConfig {
                    train: 4096,
                    test: 1024,
                    size: 16,
                    ..SyntheticConfig::default()
                },
                ..DataConfig::default()
            },
            model: ModelConfig { depth: 8, width: 0.5, scale_invariant: true, ..ModelConfig::default() },
            optim: OptimConfig { lr: 0.5, wd: Some(5e-3), momentum: 0.0, ..OptimConfig::default() },
            train: LoopConfig {
                steps: 2000,
                batch_size: 64,
                stats_every: 2,
                eval_every: 500,
                device: Device::Auto,
                ..LoopConfig::default()
            },
            equilibrium: EquilibriumConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Read a TOML file; keys it does not set keep their defaults, unknown keys are errors.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn from_toml_str(text: &str) -> Result<Self> {
        let table: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("invalid TOML: {e}"))?;
        Self::from_table(table)
    }

    /// Lay `user` over the defaults, key by key at every depth, then parse. Where the user gives
    /// one of optim.wd / optim.lambda_e, it replaces the default's other one.
    pub fn from_table(user: toml::Table) -> Result<Self> {
        let mut merged = toml::Table::try_from(TrainConfig::default()).context("serializing the defaults")?;
        if let (Some(toml::Value::Table(optim)), Some(toml::Value::Table(base))) =
            (user.get("optim"), merged.get_mut("optim"))
        {
            for (given, other) in [("wd", "lambda_e"), ("lambda_e", "wd")] {
                if optim.contains_key(given) && !optim.contains_key(other) {
                    base.remove(other);
                }
            }
        }
        merge(&mut merged, user);
        merged.try_into().map_err(|e| anyhow::anyhow!("invalid config: {e}"))
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serializing the config as TOML")
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.optim.validate()?;
        let t = &self.train;
        if t.steps == 0 {
            bail!("train.steps must be at least 1");
        }
        if t.batch_size < 2 {
            bail!("train.batch_size = {} is too small: BatchNorm needs at least 2 samples", t.batch_size);
        }
        if t.stats_every == 0 {
            bail!("train.stats_every must be at least 1");
        }
        if t.device == Device::Cpu && t.precision != ComputePrecision::F32 {
            bail!(
                "train.precision = \"{}\" needs the CUDA backend, but train.device = \"cpu\" (the CPU computes \
                 convolutions in f32): set train.precision = \"f32\" (--precision f32), or use --device cuda",
                t.precision.label()
            );
        }
        if t.dtype == Dtype::F64 && (t.device == Device::Cuda || t.precision != ComputePrecision::F32) {
            bail!(
                "train.dtype = \"f64\" runs on the CPU only (the CUDA backend computes in f32): use --device cpu \
                 with train.precision = \"f32\", or train.dtype = \"f32\" (--dtype f32) on the GPU"
            );
        }
        self.equilibrium.validate()?;
        if self.data.dir.is_none() {
            let s = &self.data.synthetic;
            if s.size < 4 || s.classes < 2 || s.train < t.batch_size || s.test == 0 {
                bail!(
                    "data.synthetic needs size ≥ 4, classes ≥ 2, test ≥ 1 and train ≥ batch_size ({}); got {s:?}",
                    t.batch_size
                );
            }
        }
        if self.data.train_limit.is_some_and(|n| n < t.batch_size) {
            bail!("data.train_limit is smaller than one batch ({})", t.batch_size);
        }
        if self.data.test_limit == Some(0) {
            bail!("data.test_limit must be at least 1");
        }
        Ok(())
    }

    /// A stable id from everything that determines the results (not the device, nor whether CUDA
    /// graphs are used: they change no result): readable prefix plus the first 10 hex digits of the
    /// SHA-256 of the canonical JSON of the config. The precision and the dtype count when they are
    /// not f32 (at f32 they are left out of the JSON, so ids from before the keys existed stay
    /// valid); an f64 run's prefix also says `-f64`. Likewise optim.kind counts when it is not
    /// "sgd", and optim.betas and optim.eps when they differ from the kind's defaults.
    pub fn run_id(&self) -> String {
        let mut canonical = self.clone();
        canonical.train.device = Device::Auto;
        canonical.train.cuda_graphs = true;
        canonical.optim = self.optim.canonical();
        let json = serde_json::to_vec(&canonical).expect("config serializes");
        let hash = hex::encode(Sha256::digest(&json));
        let data = match &self.data.dir {
            Some(d) => d.file_name().map_or("data".into(), |n| n.to_string_lossy().into_owned()),
            None => "synthetic".into(),
        };
        let le = self.optim.lambda_e().unwrap_or(f64::NAN);
        let dtype = if self.train.dtype == Dtype::F64 { "-f64" } else { "" };
        format!("{}-{data}{dtype}-le{le:.1e}-s{}-{}", self.model.label(), self.seed, &hash[..10])
    }
}

/// Deep merge: tables merge key by key, anything else in `over` replaces what `base` has.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                // A tagged enum (e.g. optim.schedule) changing its kind starts from the user's
                // table. Only where the base has a kind: optim.kind (a plain key whose default is
                // left out) must not wipe the other optim keys.
                if o.get("kind").is_some_and(|kind| b.get("kind").is_some_and(|k| k != kind)) {
                    b.clear();
                }
                merge(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimKind;

    #[test]
    fn toml_round_trips_and_unknown_keys_are_rejected() {
        let cfg = TrainConfig::default();
        let back = TrainConfig::from_toml_str(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(cfg, back);
        let err = TrainConfig::from_toml_str("[optim]\nlearning_rate = 0.1\n").unwrap_err();
        assert!(format!("{err:#}").contains("learning_rate"), "{err:#}");
    }

    #[test]
    fn partial_files_keep_defaults_and_run_ids_are_stable() {
        let cfg = TrainConfig::from_toml_str("seed = 3\n[optim]\nlr = 0.2\nwd = 1e-3\n").unwrap();
        assert_eq!(cfg.seed, 3);
        assert_eq!(cfg.optim.momentum, TrainConfig::default().optim.momentum, "defaults apply key by key");
        assert_eq!(cfg.model, TrainConfig::default().model);
        assert_eq!(cfg.run_id(), cfg.clone().run_id());
        let mut other = cfg.clone();
        other.train.device = Device::Cpu;
        assert_eq!(cfg.run_id(), other.run_id(), "the device does not change the id");
        other.seed = 4;
        assert_ne!(cfg.run_id(), other.run_id());
    }

    #[test]
    fn lambda_e_sets_weight_decay_and_conflicts_are_errors() {
        let cfg = TrainConfig::from_toml_str("[optim]\nlr = 0.1\nlambda_e = 5e-5\nwd = 1.0\n").unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("not both"));
        let cfg = TrainConfig::from_toml_str("[optim]\nlr = 0.1\nlambda_e = 5e-5\n").unwrap();
        assert!((cfg.optim.base_wd().unwrap() - 5e-4).abs() < 1e-18);
        let cfg = TrainConfig::from_toml_str("[model]\ndepth = 9\n").unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("6n+2"));
    }

    #[test]
    fn graphs_and_precision_keys() {
        let d = TrainConfig::default();
        assert!(d.train.cuda_graphs && d.train.precision == ComputePrecision::F32);
        // At their defaults the keys stay out of config files and run ids (ids made before they
        // existed stay valid).
        let text = d.to_toml().unwrap();
        assert!(!text.contains("cuda_graphs") && !text.contains("precision"), "{text}");
        let cfg =
            TrainConfig::from_toml_str("[train]\ncuda_graphs = false\nprecision = \"bf16-conv\"\n").unwrap();
        assert!(!cfg.train.cuda_graphs);
        assert_eq!(cfg.train.precision, ComputePrecision::Bf16Conv);
        assert_eq!(TrainConfig::from_toml_str(&cfg.to_toml().unwrap()).unwrap(), cfg, "round trip");
        let mut graphs_off = d.clone();
        graphs_off.train.cuda_graphs = false;
        assert_eq!(graphs_off.run_id(), d.run_id(), "graphs change no result, so not the id");
        let mut bf16 = d.clone();
        bf16.train.precision = ComputePrecision::Bf16Conv;
        assert_ne!(bf16.run_id(), d.run_id(), "bf16 convolutions change the results");
        assert!(TrainConfig::from_toml_str("[train]\nprecision = \"bf16\"\n").is_err());

        // bf16 on the CPU: a clear error when the CPU is asked for, fine where the GPU may be used.
        bf16.train.device = Device::Cpu;
        let e = bf16.validate().unwrap_err().to_string();
        assert!(e.contains("bf16-conv") && e.contains("CUDA") && e.contains("--precision f32"), "{e}");
        bf16.train.device = Device::Auto;
        bf16.validate().unwrap();
    }

    #[test]
    fn sgd_run_ids_are_unchanged_by_the_optimizer_keys() {
        // Both ids computed by `ilr train` before optim.kind, betas and eps existed (commit fd87917).
        let d = TrainConfig::default();
        assert_eq!(d.run_id(), "preresnet8x0.5-synthetic-le2.5e-3-s0-e77266d2b1");
        let paper = "[model]\nscale_invariant = false\n[optim]\nlr = 0.1\nwd = 5e-4\nmomentum = 0.9\n";
        assert_eq!(
            TrainConfig::from_toml_str(paper).unwrap().run_id(),
            "preresnet8x0.5-synthetic-le5.0e-5-s0-07c92d8182"
        );
        let text = d.to_toml().unwrap();
        assert!(
            !text.contains("kind = \"sgd\"") && !text.contains("betas") && !text.contains("\neps ="),
            "{text}"
        );
        let sgd = TrainConfig::from_toml_str("[optim]\nkind = \"sgd\"\n").unwrap();
        assert_eq!(sgd.run_id(), d.run_id(), "sgd written out is the default");
    }

    #[test]
    fn optimizer_kinds_are_in_the_run_id_and_their_keys_checked() {
        let d = TrainConfig::default();
        let adamw = TrainConfig::from_toml_str("[optim]\nkind = \"adamw\"\n").unwrap();
        adamw.validate().unwrap();
        assert_ne!(adamw.run_id(), d.run_id());
        // The kind replaces no other optim key (optim.kind is not a tagged enum's tag).
        assert_eq!(OptimConfig { kind: OptimKind::Sgd, ..adamw.optim.clone() }, d.optim);
        assert_eq!(TrainConfig::from_toml_str(&adamw.to_toml().unwrap()).unwrap(), adamw, "round trip");
        // Default betas and ε written out keep the id; others change it, and so does the kind.
        let id = |extra: &str| {
            let c = TrainConfig::from_toml_str(&format!("[optim]\nkind = \"adamw\"\n{extra}")).unwrap();
            c.validate().unwrap();
            c.run_id()
        };
        assert_eq!(id("betas = [0.9, 0.999]\neps = 1e-8\n"), adamw.run_id());
        assert_ne!(id("betas = [0.9, 0.99]\n"), adamw.run_id());
        assert_ne!(id("eps = 1e-6\n"), adamw.run_id());
        let kinds: Vec<String> = ["adam", "lion"]
            .iter()
            .map(|k| TrainConfig::from_toml_str(&format!("[optim]\nkind = \"{k}\"\n")).unwrap().run_id())
            .collect();
        assert!(kinds[0] != kinds[1] && !kinds.contains(&adamw.run_id()));
        assert_eq!(TrainConfig::from_toml_str("[optim]\nkind = \"lion\"\n").unwrap().optim.rule(), {
            crate::optim::Rule::Lion { beta1: 0.9, beta2: 0.99 }
        });

        // Keys of one kind are errors with another.
        let err = |text: &str| TrainConfig::from_toml_str(text).unwrap().validate().unwrap_err().to_string();
        let e = err("[optim]\nkind = \"adamw\"\nmomentum = 0.9\n");
        assert!(e.contains("optim.momentum") && e.contains("betas"), "{e}");
        assert!(err("[optim]\nbetas = [0.9, 0.999]\n").contains("adam, adamw and lion"));
        assert!(err("[optim]\nkind = \"lion\"\neps = 1e-8\n").contains("adam and adamw"));
        assert!(err("[optim]\nkind = \"adam\"\nbetas = [0.9, 1.0]\n").contains("[0, 1)"));
        assert!(TrainConfig::from_toml_str("[optim]\nkind = \"adagrad\"\n").is_err());
    }

    #[test]
    fn f64_is_in_the_run_id_and_cpu_only() {
        let d = TrainConfig::default();
        let mut f64_run = d.clone();
        f64_run.train.dtype = Dtype::F64;
        assert!(!d.to_toml().unwrap().contains("dtype"), "f32 stays out of files and ids");
        assert!(f64_run.to_toml().unwrap().contains("dtype = \"f64\""));
        assert_ne!(f64_run.run_id(), d.run_id());
        assert!(f64_run.run_id().contains("-synthetic-f64-le"), "{}", f64_run.run_id());
        f64_run.train.device = Device::Cpu;
        f64_run.validate().unwrap();
        f64_run.train.device = Device::Cuda;
        let e = f64_run.validate().unwrap_err().to_string();
        assert!(e.contains("CPU only") && e.contains("--device cpu"), "{e}");
    }
}
