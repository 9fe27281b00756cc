-- The REST API lists a repository's tags newest first (`sort=published_at`, `keep_n`) with
-- keyset pagination; this index makes that a range scan even with 100 000 tags.
-- A tag's published time is `updated_at`: when it was last pushed or moved.
CREATE INDEX tags_by_published ON tags (repository_id, updated_at, name);
