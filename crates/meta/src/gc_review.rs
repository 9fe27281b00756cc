//! The SQL of online garbage collection's reviews (GitLab's design; the tables are in
//! migration 0007): claiming due review rows, locking the item, re-checking whether it is
//! dangling, and removing a dangling blob. A dangling manifest is removed with
//! [`WriteTx::delete_manifest`], the same function a user's manifest delete runs.
//!
//! On PostgreSQL review rows are claimed `FOR UPDATE SKIP LOCKED`, so workers on several
//! instances never take the same item, and the item row is locked `FOR UPDATE SKIP LOCKED`: a
//! writer holding it `FOR SHARE` is about to rely on the item, so the review is postponed
//! rather than waited for. GC thereby never waits for a writer, and no lock cycle with one can
//! form. On SQLite every write transaction runs alone.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use crate::gc::{insert_event, insert_events, GcEventRecord, GC_EVENT_BLOB, GC_OUTCOME_DELETED};
use crate::registry::BlobRecord;
use crate::store::{
    get_i64, json_array, json_in, json_rows, Backend, JsonColumn, MetaError, WriteTx,
};
use crate::write::{manifest_row, ManifestRow};
use crate::Store;

/// A due row of `gc_blob_review_queue`, claimed by a review transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobReview {
    pub digest: String,
    pub event: String,
}

/// A due row of `gc_manifest_review_queue`, claimed by a review transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestReview {
    pub manifest_id: i64,
    pub repository_id: i64,
    pub event: String,
}

/// What [`WriteTx::review_blob_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobBatchReview {
    /// The blobs removed, each with the event that queued its review.
    pub removed: Vec<(BlobRecord, String)>,
    /// Still referenced, or gone already: their review rows are done.
    pub kept: usize,
    /// Held by a writer (PostgreSQL): postponed.
    pub busy: usize,
}

/// An item row as a review found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewLock<T> {
    /// Locked `FOR UPDATE` until the review commits.
    Locked(T),
    /// A writer holds it (PostgreSQL): postpone the review.
    Busy,
    /// It no longer exists: the review row is moot.
    Gone,
}

/// One queued review row, for inspection (`stowage gc status`, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedReview {
    /// The blob digest, or the manifest's digest.
    pub digest: String,
    /// The manifest's repository name; `None` for blobs.
    pub repository: Option<String>,
    pub review_after: i64,
    pub event: String,
}

/// THE dangling-manifest rule, as SQL over `manifests m`: no tag points at it, no index of
/// its repository lists it (by id or by digest), and it has no subject that is present in its
/// repository. The review checks it row by row; the full pass's mark and dry run select with
/// it. `gone` names a table of manifest ids to count as deleted already (the dry run's
/// cascade).
pub(crate) fn dangling_manifest_condition(gone: Option<&str>) -> String {
    let alive = |column: &str| match gone {
        Some(table) => format!(" AND NOT EXISTS (SELECT 1 FROM {table} g WHERE g.id = {column})"),
        None => String::new(),
    };
    let not_gone_self = match gone {
        Some(table) => format!("NOT EXISTS (SELECT 1 FROM {table} g WHERE g.id = m.id) AND "),
        None => String::new(),
    };
    format!(
        "{not_gone_self}NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id) \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r \
             WHERE r.child_id = m.id AND r.parent_id <> m.id{}) \
         AND NOT EXISTS (SELECT 1 FROM manifest_digest_references d \
             WHERE d.repository_id = m.repository_id AND d.child_digest = m.digest \
             AND d.parent_id <> m.id{}) \
         AND NOT EXISTS (SELECT 1 FROM manifests s \
             WHERE m.subject_digest IS NOT NULL AND s.repository_id = m.repository_id \
             AND s.digest = m.subject_digest AND s.id <> m.id{})",
        alive("r.parent_id"),
        alive("d.parent_id"),
        alive("s.id"),
    )
}

/// THE dangling-blob rule, as SQL over `blobs b`: no manifest anywhere references it (config
/// or layer), counting the manifests in `gone` as deleted. (A push in progress is protected
/// by the review delay, and in a full pass by its minimum age.)
pub(crate) fn dangling_blob_condition(gone: Option<&str>) -> String {
    let alive = match gone {
        Some(table) => {
            format!(" AND NOT EXISTS (SELECT 1 FROM {table} g WHERE g.id = mb.manifest_id)")
        }
        None => String::new(),
    };
    format!("NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest{alive})")
}

impl WriteTx<'_> {
    fn skip_locked(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Claims at most `limit` blob review rows due at `now`, in digest order (the order
    /// writers lock blobs in).
    pub async fn claim_blob_reviews(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<BlobReview>, MetaError> {
        let sql = format!(
            "SELECT digest, event FROM gc_blob_review_queue WHERE review_after <= $1 \
             ORDER BY review_after LIMIT $2{}",
            self.skip_locked()
        );
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&mut *self.tx).await?;
        let mut out: Vec<BlobReview> = rows
            .iter()
            .map(|r| BlobReview { digest: r.get("digest"), event: r.get("event") })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Claims at most `limit` manifest review rows due at `now`, in id order.
    pub async fn claim_manifest_reviews(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ManifestReview>, MetaError> {
        let sql = format!(
            "SELECT manifest_id, repository_id, event FROM gc_manifest_review_queue \
             WHERE review_after <= $1 ORDER BY review_after LIMIT $2{}",
            self.skip_locked()
        );
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&mut *self.tx).await?;
        let mut out: Vec<ManifestReview> = rows
            .iter()
            .map(|r| ManifestReview {
                manifest_id: get_i64(r, "manifest_id"),
                repository_id: get_i64(r, "repository_id"),
                event: r.get("event"),
            })
            .collect();
        out.sort_by_key(|r| r.manifest_id);
        Ok(out)
    }

    /// Reviews claimed blob rows as one set, in this transaction (a handful of statements
    /// per batch, not per blob): locks the `blobs` rows no writer holds (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`; a writer holding one `FOR SHARE` is about to rely on it, so
    /// its review is postponed to `busy_until`), and of those removes every one that is
    /// dangling ([`dangling_blob_condition`]) — its links and row — queueing its bytes in
    /// `gc_storage_deletions` with a `gc_events` row whose reason is the event that queued
    /// it. Every other review row is done: the blob is kept, or was gone already.
    ///
    /// The re-check is a statement of its own after the lock: on PostgreSQL each statement
    /// sees what committed before it began, so a manifest committed while the lock was being
    /// taken is seen (checking in the locking statement itself would miss it).
    pub async fn review_blob_batch(
        &mut self,
        items: &[BlobReview],
        now: i64,
        busy_until: i64,
    ) -> Result<BlobBatchReview, MetaError> {
        let mut outcome = BlobBatchReview::default();
        let claimed: Vec<&str> = items.iter().map(|i| i.digest.as_str()).collect();
        let lock = self.skip_locked();
        let locked = self
            .blob_digests("SELECT digest FROM blobs WHERE digest IN ({list})", lock, &claimed)
            .await?;
        let mut busy = Vec::new();
        if locked.len() < claimed.len() && self.backend() == Backend::Postgres {
            let held: HashSet<&str> = locked.iter().map(String::as_str).collect();
            let skipped: Vec<&str> =
                claimed.iter().copied().filter(|d| !held.contains(d)).collect();
            busy = self
                .blob_digests("SELECT digest FROM blobs WHERE digest IN ({list})", "", &skipped)
                .await?;
        }
        let locked: Vec<&str> = locked.iter().map(String::as_str).collect();
        let mut dangling = Vec::new();
        if !locked.is_empty() {
            let sql = format!(
                "SELECT b.digest, b.size FROM blobs b WHERE b.digest {} AND {}",
                json_in(self.backend(), 1),
                dangling_blob_condition(None)
            );
            for row in sqlx::query(&sql).bind(json_array(&locked)).fetch_all(&mut *self.tx).await? {
                dangling
                    .push(BlobRecord { digest: row.get("digest"), size: get_i64(&row, "size") });
            }
        }
        dangling.sort_by(|a, b| a.digest.cmp(&b.digest));
        let gone: Vec<&str> = dangling.iter().map(|b| b.digest.as_str()).collect();
        for sql in [
            "DELETE FROM repository_blobs WHERE blob_digest IN ({list})",
            "DELETE FROM blobs WHERE digest IN ({list})",
        ] {
            self.in_list(sql, None, &gone).await?;
        }
        if !dangling.is_empty() {
            let rows = json_rows(
                self.backend(),
                1,
                &[JsonColumn::Text, JsonColumn::BigInt, JsonColumn::BigInt, JsonColumn::BigInt],
            );
            let sql = format!(
                "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
                 {rows} ON CONFLICT (digest) DO UPDATE \
                 SET size = excluded.size, next_attempt_at = excluded.next_attempt_at"
            );
            let values: Vec<(&str, i64, i64, i64)> =
                dangling.iter().map(|b| (b.digest.as_str(), b.size, now, now)).collect();
            sqlx::query(&sql).bind(json_array(&values)).execute(&mut *self.tx).await?;
        }
        let events: HashMap<&str, &str> =
            items.iter().map(|i| (i.digest.as_str(), i.event.as_str())).collect();
        let removed: Vec<(BlobRecord, String)> = dangling
            .into_iter()
            .map(|blob| {
                let reason = events.get(blob.digest.as_str()).copied().unwrap_or_default();
                (blob, reason.to_string())
            })
            .collect();
        let records: Vec<GcEventRecord<'_>> = removed
            .iter()
            .map(|(blob, reason)| GcEventRecord {
                at: now,
                kind: GC_EVENT_BLOB,
                digest: &blob.digest,
                repository: None,
                size: blob.size,
                reason,
                outcome: GC_OUTCOME_DELETED,
            })
            .collect();
        let backend = self.backend();
        insert_events(&mut self.tx, backend, &records).await?;
        let busy: Vec<&str> = busy.iter().map(String::as_str).collect();
        self.in_list(
            "UPDATE gc_blob_review_queue SET review_after = $1, review_count = review_count + 1 \
             WHERE digest IN ({list})",
            Some(busy_until),
            &busy,
        )
        .await?;
        let postponed: HashSet<&str> = busy.iter().copied().collect();
        let done: Vec<&str> = claimed.iter().copied().filter(|d| !postponed.contains(d)).collect();
        self.in_list("DELETE FROM gc_blob_review_queue WHERE digest IN ({list})", None, &done)
            .await?;
        outcome.busy = busy.len();
        outcome.kept = claimed.len() - removed.len() - busy.len();
        outcome.removed = removed;
        Ok(outcome)
    }

    /// The digests `sql` (with `{list}` for the `IN` list, `suffix` appended) selects for
    /// `digests`, in one statement.
    async fn blob_digests(
        &mut self,
        sql: &str,
        suffix: &str,
        digests: &[&str],
    ) -> Result<Vec<String>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("{}{suffix}", sql.replace("IN ({list})", &json_in(self.backend(), 1)));
        let rows = sqlx::query(&sql).bind(json_array(digests)).fetch_all(&mut *self.tx).await?;
        Ok(rows.iter().map(|r| r.get("digest")).collect())
    }

    /// Runs `sql` (with `{list}` for the `IN` list, and `$1` = `first` when given) over
    /// `digests`, in one statement; nothing for none.
    pub(crate) async fn in_list(
        &mut self,
        sql: &str,
        first: Option<i64>,
        digests: &[&str],
    ) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let param = usize::from(first.is_some()) + 1;
        let sql = sql.replace("IN ({list})", &json_in(self.backend(), param));
        let mut query = sqlx::query(&sql);
        if let Some(first) = first {
            query = query.bind(first);
        }
        query.bind(json_array(digests)).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Locks manifest `id` for a review.
    pub async fn lock_manifest_for_review(
        &mut self,
        id: i64,
    ) -> Result<ReviewLock<ManifestRow>, MetaError> {
        let sql = format!(
            "SELECT id, repository_id, digest, subject_digest, \
             CAST(LENGTH(payload) AS BIGINT) AS size FROM manifests WHERE id = $1{}",
            self.skip_locked()
        );
        if let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *self.tx).await? {
            return Ok(ReviewLock::Locked(manifest_row(&row)));
        }
        let exists = sqlx::query("SELECT 1 AS one FROM manifests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(if exists.is_some() { ReviewLock::Busy } else { ReviewLock::Gone })
    }

    /// Whether manifest `m` is dangling ([`dangling_manifest_condition`]).
    pub async fn manifest_is_dangling(&mut self, m: &ManifestRow) -> Result<bool, MetaError> {
        let sql = format!(
            "SELECT 1 AS one FROM manifests m WHERE m.id = $1 AND {}",
            dangling_manifest_condition(None)
        );
        let row = sqlx::query(&sql).bind(m.id).fetch_optional(&mut *self.tx).await?;
        Ok(row.is_some())
    }

    /// Appends a `gc_events` row in this transaction.
    pub async fn record_gc_event(&mut self, event: &GcEventRecord<'_>) -> Result<(), MetaError> {
        insert_event(&mut self.tx, event).await
    }

    /// The name of repository `id`.
    pub async fn repository_name(&mut self, id: i64) -> Result<Option<String>, MetaError> {
        let row = sqlx::query("SELECT name FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.get("name")))
    }

    /// The manifest review of `id` is done: the item is kept (or gone).
    pub async fn finish_manifest_review(&mut self, id: i64) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM gc_manifest_review_queue WHERE manifest_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Looks at manifest `id` again at `until` (a writer held it).
    pub async fn postpone_manifest_review(&mut self, id: i64, until: i64) -> Result<(), MetaError> {
        sqlx::query(
            "UPDATE gc_manifest_review_queue SET review_after = $2, \
             review_count = review_count + 1 WHERE manifest_id = $1",
        )
        .bind(id)
        .bind(until)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Every queued blob review, by digest.
    pub async fn queued_blob_reviews(&self) -> Result<Vec<QueuedReview>, MetaError> {
        let rows = sqlx::query(
            "SELECT digest, review_after, event FROM gc_blob_review_queue ORDER BY digest",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| QueuedReview {
                digest: r.get("digest"),
                repository: None,
                review_after: get_i64(r, "review_after"),
                event: r.get("event"),
            })
            .collect())
    }

    /// Every queued manifest review, by repository and digest.
    pub async fn queued_manifest_reviews(&self) -> Result<Vec<QueuedReview>, MetaError> {
        let rows = sqlx::query(
            "SELECT m.digest, r.name, q.review_after, q.event FROM gc_manifest_review_queue q \
             JOIN manifests m ON m.id = q.manifest_id JOIN repositories r ON r.id = m.repository_id \
             ORDER BY r.name, m.digest",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| QueuedReview {
                digest: r.get("digest"),
                repository: Some(r.get("name")),
                review_after: get_i64(r, "review_after"),
                event: r.get("event"),
            })
            .collect())
    }

    /// Digests waiting in `gc_storage_deletions`, in order.
    pub async fn pending_storage_deletions(&self) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query("SELECT digest FROM gc_storage_deletions ORDER BY digest")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get("digest")).collect())
    }
}
