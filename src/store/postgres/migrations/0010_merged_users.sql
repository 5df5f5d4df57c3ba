-- Users merged into another (`wxauth users merge INTO FROM`): FROM is gone, and its
-- refresh tokens, which name it, now belong to INTO.
CREATE TABLE merged_users (
    from_id uuid PRIMARY KEY,
    into_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX merged_users_into ON merged_users (into_id);
