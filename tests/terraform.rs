//! terraform/ checked without the terraform binary (which cannot be downloaded here): every file parses strictly and
//! checkov finds nothing (scripts/terraform-check), and the module cannot drift from the code: its tables are
//! migrations/dynamodb's, and its IAM task policy grants exactly the DynamoDB and KMS calls the code makes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::terraform::{conditions, mac_algorithm_condition, module, repo, resources, terraform_check, text};
use serde_json::Value;

#[test]
fn terraform_parses_strictly_and_checkov_passes() {
    let (ok, out) = terraform_check(&["lint"]);
    assert!(ok, "{out}");
    assert!(out.contains("Failed checks: 0"), "{out}");
}

#[test]
fn the_checks_fail_on_a_broken_file_and_on_a_failed_policy() {
    let copy = |edit: &dyn Fn(&Path)| {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(repo().join("terraform")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        edit(tmp.path());
        let (ok, out) = terraform_check(&["lint", tmp.path().to_str().unwrap()]);
        (ok, out, tmp)
    };
    let (ok, out, _tmp) = copy(&|dir| {
        let mut text = std::fs::read_to_string(dir.join("dynamodb.tf")).unwrap();
        text.push_str("\nresource \"aws_s3_bucket\" \"x\" {\n");
        std::fs::write(dir.join("dynamodb.tf"), text).unwrap();
    });
    assert!(!ok && out.contains("does not parse"), "an unparseable file must fail the check: {out}");
    let (ok, out, _tmp) = copy(&|dir| {
        let text = std::fs::read_to_string(dir.join("dynamodb.tf")).unwrap();
        std::fs::write(
            dir.join("dynamodb.tf"),
            text.replacen("enabled = true\n  }\n\n  server_side", "enabled = false\n  }\n\n  server_side", 1),
        )
        .unwrap();
    });
    assert!(!ok && out.contains("Failed checks: 1"), "a table without point-in-time recovery must fail checkov: {out}");
}

#[test]
fn terraform_tables_are_the_migrations_tables() {
    let module = module();
    let tables = resources(&module, "resource", "aws_dynamodb_table");
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("migrations/dynamodb")).unwrap() {
        let migration: Value = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let name = migration["TableName"].as_str().unwrap().to_owned();
        expected.insert(name.clone());
        let (_, table) = tables
            .iter()
            .find(|(_, t)| text(&t["name"]) == format!("${{var.name}}-{name}"))
            .unwrap_or_else(|| panic!("no terraform table named NAME-{name}"));
        assert_eq!(text(&table["billing_mode"]), migration["BillingMode"].as_str().unwrap(), "{name}");
        let key = |schema: &Value, kind: &str| {
            schema.as_array().unwrap().iter().find(|k| k["KeyType"] == kind).map(|k| text(&k["AttributeName"]))
        };
        assert_eq!(Some(text(&table["hash_key"])), key(&migration["KeySchema"], "HASH"), "{name} hash key");
        assert_eq!(table.get("range_key").map(text), key(&migration["KeySchema"], "RANGE"), "{name} range key");
        let attributes: BTreeSet<(String, String)> =
            table["attribute"].as_array().unwrap().iter().map(|a| (text(&a["name"]), text(&a["type"]))).collect();
        let wanted: BTreeSet<(String, String)> = migration["AttributeDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (text(&a["AttributeName"]), text(&a["AttributeType"])))
            .collect();
        assert_eq!(attributes, wanted, "{name} attributes");
        let indexes: BTreeSet<(String, Option<String>, Option<String>, String)> = table
            .get("global_secondary_index")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    text(&i["name"]),
                    Some(text(&i["hash_key"])),
                    i.get("range_key").map(text),
                    text(&i["projection_type"]),
                )
            })
            .collect();
        let wanted: BTreeSet<_> = migration
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| {
                let projection = text(&i["Projection"]["ProjectionType"]);
                (text(&i["IndexName"]), key(&i["KeySchema"], "HASH"), key(&i["KeySchema"], "RANGE"), projection)
            })
            .collect();
        assert_eq!(indexes, wanted, "{name} indexes");
        let ttl = table.get("ttl").and_then(|t| t.get(0)).map(|t| (text(&t["attribute_name"]), t["enabled"] == true));
        let wanted =
            migration.get("TimeToLiveSpecification").map(|t| (text(&t["AttributeName"]), t["Enabled"] == true));
        assert_eq!(ttl, wanted, "{name} TTL");
        // Production settings the migrations leave to the deployment.
        assert_eq!(table["point_in_time_recovery"][0]["enabled"], true, "{name} point-in-time recovery");
        assert_eq!(text(&table["deletion_protection_enabled"]), "${var.deletion_protection}", "{name}");
        let sse = &table["server_side_encryption"][0];
        assert!(sse["enabled"] == true && text(&sse["kms_key_arn"]).contains("aws_kms_key."), "{name}: CMK encryption");
    }
    assert_eq!(tables.len(), expected.len(), "terraform has tables the migrations do not: {:?}", tables.keys());
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
fn calls(service: &str, package: &str, files: &[PathBuf]) -> BTreeSet<String> {
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

#[test]
fn the_task_role_grants_exactly_the_calls_the_code_makes() {
    let dynamo_files: Vec<PathBuf> = std::fs::read_dir(repo().join("src/store/dynamodb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    let mut needed = calls("dynamodb", "aws-sdk-dynamodb", &dynamo_files);
    // `principald migrate` creates and alters tables; in production Terraform does, so the task role may not.
    for migrate_only in ["CreateTable", "UpdateTable", "UpdateTimeToLive", "DescribeTimeToLive"] {
        needed.remove(&format!("dynamodb:{migrate_only}"));
    }
    let kms = calls("kms", "aws-sdk-kms", &[repo().join("src/pki/signer/awskms.rs")]);
    assert!(["kms:Sign", "kms:GetPublicKey", "kms:GenerateMac"].iter().all(|a| kms.contains(*a)), "{kms:?}");
    // Bootstrap creates a key when none exists; Terraform creates it here, so replicas only adopt it.
    needed.extend(
        kms.into_iter()
            .filter(|a| !["kms:CreateKey", "kms:CreateAlias", "kms:ScheduleKeyDeletion"].contains(&a.as_str())),
    );

    let module = module();
    let policies = resources(&module, "data", "aws_iam_policy_document");
    let statements = policies["task"]["statement"].as_array().unwrap();
    let mut granted = BTreeSet::new();
    // (action, resources) of every KMS grant: each action on the key it belongs to.
    let mut kms_grants = BTreeSet::new();
    for statement in statements {
        let actions: Vec<String> = statement["actions"].as_array().unwrap().iter().map(text).collect();
        let resources = text(&statement["resources"]);
        for action in &actions {
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            if action.starts_with("kms:") {
                kms_grants.insert((action.clone(), resources.clone()));
            } else if resources.contains("aws_dynamodb_table.audit") {
                assert!(
                    ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"].contains(&action.as_str()),
                    "the audit log is append-and-read only, not {action}"
                );
            } else if action == "dynamodb:DeleteItem" {
                // Only expired intermediates' records in meta are ever deleted.
                assert_eq!(resources, "[\"${aws_dynamodb_table.meta.arn}\"]", "DeleteItem on meta only");
                let leading =
                    ("ForAllValues:StringLike".into(), "dynamodb:LeadingKeys".into(), "[\"intermediate#*\"]".into());
                assert_eq!(conditions(statement), [leading].into(), "DeleteItem on intermediate records only");
            } else if action == "dynamodb:Scan" {
                assert_eq!(
                    resources, "[\"${aws_dynamodb_table.meta.arn}\",\"${aws_dynamodb_table.certificates.arn}\"]",
                    "Scan where the code scans only"
                );
            } else {
                assert!(
                    resources.contains("local.tables"),
                    "{action} on the tables (and their indexes) only: {resources}"
                );
            }
            if action == "kms:Sign" {
                let conditions: BTreeSet<(String, String)> = statement["condition"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| (text(&c["variable"]), text(&c["values"])))
                    .collect();
                assert!(
                    conditions.contains(&("kms:SigningAlgorithm".into(), "[\"ECDSA_SHA_256\"]".into())),
                    "{conditions:?}"
                );
                // RAW for certificates, DIGEST for CRLs over 4096 bytes (hashed locally); never anything else.
                assert!(
                    conditions.contains(&("kms:MessageType".into(), "[\"RAW\",\"DIGEST\"]".into())),
                    "{conditions:?}"
                );
            }
            if action == "kms:GenerateMac" {
                assert_eq!(conditions(statement), mac_algorithm_condition(), "GenerateMac with HMAC_SHA_256 only");
            }
            granted.insert(action.clone());
        }
    }
    assert_eq!(granted, needed, "task role actions (left) vs the calls the code makes (right)");
    let (ca, derive) = ("[\"${aws_kms_key.ca.arn}\"]", "[\"${aws_kms_key.ca_derive.arn}\"]");
    let expected: BTreeSet<(String, String)> = [
        ("kms:DescribeKey", ca),
        ("kms:GetPublicKey", ca),
        ("kms:Sign", ca),
        ("kms:DescribeKey", derive),
        ("kms:GenerateMac", derive),
    ]
    .iter()
    .map(|(a, r)| (a.to_string(), r.to_string()))
    .collect();
    assert_eq!(kms_grants, expected, "each KMS action on its own key only: the root signs, the derivation key MACs");
}

/// Relying parties reach CRLs and OCSP through the NLB's own plain-TCP listener to the replicas' PKI port, the
/// replicas name that address in certificates, and the health port stays reachable from the NLB only.
#[test]
fn the_pki_listener_is_published_through_the_nlb_and_named_in_certificates() {
    let module = module();
    let listeners = resources(&module, "resource", "aws_lb_listener");
    let pki = &listeners["pki"];
    assert_eq!(text(&pki["protocol"]), "TCP", "plain TCP to the replicas' plain-HTTP PKI port");
    assert_eq!(text(&pki["port"]), "${var.pki_listener_port}");
    assert!(text(&pki["default_action"][0]["target_group_arn"]).contains("aws_lb_target_group.pki"));
    let groups = resources(&module, "resource", "aws_lb_target_group");
    assert_eq!(text(&groups["pki"]["port"]), "${var.pki_port}");
    let ecs = std::fs::read_to_string(repo().join("terraform/ecs.tf")).unwrap();
    for needle in [
        "PRINCIPALD_PKI_LISTEN",
        "\"0.0.0.0:${var.pki_port}\"",
        "PRINCIPALD_PKI_URL",
        "local.pki_url",
        "aws_lb_target_group.pki.arn",
        "containerPort = var.pki_port",
    ] {
        assert!(ecs.contains(needle), "ecs.tf: {needle}");
    }
    // The health port: ingress from the NLB's security group only, never from CIDRs.
    let ingress = resources(&module, "resource", "aws_vpc_security_group_ingress_rule");
    for (name, rule) in &ingress {
        if text(&rule["from_port"]) == "${var.health_port}" {
            assert!(rule.get("cidr_ipv4").is_none(), "{name}: the health port is private to the NLB");
        }
    }
    assert!(text(&ingress["service_pki"]["from_port"]) == "${var.pki_port}");
}
