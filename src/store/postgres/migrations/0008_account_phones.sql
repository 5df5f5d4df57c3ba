-- An account may have a phone number (phone-first login): sealed like details (under the
-- key in WXAUTH_KEYS_DIR, bound to the username), and found through a keyed hash of it
-- (HMAC-SHA256), never by its plaintext. At most one account per number; NULL for none.
ALTER TABLE accounts ADD COLUMN phone_sealed text;
ALTER TABLE accounts ADD COLUMN phone_index bytea UNIQUE;
