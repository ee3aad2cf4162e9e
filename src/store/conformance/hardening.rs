//! Conformance checks for the hardened contract: the revocation floor, renewal once and only from a live parent,
//! page tokens, the CA claim and resumable sweeps.

use std::sync::Arc;

use super::{certificate, page, principal, t0};
use crate::error::Error;
use crate::model::CaClaim;
use crate::model::{
    CertificateRecord, IntermediateRecord, PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Serial, now,
};
use crate::store::{PageRequest, PrincipalFilter, Store};

fn serial(s: &str) -> Serial {
    s.parse().unwrap()
}

async fn cert(store: &Arc<dyn Store>, s: &str) -> CertificateRecord {
    store.get_certificate(&serial(s)).await.unwrap().expect("certificate exists")
}

pub async fn renewal_is_recorded_once_and_needs_an_unrevoked_current_parent(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    let other = principal("w2", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.create_principal(&other, None).await.unwrap();
    store.insert_certificate(&certificate("01", &p, t0()), None).await.unwrap();
    store.insert_renewal(&serial("01"), &certificate("02", &p, t0()), "k1", None).await.unwrap();
    let renewal = cert(&store, "01").await.renewal.expect("parent marked renewed");
    assert_eq!((renewal.serial.as_str(), renewal.key_sha256.as_str()), ("02", "k1"));
    assert_eq!(cert(&store, "02").await.renewal, None);

    let again = store.insert_renewal(&serial("01"), &certificate("03", &p, t0()), "k2", None).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    assert_eq!(store.get_certificate(&serial("03")).await.unwrap(), None, "a refused renewal stores nothing");

    store.insert_certificate(&certificate("04", &p, t0()), None).await.unwrap();
    store.revoke_certificate(&serial("04"), RevocationReason::Superseded, t0(), None).await.unwrap();
    let revoked = store.insert_renewal(&serial("04"), &certificate("05", &p, t0()), "k1", None).await;
    assert!(matches!(revoked, Err(Error::FailedPrecondition(_))), "{revoked:?}");
    assert_eq!(store.get_certificate(&serial("05")).await.unwrap(), None);

    store.insert_certificate(&certificate("06", &other, t0()), None).await.unwrap();
    let foreign = store.insert_renewal(&serial("06"), &certificate("07", &p, t0()), "k1", None).await;
    assert!(matches!(foreign, Err(Error::FailedPrecondition(_))), "{foreign:?}");
    let unknown = store.insert_renewal(&serial("99"), &certificate("08", &p, t0()), "k1", None).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    for s in ["07", "08"] {
        assert_eq!(store.get_certificate(&serial(s)).await.unwrap(), None);
    }
}

pub async fn key_compromise_voids_every_certificate_in_the_revoking_write(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    for s in ["01", "02", "03"] {
        store.insert_certificate(&certificate(s, &p, t0()), None).await.unwrap();
    }
    store.revoke_certificate(&serial("01"), RevocationReason::KeyCompromise, t0(), None).await.unwrap();
    let after = store.get_principal(&p.id).await.unwrap().unwrap();
    assert!(after.generation > p.generation, "the floor rose with the revocation");
    // Before any sweep: void for authentication and renewal alike.
    for s in ["02", "03"] {
        assert!(cert(&store, s).await.is_void_for(&after), "{s} is void");
    }
    let renewal = store.insert_renewal(&serial("02"), &certificate("04", &p, t0()), "k", None).await;
    assert!(matches!(renewal, Err(Error::FailedPrecondition(_))), "{renewal:?}");
    let stale = store.insert_certificate(&certificate("05", &p, t0()), None).await;
    assert!(matches!(stale, Err(Error::FailedPrecondition(_))), "issued under the old generation: {stale:?}");
    let mut fresh = certificate("06", &p, t0());
    fresh.generation = after.generation;
    store.insert_certificate(&fresh, None).await.unwrap();
    assert!(!cert(&store, "06").await.is_void_for(&after), "certificates issued after the floor are valid");
    store.revoke_all_certificates(&p.id, RevocationReason::KeyCompromise, t0()).await.unwrap();
    for s in ["02", "03"] {
        assert!(cert(&store, s).await.revocation.is_some(), "{s} swept");
    }
}

pub async fn suspension_and_deletion_raise_the_floor(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    store.insert_certificate(&certificate("01", &p, t0()), None).await.unwrap();
    let suspended = store
        .transition_principal(&p.id, &[PrincipalStatus::Active], PrincipalStatus::Suspended, None, t0(), None)
        .await
        .unwrap();
    assert!(suspended.generation > p.generation);
    let active = store
        .transition_principal(&p.id, &[PrincipalStatus::Suspended], PrincipalStatus::Active, None, t0(), None)
        .await
        .unwrap();
    assert_eq!(active.generation, suspended.generation, "activation restores no old certificate");
    assert!(cert(&store, "01").await.is_void_for(&active));
    let (deleted, _) = store.delete_principal(&p.id, t0(), None).await.unwrap();
    assert!(deleted.generation > active.generation);
}

/// Renewals and key-compromise revocations of the same certificate, fired together many times: afterwards every
/// certificate of the principal is revoked or void, whichever write won each race.
pub async fn renewals_racing_key_compromise_leave_no_live_descendant(store: Arc<dyn Store>) {
    for round in 0..12u32 {
        let p = principal(&format!("race{round}"), PrincipalType::Worker);
        store.create_principal(&p, None).await.unwrap();
        let parent = format!("{:02x}{:02x}", round, 0);
        store.insert_certificate(&certificate(&parent, &p, t0()), None).await.unwrap();
        let mut tasks = Vec::new();
        for attempt in 1..=3u32 {
            let (store, p, parent) = (store.clone(), p.clone(), parent.clone());
            tasks.push(tokio::spawn(async move {
                let child = certificate(&format!("{round:02x}{attempt:02x}"), &p, t0());
                let _ = store.insert_renewal(&serial(&parent), &child, &format!("k{attempt}"), None).await;
            }));
        }
        let (revoker, id, target) = (store.clone(), p.id.clone(), parent.clone());
        tasks.push(tokio::spawn(async move {
            revoker.revoke_certificate(&serial(&target), RevocationReason::KeyCompromise, t0(), None).await.unwrap();
        }));
        for task in tasks {
            task.await.unwrap();
        }
        let owner = store.get_principal(&id).await.unwrap().unwrap();
        let all = store.list_certificates(&id, true, &PageRequest { size: 100, token: None }).await.unwrap();
        // Read each by key: the listing may lag on DynamoDB, the point reads do not.
        for attempt in 0..=3u32 {
            if let Some(c) = store.get_certificate(&serial(&format!("{round:02x}{attempt:02x}"))).await.unwrap() {
                assert!(
                    c.revocation.is_some() || c.is_void_for(&owner),
                    "round {round}: certificate {} survived the key compromise ({} listed)",
                    c.serial,
                    all.items.len()
                );
            }
        }
    }
}

pub async fn page_tokens_from_elsewhere_are_invalid_arguments(store: Arc<dyn Store>) {
    for i in 0..3 {
        let p = principal(&format!("w{i}"), PrincipalType::Worker);
        store.create_principal(&p, None).await.unwrap();
        for s in 0..3 {
            store.insert_certificate(&certificate(&format!("{i:02x}{s:02x}"), &p, t0()), None).await.unwrap();
        }
    }
    let all = PrincipalFilter::default();
    let first = store.list_principals(&all, &page(1, None)).await.unwrap();
    let token = first.next_token.expect("more pages");
    let workers = PrincipalFilter { kind: Some(PrincipalType::Worker), status: None };
    let id: PrincipalId = "w0".parse().unwrap();
    let certs = store.list_certificates(&id, true, &page(1, None)).await.unwrap().next_token.expect("more pages");
    let mut forged = token.clone();
    forged.replace_range(3..4, if &token[3..4] == "A" { "B" } else { "A" });
    for bad in ["garbage!", "", "AAAA", "w0", &token[..token.len() - 3], &forged, &certs] {
        let got = store.list_principals(&all, &page(1, Some(bad.to_owned()))).await;
        assert!(matches!(got, Err(Error::InvalidArgument(_))) || bad.is_empty(), "principals with {bad:?}: {got:?}");
    }
    let other_listing = store.list_principals(&workers, &page(1, Some(token.clone()))).await;
    assert!(matches!(other_listing, Err(Error::InvalidArgument(_))), "{other_listing:?}");
    for bad in ["garbage!", "AAAA", token.as_str(), &certs[..certs.len() - 2]] {
        let got = store.list_certificates(&id, true, &page(1, Some(bad.to_owned()))).await;
        assert!(matches!(got, Err(Error::InvalidArgument(_))), "certificates with {bad:?}: {got:?}");
    }
    let other_principal = store.list_certificates(&"w1".parse().unwrap(), true, &page(1, Some(certs.clone()))).await;
    assert!(matches!(other_principal, Err(Error::InvalidArgument(_))), "{other_principal:?}");
    assert_eq!(store.list_principals(&all, &page(1, Some(token))).await.unwrap().items[0].id.as_str(), "w1");
}

pub async fn the_first_ca_claim_wins(store: Arc<dyn Store>) {
    let claim = |fp: String| CaClaim { certificate_pem: format!("certificate {fp}"), fingerprint: fp };
    let claims: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            let mine = claim(format!("{i:064x}"));
            tokio::spawn(async move { store.claim_ca(&mine, false, None).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for claim in claims {
        answers.push(claim.await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "one CA recorded: {answers:?}");
    assert_eq!(answers[0].certificate_pem, format!("certificate {}", answers[0].fingerprint), "with its certificate");
    assert_eq!(
        store.claim_ca(&claim("f".repeat(64)), false, None).await.unwrap(),
        answers[0],
        "later claims see the first"
    );
    assert_eq!(
        store.claim_ca(&claim("e".repeat(64)), true, None).await.unwrap(),
        claim("e".repeat(64)),
        "forced: replaced"
    );
    assert_eq!(store.claim_ca(&claim("f".repeat(64)), false, None).await.unwrap(), claim("e".repeat(64)));
}

pub async fn intermediates_are_recorded_and_revoked_once(store: Arc<dyn Store>) {
    let at = now();
    let record = |fp: &str| IntermediateRecord {
        fingerprint: fp.into(),
        replica: "replica-a".into(),
        not_before: at - time::Duration::minutes(1),
        not_after: at + time::Duration::days(31),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        revoked_at: None,
    };
    store.record_intermediate(&record("aa"), None).await.unwrap();
    store.record_intermediate(&record("aa"), None).await.unwrap();
    store.record_intermediate(&record("bb"), None).await.unwrap();
    let mut listed = store.list_intermediates().await.unwrap();
    listed.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    assert_eq!(listed, vec![record("aa"), record("bb")]);

    let epoch = store.revocation_epoch().await.unwrap();
    let revoked = store.revoke_intermediate("aa", at, None).await.unwrap();
    assert_eq!(revoked.revoked_at.map(|t| t.unix_timestamp()), Some(at.unix_timestamp()));
    assert!(store.revocation_epoch().await.unwrap() > epoch, "revoking an intermediate moves the epoch");
    let again = store.revoke_intermediate("aa", at, None).await;
    assert!(matches!(again, Err(Error::FailedPrecondition(_))), "{again:?}");
    let unknown = store.revoke_intermediate("cc", at, None).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    let listed = store.list_intermediates().await.unwrap();
    assert_eq!(listed.iter().filter(|r| r.revoked_at.is_some()).count(), 1);
    assert_eq!(store.revoked_intermediates().await.unwrap().into_iter().collect::<Vec<_>>(), ["aa"]);

    let old = IntermediateRecord { not_after: at - time::Duration::days(40), ..record("dd") };
    store.record_intermediate(&old, None).await.unwrap();
    let revoked_old = IntermediateRecord { not_after: at - time::Duration::days(40), ..record("ee") };
    store.record_intermediate(&revoked_old, None).await.unwrap();
    store.revoke_intermediate("ee", at - time::Duration::days(41), None).await.unwrap();
    let key = |kid: &str, expires_at: time::OffsetDateTime| crate::model::TokenKeyRecord {
        kid: kid.into(),
        replica: "replica-a".into(),
        public_jwk: "{}".into(),
        created_at: expires_at - time::Duration::days(1),
        expires_at,
    };
    store.record_token_key(&key("old-key", at - time::Duration::days(40)), None).await.unwrap();
    store.record_token_key(&key("live-key", at + time::Duration::days(1)), None).await.unwrap();
    assert_eq!(
        store.forget_expired(at - time::Duration::days(30)).await.unwrap(),
        3,
        "only the long-expired intermediates and token key"
    );
    let mut left: Vec<String> = store.list_intermediates().await.unwrap().into_iter().map(|r| r.fingerprint).collect();
    left.sort();
    assert_eq!(left, ["aa", "bb"]);
    let revoked: Vec<String> = store.revoked_intermediates().await.unwrap().into_iter().collect();
    assert_eq!(revoked, ["aa"], "a forgotten intermediate leaves the revoked set");
    let keys: Vec<String> =
        store.list_token_keys(at - time::Duration::days(100)).await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(keys, ["live-key"], "the long-expired token key is gone");
    assert_eq!(store.forget_expired(at - time::Duration::days(30)).await.unwrap(), 0, "nothing left");
}

pub async fn interrupted_sweeps_are_finished(store: Arc<dyn Store>) {
    let p = principal("w1", PrincipalType::Worker);
    store.create_principal(&p, None).await.unwrap();
    for s in ["01", "02", "03"] {
        store.insert_certificate(&certificate(s, &p, t0()), None).await.unwrap();
    }
    // The revoking write alone, as if the process died before sweeping.
    store.revoke_certificate(&serial("01"), RevocationReason::KeyCompromise, t0(), None).await.unwrap();
    store.finish_sweeps().await.unwrap();
    for s in ["02", "03"] {
        let revocation = cert(&store, s).await.revocation.expect("swept");
        assert_eq!(revocation.reason, RevocationReason::KeyCompromise);
    }
    assert_eq!(store.finish_sweeps().await.unwrap(), 0, "nothing left to finish");
}
