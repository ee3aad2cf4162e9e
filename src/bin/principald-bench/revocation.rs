//! (d) Revocation figures: how long after a revocation the next request is refused, on the same replica and on
//! another one sharing the store.

use std::time::{Duration, Instant};

use principald::client::Credentials;
use principald::proto as pb;

use crate::report::Row;
use crate::{Client, connect, csr};

/// A worker with a fresh certificate and a warm connection, for the revocation figures.
async fn fresh_worker(url: &str, admin: &mut Client, id: &str) -> (Credentials, String) {
    let _ = admin
        .create_principal(pb::CreatePrincipalRequest {
            id: id.into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await;
    let (key, csr) = csr();
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest { principal_id: id.into(), csr, validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let serial = issued.certificate.unwrap().serial;
    let _ = url;
    (
        Credentials { ca_pem: issued.ca_chain_pem, cert_pem: issued.certificate_pem, key_pem: key.serialize_pem() },
        serial,
    )
}

async fn time_to_rejection(victim: &mut Client, since: Instant) -> Duration {
    loop {
        if victim.who_am_i(pb::WhoAmIRequest {}).await.is_err() {
            return since.elapsed();
        }
        if since.elapsed() > Duration::from_secs(30) {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summarize(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(*samples.last().unwrap()))
}

/// (d) from RevokeCertificate returning until the revoked certificate is rejected, same replica.
pub async fn revocation_same_replica(rows: &mut Vec<Row>, url: &str, admin: &Credentials) {
    let mut admin = connect(url, admin).await;
    let mut samples = Vec::new();
    for i in 0..20 {
        let (creds, serial) = fresh_worker(url, &mut admin, &format!("revoke-{i:02}")).await;
        let mut victim = connect(url, &creds).await;
        victim.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 1 }).await.unwrap();
        let since = Instant::now();
        samples.push(time_to_rejection(&mut victim, since).await);
    }
    let rejected_first = samples.iter().all(|d| *d < Duration::from_millis(50));
    let (p50, max) = summarize(samples);
    rows.push(
        Row::new("d", "revocation -> rejection, same replica (20 runs)", p50, "ms")
            .target("immediate: the next request", rejected_first)
            .note(format!("median; max {max:.2} ms; that is one WhoAmI round trip")),
    );
}

/// (d) the same across two replicas on one DynamoDB.
pub async fn revocation_cross_replica(rows: &mut Vec<Row>, a: &str, b: &str, admin: &Credentials) {
    let mut admin = connect(a, admin).await;
    let mut samples = Vec::new();
    for i in 0..10 {
        let (creds, serial) = fresh_worker(a, &mut admin, &format!("cross-{i:02}")).await;
        let mut victim = connect(b, &creds).await;
        victim.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 1 }).await.unwrap();
        samples.push(time_to_rejection(&mut victim, Instant::now()).await);
    }
    let (p50, max) = summarize(samples);
    rows.push(
        Row::new("d", "revocation -> rejection, other replica (10 runs)", p50, "ms")
            .target("<= 2000 ms", max <= 2000.0)
            .note(format!("median; max {max:.0} ms; bound: --revocation-poll 1 s + one GetItem")),
    );
}
