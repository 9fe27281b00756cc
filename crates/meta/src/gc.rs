//! SQL of the garbage-collection runtime (crate `gc`): the storage deleter's claims on
//! `gc_storage_deletions`, the figures of `stowage gc status` and the admin API, and the mark
//! and dry run of `stowage gc run`. The review of queued blobs and manifests (claim, lock,
//! re-check, delete) is the write service's, in `gc_review.rs`.
//!
//! Tables: migration 0007 (`gc_blob_review_queue`, `gc_manifest_review_queue`,
//! `gc_storage_deletions`, `gc_events`). Timestamps are milliseconds since the epoch.

use std::collections::HashMap;

use sqlx::Row;

use crate::gc_review::{dangling_blob_condition, dangling_manifest_condition};
use crate::store::{get_i64, MetaError, Store, WriteTx};
use crate::{Backend, BlobRecord};

/// `gc_events.kind` of a blob object removed from storage by the storage deleter.
pub const GC_EVENT_STORAGE: &str = "storage";
/// `gc_events.kind` of a leftover removed by the leftovers sweep; `digest` holds its key.
pub const GC_EVENT_LEFTOVER: &str = "leftover";
/// `gc_events.kind` the review writes for a removed blob row.
pub const GC_EVENT_BLOB: &str = "blob";
/// `gc_events.kind` the review writes for a removed manifest.
pub const GC_EVENT_MANIFEST: &str = "manifest";
/// `gc_events.outcome` values.
pub const GC_OUTCOME_DELETED: &str = "deleted";
pub const GC_OUTCOME_FAILED: &str = "failed";

/// The `event` that `stowage gc run` writes on the review rows it makes due.
pub const GC_RUN_EVENT: &str = "gc_run";

/// Longest `last_error` / failure reason stored.
const MAX_ERROR_CHARS: usize = 500;

/// A blob whose bytes are to be removed from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageDeletion {
    pub digest: String,
    pub size: i64,
    /// Failed attempts so far.
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// How one storage deletion of a [`StorageDeletionClaim`] went.
#[derive(Clone, Debug)]
pub enum DeletionOutcome {
    /// The object is gone (or was already).
    Deleted,
    /// Storage failed; the row stays and is retried after a backoff.
    Failed(String),
}

/// Due rows of `gc_storage_deletions`, held by one write transaction until
/// [`finish`](Self::finish): on PostgreSQL they are locked (`FOR UPDATE SKIP LOCKED`, so other
/// instances take other rows and an upload commit of the same digest waits), on SQLite the
/// transaction is the single writer. Dropping the claim rolls back: every row stays.
pub struct StorageDeletionClaim<'a> {
    w: WriteTx<'a>,
    /// Rows whose blob has no `blobs` row: their objects are to be deleted.
    pub items: Vec<StorageDeletion>,
    /// Rows whose digest has a `blobs` row again (published anew): the bytes are needed, the
    /// row is dropped on finish and storage is not touched.
    pub republished: Vec<StorageDeletion>,
}

/// Exponential backoff after `attempts` failed attempts: 2^attempts seconds, at most
/// `max_ms`.
pub fn storage_retry_backoff_ms(attempts: i64, max_ms: i64) -> i64 {
    let exp = attempts.clamp(0, 40) as u32;
    1000i64.saturating_mul(1i64 << exp).min(max_ms).max(0)
}

pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

fn deletion_from_row(row: &sqlx::any::AnyRow) -> StorageDeletion {
    StorageDeletion {
        digest: row.get("digest"),
        size: get_i64(row, "size"),
        attempts: get_i64(row, "attempts"),
        next_attempt_at: get_i64(row, "next_attempt_at"),
        last_error: row.get("last_error"),
        created_at: get_i64(row, "created_at"),
    }
}

/// One `gc_events` row.
#[derive(Clone, Debug)]
pub struct GcEventRecord<'a> {
    pub at: i64,
    pub kind: &'a str,
    pub digest: &'a str,
    pub repository: Option<&'a str>,
    pub size: i64,
    pub reason: &'a str,
    pub outcome: &'a str,
}

/// Appends `events` with one `INSERT` (its rows bound as one JSON parameter: see
/// [`crate::store::json_in`]).
pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    events: &[GcEventRecord<'_>],
) -> Result<(), MetaError> {
    use crate::store::JsonColumn::{BigInt, Text};
    if events.is_empty() {
        return Ok(());
    }
    let rows = crate::store::json_rows(backend, 1, &[BigInt, Text, Text, Text, BigInt, Text, Text]);
    let sql = format!(
        "INSERT INTO gc_events (at, kind, digest, repository, size, reason, outcome) {rows}"
    );
    let values: Vec<_> = events
        .iter()
        .map(|e| (e.at, e.kind, e.digest, e.repository, e.size, truncate(e.reason), e.outcome))
        .collect();
    sqlx::query(&sql).bind(crate::store::json_array(&values)).execute(&mut **tx).await?;
    Ok(())
}

pub(crate) async fn insert_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    e: &GcEventRecord<'_>,
) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO gc_events (at, kind, digest, repository, size, reason, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.at)
    .bind(e.kind)
    .bind(e.digest)
    .bind(e.repository)
    .bind(e.size)
    .bind(truncate(e.reason))
    .bind(e.outcome)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl StorageDeletionClaim<'_> {
    /// Records the outcomes (by digest, for [`items`](Self::items)) and commits: a deleted
    /// object's row goes and a `deleted` event is written; a failure keeps the row with
    /// `attempts + 1`, `next_attempt_at = now + min(2^attempts s, max_backoff_ms)` and the
    /// error, plus a `failed` event. An item without an outcome stays as it was. Set-based:
    /// a handful of statements per batch (one per failure, which are rare).
    pub async fn finish(
        mut self,
        now: i64,
        max_backoff_ms: i64,
        outcomes: &[(String, DeletionOutcome)],
    ) -> Result<(), MetaError> {
        let items: HashMap<&str, &StorageDeletion> =
            self.items.iter().map(|i| (i.digest.as_str(), i)).collect();
        let mut done: Vec<&str> = self.republished.iter().map(|i| i.digest.as_str()).collect();
        let mut events = Vec::new();
        let mut failures = Vec::new();
        for (digest, outcome) in outcomes {
            let Some(item) = items.get(digest.as_str()) else { continue };
            match outcome {
                DeletionOutcome::Deleted => {
                    done.push(digest);
                    events.push(GcEventRecord {
                        at: now,
                        kind: GC_EVENT_STORAGE,
                        digest,
                        repository: None,
                        size: item.size,
                        reason: "blob removed from the metadata",
                        outcome: GC_OUTCOME_DELETED,
                    });
                }
                DeletionOutcome::Failed(error) => {
                    failures.push((*item, error, format!("storage delete failed: {error}")))
                }
            }
        }
        self.w
            .in_list("DELETE FROM gc_storage_deletions WHERE digest IN ({list})", None, &done)
            .await?;
        for (item, error, _) in &failures {
            let attempts = item.attempts + 1;
            let next = now.saturating_add(storage_retry_backoff_ms(attempts, max_backoff_ms));
            sqlx::query(
                "UPDATE gc_storage_deletions SET attempts = $1, next_attempt_at = $2, \
                 last_error = $3 WHERE digest = $4",
            )
            .bind(attempts)
            .bind(next)
            .bind(truncate(error))
            .bind(&item.digest)
            .execute(&mut *self.w.tx)
            .await?;
        }
        events.extend(failures.iter().map(|(item, _, reason)| GcEventRecord {
            at: now,
            kind: GC_EVENT_STORAGE,
            digest: &item.digest,
            repository: None,
            size: item.size,
            reason,
            outcome: GC_OUTCOME_FAILED,
        }));
        let backend = self.w.backend();
        insert_events(&mut self.w.tx, backend, &events).await?;
        self.w.commit().await
    }
}

/// Figures of one review queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewQueueFigures {
    pub queued: i64,
    /// Rows whose `review_after` has passed.
    pub due: i64,
    /// The due row that has waited longest.
    pub oldest_due: Option<QueuedItem>,
}

/// A row of a review queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedItem {
    pub digest: String,
    /// The repository, for manifests.
    pub repository: Option<String>,
    pub review_after: i64,
    pub event: String,
}

/// Figures of `gc_storage_deletions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageDeletionFigures {
    pub pending: i64,
    pub pending_bytes: i64,
    pub due: i64,
    /// Rows with at least one failed attempt.
    pub failing: i64,
    pub oldest_created_at: Option<i64>,
    /// The most recent failure still pending.
    pub last_error: Option<String>,
}

/// What GC did in a time window, from `gc_events`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcActivity {
    pub manifests_removed: i64,
    pub blobs_removed: i64,
    pub blob_bytes_removed: i64,
    pub storage_objects_removed: i64,
    pub storage_bytes_removed: i64,
    pub leftovers_removed: i64,
    pub leftover_bytes_removed: i64,
    pub failures: i64,
}

/// Everything `stowage gc status` and `GET /api/v4/admin/registry/gc` show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStatus {
    pub now: i64,
    pub blobs: ReviewQueueFigures,
    pub manifests: ReviewQueueFigures,
    pub storage: StorageDeletionFigures,
    pub last_hour: GcActivity,
    pub last_day: GcActivity,
}

/// A manifest `stowage gc run --dry-run` would remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DanglingManifest {
    pub repository: String,
    pub digest: String,
    pub size: i64,
}

/// What a full GC pass would remove from the metadata now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcDryRun {
    /// Dangling manifests, also those that only dangle once others are gone (children of a
    /// dangling index, referrers of a dangling subject).
    pub manifests: Vec<DanglingManifest>,
    /// Blobs no remaining manifest would reference.
    pub blobs: Vec<BlobRecord>,
}

/// A full pass's age guard over `manifests m`: only manifests created before `$1`.
const OLD_MANIFEST: &str = "m.created_at < $1";

/// A full pass's age guard over `blobs b`: neither the blob nor any link to it is younger than
/// `$1` (a push in progress uploads layers before its manifest).
const OLD_BLOB: &str = "b.created_at < $1 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb \
     WHERE rb.blob_digest = b.digest AND rb.created_at >= $1)";

impl Store {
    /// Claims up to `limit` storage deletions due at `now` (see [`StorageDeletionClaim`]).
    pub async fn gc_claim_storage_deletions(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<StorageDeletionClaim<'_>, MetaError> {
        let mut w = self.background_write_tx().await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // One statement: the due rows, each with whether its blob is recorded again.
        let sql = format!(
            "SELECT d.digest, d.size, d.attempts, d.next_attempt_at, d.last_error, d.created_at, \
             CAST(CASE WHEN EXISTS (SELECT 1 FROM blobs b WHERE b.digest = d.digest) \
             THEN 1 ELSE 0 END AS BIGINT) AS recorded \
             FROM gc_storage_deletions d WHERE d.next_attempt_at <= $1 \
             ORDER BY d.next_attempt_at, d.digest LIMIT $2{lock}"
        );
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&mut *w.tx).await?;
        let (mut items, mut republished) = (Vec::new(), Vec::new());
        for row in &rows {
            let item = deletion_from_row(row);
            if get_i64(row, "recorded") != 0 {
                republished.push(item);
            } else {
                items.push(item);
            }
        }
        Ok(StorageDeletionClaim { w, items, republished })
    }

    /// Queues the bytes of `digest` for the storage deleter at `at`, in a transaction of its
    /// own: bytes were published by a write whose transaction then failed to commit, so no
    /// `blobs` row may need them. The deleter re-checks the `blobs` table when it claims the
    /// row and leaves the bytes alone if the blob is stored after all (it was before, another
    /// push committed it meanwhile, or the commit went through and only its answer was lost).
    /// A row already queued keeps its time.
    pub async fn gc_queue_orphaned_bytes(
        &self,
        digest: &str,
        size: i64,
        at: i64,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(size)
        .bind(at)
        .bind(crate::now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// Of `digests` (blob objects found in storage), those that no `blobs` row records and no
    /// pending storage deletion holds: bytes a crash left between publishing them and
    /// committing their row. One query per 500 digests.
    pub async fn gc_unrecorded_blobs(&self, digests: &[&str]) -> Result<Vec<String>, MetaError> {
        let mut found = Vec::new();
        for chunk in digests.chunks(500) {
            let list = crate::store::json_in(self.backend(), 1);
            let sql = format!(
                "SELECT digest FROM blobs WHERE digest {list} \
                 UNION SELECT digest FROM gc_storage_deletions WHERE digest {list}"
            );
            let query = sqlx::query(&sql).bind(crate::store::json_array(chunk));
            let known: std::collections::HashSet<String> =
                query.fetch_all(&self.pool).await?.iter().map(|r| r.get("digest")).collect();
            found.extend(chunk.iter().filter(|d| !known.contains(**d)).map(|d| d.to_string()));
        }
        Ok(found)
    }

    /// Queues bytes the leftovers sweep found without a `blobs` row for the storage deleter at
    /// `at`, unless a row records them by now; `false` if it did not queue them (recorded, or
    /// queued already). The deleter checks again when it claims the row, and an upload of the
    /// same digest cancels the row when it records the blob, as for every storage deletion.
    pub async fn gc_queue_unrecorded_bytes(
        &self,
        digest: &str,
        size: i64,
        at: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.background_write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = $1) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(size)
        .bind(at)
        .bind(crate::now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pending storage deletions, soonest due first, at most `limit`.
    pub async fn gc_storage_deletions(
        &self,
        limit: i64,
    ) -> Result<Vec<StorageDeletion>, MetaError> {
        let rows = sqlx::query(
            "SELECT digest, size, attempts, next_attempt_at, last_error, created_at \
             FROM gc_storage_deletions ORDER BY next_attempt_at, digest LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deletion_from_row).collect())
    }

    /// Makes every pending storage deletion due at `now` (an operator's `gc run` retries
    /// those that are backing off). Returns how many were postponed before.
    pub async fn gc_storage_deletions_due_now(&self, now: i64) -> Result<u64, MetaError> {
        let mut w = self.background_write_tx().await?;
        let done = sqlx::query(
            "UPDATE gc_storage_deletions SET next_attempt_at = $1 WHERE next_attempt_at > $1",
        )
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }

    /// Writes one `gc_events` row (the leftovers sweep; deletions in a claim or a review
    /// write theirs in their own transaction).
    pub async fn gc_record_event(&self, event: &GcEventRecord<'_>) -> Result<(), MetaError> {
        let mut w = self.background_write_tx().await?;
        insert_event(&mut w.tx, event).await?;
        w.commit().await
    }

    /// Whether an upload session with this id exists (the leftovers sweep keeps its objects).
    pub async fn upload_session_exists(&self, id: &str) -> Result<bool, MetaError> {
        let row = sqlx::query("SELECT 1 AS one FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The mark of `stowage gc run`: queues every manifest and blob that is unreferenced now
    /// and was created before `created_before` for review at `now` (updating rows already
    /// queued). Returns (manifests, blobs) marked. What only becomes unreferenced once those
    /// are removed is queued by their removal, and marked by the next call.
    pub async fn gc_mark_unreferenced(
        &self,
        now: i64,
        created_before: i64,
    ) -> Result<(u64, u64), MetaError> {
        let mut w = self.background_write_tx().await?;
        // On PostgreSQL a manifest another instance's review deletes meanwhile would fail the
        // queue row's foreign key: lock what is marked against deletion, and skip what a
        // review holds (it is being reviewed already).
        let lock = match self.backend() {
            Backend::Postgres => " FOR KEY SHARE OF m SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let manifests = sqlx::query(&format!(
            "INSERT INTO gc_manifest_review_queue \
             (manifest_id, repository_id, review_after, event, created_at) \
             SELECT m.id, m.repository_id, $2, '{GC_RUN_EVENT}', $2 FROM manifests m \
             WHERE {OLD_MANIFEST} AND {}{lock} \
             ON CONFLICT (manifest_id) DO UPDATE SET review_after = excluded.review_after, \
             event = excluded.event",
            dangling_manifest_condition(None)
        ))
        .bind(created_before)
        .bind(now)
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        let blobs = sqlx::query(&format!(
            "INSERT INTO gc_blob_review_queue (digest, review_after, event, created_at) \
             SELECT b.digest, $2, '{GC_RUN_EVENT}', $2 FROM blobs b WHERE {OLD_BLOB} AND {} \
             ON CONFLICT (digest) DO UPDATE SET review_after = excluded.review_after, \
             event = excluded.event",
            dangling_blob_condition(None)
        ))
        .bind(created_before)
        .bind(now)
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        w.commit().await?;
        Ok((manifests, blobs))
    }

    /// Due review rows at `now`: (manifests, blobs).
    pub async fn gc_due_reviews(&self, now: i64) -> Result<(i64, i64), MetaError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM gc_manifest_review_queue WHERE review_after <= $1) AS m, \
             (SELECT COUNT(*) FROM gc_blob_review_queue WHERE review_after <= $1) AS b",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((get_i64(&row, "m"), get_i64(&row, "b")))
    }

    /// What a full pass would remove now, cascades included, considering only what was
    /// created before `created_before`; changes nothing. Runs in one transaction (a
    /// consistent snapshot on PostgreSQL) with a temporary table that is rolled back.
    pub async fn gc_dry_run(&self, created_before: i64) -> Result<GcDryRun, MetaError> {
        let mut tx = self.pool.begin().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS gc_dry_run_gone (id BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM gc_dry_run_gone").execute(&mut *tx).await?;
        let cascade = format!(
            "INSERT INTO gc_dry_run_gone (id) SELECT m.id FROM manifests m \
             WHERE {OLD_MANIFEST} AND {}",
            dangling_manifest_condition(Some("gc_dry_run_gone"))
        );
        // Each round adds what the previous ones freed: an index's children, a subject's
        // referrers. Bounded by the number of manifests.
        while sqlx::query(&cascade).bind(created_before).execute(&mut *tx).await?.rows_affected()
            > 0
        {}
        let manifests = sqlx::query(
            "SELECT r.name, m.digest, m.total_size FROM gc_dry_run_gone g \
             JOIN manifests m ON m.id = g.id JOIN repositories r ON r.id = m.repository_id \
             ORDER BY r.name, m.digest",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| DanglingManifest {
            repository: row.get("name"),
            digest: row.get("digest"),
            size: get_i64(row, "total_size"),
        })
        .collect();
        let blobs = sqlx::query(&format!(
            "SELECT b.digest, b.size FROM blobs b WHERE {OLD_BLOB} AND {} ORDER BY b.digest",
            dangling_blob_condition(Some("gc_dry_run_gone"))
        ))
        .bind(created_before)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| BlobRecord { digest: row.get("digest"), size: get_i64(row, "size") })
        .collect();
        tx.rollback().await?;
        Ok(GcDryRun { manifests, blobs })
    }

    /// The figures of `stowage gc status` at `now`.
    pub async fn gc_status(&self, now: i64) -> Result<GcStatus, MetaError> {
        let counts = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM gc_blob_review_queue) AS blobs, \
             (SELECT COUNT(*) FROM gc_blob_review_queue WHERE review_after <= $1) AS blobs_due, \
             (SELECT COUNT(*) FROM gc_manifest_review_queue) AS manifests, \
             (SELECT COUNT(*) FROM gc_manifest_review_queue WHERE review_after <= $1) \
                 AS manifests_due, \
             (SELECT COUNT(*) FROM gc_storage_deletions) AS pending, \
             (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM gc_storage_deletions) \
                 AS pending_bytes, \
             (SELECT COUNT(*) FROM gc_storage_deletions WHERE next_attempt_at <= $1) AS due, \
             (SELECT COUNT(*) FROM gc_storage_deletions WHERE attempts > 0) AS failing",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let oldest_blob = sqlx::query(
            "SELECT digest, review_after, event FROM gc_blob_review_queue \
             WHERE review_after <= $1 ORDER BY review_after, digest LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| QueuedItem {
            digest: row.get("digest"),
            repository: None,
            review_after: get_i64(&row, "review_after"),
            event: row.get("event"),
        });
        let oldest_manifest = sqlx::query(
            "SELECT m.digest, r.name, q.review_after, q.event FROM gc_manifest_review_queue q \
             JOIN manifests m ON m.id = q.manifest_id \
             JOIN repositories r ON r.id = m.repository_id \
             WHERE q.review_after <= $1 ORDER BY q.review_after, q.manifest_id LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| QueuedItem {
            digest: row.get("digest"),
            repository: Some(row.get("name")),
            review_after: get_i64(&row, "review_after"),
            event: row.get("event"),
        });
        let oldest_deletion = sqlx::query("SELECT MIN(created_at) AS at FROM gc_storage_deletions")
            .fetch_one(&self.pool)
            .await?
            .get::<Option<i64>, _>("at");
        let last_error = sqlx::query(
            "SELECT last_error FROM gc_storage_deletions WHERE last_error IS NOT NULL \
             ORDER BY next_attempt_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|row| row.get("last_error"));
        Ok(GcStatus {
            now,
            blobs: ReviewQueueFigures {
                queued: get_i64(&counts, "blobs"),
                due: get_i64(&counts, "blobs_due"),
                oldest_due: oldest_blob,
            },
            manifests: ReviewQueueFigures {
                queued: get_i64(&counts, "manifests"),
                due: get_i64(&counts, "manifests_due"),
                oldest_due: oldest_manifest,
            },
            storage: StorageDeletionFigures {
                pending: get_i64(&counts, "pending"),
                pending_bytes: get_i64(&counts, "pending_bytes"),
                due: get_i64(&counts, "due"),
                failing: get_i64(&counts, "failing"),
                oldest_created_at: oldest_deletion,
                last_error,
            },
            last_hour: self.gc_activity(now - 3_600_000).await?,
            last_day: self.gc_activity(now - 86_400_000).await?,
        })
    }

    /// What `gc_events` records since `since`.
    async fn gc_activity(&self, since: i64) -> Result<GcActivity, MetaError> {
        let rows = sqlx::query(
            "SELECT kind, outcome, COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes \
             FROM gc_events WHERE at >= $1 GROUP BY kind, outcome",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut activity = GcActivity::default();
        for row in &rows {
            let (kind, outcome): (String, String) = (row.get("kind"), row.get("outcome"));
            let (n, bytes) = (get_i64(row, "n"), get_i64(row, "bytes"));
            if outcome == GC_OUTCOME_FAILED {
                activity.failures += n;
                continue;
            }
            if outcome != GC_OUTCOME_DELETED {
                continue;
            }
            match kind.as_str() {
                GC_EVENT_MANIFEST => activity.manifests_removed += n,
                GC_EVENT_BLOB => {
                    activity.blobs_removed += n;
                    activity.blob_bytes_removed += bytes;
                }
                GC_EVENT_STORAGE => {
                    activity.storage_objects_removed += n;
                    activity.storage_bytes_removed += bytes;
                }
                GC_EVENT_LEFTOVER => {
                    activity.leftovers_removed += n;
                    activity.leftover_bytes_removed += bytes;
                }
                _ => {}
            }
        }
        Ok(activity)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_writes::Writes;
    use oci::{Digest, IndexChild, RepositoryName, Tag};

    use super::*;
    use crate::store::testing::TestDb;
    use crate::{Backend, NewManifest};

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        assert_eq!(storage_retry_backoff_ms(1, 86_400_000), 2_000);
        assert_eq!(storage_retry_backoff_ms(2, 86_400_000), 4_000);
        assert_eq!(storage_retry_backoff_ms(10, 86_400_000), 1_024_000);
        assert_eq!(storage_retry_backoff_ms(17, 86_400_000), 86_400_000);
        assert_eq!(storage_retry_backoff_ms(1_000, 60_000), 60_000);
        assert_eq!(storage_retry_backoff_ms(i64::MAX, i64::MAX), 1000 << 40);
    }

    fn digest(label: &str) -> Digest {
        Digest::sha256_of(label.as_bytes())
    }

    fn repo(name: &str) -> RepositoryName {
        name.parse().unwrap()
    }

    fn tag(name: &str) -> Tag {
        name.parse().unwrap()
    }

    /// An image manifest with its own config and `layers`, optionally a referrer of `subject`.
    async fn image(
        db: &TestDb,
        repository: &str,
        label: &str,
        layers: &[&str],
        subject: Option<&Digest>,
        tags: &[&str],
    ) -> Digest {
        let r = repo(repository);
        let config = digest(&format!("config of {label}"));
        let mut blobs = vec![config.clone()];
        blobs.extend(layers.iter().map(|l| digest(l)));
        for (i, b) in blobs.iter().enumerate() {
            db.store.link_blob(&r, b, 100 + i as i64).await.unwrap();
        }
        let payload = format!("manifest {label}").into_bytes();
        let manifest = NewManifest {
            digest: Digest::sha256_of(&payload),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: subject.cloned(),
            config_digest: Some(config),
            total_size: 1000,
            annotations: None,
            payload,
            blobs,
            children: vec![],
        };
        let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
        db.store.put_manifest(&r, &manifest, &tags, &[]).await.unwrap();
        manifest.digest
    }

    async fn index(db: &TestDb, repository: &str, children: &[&Digest], tags: &[&str]) -> Digest {
        let payload = format!("index of {children:?}").into_bytes();
        let manifest = NewManifest {
            digest: Digest::sha256_of(&payload),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            artifact_type: None,
            subject: None,
            config_digest: None,
            total_size: 500,
            annotations: None,
            payload,
            blobs: vec![],
            children: children
                .iter()
                .map(|d| IndexChild { digest: (*d).clone(), must_exist: true })
                .collect(),
        };
        let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
        db.store.put_manifest(&repo(repository), &manifest, &tags, &[]).await.unwrap();
        manifest.digest
    }

    fn digests(run: &GcDryRun) -> (Vec<String>, Vec<String>) {
        let mut manifests: Vec<String> = run.manifests.iter().map(|m| m.digest.clone()).collect();
        manifests.sort();
        let mut blobs: Vec<String> = run.blobs.iter().map(|b| b.digest.clone()).collect();
        blobs.sort();
        (manifests, blobs)
    }

    fn sorted(mut items: Vec<String>) -> Vec<String> {
        items.sort();
        items
    }

    /// The dry run follows cascades: an untagged index takes its children, their referrer and
    /// every blob only they use; a tagged image and everything it shares stay. Nothing changes.
    async fn dry_run_finds_cascades_and_changes_nothing(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let kept = image(&db, "a/app", "kept", &["shared", "kept-layer"], None, &["v1"]).await;
        let amd = image(&db, "a/app", "amd64", &["shared", "amd-layer"], None, &[]).await;
        let arm = image(&db, "a/app", "arm64", &["arm-layer"], None, &[]).await;
        let list = index(&db, "a/app", &[&amd, &arm], &["multi"]).await;
        let signature = image(&db, "a/app", "sig", &["sig-layer"], Some(&arm), &[]).await;
        let kept_signature =
            image(&db, "a/app", "kept-sig", &["kept-sig-layer"], Some(&kept), &[]).await;
        let future = meta_now() + 60_000;

        let nothing = db.store.gc_dry_run(future).await.unwrap();
        assert_eq!(nothing, GcDryRun::default(), "everything is referenced");
        assert!(db.store.delete_tag(&repo("a/app"), &tag("multi")).await.unwrap());
        let run = db.store.gc_dry_run(future).await.unwrap();
        let (manifests, blobs) = digests(&run);
        assert_eq!(
            manifests,
            sorted(vec![list.to_string(), amd.to_string(), arm.to_string(), signature.to_string()])
        );
        let expected_blobs: Vec<String> = ["config of amd64", "amd-layer", "config of arm64"]
            .iter()
            .chain(&["arm-layer", "config of sig", "sig-layer"])
            .map(|l| digest(l).to_string())
            .collect();
        assert_eq!(blobs, sorted(expected_blobs), "the shared layer stays");
        assert!(!manifests.contains(&kept_signature.to_string()), "its subject is tagged");
        // Only what is old enough counts.
        assert_eq!(db.store.gc_dry_run(0).await.unwrap(), GcDryRun::default());
        // Nothing changed; a second run says the same.
        assert_eq!(db.store.gc_dry_run(future).await.unwrap(), run);
        assert!(db.store.manifest_by_digest(&repo("a/app"), &list).await.unwrap().is_some());
        db.drop_database().await;
    }

    fn meta_now() -> i64 {
        crate::now_millis()
    }

    /// The mark queues exactly what is unreferenced now (not the cascade), due now.
    async fn mark_queues_what_is_unreferenced_now(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let kept = image(&db, "a/app", "kept", &["shared"], None, &["v1"]).await;
        let child = image(&db, "a/app", "child", &["shared", "child-layer"], None, &[]).await;
        let _list = index(&db, "a/app", &[&child], &[]).await;
        db.store.link_blob(&repo("a/app"), &digest("loose"), 7).await.unwrap();
        let now = meta_now() + 60_000;
        let (manifests, blobs) = db.store.gc_mark_unreferenced(now, now).await.unwrap();
        assert_eq!((manifests, blobs), (1, 1), "the untagged index and the loose blob");
        assert_eq!(db.store.gc_due_reviews(now).await.unwrap(), (1, 1));
        let status = db.store.gc_status(now).await.unwrap();
        // Every manifest push queued its manifest a day out; the mark made the index due now.
        assert_eq!(status.manifests.queued, 3);
        let oldest = status.blobs.oldest_due.unwrap();
        assert_eq!(oldest.digest, digest("loose").to_string());
        assert_eq!(oldest.event, GC_RUN_EVENT);
        // Marking again updates the rows in place.
        assert_eq!(db.store.gc_mark_unreferenced(now + 1, now).await.unwrap(), (1, 1));
        assert_eq!(db.store.gc_due_reviews(now + 1).await.unwrap(), (1, 1));
        assert_eq!(db.store.gc_due_reviews(now).await.unwrap(), (0, 0));
        let _ = kept;
        db.drop_database().await;
    }

    /// A failed storage delete keeps its row with a backoff and a failure event; a success
    /// removes the row with a deletion event; a digest published anew is left alone.
    async fn claims_record_outcomes(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        for (d, size) in [("gone", 10), ("flaky", 20), ("back", 30)] {
            db.exec(&format!(
                "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
                 VALUES ('{}', {size}, 1000, 1000)",
                digest(d)
            ))
            .await;
        }
        // Its `blobs` row came back (as if published again under the claim).
        db.exec(&format!(
            "INSERT INTO blobs (digest, size, created_at) VALUES ('{}', 30, 0)",
            digest("back")
        ))
        .await;
        let claim = db.store.gc_claim_storage_deletions(999, 10).await.unwrap();
        assert!(claim.items.is_empty() && claim.republished.is_empty(), "not due yet");
        drop(claim);
        let claim = db.store.gc_claim_storage_deletions(5_000, 10).await.unwrap();
        assert_eq!(claim.items.len(), 2);
        assert_eq!(claim.republished.len(), 1);
        let outcomes = vec![
            (digest("gone").to_string(), DeletionOutcome::Deleted),
            (digest("flaky").to_string(), DeletionOutcome::Failed("storage down".into())),
        ];
        claim.finish(5_000, 60_000, &outcomes).await.unwrap();
        let left = db.store.gc_storage_deletions(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].digest, digest("flaky").to_string());
        assert_eq!((left[0].attempts, left[0].next_attempt_at), (1, 7_000));
        assert_eq!(left[0].last_error.as_deref(), Some("storage down"));
        let status = db.store.gc_status(6_000).await.unwrap();
        assert_eq!(status.storage.pending, 1);
        assert_eq!(status.storage.pending_bytes, 20);
        assert_eq!(status.storage.due, 0);
        assert_eq!(status.storage.failing, 1);
        assert_eq!(status.last_hour.storage_objects_removed, 1);
        assert_eq!(status.last_hour.storage_bytes_removed, 10);
        assert_eq!(status.last_hour.failures, 1);
        // A dropped claim changes nothing.
        let claim = db.store.gc_claim_storage_deletions(7_000, 10).await.unwrap();
        assert_eq!(claim.items.len(), 1);
        drop(claim);
        assert_eq!(db.store.gc_storage_deletions(10).await.unwrap(), left);
        assert_eq!(db.store.gc_storage_deletions_due_now(6_500).await.unwrap(), 1);
        db.drop_database().await;
    }

    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(crate::Backend::Sqlite).await })*
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(crate::Backend::Postgres).await })*
            }
        };
    }

    on_both_backends!(
        dry_run_finds_cascades_and_changes_nothing,
        mark_queues_what_is_unreferenced_now,
        claims_record_outcomes,
    );
}
