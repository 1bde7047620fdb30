//! PyTorch parity of AdamW, Adam + L2 and Lion (peers/pytorch/optim_parity.py): where a Python
//! with torch is found (ILR_TORCH_PYTHON, else `python3` if it imports torch), ilr's side of every
//! config of the script is written by examples/optim_step.rs (included here as a module) and the
//! script steps torch and compares every tensor; it must pass. Without torch the test says so and
//! passes.

#[path = "../examples/optim_step.rs"]
mod optim_step;

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pytorch/optim_parity.py");

/// A Python that imports torch: $ILR_TORCH_PYTHON (which must), else python3 if it does.
fn torch_python() -> Option<String> {
    if let Ok(p) = std::env::var("ILR_TORCH_PYTHON") {
        return Some(p);
    }
    let ok = Command::new("python3").args(["-c", "import torch, numpy"]).output();
    ok.is_ok_and(|o| o.status.success()).then(|| "python3".to_string())
}

#[test]
fn adamw_adam_and_lion_match_pytorch() {
    let Some(python) = torch_python() else {
        eprintln!(
            "skipped: no Python with torch and numpy (set ILR_TORCH_PYTHON to one, or make python3 import torch)"
        );
        return;
    };
    let run = |args: &[&str]| {
        let o = Command::new(&python).arg(SCRIPT).args(args).output().expect("running the parity script");
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        println!("{out}");
        assert!(o.status.success(), "optim_parity.py {args:?} failed:\n{out}\n{err}");
        out.into_owned()
    };
    let listed: serde_json::Value = serde_json::from_str(&run(&["--configs"])).unwrap();
    let steps = listed["steps"].as_u64().unwrap() as usize;
    let dir = tempfile::tempdir().unwrap();
    for (name, keys) in listed["configs"].as_object().unwrap() {
        let keys: Vec<String> =
            keys.as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        optim_step::run(&dir.path().join(name), steps, &keys).unwrap();
    }
    let out = run(&["--ilr", &dir.path().display().to_string()]);
    assert!(out.contains("all within") && !out.contains("FAIL"), "{out}");
    assert!(Path::new(SCRIPT).exists());
}
