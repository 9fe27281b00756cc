-- The durable job queue (crate `jobs`): background work that must survive a restart and run
-- once across every instance — repository deletes, bulk tag deletes, cleanup policy passes, the
-- upload purge. Timestamps are milliseconds since the Unix epoch.
--
-- A worker claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL; the single writer on
-- SQLite), marks them running under a lease it renews while the handler runs, and records the
-- outcome. A running row whose lease has run out belongs to an instance that stopped: it is
-- claimable again. Finished rows are kept for `jobs.retention`, then pruned.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Which handler runs it, e.g. repository_delete, bulk_tag_delete, cleanup_policies.
    kind          TEXT    NOT NULL,
    -- The handler's input, JSON text.
    payload       TEXT    NOT NULL,
    -- At most one job per key: a periodic job's key names its period (`upload_purge@1234`), so
    -- every instance may enqueue it and it still runs once per period. NULL: no deduplication.
    dedupe_key    TEXT    UNIQUE,
    -- queued, running, succeeded, failed (retried at run_at), dead (gave up).
    state         TEXT    NOT NULL,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    max_attempts  BIGINT  NOT NULL,
    -- Not before this time (first run, or the next retry).
    run_at        BIGINT  NOT NULL,
    -- The instance running it and how long its claim holds without a renewal.
    lease_owner   TEXT,
    lease_until   BIGINT,
    last_error    TEXT,
    created_at    BIGINT  NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT
);
CREATE INDEX jobs_due ON jobs (state, run_at);
CREATE INDEX jobs_finished ON jobs (finished_at);
CREATE INDEX jobs_kind ON jobs (kind, id);
