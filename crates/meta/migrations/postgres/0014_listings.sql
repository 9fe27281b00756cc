-- Listings that stay fast at scale: every listing is a query over indexes, the same cost for
-- every caller (issue 11, "Listings that stay fast at scale").
--
-- 1. `repositories.project_id`: the project a repository belongs to (the project whose full
--    path is its name or a prefix of it; projects never nest), so visibility is a join and
--    "the repositories of the projects a caller may read" an index range per project. Set on
--    insert by trigger, and by a new project for the names below it; and
--    `projects.repositories_count`, kept by the same triggers, for listing totals.
-- 2. `repositories.tags_count`: kept by triggers on `tags` inside the writing transaction, so a
--    tag count or page total is one row read, not a COUNT over a million tags.
-- 3. `tag_search_names` + the view `tag_name_trigrams`, with a pg_trgm GIN index: an index
--    that serves the case-insensitive substring search of tag names (`name=`). pg_trgm ships
--    with PostgreSQL (contrib) and is a trusted extension; where it cannot be created the
--    search still works, by scanning.

ALTER TABLE repositories ADD COLUMN project_id BIGINT;
ALTER TABLE repositories ADD COLUMN tags_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN repositories_count BIGINT NOT NULL DEFAULT 0;
CREATE INDEX repositories_by_project ON repositories (project_id, name);

-- The project whose full path is `name` or its longest prefix (the unique index on
-- projects.full_path answers each prefix).
CREATE FUNCTION repository_project_of(repository_name TEXT) RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT p.id FROM projects p
    WHERE p.full_path = ANY (
        SELECT array_to_string((string_to_array(repository_name, '/'))[1:i], '/')
        FROM generate_series(1, cardinality(string_to_array(repository_name, '/'))) AS i)
    ORDER BY length(p.full_path) DESC LIMIT 1
$$;

CREATE FUNCTION repository_project_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.project_id := repository_project_of(NEW.name);
    RETURN NEW;
END $$;
CREATE TRIGGER repository_project_on_insert BEFORE INSERT ON repositories
FOR EACH ROW EXECUTE FUNCTION repository_project_on_insert();

-- Counted once per statement (transition tables): a statement that inserts many
-- repositories of one project updates its row once, not once per repository. Only rows
-- actually inserted are in `added` (an insert that conflicts counts nothing).
CREATE FUNCTION repositories_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projects p SET repositories_count = p.repositories_count + a.n
    FROM (SELECT project_id, COUNT(*) AS n FROM added WHERE project_id IS NOT NULL
          GROUP BY project_id) a
    WHERE p.id = a.project_id;
    RETURN NULL;
END $$;
CREATE TRIGGER repositories_added AFTER INSERT ON repositories
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION repositories_added();

CREATE FUNCTION repositories_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projects p SET repositories_count = p.repositories_count - d.n
    FROM (SELECT project_id, COUNT(*) AS n FROM removed WHERE project_id IS NOT NULL
          GROUP BY project_id) d
    WHERE p.id = d.project_id;
    RETURN NULL;
END $$;
CREATE TRIGGER repositories_removed AFTER DELETE ON repositories
REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION repositories_removed();

CREATE FUNCTION project_repositories_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repositories SET project_id = NEW.id
    WHERE name = NEW.full_path
       OR (name > NEW.full_path || '/' AND name < NEW.full_path || '0');
    UPDATE projects SET repositories_count =
        (SELECT COUNT(*) FROM repositories WHERE project_id = NEW.id)
    WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER project_repositories_on_insert AFTER INSERT ON projects
FOR EACH ROW EXECUTE FUNCTION project_repositories_on_insert();

UPDATE repositories SET project_id = repository_project_of(name);
UPDATE projects p SET repositories_count = c.n
FROM (SELECT project_id, COUNT(*) AS n FROM repositories GROUP BY project_id) c
WHERE c.project_id = p.id;

-- ---- tag counts ----------------------------------------------------------------------------

UPDATE repositories r SET tags_count = c.n
FROM (SELECT repository_id, COUNT(*) AS n FROM tags GROUP BY repository_id) c
WHERE c.repository_id = r.id;

-- Per statement, as for repositories: a bulk insert or delete of tags updates each
-- repository's row once.
CREATE FUNCTION tags_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repositories r SET tags_count = r.tags_count + a.n
    FROM (SELECT repository_id, COUNT(*) AS n FROM added GROUP BY repository_id) a
    WHERE r.id = a.repository_id;
    INSERT INTO tag_search_names (repository_id, name) SELECT repository_id, name FROM added;
    RETURN NULL;
END $$;

CREATE FUNCTION tags_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repositories r SET tags_count = r.tags_count - d.n
    FROM (SELECT repository_id, COUNT(*) AS n FROM removed GROUP BY repository_id) d
    WHERE r.id = d.repository_id;
    DELETE FROM tag_search_names s USING removed d
    WHERE s.repository_id = d.repository_id AND s.name = d.name;
    RETURN NULL;
END $$;

-- ---- tag name search -----------------------------------------------------------------------
-- The same shape as on SQLite, so the search query is written once: `tag_search_names` (one
-- row per tag, with an id) and `tag_name_trigrams (rowid, name)` whose `name LIKE` a trigram
-- index answers — here a view over the lower-cased names with a pg_trgm GIN index below it.

CREATE TABLE tag_search_names (
    id            BIGSERIAL PRIMARY KEY,
    repository_id BIGINT NOT NULL,
    name          TEXT   COLLATE "C" NOT NULL,
    UNIQUE (repository_id, name)
);
INSERT INTO tag_search_names (repository_id, name) SELECT repository_id, name FROM tags;

CREATE VIEW tag_name_trigrams AS SELECT id AS rowid, lower(name) AS name FROM tag_search_names;

CREATE TRIGGER tags_added AFTER INSERT ON tags
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tags_added();
CREATE TRIGGER tags_removed AFTER DELETE ON tags
REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION tags_removed();

DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): tag name search will scan', SQLERRM;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX tag_search_names_trigrams ON tag_search_names
            USING gin (lower(name) gin_trgm_ops);
    END IF;
END $$;
