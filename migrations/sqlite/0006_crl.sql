-- principald SQLite schema, version 6: CRLs.
-- * certificates_revoked: the revoked certificates by CRL partition (the last hex digit of the serial), so building a
--   partition's CRL reads only that partition's revoked certificates.

CREATE INDEX certificates_revoked ON certificates (substr(serial, -1), serial) WHERE revoked_at IS NOT NULL;
