//! Compiles `kernels/*.cu` to PTX with nvcc and generates `$OUT_DIR/kernels.rs` (see docs/KERNELS.md).
//!
//! nvcc is looked up in this order: `NVCC` (an explicit path: an error if it does not exist), then
//! `CUDA_HOME`/bin/nvcc and `CUDA_PATH`/bin/nvcc, then `PATH`, then the project-local toolchain
//! `.cuda-toolchain/nvidia/cu13/bin/nvcc` that `scripts/install-cuda-toolchain.sh` installs.
//!
//! Per kernel file: `nvcc -ptx -arch=$ILR_CUDA_ARCH` (default compute_80, so the PTX JITs on A100,
//! H100 and H200) into OUT_DIR, and `nvcc -cubin -arch=sm_90 -Xptxas -v` for the register and spill
//! report `$OUT_DIR/ptxas-sm_90.txt`. Flags: `-std=c++17 -O3 -lineinfo --fmad=false`, and no
//! `--use_fast_math`: the kernels are compared against a CPU reference, so division and sqrt stay
//! IEEE-rounded and a*b+c is not contracted into an FMA (it rounds twice, as in Rust).
//!
//! Without nvcc the crate still builds: `kernels::BUILT` is false, `kernels::PTX` is empty, and one
//! `cargo:warning` says how to get the kernels. `ILR_REQUIRE_KERNELS=1` turns a missing nvcc, and
//! any ptxas spill, into a build error. A compile error in a .cu file always fails the build.
//! After installing a toolchain, `touch build.rs` (the install script does) so cargo reruns this.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const ENV_VARS: &[&str] =
    &["NVCC", "CUDA_HOME", "CUDA_PATH", "NVCC_CCBIN", "ILR_CUDA_ARCH", "ILR_REQUIRE_KERNELS"];
const DEFAULT_PTX_ARCH: &str = "compute_80";
const PTXAS_ARCH: &str = "sm_90";
const LOCAL_NVCC: &str = ".cuda-toolchain/nvidia/cu13/bin/nvcc";
const INSTALL_HINT: &str =
    "run scripts/install-cuda-toolchain.sh (nvcc 13.0 from PyPI into .cuda-toolchain/), or set NVCC or CUDA_HOME";

fn main() {
    for v in ENV_VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernel_dir = manifest.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let require =
        env::var("ILR_REQUIRE_KERNELS").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);

    embed_git_state(&manifest);
    let sources = list_sources(&kernel_dir);
    let nvcc = match find_nvcc(&manifest) {
        Ok(n) => n,
        Err(e) => fail(&e),
    };
    let Some((nvcc, version)) = nvcc.found else {
        let reason = format!(
            "no nvcc found ({}); the CUDA kernels are not built: {INSTALL_HINT}",
            nvcc.tried.join("; ")
        );
        if require {
            fail(&format!("ILR_REQUIRE_KERNELS=1 but {reason}"));
        }
        println!("cargo:warning=ilr: {reason}");
        write_generated(&out, &Generated { reason, ..Generated::default() });
        return;
    };
    println!("cargo:rerun-if-changed={}", nvcc.display());
    if newer_than_13_0(&version) {
        println!(
            "cargo:warning=ilr: nvcc {version} is newer than 13.0: its PTX may not load on a CUDA 13.0 driver (580); \
             set NVCC to a 13.0 nvcc (scripts/install-cuda-toolchain.sh)"
        );
    }

    let ptx_arch =
        env::var("ILR_CUDA_ARCH").ok().filter(|s| !s.trim().is_empty()).unwrap_or(DEFAULT_PTX_ARCH.into());
    let ccbin = env::var("NVCC_CCBIN").ok().filter(|s| !s.is_empty());
    // This script also reruns for the git state (every source edit): skip nvcc when nothing it
    // reads has changed since the last successful compile into this OUT_DIR.
    let key_path = out.join("kernels.key");
    let key = compile_key(&kernel_dir, &[&version, &ptx_arch, &format!("{ccbin:?}"), &require.to_string()]);
    if fs::read_to_string(&key_path).is_ok_and(|k| k == key) && out.join("kernels.rs").exists() {
        return;
    }
    let common = |cmd: &mut Command| {
        cmd.args(["-std=c++17", "-O3", "-lineinfo", "--fmad=false"]).arg("-I").arg(&kernel_dir);
        if let Some(cc) = &ccbin {
            cmd.arg("-ccbin").arg(cc);
        }
    };

    // Two jobs per file (PTX, sm_90 cubin for the ptxas report), run in parallel.
    let mut jobs: Vec<(String, Job, Command)> = Vec::new();
    for (stem, src) in &sources {
        let mut ptx = Command::new(&nvcc);
        ptx.arg("-ptx").arg(format!("-arch={ptx_arch}"));
        common(&mut ptx);
        ptx.arg("-o").arg(out.join(format!("{stem}.ptx"))).arg(src);
        jobs.push((stem.clone(), Job::Ptx, ptx));

        let mut cubin = Command::new(&nvcc);
        cubin.arg("-cubin").arg(format!("-arch={PTXAS_ARCH}")).args(["-Xptxas", "-v"]);
        common(&mut cubin);
        cubin.arg("-o").arg(out.join(format!("{stem}.{PTXAS_ARCH}.cubin"))).arg(src);
        jobs.push((stem.clone(), Job::Cubin, cubin));
    }
    let results = run_parallel(jobs);

    let mut errors = String::new();
    let mut report = String::new();
    let mut resources = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (stem, job, cmd, res) in &results {
        let text = match res {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("could not run nvcc: {e}"),
        };
        let ok = matches!(res, Ok(o) if o.status.success());
        if !ok {
            // One message per file: the PTX and cubin jobs fail on the same source error.
            if !failed.contains(stem) {
                let _ = writeln!(errors, "nvcc failed on kernels/{stem}.cu ({job:?} job):\n  {cmd}\n{text}");
                failed.push(stem.clone());
            }
            continue;
        }
        match job {
            Job::Ptx => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    println!("cargo:warning=ilr: kernels/{stem}.cu: {line}");
                }
            }
            Job::Cubin => {
                let _ = writeln!(
                    report,
                    "== kernels/{stem}.cu: nvcc -cubin -arch={PTXAS_ARCH} -Xptxas -v ==\n{text}"
                );
                resources.extend(parse_ptxas(stem, &text));
            }
        }
    }
    if !errors.is_empty() {
        fail(&errors);
    }

    report.push_str(&resource_table(&resources));
    let spills: Vec<&Resource> =
        resources.iter().filter(|r| r.spill_stores > 0 || r.spill_loads > 0).collect();
    for r in &spills {
        let msg = format!(
            "ptxas ({PTXAS_ARCH}): {} in kernels/{}.cu spills ({} bytes spill stores, {} bytes spill loads)",
            r.function, r.module, r.spill_stores, r.spill_loads
        );
        if require {
            fail(&format!("ILR_REQUIRE_KERNELS=1 and {msg}"));
        }
        println!("cargo:warning=ilr: {msg}");
    }

    let ptx: Vec<(String, PathBuf)> =
        sources.iter().map(|(s, _)| (s.clone(), out.join(format!("{s}.ptx")))).collect();
    let entries = ptx
        .iter()
        .map(|(s, p)| (s.clone(), entry_points(&fs::read_to_string(p).unwrap_or_default())))
        .collect();
    let report_path = out.join(format!("ptxas-{PTXAS_ARCH}.txt"));
    fs::write(&report_path, &report)
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", report_path.display())));
    write_generated(
        &out,
        &Generated {
            built: true,
            nvcc_version: Some(version),
            ptx_arch,
            reason: String::new(),
            ptx,
            report: Some(report_path),
            resources,
            entries,
        },
    );
    fs::write(&key_path, key).unwrap_or_else(|e| fail(&format!("writing {}: {e}", key_path.display())));
}

/// What the kernel compile depends on: the settings, then every file under kernels/ (name and
/// bytes, sorted by name).
fn compile_key(kernel_dir: &Path, settings: &[&str]) -> String {
    let mut files: Vec<PathBuf> =
        fs::read_dir(kernel_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    let mut key = settings.join("|");
    for f in files.iter().filter(|f| f.is_file()) {
        let _ = write!(
            key,
            "\n== {}\n{}",
            f.display(),
            String::from_utf8_lossy(&fs::read(f).unwrap_or_default())
        );
    }
    key
}

/// Embeds the git commit and whether tracked files differ from it (`ILR_GIT_COMMIT`, `ILR_GIT_DIRTY`,
/// read by util::provenance), as of this build: the script reruns when HEAD, the index or a source
/// file changes. Outside a git checkout both are empty ("unknown").
fn embed_git_state(manifest: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    for dir in ["src", "kernels", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = match commit.is_empty() {
        true => String::new(),
        false => git(&["status", "--porcelain", "--untracked-files=no"])
            .map_or(String::new(), |s| (!s.is_empty()).to_string()),
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let head = Path::new(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        println!("cargo:rerun-if-changed={}", Path::new(&git_dir).join("index").display());
        // A commit moves the branch's ref, not HEAD (which names the branch).
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common =
                git(&["rev-parse", "--git-common-dir"]).map(|c| manifest.join(c)).unwrap_or_default();
            // A packed ref has no file (cargo would rerun this every build); packed-refs moves then.
            for f in [common.join(&r), common.join("packed-refs")] {
                if f.exists() {
                    println!("cargo:rerun-if-changed={}", f.display());
                }
            }
        }
    }
    println!("cargo:rustc-env=ILR_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=ILR_GIT_DIRTY={dirty}");
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// (file stem, path) of every kernels/*.cu, sorted; also registers them and the headers for reruns.
fn list_sources(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if ext == "cu" || ext == "cuh" {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            if ext == "cu" {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    v.push((stem.to_string(), p.clone()));
                }
            }
        }
    }
    v.sort();
    v
}

struct NvccSearch {
    found: Option<(PathBuf, String)>,
    tried: Vec<String>,
}

/// Err only when `NVCC` names a path that is missing or does not run.
fn find_nvcc(manifest: &Path) -> Result<NvccSearch, String> {
    let mut tried = Vec::new();
    if let Some(p) = env::var_os("NVCC").filter(|s| !s.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!(
                "NVCC is set to {}, which does not exist (unset NVCC to search for nvcc)",
                p.display()
            ));
        }
        return match nvcc_version(&p) {
            Ok(v) => Ok(NvccSearch { found: Some((p, v)), tried }),
            Err(e) => Err(format!("NVCC={}: {e}", p.display())),
        };
    }
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = env::var_os(var).filter(|s| !s.is_empty()) {
            candidates.push((var.into(), PathBuf::from(h).join("bin").join(exe("nvcc"))));
        } else {
            tried.push(format!("{var} unset"));
        }
    }
    let on_path = env::var_os("PATH")
        .and_then(|p| env::split_paths(&p).map(|d| d.join(exe("nvcc"))).find(|c| c.is_file()));
    match on_path {
        Some(c) => candidates.push(("PATH".into(), c)),
        None => tried.push("not on PATH".into()),
    }
    candidates.push(("project toolchain".into(), manifest.join(LOCAL_NVCC)));
    for (what, c) in candidates {
        if !c.is_file() {
            tried.push(format!("{what}: no {}", c.display()));
            continue;
        }
        match nvcc_version(&c) {
            Ok(v) => return Ok(NvccSearch { found: Some((c, v)), tried }),
            Err(e) => tried.push(format!("{what}: {} does not run: {e}", c.display())),
        }
    }
    Ok(NvccSearch { found: None, tried })
}

fn exe(name: &str) -> String {
    format!("{name}{}", env::consts::EXE_SUFFIX)
}

/// "13.0.88" from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88").
fn nvcc_version(nvcc: &Path) -> Result<String, String> {
    let o = Command::new(nvcc).arg("--version").output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("`nvcc --version` exited with {}", o.status));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let v = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .find_map(|w| w.strip_prefix('V').filter(|r| r.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_string);
    v.ok_or_else(|| format!("no version in `nvcc --version` output: {text}"))
}

fn newer_than_13_0(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) > (13, 0)
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Ptx,
    Cubin,
}

type JobResult = (String, Job, String, std::io::Result<Output>);

fn run_parallel(jobs: Vec<(String, Job, Command)>) -> Vec<JobResult> {
    let threads = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(2)
        .clamp(1, 16)
        .min(jobs.len().max(1));
    let jobs: Vec<Mutex<Option<(String, Job, Command)>>> =
        jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<JobResult>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() {
                    break;
                }
                let (stem, job, mut cmd) = jobs[i].lock().unwrap().take().unwrap();
                let shown = format!("{cmd:?}");
                let r = cmd.output();
                *results[i].lock().unwrap() = Some((stem, job, shown, r));
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().unwrap().unwrap()).collect()
}

#[derive(Debug, Default)]
struct Resource {
    module: String,
    function: String,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack_bytes: u32,
    shared_bytes: u32,
}

/// Parses `ptxas -v` output: "Compiling entry function 'f'", "Function properties for f",
/// "N bytes stack frame, N bytes spill stores, N bytes spill loads", "Used N registers, ..., N bytes smem".
fn parse_ptxas(module: &str, text: &str) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut current: Option<usize> = None;
    let select = |out: &mut Vec<Resource>, name: &str| -> usize {
        if let Some(i) = out.iter().position(|r| r.function == name) {
            return i;
        }
        out.push(Resource { module: module.into(), function: name.into(), ..Resource::default() });
        out.len() - 1
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or(rest);
            current = Some(select(&mut out, name));
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(select(&mut out, rest.trim()));
        } else if let Some(i) = current {
            let r = &mut out[i];
            if line.contains("stack frame") {
                r.stack_bytes = number_before(line, "bytes stack frame");
                r.spill_stores = number_before(line, "bytes spill stores");
                r.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers");
                r.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    out
}

fn number_before(line: &str, marker: &str) -> u32 {
    line.find(marker)
        .and_then(|i| line[..i].split(|c: char| !c.is_ascii_digit()).rfind(|w| !w.is_empty()))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

fn resource_table(rs: &[Resource]) -> String {
    let mut s = format!(
        "\n== summary ({PTXAS_ARCH}) ==\n{:<12} {:<24} {:>5} {:>7} {:>7} {:>6} {:>6}\n",
        "module", "function", "regs", "spill_st", "spill_ld", "stack", "smem"
    );
    for r in rs {
        let _ = writeln!(
            s,
            "{:<12} {:<24} {:>5} {:>8} {:>8} {:>6} {:>6}",
            r.module, r.function, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.shared_bytes
        );
    }
    s
}

/// Kernel names from the PTX `.entry` directives.
fn entry_points(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| l.split(".entry ").nth(1))
        .map(|r| r.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

#[derive(Default)]
struct Generated {
    built: bool,
    nvcc_version: Option<String>,
    ptx_arch: String,
    reason: String,
    ptx: Vec<(String, PathBuf)>,
    report: Option<PathBuf>,
    resources: Vec<Resource>,
    entries: Vec<(String, Vec<String>)>,
}

fn write_generated(out: &Path, g: &Generated) {
    let path_lit = |p: &Path| format!("{:?}", p.display().to_string());
    let mut s = String::from(
        "// @generated by build.rs: do not edit. Included by `pub mod kernels` (see docs/KERNELS.md).\n\n",
    );
    let _ = writeln!(s, "/// True when this build compiled the CUDA kernels (nvcc was found).");
    let _ = writeln!(s, "pub const BUILT: bool = {};", g.built);
    let _ = writeln!(s, "/// Version of the nvcc that compiled the kernels, e.g. \"13.0.88\".");
    let _ = writeln!(s, "pub const NVCC_VERSION: Option<&str> = {:?};", g.nvcc_version.as_deref());
    let _ = writeln!(s, "/// Virtual architecture of the PTX (`ILR_CUDA_ARCH`, default {DEFAULT_PTX_ARCH}); empty when not built.");
    let _ = writeln!(s, "pub const PTX_ARCH: &str = {:?};", g.ptx_arch);
    let _ = writeln!(s, "/// Why this build has no kernels, and how to get them; empty when BUILT.");
    let _ = writeln!(s, "pub const NOT_BUILT_REASON: &str = {:?};", g.reason);
    let _ = writeln!(s, "/// (module name = file stem of kernels/NAME.cu, PTX text) for each kernel file.");
    let _ = writeln!(s, "pub const PTX: &[(&str, &str)] = &[");
    for (stem, p) in &g.ptx {
        let _ = writeln!(s, "    ({stem:?}, include_str!({})),", path_lit(p));
    }
    let _ = writeln!(s, "];");
    let _ = writeln!(s, "/// Kernel entry points of each module, from the PTX `.entry` directives.");
    let _ = writeln!(s, "pub const ENTRY_POINTS: &[(&str, &[&str])] = &[");
    for (stem, names) in &g.entries {
        let _ = writeln!(s, "    ({stem:?}, &{names:?}),");
    }
    let _ = writeln!(s, "];");
    let _ = writeln!(
        s,
        "/// Raw `nvcc -cubin -arch={PTXAS_ARCH} -Xptxas -v` output per file, then a summary table."
    );
    match &g.report {
        Some(p) => {
            let _ = writeln!(s, "pub const PTXAS_REPORT: &str = include_str!({});", path_lit(p));
        }
        None => {
            let _ = writeln!(s, "pub const PTXAS_REPORT: &str = \"\";");
        }
    }
    s.push_str(
        "/// Resources of one compiled function, as ptxas reports them.\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq)]\n\
         pub struct KernelResources {\n    \
         /// File stem of the kernels/*.cu file.\n    pub module: &'static str,\n    \
         /// Function name (a kernel, or a non-inlined device function).\n    pub function: &'static str,\n    \
         /// Registers per thread.\n    pub registers: u32,\n    \
         /// Bytes of spill stores.\n    pub spill_stores: u32,\n    \
         /// Bytes of spill loads.\n    pub spill_loads: u32,\n    \
         /// Bytes of stack frame.\n    pub stack_bytes: u32,\n    \
         /// Bytes of static shared memory.\n    pub shared_bytes: u32,\n}\n",
    );
    let _ = writeln!(s, "/// The real architecture of PTXAS_REPORT and PTXAS.");
    let _ = writeln!(s, "pub const PTXAS_ARCH: &str = {PTXAS_ARCH:?};");
    let _ = writeln!(s, "/// Per-function registers, spills and static shared memory for PTXAS_ARCH.");
    let _ = writeln!(s, "pub const PTXAS: &[KernelResources] = &[");
    for r in &g.resources {
        let _ = writeln!(
            s,
            "    KernelResources {{ module: {:?}, function: {:?}, registers: {}, spill_stores: {}, spill_loads: {}, stack_bytes: {}, shared_bytes: {} }},",
            r.module, r.function, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.shared_bytes
        );
    }
    let _ = writeln!(s, "];");
    let path = out.join("kernels.rs");
    // Write only on change, so an unchanged result does not touch the file's mtime.
    if fs::read_to_string(&path).ok().as_deref() != Some(s.as_str()) {
        fs::write(&path, s).unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
    }
}
