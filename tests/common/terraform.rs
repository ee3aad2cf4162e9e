//! terraform/ as data: every `.tf` file of the module parsed to JSON by scripts/terraform-check (python-hcl2), and
//! helpers to read its blocks and policy statements.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn terraform_check(args: &[&str]) -> (bool, String) {
    let out =
        Command::new(repo().join("scripts/terraform-check")).args(args).output().expect("scripts/terraform-check");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every `.tf` file of the module (not the examples) as JSON, merged by top-level block kind.
pub fn module() -> BTreeMap<String, Vec<Value>> {
    let mut blocks: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("terraform")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            let (ok, json) = terraform_check(&["json", path.to_str().unwrap()]);
            assert!(ok, "{}: {json}", path.display());
            let json: Value = serde_json::from_str(&json).unwrap();
            for (kind, items) in json.as_object().unwrap() {
                blocks.entry(kind.clone()).or_default().extend(items.as_array().unwrap().iter().cloned());
            }
        }
    }
    blocks
}

/// `resource "TYPE" "NAME" {...}` bodies of one type, by name.
pub fn resources(module: &BTreeMap<String, Vec<Value>>, block: &str, kind: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for item in module.get(block).into_iter().flatten() {
        if let Some(named) = item.get(kind).and_then(Value::as_object) {
            for (name, body) in named {
                out.insert(name.clone(), body.clone());
            }
        }
    }
    out
}

pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A statement's conditions as (test, variable, values).
pub fn conditions(statement: &Value) -> BTreeSet<(String, String, String)> {
    statement
        .get("condition")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| (text(&c["test"]), text(&c["variable"]), text(&c["values"])))
        .collect()
}

pub fn mac_algorithm_condition() -> BTreeSet<(String, String, String)> {
    [("StringEquals".to_string(), "kms:MacAlgorithm".to_string(), "[\"HMAC_SHA_256\"]".to_string())].into()
}

/// Whether the IAM action pattern `pattern` (`kms:Get*`, `kms:*`) covers `action`.
pub fn covers(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}
