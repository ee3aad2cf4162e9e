-- principald SQLite schema, version 8: one-time enrollment tokens.
-- * enrollment_tokens: by the SHA-256 of the secret (the secret is never stored); consumed in the same transaction
--   that records the certificate it paid for.

CREATE TABLE enrollment_tokens (
    hash         TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals (id),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    consumed_at  INTEGER,
    serial       TEXT
) STRICT;
