-- principald SQLite schema, version 12: what an intermediate signed can be listed.
-- * certificates_by_issuer: `cert list --issuer SHA256` reads one intermediate's certificates, newest first.

CREATE INDEX certificates_by_issuer ON certificates (issuer, not_before);
