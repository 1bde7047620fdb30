//! Checkpoints in-process: resuming gives records bit-identical to an uninterrupted run (with SGD,
//! AdamW and Lion, whose state m, v and t is saved), corrupt checkpoints are caught by their
//! checksum and skipped, and the weights and the optimizer state carry PyTorch's names.

use ilr::backend::cpu::Cpu;
use ilr::checkpoint;
use ilr::train::{self, load_datasets, Progress, RunDir, TrainConfig, TrainOptions};
use std::path::Path;

/// SGD with momentum.
const SGD: &str = "lr = 0.2\nlambda_e = 5e-3\nmomentum = 0.9";

/// The test run with `optim` as its [optim] section.
fn config(optim: &str) -> TrainConfig {
    TrainConfig::from_toml_str(&format!(
        r#"
[data]
augment = true
[data.synthetic]
train = 256
test = 64
size = 8
[model]
depth = 8
width = 0.25
[optim]
{optim}
[train]
steps = 120
batch_size = 16
stats_every = 5
eval_every = 20
"#
    ))
    .unwrap()
}

fn files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (std::fs::read(dir.join("metrics.jsonl")).unwrap(), std::fs::read(dir.join("predictions.bin")).unwrap())
}

fn summary_without_wall(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for k in ["wall_time_s", "steps_per_s"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

/// A crash after step 100's checkpoint: the summary is gone, the records ran on, and the last
/// line was cut mid-write.
fn crash(dir: &Path) {
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let mut m = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    m.extend_from_slice(b"{\"step\": 121, \"epoch\"");
    std::fs::write(dir.join("metrics.jsonl"), m).unwrap();
}

/// Trains `cfg` under `root` without checkpoints (the reference), then under `root`/b with
/// checkpoints every 25 steps, then stops it after step 100's checkpoint ([`crash`], the final
/// checkpoint removed) and resumes it: each time metrics.jsonl, predictions.bin and the summary
/// (but its wall times) must be those of the reference. Returns the checkpointed run's directory
/// and `run`, which trains it again (resuming) and checks it the same way.
fn assert_resume_is_bit_identical<'a>(
    cfg: &'a TrainConfig,
    root: &Path,
    data: &'a train::Datasets,
    be: &'a Cpu<f32>,
) -> (std::path::PathBuf, impl Fn(&str) + 'a) {
    // Reference: plain train(), no checkpoints.
    let mut a = RunDir::create(&root.join("a"), cfg).unwrap();
    train::train(be, cfg, data, Some(&mut a), Progress::Quiet).unwrap();
    let reference = files(&a.path);
    let ref_summary = summary_without_wall(&a.path);

    // With checkpoints every 25 steps: the same records; checkpoints at 100 and 120 (end) kept.
    let opts = TrainOptions { checkpoint_every: 25, resume: true, ..TrainOptions::default() };
    let root_b = root.join("b");
    let run = move |expect: &str| {
        let mut b = RunDir::open(&root_b, cfg).unwrap();
        train::train_with(be, cfg, data, Some(&mut b), Progress::Quiet, &opts).unwrap();
        let kind = cfg.optim.kind;
        assert_eq!(files(&b.path), reference, "{kind} {expect}: records differ from the uninterrupted run");
        assert_eq!(summary_without_wall(&b.path), ref_summary, "{kind} {expect}: summary differs");
    };
    run("with checkpoints");
    let dir = root.join("b").join(cfg.run_id());
    let cdir = checkpoint::dir_of(&dir);
    let steps: Vec<u64> = checkpoint::list(&cdir).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![120, 100], "the newest two are kept");
    std::fs::remove_dir_all(checkpoint::step_dir(&cdir, 120)).unwrap();
    crash(&dir);
    run("resumed from step 100");
    (dir, run)
}

#[test]
fn resume_is_bit_identical_and_corrupt_checkpoints_fall_back() {
    let cfg = config(SGD);
    let data = load_datasets(&cfg.data).unwrap();
    let be = Cpu::<f32>::new();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, run) = assert_resume_is_bit_identical(&cfg, tmp.path(), &data, &be);
    let cdir = checkpoint::dir_of(&dir);

    // The newest checkpoint corrupt: its checksum catches it, and step 100 is used.
    crash(&dir);
    let model = checkpoint::step_dir(&cdir, 120).join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let k = bytes.len() - 7;
    bytes[k] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();
    let layout = ilr::model::Layout::new(&cfg.model, 3, 8, 10);
    let err = checkpoint::load(&checkpoint::step_dir(&cdir, 120), &layout, cfg.optim.kind, &cfg.run_id())
        .unwrap_err();
    assert!(format!("{err:#}").contains("checksum mismatch in model.safetensors"), "{err:#}");
    run("fell back to step 100");

    // Both corrupt (and an incomplete one): from scratch, still identical.
    crash(&dir);
    for (_, p) in checkpoint::list(&cdir).unwrap() {
        std::fs::write(p.join("state.safetensors"), b"garbage").unwrap();
    }
    std::fs::create_dir_all(checkpoint::step_dir(&cdir, 110)).unwrap();
    run("restarted from scratch");
}

/// AdamW and Lion resume bit-identically too: their state (m, v and the step count t of the bias
/// corrections; m) is in the checkpoint. Were t not restored, the resumed AdamW steps would use
/// the bias corrections of step 1.
#[test]
fn adamw_and_lion_resume_bit_identically() {
    for optim in ["kind = \"adamw\"\nlr = 2e-3\nwd = 0.5", "kind = \"lion\"\nlr = 2e-4\nwd = 2.0"] {
        let cfg = config(optim);
        let data = load_datasets(&cfg.data).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let be = Cpu::<f32>::new();
        let _resumable = assert_resume_is_bit_identical(&cfg, tmp.path(), &data, &be);
    }
}

/// Trains the run with `optim` and a checkpoint every 60 steps, and returns `file` of the
/// checkpoint at `step`.
fn checkpoint_file(optim: &str, step: u64, file: &str) -> Vec<u8> {
    let cfg = config(optim);
    let data = load_datasets(&cfg.data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = RunDir::open(tmp.path(), &cfg).unwrap();
    let opts = TrainOptions { checkpoint_every: 60, resume: false, ..TrainOptions::default() };
    train::train_with(&Cpu::<f32>::new(), &cfg, &data, Some(&mut d), Progress::Quiet, &opts).unwrap();
    std::fs::read(checkpoint::step_dir(&checkpoint::dir_of(&d.path), step).join(file)).unwrap()
}

/// The optimizer state's tensor names in state.safetensors: PyTorch's state keys, one per trained
/// tensor (`exp_avg.<param>`, `exp_avg_sq.<param>`, `step.<param>` for AdamW; `momentum_buffer.<param>`
/// for SGD).
#[test]
fn optimizer_state_carries_pytorch_names() {
    for (optim, want, unwanted) in [
        (
            "kind = \"adamw\"\nlr = 2e-3\nwd = 0.5",
            &["exp_avg.", "exp_avg_sq.", "step."][..],
            "momentum_buffer.",
        ),
        (SGD, &["momentum_buffer."][..], "exp_avg."),
    ] {
        let bytes = checkpoint_file(optim, 60, "state.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<&String> = st.names();
        for prefix in want {
            let param = format!("{prefix}layer1.0.conv1.weight");
            assert!(names.iter().any(|n| **n == param), "{param} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with(unwanted)), "{unwanted} in {names:?}");
        if let Ok(step) = st.tensor("step.layer1.0.conv1.weight") {
            assert_eq!((step.dtype(), step.data()), (safetensors::Dtype::I64, &60i64.to_le_bytes()[..]));
        }
    }
}

#[test]
fn weights_carry_pytorch_state_dict_names() {
    let bytes = checkpoint_file(SGD, 120, "model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names().into_iter().map(|s| s.as_str()).collect();
    names.sort();
    for want in [
        "conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.bn1.bias",
        "layer1.0.bn1.running_mean",
        "layer1.0.bn1.running_var",
        "layer1.0.bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer3.0.conv2.weight",
        "bn.running_var",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let fc = st.tensor("fc.weight").unwrap();
    assert_eq!((fc.dtype(), fc.shape()), (safetensors::Dtype::F32, &[10usize, 16][..]));
    let conv = st.tensor("layer2.0.conv1.weight").unwrap();
    assert_eq!(conv.shape(), &[8, 4, 3, 3], "PyTorch's [out, in, kh, kw]");
    let nbt = st.tensor("bn.num_batches_tracked").unwrap();
    assert_eq!(
        (nbt.dtype(), nbt.shape(), nbt.data()),
        (safetensors::Dtype::I64, &[][..], &120i64.to_le_bytes()[..])
    );
    let var = st.tensor("layer1.0.bn2.running_var").unwrap();
    let v: Vec<f32> = var.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "running variances are positive: {v:?}");
}
