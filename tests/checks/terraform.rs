//! terraform/ checked without the terraform binary (which cannot be downloaded here): every file parses strictly and
//! checkov finds nothing (scripts/terraform-check), and the module cannot drift from the code: its tables are
//! migrations/dynamodb's, and its IAM task policy grants exactly the DynamoDB, KMS and S3 calls the code makes, through
//! the VPC's endpoints only; the replicas have no egress to the internet, and the image is named by digest.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::terraform::{
    calls, conditions, locals, mac_algorithm_condition, module, repo, resources, terraform_check, text,
};
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

/// The task role grants exactly the DynamoDB, KMS and S3 calls the code makes, each only through the VPC's endpoints
/// of its service (`aws:SourceVpce`, or `aws:SourceVpc` when the VPC brings its own), and an explicit deny refuses
/// the rest from anywhere else (the CA key policies grant Sign and GenerateMac on their own).
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
    // Audit checkpoints: every S3 call is in this one file; until it exists, the PutObject it is to make.
    let s3_file = repo().join("src/server/checkpoints_s3.rs");
    let s3 = match s3_file.exists() {
        true => calls("s3", "aws-sdk-s3", &[s3_file]),
        false => ["s3:PutObject".to_owned()].into(),
    };
    needed.extend(s3);

    let module = module();
    let policies = resources(&module, "data", "aws_iam_policy_document");
    let statements = policies["task"]["statement"].as_array().unwrap();
    let mut granted = BTreeSet::new();
    // (action, resources) of every KMS grant: each action on the key it belongs to.
    let mut kms_grants = BTreeSet::new();
    let mut denies = 0;
    for statement in statements {
        let actions: Vec<String> = statement["actions"].as_array().unwrap().iter().map(text).collect();
        let resources = text(&statement["resources"]);
        if statement.get("effect").is_some_and(|e| e == "Deny") {
            denies += 1;
            assert_eq!(actions, ["dynamodb:*", "kms:*", "s3:*"], "the deny covers every service the role uses");
            let outside =
                ("StringNotEquals".into(), "${local.vpc_condition_key}".into(), "${local.vpc_sources}".into());
            let direct = ("BoolIfExists".into(), "aws:ViaAWSService".into(), "[\"false\"]".into());
            assert_eq!(conditions(statement), [outside, direct].into(), "denied from outside the VPC's endpoints");
            continue;
        }
        // Every grant only through the endpoint of its own service.
        let service = actions[0].split(':').next().unwrap().to_owned();
        assert!(
            actions.iter().all(|a| a.starts_with(&format!("{service}:"))),
            "one service per statement: {actions:?}"
        );
        let vpc = ("StringEquals".into(), "${local.vpc_condition_key}".into(), format!("${{local.{service}_source}}"));
        let mut conditions = conditions(statement);
        assert!(conditions.remove(&vpc), "{actions:?}: only through the VPC ({vpc:?}), not {conditions:?}");
        for action in &actions {
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            if action.starts_with("kms:") {
                kms_grants.insert((action.clone(), resources.clone()));
            } else if action.starts_with("s3:") {
                let prefix = "[\"${aws_s3_bucket.checkpoints.arn}/${var.audit_checkpoints_prefix}*\"]";
                assert_eq!(resources, prefix, "{action}: checkpoints under the prefix only");
            } else if resources.contains("aws_dynamodb_table.audit") {
                assert!(
                    ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"].contains(&action.as_str()),
                    "the audit log is append-and-read only, not {action}"
                );
            } else if action == "dynamodb:DeleteItem" {
                // Only expired intermediates' and token keys' records in meta and workload entries in principals are
                // ever deleted: never a principal, a certificate or an audit event.
                let keys = match resources.as_str() {
                    "[\"${aws_dynamodb_table.meta.arn}\"]" => "[\"intermediate#*\",\"token_key#*\"]",
                    "[\"${aws_dynamodb_table.principals.arn}\"]" => "[\"workload#*\"]",
                    other => panic!("DeleteItem on meta and principals only, not {other}"),
                };
                let leading = ("ForAllValues:StringLike".into(), "dynamodb:LeadingKeys".into(), keys.into());
                assert_eq!(conditions, [leading].into(), "DeleteItem on {resources}: {keys} only");
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
                let conditions: BTreeSet<(String, String)> =
                    conditions.iter().map(|(_, variable, values)| (variable.clone(), values.clone())).collect();
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
                assert_eq!(conditions, mac_algorithm_condition(), "GenerateMac with HMAC_SHA_256 only");
            }
            granted.insert(action.clone());
        }
    }
    assert_eq!(granted, needed, "task role actions (left) vs the calls the code makes (right)");
    assert_eq!(denies, 1, "one deny: nothing from outside the VPC");
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

    // The sources: this module's endpoint of each service (gateway for DynamoDB and S3, interface for KMS), or the
    // VPC when the VPC brings its own; the deny names all of them.
    let locals = locals(&module);
    let key = "${var.create_vpc_endpoints ? \"aws:SourceVpce\" : \"aws:SourceVpc\"}";
    assert_eq!(locals["vpc_condition_key"], key);
    for (service, endpoint) in [
        ("dynamodb", "aws_vpc_endpoint.gateway[\"dynamodb\"].id"),
        ("s3", "aws_vpc_endpoint.gateway[\"s3\"].id"),
        ("kms", "aws_vpc_endpoint.interface[\"kms\"].id"),
    ] {
        let source = format!("${{var.create_vpc_endpoints ? [{endpoint}] : [var.vpc_id]}}");
        assert_eq!(locals[&format!("{service}_source")], source, "{service}");
        assert!(locals["vpc_sources"].contains(&format!("local.{service}_source")), "the deny names {service}'s");
    }
    let endpoints = resources(&module, "resource", "aws_vpc_endpoint");
    assert_eq!(text(&endpoints["gateway"]["vpc_endpoint_type"]), "Gateway");
    assert_eq!(text(&endpoints["interface"]["vpc_endpoint_type"]), "Interface");
    assert!(locals["gateway_services"].contains("[\"dynamodb\", \"s3\"]"), "{}", locals["gateway_services"]);
    for service in ["\"kms\"", "\"logs\"", "\"ecr.api\"", "\"ecr.dkr\""] {
        assert!(locals["interface_services"].contains(service), "an interface endpoint for {service}");
    }
}

/// The replicas reach nothing but the VPC endpoints: no egress to 0.0.0.0/0 (or ::/0) anywhere, and the service's
/// egress is HTTPS to the interface endpoints (or the VPC's ranges when it brings its own) and to the gateway
/// endpoints' prefix lists.
#[test]
fn the_replicas_have_no_route_to_the_internet() {
    let module = module();
    let egress = resources(&module, "resource", "aws_vpc_security_group_egress_rule");
    for (name, rule) in &egress {
        let to = rule.get("cidr_ipv4").or(rule.get("cidr_ipv6")).map(text).unwrap_or_default();
        assert!(to != "0.0.0.0/0" && to != "::/0", "{name}: egress to the internet");
    }
    let service: BTreeMap<&str, &Value> = egress
        .iter()
        .filter(|(_, rule)| text(&rule["security_group_id"]) == "${aws_security_group.service.id}")
        .map(|(name, rule)| (name.as_str(), rule))
        .collect();
    assert_eq!(
        service.keys().copied().collect::<Vec<_>>(),
        ["service_gateway_endpoints", "service_interface_endpoints", "service_vpc_https"],
        "the replicas' egress"
    );
    for (name, rule) in &service {
        assert_eq!((text(&rule["from_port"]), text(&rule["to_port"])), ("443".into(), "443".into()), "{name}");
    }
    assert_eq!(
        text(&service["service_interface_endpoints"]["referenced_security_group_id"]),
        "${aws_security_group.endpoints[0].id}"
    );
    assert_eq!(text(&service["service_gateway_endpoints"]["prefix_list_id"]), "${each.value.id}");
    assert_eq!(text(&service["service_gateway_endpoints"]["for_each"]), "${data.aws_prefix_list.gateway}");
    // Only when the VPC brings its own endpoints, and then to the VPC's own ranges.
    let vpc = service["service_vpc_https"];
    assert!(text(&vpc["for_each"]).starts_with("${var.create_vpc_endpoints ? toset([]) :"), "{vpc}");
    assert!(text(&vpc["for_each"]).contains("data.aws_vpc.this.cidr_block_associations"), "{vpc}");
}

/// The image is named by digest: the variable's validation refuses a tag alone.
#[test]
fn the_image_is_named_by_digest() {
    let module = module();
    let image = module["variable"].iter().find_map(|v| v.get("image")).expect("variable image");
    let validation = &image["validation"][0];
    let condition = text(&validation["condition"]);
    let pattern = condition
        .strip_prefix("${can(regex(\"")
        .and_then(|c| c.strip_suffix("\", var.image))}"))
        .unwrap_or_else(|| panic!("image validation: can(regex(\"...\", var.image)), not {condition}"))
        .replace("\\\\", "\\");
    assert!(text(&validation["error_message"]).contains("@sha256:"), "the error says what is expected");
    let digest = "b6840c42b9fad5839fdbe7543198f097ad223f8e6193c5d72bfbbd7008ee4e46";
    let repository = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/principald";
    for (image, accepted) in [
        (format!("{repository}@sha256:{digest}"), true),
        (format!("{repository}:1.0.0@sha256:{digest}"), true),
        (format!("{repository}:1.0.0"), false),
        (format!("{repository}:latest"), false),
        (repository.to_owned(), false),
        (format!("{repository}@sha256:{}", &digest[..40]), false),
        (format!("{repository}:sha256-{digest}"), false),
    ] {
        // Python's re agrees with Terraform's RE2 on this pattern's syntax (classes, anchors, counts).
        let out = Command::new("python3")
            .args(["-c", "import re, sys; sys.exit(0 if re.search(sys.argv[1], sys.argv[2]) else 1)", &pattern, &image])
            .status()
            .expect("python3");
        assert_eq!(out.success(), accepted, "{image} with {pattern}");
    }
    // The examples follow it.
    for file in ["terraform/README.md", "terraform/examples/complete/main.tf", "README.md"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(text.contains(&format!("principald:1.0.0@sha256:{digest}")), "{file}: an image by digest");
    }
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
