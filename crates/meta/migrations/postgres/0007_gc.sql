-- Online garbage collection (GitLab's design): the tables the write service feeds and the GC
-- workers drain. Timestamps are milliseconds since the Unix epoch.
--
-- Every write that may orphan something queues what it may have orphaned, in the same
-- transaction, with `review_after` = now + `gc.reviewafter` (+ jitter). A worker takes due rows
-- (`FOR UPDATE SKIP LOCKED` on PostgreSQL; the single writer on SQLite), re-checks references
-- inside its transaction and deletes only what is still dangling. A row for an item that is
-- queued again is updated in place (one row per item), so the queues never hold duplicates.

-- Blobs to review: dangling when no manifest anywhere references it (config or layer).
CREATE TABLE gc_blob_review_queue (
    digest        TEXT    PRIMARY KEY,
    review_after  BIGINT  NOT NULL,
    -- Times a worker looked at it and kept or postponed it (backoff for failures, statistics).
    review_count  BIGINT  NOT NULL DEFAULT 0,
    -- What queued it last: blob_upload, blob_unlink, manifest_delete, repository_delete, seed…
    event         TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX gc_blob_review_queue_due ON gc_blob_review_queue (review_after);

-- Manifests to review: dangling when no tag points at it and no index of its repository lists
-- it (by id in manifest_references or by digest in manifest_digest_references), or when its
-- `subject` is gone from its repository.
CREATE TABLE gc_manifest_review_queue (
    manifest_id   BIGINT  PRIMARY KEY REFERENCES manifests(id) ON DELETE CASCADE,
    repository_id BIGINT  NOT NULL,
    review_after  BIGINT  NOT NULL,
    review_count  BIGINT  NOT NULL DEFAULT 0,
    -- manifest_upload, tag_delete, tag_switch, manifest_delete, index_delete, subject_delete…
    event         TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX gc_manifest_review_queue_due ON gc_manifest_review_queue (review_after);

-- Blob bytes to delete from storage. A row is written in the transaction that removes the
-- blob's metadata, so the bytes go only after the metadata is gone; a worker deletes the object
-- (idempotent) and then the row, retrying with exponential backoff up to `gc.maxbackoff` when
-- storage fails. Publishing a blob's bytes anew removes its pending row first.
CREATE TABLE gc_storage_deletions (
    digest           TEXT    PRIMARY KEY,
    size             BIGINT  NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX gc_storage_deletions_due ON gc_storage_deletions (next_attempt_at);

-- What GC did, for `stowage gc status` and the admin API: one row per deletion or failure.
CREATE TABLE gc_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT  NOT NULL,
    -- blob, manifest, storage
    kind        TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    repository  TEXT,
    size        BIGINT  NOT NULL DEFAULT 0,
    reason      TEXT    NOT NULL,
    -- deleted, failed
    outcome     TEXT    NOT NULL
);
CREATE INDEX gc_events_at ON gc_events (at);

-- Seed: a database from before online GC gets its possible garbage queued, due a day from now
-- (`stowage gc run` reclaims it at once).
INSERT INTO gc_blob_review_queue (digest, review_after, event, created_at)
SELECT b.digest, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + 86400000, 'seed',
       (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest);
INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, review_after, event, created_at)
SELECT m.id, m.repository_id, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + 86400000, 'seed',
       (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
FROM manifests m
WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
  AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child_id = m.id);
