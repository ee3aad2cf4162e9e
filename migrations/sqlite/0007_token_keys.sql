-- principald SQLite schema, version 7: token signing keys.
-- * token_keys: every replica's token signing key (public half, as a JWK), announced before it signs a token; the
--   JWKS publishes the unexpired ones.

CREATE TABLE token_keys (
    kid        TEXT PRIMARY KEY,
    replica    TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
