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

/// Edits, deletions and reorderings made directly in the database file are found by verification, at their position.
#[tokio::test]
async fn audit_tampering_in_the_file_is_found_at_its_position() {
    use principald::store::conformance::{first_break, five_chained_events};
    let tampers: [(&str, u64); 5] = [
        ("UPDATE audit_events SET target = 'someone-else' WHERE seq = 2", 2),
        ("UPDATE audit_events SET details = '{\"n\":2}' WHERE seq = 4", 4),
        ("DELETE FROM audit_events WHERE seq = 3", 3),
        (
            "UPDATE audit_events SET seq = -seq WHERE seq IN (2, 3); \
          UPDATE audit_events SET seq = 5 + seq WHERE seq IN (-2, -3)",
            2,
        ),
        ("DELETE FROM audit_events WHERE seq = 5", 5),
    ];
    for (sql, position) in tampers {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("principald.db");
        let store = SqliteStore::open(&path).unwrap();
        five_chained_events(&store).await;
        rusqlite::Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        assert_eq!(first_break(&store).await, Some(position), "{sql}");
    }
}
