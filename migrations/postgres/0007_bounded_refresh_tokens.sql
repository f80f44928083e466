-- Bounded refresh-token storage and HOT refreshes.
--
-- Refresh tokens minted from now on carry their session id and generation
-- under an HMAC whose key derives from a secret in `server_secrets`, shared
-- by every process. Only the current token's hash is stored, in the session
-- row; a genuine older token is recognised by its MAC and generation. Tokens
-- issued before this migration stay in `refresh_tokens` (which no longer
-- grows) until their sessions end: a live session's current one refreshes
-- once more, into the new format.
ALTER TABLE sessions ADD COLUMN refresh_hash BYTEA;

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every refresh changes `expires_at`: an index on it makes every refresh's
-- UPDATE a non-HOT one (new index entries, more WAL, more vacuum). Cleanup
-- finds absolute expiry by this index instead, revocations by theirs, and
-- idle expiry by a bounded background scan.
DROP INDEX sessions_expires_at;
CREATE INDEX sessions_absolute_expires_at ON sessions (absolute_expires_at);

-- Room on each page for the new row version of a HOT update.
ALTER TABLE sessions SET (fillfactor = 80);
