//! Results: the JSON schema shared with peers/pytorch (for regression tracking across commits and
//! GPUs), machine information, the equilibrium-time budget, and the tables printed for people.

use super::cost::Cost;
use super::timing::Timing;
use super::work::Work;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Version tag of the JSON layout; peers/pytorch writes the same.
pub const SCHEMA: &str = "ilr-bench/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// "model name" from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// Worker threads the CPU kernels used.
    pub threads: usize,
    /// GPU 0's name, or null.
    pub gpu: Option<String>,
    pub os: String,
    /// /proc/loadavg (1, 5, 15 min) when the run started: other work on the machine skews figures.
    pub load_avg: Option<[f64; 3]>,
}

impl Machine {
    pub fn detect(threads: usize, gpu: Option<String>) -> Self {
        let cpu_model = crate::util::provenance::cpu_model();
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads,
            gpu,
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            load_avg: load_avg(),
        }
    }
}

/// The 1, 5 and 15 minute load averages (Linux).
pub fn load_avg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = s.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// One measured case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// The kernel or step: copy, bn_fwd_train, bn_bwd, sgd_step, sgd_step_sums, reduce_sqnorm,
    /// reduce_sums4, train_step.
    pub name: String,
    /// Who ran it, e.g. "ilr cpu-f32", "torch eager", "torch compile".
    #[serde(rename = "impl")]
    pub implementation: String,
    /// "cpu" or "cuda".
    pub device: String,
    /// The shape label (identical across tools for the same work).
    pub shape: String,
    /// Bytes moved per call as the kernel comments count them, and the compulsory minimum.
    pub bytes: Option<u64>,
    pub min_bytes: Option<u64>,
    pub flops: Option<u64>,
    pub median_s: f64,
    pub min_s: f64,
    pub reps: usize,
    /// bytes / median_s, in 10⁹ B/s.
    pub gbps: Option<f64>,
    /// gbps as a percentage of the measured copy bandwidth on the same device (as measured: it can
    /// exceed 100 when a kernel's data stays in cache or load slows the copy; see [`fmt_pct_of_copy`]).
    pub pct_of_copy: Option<f64>,
    pub gflops: Option<f64>,
    pub images_per_s: Option<f64>,
}

impl BenchResult {
    /// `copy_gbps`: the measured copy bandwidth of the device, for `pct_of_copy`.
    pub fn new(work: &Work, implementation: &str, device: &str, t: &Timing, copy_gbps: Option<f64>) -> Self {
        let Cost { bytes, min_bytes, flops } = work.cost();
        let implementation = format!("{implementation}{}", work.variant());
        let nz = |v: u64| (v > 0).then_some(v);
        let gbps = nz(bytes).map(|b| b as f64 / t.median_s / 1e9);
        BenchResult {
            name: work.name().into(),
            implementation,
            device: device.into(),
            shape: work.shape(),
            bytes: nz(bytes),
            min_bytes: nz(min_bytes),
            flops: nz(flops),
            median_s: t.median_s,
            min_s: t.min_s,
            reps: t.reps,
            gbps,
            pct_of_copy: gbps.zip(copy_gbps).map(|(g, c)| 100.0 * g / c),
            gflops: nz(flops).map(|f| f as f64 / t.median_s / 1e9),
            images_per_s: work.images().map(|n| n as f64 / t.median_s),
        }
    }
}

/// Expected wall time to equilibrium: steps c/λ_e times the measured step time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EqRow {
    /// The train_step shape, e.g. "preresnet32 b128 32x32".
    pub step: String,
    /// Who ran it, e.g. "ilr cpu-f32" or "ilr cuda-f32 (...) graphs".
    pub implementation: String,
    pub device: String,
    pub lambda_e: f64,
    pub steps: f64,
    pub step_s: f64,
    pub wall_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EqBudget {
    /// T_eq·λ_e: steps to equilibrium are c/λ_e (Fast Equilibrium Conjecture).
    pub c: f64,
    pub rows: Vec<EqRow>,
    /// The paper's setting (PreResNet-32, batch 128, η = 0.1, λ = 5e-4, λ_e = 5e-5) at the same
    /// c/λ_e steps as the table (40,000 at c = 2).
    pub paper: Option<EqRow>,
}

/// The λ_e grid of the budget table.
pub const LAMBDA_E_GRID: [f64; 7] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2];
/// λ_e of the paper's setting.
pub const PAPER_LAMBDA_E: f64 = 5e-5;
pub const PAPER_STEP: &str = "preresnet32 b128 32x32";

impl EqBudget {
    /// The budget for every measured training step.
    pub fn new(c: f64, results: &[BenchResult]) -> Self {
        let steps: Vec<&BenchResult> = results.iter().filter(|r| r.name == "train_step").collect();
        let row = |r: &BenchResult, lambda_e: f64, steps: f64| EqRow {
            step: r.shape.clone(),
            implementation: r.implementation.clone(),
            device: r.device.clone(),
            lambda_e,
            steps,
            step_s: r.median_s,
            wall_s: steps * r.median_s,
        };
        let rows =
            steps.iter().flat_map(|r| LAMBDA_E_GRID.iter().map(move |&le| row(r, le, c / le))).collect();
        // Prefer the fastest device's measurement of the paper's net.
        let paper = steps
            .iter()
            .filter(|r| r.shape == PAPER_STEP)
            .min_by(|a, b| a.median_s.total_cmp(&b.median_s))
            .map(|r| row(r, PAPER_LAMBDA_E, c / PAPER_LAMBDA_E));
        EqBudget { c, rows, paper }
    }

    /// One row per measured step, one column per λ_e of the grid.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "time to equilibrium ≈ (c/λ_e steps) × measured step time, c = T_eq·λ_e = {}",
            self.c
        );
        let _ = write!(s, "{:<46}", "λ_e:");
        for le in LAMBDA_E_GRID {
            let _ = write!(s, " {le:>9.0e}");
        }
        let _ = write!(s, "\n{:<46}", "steps:");
        for le in LAMBDA_E_GRID {
            let _ = write!(s, " {:>9.0}", self.c / le);
        }
        s.push('\n');
        for (i, r) in self.rows.iter().enumerate().step_by(LAMBDA_E_GRID.len()) {
            let step = r.step.trim_end_matches(" 32x32").replace("preresnet", "PreResNet-");
            let _ = write!(s, "{:<46}", format!("{step} {}", r.implementation));
            for q in &self.rows[i..i + LAMBDA_E_GRID.len()] {
                let _ = write!(s, " {:>9}", fmt_duration(q.wall_s));
            }
            s.push('\n');
        }
        if let Some(p) = &self.paper {
            let _ = writeln!(
                s,
                "paper setting (PreResNet-32, batch 128, η = 0.1, λ = 5e-4, λ_e = 5e-5): c/λ_e = {:.0} steps × {} \
                 = {} with {} (performance target: 1/λ_e = {:.0} steps in < 1 min on an H200)",
                p.steps,
                fmt_duration(p.step_s),
                fmt_duration(p.wall_s),
                p.implementation,
                1.0 / PAPER_LAMBDA_E
            );
        }
        s
    }
}

/// The whole output of one `ilr bench` (or peers/pytorch) run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchFile {
    pub schema: String,
    /// "ilr" or "pytorch".
    pub tool: String,
    pub ilr_version: Option<String>,
    /// The peer's version (e.g. "torch 2.5.1"), for peer files.
    pub peer_version: Option<String>,
    pub command: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub git_commit: Option<String>,
    /// Uncommitted changes in the working tree.
    pub git_dirty: Option<bool>,
    pub machine: Machine,
    pub results: Vec<BenchResult>,
    pub equilibrium: Option<EqBudget>,
    /// Anything a reader should know: pending GPU rows, noise, skipped cases.
    pub notes: Vec<String>,
}

impl BenchFile {
    pub fn new(command: String, machine: Machine) -> Self {
        let (git_commit, git_dirty) = git_state();
        BenchFile {
            schema: SCHEMA.into(),
            tool: "ilr".into(),
            ilr_version: Some(env!("CARGO_PKG_VERSION").into()),
            peer_version: None,
            command,
            date: utc_now(),
            git_commit,
            git_dirty,
            machine,
            results: Vec::new(),
            equilibrium: None,
            notes: Vec::new(),
        }
    }

    /// The measured copy bandwidth on `device`, in 10⁹ B/s.
    pub fn copy_gbps(&self, device: &str) -> Option<f64> {
        self.results.iter().find(|r| r.name == "copy" && r.device == device).and_then(|r| r.gbps)
    }

    /// Kernel and training-step tables for people.
    pub fn tables(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {} | {} | {} cores, {} threads | GPU: {} | load {} | {} | commit {}{}",
            self.tool,
            self.ilr_version.as_deref().or(self.peer_version.as_deref()).unwrap_or(""),
            m.cpu_model,
            m.cores,
            m.threads,
            m.gpu.as_deref().unwrap_or("none"),
            m.load_avg.map_or("?".into(), |l| format!("{:.2}", l[0])),
            self.date,
            self.git_commit.as_deref().map_or("?", |c| &c[..c.len().min(10)]),
            if self.git_dirty == Some(true) { "+dirty" } else { "" }
        );
        let kernels: Vec<&BenchResult> = self.results.iter().filter(|r| r.images_per_s.is_none()).collect();
        if !kernels.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<14} {:<5} {:<24} {:>10} {:>10} {:>8} {:>7} {:>10} {:>8}",
                "kernel", "dev", "shape", "median", "min", "GB/s", "% copy", "floor", "GFLOP/s"
            );
            for r in kernels {
                // The floor: compulsory bytes at the measured copy bandwidth.
                let floor = r.min_bytes.zip(self.copy_gbps(&r.device)).map(|(b, c)| b as f64 / (c * 1e9));
                let _ = writeln!(
                    s,
                    "{:<14} {:<5} {:<24} {:>10} {:>10} {:>8} {:>7} {:>10} {:>8}",
                    r.name,
                    r.device,
                    r.shape,
                    fmt_duration(r.median_s),
                    fmt_duration(r.min_s),
                    r.gbps.map_or("-".into(), |g| format!("{g:.1}")),
                    r.pct_of_copy.map_or("-".into(), fmt_pct_of_copy),
                    floor.map_or("-".into(), fmt_duration),
                    r.gflops.map_or("-".into(), |g| format!("{g:.2}")),
                );
            }
            if self.results.iter().any(|r| r.pct_of_copy.is_some_and(above_copy)) {
                let _ = writeln!(s, "{ABOVE_COPY_NOTE}");
            }
        }
        let steps: Vec<&BenchResult> = self.results.iter().filter(|r| r.images_per_s.is_some()).collect();
        if !steps.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<22} {:<5} {:<24} {:>10} {:>10} {:>10} {:>8}",
                "training step", "dev", "shape", "median", "min", "images/s", "GFLOP/s"
            );
            for r in steps {
                let _ = writeln!(
                    s,
                    "{:<22} {:<5} {:<24} {:>10} {:>10} {:>10.1} {:>8.2}",
                    r.implementation,
                    r.device,
                    r.shape,
                    fmt_duration(r.median_s),
                    fmt_duration(r.min_s),
                    r.images_per_s.unwrap_or(f64::NAN),
                    r.gflops.unwrap_or(f64::NAN),
                );
            }
        }
        if let Some(eq) = &self.equilibrium {
            s.push('\n');
            s.push_str(&eq.table());
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// Marks a share of the copy bandwidth that is above 100%: not a kernel beating memory, but a noisy
/// ratio (its data stayed in cache, or load on the machine slowed the copy measurement).
pub const ABOVE_COPY_NOTE: &str =
    "* above the measured copy bandwidth: the kernel's data stayed in cache, or \
                                   load slowed the copy; a noisy ratio, not a kernel faster than memory";

fn above_copy(pct: f64) -> bool {
    pct >= 100.5
}

/// "87%", or ">100%*" for a share above the copy bandwidth (see [`ABOVE_COPY_NOTE`]).
pub fn fmt_pct_of_copy(pct: f64) -> String {
    if above_copy(pct) {
        ">100%*".into()
    } else {
        format!("{pct:.0}%")
    }
}

/// "12.3 µs", "4.56 ms", "1.23 s", "3.4 min", "5.6 h", "2.1 d".
pub fn fmt_duration(s: f64) -> String {
    match s {
        s if !s.is_finite() => "-".into(),
        s if s < 1e-3 => format!("{:.1} µs", s * 1e6),
        s if s < 1.0 => format!("{:.2} ms", s * 1e3),
        s if s < 120.0 => format!("{s:.2} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86400.0),
    }
}

pub use crate::util::provenance::{git_state, utc_now};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(2.5e-6), "2.5 µs");
        assert_eq!(fmt_duration(0.25), "250.00 ms");
        assert_eq!(fmt_duration(3600.0), "60.0 min");
    }
    use crate::bench::cost::Net;

    #[test]
    fn results_budget_and_json_round_trip() {
        let t = Timing { median_s: 0.5, min_s: 0.4, reps: 3, calls_per_rep: 1 };
        let copy = BenchResult::new(&Work::Copy { bytes: 1 << 30 }, "ilr cpu-f32", "cpu", &t, None);
        assert!((copy.gbps.unwrap() - 2.0 * (1u64 << 30) as f64 / 0.5e9).abs() < 1e-9);
        let step = BenchResult::new(
            &Work::TrainStep { net: Net::cifar(32), batch: 128, mode: Default::default() },
            "ilr cpu-f32",
            "cpu",
            &t,
            copy.gbps,
        );
        assert_eq!(step.images_per_s, Some(256.0));
        assert_eq!(step.bytes, None);
        let budget = EqBudget::new(2.0, &[copy.clone(), step.clone()]);
        assert_eq!(budget.rows.len(), LAMBDA_E_GRID.len());
        assert_eq!(budget.rows[0].wall_s, 2.0 / 1e-5 * 0.5);
        let paper = budget.paper.clone().unwrap();
        // The paper's line uses the table's c/λ_e steps: the λ_e = 5e-5 column.
        assert_eq!((paper.steps, paper.wall_s), (2.0 / 5e-5, 2.0 / 5e-5 * 0.5));
        let column = budget.rows.iter().find(|r| r.lambda_e == PAPER_LAMBDA_E).unwrap();
        assert_eq!((paper.steps, paper.wall_s), (column.steps, column.wall_s));
        let mut f = BenchFile::new("test".into(), Machine::detect(1, None));
        f.results = vec![copy, step];
        f.equilibrium = Some(budget);
        // (serde_json parses floats to within an ulp, so compare what is exact.)
        let back: BenchFile = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!((back.schema.as_str(), back.results.len(), back.machine), (SCHEMA, 2, f.machine.clone()));
        assert_eq!(back.equilibrium.unwrap().paper, f.equilibrium.as_ref().unwrap().paper);
        let text = f.tables();
        assert!(text.contains("images/s") && text.contains("paper setting"), "{text}");
        assert!(text.contains("c/λ_e = 40000 steps") && !text.contains("20000 steps ×"), "{text}");
        assert!(!text.contains(ABOVE_COPY_NOTE), "{text}");
    }

    #[test]
    fn tiny_steps_are_reported_and_budgeted_under_their_own_labels() {
        let t = Timing { median_s: 0.004, min_s: 0.0035, reps: 5, calls_per_rep: 1 };
        let mode = Default::default();
        let tiny = BenchResult::new(
            &Work::TrainStep { net: Net::tiny(16), batch: 32, mode },
            "ilr cpu-f32",
            "cpu",
            &t,
            None,
        );
        assert_eq!((tiny.name.as_str(), tiny.shape.as_str()), ("train_step", "preresnet8x0.5 b32 16x16"));
        assert_eq!(tiny.flops, Some(148_697_088));
        assert_eq!(tiny.images_per_s, Some(8000.0));
        let paper = BenchResult::new(
            &Work::TrainStep { net: Net::cifar(32), batch: 128, mode },
            "ilr cpu-f32",
            "cpu",
            &Timing { median_s: 0.5, ..t },
            None,
        );
        assert_eq!(paper.shape, PAPER_STEP);
        let budget = EqBudget::new(2.0, &[tiny.clone(), paper]);
        assert_eq!(budget.rows.len(), 2 * LAMBDA_E_GRID.len());
        assert_eq!(budget.rows[0].step, "preresnet8x0.5 b32 16x16");
        // The paper's line stays on the paper's net, however fast the tiny step is.
        assert_eq!(budget.paper.as_ref().unwrap().step, PAPER_STEP);
        let table = budget.table();
        assert!(table.contains("PreResNet-8x0.5 b32 16x16 ilr cpu-f32"), "{table}");
        assert!(table.contains("PreResNet-32 b128 ilr cpu-f32"), "{table}");
        let back: BenchResult = serde_json::from_str(&serde_json::to_string(&tiny).unwrap()).unwrap();
        assert_eq!(back.shape, tiny.shape);
    }

    #[test]
    fn shares_above_the_copy_are_flagged_as_noisy() {
        assert_eq!(fmt_pct_of_copy(87.4), "87%");
        assert_eq!(fmt_pct_of_copy(100.2), "100%");
        assert_eq!(fmt_pct_of_copy(131.0), ">100%*");
        let t = Timing { median_s: 0.5, min_s: 0.4, reps: 3, calls_per_rep: 1 };
        let copy = BenchResult::new(&Work::Copy { bytes: 1 << 30 }, "ilr cpu-f32", "cpu", &t, None);
        // Half the copy's time for the same bytes: 200% of it as measured.
        let fast = Timing { median_s: 0.25, ..t };
        let cached = BenchResult::new(&Work::Copy { bytes: 1 << 30 }, "ilr cpu-f32", "cpu", &fast, copy.gbps);
        assert!((cached.pct_of_copy.unwrap() - 200.0).abs() < 1e-9);
        let mut f = BenchFile::new("test".into(), Machine::detect(1, None));
        f.results = vec![copy, cached];
        let text = f.tables();
        assert!(
            text.contains(">100%*") && text.contains(ABOVE_COPY_NOTE) && !text.contains("200%"),
            "{text}"
        );
    }
}
