-- principald SQLite schema, version 5: the audit log.
-- * audit_events: one row per event, written in the same transaction as the change it records; hash-chained per
--   chain (chain, seq), each row holding the previous row's hash. id is a UUIDv7, so ordering by id orders by time.
-- * audit_chains: each chain's head (last position and hash), updated with every event; deleting the newest events
--   is caught by comparing with it.

CREATE TABLE audit_events (
    id              TEXT PRIMARY KEY,
    chain           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    time_ms         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    actor_id        TEXT NOT NULL,
    actor_type      TEXT NOT NULL,
    actor_serial    TEXT NOT NULL,
    actor_sha256    TEXT NOT NULL,
    source_address  TEXT NOT NULL,
    replica         TEXT NOT NULL,
    rpc             TEXT NOT NULL,
    target          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    details         TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    UNIQUE (chain, seq)
) STRICT;


CREATE TABLE audit_chains (
    chain TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
) STRICT;
