-- Registry management: protection rules for repositories and tags, and cleanup policies.
-- Access levels use GitLab's numbers (40 maintainer, 50 owner, 60 instance admin); booleans
-- are 0/1 integers and timestamps milliseconds since the epoch on both backends.

-- Who may push to or delete from the repositories whose full path matches the pattern
-- (`*` matches any run of characters). NULL: that action is not restricted by the rule.
CREATE TABLE repository_protection_rules (
    id                              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id                      BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repository_path_pattern         TEXT   NOT NULL,
    minimum_access_level_for_push   BIGINT,
    minimum_access_level_for_delete BIGINT,
    created_at                      BIGINT NOT NULL,
    UNIQUE (project_id, repository_path_pattern)
);

-- Tag rules: a regex on tag names (unanchored, as GitLab matches it). An immutable rule has
-- no access levels: a matching tag, once created, can be neither moved nor deleted.
CREATE TABLE tag_protection_rules (
    id                              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id                      BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    tag_name_pattern                TEXT   NOT NULL,
    minimum_access_level_for_push   BIGINT,
    minimum_access_level_for_delete BIGINT,
    immutable                       BIGINT NOT NULL DEFAULT 0,
    created_at                      BIGINT NOT NULL,
    UNIQUE (project_id, tag_name_pattern)
);

-- One cleanup policy per project, with the progress of its current or last run: a run that
-- hits its budget records the repository it stopped in (`run_cursor`) with status
-- 'unfinished', and the next scheduler pass resumes there.
CREATE TABLE cleanup_policies (
    project_id         BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    enabled            BIGINT NOT NULL DEFAULT 0,
    cadence            TEXT   NOT NULL DEFAULT '1d',
    keep_n             BIGINT,
    older_than         TEXT,
    name_regex         TEXT,
    name_regex_keep    TEXT,
    next_run_at        BIGINT,
    run_status         TEXT   NOT NULL DEFAULT 'unscheduled',
    run_cursor         TEXT,
    run_started_at     BIGINT,
    run_removed        BIGINT NOT NULL DEFAULT 0,
    last_run_at        BIGINT,
    last_run_removed   BIGINT,
    last_run_status    TEXT,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX cleanup_policies_due ON cleanup_policies (enabled, next_run_at);
