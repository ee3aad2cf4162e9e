//! The one test suite every [`Store`] backend must pass. Each check takes a fresh, empty store and panics on the
//! first violation of the trait's contract. Backends run it with [`store_conformance_tests!`](crate::store_conformance_tests).

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Serial,
};
use crate::store::{PageRequest, PrincipalFilter, Store};

mod audit;
mod crl;
mod enrollment;
mod hardening;
pub use audit::*;
pub use crl::*;
pub use enrollment::*;
pub use hardening::*;

/// Expands to one `#[tokio::test]` per conformance check; `$make` is an async expression yielding a fresh empty
/// `Arc<dyn Store>` (each test gets its own).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            principal_round_trips, duplicate_principal_is_refused_and_changes_nothing, unknown_ids_are_none,
            principals_list_in_id_order_across_pages, principal_filters_apply, transitions_check_the_current_status,
            delete_revokes_every_certificate_atomically, certificates_need_an_active_principal_of_the_same_type,
            certificate_round_trips_and_serials_are_unique, certificates_list_newest_first_across_pages,
            revocation_happens_once, concurrent_inserts_are_all_kept, withdrawals_advance_the_revocation_epoch, revoke_all_revokes_only_that_principals_certificates, ping_answers,
            renewal_is_recorded_once_and_needs_an_unrevoked_current_parent, key_compromise_voids_every_certificate_in_the_revoking_write,
            suspension_and_deletion_raise_the_floor, renewals_racing_key_compromise_leave_no_live_descendant,
            page_tokens_from_elsewhere_are_invalid_arguments, the_first_ca_claim_wins, interrupted_sweeps_are_finished,
            intermediates_are_recorded_and_revoked_once, audit_events_commit_with_their_change_or_not_at_all,
            ca_claims_intermediates_and_token_keys_record_one_event_each, audit_chains_hold_together_under_concurrent_writers,
            audit_listings_filter_and_page, revoked_certificates_are_read_by_partition_while_unexpired,
            enrollment_tokens_are_consumed_once_with_their_certificate, enrollment_tokens_are_listed_and_revoked_once,
            suspension_revokes_what_the_floor_voids_and_nothing_after,
            crl_numbers_grow_and_only_a_newer_crl_replaces_a_stored_one, revoking_an_intermediate_revokes_what_it_signed);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::store::Store> = $make;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}

/// Now, in whole seconds: fixtures must not expire (DynamoDB treats certificates past their TTL as gone), and stores
/// keep seconds.
fn t0() -> OffsetDateTime {
    crate::model::now()
}

pub fn principal(id: &str, kind: PrincipalType) -> Principal {
    Principal {
        id: id.parse().unwrap(),
        kind,
        status: PrincipalStatus::Active,
        description: format!("{id} for tests"),
        email: Some(format!("{id}@example.test")),
        status_reason: None,
        created_at: t0(),
        updated_at: t0(),
        generation: 0,
    }
}

pub fn certificate(serial: &str, owner: &Principal, not_before: OffsetDateTime) -> CertificateRecord {
    CertificateRecord {
        serial: serial.parse().unwrap(),
        principal_id: owner.id.clone(),
        principal_type: owner.kind,
        not_before,
        not_after: not_before + Duration::days(30),
        sha256_fingerprint: "00".repeat(32),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        revocation: None,
        generation: owner.generation,
        renewal: None,
        issuer: String::new(),
    }
}

fn id(s: &str) -> PrincipalId {
    s.parse().unwrap()
}

fn page(size: u32, token: Option<String>) -> PageRequest {
    PageRequest { size, token }
}

pub async fn principal_round_trips(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    assert_eq!(store.get_principal(&p.id).await.unwrap(), Some(p));
    let mut no_email = principal("u1", PrincipalType::User);
    no_email.email = None;
    store.create_principal(&no_email, None).await.unwrap();
    assert_eq!(store.get_principal(&no_email.id).await.unwrap(), Some(no_email));
}

pub async fn duplicate_principal_is_refused_and_changes_nothing(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let mut other = principal("w1", PrincipalType::Admin);
    other.description = "impostor".into();
    assert!(matches!(store.create_principal(&other, None).await, Err(Error::AlreadyExists(_))));
    assert_eq!(store.get_principal(&p.id).await.unwrap(), Some(p.clone()));
    // Ids of deleted principals are never reused.
    store.delete_principal(&p.id, t0(), None).await.unwrap();
    assert!(matches!(store.create_principal(&p, None).await, Err(Error::AlreadyExists(_))));
}

pub async fn unknown_ids_are_none(store: Arc<dyn Store>) {
    assert_eq!(store.get_principal(&id("nobody")).await.unwrap(), None);
    assert_eq!(store.get_certificate(&"abcd".parse().unwrap()).await.unwrap(), None);
    assert!(matches!(
        store
            .transition_principal(
                &id("nobody"),
                &[PrincipalStatus::Active],
                PrincipalStatus::Suspended,
                None,
                t0(),
                None
            )
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(store.delete_principal(&id("nobody"), t0(), None).await, Err(Error::NotFound(_))));
    assert!(matches!(
        store.revoke_certificate(&"abcd".parse().unwrap(), RevocationReason::Unspecified, t0(), None).await,
        Err(Error::NotFound(_))
    ));
    let empty = store.list_certificates(&id("nobody"), true, &page(10, None)).await.unwrap();
    assert!(empty.items.is_empty() && empty.next_token.is_none());
}

pub async fn principals_list_in_id_order_across_pages(store: Arc<dyn Store>) {
    let mut ids: Vec<String> = (0..25).map(|i| format!("p{:02}", (i * 7) % 25)).collect();
    for i in &ids {
        store.create_principal(&principal(i, PrincipalType::Worker), None).await.unwrap();
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let got = store.list_principals(&PrincipalFilter::default(), &page(10, token)).await.unwrap();
        assert!(got.items.len() <= 10);
        seen.extend(got.items.into_iter().map(|p| p.id.as_str().to_owned()));
        token = got.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
}

pub async fn principal_filters_apply(store: Arc<dyn Store>) {
    for (name, kind) in [
        ("a1", PrincipalType::Admin),
        ("w1", PrincipalType::Worker),
        ("w2", PrincipalType::Worker),
        ("s1", PrincipalType::Service),
    ] {
        store.create_principal(&principal(name, kind), None).await.unwrap();
    }
    store
        .transition_principal(
            &id("w2"),
            &[PrincipalStatus::Active],
            PrincipalStatus::Suspended,
            Some("why"),
            t0(),
            None,
        )
        .await
        .unwrap();
    let list = |kind, status| {
        let store = store.clone();
        async move {
            let got = store.list_principals(&PrincipalFilter { kind, status }, &page(100, None)).await.unwrap();
            got.items.into_iter().map(|p| p.id.as_str().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some(PrincipalType::Worker), None).await, ["w1", "w2"]);
    assert_eq!(list(Some(PrincipalType::Worker), Some(PrincipalStatus::Active)).await, ["w1"]);
    assert_eq!(list(None, Some(PrincipalStatus::Suspended)).await, ["w2"]);
    assert_eq!(list(None, None).await, ["a1", "s1", "w1", "w2"]);
    assert!(list(Some(PrincipalType::User), None).await.is_empty());
}

pub async fn transitions_check_the_current_status(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let later = t0() + Duration::hours(1);
    let s = store
        .transition_principal(
            &p.id,
            &[PrincipalStatus::Active],
            PrincipalStatus::Suspended,
            Some("laptop lost"),
            later,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.status_reason.as_deref(), s.updated_at, s.created_at),
        (PrincipalStatus::Suspended, Some("laptop lost"), later, t0())
    );
    let again = store
        .transition_principal(&p.id, &[PrincipalStatus::Active], PrincipalStatus::Suspended, None, later, None)
        .await;
    assert!(matches!(again, Err(Error::FailedPrecondition(ref m)) if m.contains("suspended")), "{again:?}");
    let a = store
        .transition_principal(&p.id, &[PrincipalStatus::Suspended], PrincipalStatus::Active, None, later, None)
        .await
        .unwrap();
    assert_eq!((a.status, a.status_reason.as_deref()), (PrincipalStatus::Active, None));
    assert_eq!(store.get_principal(&p.id).await.unwrap(), Some(a));
}

pub async fn delete_revokes_every_certificate_atomically(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    let other = principal("w2", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.create_principal(&other, None).await.unwrap();
    for (i, serial) in ["01", "02", "03"].iter().enumerate() {
        store.insert_certificate(&certificate(serial, &p, t0() + Duration::minutes(i as i64)), None).await.unwrap();
    }
    store.insert_certificate(&certificate("04", &other, t0()), None).await.unwrap();
    store.revoke_certificate(&"01".parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    let at = t0() + Duration::days(1);
    let (deleted, revoked) = store.delete_principal(&p.id, at, None).await.unwrap();
    assert_eq!((deleted.status, revoked), (PrincipalStatus::Deleted, 2));
    assert!(deleted.generation > p.generation, "deletion raises the revocation floor");
    let first = store.get_certificate(&"01".parse().unwrap()).await.unwrap().unwrap().revocation.unwrap();
    assert_eq!(first.reason, RevocationReason::Superseded, "an earlier revocation is kept");
    for serial in ["02", "03"] {
        let r = store.get_certificate(&serial.parse().unwrap()).await.unwrap().unwrap().revocation.unwrap();
        assert_eq!((r.at, r.reason), (at, RevocationReason::CessationOfOperation));
    }
    assert_eq!(store.get_certificate(&"04".parse().unwrap()).await.unwrap().unwrap().revocation, None);
    assert!(matches!(store.delete_principal(&p.id, at, None).await, Err(Error::FailedPrecondition(_))));
    assert!(matches!(
        store.transition_principal(&p.id, &[PrincipalStatus::Suspended], PrincipalStatus::Active, None, at, None).await,
        Err(Error::FailedPrecondition(_))
    ));
}

pub async fn certificates_need_an_active_principal_of_the_same_type(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let ghost = principal("ghost", PrincipalType::Worker);
    assert!(matches!(store.insert_certificate(&certificate("01", &ghost, t0()), None).await, Err(Error::NotFound(_))));
    let mut wrong_type = certificate("02", &p, t0());
    wrong_type.principal_type = PrincipalType::Admin;
    assert!(matches!(store.insert_certificate(&wrong_type, None).await, Err(Error::FailedPrecondition(_))));
    store
        .transition_principal(&p.id, &[PrincipalStatus::Active], PrincipalStatus::Suspended, None, t0(), None)
        .await
        .unwrap();
    assert!(matches!(
        store.insert_certificate(&certificate("03", &p, t0()), None).await,
        Err(Error::FailedPrecondition(_))
    ));
    for serial in ["01", "02", "03"] {
        assert_eq!(
            store.get_certificate(&serial.parse().unwrap()).await.unwrap(),
            None,
            "refused insert {serial} left nothing"
        );
    }
}

pub async fn certificate_round_trips_and_serials_are_unique(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let c = certificate("0a1b", &p, t0());
    store.insert_certificate(&c, None).await.unwrap();
    assert_eq!(store.get_certificate(&c.serial).await.unwrap(), Some(c.clone()));
    let mut dup = certificate("0a1b", &p, t0() + Duration::hours(1));
    dup.der = vec![1, 2, 3];
    assert!(matches!(store.insert_certificate(&dup, None).await, Err(Error::AlreadyExists(_))));
    assert_eq!(store.get_certificate(&c.serial).await.unwrap(), Some(c));
}

pub async fn certificates_list_newest_first_across_pages(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    let other = principal("w2", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.create_principal(&other, None).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..12u8 {
        // Pairs share a not_before, so the serial must break ties.
        let c = certificate(&format!("{:02x}", i + 1), &p, t0() + Duration::minutes(i64::from(i / 2)));
        store.insert_certificate(&c, None).await.unwrap();
        expected.push(c.serial.clone());
    }
    store.insert_certificate(&certificate("ff", &other, t0()), None).await.unwrap();
    store.revoke_certificate(&"05".parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    expected.reverse();
    let collect = |include_revoked: bool| {
        let (store, owner) = (store.clone(), p.id.clone());
        async move {
            let (mut seen, mut token) = (Vec::<Serial>::new(), None);
            loop {
                let got = store.list_certificates(&owner, include_revoked, &page(5, token)).await.unwrap();
                seen.extend(got.items.into_iter().map(|c| c.serial));
                token = got.next_token;
                if token.is_none() {
                    return seen;
                }
            }
        }
    };
    assert_eq!(collect(true).await, expected);
    let unrevoked: Vec<Serial> = expected.iter().filter(|s| s.as_str() != "05").cloned().collect();
    assert_eq!(collect(false).await, unrevoked);
}

pub async fn revocation_happens_once(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let c = certificate("01", &p, t0());
    store.insert_certificate(&c, None).await.unwrap();
    let at = t0() + Duration::hours(2);
    let revoked = store.revoke_certificate(&c.serial, RevocationReason::KeyCompromise, at, None).await.unwrap();
    assert_eq!(revoked.revocation.map(|r| (r.at, r.reason)), Some((at, RevocationReason::KeyCompromise)));
    let again = store.revoke_certificate(&c.serial, RevocationReason::Superseded, at + Duration::hours(1), None).await;
    assert!(matches!(again, Err(Error::FailedPrecondition(_))), "{again:?}");
    assert_eq!(store.get_certificate(&c.serial).await.unwrap(), Some(revoked));
}

pub async fn concurrent_inserts_are_all_kept(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let (store, c) = (store.clone(), certificate(&format!("{:04x}", i + 1), &p, t0()));
            tokio::spawn(async move { store.insert_certificate(&c, None).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = store.list_certificates(&p.id, true, &page(1000, None)).await.unwrap();
    assert_eq!(got.items.len(), 64);
}

pub async fn withdrawals_advance_the_revocation_epoch(store: Arc<dyn Store>) {
    let start = store.revocation_epoch().await.unwrap();
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.insert_certificate(&certificate("01", &p, t0()), None).await.unwrap();
    store.insert_certificate(&certificate("02", &p, t0()), None).await.unwrap();
    assert_eq!(store.revocation_epoch().await.unwrap(), start, "creation and issuance withdraw nothing");
    let mut last = start;
    let mut advanced = |now: u64, what: &str| {
        assert!(now > last, "{what} must advance the epoch ({last} -> {now})");
        last = now;
    };
    store.revoke_certificate(&"01".parse().unwrap(), RevocationReason::KeyCompromise, t0(), None).await.unwrap();
    advanced(store.revocation_epoch().await.unwrap(), "revoke");
    store
        .transition_principal(&p.id, &[PrincipalStatus::Active], PrincipalStatus::Suspended, None, t0(), None)
        .await
        .unwrap();
    advanced(store.revocation_epoch().await.unwrap(), "suspend");
    store
        .transition_principal(&p.id, &[PrincipalStatus::Suspended], PrincipalStatus::Active, None, t0(), None)
        .await
        .unwrap();
    let after_activate = store.revocation_epoch().await.unwrap();
    store.delete_principal(&p.id, t0(), None).await.unwrap();
    assert!(store.revocation_epoch().await.unwrap() > after_activate, "delete must advance the epoch");
    // A refused withdrawal changes nothing.
    let before = store.revocation_epoch().await.unwrap();
    assert!(store.revoke_certificate(&"01".parse().unwrap(), RevocationReason::Unspecified, t0(), None).await.is_err());
    assert_eq!(store.revocation_epoch().await.unwrap(), before);
}

pub async fn revoke_all_revokes_only_that_principals_certificates(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    let other = principal("w2", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.create_principal(&other, None).await.unwrap();
    for serial in ["01", "02", "03"] {
        store.insert_certificate(&certificate(serial, &p, t0()), None).await.unwrap();
    }
    store.insert_certificate(&certificate("04", &other, t0()), None).await.unwrap();
    store.revoke_certificate(&"01".parse().unwrap(), RevocationReason::Superseded, t0(), None).await.unwrap();
    let before = store.revocation_epoch().await.unwrap();
    let at = t0() + Duration::hours(1);
    assert_eq!(store.revoke_all_certificates(&p.id, RevocationReason::KeyCompromise, at).await.unwrap(), 2);
    assert!(store.revocation_epoch().await.unwrap() > before);
    let reason = |serial: &str| {
        let store = store.clone();
        let serial: Serial = serial.parse().unwrap();
        async move { store.get_certificate(&serial).await.unwrap().unwrap().revocation.map(|r| r.reason) }
    };
    assert_eq!(reason("01").await, Some(RevocationReason::Superseded), "earlier revocations are kept");
    assert_eq!(reason("02").await, Some(RevocationReason::KeyCompromise));
    assert_eq!(reason("03").await, Some(RevocationReason::KeyCompromise));
    assert_eq!(reason("04").await, None, "other principals are untouched");
    assert_eq!(
        store.revoke_all_certificates(&"nobody".parse().unwrap(), RevocationReason::KeyCompromise, at).await.unwrap(),
        0
    );
}

pub async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}
