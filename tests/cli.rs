//! The `ilr` binary end to end: bad input gets a clear error and no panic; real CIFAR files train.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ilr(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ilr")).args(args).current_dir(cwd).output().expect("ilr runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `records` CIFAR-10 records (label i % 10, pixels i) in the real binary format.
fn write_cifar10(path: &Path, records: usize) {
    let mut bytes = Vec::with_capacity(records * 3073);
    for i in 0..records {
        bytes.push((i % 10) as u8);
        bytes.extend(std::iter::repeat_n(i as u8, 3072));
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_truncated_test_batch_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(&dir.path().join("data_batch_1.bin"), 64);
    write_cifar10(&dir.path().join("test_batch.bin"), 8);
    let test = dir.path().join("test_batch.bin");
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 100]).unwrap();
    let o = ilr(
        &["train", "--data", dir.path().to_str().unwrap(), "--steps", "2", "--quiet", "--device", "cpu"],
        dir.path(),
    );
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("test_batch.bin") && err.contains("truncated"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.path().join("runs").exists(), "nothing is written for a run that could not start");
}

#[test]
fn a_missing_directory_and_a_bad_config_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = ilr(&["train", "--data", "/nonexistent/cifar", "--steps", "2", "--device", "cpu"], dir.path());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/cifar"), "{}", stderr(&o));
    let o = ilr(&["train", "--set", "optim.learning_rate=0.1", "--device", "cpu"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("learning_rate"), "{}", stderr(&o));
    let o = ilr(&["train", "--lr=-1", "--device", "cpu"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("optim.lr"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn trains_on_real_cifar10_files_when_present() {
    let data: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "shared", "data", "cifar10-jpeg"].iter().collect();
    if !data.join("test_batch.bin").exists() {
        println!("skipped: no CIFAR-10 sample files at {}", data.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = ilr(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "20",
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "data.test_limit=512",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("using 1 of 5 training batches"), "{}", stderr(&o));
    let runs: Vec<_> =
        std::fs::read_dir(dir.path().join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 20);
    assert!(summary["final"]["test_acc"].as_f64().unwrap() >= 0.0);
}
