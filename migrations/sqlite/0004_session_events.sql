-- The session event log (see the Postgres migration). SQLite has one
-- writer, so sequence order is commit order; AUTOINCREMENT never reuses a
-- sequence number, even after the newest row is deleted.
CREATE TABLE session_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    session_id  BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    at          INTEGER NOT NULL,
    reason      TEXT,
    actor       TEXT,
    until       INTEGER
);

CREATE INDEX session_events_at ON session_events (at);
CREATE INDEX session_events_revoked_until ON session_events (until) WHERE kind = 'session_revoked';

INSERT INTO session_events (kind, session_id, user_id, at, reason, actor, until)
SELECT 'session_revoked', id, user_id, revoked_at,
       CASE revoke_reason WHEN 'revoked_by_user' THEN 'user' WHEN 'revoked_others' THEN 'revoke_others'
                          WHEN 'admin_revoked' THEN 'admin' ELSE revoke_reason END,
       'system', MIN(rotated_at + 86400000000, absolute_expires_at)
FROM sessions
WHERE revoked_at IS NOT NULL AND MIN(rotated_at + 86400000000, absolute_expires_at) > CAST(strftime('%s', 'now') AS INTEGER) * 1000000
ORDER BY revoked_at;

DROP TABLE pending_cache_revocations;
