//! Training/evaluation batches as a pure function of (seed, step).
//!
//! steps_per_epoch S = ⌊len / B⌋ (drop_last). Step t belongs to epoch e = ⌊t / S⌋ and takes positions
//! [(t mod S)·B, (t mod S)·B + B) of the epoch permutation π_e, a Fisher–Yates shuffle drawn from
//! ChaCha8(seed, epoch-domain, stream e). Augmentation draws for step t come from
//! ChaCha8(seed, augment-domain, stream t), one [`Augment::draw`] per image in batch order. Resuming at
//! any step therefore reproduces the same batches bit for bit.
//! Output: images NCHW f32, (v/255 − mean_c)/std_c; labels u32.

use std::sync::{Arc, Mutex};

use rand::Rng;
use rayon::prelude::*;

use super::augment::{write_image, Augment, NormTable, PAD};
use super::dataset::{Dataset, Normalization};
use super::error::DataError;
use super::rng::{keyed_rng, DOMAIN_AUGMENT, DOMAIN_EPOCH_PERMUTATION};

/// Images per rayon task when filling a batch.
const IMAGES_PER_TASK: usize = 16;

pub struct Batcher<'a> {
    data: &'a Dataset,
    norm: Normalization,
    table: NormTable,
    batch: usize,
    augment: bool,
    seed: u64,
    /// Last epoch permutation computed: (epoch, π). A cache only; results do not depend on it.
    cache: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl<'a> Batcher<'a> {
    /// Errors if `batch_size` is 0 or larger than the dataset, if `norm` does not have one finite mean
    /// and one finite positive std per channel, or if the dataset's buffers disagree with its shape.
    pub fn new(
        data: &'a Dataset,
        norm: Normalization,
        batch_size: usize,
        augment: bool,
        seed: u64,
    ) -> Result<Batcher<'a>, DataError> {
        let fail = |reason: String| Err(DataError::Batcher { dataset: data.name.clone(), reason });
        if batch_size == 0 {
            return fail("batch size must be at least 1".into());
        }
        if data.len() < batch_size {
            return fail(format!(
                "{} images is fewer than one batch of {batch_size}; use a smaller batch size or more data",
                data.len()
            ));
        }
        if data.images.len() != data.len() * data.image_len() {
            return fail(format!(
                "{} image bytes for {} labels of {}×{}×{} images",
                data.images.len(),
                data.len(),
                data.channels,
                data.height,
                data.width
            ));
        }
        if data.len() > u32::MAX as usize {
            return fail(format!("{} images is more than 2^32 − 1", data.len()));
        }
        if norm.mean.len() != data.channels || norm.std.len() != data.channels {
            return fail(format!(
                "normalization has {} means and {} stds for {} channels",
                norm.mean.len(),
                norm.std.len(),
                data.channels
            ));
        }
        if norm.mean.iter().any(|m| !m.is_finite()) || norm.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return fail(format!(
                "normalization needs finite means and finite positive stds, got mean {:?} std {:?}",
                norm.mean, norm.std
            ));
        }
        let table = NormTable::new(&norm);
        Ok(Batcher { data, norm, table, batch: batch_size, augment, seed, cache: Mutex::new(None) })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        (self.data.len() / self.batch) as u64
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn dataset(&self) -> &'a Dataset {
        self.data
    }

    pub fn normalization(&self) -> &Normalization {
        &self.norm
    }

    /// f32 values per batch: B·C·H·W.
    pub fn batch_len(&self) -> usize {
        self.batch * self.data.image_len()
    }

    /// The permutation π_e of 0..len for epoch `epoch` (Fisher–Yates, ChaCha8(seed, epoch)).
    pub fn epoch_permutation(&self, epoch: u64) -> Vec<u32> {
        let mut perm: Vec<u32> = (0..self.data.len() as u32).collect();
        let mut rng = keyed_rng(self.seed, DOMAIN_EPOCH_PERMUTATION, epoch);
        for i in (1..perm.len()).rev() {
            let j = rng.gen_range(0..=i as u32) as usize;
            perm.swap(i, j);
        }
        perm
    }

    fn cached_permutation(&self, epoch: u64) -> Arc<Vec<u32>> {
        // A poisoned lock only means another thread panicked mid-update; the cache is then rebuilt.
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some((e, p)) if *e == epoch => p.clone(),
            _ => {
                let p = Arc::new(self.epoch_permutation(epoch));
                *guard = Some((epoch, p.clone()));
                p
            }
        }
    }

    /// Dataset indices of the batch of global step `step`.
    pub fn batch_indices(&self, step: u64) -> Vec<u32> {
        let spe = self.steps_per_epoch();
        let perm = self.cached_permutation(step / spe);
        let start = (step % spe) as usize * self.batch;
        perm[start..start + self.batch].to_vec()
    }

    /// Augmentations of the batch of step `step` (identity for all when augmentation is off).
    pub fn batch_augments(&self, step: u64) -> Vec<Augment> {
        if !self.augment {
            return vec![Augment::NONE; self.batch];
        }
        let mut rng = keyed_rng(self.seed, DOMAIN_AUGMENT, step);
        (0..self.batch).map(|_| Augment::draw(&mut rng, PAD)).collect()
    }

    /// Fills the training batch of global step `step`. Panics unless `images.len() == batch_len()` and
    /// `labels.len() == batch_size()`.
    pub fn fill(&self, step: u64, images: &mut [f32], labels: &mut [u32]) {
        assert_eq!(images.len(), self.batch_len(), "Batcher::fill: images buffer length");
        assert_eq!(labels.len(), self.batch, "Batcher::fill: labels buffer length");
        let idx = self.batch_indices(step);
        let augs = self.batch_augments(step);
        for (l, &i) in labels.iter_mut().zip(&idx) {
            *l = self.data.labels[i as usize];
        }
        self.write_images(&idx, &augs, images);
    }

    /// Fills `count` evaluation images `start..start+count` in dataset order, without augmentation, into
    /// the first `count` slots of the buffers. Panics if the range exceeds the dataset or the buffers
    /// are too short.
    pub fn fill_eval(&self, start: usize, count: usize, images: &mut [f32], labels: &mut [u32]) {
        let n = self.data.image_len();
        assert!(
            start + count <= self.data.len(),
            "Batcher::fill_eval: {start}+{count} > {}",
            self.data.len()
        );
        assert!(images.len() >= count * n && labels.len() >= count, "Batcher::fill_eval: buffers too short");
        labels[..count].copy_from_slice(&self.data.labels[start..start + count]);
        let idx: Vec<u32> = (start as u32..(start + count) as u32).collect();
        self.write_images(&idx, &vec![Augment::NONE; count], &mut images[..count * n]);
    }

    fn write_images(&self, idx: &[u32], augs: &[Augment], images: &mut [f32]) {
        let d = self.data;
        let n = d.image_len();
        images.par_chunks_mut(n).with_min_len(IMAGES_PER_TASK).zip(idx).zip(augs).for_each(
            |((out, &i), &a)| {
                write_image(d.image(i as usize), d.channels, d.height, d.width, &self.table, a, out)
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` random-content 3×8×6 images with label = index mod 10.
    fn data(n: usize) -> Dataset {
        let mut rng = keyed_rng(99, 0, 0);
        let (h, w) = (8, 6);
        Dataset {
            images: (0..n * 3 * h * w).map(|_| rng.gen()).collect(),
            labels: (0..n as u32).map(|i| i % 10).collect(),
            channels: 3,
            height: h,
            width: w,
            classes: 10,
            name: "test".into(),
            files: vec![],
        }
    }

    fn fill(b: &Batcher, step: u64) -> (Vec<f32>, Vec<u32>) {
        let mut im = vec![0.0; b.batch_len()];
        let mut lb = vec![0; b.batch_size()];
        b.fill(step, &mut im, &mut lb);
        (im, lb)
    }

    #[test]
    fn construction_errors() {
        let d = data(10);
        let n = Normalization::cifar10();
        assert!(matches!(Batcher::new(&d, n.clone(), 11, true, 0), Err(DataError::Batcher { .. })));
        assert!(Batcher::new(&d, n.clone(), 0, true, 0).is_err());
        assert!(
            Batcher::new(&d, Normalization { mean: vec![0.5; 2], std: vec![1.0; 2] }, 5, true, 0).is_err()
        );
        assert!(
            Batcher::new(&d, Normalization { mean: vec![0.5; 3], std: vec![0.0; 3] }, 5, true, 0).is_err()
        );
        let e = Batcher::new(&d, n.clone(), 11, true, 0).err().unwrap().to_string();
        assert!(e.contains("10 images") && e.contains("11"), "{e}");
        let b = Batcher::new(&d, n, 10, true, 0).unwrap();
        assert_eq!(b.steps_per_epoch(), 1);
    }

    #[test]
    fn no_augment_reproduces_normalized_pixels() {
        let d = data(20);
        let norm = Normalization::from_dataset(&d);
        let b = Batcher::new(&d, norm.clone(), 4, false, 5).unwrap();
        for step in [0, 3, 7, 12] {
            let (im, lb) = fill(&b, step);
            let idx = b.batch_indices(step);
            for (k, &i) in idx.iter().enumerate() {
                assert_eq!(lb[k], d.labels[i as usize]);
                let src = d.image(i as usize);
                let out = &im[k * d.image_len()..(k + 1) * d.image_len()];
                for (p, (&o, &v)) in out.iter().zip(src).enumerate() {
                    let c = p / (d.height * d.width);
                    assert_eq!(o, (v as f32 / 255.0 - norm.mean[c]) / norm.std[c]);
                }
            }
        }
    }

    #[test]
    fn augmented_batch_matches_its_draws() {
        let d = data(20);
        let b = Batcher::new(&d, Normalization::cifar10(), 8, true, 5).unwrap();
        let (im, _) = fill(&b, 4);
        let table = NormTable::new(b.normalization());
        let (idx, augs) = (b.batch_indices(4), b.batch_augments(4));
        assert!(augs.iter().any(|a| a.flip) && augs.iter().any(|a| *a != Augment::NONE));
        let mut one = vec![0.0; d.image_len()];
        for k in 0..8 {
            write_image(d.image(idx[k] as usize), 3, 8, 6, &table, augs[k], &mut one);
            assert_eq!(&im[k * one.len()..(k + 1) * one.len()], &one[..]);
        }
    }

    #[test]
    fn deterministic_in_seed_and_step() {
        let d = data(50);
        let b1 = Batcher::new(&d, Normalization::cifar10(), 16, true, 7).unwrap();
        let b2 = Batcher::new(&d, Normalization::cifar10(), 16, true, 7).unwrap();
        let b3 = Batcher::new(&d, Normalization::cifar10(), 16, true, 8).unwrap();
        // Out-of-order access (as after resuming) gives the same bits as a fresh batcher.
        let a = fill(&b1, 5);
        let _ = fill(&b1, 100);
        let again = fill(&b1, 5);
        let other = fill(&b2, 5);
        let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.0), bits(&again.0));
        assert_eq!(bits(&a.0), bits(&other.0));
        assert_eq!(a.1, other.1);
        assert_ne!(a.0, fill(&b1, 6).0);
        assert_ne!(a.0, fill(&b3, 5).0);
        // Same epoch position in another epoch: different images/augmentation.
        assert_ne!(a.0, fill(&b1, 5 + b1.steps_per_epoch()).0);
    }

    #[test]
    fn each_epoch_visits_every_index_once() {
        let d = data(103);
        let b = Batcher::new(&d, Normalization::cifar10(), 10, true, 3).unwrap();
        let spe = b.steps_per_epoch();
        assert_eq!(spe, 10);
        let mut perms = Vec::new();
        for e in 0..3u64 {
            let mut seen = vec![0u32; d.len()];
            for s in e * spe..(e + 1) * spe {
                for i in b.batch_indices(s) {
                    seen[i as usize] += 1;
                }
            }
            // drop_last: 100 of 103 visited, each exactly once.
            assert!(seen.iter().all(|&c| c <= 1));
            assert_eq!(seen.iter().sum::<u32>(), 100);
            let mut p = b.epoch_permutation(e);
            perms.push(p.clone());
            p.sort_unstable();
            assert_eq!(p, (0..103).collect::<Vec<u32>>());
        }
        assert_ne!(perms[0], perms[1]);
        assert_ne!(perms[1], perms[2]);
    }

    #[test]
    fn eval_in_order() {
        let d = data(13);
        let norm = Normalization::cifar10();
        let b = Batcher::new(&d, norm.clone(), 5, true, 3).unwrap();
        let mut im = vec![f32::NAN; b.batch_len()];
        let mut lb = vec![u32::MAX; 5];
        b.fill_eval(10, 3, &mut im, &mut lb);
        assert_eq!(&lb[..3], &d.labels[10..13]);
        assert_eq!(lb[3], u32::MAX);
        for k in 0..3 {
            let src = d.image(10 + k);
            for (p, &v) in src.iter().enumerate() {
                let c = p / 48;
                assert_eq!(im[k * 144 + p], norm.apply(c, v));
            }
        }
        assert!(im[3 * 144].is_nan());
    }
}
