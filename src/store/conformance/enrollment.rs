//! Conformance of one-time enrollment tokens: made, consumed once with their certificate, listed and revoked.

use std::sync::Arc;

use super::{certificate, principal, t0};
use crate::model::PrincipalType;
use crate::store::Store;

pub async fn enrollment_tokens_are_consumed_once_with_their_certificate(store: Arc<dyn Store>) {
    use crate::error::Error;
    use crate::model::EnrollmentToken;
    let s = store.as_ref();
    let p = principal("enrollee", PrincipalType::Worker);
    let other = principal("other", PrincipalType::Worker);
    s.create_principal(&p, None).await.unwrap();
    s.create_principal(&other, None).await.unwrap();
    let token = |hash: &str, ttl: i64| EnrollmentToken {
        hash: hash.into(),
        principal: p.id.clone(),
        generation: p.generation,
        created_at: t0(),
        expires_at: t0() + time::Duration::seconds(ttl),
        max_validity: None,
    };
    let refused = |r: crate::error::Result<()>, why: &str| match r {
        Err(Error::Unauthenticated(m)) => assert!(m.contains(why), "{m} (expected {why})"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    };
    s.create_enrollment_token(&token("aa", 3600), None).await.unwrap();
    s.create_enrollment_token(&token("ee", 0), None).await.unwrap();
    let ghost = EnrollmentToken { principal: "ghost".parse().unwrap(), ..token("gg", 3600) };
    assert!(s.create_enrollment_token(&ghost, None).await.is_err(), "tokens only for existing principals");

    refused(s.enroll("ff", &certificate("e1", &p, t0()), t0(), None).await, "unknown");
    refused(s.enroll("ee", &certificate("e2", &p, t0()), t0(), None).await, "expired");
    refused(s.enroll("aa", &certificate("e3", &other, t0()), t0(), None).await, "another principal");
    // Two concurrent uses: exactly one wins; the loser changes nothing.
    let (e4, e5) = (certificate("e4", &p, t0()), certificate("e5", &p, t0()));
    let (a, b) = tokio::join!(s.enroll("aa", &e4, t0(), None), s.enroll("aa", &e5, t0(), None));
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let (won, lost) = if a.is_ok() { ("e4", "e5") } else { ("e5", "e4") };
    assert!(s.get_certificate(&won.parse().unwrap()).await.unwrap().is_some());
    assert!(s.get_certificate(&lost.parse().unwrap()).await.unwrap().is_none());
    refused(s.enroll("aa", &certificate("e6", &p, t0()), t0(), None).await, "used already");
    for serial in ["e1", "e2", "e3", "e6"] {
        assert!(s.get_certificate(&serial.parse().unwrap()).await.unwrap().is_none(), "{serial}");
    }
    // The consumed token names its certificate (for a retry after a lost response).
    let used = s.get_enrollment_token("aa").await.unwrap().unwrap();
    assert!(used.consumed && used.serial.as_ref().map(|s| s.as_str()) == Some(won), "{used:?}");
    // A suspended principal cannot enroll; and a token made before the suspension is dead for good: reactivation
    // raised the principal's generation above the token's.
    s.create_enrollment_token(&token("bb", 3600), None).await.unwrap();
    let (from, to) = ([crate::model::PrincipalStatus::Active], crate::model::PrincipalStatus::Suspended);
    let suspended = s.transition_principal(&p.id, &from, to, None, t0(), None).await.unwrap();
    assert!(matches!(
        s.enroll("bb", &certificate("e7", &p, t0()), t0(), None).await,
        Err(Error::FailedPrecondition(_))
    ));
    let (from, to) = ([crate::model::PrincipalStatus::Suspended], crate::model::PrincipalStatus::Active);
    let active = s.transition_principal(&p.id, &from, to, None, t0(), None).await.unwrap();
    assert!(active.generation > p.generation);
    let cert = crate::model::CertificateRecord { generation: active.generation, ..certificate("e8", &suspended, t0()) };
    refused(s.enroll("bb", &cert, t0(), None).await, "suspended, deleted or had a key compromised");
    assert!(!s.get_enrollment_token("bb").await.unwrap().unwrap().consumed, "a refusal changes nothing");
    // A token made after the reactivation works.
    let fresh = EnrollmentToken { generation: active.generation, ..token("cc", 3600) };
    s.create_enrollment_token(&fresh, None).await.unwrap();
    s.enroll("cc", &cert, t0(), None).await.unwrap();
}

/// A principal's tokens are listed newest first with their state; an unused token can be revoked once, and a revoked
/// token never enrolls; a used token cannot be revoked; a refused revocation changes nothing.
pub async fn enrollment_tokens_are_listed_and_revoked_once(store: Arc<dyn Store>) {
    use crate::error::Error;
    use crate::model::EnrollmentToken;
    let s = store.as_ref();
    let p = principal("listed", PrincipalType::Worker);
    let other = principal("unlisted", PrincipalType::Worker);
    s.create_principal(&p, None).await.unwrap();
    s.create_principal(&other, None).await.unwrap();
    let token = |hash: &str, owner: &crate::model::Principal, age: i64| EnrollmentToken {
        hash: hash.into(),
        principal: owner.id.clone(),
        generation: owner.generation,
        created_at: t0() - time::Duration::seconds(age),
        expires_at: t0() + time::Duration::seconds(3600),
        max_validity: (hash == "a2").then_some(86_400),
    };
    s.create_enrollment_token(&token("a1", &p, 20), None).await.unwrap();
    s.create_enrollment_token(&token("a2", &p, 10), None).await.unwrap();
    s.create_enrollment_token(&token("a3", &p, 0), None).await.unwrap();
    s.create_enrollment_token(&token("b1", &other, 0), None).await.unwrap();
    let listed = s.list_enrollment_tokens(&p.id).await.unwrap();
    let hashes: Vec<&str> = listed.iter().map(|t| t.hash.as_str()).collect();
    assert_eq!(hashes, ["a3", "a2", "a1"], "one principal's tokens, newest first");
    assert_eq!(listed[1].max_validity, Some(86_400));
    assert!(listed.iter().all(|t| !t.consumed && !t.revoked && t.principal == p.id));
    assert!(s.list_enrollment_tokens(&"nobody".parse().unwrap()).await.unwrap().is_empty());

    s.enroll("a1", &certificate("c1", &p, t0()), t0(), None).await.unwrap();
    s.revoke_enrollment_token("a2", t0(), None).await.unwrap();
    assert!(matches!(s.revoke_enrollment_token("a2", t0(), None).await, Err(Error::FailedPrecondition(_))));
    assert!(matches!(s.revoke_enrollment_token("a1", t0(), None).await, Err(Error::FailedPrecondition(_))));
    assert!(matches!(s.revoke_enrollment_token("zz", t0(), None).await, Err(Error::NotFound(_))));
    match s.enroll("a2", &certificate("c2", &p, t0()), t0(), None).await {
        Err(Error::Unauthenticated(m)) => assert!(m.contains("revoked"), "{m}"),
        other => panic!("a revoked token enrolled: {other:?}"),
    }
    assert!(s.get_certificate(&"c2".parse().unwrap()).await.unwrap().is_none());
    let a1 = s.get_enrollment_token("a1").await.unwrap().unwrap();
    assert!(a1.consumed && !a1.revoked, "a refused revocation changes nothing: {a1:?}");
    let listed = s.list_enrollment_tokens(&p.id).await.unwrap();
    let state: Vec<(bool, bool)> = listed.iter().map(|t| (t.consumed, t.revoked)).collect();
    assert_eq!(state, [(false, false), (false, true), (true, false)]);
    // A revocation racing the token's use: exactly one of them happens.
    let c3 = certificate("c3", &p, t0());
    let (used, revoked) = tokio::join!(s.enroll("a3", &c3, t0(), None), s.revoke_enrollment_token("a3", t0(), None));
    assert!(used.is_ok() != revoked.is_ok(), "{used:?} {revoked:?}");
    let a3 = s.get_enrollment_token("a3").await.unwrap().unwrap();
    assert_eq!((a3.consumed, a3.revoked), (used.is_ok(), revoked.is_ok()));
}
