//! Checkpoints in-process: resuming gives records bit-identical to an uninterrupted run, corrupt
//! checkpoints are caught by their checksum and skipped, and the weights carry PyTorch's names.

use ilr::backend::cpu::Cpu;
use ilr::checkpoint;
use ilr::train::{self, load_datasets, Progress, RunDir, TrainConfig, TrainOptions};
use std::path::Path;

fn config() -> TrainConfig {
    TrainConfig::from_toml_str(
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
lr = 0.2
lambda_e = 5e-3
momentum = 0.9
[train]
steps = 120
batch_size = 16
stats_every = 5
eval_every = 20
"#,
    )
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

#[test]
fn resume_is_bit_identical_and_corrupt_checkpoints_fall_back() {
    let cfg = config();
    let data = load_datasets(&cfg.data).unwrap();
    let be = Cpu::<f32>::new();
    let tmp = tempfile::tempdir().unwrap();

    // Reference: plain train(), no checkpoints.
    let mut a = RunDir::create(&tmp.path().join("a"), &cfg).unwrap();
    train::train(&be, &cfg, &data, Some(&mut a), Progress::Quiet).unwrap();
    let reference = files(&a.path);
    let ref_summary = summary_without_wall(&a.path);

    // With checkpoints every 25 steps: the same records; checkpoints at 100 and 120 (end) kept.
    let opts = TrainOptions { checkpoint_every: 25, resume: true, ..TrainOptions::default() };
    let root_b = tmp.path().join("b");
    let run = |expect: &str| {
        let mut b = RunDir::open(&root_b, &cfg).unwrap();
        train::train_with(&be, &cfg, &data, Some(&mut b), Progress::Quiet, &opts).unwrap();
        assert_eq!(files(&b.path), reference, "{expect}: records differ from the uninterrupted run");
        assert_eq!(summary_without_wall(&b.path), ref_summary, "{expect}: summary differs");
        b.path
    };
    let dir = run("with checkpoints");
    let cdir = checkpoint::dir_of(&dir);
    let steps: Vec<u64> = checkpoint::list(&cdir).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![120, 100], "the newest two are kept");

    // A crash after step 100's checkpoint: the final one is gone, the records ran on, and the
    // last line was cut mid-write.
    let crash = |dir: &Path| {
        std::fs::remove_file(dir.join("summary.json")).unwrap();
        let mut m = std::fs::read(dir.join("metrics.jsonl")).unwrap();
        m.extend_from_slice(b"{\"step\": 121, \"epoch\"");
        std::fs::write(dir.join("metrics.jsonl"), m).unwrap();
    };
    std::fs::remove_dir_all(checkpoint::step_dir(&cdir, 120)).unwrap();
    crash(&dir);
    run("resumed from step 100");

    // The newest checkpoint corrupt: its checksum catches it, and step 100 is used.
    crash(&dir);
    let model = checkpoint::step_dir(&cdir, 120).join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let k = bytes.len() - 7;
    bytes[k] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();
    let layout = ilr::model::Layout::new(&cfg.model, 3, 8, 10);
    let err = checkpoint::load(&checkpoint::step_dir(&cdir, 120), &layout, &cfg.run_id()).unwrap_err();
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

#[test]
fn weights_carry_pytorch_state_dict_names() {
    let cfg = config();
    let data = load_datasets(&cfg.data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = RunDir::open(tmp.path(), &cfg).unwrap();
    let opts = TrainOptions { checkpoint_every: 60, resume: false, ..TrainOptions::default() };
    train::train_with(&Cpu::<f32>::new(), &cfg, &data, Some(&mut d), Progress::Quiet, &opts).unwrap();
    let bytes =
        std::fs::read(checkpoint::step_dir(&checkpoint::dir_of(&d.path), 120).join("model.safetensors"))
            .unwrap();
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
