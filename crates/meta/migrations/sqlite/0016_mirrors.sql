-- Pull mirrors (issue 14): a project follows an upstream repository, synced on schedule by
-- the job queue with the copy engine of `stowage import`; every run is recorded.

CREATE TABLE registry_mirrors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- The upstream repository's URL: registry base plus repository path.
    upstream    TEXT   NOT NULL,
    -- The repository it is copied to (below the project).
    destination TEXT   NOT NULL,
    tag_filter  TEXT,
    interval_ms BIGINT NOT NULL,
    next_run_at BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX registry_mirrors_by_project ON registry_mirrors (project_id, id);
CREATE INDEX registry_mirrors_due ON registry_mirrors (next_run_at);

CREATE TABLE registry_mirror_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    mirror_id      BIGINT NOT NULL REFERENCES registry_mirrors(id) ON DELETE CASCADE,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT NOT NULL,
    tags_added     BIGINT NOT NULL,
    tags_moved     BIGINT NOT NULL,
    tags_unchanged BIGINT NOT NULL,
    tags_failed    BIGINT NOT NULL,
    bytes          BIGINT NOT NULL,
    error          TEXT
);
CREATE INDEX registry_mirror_runs_by_mirror ON registry_mirror_runs (mirror_id, id);
