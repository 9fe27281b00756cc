-- Events (issue 12): the audit log, webhooks, and the outbox of registry events they deliver.
-- Timestamps are milliseconds since the Unix epoch.

-- Who did what, when, from where, and how it ended. Written in the same transaction as a
-- registry change (the write service), or right after a tenancy change or a login attempt.
-- Pruned after `audit.retention`.
CREATE TABLE audit_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at     BIGINT  NOT NULL,
    -- The user who acted; NULL for anonymous callers, deploy tokens and the operator.
    author_id      BIGINT,
    -- A username, a deploy token's username, `gitlab-ci-token`, `(operator)` or the name a
    -- failed login gave.
    author_name    TEXT    NOT NULL,
    -- password, personal_access_token, deploy_token, job_token, or NULL.
    token_kind     TEXT,
    token_id       BIGINT,
    -- What the event is about, for the per-project and per-group listings: Project, Group,
    -- User or Instance, its id and full path (empty for the instance).
    entity_type    TEXT    NOT NULL,
    entity_id      BIGINT  NOT NULL,
    entity_path    TEXT    NOT NULL,
    -- e.g. manifest_push, tag_push, tag_move, tag_delete, manifest_delete, repository_delete,
    -- login, token_create, token_revoke, member_add, …
    action         TEXT    NOT NULL,
    -- What was acted on: its kind (Tag, Manifest, Repository, PersonalAccessToken, …), id and
    -- a readable description (`acme/app:latest`).
    target_type    TEXT    NOT NULL,
    target_id      TEXT    NOT NULL,
    target_details TEXT    NOT NULL,
    -- success or failure.
    outcome        TEXT    NOT NULL,
    ip_address     TEXT,
    request_id     TEXT,
    user_agent     TEXT,
    -- More about the change, JSON text (e.g. {"from": <digest>, "to": <digest>}).
    details        TEXT    NOT NULL
);
CREATE INDEX audit_events_created ON audit_events (created_at, id);
CREATE INDEX audit_events_entity ON audit_events (entity_type, entity_id, id);

-- Webhooks of a project or group (GitLab's hook shape). The token is sent as X-Gitlab-Token,
-- so it is stored as given; it is never returned.
CREATE TABLE webhooks (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- project or group.
    source_type               TEXT    NOT NULL,
    source_id                 BIGINT  NOT NULL,
    url                       TEXT    NOT NULL,
    token                     TEXT,
    enable_ssl_verification   BIGINT  NOT NULL,
    container_registry_events BIGINT  NOT NULL,
    created_at                BIGINT  NOT NULL
);
CREATE INDEX webhooks_source ON webhooks (source_type, source_id);

-- The outbox: one row per registry event (distribution's event JSON), written in the
-- transaction of the change it describes, with a `webhook_delivery` job that delivers it.
CREATE TABLE registry_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The project the repository belongs to, whose hooks (and its groups') receive it.
    project_id  BIGINT,
    action      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX registry_events_created ON registry_events (created_at);

-- Every delivery attempt of an event to one receiver (`hook:<id>` or `endpoint:<name>`).
CREATE TABLE webhook_deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      BIGINT  NOT NULL REFERENCES registry_events (id) ON DELETE CASCADE,
    receiver      TEXT    NOT NULL,
    attempt       BIGINT  NOT NULL,
    delivered     BIGINT  NOT NULL,
    response_code BIGINT,
    -- The first 1 KiB of the response body, or the error.
    response      TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, receiver);
