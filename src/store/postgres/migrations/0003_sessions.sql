-- Schema 3: each refresh family is a session the person can list and end, so it keeps its
-- last refresh and where its login came from. Existing families take their start as their
-- last refresh and have no known origin.
ALTER TABLE refresh_families ADD COLUMN last_refresh_ns bigint;
UPDATE refresh_families SET last_refresh_ns = started_ns;
ALTER TABLE refresh_families ALTER COLUMN last_refresh_ns SET NOT NULL;
ALTER TABLE refresh_families ADD COLUMN ip text;
ALTER TABLE refresh_families ADD COLUMN user_agent text;
