CREATE TABLE audit_events (
    id          BLOB PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user_id     BLOB,
    session_id  BLOB,
    actor       TEXT NOT NULL,
    reason      TEXT,
    ip          TEXT,
    user_agent  TEXT
);

CREATE INDEX audit_events_user ON audit_events (user_id, at DESC);

CREATE TRIGGER audit_events_append_only_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
