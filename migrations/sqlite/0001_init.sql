-- principald SQLite schema, version 1. Applied once, in a transaction, by `principald serve|migrate|bootstrap`.
-- Times are Unix seconds (UTC).

CREATE TABLE principals (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL CHECK (type IN ('admin', 'worker', 'user', 'service')),
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    description   TEXT NOT NULL,
    email         TEXT,
    status_reason TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX principals_by_type_status ON principals (type, status, id);
CREATE INDEX principals_by_status ON principals (status, id);

CREATE TABLE certificates (
    serial             TEXT PRIMARY KEY,
    principal_id       TEXT NOT NULL REFERENCES principals (id),
    principal_type     TEXT NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    sha256_fingerprint TEXT NOT NULL,
    der                BLOB NOT NULL,
    revoked_at         INTEGER,
    revocation_reason  INTEGER
) STRICT;

CREATE INDEX certificates_by_principal ON certificates (principal_id, not_before DESC, serial DESC);
