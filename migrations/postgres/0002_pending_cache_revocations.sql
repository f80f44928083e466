-- Revocations committed here that could not be written to the cache (Redis
-- down or hung). Until they are written, no process trusts the cache.
CREATE TABLE pending_cache_revocations (
    id          BIGSERIAL PRIMARY KEY,
    session_id  UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
