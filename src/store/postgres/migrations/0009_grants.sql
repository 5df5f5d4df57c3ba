-- One-time grants of the browser and scan-login flows: a pending browser authorization,
-- a wxauth authorization code, a scan-login session. Found by the SHA-256 of a secret the
-- holder has; the payload is sealed under the key in WXAUTH_KEYS_DIR. Minutes-lived, so
-- neither exported nor kept after expiry.
CREATE TABLE grants (
    id bytea PRIMARY KEY,
    kind smallint NOT NULL,
    payload text NOT NULL,
    expires_at_ns bigint NOT NULL
);
CREATE INDEX grants_expiry ON grants (expires_at_ns);
