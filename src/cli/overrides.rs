//! `--set section.key=value` overrides, applied to the TOML of a config before it is parsed, so that
//! they are type-checked exactly like the file (unknown keys are errors).

use anyhow::{anyhow, bail, Result};
use toml::{Table, Value};

/// Parse `value` as a TOML value (number, bool, array, inline table), else take it as a string.
fn parse_value(value: &str) -> Value {
    let doc = format!("v = {value}");
    match doc.parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(value.to_string())),
        Err(_) => Value::String(value.to_string()),
    }
}

/// Set `path` (dot-separated) to `value` in `root`, creating tables on the way.
pub fn apply(root: &mut Table, assignment: &str) -> Result<()> {
    let (path, value) = assignment
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {assignment:?}: expected KEY=VALUE, e.g. optim.lr=0.2"))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("--set {assignment:?}: empty key in {path:?}");
    }
    let mut table = root;
    for k in &keys[..keys.len() - 1] {
        let entry = table.entry(k.to_string()).or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => bail!("--set {assignment:?}: {k:?} is not a table"),
        };
    }
    table.insert(keys[keys.len() - 1].to_string(), parse_value(value.trim()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_nested_typed_values() {
        let mut t = Table::new();
        apply(&mut t, "optim.lr=0.25").unwrap();
        apply(&mut t, "model.scale_invariant=false").unwrap();
        apply(&mut t, "optim.schedule.kind=step").unwrap();
        apply(&mut t, "optim.schedule.lr_epochs=[1, 2.5]").unwrap();
        assert_eq!(t["optim"]["lr"].as_float(), Some(0.25));
        assert_eq!(t["model"]["scale_invariant"].as_bool(), Some(false));
        assert_eq!(t["optim"]["schedule"]["kind"].as_str(), Some("step"));
        assert_eq!(t["optim"]["schedule"]["lr_epochs"].as_array().unwrap().len(), 2);
        assert!(apply(&mut t, "optim.lr").is_err());
        assert!(apply(&mut t, "optim.lr.x=1").is_err());
    }
}
