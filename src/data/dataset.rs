//! In-memory image dataset (u8, CHW per image) and per-channel normalization constants.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Images stored contiguously: image `i` is `images[i*C*H*W .. (i+1)*C*H*W]`, laid out CHW
/// (channel planes, each row-major H×W), one byte per pixel value 0..=255.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// E.g. "cifar10-train", "synthetic-test".
    pub name: String,
    /// Files the records were read from, in order (empty for generated data). For CIFAR-10 training
    /// data, fewer than 5 entries means only some of data_batch_1..5.bin were present.
    pub files: Vec<PathBuf>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: C·H·W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// CHW bytes of image `i` (panics if `i >= len()`).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Number of images per class (labels ≥ `classes` are ignored).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// Per-channel mean and standard deviation in units of pixel/255; a pixel v of channel c is
/// normalized as `(v/255 − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and population standard deviation (divide by N) of each channel over all images and
    /// pixels, accumulated in f64. An empty dataset gives mean 0, std 1.
    pub fn from_dataset(d: &Dataset) -> Normalization {
        let plane = d.height * d.width;
        let mut sum = vec![0f64; d.channels];
        let mut sum_sq = vec![0f64; d.channels];
        // Integer sums per image are exact (3072·255² fits easily in u64), then folded into f64.
        for img in d.images.chunks_exact(d.image_len().max(1)) {
            for c in 0..d.channels {
                let (mut s, mut s2) = (0u64, 0u64);
                for &v in &img[c * plane..(c + 1) * plane] {
                    s += v as u64;
                    s2 += (v as u64) * (v as u64);
                }
                sum[c] += s as f64;
                sum_sq[c] += s2 as f64;
            }
        }
        let n = (d.len() * plane) as f64;
        if n == 0.0 {
            return Normalization { mean: vec![0.0; d.channels], std: vec![1.0; d.channels] };
        }
        let mut mean = Vec::with_capacity(d.channels);
        let mut std = Vec::with_capacity(d.channels);
        for c in 0..d.channels {
            let m = sum[c] / n / 255.0;
            let var = (sum_sq[c] / n / (255.0 * 255.0) - m * m).max(0.0);
            mean.push(m as f32);
            std.push(var.sqrt() as f32);
        }
        Normalization { mean, std }
    }

    /// The standard CIFAR-10 training-set constants.
    pub fn cifar10() -> Normalization {
        Normalization { mean: vec![0.4914, 0.4822, 0.4465], std: vec![0.2470, 0.2435, 0.2616] }
    }

    /// The standard CIFAR-100 training-set constants.
    pub fn cifar100() -> Normalization {
        Normalization { mean: vec![0.5071, 0.4865, 0.4409], std: vec![0.2673, 0.2564, 0.2762] }
    }

    /// Normalized value of pixel byte `v` in channel `c`: (v/255 − mean)/std, computed in f32.
    #[inline]
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        (v as f32 / 255.0 - self.mean[c]) / self.std[c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 2 images, 3×1×2: channel 0 all 0/255 mixes, channel 1 constant 51, channel 2 constant 255.
        Dataset {
            images: vec![0, 255, 51, 51, 255, 255, 255, 0, 51, 51, 255, 255],
            labels: vec![0, 1],
            channels: 3,
            height: 1,
            width: 2,
            classes: 2,
            name: "tiny".into(),
            files: vec![],
        }
    }

    #[test]
    fn accessors() {
        let d = tiny();
        assert_eq!(d.len(), 2);
        assert!(!d.is_empty());
        assert_eq!(d.image_len(), 6);
        assert_eq!(d.image(1), &[255, 0, 51, 51, 255, 255]);
        assert_eq!(d.class_counts(), vec![1, 1]);
    }

    #[test]
    fn normalization_from_dataset() {
        let n = Normalization::from_dataset(&tiny());
        assert!((n.mean[0] - 0.5).abs() < 1e-6 && (n.std[0] - 0.5).abs() < 1e-6);
        assert!((n.mean[1] - 0.2).abs() < 1e-6 && n.std[1].abs() < 1e-6);
        assert!((n.mean[2] - 1.0).abs() < 1e-6 && n.std[2].abs() < 1e-6);
        assert_eq!(n.apply(0, 255), 1.0);
        assert_eq!(n.apply(0, 0), -1.0);
        let c = Normalization::cifar10();
        assert_eq!(c.mean, vec![0.4914, 0.4822, 0.4465]);
        assert_eq!(c.std, vec![0.2470, 0.2435, 0.2616]);
    }
}
