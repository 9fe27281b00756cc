-- Usage and quotas: deduplicated bytes per repository, project and group (with descendants),
-- kept current by triggers, so every write path (whatever code runs it) updates usage in its
-- own transaction without calling anything.
--
-- What counts: the distinct blobs (configs and layers, `manifest_blobs`) of every manifest
-- stored in a scope, tagged or not, at their `blobs.size`. An untagged manifest counts until
-- garbage collection deletes it: usage is what the scope holds, as in GitLab's registry. A blob
-- counts once per scope however many manifests or repositories reference it.
--
-- Scopes: ('repository', repositories.id), ('project', projects.id), ('group', namespaces.id)
-- for every group above the repository; the top-level group is the namespace quotas apply to.

-- The scopes a repository's content counts in, fixed when the repository is created: its
-- project is the project whose full path is the repository name or a prefix of it (projects
-- never nest), its groups every namespace whose full path is a proper prefix.
CREATE TABLE usage_repository_scopes (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    scope_kind    TEXT   NOT NULL,
    scope_id      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, scope_kind, scope_id)
);
CREATE INDEX usage_repository_scopes_by_scope ON usage_repository_scopes (scope_kind, scope_id);

-- How many manifests of a scope reference a blob; a row exists only while refs > 0.
CREATE TABLE usage_blob_refs (
    scope_kind  TEXT   NOT NULL,
    scope_id    BIGINT NOT NULL,
    blob_digest TEXT   NOT NULL,
    refs        BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, blob_digest)
);
CREATE INDEX usage_blob_refs_by_blob ON usage_blob_refs (blob_digest);

-- The deduplicated bytes of a scope: the sum of `blobs.size` over its usage_blob_refs rows.
CREATE TABLE usage_totals (
    scope_kind TEXT   NOT NULL,
    scope_id   BIGINT NOT NULL,
    bytes      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope_kind, scope_id)
);

-- Quotas: a limit per top-level group. NULL: the instance default (`quotas.default_limit`,
-- copied into quota_settings at start); 0: no limit.
ALTER TABLE namespaces ADD COLUMN container_registry_storage_limit BIGINT;
CREATE TABLE quota_settings (
    id            BIGINT PRIMARY KEY,
    default_limit BIGINT NOT NULL DEFAULT 0
);
INSERT INTO quota_settings (id, default_limit) VALUES (1, 0);

-- The percentages whose crossing is recorded.
CREATE TABLE storage_notice_thresholds (percent BIGINT PRIMARY KEY);
INSERT INTO storage_notice_thresholds (percent) VALUES (70), (85), (95), (100);

-- One row per upward crossing of a threshold by a top-level group's usage (or by a lowered
-- limit): recorded once until usage drops below it again and crosses anew. `logged` is set
-- once the server has written it to its log; the webhook work delivers from here.
CREATE TABLE storage_notices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    threshold    BIGINT NOT NULL,
    usage_bytes  BIGINT NOT NULL,
    limit_bytes  BIGINT NOT NULL,
    logged       BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX storage_notices_by_namespace ON storage_notices (namespace_id, id);
CREATE INDEX storage_notices_unlogged ON storage_notices (logged, id);

-- ---- triggers -----------------------------------------------------------------------------
-- SQLite triggers cannot use CTEs: ancestors are found by exact path prefix, within the range
-- of full paths between the repository's top-level segment and its name (the unique index on
-- full_path answers it). `substr` compares literally, unlike LIKE (paths may hold `_`).

CREATE TRIGGER usage_repository_created AFTER INSERT ON repositories
BEGIN
    INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
    VALUES (NEW.id, 'repository', NEW.id);
    INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
    SELECT NEW.id, 'project', p.id FROM projects p
    WHERE p.full_path >= substr(NEW.name, 1, instr(NEW.name || '/', '/') - 1)
      AND p.full_path <= NEW.name
      AND (p.full_path = NEW.name OR substr(NEW.name, 1, length(p.full_path) + 1) = p.full_path || '/');
    INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
    SELECT NEW.id, 'group', n.id FROM namespaces n
    WHERE n.full_path >= substr(NEW.name, 1, instr(NEW.name || '/', '/') - 1)
      AND n.full_path < NEW.name
      AND substr(NEW.name, 1, length(n.full_path) + 1) = n.full_path || '/';
    INSERT INTO usage_totals (scope_kind, scope_id, bytes)
    SELECT scope_kind, scope_id, 0 FROM usage_repository_scopes WHERE repository_id = NEW.id
    ON CONFLICT (scope_kind, scope_id) DO NOTHING;
END;

-- Before the repository row goes (and its scopes with it by cascade), its manifests' blobs
-- leave every scope.
CREATE TRIGGER usage_repository_deleting BEFORE DELETE ON repositories
BEGIN
    DELETE FROM manifest_blobs
    WHERE manifest_id IN (SELECT id FROM manifests WHERE repository_id = OLD.id);
END;

CREATE TRIGGER usage_repository_deleted AFTER DELETE ON repositories
BEGIN
    DELETE FROM usage_totals WHERE scope_kind = 'repository' AND scope_id = OLD.id;
END;

-- A manifest's blob rows go while the manifest row (and so its repository) can still be read.
CREATE TRIGGER usage_manifest_deleting BEFORE DELETE ON manifests
BEGIN
    DELETE FROM manifest_blobs WHERE manifest_id = OLD.id;
END;

-- A blob new to a scope adds its size there; every reference counts in usage_blob_refs.
-- (SQLite runs one writer at a time, so "new" can be read before the upsert.)
CREATE TRIGGER usage_manifest_blob_added AFTER INSERT ON manifest_blobs
BEGIN
    UPDATE usage_totals
    SET bytes = bytes + (SELECT b.size FROM blobs b WHERE b.digest = NEW.blob_digest)
    WHERE EXISTS (SELECT 1 FROM blobs b WHERE b.digest = NEW.blob_digest)
      AND (scope_kind, scope_id) IN (
        SELECT s.scope_kind, s.scope_id FROM manifests m
        JOIN usage_repository_scopes s ON s.repository_id = m.repository_id
        WHERE m.id = NEW.manifest_id
          AND NOT EXISTS (SELECT 1 FROM usage_blob_refs r WHERE r.scope_kind = s.scope_kind
                          AND r.scope_id = s.scope_id AND r.blob_digest = NEW.blob_digest));
    INSERT INTO usage_blob_refs (scope_kind, scope_id, blob_digest, refs)
    SELECT s.scope_kind, s.scope_id, NEW.blob_digest, 1 FROM manifests m
    JOIN usage_repository_scopes s ON s.repository_id = m.repository_id
    WHERE m.id = NEW.manifest_id AND EXISTS (SELECT 1 FROM blobs b WHERE b.digest = NEW.blob_digest)
    ON CONFLICT (scope_kind, scope_id, blob_digest) DO UPDATE SET refs = refs + 1;
END;

-- The last reference in a scope gone, the blob's size leaves the scope.
CREATE TRIGGER usage_manifest_blob_removed AFTER DELETE ON manifest_blobs
BEGIN
    UPDATE usage_blob_refs SET refs = refs - 1
    WHERE blob_digest = OLD.blob_digest AND (scope_kind, scope_id) IN (
        SELECT s.scope_kind, s.scope_id FROM manifests m
        JOIN usage_repository_scopes s ON s.repository_id = m.repository_id
        WHERE m.id = OLD.manifest_id);
    UPDATE usage_totals
    SET bytes = bytes - COALESCE((SELECT b.size FROM blobs b WHERE b.digest = OLD.blob_digest), 0)
    WHERE (scope_kind, scope_id) IN (
        SELECT r.scope_kind, r.scope_id FROM usage_blob_refs r
        WHERE r.blob_digest = OLD.blob_digest AND r.refs <= 0);
    DELETE FROM usage_blob_refs WHERE blob_digest = OLD.blob_digest AND refs <= 0;
END;

-- Notices: a threshold t is exceeded when limit > 0 and bytes * 100 >= t * limit. A notice is
-- recorded when a change takes it from not exceeded to exceeded, whichever side changed.
CREATE TRIGGER storage_notice_on_usage AFTER UPDATE OF bytes ON usage_totals
WHEN NEW.scope_kind = 'group' AND NEW.bytes > OLD.bytes
BEGIN
    INSERT INTO storage_notices (namespace_id, threshold, usage_bytes, limit_bytes, created_at)
    SELECT n.id, t.percent, NEW.bytes, l.limit_bytes,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM namespaces n
    JOIN (SELECT COALESCE(n2.container_registry_storage_limit,
                          (SELECT default_limit FROM quota_settings WHERE id = 1), 0) AS limit_bytes
          FROM namespaces n2 WHERE n2.id = NEW.scope_id) l
    JOIN storage_notice_thresholds t
    WHERE n.id = NEW.scope_id AND n.parent_id IS NULL AND l.limit_bytes > 0
      AND OLD.bytes * 100 < t.percent * l.limit_bytes
      AND NEW.bytes * 100 >= t.percent * l.limit_bytes;
END;

CREATE TRIGGER storage_notice_on_group_limit
AFTER UPDATE OF container_registry_storage_limit ON namespaces
WHEN NEW.parent_id IS NULL
BEGIN
    INSERT INTO storage_notices (namespace_id, threshold, usage_bytes, limit_bytes, created_at)
    SELECT NEW.id, t.percent, u.bytes, l.new_limit,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM usage_totals u
    JOIN (SELECT COALESCE(OLD.container_registry_storage_limit, s.default_limit, 0) AS old_limit,
                 COALESCE(NEW.container_registry_storage_limit, s.default_limit, 0) AS new_limit
          FROM quota_settings s WHERE s.id = 1) l
    JOIN storage_notice_thresholds t
    WHERE u.scope_kind = 'group' AND u.scope_id = NEW.id AND l.new_limit > 0
      AND NOT (l.old_limit > 0 AND u.bytes * 100 >= t.percent * l.old_limit)
      AND u.bytes * 100 >= t.percent * l.new_limit;
END;

CREATE TRIGGER storage_notice_on_default_limit AFTER UPDATE OF default_limit ON quota_settings
BEGIN
    INSERT INTO storage_notices (namespace_id, threshold, usage_bytes, limit_bytes, created_at)
    SELECT n.id, t.percent, u.bytes, NEW.default_limit,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM namespaces n
    JOIN usage_totals u ON u.scope_kind = 'group' AND u.scope_id = n.id
    JOIN storage_notice_thresholds t
    WHERE n.parent_id IS NULL AND n.container_registry_storage_limit IS NULL
      AND NEW.default_limit > 0
      AND NOT (OLD.default_limit > 0 AND u.bytes * 100 >= t.percent * OLD.default_limit)
      AND u.bytes * 100 >= t.percent * NEW.default_limit;
END;

-- ---- backfill -----------------------------------------------------------------------------
-- The same rules applied to what is stored (`stowage usage recompute` runs the same queries).

INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
SELECT r.id, 'repository', r.id FROM repositories r;
INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
SELECT r.id, 'project', p.id FROM repositories r JOIN projects p
  ON p.full_path = r.name OR substr(r.name, 1, length(p.full_path) + 1) = p.full_path || '/';
INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id)
SELECT r.id, 'group', n.id FROM repositories r JOIN namespaces n
  ON substr(r.name, 1, length(n.full_path) + 1) = n.full_path || '/';

INSERT INTO usage_blob_refs (scope_kind, scope_id, blob_digest, refs)
SELECT s.scope_kind, s.scope_id, mb.blob_digest, COUNT(*)
FROM manifest_blobs mb
JOIN manifests m ON m.id = mb.manifest_id
JOIN usage_repository_scopes s ON s.repository_id = m.repository_id
JOIN blobs b ON b.digest = mb.blob_digest
GROUP BY s.scope_kind, s.scope_id, mb.blob_digest;

INSERT INTO usage_totals (scope_kind, scope_id, bytes)
SELECT s.scope_kind, s.scope_id, 0 FROM usage_repository_scopes s
GROUP BY s.scope_kind, s.scope_id;
UPDATE usage_totals SET bytes = COALESCE((
    SELECT SUM(b.size) FROM usage_blob_refs r JOIN blobs b ON b.digest = r.blob_digest
    WHERE r.scope_kind = usage_totals.scope_kind AND r.scope_id = usage_totals.scope_id), 0);
