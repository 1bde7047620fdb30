//! Shards: task i of n takes the runs whose index in the expanded list is ≡ i (mod n), so the n
//! shards partition the list for any n ≥ 1 (some are empty when n exceeds the runs).

use anyhow::{anyhow, bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize, what: &str) -> Result<Self> {
        if count == 0 {
            bail!("{what}: the number of shards must be at least 1");
        }
        if index >= count {
            bail!("{what}: shard index {index} is out of range for {count} shards (0..={})", count - 1);
        }
        Ok(Self { index, count })
    }

    /// "i/n", as given to `--shard`.
    pub fn parse(s: &str) -> Result<Self> {
        let what = format!("--shard {s}");
        let (i, n) = s.split_once('/').ok_or_else(|| anyhow!("{what}: expected INDEX/COUNT, e.g. 0/4"))?;
        let i = i.trim().parse().with_context(|| format!("{what}: bad index {i:?}"))?;
        let n = n.trim().parse().with_context(|| format!("{what}: bad count {n:?}"))?;
        Self::new(i, n, &what)
    }

    /// From a SLURM array task's environment: SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN, if
    /// set) of SLURM_ARRAY_TASK_COUNT. None outside an array job.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let (Some(id), Some(count)) = (get("SLURM_ARRAY_TASK_ID"), get("SLURM_ARRAY_TASK_COUNT")) else {
            return Ok(None);
        };
        let num = |name: &str, v: &str| -> Result<usize> {
            v.trim().parse().with_context(|| format!("{name}={v:?} is not a task number"))
        };
        let id = num("SLURM_ARRAY_TASK_ID", &id)?;
        let min =
            get("SLURM_ARRAY_TASK_MIN").map(|m| num("SLURM_ARRAY_TASK_MIN", &m)).transpose()?.unwrap_or(0);
        let count = num("SLURM_ARRAY_TASK_COUNT", &count)?;
        let what = format!("SLURM_ARRAY_TASK_ID={id} (min {min}) of SLURM_ARRAY_TASK_COUNT={count}");
        Self::new(id.checked_sub(min).ok_or_else(|| anyhow!("{what}: id below the minimum"))?, count, &what)
            .map(Some)
    }

    /// Indices (into a list of `len` runs) that this shard takes.
    pub fn select(&self, len: usize) -> impl Iterator<Item = usize> + '_ {
        (self.index..len).step_by(self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_every_list() {
        for len in 0..40 {
            for n in 1..12 {
                let mut seen = vec![0; len];
                for i in 0..n {
                    for k in Shard::new(i, n, "t").unwrap().select(len) {
                        seen[k] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "len {len} n {n}: {seen:?}");
            }
        }
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        assert!(Shard::parse("4/4").unwrap_err().to_string().contains("out of range"));
        assert!(Shard::parse("1/0").unwrap_err().to_string().contains("at least 1"));
        assert!(Shard::parse("x").is_err());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        let s =
            Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4")])).unwrap();
        assert_eq!(s, Some(Shard { index: 3, count: 4 }));
        let s = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]));
        assert_eq!(s.unwrap(), Some(Shard { index: 3, count: 4 }));
        let e = Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")]))
            .unwrap_err();
        assert!(e.to_string().contains("SLURM_ARRAY_TASK_ID=4"), "{e}");
    }
}
