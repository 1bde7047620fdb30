//! Where a result came from: the ilr build (version, git commit, dirty flag, embedded by build.rs),
//! the machine (CPU model, the SIMD features ilr's kernels dispatch on, threads) and, where a GPU
//! ran, its name, driver, CUDA and cuDNN versions and the hash of the kernels' PTX. Written into
//! summary.json so that runs from different builds or machines can be told apart; it enters no
//! run id and no other record.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The GPU side of a run's provenance (None on the CPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuProvenance {
    pub name: String,
    /// e.g. "sm_90".
    pub compute_capability: String,
    /// The CUDA version the driver supports, e.g. "13.0".
    pub driver_cuda: String,
    pub cudnn: String,
    /// SHA-256 of the embedded PTX modules, in module order (name and text).
    pub ptx_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The crate version (Cargo.toml).
    pub ilr_version: String,
    /// The git commit ilr was built from, or "unknown" (built outside a git checkout).
    pub commit: String,
    /// Whether tracked files differed from that commit at build time; null when unknown.
    pub dirty: Option<bool>,
    /// "model name" from /proc/cpuinfo, or "unknown".
    pub cpu: String,
    /// The target architecture, e.g. "x86_64".
    pub arch: String,
    /// The SIMD features detected at run time that the CPU kernels dispatch on (x86-64: "avx2",
    /// "fma", "avx512f", ...), then "direct3x3=avx512" or "direct3x3=avx2": the kernels the f32
    /// direct convolutions take, and the vectors BatchNorm's loops are compiled for (the same bits
    /// with either; ILR_DIRECT_SIMD=avx2 caps both at AVX2); empty elsewhere.
    pub simd: Vec<String>,
    /// Host threads of the rayon pool the run trained in.
    pub threads: usize,
    pub gpu: Option<GpuProvenance>,
}

impl Provenance {
    /// This process's provenance, with `gpu` from the backend that trains.
    pub fn current(gpu: Option<GpuProvenance>) -> Self {
        let (commit, dirty) = git_state();
        Provenance {
            ilr_version: env!("CARGO_PKG_VERSION").to_string(),
            commit: commit.unwrap_or_else(|| "unknown".into()),
            dirty,
            cpu: cpu_model(),
            arch: std::env::consts::ARCH.to_string(),
            simd: simd_features(),
            threads: rayon::current_num_threads(),
            gpu,
        }
    }

    /// The fields on which two runs' numerics may differ (everything but the thread count, which
    /// does not change the CPU path's bits), as "key=value" strings.
    pub fn numeric_identity(&self) -> Vec<String> {
        let mut v = vec![
            format!("ilr {}", self.ilr_version),
            format!("commit {}{}", self.commit, if self.dirty == Some(true) { " (dirty)" } else { "" }),
            format!("cpu {}", self.cpu),
            format!("simd {}", if self.simd.is_empty() { "none".into() } else { self.simd.join("+") }),
        ];
        if let Some(g) = &self.gpu {
            v.push(format!(
                "gpu {} driver CUDA {} cuDNN {} ptx {}",
                g.name, g.driver_cuda, g.cudnn, g.ptx_sha256
            ));
        }
        v
    }
}

/// The git commit and dirty flag embedded at build time (build.rs); (None, None) outside a checkout.
pub fn git_state() -> (Option<String>, Option<bool>) {
    let commit = option_env!("ILR_GIT_COMMIT").filter(|c| !c.is_empty()).map(String::from);
    let dirty = option_env!("ILR_GIT_DIRTY").filter(|d| !d.is_empty()).map(|d| d == "1" || d == "true");
    (commit, dirty)
}

/// "model name" from /proc/cpuinfo, or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The SIMD features the CPU kernels (and the GEMM crates) dispatch on, as detected now.
pub fn simd_features() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = Vec::new();
        macro_rules! detect {
            ($($f:tt),*) => {$(if std::is_x86_feature_detected!($f) { v.push($f.to_string()); })*};
        }
        detect!("sse4.1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl");
        // Which kernels the direct 3×3 convolutions take ("direct3x3=avx512" or "=avx2").
        v.extend(crate::backend::cpu::direct_conv_simd().map(|k| format!("direct3x3={k}")));
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// SHA-256 of named text modules (each name, a NUL, the text, a NUL), as lowercase hex.
pub fn sha256_of_modules<'a>(modules: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, text) in modules {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as "YYYY-MM-DDTHH:MM:SSZ".
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// Seconds since 1970 as "YYYY-MM-DDTHH:MM:SSZ" (proleptic Gregorian, UTC).
pub fn utc_from_unix(secs: u64) -> String {
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_in_a_checkout_knows_its_commit_and_the_hash_is_order_sensitive() {
        // This crate is built from a git checkout in development and CI (build.rs embeds the state).
        let p = Provenance::current(None);
        if std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() {
            assert_eq!(p.commit.len(), 40, "{}", p.commit);
            assert!(p.dirty.is_some());
        }
        assert!(p.threads >= 1);
        let a = sha256_of_modules([("a", "x"), ("b", "y")]);
        assert_eq!(a.len(), 64);
        assert_ne!(a, sha256_of_modules([("b", "y"), ("a", "x")]));
        assert_ne!(sha256_of_modules([("ab", "")]), sha256_of_modules([("a", "b")]));
    }

    #[test]
    fn dates() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
