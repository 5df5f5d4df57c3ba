-- The webhook outbox: one row per event and webhook (the first 8 bytes of the SHA-256 of
-- its URL), due at `due_at_ns`. A sender claims rows by moving them a lease ahead, under
-- FOR UPDATE SKIP LOCKED, so two replicas never send the same row at once. No foreign key:
-- a row whose event is gone is dropped when it comes due.
CREATE TABLE outbox (
    event_id uuid NOT NULL,
    hook bytea NOT NULL,
    due_at_ns bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, hook)
);
CREATE INDEX outbox_due ON outbox (due_at_ns);
