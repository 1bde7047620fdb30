//! Rough edges a new user hits (issue 12), checked through the `ilr` binary: messages, help text,
//! and what a command writes or leaves alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ilr_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ilr"));
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("ilr runs")
}

fn ilr(args: &[&str], cwd: &Path) -> Output {
    ilr_env(args, cwd, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure with a message of ilr's own (not clap's, not a panic) that contains every `want`.
fn fails_saying(o: &Output, want: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked") && !err.contains("unexpected argument"), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// Every file under `dir`, relative, sorted, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::files_under(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
        .collect()
}

/// A sweep spec of one tiny CPU run from [base] alone (a few seconds of training).
const BASE_ONLY_CPU: &str = r#"
[base]
seed = 3
model = { depth = 8, width = 0.25 }
train = { steps = 4, batch_size = 8, stats_every = 2, eval_every = 0, device = "cpu" }
data.synthetic = { train = 32, test = 8, size = 8, noise = 0.3 }
"#;

#[test]
fn negative_numbers_reach_the_validation_and_zero_threads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_saying(&ilr(&["train", "--lr", "-1", "--device", "cpu"], d), &["optim.lr"]);
    fails_saying(&ilr(&["train", "--momentum", "-0.5", "--device", "cpu"], d), &["momentum"]);
    fails_saying(&ilr(&["train", "--steps", "-5"], d), &["--steps", "whole number ≥ 0", "\"-5\""]);
    fails_saying(
        &ilr(&["train", "--checkpoint-every", "-1"], d),
        &["--checkpoint-every", "whole number ≥ 0"],
    );
    fails_saying(&ilr(&["train", "--threads", "0"], d), &["--threads", "at least 1"]);
    fails_saying(&ilr(&["bench", "--t-eq-lambda-e", "-2"], d), &["--t-eq-lambda-e", "positive"]);
    fails_saying(&ilr(&["profile", "--threads", "-1"], d), &["--threads", "whole number ≥ 1"]);
    fails_saying(&ilr(&["check", "--seed", "-1"], d), &["--seed", "whole number ≥ 0"]);
    std::fs::write(d.join("s.toml"), BASE_ONLY_CPU).unwrap();
    fails_saying(&ilr(&["sweep", "s.toml", "--out", "o", "--workers", "-2"], d), &["--workers"]);
    fails_saying(&ilr(&["reproduce", "angular-update", "--out", "o", "--threads", "0"], d), &["at least 1"]);
    assert!(!d.join("o").exists(), "nothing written for refused flags");
}

#[test]
fn help_says_what_the_flags_do() {
    let dir = tempfile::tempdir().unwrap();
    let help = |cmd: &str| stdout(&ilr(&[cmd, "--help"], dir.path()));
    let train = help("train");
    assert!(train.contains("OUT/<run-id>/") && !train.contains("receives runs/<run-id>"), "{train}");
    assert!(train.contains("--scale-invariant <BOOL>") && train.contains("--cuda-graphs <BOOL>"), "{train}");
    assert!(train.contains("default: auto"), "train --device says its default: {train}");
    assert!(train.contains("at least 1 (default: all cores)"), "{train}");
    for cmd in ["train", "sweep", "reproduce", "bench", "profile"] {
        let h = help(cmd);
        let device = &h[h.find("--device <DEVICE>").unwrap_or_else(|| panic!("{cmd}: {h}"))..];
        let device = &device[..device.find("\n\n      --").unwrap_or(device.len())];
        // A description of the flag itself, and of every value.
        assert!(
            !device.trim_start_matches("--device <DEVICE>").trim_start().starts_with("Possible"),
            "{cmd}"
        );
        for value in ["- auto:", "- cpu:", "- cuda:"] {
            assert!(device.contains(value), "{cmd} --device lacks {value:?}: {device}");
        }
    }
    let bench = help("bench");
    assert!(bench.contains("--t-eq-lambda-e <C>") && !bench.contains("--c <"), "{bench}");
    // The tiny recipes' steps run by default and are selected by their shape label.
    assert!(bench.contains("PreResNet-8 ×0.5") && bench.contains("preresnet8x0.5"), "{bench}");
    let sweep = help("sweep");
    assert!(sweep.contains("writes nothing"), "{sweep}");
}

/// The one run-time figure of the default run is the same in README and `train --help`.
#[test]
fn readme_and_help_give_the_same_run_time() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let help = stdout(&ilr(&["train", "--help"], Path::new(env!("CARGO_MANIFEST_DIR")))).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let figure = |text: &str| -> Option<String> {
        let i = text.find(" on 2 idle cores")?;
        let start = text[..i].rfind("about ")?;
        Some(text[start..i].to_string())
    };
    let (r, h) = (figure(&readme), figure(&help));
    assert!(r.is_some() && r == h, "README {r:?} vs train --help {h:?}");
    assert!(!readme.contains("~30 s") && !help.contains("under two minutes"));
}

#[test]
fn check_without_a_gpu_says_what_to_do_instead() {
    let dir = tempfile::tempdir().unwrap();
    // No GPU is visible with CUDA_VISIBLE_DEVICES="" (and none exists without a driver).
    let o = ilr_env(&["check"], dir.path(), &[("CUDA_VISIBLE_DEVICES", "")]);
    fails_saying(
        &o,
        &["needs a GPU", "ilr check --kernels", "cargo test --release", "ilr train --device cpu"],
    );
    let err = stderr(&o);
    assert!(!err.contains("run with --device cpu"), "check has no --device: {err}");
    assert!(!err.contains(",.") && !err.contains(" or.") && !err.contains(";."), "{err}");
}

#[test]
fn a_dry_run_checks_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), BASE_ONLY_CPU.replace("seed = 3", "")).unwrap();
    std::fs::write(
        d.join("grid.toml"),
        format!("{BASE_ONLY_CPU}[grid]\n\"optim.lambda_e\" = [1e-3, 2e-3]\n"),
    )
    .unwrap();
    // An existing sweep directory, with a different spec: left exactly as it was.
    let out = d.join("out");
    std::fs::create_dir_all(out.join("runs/some-run")).unwrap();
    std::fs::write(out.join("spec.toml"), "[base]\nseed = 9\n").unwrap();
    std::fs::write(out.join("runs/some-run/metrics.jsonl"), "{}\n").unwrap();
    let before = snapshot(&out);
    let dry = |extra: &[&str]| {
        let mut args = vec!["sweep", "grid.toml", "--out", "out", "--dry-run"];
        args.extend_from_slice(extra);
        ilr(&args, d)
    };
    fails_saying(&dry(&["--shard", "3/2"]), &["--shard 3/2", "out of range"]);
    fails_saying(&dry(&["--shard", "x"]), &["--shard x"]);
    fails_saying(&dry(&["--workers", "0"]), &["--workers", "at least 1"]);
    fails_saying(&dry(&["--threads", "0"]), &["--threads", "at least 1"]);
    fails_saying(&dry(&["--device", "cuda", "--workers", "2"]), &["--workers sets CPU workers"]);
    fails_saying(&dry(&["--runs-per-gpu", "0"]), &["--runs-per-gpu", "at least 1"]);
    fails_saying(
        &dry(&["--device", "cpu", "--runs-per-gpu", "4"]),
        &["--runs-per-gpu applies to GPU workers"],
    );
    std::fs::write(d.join("bad.toml"), "[grid]\n\"optim.lr\" = [0.1, -0.1]\n").unwrap();
    fails_saying(&ilr(&["sweep", "bad.toml", "--out", "out", "--dry-run"], d), &["optim.lr = -0.1"]);
    let ok = dry(&["--shard", "1/2"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("1 of 2 runs (shard 1/2)"), "{}", stdout(&ok));
    let ok = dry(&[]);
    assert!(ok.status.success() && stdout(&ok).contains("2 runs; nothing written"), "{}", stdout(&ok));
    assert_eq!(snapshot(&out), before, "a dry run changed the sweep directory");
    // A fresh directory is not even created.
    let o = ilr(&["sweep", "s.toml", "--out", "fresh", "--dry-run"], d);
    assert!(o.status.success() && stdout(&o).contains("[base]"), "{}", stderr(&o));
    assert!(!d.join("fresh").exists());
}

/// A spec of [base] alone trains one run; its train.device = "cpu" keeps the sweep off the GPU
/// probe (no "no NVIDIA driver … run with --device cpu" note), and the config it writes shows the
/// f32 noise as given.
#[test]
fn a_base_only_cpu_spec_is_one_quiet_cpu_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), BASE_ONLY_CPU).unwrap();
    let o = ilr(&["sweep", "s.toml", "--out", "out"], d);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("NVIDIA") && !err.contains("--device cpu") && !err.contains("note:"), "{err}");
    assert!(err.contains("1 trained now"), "{err}");
    let runs: Vec<PathBuf> =
        std::fs::read_dir(d.join("out/runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let config = std::fs::read_to_string(runs[0].join("config.toml")).unwrap();
    assert!(config.contains("noise = 0.3\n"), "{config}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("summary.json")).unwrap()).unwrap();
    let norm = &summary["normalization"];
    assert_eq!(norm["mean"].as_array().map(Vec::len), Some(3), "{summary}");
    assert!(norm["std"].as_array().unwrap().iter().all(|s| s.as_f64().unwrap() > 0.0), "{summary}");
}

#[test]
fn print_config_shows_floats_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let o = ilr(&["train", "--print-config"], dir.path());
    assert!(stdout(&o).contains("noise = 0.3\n"), "{}", stdout(&o));
    let o = ilr(&["train", "--print-config", "--set", "data.synthetic.noise=0.1"], dir.path());
    assert!(stdout(&o).contains("noise = 0.1\n"), "{}", stdout(&o));
    // Fed back, the printed config is the same config.
    std::fs::write(dir.path().join("c.toml"), stdout(&o)).unwrap();
    let again = ilr(&["train", "--print-config", "--config", "c.toml"], dir.path());
    assert_eq!(stdout(&again), stdout(&o));
}

/// `records` CIFAR-100 records (coarse i % 20, fine i % 100) in the real binary format.
fn write_cifar100(path: &Path, records: usize) {
    let mut bytes = Vec::with_capacity(records * 3074);
    for i in 0..records {
        bytes.extend([(i % 20) as u8, (i % 100) as u8]);
        bytes.extend(std::iter::repeat_n(i as u8, 3072));
    }
    std::fs::write(path, bytes).unwrap();
}

/// (Tests run as root here, where an unreadable directory is still read: the OS errors come from a
/// symlink loop and a directory where a file belongs.)
#[test]
fn data_loader_messages_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = |data: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--data", data.to_str().unwrap(), "--device", "cpu", "--quiet"];
        args.extend_from_slice(extra);
        ilr(&args, d)
    };
    // CIFAR-100 trains without the CIFAR-10 "1 of 5 training batches" note.
    let c100 = d.join("c100");
    std::fs::create_dir(&c100).unwrap();
    write_cifar100(&c100.join("train.bin"), 8);
    write_cifar100(&c100.join("test.bin"), 4);
    let tiny = ["--steps", "1", "--batch-size", "4", "--width", "0.25", "--eval-every", "0"];
    let o = train(&c100, &tiny);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("training batches"), "{}", stderr(&o));

    fails_saying(&train(&c100.join("train.bin"), &[]), &["train.bin", "not a directory"]);
    fails_saying(&train(&d.join("missing"), &[]), &["missing", "no such directory"]);

    let looped = d.join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let os = std::fs::metadata(&looped).unwrap_err().to_string();
    fails_saying(&train(&looped, &[]), &[&os]);
    assert!(!stderr(&train(&looped, &[])).contains("no CIFAR dataset"));

    // test.bin is a directory: the read error, said once.
    std::fs::remove_file(c100.join("test.bin")).unwrap();
    std::fs::create_dir(c100.join("test.bin")).unwrap();
    let os = std::fs::read(c100.join("test.bin")).unwrap_err().to_string();
    // Another seed, so another run id: the first run finished, and a rerun would just print it.
    let o = train(&c100, &[&tiny[..], &["--seed", "1"]].concat());
    fails_saying(&o, &["test.bin", &os]);
    assert_eq!(stderr(&o).matches(&os).count(), 1, "{}", stderr(&o));
}
