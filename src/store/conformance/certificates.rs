//! Certificates: issuance rules, reads, listings, revocation once, concurrent inserts, the revocation epoch.

use super::*;

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
