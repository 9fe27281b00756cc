-- Registry metadata: the source of truth for what every repository holds.
-- Timestamps are milliseconds since the Unix epoch (portable across SQLite and PostgreSQL).

CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL
);

-- Every blob is stored once, addressed by digest; size lives here so usage is a query.
CREATE TABLE blobs (
    digest      TEXT    PRIMARY KEY,
    size        BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- A repository may serve a blob only if linked: this prevents cross-tenant digest probing.
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    blob_digest   TEXT   NOT NULL REFERENCES blobs(digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, blob_digest)
);
CREATE INDEX repository_blobs_by_blob ON repository_blobs (blob_digest);

CREATE TABLE manifests (
    id             BIGSERIAL PRIMARY KEY,
    repository_id  BIGINT  NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest         TEXT    NOT NULL,
    media_type     TEXT    NOT NULL,
    artifact_type  TEXT,
    subject_digest TEXT,
    config_digest  TEXT,
    total_size     BIGINT  NOT NULL,
    annotations    TEXT,
    payload        BYTEA   NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject_digest);

-- Blobs (config + layers) a manifest references; indexed by blob for cheap GC reference checks.
CREATE TABLE manifest_blobs (
    manifest_id BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    blob_digest TEXT   NOT NULL,
    PRIMARY KEY (manifest_id, blob_digest)
);
CREATE INDEX manifest_blobs_by_blob ON manifest_blobs (blob_digest);

-- Index/manifest-list children.
CREATE TABLE manifest_references (
    parent_id BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    child_id  BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX manifest_references_by_child ON manifest_references (child_id);

CREATE TABLE tags (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name          TEXT   COLLATE "C" NOT NULL,
    manifest_id   BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_by_manifest ON tags (manifest_id);

-- Upload sessions live here (and their parts in storage), never only in one process's memory.
CREATE TABLE uploads (
    id          TEXT   PRIMARY KEY,
    repository  TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    parts       BIGINT NOT NULL,
    hash_state  BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_by_updated ON uploads (updated_at);
