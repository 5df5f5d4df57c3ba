-- Schema 2: one row per refresh family (a login) instead of one per token, with a revocation
-- flag instead of the revocation tables. Refresh tokens stand for logins that `wx.login`
-- repeats for free, so the old rows are dropped, not converted: each client logs in again
-- once, and no revocation can be lost on the way.
DROP TABLE refresh_tokens;
DROP TABLE refresh_revoked;
DROP TABLE refresh_cutoffs;

-- A token is `family ‖ generation ‖ verifier`; the row keeps the current generation and
-- its verifier's SHA-256. Removing a user removes its families.
CREATE TABLE refresh_families (
    family uuid PRIMARY KEY,
    generation bigint NOT NULL,
    verifier_hash bytea NOT NULL,
    started_ns bigint NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    appid text NOT NULL,
    openid text NOT NULL,
    expires_at_ns bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false
);
-- A user's families, oldest first (family ids are UUID v7): the per-user cap and revocations.
CREATE INDEX refresh_families_user ON refresh_families (user_id, family);
