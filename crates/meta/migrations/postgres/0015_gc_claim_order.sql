-- The storage deleter claims due rows in (next_attempt_at, digest) order: with an index on
-- next_attempt_at alone, every claim sorted the whole due backlog (100 000 rows queued by one
-- review burst all share a time) to take its first 1 000.
DROP INDEX gc_storage_deletions_due;
CREATE INDEX gc_storage_deletions_due ON gc_storage_deletions (next_attempt_at, digest);
