-- Web UI sign-in sessions (issue 13). The browser holds a random session id in an HttpOnly
-- cookie; only its SHA-256 is stored, so a copy of the database signs nobody in. Each session
-- carries the synchronizer token its forms must send back (CSRF). A session ends at sign-out
-- (row deleted), at `expires_at`, or as soon as its user is blocked or deleted (checked on
-- every request; rows go with the user). Every instance reads the same table.
CREATE TABLE web_sessions (
    id_hash     TEXT    PRIMARY KEY,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions (user_id);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);
