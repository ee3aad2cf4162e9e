//! terraform/ as data: every `.tf` file of the module parsed to JSON by scripts/terraform-check (python-hcl2), and
//! helpers to read its blocks and policy statements.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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

/// Every `locals` entry of the module, as text.
pub fn locals(module: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for block in module.get("locals").into_iter().flatten() {
        for (name, value) in block.as_object().unwrap() {
            out.insert(name.clone(), text(value));
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

/// The source of an AWS SDK crate of this build (from `cargo metadata`): its client has one file per operation.
fn sdk_operations(package: &str) -> BTreeSet<String> {
    // Only the host's dependencies: a build downloads nothing else, so other platforms' crates (Windows-only ones,
    // say) are missing from a fresh machine's cargo cache and `--offline` could not resolve them.
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--offline", "--format-version", "1", "--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"))
        .output()
        .expect("cargo metadata: cannot run cargo");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata printed invalid JSON");
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .map(|p| PathBuf::from(p["manifest_path"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{package} is not in the build"));
    std::fs::read_dir(manifest.parent().unwrap().join("src/client"))
        .unwrap()
        .filter_map(|e| e.unwrap().path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

/// The triple of the machine building the tests (`host:` in `rustc -vV`), which is the platform the tests run on.
fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV: cannot run rustc");
    assert!(out.status.success(), "rustc -vV failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("rustc -vV printed no host line: {text}"))
        .trim()
        .to_owned()
}

fn camel(snake: &str) -> String {
    snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// IAM actions (`service:Operation`) for the SDK calls made in `files`.
pub fn calls(service: &str, package: &str, files: &[PathBuf]) -> BTreeSet<String> {
    let operations = sdk_operations(package);
    let mut found = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(file).unwrap();
        for op in &operations {
            // TransactWriteItems is not an IAM action: its items' actions (below) authorize it.
            if op != "transact_write_items" && source.contains(&format!(".{op}()")) {
                found.insert(format!("{service}:{}", camel(op)));
            }
        }
        // Items of a TransactWriteItems need the item action too.
        for (item, action) in [
            ("Put::builder", "PutItem"),
            ("Update::builder", "UpdateItem"),
            ("Delete::builder", "DeleteItem"),
            ("ConditionCheck::builder", "ConditionCheckItem"),
        ] {
            if service == "dynamodb" && source.contains(item) {
                found.insert(format!("dynamodb:{action}"));
            }
        }
    }
    found
}
