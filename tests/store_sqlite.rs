//! The store conformance suite against the embedded SQLite backend, plus durability across reopening.

use std::sync::Arc;

use principald::store::Store;
use principald::store::sqlite::SqliteStore;

fn fresh() -> Arc<dyn Store> {
    // The directory is leaked on purpose: it must outlive the store, which the test owns.
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open(&dir.join("principald.db")).unwrap())
}

principald::store_conformance_tests!(fresh());

#[tokio::test]
/// Reads back after reopening. (Durability across a crash, i.e. the fsync, is not observable from a test; it rests on
/// `synchronous = FULL` and on answering callers only after COMMIT.)
async fn writes_are_read_back_after_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("principald.db");
    let p = principald::store::conformance::principal("w1", principald::model::PrincipalType::Worker);
    let c = principald::store::conformance::certificate("0a", &p, p.created_at);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_principal(&p, None).await.unwrap();
        store.insert_certificate(&c, None).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_principal(&p.id).await.unwrap(), Some(p));
    assert_eq!(store.get_certificate(&c.serial).await.unwrap(), Some(c));
}

#[tokio::test]
async fn migrations_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("principald.db");
    drop(SqliteStore::open(&path).unwrap());
    // Re-opening applies nothing twice (a second CREATE TABLE would fail).
    SqliteStore::open(&path).unwrap().ping().await.unwrap();
}
