//! Principals: creation, reads, listings, filters and status transitions.

use super::*;

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
