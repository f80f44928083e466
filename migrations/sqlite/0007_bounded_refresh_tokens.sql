-- Bounded refresh-token storage (see the Postgres migration of the same
-- name): only the current token's hash is stored, in the session row; tokens
-- from before this migration stay in `refresh_tokens`, which no longer grows.
-- SQLite has no HOT updates, so its `expires_at` index stays.
ALTER TABLE sessions ADD COLUMN refresh_hash BLOB;

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000000)
);
