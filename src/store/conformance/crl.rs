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

/// Suspension voids the principal's certificates by its floor; relying parties learn it from the revoked-certificate
/// reads (privilegeWithdrawn). Certificates issued after reactivation stay live, even when a sweep is finished late.
pub async fn suspension_revokes_what_the_floor_voids_and_nothing_after(store: Arc<dyn Store>) {
    use crate::model::PrincipalStatus::{Active, Suspended};
    let s = store.as_ref();
    let p = principal("held", PrincipalType::Worker);
    s.create_principal(&p, None).await.unwrap();
    for serial in ["0c", "1c"] {
        s.insert_certificate(&certificate(serial, &p, t0()), None).await.unwrap();
    }
    s.revoke_certificate(&"1c".parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    s.transition_principal(&p.id, &[Active], Suspended, Some("lost"), t0(), None).await.unwrap();
    let revoked = s.revoked_certificates(12, t0()).await.unwrap();
    let listed: Vec<(&str, RevocationReason)> = revoked.iter().map(|e| (e.serial.as_str(), e.reason)).collect();
    assert_eq!(
        listed,
        [("0c", RevocationReason::PrivilegeWithdrawn), ("1c", RevocationReason::Superseded)],
        "the voided certificate is listed, an earlier revocation keeps its reason"
    );
    // A key compromise found later replaces the withdrawal (once).
    let compromised = s.revoke_certificate(&"0c".parse().unwrap(), RevocationReason::KeyCompromise, t0(), None).await;
    assert_eq!(compromised.unwrap().revocation.unwrap().reason, RevocationReason::KeyCompromise);
    let again = s.revoke_certificate(&"0c".parse().unwrap(), RevocationReason::Superseded, t0(), None).await;
    assert!(matches!(again, Err(crate::error::Error::FailedPrecondition(_))), "{again:?}");
    let active = s.transition_principal(&p.id, &[Suspended], Active, None, t0(), None).await.unwrap();
    let mut fresh = certificate("2c", &active, t0());
    fresh.generation = active.generation;
    s.insert_certificate(&fresh, None).await.unwrap();
    s.finish_sweeps().await.unwrap();
    assert_eq!(s.get_certificate(&fresh.serial).await.unwrap().unwrap().revocation, None, "a live certificate stays");
    assert_eq!(s.revoked_certificates(12, t0()).await.unwrap().len(), 2);
}

/// CRL numbers come from one counter and only grow, also when handed out concurrently; a place keeps its
/// highest-numbered CRL whatever order writers arrive in; a CRL of 200 KiB round-trips.
pub async fn crl_numbers_grow_and_only_a_newer_crl_replaces_a_stored_one(store: Arc<dyn Store>) {
    use crate::pki::crl::StoredCrl;
    let first = store.next_crl_number().await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut numbers = Vec::new();
                for _ in 0..5 {
                    numbers.push(store.next_crl_number().await.unwrap());
                }
                numbers
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40, "every number handed out once");
    assert!(all[0] > first);
    let crl = |place: &str, number: u64, digest: &str| StoredCrl {
        place: place.into(),
        number,
        digest: digest.into(),
        this_update: t0(),
        next_update: t0() + time::Duration::hours(1),
        der: vec![0x30, 0x03, 0x02, 0x01, number as u8],
    };
    assert_eq!(store.stored_crl("0123456789abcdef/3").await.unwrap(), None);
    assert!(store.store_crl(&crl("0123456789abcdef/3", 5, "five")).await.unwrap());
    assert!(!store.store_crl(&crl("0123456789abcdef/3", 4, "four")).await.unwrap(), "an older CRL is refused");
    assert!(!store.store_crl(&crl("0123456789abcdef/3", 5, "again")).await.unwrap(), "so is the same number");
    assert_eq!(store.stored_crl("0123456789abcdef/3").await.unwrap(), Some(crl("0123456789abcdef/3", 5, "five")));
    assert!(store.store_crl(&crl("0123456789abcdef/3", 6, "six")).await.unwrap());
    assert_eq!(store.stored_crl("0123456789abcdef/3").await.unwrap().unwrap().digest, "six");
    let mut big = crl("3", 1, "big");
    big.der = vec![7; 200 * 1024];
    assert!(store.store_crl(&big).await.unwrap());
    assert_eq!(store.stored_crl("3").await.unwrap(), Some(big), "another place, stored apart");
    assert_eq!(store.stored_crl("0123456789abcdef/3").await.unwrap().unwrap().number, 6);
}

/// Revoking an intermediate revokes, for the CRLs, what it signed (cACompromise), and nothing another issuer signed;
/// an earlier revocation keeps its reason.
pub async fn revoking_an_intermediate_revokes_what_it_signed(store: Arc<dyn Store>) {
    use crate::model::IntermediateRecord;
    let s = store.as_ref();
    let (ours, theirs) = ("1d".repeat(32), "2e".repeat(32));
    for fingerprint in [&ours, &theirs] {
        let record = IntermediateRecord {
            fingerprint: fingerprint.clone(),
            replica: "replica-a".into(),
            not_before: t0() - time::Duration::minutes(1),
            not_after: t0() + time::Duration::days(31),
            der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            revoked_at: None,
        };
        s.record_intermediate(&record, None).await.unwrap();
    }
    let p = principal("signed", PrincipalType::Worker);
    s.create_principal(&p, None).await.unwrap();
    for (serial, issuer) in [("0d", &ours), ("1d", &ours), ("2d", &theirs), ("3d", &String::new())] {
        let mut cert = certificate(serial, &p, t0());
        cert.issuer = issuer.clone();
        s.insert_certificate(&cert, None).await.unwrap();
    }
    s.revoke_certificate(&"1d".parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    // What each issuer signed, one page at a time; revoked ones only when asked.
    let issued_by = |issuer: String, include_revoked: bool| async move {
        let (mut serials, mut token) = (Vec::new(), None);
        loop {
            let page = crate::store::PageRequest { size: 1, token };
            let page = s.list_issued_by(&issuer, include_revoked, &page).await.unwrap();
            serials.extend(page.items.into_iter().map(|c| c.serial.as_str().to_owned()));
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        serials.sort();
        serials
    };
    assert_eq!(issued_by(ours.clone(), true).await, ["0d", "1d"]);
    assert_eq!(issued_by(ours.clone(), false).await, ["0d"]);
    assert_eq!(issued_by(theirs.clone(), false).await, ["2d"]);
    assert!(issued_by("3f".repeat(32), true).await.is_empty());
    s.revoke_intermediate(&ours, t0(), None).await.unwrap();
    let listed: Vec<(String, RevocationReason)> = s
        .revoked_certificates(13, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.serial.as_str().to_owned(), e.reason))
        .collect();
    assert_eq!(
        listed,
        [("0d".to_owned(), RevocationReason::CaCompromise), ("1d".to_owned(), RevocationReason::Superseded)]
    );
    assert_eq!(s.finish_sweeps().await.unwrap(), 0, "nothing left to sweep");
}

/// A principal and `count` revoked, unexpired certificates of it with random serials, all in CRL partition
/// `partition` when given (else spread over all): what CRL tests and benchmarks import (`SqliteStore::import`).
pub fn revoked_fixture(
    count: u64,
    partition: Option<u8>,
) -> (crate::model::Principal, Vec<crate::model::CertificateRecord>) {
    use crate::model::{Revocation, Serial};
    let owner = principal("revoked-fixture", PrincipalType::Worker);
    let at = t0();
    let certificates = (0..count)
        .map(|i| {
            let mut serial = [0u8; 16];
            aws_lc_rs::rand::fill(&mut serial).expect("system randomness");
            serial[0] &= 0x7f;
            if let Some(p) = partition {
                serial[15] = (serial[15] & 0xf0) | (p & 0x0f);
            }
            let mut cert = certificate(Serial::from_bytes(&serial).as_str(), &owner, at - time::Duration::days(1));
            cert.sha256_fingerprint = format!("{i:064x}");
            cert.revocation = Some(Revocation { at, reason: RevocationReason::KeyCompromise });
            cert
        })
        .collect();
    (owner, certificates)
}
