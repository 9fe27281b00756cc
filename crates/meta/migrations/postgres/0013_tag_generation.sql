-- A manifest-by-tag cache that is correct across instances (issue 11). Every change to a
-- repository's tags bumps the repository's `tag_generation` in the same transaction, by
-- trigger, so no write path (present or future) can forget it. An instance that cached
-- "repository R, tag T -> manifest M" under (R's id, generation G) serves it again only after
-- reading R's row and finding the same id and G: one primary-key read instead of the tag join
-- and the manifest payload, and never a stale answer (the bump commits with the tag change).
ALTER TABLE repositories ADD COLUMN tag_generation BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION bump_tag_generation_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repositories SET tag_generation = tag_generation + 1
    WHERE id IN (SELECT DISTINCT repository_id FROM new_tags);
    RETURN NULL;
END $$;

CREATE FUNCTION bump_tag_generation_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repositories SET tag_generation = tag_generation + 1
    WHERE id IN (SELECT DISTINCT repository_id FROM old_tags);
    RETURN NULL;
END $$;

-- Statement-level with transition tables: a cleanup deleting 1 000 tags of one repository
-- bumps its row once. An UPDATE of a tag (a move) changes no repository_id, so the old rows
-- name every repository touched.
CREATE TRIGGER tags_insert_bumps_generation AFTER INSERT ON tags
    REFERENCING NEW TABLE AS new_tags FOR EACH STATEMENT EXECUTE FUNCTION bump_tag_generation_new();
CREATE TRIGGER tags_update_bumps_generation AFTER UPDATE ON tags
    REFERENCING OLD TABLE AS old_tags FOR EACH STATEMENT EXECUTE FUNCTION bump_tag_generation_old();
CREATE TRIGGER tags_delete_bumps_generation AFTER DELETE ON tags
    REFERENCING OLD TABLE AS old_tags FOR EACH STATEMENT EXECUTE FUNCTION bump_tag_generation_old();
