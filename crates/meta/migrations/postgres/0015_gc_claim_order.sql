-- The GC queues are read in (time, key) order: the storage deleter claims due rows by
-- (next_attempt_at, digest), and `stowage gc status` shows the oldest due review item by
-- (review_after, digest) and (review_after, manifest_id). With an index on the time alone, each
-- of those sorted the whole due backlog (100 000 rows queued by one burst all share a time):
-- 23 ms for the status's "oldest due blob" at that size, and a claim sorted it for every batch.
DROP INDEX gc_storage_deletions_due;
CREATE INDEX gc_storage_deletions_due ON gc_storage_deletions (next_attempt_at, digest);
DROP INDEX gc_blob_review_queue_due;
CREATE INDEX gc_blob_review_queue_due ON gc_blob_review_queue (review_after, digest);
DROP INDEX gc_manifest_review_queue_due;
CREATE INDEX gc_manifest_review_queue_due ON gc_manifest_review_queue (review_after, manifest_id);
