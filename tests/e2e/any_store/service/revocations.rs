//! Revoking certificates over the API: key compromise reaches renewals, no admin revokes its own, serials as openssl prints them.

use super::*;

#[tokio::test]
async fn key_compromise_revokes_renewals_made_with_the_stolen_key() {
    let server = TestServer::start().await;
    let stolen = server.enroll("w1", pb::PrincipalType::Worker).await;
    // The thief renews with the stolen key before the owner notices.
    let mut thief = server.client(&stolen).await;
    let (thief_key, csr) = key_and_csr();
    let renewed = thief
        .renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let thief_creds = principald::client::Credentials {
        ca_pem: renewed.ca_chain_pem,
        cert_pem: renewed.certificate_pem,
        key_pem: thief_key.serialize_pem(),
    };
    let stolen_serial = thief.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().certificate_serial;

    let mut admin = server.admin().await;
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: stolen_serial,
            reason: pb::RevocationReason::KeyCompromise.into(),
        })
        .await
        .unwrap();
    let status = server.client(&thief_creds).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "the renewal made with the stolen key is revoked too: {status:?}");
    let list = admin
        .list_certificates(pb::ListCertificatesRequest {
            principal_id: "w1".into(),
            include_revoked: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.certificates.is_empty(), "{:?}", list.certificates);
    // A fresh certificate from an admin works again.
    let fresh = server.issue("w1").await;
    server.client(&fresh).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

#[tokio::test]
async fn an_admin_cannot_revoke_the_certificate_it_is_calling_with() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let me = admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    let status = admin
        .revoke_certificate(pb::RevokeCertificateRequest { serial: me.certificate_serial, reason: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    admin.who_am_i(pb::WhoAmIRequest {}).await.expect("still works");
}

/// A serial as openssl prints it (upper case, without DER's leading 00 byte) or with colons finds the certificate.
#[tokio::test]
async fn serials_round_trip_with_openssl() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin
        .create_principal(pb::CreatePrincipalRequest {
            id: "serials".into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Half of all serials have their top bit set (a leading 00 in DER); issue until one has.
    for _ in 0..64 {
        let creds = server.issue("serials").await;
        let (_d, file) = common::temp_file("cert.pem", &creds.cert_pem);
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&file)
            .output()
            .unwrap();
        let printed = String::from_utf8(out.stdout).unwrap().trim().strip_prefix("serial=").unwrap().to_owned();
        let found =
            admin.get_certificate(pb::GetCertificateRequest { serial: printed.clone() }).await.unwrap().into_inner();
        let stored = found.serial.clone();
        // The same number: hex digits after any leading zeros.
        assert_eq!(stored.trim_start_matches('0').to_ascii_uppercase(), printed.trim_start_matches('0'), "{printed}");
        let colons: Vec<String> =
            printed.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        let again = admin.get_certificate(pb::GetCertificateRequest { serial: colons.join(":") }).await.unwrap();
        assert_eq!(again.into_inner().serial, stored);
        if stored.starts_with("00") {
            assert!(!printed.starts_with("00"), "openssl drops the sign byte: {printed}");
            return;
        }
    }
    panic!("64 serials without the top bit set");
}
