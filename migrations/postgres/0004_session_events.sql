-- The session event log: every lifecycle change of a session, written in the
-- same transaction as the change. Followers read it in commit order: by
-- (xact_id, seq), and only rows older than the oldest running transaction
-- (a BIGSERIAL alone is not commit order).
CREATE TABLE session_events (
    seq         BIGSERIAL PRIMARY KEY,
    xact_id     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind        TEXT NOT NULL,
    session_id  UUID NOT NULL,
    user_id     UUID NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    reason      TEXT,
    actor       TEXT,
    -- Revocations: the latest exp of any access token the session can have.
    until       TIMESTAMPTZ
);

CREATE INDEX session_events_order ON session_events (xact_id, seq);
CREATE INDEX session_events_at ON session_events (at);
CREATE INDEX session_events_revoked_until ON session_events (until) WHERE kind = 'session_revoked';

-- Followers LISTEN; a revocation wakes them when (and only if) it commits.
-- Identical notifications of one transaction are delivered once.
CREATE FUNCTION session_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('authd_session_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER session_events_revoked AFTER INSERT ON session_events
    FOR EACH ROW WHEN (NEW.kind = 'session_revoked') EXECUTE FUNCTION session_events_notify();

-- Revocations made before the log existed, so followers know them too
-- (`until` is a generous bound: the access TTL was not recorded).
INSERT INTO session_events (kind, session_id, user_id, at, reason, actor, until)
SELECT 'session_revoked', id, user_id, revoked_at,
       CASE revoke_reason WHEN 'revoked_by_user' THEN 'user' WHEN 'revoked_others' THEN 'revoke_others'
                          WHEN 'admin_revoked' THEN 'admin' ELSE revoke_reason END,
       'system', LEAST(rotated_at + INTERVAL '1 day', absolute_expires_at)
FROM sessions
WHERE revoked_at IS NOT NULL AND LEAST(rotated_at + INTERVAL '1 day', absolute_expires_at) > now()
ORDER BY revoked_at;

-- Replaced by the log: nothing about a revocation is written outside the
-- revoking transaction any more.
DROP TABLE pending_cache_revocations;
