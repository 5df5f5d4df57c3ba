-- The event log: one row per event, its id a UUID v7 of its time, so ids sort as times
-- do. No foreign key to users: an event outlives the user it reports.
CREATE TABLE events (
    id uuid PRIMARY KEY,
    at_ns bigint NOT NULL,
    kind text NOT NULL,
    user_id uuid,
    appid text,
    ip text,
    user_agent text,
    actor text,
    details text NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_user ON events (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX events_by_kind ON events (kind, id);
