//! The audit log end to end, over real mTLS: what each change records (actor, certificate, source, method), refusals
//! aggregated per source and reason, who may read it, and `principalctl audit list|watch|verify`. Runs on SQLite, and
//! on DynamoDB Local with PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

use std::time::Duration;

use common::{TestServer, principalctl};
use principald::proto::{self as pb};
use serde_json::Value;
use tonic::Code;

async fn events(server: &TestServer, filter: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let mut admin = server.admin().await;
    let mut out = Vec::new();
    let mut request = filter;
    loop {
        let page = admin.list_audit_events(request.clone()).await.expect("list audit events").into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

fn of_type(kind: &str) -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest { r#type: kind.into(), ..Default::default() }
}

fn pem_der(pem: &str) -> Vec<u8> {
    pem::parse(pem).unwrap().into_contents()
}

#[tokio::test]
async fn every_change_is_recorded_with_its_actor_certificate_source_and_method() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let (_key, csr) = common::key_and_csr();
    let renewed = server
        .client(&worker)
        .await
        .renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let serial = renewed.certificate.unwrap().serial;
    let mut admin = server.admin().await;
    admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "w1".into(), reason: "audit test".into() })
        .await
        .unwrap();
    admin.activate_principal(pb::ActivatePrincipalRequest { id: "w1".into() }).await.unwrap();
    let revoke = pb::RevokeCertificateRequest { serial: serial.clone(), reason: 4 };
    admin.revoke_certificate(revoke).await.unwrap();
    // A refused change records nothing.
    let again = admin.suspend_principal(pb::SuspendPrincipalRequest { id: "nobody".into(), reason: String::new() });
    assert_eq!(again.await.unwrap_err().code(), Code::NotFound);

    let all = events(&server, pb::ListAuditEventsRequest::default()).await;
    let kinds: Vec<&str> = all.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ca.claimed",
            "principal.created",
            "certificate.issued",
            "principal.created",
            "certificate.issued",
            "certificate.renewed",
            "principal.suspended",
            "principal.activated",
            "certificate.revoked"
        ],
        "bootstrap's three, then the API's"
    );
    let admin_sha256 = principald::model::sha256_hex(&pem_der(&server.admin.cert_pem));
    for event in &all[..3] {
        let actor = event.actor.as_ref().unwrap();
        assert_eq!((actor.principal_id.as_str(), actor.principal_type.as_str()), ("bootstrap", "system"));
    }
    for event in all[3..].iter().filter(|e| e.r#type != "certificate.renewed") {
        let actor = event.actor.as_ref().unwrap();
        assert_eq!(actor.principal_id, "admin", "{event:?}");
        assert_eq!(actor.certificate_sha256, admin_sha256, "the certificate the admin called with");
        assert!(event.source_address.starts_with("127.0.0.1:"), "{event:?}");
        assert!(event.rpc.starts_with("/principal.v1.PrincipalService/"), "{event:?}");
        assert_eq!(event.outcome, "ok");
    }
    let renewal = all.iter().find(|e| e.r#type == "certificate.renewed").unwrap();
    assert_eq!(renewal.actor.as_ref().unwrap().principal_id, "w1");
    assert_eq!(renewal.target, serial);
    let details: Value = serde_json::from_str(&renewal.details_json).unwrap();
    assert_eq!(details["principal"], "w1");
    assert!(details["previous"].is_string(), "{details}");
    assert_eq!(renewal.rpc, "/principal.v1.PrincipalService/RenewCertificate");
    let suspended = &events(&server, of_type("principal.suspended")).await[0];
    assert_eq!(suspended.target, "w1");
    assert_eq!(serde_json::from_str::<Value>(&suspended.details_json).unwrap()["reason"], "audit test");
    // Nothing secret: no PEM, no key material anywhere in the log.
    for event in &all {
        let text = format!("{event:?}");
        assert!(!text.contains("BEGIN") && !text.contains("PRIVATE"), "{text}");
    }
}

/// Authentication refusals are one `unauthenticated` event per source, with the typed causes counted inside it.
#[tokio::test]
async fn refused_authentications_count_their_causes() {
    let server = TestServer::start_with(&["--audit-refusals-every", "1s"]).await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let serial = server.client(&worker).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    server
        .admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest { serial: serial.certificate_serial, reason: 0 })
        .await
        .unwrap();
    // Signed by the CA but never issued through the store.
    let (from, to) = (
        time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    );
    let params = principald::pki::profile::client_certificate(
        &principald::pki::oid::IdentityOids::default(),
        "principald.local",
        principald::model::PrincipalType::Worker,
        &"w1".parse().unwrap(),
        from,
        to,
    )
    .unwrap();
    let unregistered = server.mint(&params);
    for _ in 0..3 {
        assert_eq!(
            server.client(&worker).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        server.client(&unregistered).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    for _ in 0..100 {
        let refused = events(&server, of_type("requests.refused")).await;
        let details: Vec<Value> = refused.iter().map(|e| serde_json::from_str(&e.details_json).unwrap()).collect();
        let causes = |cause: &str| -> u64 {
            details
                .iter()
                .filter(|d| d["reason"] == "unauthenticated")
                .filter_map(|d| d["causes"][cause].as_u64())
                .sum()
        };
        if causes("revoked") >= 3 && causes("unregistered") >= 1 {
            assert_eq!((causes("revoked"), causes("unregistered")), (3, 1), "{details:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no requests.refused event with the causes");
}

#[tokio::test]
async fn refusals_are_aggregated_per_source_and_reason_and_only_admins_read_the_log() {
    let server = TestServer::start_with(&["--audit-refusals-every", "1s"]).await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    let denied = client.list_audit_events(pb::ListAuditEventsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    for _ in 0..49 {
        let status = client.list_principals(pb::ListPrincipalsRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let mut counted = 0;
    for _ in 0..100 {
        let refused = events(&server, of_type("requests.refused")).await;
        counted = refused
            .iter()
            .map(|e| serde_json::from_str::<Value>(&e.details_json).unwrap())
            .filter(|d| d["reason"] == "permission_denied")
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        if counted >= 50 {
            assert!(refused.len() <= 3, "aggregated, not one event per request: {}", refused.len());
            assert!(refused.iter().all(|e| e.target == "127.0.0.1" && e.outcome == "refused"), "{refused:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counted, 50);
}

#[tokio::test]
async fn failed_tls_handshakes_are_refusals_too() {
    let server = TestServer::start_with(&["--audit-refusals-every", "1s"]).await;
    let other = principald::pki::ca::CertificateAuthority::generate("other", time::Duration::days(1)).unwrap();
    let mut foreign = common::mint_with(&other, &rcgen::CertificateParams::new(vec![]).unwrap());
    foreign.ca_pem = server.ca_pem();
    for _ in 0..3 {
        let endpoint = principald::client::endpoint(&server.url, &foreign).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            let mut client = pb::principal_service_client::PrincipalServiceClient::new(channel);
            assert!(client.who_am_i(pb::WhoAmIRequest {}).await.is_err());
        }
    }
    for _ in 0..100 {
        let refused = events(&server, of_type("requests.refused")).await;
        let details: Vec<Value> = refused.iter().map(|e| serde_json::from_str(&e.details_json).unwrap()).collect();
        if let Some(d) = details.iter().find(|d| d["reason"] == "bad_certificate") {
            assert!(d["count"].as_u64().unwrap() >= 1, "{d}");
            assert!(!d["sample"].as_str().unwrap().is_empty(), "{d}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no requests.refused event for the failed handshakes");
}

#[tokio::test]
async fn principalctl_lists_watches_resumes_and_verifies() {
    let server = TestServer::start().await;
    for id in ["a1", "a2", "a3"] {
        server.enroll(id, pb::PrincipalType::Service).await;
    }
    let profile = server.data_dir.join("profiles").join("admin");

    let verified = principalctl(&profile, &["audit", "verify"]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success() && text.contains("audit log intact: 9 events"), "{text} {verified:?}");

    let listed = principalctl(&profile, &["audit", "list", "-o", "json", "--type", "principal.created"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> =
        String::from_utf8(listed.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let targets: Vec<&str> = lines.iter().map(|l| l["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["admin", "a1", "a2", "a3"], "JSON lines, oldest first");
    let table = principalctl(&profile, &["audit", "list", "--actor", "admin", "--since", "1h"]).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("TIME") && table.lines().count() == 7, "{table}");

    let watched = principalctl(&profile, &["audit", "watch", "--no-follow", "-o", "json"]).await;
    let watched: Vec<Value> =
        String::from_utf8(watched.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(watched.len(), 9);
    // Resuming after the fourth event prints exactly the five after it.
    let position = watched[3]["position"].as_str().unwrap();
    let resumed =
        principalctl(&profile, &["audit", "watch", "--no-follow", "-o", "json", "--position", position]).await;
    let resumed: Vec<Value> =
        String::from_utf8(resumed.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&resumed), ids(&watched[4..]));
    let bad = principalctl(&profile, &["audit", "watch", "--no-follow", "--position", "junk!"]).await;
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("invalid position"), "{bad:?}");

    // By default the most recent events, in the order they happened; --from-start goes back to the first.
    let recent = principalctl(&profile, &["audit", "list", "--limit", "2", "-o", "json"]).await;
    let recent: Vec<Value> =
        String::from_utf8(recent.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ids(&recent), ids(&watched[7..]), "the two most recent, oldest of them first");
    let first = principalctl(&profile, &["audit", "list", "--limit", "1", "--from-start", "-o", "json"]).await;
    let first: Vec<Value> =
        String::from_utf8(first.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ids(&first), ids(&watched[..1]));
    // Tables carry the details (a suspension's reason) and watch tables a header and each event's position.
    assert!(principalctl(&profile, &["principal", "suspend", "a1", "--reason", "lost laptop"]).await.status.success());
    let table = principalctl(&profile, &["audit", "list", "--limit", "1"]).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("DETAILS"), "{table}");
    assert!(table.contains("principal.suspended") && table.contains("lost laptop"), "{table}");
    let watch = principalctl(&profile, &["audit", "watch", "--no-follow"]).await;
    let watch = String::from_utf8(watch.stdout).unwrap();
    let (header, last) = (watch.lines().next().unwrap(), watch.lines().last().unwrap());
    assert!(header.starts_with("TIME") && header.ends_with("POSITION"), "{watch}");
    let positions =
        principalctl(&profile, &["audit", "watch", "--no-follow", "-o", "json", "--position", position]).await;
    let newest: Value =
        serde_json::from_str(String::from_utf8(positions.stdout).unwrap().lines().last().unwrap()).unwrap();
    assert!(last.ends_with(newest["position"].as_str().unwrap()), "{last}");
    // An event type no event can have is refused, naming the known ones.
    let unknown = principalctl(&profile, &["audit", "list", "--type", "certificate.issue"]).await;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown event type") && stderr.contains("certificate.issued"), "{stderr}");
}

#[tokio::test]
async fn a_following_watch_sees_new_events() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let request = pb::WatchAuditEventsRequest { position: String::new(), from_now: true, follow: true };
    let mut stream = admin.watch_audit_events(request).await.unwrap().into_inner();
    server.enroll("late", pb::PrincipalType::Worker).await;
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((first.r#type.as_str(), first.target.as_str()), ("principal.created", "late"));
    let second = tokio::time::timeout(Duration::from_secs(20), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.r#type, "certificate.issued");
}

/// An edited event in the SQLite file makes `principalctl audit verify` fail and name the position.
#[tokio::test]
async fn principalctl_verify_reports_tampering() {
    if common::dynamo::e2e_on_dynamodb() {
        return; // the store-level tamper tests cover DynamoDB (tests/checks/store_dynamodb.rs)
    }
    let server = TestServer::start().await;
    server.enroll("t1", pb::PrincipalType::Worker).await;
    let db = principald::datadir::DataDir::new(&server.data_dir).database();
    rusqlite::Connection::open(db).unwrap().execute("UPDATE audit_events SET target = 'x' WHERE seq = 4", []).unwrap();
    let profile = server.data_dir.join("profiles").join("admin");
    let verified = principalctl(&profile, &["audit", "verify"]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(!verified.status.success(), "{text}");
    assert!(text.contains("breaks at position 4") && text.contains("altered"), "{text}");
}

#[tokio::test]
async fn a_replica_with_the_audit_log_off_says_so_in_the_log_first() {
    let server = TestServer::start_with(&["--audit", "off"]).await;
    let disabled = events(&server, of_type("audit.disabled")).await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0].target, server.config().replica_id);
    // What it does afterwards is not recorded.
    server.enroll("unrecorded", pb::PrincipalType::Worker).await;
    assert!(events(&server, of_type("principal.created")).await.iter().all(|e| e.target != "unrecorded"));
}

/// Deleting a chain's head hides the chain from a head-driven read; `principalctl audit verify` still finds its
/// events and names the chain. On SQLite (the row in audit_chains) and on DynamoDB (the head item in meta).
#[tokio::test]
async fn verify_finds_a_chain_whose_head_was_deleted() {
    let server = TestServer::start().await;
    server.enroll("headless", pb::PrincipalType::Worker).await;
    let chain = events(&server, pb::ListAuditEventsRequest::default()).await.last().unwrap().chain.clone();
    match &server.config().store {
        principald::store::StoreConfig::Dynamodb(config) => {
            let client = principald::store::dynamodb::DynamoStore::client(config).await;
            let key = aws_sdk_dynamodb::types::AttributeValue::S(format!("audit#{chain}"));
            let table = format!("{}meta", config.table_prefix);
            client.delete_item().table_name(table).key("key", key).send().await.unwrap();
        }
        _ => {
            let db = principald::datadir::DataDir::new(&server.data_dir).database();
            let deleted = rusqlite::Connection::open(db)
                .unwrap()
                .execute("DELETE FROM audit_chains WHERE chain = ?1", [&chain])
                .unwrap();
            assert_eq!(deleted, 1);
        }
    }
    let profile = server.data_dir.join("profiles").join("admin");
    let verified = principalctl(&profile, &["audit", "verify"]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(!verified.status.success(), "{text}");
    assert!(text.contains(&format!("chain {chain:?}")) && text.contains("no head record"), "{text}");
}
