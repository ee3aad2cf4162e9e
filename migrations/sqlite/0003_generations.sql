-- principald SQLite schema, version 3: hardening.
-- * principals.generation is the revocation floor: certificates record the generation they were issued under and are
--   void once the principal's generation passes them (raised by key-compromise revocation, suspension and deletion).
-- * certificates.renewed_by / renewal_key: a certificate renews once; the renewal and the key it was for.
-- * settings holds text facts about the store, such as the fingerprint of the one CA it belongs to.

ALTER TABLE principals ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificates ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificates ADD COLUMN renewed_by TEXT;
ALTER TABLE certificates ADD COLUMN renewal_key TEXT;

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
