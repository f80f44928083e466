-- authd schema for the embedded SQLite store. Times are unix microseconds.

CREATE TABLE users (
    id               BLOB PRIMARY KEY,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    password_hash    TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                  BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    scope               TEXT,
    device_name         TEXT NOT NULL,
    user_agent          TEXT,
    ip                  TEXT,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    refresh_generation  INTEGER NOT NULL,
    rotated_at          INTEGER NOT NULL,
    grace_ciphertext    BLOB,
    revoked_at          INTEGER,
    revoke_reason       TEXT
);

CREATE INDEX sessions_user_id ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
