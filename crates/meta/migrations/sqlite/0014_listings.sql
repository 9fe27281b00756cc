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
-- 3. `tag_search_names` + `tag_name_trigrams` (FTS5, trigram tokenizer): an index that serves
--    the case-insensitive substring search of tag names (`name=`). FTS5 needs a stable integer
--    key, which `tags` (a rowid table without an INTEGER PRIMARY KEY: VACUUM may renumber it)
--    does not have; `tag_search_names` gives each tag one.

ALTER TABLE repositories ADD COLUMN project_id BIGINT;
ALTER TABLE repositories ADD COLUMN tags_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN repositories_count BIGINT NOT NULL DEFAULT 0;
CREATE INDEX repositories_by_project ON repositories (project_id, name);

-- The candidates are the full paths between the name's first segment and the name itself
-- (the unique index on projects.full_path answers the range); `substr` compares literally.
CREATE TRIGGER repository_project_on_insert AFTER INSERT ON repositories
BEGIN
    UPDATE repositories SET project_id = (
        SELECT p.id FROM projects p
        WHERE p.full_path >= substr(NEW.name, 1, instr(NEW.name || '/', '/') - 1)
          AND p.full_path <= NEW.name
          AND (p.full_path = NEW.name
               OR substr(NEW.name, 1, length(p.full_path) + 1) = p.full_path || '/')
        ORDER BY length(p.full_path) DESC LIMIT 1)
    WHERE id = NEW.id;
    UPDATE projects SET repositories_count = repositories_count + 1
    WHERE id = (SELECT project_id FROM repositories WHERE id = NEW.id);
END;

CREATE TRIGGER repository_project_on_delete AFTER DELETE ON repositories
WHEN OLD.project_id IS NOT NULL
BEGIN
    UPDATE projects SET repositories_count = repositories_count - 1 WHERE id = OLD.project_id;
END;

CREATE TRIGGER project_repositories_on_insert AFTER INSERT ON projects
BEGIN
    UPDATE repositories SET project_id = NEW.id
    WHERE name = NEW.full_path OR (name > NEW.full_path || '/' AND name < NEW.full_path || '0');
    UPDATE projects SET repositories_count =
        (SELECT COUNT(*) FROM repositories WHERE project_id = NEW.id)
    WHERE id = NEW.id;
END;

UPDATE repositories SET project_id = (
    SELECT p.id FROM projects p
    WHERE p.full_path >= substr(repositories.name, 1, instr(repositories.name || '/', '/') - 1)
      AND p.full_path <= repositories.name
      AND (p.full_path = repositories.name
           OR substr(repositories.name, 1, length(p.full_path) + 1) = p.full_path || '/')
    ORDER BY length(p.full_path) DESC LIMIT 1);
UPDATE projects SET repositories_count =
    (SELECT COUNT(*) FROM repositories r WHERE r.project_id = projects.id);

-- ---- tag counts ----------------------------------------------------------------------------

UPDATE repositories SET tags_count = (SELECT COUNT(*) FROM tags t WHERE t.repository_id = repositories.id);

CREATE TRIGGER tags_count_on_insert AFTER INSERT ON tags
BEGIN
    UPDATE repositories SET tags_count = tags_count + 1 WHERE id = NEW.repository_id;
END;

CREATE TRIGGER tags_count_on_delete AFTER DELETE ON tags
BEGIN
    UPDATE repositories SET tags_count = tags_count - 1 WHERE id = OLD.repository_id;
END;

-- ---- tag name search -----------------------------------------------------------------------

CREATE TABLE tag_search_names (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id BIGINT NOT NULL,
    name          TEXT   NOT NULL,
    UNIQUE (repository_id, name)
);

-- Case-insensitive (as the search is): LIKE on this table is answered by the trigram index
-- for patterns of three characters or more.
CREATE VIRTUAL TABLE tag_name_trigrams USING fts5(
    name, content = 'tag_search_names', content_rowid = 'id', tokenize = 'trigram'
);

INSERT INTO tag_search_names (repository_id, name) SELECT repository_id, name FROM tags;
INSERT INTO tag_name_trigrams (tag_name_trigrams) VALUES ('rebuild');

CREATE TRIGGER tag_search_on_insert AFTER INSERT ON tags
BEGIN
    INSERT INTO tag_search_names (repository_id, name) VALUES (NEW.repository_id, NEW.name);
    INSERT INTO tag_name_trigrams (rowid, name)
    SELECT s.id, s.name FROM tag_search_names s
    WHERE s.repository_id = NEW.repository_id AND s.name = NEW.name;
END;

CREATE TRIGGER tag_search_on_delete AFTER DELETE ON tags
BEGIN
    INSERT INTO tag_name_trigrams (tag_name_trigrams, rowid, name)
    SELECT 'delete', s.id, s.name FROM tag_search_names s
    WHERE s.repository_id = OLD.repository_id AND s.name = OLD.name;
    DELETE FROM tag_search_names WHERE repository_id = OLD.repository_id AND name = OLD.name;
END;
