-- principald SQLite schema, version 4: per-replica issuing intermediates.
-- * intermediates: every intermediate a replica signs leaves with, recorded before its first use; revoked_at set by
--   an operator voids every certificate it issued.
-- * certificates.issuer: hex SHA-256 of the intermediate that signed the certificate ('' = the root directly).
-- * settings 'ca_certificate' holds the CA certificate (PEM) beside its fingerprint, so replicas whose key lives in
--   KMS or an HSM can start from the store alone.

ALTER TABLE certificates ADD COLUMN issuer TEXT NOT NULL DEFAULT '';

CREATE TABLE intermediates (
    fingerprint TEXT PRIMARY KEY,
    replica     TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    der         BLOB NOT NULL,
    revoked_at  INTEGER
) STRICT;
