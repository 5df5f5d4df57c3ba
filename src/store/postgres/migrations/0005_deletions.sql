-- A deletion the person asked for: when, and when the erasure is due. The partial index
-- finds the due ones for the sweeper without scanning every user.
ALTER TABLE users ADD COLUMN deletion_requested_at_ns bigint;
ALTER TABLE users ADD COLUMN deletion_erase_at_ns bigint;
CREATE INDEX users_pending_deletion ON users (deletion_erase_at_ns) WHERE deletion_erase_at_ns IS NOT NULL;
