-- Append-only audit trail: authd only ever INSERTs here (and cleanup may
-- delete rows past retention). No secrets or tokens are stored.
CREATE TABLE audit_events (
    id          UUID PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    user_id     UUID,
    session_id  UUID,
    actor       TEXT NOT NULL,
    reason      TEXT,
    ip          TEXT,
    user_agent  TEXT
);

CREATE INDEX audit_events_user ON audit_events (user_id, at DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
