-- Users are found by phone number through a keyed hash of it (HMAC-SHA256 under a key
-- derived from session-keys.secret), never by its plaintext, which stays sealed. Empty for
-- details without a number; NULL only in rows written before this migration, which the
-- server fills when it starts (it holds the key, SQL does not).
ALTER TABLE details ADD COLUMN phone_index bytea;
CREATE INDEX details_phone_index ON details (phone_index);
