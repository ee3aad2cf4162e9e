-- principald SQLite schema, version 10: enrollment tokens are bound to their principal's revocation generation.
-- * enrollment_tokens.generation: the principal's generation when the token was made; a suspension, deletion or
--   key-compromise revocation raises it, and the token can no longer be consumed. Tokens from before this version
--   carry 0 and stay usable only for principals never withdrawn.

ALTER TABLE enrollment_tokens ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
