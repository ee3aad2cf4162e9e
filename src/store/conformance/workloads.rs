//! Conformance of workload entries: created with their principal on an active node only (a refusal writes nothing),
//! read back whole, listed by node in id order across pages, deleted once; each change records one audit event.

use std::sync::Arc;
use std::time::Duration;

use super::audit::{event, kinds};
use super::{id, page, principal, t0};
use crate::audit::kind;
use crate::error::Error;
use crate::model::{Principal, PrincipalId, PrincipalStatus, PrincipalType, Selector, WorkloadEntry};
use crate::store::Store;

/// An entry `name` on `node` with its principal.
fn workload(name: &str, node: &str, kind: PrincipalType) -> (WorkloadEntry, Principal) {
    let selectors = vec![
        Selector::Uid(1000),
        Selector::Gid(100),
        Selector::Path(format!("/usr/bin/{name}")),
        Selector::Sha256("ab".repeat(32)),
    ];
    let entry = WorkloadEntry::new(id(name), id(node), kind, selectors, Duration::from_secs(600), t0()).unwrap();
    (entry, principal(name, kind))
}

async fn node(s: &dyn Store, name: &str) -> Principal {
    let node = principal(name, PrincipalType::Node);
    s.create_principal(&node, None).await.unwrap();
    node
}

/// The ids of every page of a listing of `node`'s entries (every entry with `None`), `size` at a time.
async fn pages(s: &dyn Store, node: Option<&PrincipalId>, size: u32) -> Vec<Vec<String>> {
    let (mut pages, mut token) = (Vec::new(), None);
    loop {
        let listed = s.list_workloads(node, &page(size, token)).await.unwrap();
        pages.push(listed.items.iter().map(|w| w.id.as_str().to_owned()).collect());
        match listed.next_token {
            Some(next) => token = Some(next),
            None => return pages,
        }
    }
}

/// [`pages`] once it equals `expected`: DynamoDB lists from an index that may lag a write by a moment (DynamoDB Local
/// does not lag; a real table may). Asserts equality after a few seconds.
async fn settled_pages(s: &dyn Store, node: Option<&PrincipalId>, size: u32, expected: &[&[&str]]) {
    let mut listed = Vec::new();
    for _ in 0..30 {
        listed = pages(s, node, size).await;
        if listed == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, expected, "listing of {node:?} by {size}");
}

pub async fn workload_round_trips_with_its_principal(store: Arc<dyn Store>) {
    let s = store.as_ref();
    node(s, "host-1").await;
    let (entry, p) = workload("api", "host-1", PrincipalType::Service);
    s.create_workload(&entry, &p, None).await.unwrap();
    let read = s.get_workload(&entry.id).await.unwrap().expect("created");
    assert_eq!(read, entry, "every field round-trips");
    assert_eq!(read.selectors.len(), 4);
    assert_eq!(s.get_principal(&p.id).await.unwrap(), Some(p), "the principal is created with it");
    let (worker, wp) = workload("batch", "host-1", PrincipalType::Worker);
    s.create_workload(&worker, &wp, None).await.unwrap();
    assert_eq!(s.get_workload(&worker.id).await.unwrap(), Some(worker));
    assert_eq!(s.get_workload(&id("unknown")).await.unwrap(), None);
    assert_eq!(s.get_workload(&id("host-1")).await.unwrap(), None, "a principal is not an entry");
}

pub async fn workload_creation_needs_an_active_node_and_a_new_id_and_a_refusal_writes_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    node(s, "host-1").await;
    node(s, "host-2").await;
    let worker = principal("not-a-node", PrincipalType::Worker);
    s.create_principal(&worker, None).await.unwrap();
    let (from, to) = ([PrincipalStatus::Active], PrincipalStatus::Suspended);
    s.transition_principal(&id("host-2"), &from, to, None, t0(), None).await.unwrap();
    node(s, "host-3").await;
    s.delete_principal(&id("host-3"), t0(), None).await.unwrap();

    let refused = |node: &'static str| workload(&format!("on-{node}"), node, PrincipalType::Service);
    for (node, expect) in [
        ("ghost", "NotFound"),
        ("not-a-node", "FailedPrecondition"),
        ("host-2", "FailedPrecondition"),
        ("host-3", "FailedPrecondition"),
    ] {
        let (entry, p) = refused(node);
        let audit = event(kind::WORKLOAD_CREATED, entry.id.as_str());
        let result = s.create_workload(&entry, &p, Some(&audit)).await;
        let got = match &result {
            Err(Error::NotFound(m)) => ("NotFound", m),
            Err(Error::FailedPrecondition(m)) => ("FailedPrecondition", m),
            other => panic!("node {node}: expected {expect}, got {other:?}"),
        };
        assert_eq!(got.0, expect, "node {node}: {}", got.1);
        assert!(got.1.contains(node), "the refusal names the node: {}", got.1);
        assert_eq!(s.get_principal(&entry.id).await.unwrap(), None, "node {node}: no principal");
        assert_eq!(s.get_workload(&entry.id).await.unwrap(), None, "node {node}: no entry");
    }

    // An id that exists as a principal, in any status, is refused and left as it was.
    for existing in ["not-a-node", "host-3"] {
        let before = s.get_principal(&id(existing)).await.unwrap();
        let (entry, p) = workload(existing, "host-1", PrincipalType::Service);
        let audit = event(kind::WORKLOAD_CREATED, existing);
        assert!(
            matches!(s.create_workload(&entry, &p, Some(&audit)).await, Err(Error::AlreadyExists(_))),
            "{existing}"
        );
        assert_eq!(s.get_principal(&id(existing)).await.unwrap(), before, "{existing} unchanged");
        assert_eq!(s.get_workload(&entry.id).await.unwrap(), None, "{existing}: no entry");
    }
    // So is a second entry with the same id.
    let (entry, p) = workload("api", "host-1", PrincipalType::Service);
    s.create_workload(&entry, &p, None).await.unwrap();
    let (again, p2) = workload("api", "host-1", PrincipalType::Worker);
    assert!(matches!(s.create_workload(&again, &p2, None).await, Err(Error::AlreadyExists(_))));
    assert_eq!(s.get_workload(&entry.id).await.unwrap(), Some(entry));
    assert_eq!(s.get_principal(&p.id).await.unwrap(), Some(p));
    assert!(!kinds(s).await.iter().any(|k| k == kind::WORKLOAD_CREATED), "refusals record no event");
}

pub async fn workloads_list_by_node_in_id_order_across_pages(store: Arc<dyn Store>) {
    let s = store.as_ref();
    node(s, "node-a").await;
    node(s, "node-b").await;
    for (name, on) in
        [("w3", "node-a"), ("v1", "node-b"), ("w1", "node-a"), ("w5", "node-a"), ("w2", "node-a"), ("x1", "node-b")]
    {
        let (entry, p) = workload(name, on, PrincipalType::Service);
        s.create_workload(&entry, &p, None).await.unwrap();
    }
    let (entry, p) = workload("w4", "node-a", PrincipalType::Worker);
    s.create_workload(&entry, &p, None).await.unwrap();

    settled_pages(s, Some(&id("node-a")), 2, &[&["w1", "w2"], &["w3", "w4"], &["w5"]]).await;
    settled_pages(s, Some(&id("node-b")), 2, &[&["v1", "x1"]]).await;
    settled_pages(s, Some(&id("node-a")), 5, &[&["w1", "w2", "w3", "w4", "w5"]]).await;
    settled_pages(s, None, 3, &[&["v1", "w1", "w2"], &["w3", "w4", "w5"], &["x1"]]).await;
    settled_pages(s, None, 100, &[&["v1", "w1", "w2", "w3", "w4", "w5", "x1"]]).await;
    settled_pages(s, Some(&id("nobody")), 2, &[&[]]).await;
    let first = s.list_workloads(Some(&id("node-a")), &page(2, None)).await.unwrap();
    assert_eq!(first.items[1], s.get_workload(&id("w2")).await.unwrap().unwrap(), "listed entries are whole");
    // A token of one node's listing is no token of another's.
    let token = first.next_token.expect("more pages");
    let elsewhere = s.list_workloads(Some(&id("node-b")), &page(2, Some(token.clone()))).await;
    assert!(matches!(elsewhere, Err(Error::InvalidArgument(_))), "{elsewhere:?}");
    let everything = s.list_workloads(None, &page(2, Some(token))).await;
    assert!(matches!(everything, Err(Error::InvalidArgument(_))), "{everything:?}");
}

pub async fn workload_deletion_returns_the_entry_once(store: Arc<dyn Store>) {
    let s = store.as_ref();
    node(s, "host-1").await;
    let (entry, p) = workload("api", "host-1", PrincipalType::Service);
    let (kept, kp) = workload("db", "host-1", PrincipalType::Service);
    s.create_workload(&entry, &p, None).await.unwrap();
    s.create_workload(&kept, &kp, None).await.unwrap();
    assert_eq!(s.delete_workload(&entry.id, None).await.unwrap(), entry);
    assert!(matches!(s.delete_workload(&entry.id, None).await, Err(Error::NotFound(_))));
    assert!(matches!(s.delete_workload(&id("never"), None).await, Err(Error::NotFound(_))));
    assert_eq!(s.get_workload(&entry.id).await.unwrap(), None);
    assert_eq!(s.get_workload(&kept.id).await.unwrap(), Some(kept));
    assert_eq!(s.get_principal(&p.id).await.unwrap(), Some(p), "the registry deletes the principal, not the store");
    settled_pages(s, Some(&id("host-1")), 10, &[&["db"]]).await;
    settled_pages(s, None, 10, &[&["db"]]).await;
}

pub async fn workload_changes_record_one_audit_event_each(store: Arc<dyn Store>) {
    let s = store.as_ref();
    node(s, "host-1").await;
    let (entry, p) = workload("api", "host-1", PrincipalType::Service);
    s.create_workload(&entry, &p, Some(&event(kind::WORKLOAD_CREATED, "api"))).await.unwrap();
    assert_eq!(kinds(s).await, [kind::WORKLOAD_CREATED]);
    let duplicate = s.create_workload(&entry, &p, Some(&event(kind::WORKLOAD_CREATED, "api"))).await;
    assert!(duplicate.is_err());
    s.delete_workload(&entry.id, Some(&event(kind::WORKLOAD_DELETED, "api"))).await.unwrap();
    assert!(s.delete_workload(&entry.id, Some(&event(kind::WORKLOAD_DELETED, "api"))).await.is_err());
    let recorded = kinds(s).await;
    let count = |what: &str| recorded.iter().filter(|k| *k == what).count();
    assert_eq!((count(kind::WORKLOAD_CREATED), count(kind::WORKLOAD_DELETED)), (1, 1), "{recorded:?}");
    assert_eq!(recorded.len(), 2, "refusals record nothing: {recorded:?}");
}
