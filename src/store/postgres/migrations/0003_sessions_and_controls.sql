-- Schema 3: each refresh family is a session the person can list and end, so it keeps its
-- last refresh and where its login came from. Existing families take their start as their
-- last refresh and have no known origin.
ALTER TABLE refresh_families ADD COLUMN last_refresh_ns bigint;
UPDATE refresh_families SET last_refresh_ns = started_ns;
ALTER TABLE refresh_families ALTER COLUMN last_refresh_ns SET NOT NULL;
ALTER TABLE refresh_families ADD COLUMN ip text;
ALTER TABLE refresh_families ADD COLUMN user_agent text;

-- What an operator decides about a user: roles and custom claims (compact JSON, empty for
-- none) that access tokens carry, and a ban. On the user's row, which every login reads
-- already, so a login checks them without another round trip.
ALTER TABLE users ADD COLUMN roles text[] NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN claims text NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN ban_reason text;
ALTER TABLE users ADD COLUMN ban_until_ns bigint;
ALTER TABLE users ADD COLUMN banned_at_ns bigint;

-- Admin API tokens: only the SHA-256 of each token's secret, found by the token's id.
-- Revoked ones stay, for the record.
CREATE TABLE admin_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('read', 'write')),
    secret_hash bytea NOT NULL,
    created_at_ns bigint NOT NULL,
    revoked_at_ns bigint
);
