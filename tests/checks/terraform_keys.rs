//! The CA keys' policies in terraform/: the replicas use the keys, named administrators administer them, the deploy
//! role alone changes their policies, and explicit denies keep everyone else (the account root and any `kms:*` IAM
//! policy included) from using them, changing their policies or granting their use. And what watches the keys and the
//! store: the read-only role, the write-once bucket of signed audit checkpoints, the alarm on kms:Sign.

use crate::common;

use common::terraform::{conditions, covers, mac_algorithm_condition, module, resources, text};
use serde_json::Value;

/// The CA's derivation key: an HMAC_256 key whose GenerateMac is the right to sign as any replica intermediate, so
/// only the task role may call it (HMAC_SHA_256 only), and the code finds it under the alias Terraform gives it.
#[test]
fn the_derivation_key_is_an_hmac_key_only_the_replicas_can_use() {
    let module = module();
    let keys = resources(&module, "resource", "aws_kms_key");
    let (root, derive) = (&keys["ca"], &keys["ca_derive"]);
    assert_eq!(text(&derive["key_usage"]), "GENERATE_VERIFY_MAC");
    assert_eq!(text(&derive["customer_master_key_spec"]), "HMAC_256");
    assert_eq!(derive["deletion_window_in_days"], root["deletion_window_in_days"], "deleted as carefully as the root");
    assert!(derive.get("enable_key_rotation").is_none_or(|r| r == false), "a rotated MAC key changes every key");
    assert_eq!(text(&derive["policy"]), "${data.aws_iam_policy_document.ca_derive_key.json}");

    // Named as the code names it: the CA alias plus "-derive", whether the URI names the alias or its ARN (the
    // module's ca_key_uri is the alias ARN).
    let aliases = resources(&module, "resource", "aws_kms_alias");
    assert_eq!(text(&aliases["ca_derive"]["target_key_id"]), "${aws_kms_key.ca_derive.key_id}");
    let ca_name = text(&aliases["ca"]["name"]).replace("${var.name}", "principald");
    let derive_name = text(&aliases["ca_derive"]["name"]).replace("${aws_kms_alias.ca.name}", &ca_name);
    let root_arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert_eq!(principald::pki::signer::kms_derive_alias(&ca_name, root_arn), derive_name);
    let arn_of = |name: &str| format!("arn:aws:kms:eu-west-1:111122223333:{name}");
    assert_eq!(principald::pki::signer::kms_derive_alias(&arn_of(&ca_name), root_arn), arn_of(&derive_name));
    let locals: Vec<&Value> = module.get("locals").into_iter().flatten().collect();
    assert!(
        locals.iter().any(|l| l.get("ca_key_uri").is_some_and(|u| text(u) == "awskms:${aws_kms_alias.ca.arn}")),
        "the deployment names the root by its alias ARN: {locals:?}"
    );

    // Key policy: administrators cannot MAC, GenerateMac is the task role's alone, with one algorithm.
    let policies = resources(&module, "data", "aws_iam_policy_document");
    let mut macs = 0;
    for statement in policies["ca_derive_key"]["statement"].as_array().unwrap() {
        if effect(statement) == "Deny" {
            continue;
        }
        let actions: Vec<String> = statement["actions"].as_array().unwrap().iter().map(text).collect();
        assert!(!actions.iter().any(|a| covers(a, "kms:VerifyMac")), "nobody needs VerifyMac: {actions:?}");
        if !actions.iter().any(|a| covers(a, "kms:GenerateMac")) {
            continue;
        }
        macs += 1;
        assert_eq!(actions, ["kms:GenerateMac"], "GenerateMac in a statement of its own");
        let principals = statement["principals"].as_array().unwrap();
        assert_eq!(principals.len(), 1, "{principals:?}");
        assert_eq!(text(&principals[0]["type"]), "AWS");
        assert_eq!(text(&principals[0]["identifiers"]), "[\"${aws_iam_role.task.arn}\"]", "the task role only");
        assert_eq!(conditions(statement), mac_algorithm_condition());
    }
    assert_eq!(macs, 1, "one statement grants GenerateMac");
}

/// The statements of a key policy document.
fn statements<'a>(policies: &'a std::collections::BTreeMap<String, Value>, name: &str) -> &'a Vec<Value> {
    policies[name]["statement"].as_array().unwrap()
}

fn actions(statement: &Value) -> Vec<String> {
    statement["actions"].as_array().unwrap().iter().map(text).collect()
}

fn effect(statement: &Value) -> String {
    statement.get("effect").map_or_else(|| "Allow".to_owned(), text)
}

/// CA key administrators are explicit (no account-root default), cannot grant themselves use, cannot change the
/// policy, and an explicit deny keeps everyone but the replicas (and the named signers for the root) from using the
/// keys, everyone but the policy administrators from changing the policies, and everyone from creating grants.
#[test]
fn ca_key_administrators_reach_no_further_than_administration() {
    let module = module();
    let vars: Vec<&Value> = module.get("variable").into_iter().flatten().collect();
    for name in ["ca_key_administrators", "ca_key_policy_administrators"] {
        let var = vars.iter().find_map(|v| v.get(name)).unwrap_or_else(|| panic!("variable {name}"));
        assert!(var.get("default").is_none(), "{name} is required: no default");
        assert!(text(&var["validation"]).contains("length("), "{name} must name at least one: {var}");
    }
    let policies = resources(&module, "data", "aws_iam_policy_document");
    for (doc, used_by, using) in [
        ("ca_key", "${concat([aws_iam_role.task.arn], var.ca_key_signers)}", "kms:Sign"),
        ("ca_derive_key", "[\"${aws_iam_role.task.arn}\"]", "kms:GenerateMac"),
    ] {
        let mut denies = Vec::new();
        for statement in statements(&policies, doc) {
            let acts = actions(statement);
            let principals = text(&statement["principals"]);
            if effect(statement) == "Deny" {
                denies.push((acts, conditions(statement)));
                continue;
            }
            if principals.contains("var.ca_key_administrators") {
                for forbidden in ["kms:CreateGrant", "kms:PutKeyPolicy", "kms:Sign", "kms:GenerateMac", "kms:Decrypt"] {
                    assert!(
                        !acts.iter().any(|a| covers(a, forbidden)),
                        "{doc}: administrators get {forbidden}: {acts:?}"
                    );
                }
            }
            if acts.iter().any(|a| covers(a, "kms:PutKeyPolicy")) {
                assert!(principals.contains("var.ca_key_policy_administrators"), "{doc}: PutKeyPolicy to {principals}");
            }
            assert!(!principals.contains(":root"), "{doc}: no account-root principal: {principals}");
        }
        let deny = |action: &str| denies.iter().find(|(acts, _)| acts == &[action.to_owned()]).map(|(_, c)| c.clone());
        let use_deny = deny(using).unwrap_or_else(|| panic!("{doc}: an explicit deny of {using}"));
        assert_eq!(
            use_deny.into_iter().collect::<Vec<_>>(),
            [("ArnNotEquals".to_owned(), "aws:PrincipalArn".to_owned(), used_by.to_owned())],
            "{doc}: {using} denied to everyone but its users"
        );
        let policy_deny = deny("kms:PutKeyPolicy").unwrap_or_else(|| panic!("{doc}: an explicit deny of PutKeyPolicy"));
        assert!(policy_deny.iter().any(|c| c.2 == "${var.ca_key_policy_administrators}"), "{doc}: {policy_deny:?}");
        assert_eq!(deny("kms:CreateGrant"), Some(Default::default()), "{doc}: grants denied to everyone");
    }
}

/// The read-only role for resource servers and auditors reads the tables (Scan on meta only, where token keys,
/// intermediates and chain heads are), the CA's public key and the checkpoints, and writes nothing; the CA key policy
/// lets it call GetPublicKey and nothing else.
#[test]
fn the_reader_role_reads_and_writes_nothing() {
    let module = module();
    let policies = resources(&module, "data", "aws_iam_policy_document");
    let tables = "${concat(local.tables, [aws_dynamodb_table.audit.arn])}";
    let mut granted = std::collections::BTreeSet::new();
    for statement in statements(&policies, "reader") {
        assert_eq!(effect(statement), "Allow");
        assert!(statement.get("condition").is_none(), "{statement}");
        let resources = text(&statement["resources"]);
        for action in actions(statement) {
            let expected = match action.as_str() {
                "dynamodb:DescribeTable" | "dynamodb:GetItem" => tables,
                "dynamodb:Query" => &resources, // the tables and their indexes, below
                "dynamodb:Scan" => "[\"${aws_dynamodb_table.meta.arn}\"]",
                "kms:GetPublicKey" => "[\"${aws_kms_key.ca.arn}\"]",
                "s3:GetObject" => "[\"${aws_s3_bucket.checkpoints.arn}/*\"]",
                "s3:ListBucket" => "[\"${aws_s3_bucket.checkpoints.arn}\"]",
                other => panic!("the reader role may not {other}"),
            };
            assert_eq!(resources, expected, "{action}");
            granted.insert((action, resources.clone()));
        }
    }
    let indexes = "${[for table in concat(local.tables, [aws_dynamodb_table.audit.arn]) : \"${table}/index/*\"]}";
    assert!(granted.contains(&("dynamodb:Query".to_owned(), tables.to_owned())), "{granted:?}");
    assert!(granted.contains(&("dynamodb:Query".to_owned(), indexes.to_owned())), "{granted:?}");
    assert_eq!(granted.len(), 8, "{granted:?}");

    let roles = resources(&module, "resource", "aws_iam_role_policy");
    assert_eq!(text(&roles["reader"]["policy"]), "${data.aws_iam_policy_document.reader.json}");
    assert_eq!(text(&roles["reader"]["role"]), "${aws_iam_role.reader[0].id}");
    // In the CA key policy: GetPublicKey for the reader role, nothing more.
    let dynamic = &policies["ca_key"]["dynamic"];
    let reader = dynamic.as_array().unwrap().iter().find_map(|d| d.get("statement")).expect("the reader's statement");
    assert_eq!(text(&reader["for_each"]), "${aws_iam_role.reader}");
    let content = &reader["content"][0];
    assert_eq!(actions(content), ["kms:GetPublicKey"]);
    assert_eq!(effect(content), "Allow");
    assert_eq!(text(&content["principals"][0]["identifiers"]), "[\"${statement.value.arn}\"]");
}

/// Checkpoints go to a bucket with Object Lock in COMPLIANCE mode (versions kept, retention 365 days by default),
/// no public access, encryption at rest, and a bucket policy that denies deleting versions, writes by anyone but
/// the replicas, and plain HTTP; the replicas are told where it is.
#[test]
fn audit_checkpoints_go_to_a_write_once_bucket() {
    let module = module();
    let one =
        |kind: &str| resources(&module, "resource", kind).remove("checkpoints").unwrap_or_else(|| panic!("{kind}"));
    assert_eq!(one("aws_s3_bucket")["object_lock_enabled"], true);
    assert_eq!(one("aws_s3_bucket").get("force_destroy"), None, "never emptied by terraform destroy");
    assert_eq!(text(&one("aws_s3_bucket_versioning")["versioning_configuration"][0]["status"]), "Enabled");
    let retention = &one("aws_s3_bucket_object_lock_configuration")["rule"][0]["default_retention"][0];
    assert_eq!(text(&retention["mode"]), "COMPLIANCE");
    assert_eq!(text(&retention["days"]), "${var.audit_checkpoint_retention_days}");
    let days = module["variable"].iter().find_map(|v| v.get("audit_checkpoint_retention_days")).unwrap();
    assert_eq!(days["default"], 365);
    let block = one("aws_s3_bucket_public_access_block");
    for setting in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"] {
        assert_eq!(block[setting], true, "{setting}");
    }
    let sse = &one("aws_s3_bucket_server_side_encryption_configuration")["rule"][0];
    assert!(!text(&sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"]).is_empty());

    assert_eq!(text(&one("aws_s3_bucket_policy")["policy"]), "${data.aws_iam_policy_document.checkpoints_bucket.json}");
    let policies = resources(&module, "data", "aws_iam_policy_document");
    let denies: Vec<(Vec<String>, _)> = statements(&policies, "checkpoints_bucket")
        .iter()
        .inspect(|s| assert_eq!(effect(s), "Deny", "the bucket policy only denies: {s}"))
        .map(|s| (actions(s), conditions(s)))
        .collect();
    let deny = |action: &str| denies.iter().find(|(a, _)| a.iter().any(|a| covers(a, action))).map(|(_, c)| c);
    assert_eq!(deny("s3:DeleteObjectVersion"), Some(&Default::default()), "deleting versions denied to all");
    assert_eq!(deny("s3:DeleteObject"), Some(&Default::default()), "delete markers denied to all");
    let writers = ("ArnNotEquals".into(), "aws:PrincipalArn".into(), "[\"${aws_iam_role.task.arn}\"]".into());
    assert_eq!(deny("s3:PutObject"), Some(&[writers].into()), "only the replicas write");
    let unconditional = ("Null".into(), "s3:if-none-match".into(), "[\"true\"]".into());
    assert!(
        denies.iter().any(|(a, c)| a == &["s3:PutObject"] && c == &[unconditional.clone()].into()),
        "a PutObject without If-None-Match is denied to all (no checkpoint is overwritten)"
    );
    let tls = denies.iter().find(|(a, _)| a == &["s3:*"]).map(|(_, c)| c.clone());
    assert_eq!(tls, Some([("Bool".into(), "aws:SecureTransport".into(), "[\"false\"]".into())].into()), "TLS only");

    // Where the replicas write (PRINCIPALD_AUDIT_CHECKPOINTS) and where auditors read.
    let locals: Vec<&Value> = module.get("locals").into_iter().flatten().collect();
    let uri = locals.iter().find_map(|l| l.get("audit_checkpoints")).map(text);
    assert_eq!(uri.as_deref(), Some("s3://${aws_s3_bucket.checkpoints.bucket}/${var.audit_checkpoints_prefix}"));
    let ecs = std::fs::read_to_string(common::terraform::repo().join("terraform/ecs.tf")).unwrap();
    assert!(ecs.contains("PRINCIPALD_AUDIT_CHECKPOINTS     = local.audit_checkpoints"), "ecs.tf");
    let outputs: Vec<&Value> = module.get("output").into_iter().flatten().collect();
    let bucket =
        outputs.iter().find_map(|o| o.get("audit_checkpoints_bucket")).expect("output audit_checkpoints_bucket");
    assert_eq!(text(&bucket["value"]), "${aws_s3_bucket.checkpoints.bucket}");
}

/// kms:Sign beyond the replicas' expected rate raises an alarm: KMS's usage metric for Sign, above a threshold
/// derived from the replicas unless given, notifying the module's topic.
#[test]
fn kms_sign_beyond_the_expected_rate_raises_an_alarm() {
    let module = module();
    let alarm = resources(&module, "resource", "aws_cloudwatch_metric_alarm").remove("kms_sign_rate").expect("alarm");
    assert_eq!(text(&alarm["namespace"]), "AWS/Usage");
    assert_eq!(text(&alarm["metric_name"]), "CallCount");
    let dimensions: Vec<(String, String)> =
        alarm["dimensions"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), text(v))).collect();
    let expected = [("Class", "None"), ("Resource", "Sign"), ("Service", "KMS"), ("Type", "API")];
    let mut sorted = dimensions.clone();
    sorted.sort();
    assert_eq!(sorted, expected.map(|(k, v)| (k.to_owned(), v.to_owned())), "{dimensions:?}");
    assert_eq!(text(&alarm["statistic"]), "Sum");
    assert_eq!(text(&alarm["comparison_operator"]), "GreaterThanThreshold");
    assert_eq!(text(&alarm["threshold"]), "${local.kms_sign_alarm_threshold}");
    let locals: Vec<&Value> = module.get("locals").into_iter().flatten().collect();
    let threshold = locals.iter().find_map(|l| l.get("kms_sign_alarm_threshold")).map(text).unwrap();
    assert!(threshold.contains("var.kms_sign_alarm_threshold") && threshold.contains("var.replicas *"), "{threshold}");
    let actions = text(&alarm["alarm_actions"]);
    assert!(actions.contains("aws_sns_topic.alarms.arn") && actions.contains("var.alarm_actions"), "{actions}");
    let topic = resources(&module, "resource", "aws_sns_topic").remove("alarms").expect("topic");
    assert_eq!(text(&topic["kms_master_key_id"]), "${aws_kms_key.data.arn}");
}
