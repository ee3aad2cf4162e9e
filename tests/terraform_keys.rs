//! The CA keys' policies in terraform/: the replicas use the keys, named administrators administer them, the deploy
//! role alone changes their policies, and explicit denies keep everyone else (the account root and any `kms:*` IAM
//! policy included) from using them, changing their policies or granting their use.

mod common;

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
