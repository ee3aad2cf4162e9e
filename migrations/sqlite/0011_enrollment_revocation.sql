-- principald SQLite schema, version 11: enrollment tokens can be listed per principal, revoked, and capped.
-- * enrollment_tokens.revoked_at: set when an operator revoked the unused token; it can no longer be consumed.
-- * enrollment_tokens.max_validity: the longest validity (seconds) of the certificate it pays for; NULL: the type's.
-- * enrollment_tokens_by_principal: ListEnrollmentTokens reads one principal's tokens, newest first.

ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
ALTER TABLE enrollment_tokens ADD COLUMN max_validity INTEGER;
CREATE INDEX enrollment_tokens_by_principal ON enrollment_tokens (principal_id, created_at);
