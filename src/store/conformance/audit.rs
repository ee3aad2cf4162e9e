//! Conformance checks of the audit log: an event exists exactly when its change committed, chains hold together
//! under concurrent writers, and listings filter and page.

use std::sync::Arc;

use super::{certificate, principal, t0};
use crate::audit::chain::{Report, Verifier};
use crate::audit::{AuditEvent, AuditFilter, Origin, Recorded, Recorder, kind};
use crate::model::{PrincipalStatus, PrincipalType, RevocationReason, Serial};

fn serial(s: &str) -> Serial {
    s.parse().unwrap()
}
use crate::model::CaClaim;
use crate::store::{PageRequest, Store};

pub(super) fn event(what: &str, target: &str) -> AuditEvent {
    Recorder::new("conformance", true)
        .event(&Origin::system("conformance"), what, target, serde_json::json!({ "n": 1 }))
        .expect("enabled")
}

/// Every event of every chain, read the way `principalctl audit verify` reads them, and the verification's report.
pub async fn read_and_verify(store: &dyn Store) -> (Vec<Recorded>, Report) {
    let heads = store.audit_heads().await.unwrap();
    let mut verifier = Verifier::new(&heads);
    let mut all = Vec::new();
    for head in &heads {
        let mut after = 0;
        loop {
            let events = store.audit_chain(&head.chain, after, 7).await.unwrap();
            if events.is_empty() {
                break;
            }
            for e in &events {
                verifier.push(e);
                after = e.seq;
            }
            all.extend(events);
        }
    }
    (all, verifier.finish())
}

pub(super) async fn kinds(store: &dyn Store) -> Vec<String> {
    let (events, report) = read_and_verify(store).await;
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    // Chain order, then time (events of one chain are in commit order already).
    let mut events: Vec<AuditEvent> = events.into_iter().map(|r| r.event).collect();
    events.sort_by_key(|e| e.time_ms);
    events.into_iter().map(|e| e.kind).collect()
}

pub async fn audit_events_commit_with_their_change_or_not_at_all(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let p = principal("w1", PrincipalType::Worker);
    s.create_principal(&p, Some(&event(kind::PRINCIPAL_CREATED, "w1"))).await.unwrap();
    // Refused changes record nothing.
    assert!(s.create_principal(&p, Some(&event(kind::PRINCIPAL_CREATED, "w1"))).await.is_err());
    let (from, to) = ([PrincipalStatus::Suspended], PrincipalStatus::Active);
    let activate = event(kind::PRINCIPAL_ACTIVATED, "w1");
    assert!(s.transition_principal(&p.id, &from, to, None, t0(), Some(&activate)).await.is_err());
    let (unknown, revoke) = (serial("99"), event(kind::CERTIFICATE_REVOKED, "99"));
    assert!(s.revoke_certificate(&unknown, RevocationReason::Superseded, t0(), Some(&revoke)).await.is_err());
    assert_eq!(kinds(s).await, [kind::PRINCIPAL_CREATED]);

    s.insert_certificate(&certificate("01", &p, t0()), Some(&event(kind::CERTIFICATE_ISSUED, "01"))).await.unwrap();
    let renewal = certificate("02", &p, t0());
    s.insert_renewal(&serial("01"), &renewal, "k", Some(&event(kind::CERTIFICATE_RENEWED, "02"))).await.unwrap();
    let again = certificate("03", &p, t0());
    assert!(
        s.insert_renewal(&serial("01"), &again, "k2", Some(&event(kind::CERTIFICATE_RENEWED, "03"))).await.is_err()
    );
    let revoke = Some(event(kind::CERTIFICATE_REVOKED, "02"));
    s.revoke_certificate(&serial("02"), RevocationReason::Superseded, t0(), revoke.as_ref()).await.unwrap();
    let (from, to) = ([PrincipalStatus::Active], PrincipalStatus::Suspended);
    let suspend = Some(event(kind::PRINCIPAL_SUSPENDED, "w1"));
    s.transition_principal(&p.id, &from, to, Some("test"), t0(), suspend.as_ref()).await.unwrap();
    // A certificate for a suspended principal is refused, and so is its event.
    let refused = certificate("04", &p, t0());
    assert!(s.insert_certificate(&refused, Some(&event(kind::CERTIFICATE_ISSUED, "04"))).await.is_err());
    s.delete_principal(&p.id, t0(), Some(&event(kind::PRINCIPAL_DELETED, "w1"))).await.unwrap();
    assert!(s.delete_principal(&p.id, t0(), Some(&event(kind::PRINCIPAL_DELETED, "w1"))).await.is_err());
    assert_eq!(
        kinds(s).await,
        [
            kind::PRINCIPAL_CREATED,
            kind::CERTIFICATE_ISSUED,
            kind::CERTIFICATE_RENEWED,
            kind::CERTIFICATE_REVOKED,
            kind::PRINCIPAL_SUSPENDED,
            kind::PRINCIPAL_DELETED
        ]
    );
}

pub async fn ca_claims_intermediates_and_token_keys_record_one_event_each(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let claim = |fp: &str| CaClaim { fingerprint: fp.repeat(64), certificate_pem: "pem".into() };
    s.claim_ca(&claim("a"), false, Some(&event(kind::CA_CLAIMED, "a"))).await.unwrap();
    // The loser of a claim changed nothing: no event.
    assert_eq!(s.claim_ca(&claim("b"), false, Some(&event(kind::CA_CLAIMED, "b"))).await.unwrap(), claim("a"));
    let record = crate::model::IntermediateRecord {
        fingerprint: "c".repeat(64),
        replica: "r1".into(),
        not_before: t0(),
        not_after: t0() + time::Duration::days(1),
        der: vec![1, 2, 3],
        revoked_at: None,
    };
    for _ in 0..2 {
        s.record_intermediate(&record, Some(&event(kind::INTERMEDIATE_CREATED, &record.fingerprint))).await.unwrap();
    }
    let revoke = Some(event(kind::INTERMEDIATE_REVOKED, &record.fingerprint));
    s.revoke_intermediate(&record.fingerprint, t0(), revoke.as_ref()).await.unwrap();
    assert!(s.revoke_intermediate(&record.fingerprint, t0(), revoke.as_ref()).await.is_err());
    let token_key = crate::model::TokenKeyRecord {
        kid: "k1".into(),
        replica: "r1".into(),
        public_jwk: "{}".into(),
        created_at: t0(),
        expires_at: t0() + time::Duration::hours(2),
    };
    for _ in 0..2 {
        s.record_token_key(&token_key, Some(&event(kind::TOKEN_KEY_CREATED, "k1"))).await.unwrap();
    }
    let expired = crate::model::TokenKeyRecord { kid: "k0".into(), expires_at: t0(), ..token_key.clone() };
    s.record_token_key(&expired, None).await.unwrap();
    assert_eq!(s.list_token_keys(t0()).await.unwrap(), std::slice::from_ref(&token_key), "expired keys are not listed");
    assert!(s.list_token_keys(t0() + time::Duration::hours(3)).await.unwrap().is_empty());
    s.append_audit(&[event(kind::REQUESTS_REFUSED, "192.0.2.1")]).await.unwrap();
    assert_eq!(
        kinds(s).await,
        [
            kind::CA_CLAIMED,
            kind::INTERMEDIATE_CREATED,
            kind::INTERMEDIATE_REVOKED,
            kind::TOKEN_KEY_CREATED,
            kind::REQUESTS_REFUSED
        ]
    );
}

pub async fn audit_chains_hold_together_under_concurrent_writers(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            let p = principal(&format!("c{i}"), PrincipalType::Service);
            store.create_principal(&p, Some(&event(kind::PRINCIPAL_CREATED, p.id.as_str()))).await.unwrap();
            let c = certificate(&format!("{:02x}", i + 1), &p, t0());
            store.insert_certificate(&c, Some(&event(kind::CERTIFICATE_ISSUED, c.serial.as_str()))).await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let (events, report) = read_and_verify(store.as_ref()).await;
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!((events.len(), report.events), (80, 80));
    let heads = store.audit_heads().await.unwrap();
    assert_eq!(heads.iter().map(|h| h.seq).sum::<u64>(), 80, "{heads:?}");
}

pub async fn audit_listings_filter_and_page(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let before = crate::audit::now_ms();
    for i in 0..9 {
        let p = principal(&format!("l{i}"), PrincipalType::User);
        s.create_principal(&p, Some(&event(kind::PRINCIPAL_CREATED, p.id.as_str()))).await.unwrap();
    }
    let p = principal("l0", PrincipalType::User);
    let c = certificate("0c", &p, t0());
    s.insert_certificate(&c, Some(&event(kind::CERTIFICATE_ISSUED, "0c"))).await.unwrap();

    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s.list_audit(&AuditFilter::default(), &PageRequest { size: 4, token }).await.unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items.into_iter().map(|r| r.event));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    // Newest first, across pages, with and without a window: the same events, the other way round.
    for filter in [
        AuditFilter { newest_first: true, ..AuditFilter::default() },
        AuditFilter {
            newest_first: true,
            since_ms: Some(before),
            until_ms: Some(crate::audit::now_ms() + 1),
            ..AuditFilter::default()
        },
    ] {
        let (mut newest, mut token) = (Vec::new(), None);
        loop {
            let page = s.list_audit(&filter, &PageRequest { size: 3, token }).await.unwrap();
            newest.extend(page.items.into_iter().map(|r| r.event));
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        newest.reverse();
        assert_eq!(newest, seen, "newest first is the same listing reversed ({filter:?})");
    }
    let (newest, first) =
        (AuditFilter { newest_first: true, ..AuditFilter::default() }, PageRequest { size: 1, token: None });
    let newest = s.list_audit(&newest, &first).await.unwrap();
    assert_eq!(newest.items[0].event.target, "0c", "the most recent event first");
    let only = |filter: AuditFilter| async move {
        s.list_audit(&filter, &PageRequest { size: 100, token: None }).await.unwrap().items
    };
    let issued = only(AuditFilter { kind: Some(kind::CERTIFICATE_ISSUED.into()), ..AuditFilter::default() }).await;
    assert_eq!(issued.iter().map(|r| r.event.target.as_str()).collect::<Vec<_>>(), ["0c"]);
    assert_eq!(only(AuditFilter { target: Some("l3".into()), ..AuditFilter::default() }).await.len(), 1);
    assert_eq!(only(AuditFilter { actor: Some("conformance".into()), ..AuditFilter::default() }).await.len(), 10);
    assert!(only(AuditFilter { actor: Some("nobody".into()), ..AuditFilter::default() }).await.is_empty());
    let window =
        AuditFilter { since_ms: Some(before), until_ms: Some(crate::audit::now_ms() + 1), ..AuditFilter::default() };
    assert_eq!(only(window).await.len(), 10);
    assert!(only(AuditFilter { until_ms: Some(before), ..AuditFilter::default() }).await.is_empty());
    let foreign = PageRequest { size: 4, token: Some("not-a-token".into()) };
    assert!(s.list_audit(&AuditFilter::default(), &foreign).await.is_err());
}

/// Writes five events into one chain (sequentially, so a single-writer chain holds all of them: SQLite has one chain,
/// DynamoDB uses the first free one) and returns that chain's name. For tamper tests that then edit the store.
pub async fn five_chained_events(store: &dyn Store) -> String {
    for i in 0..5 {
        let p = principal(&format!("t{i}"), PrincipalType::Worker);
        store.create_principal(&p, Some(&event(kind::PRINCIPAL_CREATED, p.id.as_str()))).await.unwrap();
    }
    let heads = store.audit_heads().await.unwrap();
    let head = heads.iter().max_by_key(|h| h.seq).expect("a chain");
    assert_eq!(head.seq, 5, "sequential writes share a chain: {heads:?}");
    let (_, report) = read_and_verify(store).await;
    assert!(report.broken.is_empty(), "intact before tampering: {:?}", report.broken);
    head.chain.clone()
}

/// The first broken position that verification finds, after tampering.
pub async fn first_break(store: &dyn Store) -> Option<u64> {
    let (_, report) = read_and_verify(store).await;
    report.broken.first().map(|b| b.seq)
}
