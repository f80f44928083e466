-- Audit retention: cleanup deletes events older than AUTHD_AUDIT_RETENTION
-- in bounded batches, oldest first, by this index.
CREATE INDEX audit_events_at ON audit_events (at);
