//! What refusals, readiness polls and cancelled requests cost the store, counted with a wrapper around a real SQLite
//! store: a refused certificate hammering the server reads the store once, readiness polled hard reads it about once
//! a second, and a withdrawal whose request is cancelled mid-way still invalidates the cache when its write lands.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::counting::CountingStore;
use principald::auth::{Authenticator, Caller, PermissionTable};
use principald::model::{Principal, PrincipalStatus, PrincipalType, RevocationReason, now};
use principald::pki::IdentityConfig;
use principald::pki::ca::CertificateAuthority;
use principald::registry::Registry;
use principald::store::Store;
use principald::store::sqlite::SqliteStore;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<CountingStore>,
    ca: Arc<CertificateAuthority>,
    identity: IdentityConfig,
}

fn fixture(transition_delay: Duration) -> Fixture {
    principald::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let mut store = CountingStore::new(sqlite);
    store.transition_delay = transition_delay;
    let ca = Arc::new(CertificateAuthority::generate("test CA", time::Duration::days(30)).unwrap());
    let identity = IdentityConfig { trust_domain: "principald.local".into(), oids: Default::default() };
    Fixture { _dir: dir, store: Arc::new(store), ca, identity }
}

/// Creates worker `id` and returns the DER of a certificate recorded for it.
async fn worker(f: &Fixture, id: &str) -> Vec<u8> {
    let at = now();
    let principal = Principal {
        id: id.parse().unwrap(),
        kind: PrincipalType::Worker,
        status: PrincipalStatus::Active,
        description: String::new(),
        email: None,
        status_reason: None,
        created_at: at,
        updated_at: at,
        generation: 0,
    };
    f.store.create_principal(&principal, None).await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = principald::pki::leaf::issue_client(
        &f.ca,
        &f.identity,
        PrincipalType::Worker,
        &principal.id,
        &key,
        Duration::from_secs(3600),
        0,
    )
    .unwrap();
    f.store.insert_certificate(&leaf.record, None).await.unwrap();
    leaf.record.der
}

fn authenticator(f: &Fixture) -> Arc<Authenticator> {
    let store: Arc<dyn Store> = f.store.clone();
    Arc::new(Authenticator::new(store, Default::default(), PermissionTable::builtin(), Duration::from_secs(60)))
}

#[tokio::test]
async fn a_revoked_certificate_hammering_the_server_reads_the_store_once() {
    let f = fixture(Duration::ZERO);
    let der = worker(&f, "w1").await;
    let serial = principald::auth::peer::PeerIdentity::from_der(&Default::default(), &der).unwrap().serial;
    f.store.revoke_certificate(&serial, RevocationReason::KeyCompromise, now(), None).await.unwrap();
    let auth = authenticator(&f);
    let before = f.store.reads();
    for _ in 0..500 {
        let error = auth.authenticate(&der).await.unwrap_err();
        assert!(error.to_string().contains("revoked"), "{error}");
    }
    let reads = f.store.reads() - before;
    assert!(
        reads <= 2,
        "500 refused requests cost {reads} store reads (one certificate + one principal read expected)"
    );
}

#[tokio::test]
async fn readiness_polled_hard_probes_the_store_about_once_a_second() {
    let f = fixture(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let data = principald::datadir::DataDir::new(dir.path());
    std::fs::write(data.ca_cert(), f.ca.cert_pem()).unwrap();
    principald::server_cert::issue_files(&data, &f.ca, &["localhost".into()]).unwrap();
    let server_cert = principald::server_cert::ServerCertificate::load(&data, f.ca.clone(), &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store: Arc<dyn Store> = f.store.clone();
    let (readiness, probe) =
        principald::health::Readiness::start(store, f.ca.clone(), server_cert, Duration::from_secs(30)).await;
    tokio::spawn(probe);
    tokio::spawn(principald::health::serve(
        listener,
        readiness,
        axum::Router::new(),
        Default::default(),
        std::future::pending(),
    ));
    let started = Instant::now();
    let polls = tokio::task::spawn_blocking(move || {
        let mut ok = 0;
        while started.elapsed() < Duration::from_millis(2500) {
            if common::http_get(addr, "/readyz").0 == 200 {
                ok += 1;
            }
        }
        ok
    })
    .await
    .unwrap();
    let pings = f.store.pings();
    let bound = started.elapsed().as_secs() + 2;
    assert!(polls > 50, "only {polls} polls answered");
    assert!(pings <= bound, "{polls} polls cost {pings} store probes (bound {bound})");
}

#[tokio::test]
async fn a_cancelled_suspension_still_invalidates_the_cache_when_its_write_lands() {
    let f = fixture(Duration::from_millis(300));
    let der = worker(&f, "w1").await;
    let auth = authenticator(&f);
    auth.authenticate(&der).await.expect("valid and now cached");
    let store: Arc<dyn Store> = f.store.clone();
    let recorder = principald::audit::Recorder::new("test", true);
    let validity = Duration::from_secs(3600);
    let registry =
        Registry::new(store, f.ca.clone(), f.identity.clone(), HashMap::new(), validity, auth.clone(), recorder);
    let admin = Caller {
        id: "admin".parse().unwrap(),
        kind: PrincipalType::Admin,
        serial: "01".parse().unwrap(),
        not_after: now() + time::Duration::hours(1),
        permissions: Arc::new(Default::default()),
        certificate_sha256: [0; 32],
    };
    let origin = principald::audit::Origin::request(admin.actor(), None, "/test");
    // The client gives up while the write is still in flight.
    let target = "w1".parse().unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(50), registry.suspend(&admin, &origin, &target, ""));
    assert!(cancelled.await.is_err(), "the request was cancelled");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let error = auth.authenticate(&der).await.expect_err("the suspension landed and the cache entry is gone");
    assert!(error.to_string().contains("suspended"), "{error}");
}
