-- principald SQLite schema, version 2: a counter that every withdrawal of access (revoke, suspend, delete) increments
-- in the same transaction, so every process sharing the database can tell when to drop its authentication cache.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES ('revocation_epoch', 0);
