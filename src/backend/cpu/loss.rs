//! Softmax cross-entropy over [n][classes] logits, per sample in f64:
//! with M = max z and S = Σ_j exp(z_j − M): loss = (M − z_y) + ln S and softmax_j = exp(z_j − M)/S.
//! n·classes is tiny (the batch times the class count), so this runs on one thread.

use super::wide;
use crate::backend::{LossSums, Real};
use anyhow::{bail, ensure, Result};

/// One sample's softmax normalizer and arg-max (ties go to the lowest index).
struct Softmax {
    /// M = max z.
    max: f64,
    /// S = Σ_j exp(z_j − M) ∈ [1, classes].
    sum: f64,
    argmax: usize,
}

fn softmax<T: Real>(z: &[T]) -> Softmax {
    let mut best = 0;
    for (j, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = j;
        }
    }
    let max = wide(z[best]);
    let sum: f64 = z.iter().map(|&v| (wide(v) - max).exp()).sum();
    Softmax { max, sum, argmax: best }
}

/// Checks the shapes and that each of the first n labels names a class.
fn check(n: usize, classes: usize, logits: usize, labels: &[u32]) -> Result<()> {
    ensure!(logits == n * classes, "cross-entropy: {logits} logits for {n} samples × {classes} classes");
    ensure!(labels.len() >= n, "cross-entropy: {} labels for {n} samples", labels.len());
    if let Some((i, &l)) = labels[..n].iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        bail!("cross-entropy: label {l} of sample {i} is out of range for {classes} classes");
    }
    Ok(())
}

/// Calls `f(sample, softmax)` for each sample and returns the loss sum and correct count.
fn for_each_sample<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    mut f: impl FnMut(usize, &Softmax),
) -> Result<LossSums> {
    check(n, classes, logits.len(), labels)?;
    let mut sums = LossSums::default();
    for (i, (z, &label)) in logits.chunks(classes.max(1)).zip(labels).enumerate() {
        let sm = softmax(z);
        sums.loss_sum += (sm.max - wide(z[label as usize])) + sm.sum.ln();
        sums.correct += usize::from(sm.argmax == label as usize);
        f(i, &sm);
    }
    Ok(sums)
}

/// Training: also writes dlogits = (softmax − onehot)/n (overwritten).
pub(crate) fn train<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    dlogits: &mut [T],
) -> Result<LossSums> {
    ensure!(
        dlogits.len() == logits.len(),
        "cross-entropy: dlogits length {} ≠ {}",
        dlogits.len(),
        logits.len()
    );
    let inv_n = 1.0 / n as f64;
    for_each_sample(n, classes, logits, labels, |i, sm| {
        let row = i * classes..(i + 1) * classes;
        for (j, (d, z)) in dlogits[row.clone()].iter_mut().zip(&logits[row]).enumerate() {
            let onehot = if j == labels[i] as usize { 1.0 } else { 0.0 };
            *d = T::from_f64(((wide(*z) - sm.max).exp() / sm.sum - onehot) * inv_n);
        }
    })
}

/// Evaluation: also writes each sample's arg-max into `predictions` (length n).
pub(crate) fn eval<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    predictions: &mut [u32],
) -> Result<LossSums> {
    ensure!(predictions.len() == n, "cross-entropy: {} predictions for {n} samples", predictions.len());
    for_each_sample(n, classes, logits, labels, |i, sm| predictions[i] = sm.argmax as u32)
}
