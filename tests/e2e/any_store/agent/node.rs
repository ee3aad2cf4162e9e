//! Nodes and workload entries on the server side, and the agent's life: joining, restarting, outages.

use principald::proto::spiffe::X509svidRequest;
use principald::proto::{self as pb};
use tonic::Code;

use super::{Agent, entry, first_der, next_matching, node_token, serial_of, server};
use crate::common::{http_get, key_and_csr};

#[tokio::test]
async fn a_node_obtains_certificates_for_its_own_entries_only() {
    let server = server().await;
    let _agent = Agent::join(&server, "node-1").await;
    entry(&server, "mine", "node-1", 3600, &[]).await;
    let node2 = server.enroll("node-2", pb::PrincipalType::Node).await;
    let service = server.enroll("plain-svc", pb::PrincipalType::Service).await;
    let (_, csr) = key_and_csr();
    let request = || pb::IssueWorkloadCertificateRequest { workload_id: "mine".into(), csr_pem: csr.clone() };
    for (who, mut client) in [
        ("another node", server.client(&node2).await),
        ("an admin", server.admin().await),
        ("a service", server.client(&service).await),
    ] {
        let refused = client.issue_workload_certificate(request()).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
    }
    // The same refusal for an entry that does not exist: nodes cannot probe for other nodes' entries.
    let unknown = server
        .client(&node2)
        .await
        .issue_workload_certificate(pb::IssueWorkloadCertificateRequest {
            workload_id: "nope".into(),
            csr_pem: csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
    let listed = server
        .client(&node2)
        .await
        .list_node_workloads(pb::ListNodeWorkloadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.workloads.is_empty(), "node-2 sees no entry of node-1");
}

#[tokio::test]
async fn workload_entries_refuse_what_they_cannot_mean() {
    let server = server().await;
    server.enroll("svc-x", pb::PrincipalType::Service).await;
    server.enroll("node-x", pb::PrincipalType::Node).await;
    let create = |id: &str, node: &str, selectors: &[&str], kind: pb::PrincipalType| pb::CreateWorkloadRequest {
        id: id.into(),
        node: node.into(),
        selectors: selectors.iter().map(|s| s.to_string()).collect(),
        r#type: kind.into(),
        ttl_seconds: 0,
        description: String::new(),
    };
    let mut admin = server.admin().await;
    let cases = [
        (create("w1", "missing", &["unix:uid:1"], pb::PrincipalType::Service), Code::NotFound),
        (create("w1", "svc-x", &["unix:uid:1"], pb::PrincipalType::Service), Code::FailedPrecondition),
        (create("w1", "node-x", &["unix:gid:1"], pb::PrincipalType::Service), Code::InvalidArgument),
        (create("w1", "node-x", &["unix:uid:x"], pb::PrincipalType::Service), Code::InvalidArgument),
        (create("w1", "node-x", &["unix:uid:1"], pb::PrincipalType::Admin), Code::InvalidArgument),
        (create("w1", "node-x", &["unix:uid:1"], pb::PrincipalType::Node), Code::InvalidArgument),
        (create("svc-x", "node-x", &["unix:uid:1"], pb::PrincipalType::Service), Code::AlreadyExists),
    ];
    for (request, code) in cases {
        let refused = admin.create_workload(request.clone()).await.unwrap_err();
        assert_eq!(refused.code(), code, "{request:?}: {refused:?}");
    }
    // Nothing was left behind by the refusals.
    let missing = admin.get_principal(pb::GetPrincipalRequest { id: "w1".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let listed = admin.list_workloads(pb::ListWorkloadsRequest::default()).await.unwrap().into_inner();
    assert!(listed.workloads.is_empty());
    let created = admin
        .create_workload(create("w1", "node-x", &["unix:uid:1", "unix:path:/usr/bin/env"], pb::PrincipalType::Worker))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.spiffe_id, "spiffe://principald.local/worker/w1");
    assert_eq!(created.ttl_seconds, 3600);
    let principal = admin.get_principal(pb::GetPrincipalRequest { id: "w1".into() }).await.unwrap().into_inner();
    assert_eq!(principal.r#type, pb::PrincipalType::Worker as i32);
}

#[tokio::test]
async fn the_agent_restarts_from_its_data_dir_and_a_join_token_joins_once() {
    let server = server().await;
    let token = node_token(&server, "node-r2").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_at(dir.path(), Some(token.clone()), None).await;
    entry(&server, "restarts", "node-r2", 3600, &[]).await;
    let mut stream = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap();
    agent.stop().await.unwrap();
    assert!(!agent.socket.exists(), "the socket is removed at stop");
    let again = Agent::start_at(dir.path(), None, None).await;
    let mut stream = again.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut replay = Agent::start_at(other.path(), Some(token), None).await;
    let refused = replay.stop().await.unwrap_err();
    assert!(refused.to_string().contains("cannot join"), "{refused}");
}

#[tokio::test]
async fn cached_svids_are_served_while_principald_is_unreachable() {
    let server = server().await;
    let token = node_token(&server, "node-o").await;
    let dir = tempfile::tempdir().unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent = Agent::start_at(dir.path(), Some(token), Some(health)).await;
    entry(&server, "outage", "node-o", 3600, &[]).await;
    let mut stream = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    let before = next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap();
    let serial = serial_of(&first_der(&before.svids[0].x509_svid));
    let (code, body) = tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let _stopped = server.stop().await;
    // The agent notices, says so, and keeps serving what it holds.
    let mut said = String::new();
    for _ in 0..150 {
        let (_, body) = tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap();
        said = body;
        if said.contains("\"connected\":false") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(said.contains("\"connected\":false"), "{said}");
    let mut fresh = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    let during = fresh.message().await.unwrap().unwrap();
    assert_eq!(serial_of(&first_der(&during.svids[0].x509_svid)), serial);
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(health, "/metrics")).await.unwrap();
    assert!(metrics.contains("principald_agent_connected 0"), "{metrics}");
    assert!(metrics.contains("principald_agent_svids_served_total"), "{metrics}");
}
