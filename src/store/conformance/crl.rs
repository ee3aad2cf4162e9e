//! Conformance of the revoked-certificate reads CRLs are built from.

use std::sync::Arc;

use super::{certificate, principal, t0};
use crate::model::{PrincipalType, RevocationReason};
use crate::pki::crl::partition_of;
use crate::store::Store;

pub async fn revoked_certificates_are_read_by_partition_while_unexpired(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let p = principal("crl", PrincipalType::Worker);
    s.create_principal(&p, None).await.unwrap();
    // Two partitions (a and b), two certificates each; one of each revoked, and one revoked in partition a by a
    // key-compromise sweep of another principal.
    for serial in ["0a", "1a", "0b", "1b"] {
        s.insert_certificate(&certificate(serial, &p, t0()), None).await.unwrap();
    }
    for serial in ["0a", "0b"] {
        s.revoke_certificate(&serial.parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    }
    let q = principal("crl2", PrincipalType::Worker);
    s.create_principal(&q, None).await.unwrap();
    s.insert_certificate(&certificate("2a", &q, t0()), None).await.unwrap();
    s.revoke_all_certificates(&q.id, RevocationReason::KeyCompromise, t0()).await.unwrap();

    let a = s.revoked_certificates(10, t0()).await.unwrap();
    let serials: Vec<&str> = a.iter().map(|e| e.serial.as_str()).collect();
    assert_eq!(serials, ["0a", "2a"]);
    assert_eq!(a[0].reason, RevocationReason::Superseded);
    assert_eq!(a[1].reason, RevocationReason::KeyCompromise);
    assert!(a.iter().all(|e| partition_of(&e.serial) == 10 && e.issuer.is_empty()));
    assert_eq!(s.revoked_certificates(11, t0()).await.unwrap().len(), 1);
    assert!(s.revoked_certificates(12, t0()).await.unwrap().is_empty());
    // Past their expiry they are gone from the CRL.
    let later = t0() + time::Duration::days(31);
    assert!(s.revoked_certificates(10, later).await.unwrap().is_empty());
}
