//! Serializing an f32 config value as written: serde writes an f32 into TOML by widening it to f64,
//! so `noise = 0.3` came back as `0.30000001192092896`. [`serialize`] writes the f64 whose shortest
//! decimal is the f32's own shortest round-trip decimal (`0.3`), which reads back as the same f32.
//!
//! Run ids are a hash of the config's JSON, where serde_json already wrote an f32 as its shortest
//! round-trip decimal, so the JSON must not change: the f64 is written only where serde_json gives
//! it the same text as the f32. It does not for |x| in [1e-6, 1e-5) and [1e13, 1e16) (f32 and f64
//! switch to exponent notation at different points, "0.0000018658563" vs "1.8658563e-6"); such a
//! value is written as before, as the f32, and so every run id stays what it was.

use serde::Serializer;

/// `#[serde(serialize_with = "crate::util::shortest_f32::serialize")]` on an f32 field.
pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    let wide = widen(*x);
    if serde_json::to_string(&wide).ok() == serde_json::to_string(x).ok() {
        s.serialize_f64(wide)
    } else {
        s.serialize_f32(*x)
    }
}

/// The f64 nearest to the f32's shortest round-trip decimal (f32 Display is that decimal).
pub fn widen(x: f32) -> f64 {
    x.to_string().parse().expect("an f32's Display parses as an f64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[derive(serde::Serialize)]
    struct Shortest(#[serde(serialize_with = "serialize")] f32);

    #[test]
    fn writes_the_value_as_given_and_reads_back_the_same_f32() {
        for (x, text) in
            [(0.3f32, "0.3"), (1e-5, "0.00001"), (2.5e-3, "0.0025"), (40.0, "40.0"), (-0.1, "-0.1")]
        {
            let toml = toml::to_string(&toml::Table::try_from(Wrapper { v: Shortest(x) }).unwrap()).unwrap();
            assert_eq!(toml.trim(), format!("v = {text}"));
            let back: f64 = toml.trim().trim_start_matches("v = ").parse().unwrap();
            assert_eq!(back as f32, x);
        }
    }

    #[derive(serde::Serialize)]
    struct Wrapper {
        v: Shortest,
    }

    /// The JSON that run ids hash is unchanged: serde_json's f32 and this f64 give the same text,
    /// for fresh random f32 bit patterns of every magnitude and for values a config would hold.
    #[test]
    fn json_text_is_the_same_as_serde_json_f32() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let mut values: Vec<f32> =
            (0..200_000).map(|_| f32::from_bits(rng.gen())).filter(|x| x.is_finite()).collect();
        values.extend((0..10_000).map(|_| rng.gen_range(-10.0f32..10.0)));
        values.extend([0.0, -0.0, 0.3, 0.1, 1e-5, 5e-4, f32::MIN_POSITIVE, f32::MAX, f32::EPSILON]);
        for x in values {
            let want = serde_json::to_string(&x).unwrap();
            let got = serde_json::to_string(&Shortest(x)).unwrap();
            assert_eq!(got, want, "f32 bits {:#010x}", x.to_bits());
        }
    }
}
