//! Value parsers for the numeric flags that clap's built-in ones would reject with an unhelpful
//! message ("invalid digit found in string" for `--steps -5`). Every subcommand also sets
//! `allow_negative_numbers`, so `--lr -1` reaches the config's own validation instead of being
//! taken for an unknown flag.

use std::str::FromStr;

/// A whole number ≥ 0 (steps, seeds, sizes): "-5" or "1.5" say what is expected.
pub fn whole<T: FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("expected a whole number ≥ 0, got {s:?}"))
}

/// A whole number ≥ 1 (threads, workers): 0 is rejected rather than given a hidden meaning.
pub fn at_least_one<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    let n: T = s.trim().parse().map_err(|_| format!("expected a whole number ≥ 1, got {s:?}"))?;
    if n < T::from(1) {
        return Err("must be at least 1 (leave the flag out for its default)".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_and_positive_counts() {
        assert_eq!(whole::<u64>("12"), Ok(12));
        assert!(whole::<u64>("-5").unwrap_err().contains("whole number ≥ 0"));
        assert!(whole::<usize>("1.5").unwrap_err().contains("\"1.5\""));
        assert_eq!(at_least_one::<usize>("3"), Ok(3));
        assert!(at_least_one::<usize>("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one::<u32>("-2").unwrap_err().contains("whole number ≥ 1"));
    }
}
