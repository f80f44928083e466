CREATE TABLE pending_cache_revocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
