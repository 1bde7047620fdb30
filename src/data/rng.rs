//! Keyed random streams: one ChaCha8 generator per (seed, domain, stream) triple.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domains keep the streams of different uses independent for the same user seed.
pub(crate) const DOMAIN_EPOCH_PERMUTATION: u64 = 1;
pub(crate) const DOMAIN_AUGMENT: u64 = 2;
pub(crate) const DOMAIN_SYNTHETIC_TRAIN: u64 = 3;
pub(crate) const DOMAIN_SYNTHETIC_TEST: u64 = 4;
pub(crate) const DOMAIN_SYNTHETIC_CLASSES: u64 = 5;

/// ChaCha8 with key = seed (LE bytes 0..8) ‖ domain (LE bytes 8..16) ‖ zeros, on stream `stream`,
/// word position 0. Distinct triples give independent streams.
pub(crate) fn keyed_rng(seed: u64, domain: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&domain.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}
