-- authd schema. Needs no superuser: no extensions, only tables and indexes.

CREATE TABLE users (
    id               UUID PRIMARY KEY,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    password_hash    TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT users_email_normalized_key UNIQUE (email_normalized)
);

CREATE TABLE sessions (
    id                  UUID PRIMARY KEY,
    user_id             UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    scope               TEXT,
    device_name         TEXT NOT NULL,
    user_agent          TEXT,
    ip                  TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    last_used_at        TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL,
    absolute_expires_at TIMESTAMPTZ NOT NULL,
    refresh_generation  BIGINT NOT NULL,
    rotated_at          TIMESTAMPTZ NOT NULL,
    grace_ciphertext    BYTEA,
    revoked_at          TIMESTAMPTZ,
    revoke_reason       TEXT
);

CREATE INDEX sessions_user_id ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token a session has issued, by hash only, so that reuse of
-- any older token is recognised and revokes its session.
CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  BIGINT NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
