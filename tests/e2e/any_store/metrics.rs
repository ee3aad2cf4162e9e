//! `/metrics` end to end: what a scrape shows after real traffic over mTLS, that no unbounded value becomes a label,
//! and that every metric the shipped Grafana dashboard and Prometheus alert rules use is one the server exports.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use principald::proto::{self as pb};

async fn scrape(server: &TestServer) -> String {
    let addr = server.running.health_addr;
    let (code, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    assert_eq!(code, 200);
    body
}

/// The value of the sample `name{labels}` (labels as written, in order), if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Every metric family name the exposition declares (`# TYPE name kind`), with the sample suffixes it implies.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        names.insert(name.to_owned());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_rpcs_authentication_the_store_certificates_and_connections() {
    let server = TestServer::start().await;
    let worker = server.enroll("metrics-worker", pb::PrincipalType::Worker).await;
    let mut admin = server.admin().await;
    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let mut client = server.client(&worker).await;
    let denied = client.list_principals(pb::ListPrincipalsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let (_key, csr) = common::key_and_csr();
    let renewed = client.renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 });
    let serial = renewed.await.unwrap().into_inner().certificate.unwrap().serial;
    admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 4 }).await.unwrap();
    // A client certificate from another CA fails the handshake.
    let other = principald::pki::ca::CertificateAuthority::generate("other", time::Duration::days(1)).unwrap();
    let params = rcgen::CertificateParams::new(vec![]).unwrap();
    let mut foreign = common::mint_with(&other, &params);
    foreign.ca_pem = server.ca_pem();
    let endpoint = principald::client::endpoint(&server.url, &foreign).unwrap();
    let _ = endpoint.connect().await; // refused by the server's verifier
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = scrape(&server).await;
    let rpc = |method: &str, code: &str| {
        sample(
            &text,
            "principald_rpc_requests_total",
            &format!("method=\"principal.v1.PrincipalService/{method}\",code=\"{code}\""),
        )
    };
    assert!(rpc("WhoAmI", "OK").unwrap_or(0.0) >= 2.0, "{text}");
    assert_eq!(rpc("ListPrincipals", "PERMISSION_DENIED"), Some(1.0), "{text}");
    assert_eq!(rpc("RenewCertificate", "OK"), Some(1.0));
    assert!(
        sample(&text, "principald_rpc_duration_seconds_count", "method=\"principal.v1.PrincipalService/WhoAmI\"")
            .unwrap_or(0.0)
            >= 2.0
    );
    assert_eq!(sample(&text, "principald_auth_requests_total", "outcome=\"permission_denied\""), Some(1.0));
    assert!(sample(&text, "principald_auth_requests_total", "outcome=\"ok\"").unwrap_or(0.0) >= 4.0);
    assert!(sample(&text, "principald_auth_cache_total", "outcome=\"hit\"").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "principald_auth_cache_total", "outcome=\"miss\"").unwrap_or(0.0) >= 1.0);
    assert!(sample(&text, "principald_certificates_total", "event=\"issued\"").unwrap_or(0.0) >= 1.0);
    assert_eq!(sample(&text, "principald_certificates_total", "event=\"renewed\""), Some(1.0));
    assert_eq!(sample(&text, "principald_certificates_total", "event=\"revoked\""), Some(1.0));
    assert!(
        sample(&text, "principald_store_operation_duration_seconds_count", "operation=\"insert_certificate\"")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(sample(&text, "principald_connections_open", "listener=\"grpc\"").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        sample(&text, "principald_tls_handshake_failures_total", "reason=\"bad_certificate\"").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    let age = sample(&text, "principald_revocation_epoch_age_seconds", "").unwrap();
    assert!((0.0..5.0).contains(&age), "{age}");
    let ca_left = sample(&text, "principald_certificate_expiry_seconds", "certificate=\"ca\"").unwrap();
    assert!(ca_left > 86_400.0 * 300.0, "{ca_left}");
    assert!(sample(&text, "principald_certificate_expiry_seconds", "certificate=\"server\"").unwrap() > 0.0);
    assert_eq!(sample(&text, "principald_ready", ""), Some(1.0));
    // No principal id, serial or address is a label value.
    for unbounded in ["metrics-worker", "admin\"", "127.0.0.1"] {
        assert!(!text.contains(unbounded), "{unbounded} in {text}");
    }
    let unknown = text.lines().filter(|l| l.contains("method=\"unknown\"")).count();
    assert_eq!(unknown, 0);
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alert_rules_use_is_exported() {
    let server = TestServer::start().await;
    // Give every labelled family at least one sample.
    let mut admin = server.admin().await;
    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let exported = exported(&scrape(&server).await);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for file in ["deploy/grafana/principald-dashboard.json", "deploy/prometheus/principald-alerts.yml"] {
        let text = std::fs::read_to_string(repo.join(file)).unwrap();
        let used: BTreeSet<String> = text
            .match_indices("principald_")
            .map(|(i, _)| text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
            .collect();
        assert!(used.len() >= 5, "{file} uses {used:?}");
        for name in &used {
            assert!(exported.contains(name), "{file} uses {name}, which /metrics does not export: {exported:?}");
            checked += 1;
        }
    }
    assert!(checked >= 10);
    // The dashboard is valid JSON with panels; the rules file has the alerts the operators' guide names.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("deploy/grafana/principald-dashboard.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
    let rules = std::fs::read_to_string(repo.join("deploy/prometheus/principald-alerts.yml")).unwrap();
    for alert in [
        "PrincipaldCaExpiringSoon",
        "PrincipaldServerCertificateExpiringSoon",
        "PrincipaldRevocationEpochLag",
        "PrincipaldHighErrorRate",
        "PrincipaldStoreUnavailable",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
