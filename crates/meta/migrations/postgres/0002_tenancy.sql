-- Tenancy and credentials: users, nested groups, projects, memberships, tokens, signing keys.
-- Booleans are 0/1 integers and timestamps milliseconds since the epoch on both backends.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT,
    is_admin      BIGINT  NOT NULL DEFAULT 0,
    state         TEXT    NOT NULL DEFAULT 'active',
    created_at    BIGINT  NOT NULL
);

-- Groups (GitLab keeps them in a table named namespaces too) nest: full_path is the parent's full_path + '/' + path.
CREATE TABLE namespaces (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    full_path   TEXT    COLLATE "C" NOT NULL UNIQUE,
    parent_id   BIGINT  REFERENCES namespaces(id),
    visibility  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE projects (
    id                    BIGSERIAL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    path                  TEXT    NOT NULL,
    full_path             TEXT    COLLATE "C" NOT NULL UNIQUE,
    group_id              BIGINT  NOT NULL REFERENCES namespaces(id),
    visibility            TEXT    NOT NULL,
    registry_access_level TEXT    NOT NULL DEFAULT 'enabled',
    created_at            BIGINT  NOT NULL
);

-- source_type is 'group' or 'project'; access_level uses GitLab's numbers (10..50).
CREATE TABLE members (
    source_type  TEXT   NOT NULL,
    source_id    BIGINT NOT NULL,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_level BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (source_type, source_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id);

-- Only the SHA-256 of a token is stored; the token itself is shown once at creation.
CREATE TABLE personal_access_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    scopes       TEXT    NOT NULL,
    expires_at   BIGINT,
    revoked      BIGINT  NOT NULL DEFAULT 0,
    last_used_at BIGINT,
    created_at   BIGINT  NOT NULL
);

CREATE TABLE deploy_tokens (
    id          BIGSERIAL PRIMARY KEY,
    source_type TEXT    NOT NULL,
    source_id   BIGINT  NOT NULL,
    name        TEXT    NOT NULL,
    username    TEXT    NOT NULL UNIQUE,
    token_hash  TEXT    NOT NULL UNIQUE,
    scopes      TEXT    NOT NULL,
    expires_at  BIGINT,
    revoked     BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE job_tokens (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT  NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     BIGINT  REFERENCES users(id) ON DELETE CASCADE,
    token_hash  TEXT    NOT NULL UNIQUE,
    expires_at  BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- Project `project_id` lets job tokens of `source_project_id` pull from it.
CREATE TABLE job_token_allowlist (
    project_id        BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    source_project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (project_id, source_project_id)
);

-- Token signing keys, shared by every instance (PKCS#8 DER).
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    private_der BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);
