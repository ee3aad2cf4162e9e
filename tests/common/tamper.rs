//! Changing the audit log behind principald's back, as whoever can write the store could (tests/e2e/any_store/checkpoints.rs):
//! SQLite through its file, DynamoDB through its tables.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use principald::audit::Recorded;
use principald::store::StoreConfig;

#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    None,
    DeleteHead,
    DeleteChain,
    Wipe,
    Truncate,
    Rewrite,
}

/// The events of `chain`, oldest first, read from the store directly.
async fn chain_events(config: &StoreConfig, chain: &str) -> Vec<Recorded> {
    config.open().await.unwrap().audit_chain(chain, 0, 10_000).await.unwrap()
}

/// Rewrites events from `from` on: a new target for the first, every hash recomputed, the head moved along.
fn rewritten(events: &[Recorded], from: u64) -> Vec<Recorded> {
    let mut out: Vec<Recorded> = Vec::new();
    for e in events {
        let mut e = e.clone();
        if e.seq >= from {
            if e.seq == from {
                e.event.target = "someone-else".into();
            }
            e.prev_hash = out.last().map_or(e.prev_hash.clone(), |p: &Recorded| p.hash.clone());
            e.hash = principald::audit::chain::hash(&e.chain, e.seq, &e.prev_hash, &e.event);
        }
        out.push(e);
    }
    out
}

/// Changes the store behind principald's back: SQLite through its file, DynamoDB through its tables.
pub async fn tamper(config: &principald::config::ServeConfig, chain: &str, checkpointed: u64, how: Tamper) {
    let events = chain_events(&config.store, chain).await;
    let last = events.last().unwrap().seq;
    // (events deleted from position, head after it: None deletes the head)
    let (delete_from, rewrite): (Option<u64>, Option<u64>) = match how {
        Tamper::None | Tamper::DeleteHead => (None, None),
        Tamper::DeleteChain | Tamper::Wipe => (Some(1), None),
        Tamper::Truncate => (Some(checkpointed), None),
        Tamper::Rewrite => (None, Some(checkpointed)),
    };
    let kept: Vec<Recorded> = match (delete_from, rewrite) {
        (Some(from), _) => events.iter().filter(|e| e.seq < from).cloned().collect(),
        (None, Some(from)) => rewritten(&events, from),
        _ => events.clone(),
    };
    let head = kept.last().map(|e| (e.seq, e.hash.clone()));
    let delete_head = matches!(how, Tamper::DeleteHead | Tamper::DeleteChain | Tamper::Wipe);
    match &config.store {
        StoreConfig::Dynamodb(dynamo) => {
            let client = principald::store::dynamodb::DynamoStore::client(dynamo).await;
            let (audit, meta) = (format!("{}audit", dynamo.table_prefix), format!("{}meta", dynamo.table_prefix));
            let key = |seq: u64| {
                HashMap::from([
                    ("chain".to_owned(), AttributeValue::S(chain.to_owned())),
                    ("seq".to_owned(), AttributeValue::N(seq.to_string())),
                ])
            };
            if let Some(from) = delete_from {
                for seq in from..=last {
                    client.delete_item().table_name(&audit).set_key(Some(key(seq))).send().await.unwrap();
                }
            }
            for e in kept.iter().filter(|e| rewrite.is_some_and(|from| e.seq >= from)) {
                let update = client.update_item().table_name(&audit).set_key(Some(key(e.seq)));
                update
                    .update_expression("SET target = :t, prev_hash = :p, #h = :h")
                    .expression_attribute_names("#h", "hash")
                    .expression_attribute_values(":t", AttributeValue::S(e.event.target.clone()))
                    .expression_attribute_values(":p", AttributeValue::S(e.prev_hash.clone()))
                    .expression_attribute_values(":h", AttributeValue::S(e.hash.clone()))
                    .send()
                    .await
                    .unwrap();
            }
            if matches!(how, Tamper::Wipe) {
                // Every event and every head, whatever the chain.
                for (table, keys) in [(&audit, vec!["chain", "seq"]), (&meta, vec!["key"])] {
                    let items = client.scan().table_name(table).send().await.unwrap().items.unwrap_or_default();
                    for item in items {
                        if table == &meta
                            && item.get("key").and_then(|k| k.as_s().ok()).is_none_or(|k| !k.starts_with("audit#"))
                        {
                            continue;
                        }
                        let key: HashMap<String, AttributeValue> =
                            keys.iter().map(|k| ((*k).to_owned(), item[*k].clone())).collect();
                        client.delete_item().table_name(table).set_key(Some(key)).send().await.unwrap();
                    }
                }
                return;
            }
            let head_key = AttributeValue::S(format!("audit#{chain}"));
            match head {
                Some((seq, hash)) if !delete_head => {
                    let update = client.update_item().table_name(&meta).key("key", head_key);
                    update
                        .update_expression("SET seq = :s, #h = :h")
                        .expression_attribute_names("#h", "hash")
                        .expression_attribute_values(":s", AttributeValue::N(seq.to_string()))
                        .expression_attribute_values(":h", AttributeValue::S(hash))
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    client.delete_item().table_name(&meta).key("key", head_key).send().await.unwrap();
                }
            }
        }
        _ => {
            let db = principald::datadir::DataDir::new(&config.data_dir).database();
            let conn = rusqlite::Connection::open(db).unwrap();
            if let Some(from) = delete_from {
                conn.execute("DELETE FROM audit_events WHERE chain = ?1 AND seq >= ?2", (chain, from as i64)).unwrap();
            }
            for e in kept.iter().filter(|e| rewrite.is_some_and(|from| e.seq >= from)) {
                let sql =
                    "UPDATE audit_events SET target = ?1, prev_hash = ?2, hash = ?3 WHERE chain = ?4 AND seq = ?5";
                conn.execute(sql, (&e.event.target, &e.prev_hash, &e.hash, chain, e.seq as i64)).unwrap();
            }
            match head {
                Some((seq, hash)) if !delete_head => {
                    let sql = "UPDATE audit_chains SET seq = ?1, hash = ?2 WHERE chain = ?3";
                    conn.execute(sql, (seq as i64, hash, chain)).unwrap();
                }
                _ => {
                    conn.execute("DELETE FROM audit_chains WHERE chain = ?1", [chain]).unwrap();
                }
            }
            if matches!(how, Tamper::Wipe) {
                conn.execute("DELETE FROM audit_events", []).unwrap();
                conn.execute("DELETE FROM audit_chains", []).unwrap();
            }
        }
    }
}
