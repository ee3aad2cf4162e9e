-- principald SQLite schema, version 9: stored CRLs, so every process serves the same, newest CRL of each place.
-- * crls: the newest signed CRL of each place (`P` for a root partition, `ISSUER/P` for an intermediate's).
-- * meta 'crl_number': the counter CRL numbers come from (never the clock), so they only grow.

CREATE TABLE crls (
    place       TEXT PRIMARY KEY,
    number      INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    der         BLOB NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES ('crl_number', 0);
