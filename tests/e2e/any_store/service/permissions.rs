//! Who may call what: the permission matrix against the table, and an operator's permission file.

use super::*;

#[tokio::test]
async fn permission_matrix_matches_the_table() {
    let server = TestServer::start().await;
    server.admin().await.create_principal(create("target", pb::PrincipalType::Worker)).await.unwrap();
    let everyone = ["WhoAmI", "RenewCertificate"];
    let admin_only = [
        "CreatePrincipal",
        "GetPrincipal",
        "ListPrincipals",
        "SuspendPrincipal",
        "ActivatePrincipal",
        "DeletePrincipal",
        "IssueCertificate",
        "RevokeCertificate",
        "GetCertificate",
        "ListCertificates",
    ];
    for (id, kind) in [
        ("a2", pb::PrincipalType::Admin),
        ("w", pb::PrincipalType::Worker),
        ("u", pb::PrincipalType::User),
        ("s", pb::PrincipalType::Service),
    ] {
        let creds = server.enroll(id, kind).await;
        let mut client = server.client(&creds).await;
        for method in everyone {
            assert!(allowed(&mut client, method).await, "{kind:?} must be allowed {method}");
        }
        for method in admin_only {
            assert_eq!(allowed(&mut client, method).await, kind == pb::PrincipalType::Admin, "{kind:?} {method}");
        }
    }
}

#[tokio::test]
async fn operator_permission_file_extends_a_type() {
    let (_dir, path) =
        common::temp_file("permissions.json", r#"{"grants": {"service": ["principal.read", "jobs.submit"]}}"#);
    let server = TestServer::start_with(&["--permissions-file", path.to_str().unwrap()]).await;
    let creds = server.enroll("svc", pb::PrincipalType::Service).await;
    let mut client = server.client(&creds).await;
    let me = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me.permissions, ["certificate.renew-self", "jobs.submit", "principal.read", "token.issue"]);
    client.list_principals(pb::ListPrincipalsRequest::default()).await.expect("granted by the file");
    let denied = client.create_principal(create("x", pb::PrincipalType::User)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// Calls one RPC with a throwaway request and returns whether authorization let it through.
async fn allowed(client: &mut Client, method: &str) -> bool {
    let csr = || key_and_csr().1.into_bytes();
    let result: Result<(), tonic::Status> = match method {
        "WhoAmI" => client.who_am_i(pb::WhoAmIRequest {}).await.map(drop),
        "CreatePrincipal" => {
            client.create_principal(create(&format!("new-{}", rand_suffix()), pb::PrincipalType::User)).await.map(drop)
        }
        "GetPrincipal" => client.get_principal(pb::GetPrincipalRequest { id: "target".into() }).await.map(drop),
        "ListPrincipals" => client.list_principals(pb::ListPrincipalsRequest::default()).await.map(drop),
        "SuspendPrincipal" => client
            .suspend_principal(pb::SuspendPrincipalRequest { id: "nobody".into(), reason: String::new() })
            .await
            .map(drop),
        "ActivatePrincipal" => {
            client.activate_principal(pb::ActivatePrincipalRequest { id: "nobody".into() }).await.map(drop)
        }
        "DeletePrincipal" => {
            client.delete_principal(pb::DeletePrincipalRequest { id: "nobody".into() }).await.map(drop)
        }
        "IssueCertificate" => client
            .issue_certificate(pb::IssueCertificateRequest {
                principal_id: "target".into(),
                csr: csr(),
                validity_seconds: 0,
            })
            .await
            .map(drop),
        "RenewCertificate" => {
            client.renew_certificate(pb::RenewCertificateRequest { csr: csr(), validity_seconds: 0 }).await.map(drop)
        }
        "RevokeCertificate" => {
            client.revoke_certificate(pb::RevokeCertificateRequest { serial: "abcd".into(), reason: 0 }).await.map(drop)
        }
        "GetCertificate" => client.get_certificate(pb::GetCertificateRequest { serial: "abcd".into() }).await.map(drop),
        "ListCertificates" => client
            .list_certificates(pb::ListCertificatesRequest { principal_id: "target".into(), ..Default::default() })
            .await
            .map(drop),
        other => panic!("unknown method {other}"),
    };
    match result {
        Ok(()) => true,
        Err(status) if status.code() == Code::PermissionDenied => false,
        Err(status) => {
            assert!(matches!(status.code(), Code::NotFound | Code::InvalidArgument), "{method}: unexpected {status:?}");
            true
        }
    }
}

fn rand_suffix() -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    principald::model::hex(&bytes)
}
