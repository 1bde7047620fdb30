//! Words for people: "1 run", "2 runs".

/// `n` and the noun, plural (with an "s") unless `n` is 1.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1, "run"), "1 run");
        assert_eq!(super::count(0, "run"), "0 runs");
        assert_eq!(super::count(12, "task"), "12 tasks");
    }
}
