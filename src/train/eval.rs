//! Host staging of one batch, and the test-set evaluation.

use crate::backend::{Backend, Real};
use crate::data::Batcher;
use crate::model::PreResNet;
use anyhow::Result;
use num_traits::Zero;

/// Host staging for one batch: images as the batcher writes them (f32), converted to the
/// backend's element type on upload.
pub(super) struct HostBatch<B: Backend> {
    pub images: Vec<f32>,
    elems: Vec<B::Elem>,
    pub labels: Vec<u32>,
}

impl<B: Backend> HostBatch<B> {
    pub fn new(len: usize, batch: usize) -> Self {
        Self { images: vec![0.0; len], elems: vec![B::Elem::zero(); len], labels: vec![0; batch] }
    }

    pub fn upload(&mut self, be: &B, model: &mut PreResNet<B>) -> Result<()> {
        for (e, &v) in self.elems.iter_mut().zip(&self.images) {
            *e = B::Elem::from_f64(v as f64);
        }
        model.set_batch(be, &self.elems, &self.labels)
    }
}

/// One evaluation on the whole test set.
pub(super) struct Evaluation {
    pub loss: f64,
    pub acc: f64,
    /// The arg-max class of every test sample, in order (clamped to 255).
    pub classes: Vec<u8>,
}

/// Test loss, accuracy and the arg-max class of every test sample (in order), in chunks of the
/// model's batch size.
pub(super) fn evaluate<B: Backend>(
    be: &B,
    model: &mut PreResNet<B>,
    batcher: &Batcher,
    host: &mut HostBatch<B>,
) -> Result<Evaluation> {
    let total = batcher.dataset().len();
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut predictions = vec![0u32; model.batch];
    let mut classes = Vec::with_capacity(total);
    let mut start = 0;
    while start < total {
        let count = model.batch.min(total - start);
        batcher.fill_eval(start, count, &mut host.images, &mut host.labels);
        host.upload(be, model)?;
        model.forward(be, false);
        let s = model.eval_loss(be, count, &mut predictions[..count])?;
        loss += s.loss_sum;
        correct += s.correct;
        classes.extend(predictions[..count].iter().map(|&p| p.min(255) as u8));
        start += count;
    }
    Ok(Evaluation { loss: loss / total as f64, acc: correct as f64 / total as f64, classes })
}
