//! Random crop with zero padding + horizontal flip, fused with normalization (u8 CHW → f32 CHW).
//!
//! Semantics of torchvision `RandomCrop(H×W, padding=PAD)`, `RandomHorizontalFlip(0.5)`, `Normalize`:
//! the raw image is zero-padded (black) by PAD on every side, an H×W window at offset (PAD+dy, PAD+dx),
//! dy, dx ∈ [−PAD, PAD], is cropped, optionally mirrored, then normalized. Hence
//!   out[c, y, x] = N_c(img[c, y + dy, x' + dx]),  x' = W−1−x if flip else x,
//! with img = 0 outside the image and N_c(v) = (v/255 − mean_c)/std_c.

use rand::Rng;

use super::dataset::Normalization;

/// Padding of the random crop, in pixels.
pub const PAD: usize = 4;

/// One image's augmentation: crop shift (dy, dx) relative to the unpadded image, and mirror flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    pub dy: i32,
    pub dx: i32,
    pub flip: bool,
}

impl Augment {
    /// Identity (no shift, no flip).
    pub const NONE: Augment = Augment { dy: 0, dx: 0, flip: false };

    /// Draws dy, dx uniformly from [−pad, pad] (in that order), then flip with p = 0.5.
    pub fn draw<R: Rng + ?Sized>(rng: &mut R, pad: usize) -> Augment {
        let p = pad as i32;
        let dy = rng.gen_range(-p..=p);
        let dx = rng.gen_range(-p..=p);
        let flip = rng.gen_bool(0.5);
        Augment { dy, dx, flip }
    }
}

/// Normalization as a lookup table: `table[c*256 + v]` = N_c(v), computed exactly as
/// [`Normalization::apply`] so results are bit-identical to it.
#[derive(Debug, Clone)]
pub struct NormTable {
    table: Vec<f32>,
}

impl NormTable {
    pub fn new(norm: &Normalization) -> NormTable {
        let channels = norm.mean.len().min(norm.std.len());
        let mut table = Vec::with_capacity(channels * 256);
        for c in 0..channels {
            table.extend((0..=255u8).map(|v| norm.apply(c, v)));
        }
        NormTable { table }
    }

    /// The 256 normalized values of channel `c`.
    #[inline]
    pub fn channel(&self, c: usize) -> &[f32] {
        &self.table[c * 256..(c + 1) * 256]
    }
}

/// Writes image `src` (CHW u8, `channels`×`h`×`w`) into `out` (same shape, f32) with augmentation `aug`.
/// Padding pixels get N_c(0) = −mean_c/std_c.
pub fn write_image(
    src: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    table: &NormTable,
    aug: Augment,
    out: &mut [f32],
) {
    let plane = h * w;
    debug_assert!(src.len() == channels * plane && out.len() == channels * plane);
    let (hi, wi) = (h as i64, w as i64);
    let (dy, dx) = (aug.dy as i64, aug.dx as i64);
    // Output columns x whose source column lies inside the image:
    //   no flip: sx = x + dx        ∈ [0, w)  ⇔ x ∈ [−dx, w − dx)
    //   flip:    sx = w − 1 − x + dx ∈ [0, w) ⇔ x ∈ [dx, w + dx)
    let (x0, x1) = if aug.flip { (dx, wi + dx) } else { (-dx, wi - dx) };
    let (x0, x1) = (x0.clamp(0, wi) as usize, x1.clamp(0, wi) as usize);
    for c in 0..channels {
        let lut = table.channel(c);
        let zero = lut[0];
        let src_plane = &src[c * plane..(c + 1) * plane];
        for (y, row) in out[c * plane..(c + 1) * plane].chunks_exact_mut(w).enumerate() {
            let sy = y as i64 + dy;
            if sy < 0 || sy >= hi {
                row.fill(zero);
                continue;
            }
            let src_row = &src_plane[sy as usize * w..(sy as usize + 1) * w];
            row[..x0].fill(zero);
            row[x1..].fill(zero);
            if x0 < x1 {
                if aug.flip {
                    // sx = w − 1 − x + dx, decreasing in x.
                    let s_hi = (wi - 1 - x0 as i64 + dx) as usize;
                    let s_lo = (wi - 1 - (x1 as i64 - 1) + dx) as usize;
                    for (o, &v) in row[x0..x1].iter_mut().zip(src_row[s_lo..=s_hi].iter().rev()) {
                        *o = lut[v as usize];
                    }
                } else {
                    let s0 = (x0 as i64 + dx) as usize;
                    for (o, &v) in row[x0..x1].iter_mut().zip(&src_row[s0..s0 + (x1 - x0)]) {
                        *o = lut[v as usize];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Reference: direct per-pixel formula.
    fn reference(src: &[u8], c_n: usize, h: usize, w: usize, norm: &Normalization, a: Augment) -> Vec<f32> {
        let mut out = vec![0.0; c_n * h * w];
        for c in 0..c_n {
            for y in 0..h {
                for x in 0..w {
                    let xx = if a.flip { w - 1 - x } else { x } as i32;
                    let (sy, sx) = (y as i32 + a.dy, xx + a.dx);
                    let v = if sy < 0 || sx < 0 || sy >= h as i32 || sx >= w as i32 {
                        0
                    } else {
                        src[c * h * w + sy as usize * w + sx as usize]
                    };
                    out[c * h * w + y * w + x] = norm.apply(c, v);
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_for_all_shifts() {
        let norm = Normalization::cifar10();
        let table = NormTable::new(&norm);
        let (h, w) = (6, 5);
        let src: Vec<u8> = (0..3 * h * w).map(|i| (i * 37 % 251 + 1) as u8).collect();
        let mut out = vec![0.0; 3 * h * w];
        for dy in -4..=4 {
            for dx in -4..=4 {
                for flip in [false, true] {
                    let a = Augment { dy, dx, flip };
                    write_image(&src, 3, h, w, &table, a, &mut out);
                    assert_eq!(out, reference(&src, 3, h, w, &norm, a), "{a:?}");
                }
            }
        }
    }

    #[test]
    fn crop_offset_and_padding() {
        let norm = Normalization::cifar10();
        let table = NormTable::new(&norm);
        // 4×4 single bright pixel at (1, 2) in channel 1, everything else 200.
        let (h, w) = (4, 4);
        let mut src = vec![200u8; 3 * h * w];
        src[h * w + w + 2] = 7;
        let mut out = vec![0.0; 3 * h * w];
        // dy = 1, dx = −1: out(y, x) = img(y+1, x−1), so the marker img(1, 2) lands at out(0, 3).
        write_image(&src, 3, h, w, &table, Augment { dy: 1, dx: -1, flip: false }, &mut out);
        let at = |c: usize, y: usize, x: usize| out[c * h * w + y * w + x];
        assert_eq!(at(1, 0, 3), norm.apply(1, 7));
        assert_eq!(at(1, 0, 2), norm.apply(1, 200));
        // Column 0 and the last row are padding: −mean/std.
        for c in 0..3 {
            for y in 0..h {
                assert_eq!(at(c, y, 0), -norm.mean[c] / norm.std[c]);
            }
            for x in 0..w {
                assert_eq!(at(c, 3, x), -norm.mean[c] / norm.std[c]);
            }
        }
        // Flip mirrors the columns.
        let mut plain = vec![0.0; 3 * h * w];
        write_image(&src, 3, h, w, &table, Augment::NONE, &mut plain);
        write_image(&src, 3, h, w, &table, Augment { dy: 0, dx: 0, flip: true }, &mut out);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(out[c * h * w + y * w + x], plain[c * h * w + y * w + (w - 1 - x)]);
                }
            }
        }
    }

    #[test]
    fn draw_covers_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<Augment> = (0..2000).map(|_| Augment::draw(&mut rng, PAD)).collect();
        for v in -4..=4 {
            assert!(draws.iter().any(|a| a.dx == v) && draws.iter().any(|a| a.dy == v));
        }
        assert!(draws.iter().all(|a| a.dx.abs() <= 4 && a.dy.abs() <= 4));
        let flips = draws.iter().filter(|a| a.flip).count();
        assert!((850..1150).contains(&flips), "{flips}");
    }
}
