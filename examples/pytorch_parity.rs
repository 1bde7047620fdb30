//! Export a run's newest checkpoint together with test inputs and ilr's logits on them, so that the
//! same weights can be checked in PyTorch (examples/pytorch_load.py):
//!
//!   cargo run --release --example pytorch_parity -- RUN_DIR [OUT.safetensors]
//!
//! Writes OUT (default RUN_DIR/parity.safetensors) with `images` [n, C, H, W] (normalized, as the
//! model sees them), `labels` [n] (i64) and `logits` [n, classes] (f32, eval mode: BN running
//! statistics), for the first n = min(batch size, test set) test images.

use anyhow::{bail, Context, Result};
use ilr::backend::cpu::Cpu;
use ilr::backend::Backend;
use ilr::checkpoint::{self, tensors::TensorWriter, Precision};
use ilr::data::Batcher;
use ilr::model::PreResNet;
use ilr::train::{load_datasets, TrainConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(run_dir) = args.first().map(PathBuf::from) else {
        bail!("usage: pytorch_parity RUN_DIR [OUT.safetensors]")
    };
    let out = args.get(1).map_or_else(|| run_dir.join("parity.safetensors"), PathBuf::from);
    let cfg = TrainConfig::from_toml_file(&run_dir.join("config.toml"))?;
    let data = load_datasets(&cfg.data)?;
    let be = Cpu::<f32>::new();
    let (tr, te) = (&data.train, &data.test);
    let batch = cfg.train.batch_size;
    let mut model = PreResNet::new(&be, &cfg.model, tr.channels, tr.height, tr.classes, batch)?;
    let (_, newest) = checkpoint::list(&checkpoint::dir_of(&run_dir))?
        .into_iter()
        .next()
        .context("the run has no checkpoint")?;
    let ck = checkpoint::load(&newest, &model.layout, cfg.optim.kind, &cfg.run_id())?;
    let to = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    be.upload(&to(&ck.params), &mut model.params)?;
    be.upload(&to(&ck.bn_state), &mut model.bn_state)?;

    let n = batch.min(te.len());
    let eval = Batcher::new(te, data.norm.clone(), 1, false, cfg.seed)?;
    let mut images = vec![0f32; batch * te.image_len()];
    let mut labels = vec![0u32; batch];
    eval.fill_eval(0, n, &mut images, &mut labels);
    model.set_batch(&be, &images, &labels)?;
    model.forward(&be, false);
    let logits = model.logits_host(&be)?;

    let mut w = TensorWriter::default();
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    w.floats(
        "images",
        Precision::F32,
        vec![n, te.channels, te.height, te.width],
        &f64s(&images[..n * te.image_len()]),
    );
    w.i64s("labels", vec![n], &labels[..n].iter().map(|&l| l as i64).collect::<Vec<_>>());
    w.floats("logits", Precision::F32, vec![n, tr.classes], &f64s(&logits[..n * tr.classes]));
    let meta = BTreeMap::from([("checkpoint".to_string(), newest.display().to_string())]);
    std::fs::write(&out, w.serialize(&meta)?)?;
    println!("wrote {} ({n} test images, checkpoint {})", out.display(), newest.display());
    Ok(())
}
