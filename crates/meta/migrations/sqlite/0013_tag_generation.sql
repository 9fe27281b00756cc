-- The column PostgreSQL's manifest-by-tag cache checks (see the PostgreSQL migration of the
-- same number). SQLite means one process: every write passes that process's store, which
-- invalidates its cache itself, so no trigger maintains the column here and nothing reads it.
ALTER TABLE repositories ADD COLUMN tag_generation BIGINT NOT NULL DEFAULT 0;
