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

use sqlx::Row;

use crate::registry::BlobRecord;
use crate::store::{get_i64, Backend, MetaError, WriteTx};
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

    /// Locks the `blobs` row of `digest` for a review.
    pub async fn lock_blob_for_review(
        &mut self,
        digest: &str,
    ) -> Result<ReviewLock<BlobRecord>, MetaError> {
        let sql = format!("SELECT digest, size FROM blobs WHERE digest = $1{}", self.skip_locked());
        if let Some(row) = sqlx::query(&sql).bind(digest).fetch_optional(&mut *self.tx).await? {
            return Ok(ReviewLock::Locked(BlobRecord {
                digest: row.get("digest"),
                size: get_i64(&row, "size"),
            }));
        }
        let exists = sqlx::query("SELECT 1 AS one FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(if exists.is_some() { ReviewLock::Busy } else { ReviewLock::Gone })
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

    /// Whether any manifest anywhere references blob `digest` (config or layer).
    pub async fn blob_is_referenced(&mut self, digest: &str) -> Result<bool, MetaError> {
        let row = sqlx::query("SELECT 1 AS one FROM manifest_blobs WHERE blob_digest = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Whether manifest `m` is dangling: no tag points at it, no index of its repository lists
    /// it (by id or by digest), and it has no subject that is present in its repository.
    pub async fn manifest_is_dangling(&mut self, m: &ManifestRow) -> Result<bool, MetaError> {
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM tags WHERE manifest_id = $1) \
               OR EXISTS (SELECT 1 FROM manifest_references WHERE child_id = $1 AND parent_id <> $1) \
               OR EXISTS (SELECT 1 FROM manifest_digest_references \
                          WHERE repository_id = $2 AND child_digest = $3 AND parent_id <> $1) \
               OR EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = $2 \
                          AND s.digest = $4 AND s.id <> $1) \
             THEN 1 ELSE 0 END AS kept",
        )
        .bind(m.id)
        .bind(m.repository_id)
        .bind(&m.digest)
        .bind(m.subject_digest.as_deref().unwrap_or(""))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(get_i64(&row, "kept") == 0)
    }

    /// Removes a dangling blob's metadata — its repository links and its `blobs` row — and
    /// queues its bytes for deletion from storage, recording a `gc_events` row.
    pub async fn remove_dangling_blob(
        &mut self,
        blob: &BlobRecord,
        reason: &str,
        now: i64,
    ) -> Result<(), MetaError> {
        for sql in [
            "DELETE FROM repository_blobs WHERE blob_digest = $1",
            "DELETE FROM gc_blob_review_queue WHERE digest = $1",
            "DELETE FROM blobs WHERE digest = $1",
        ] {
            sqlx::query(sql).bind(&blob.digest).execute(&mut *self.tx).await?;
        }
        sqlx::query(
            "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (digest) DO UPDATE \
             SET size = excluded.size, next_attempt_at = excluded.next_attempt_at",
        )
        .bind(&blob.digest)
        .bind(blob.size)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        self.record_gc_event("blob", &blob.digest, None, blob.size, reason, "deleted", now).await
    }

    /// Appends a `gc_events` row.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_gc_event(
        &mut self,
        kind: &str,
        digest: &str,
        repository: Option<&str>,
        size: i64,
        reason: &str,
        outcome: &str,
        now: i64,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO gc_events (at, kind, digest, repository, size, reason, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now)
        .bind(kind)
        .bind(digest)
        .bind(repository)
        .bind(size)
        .bind(reason)
        .bind(outcome)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The name of repository `id`.
    pub async fn repository_name(&mut self, id: i64) -> Result<Option<String>, MetaError> {
        let row = sqlx::query("SELECT name FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.get("name")))
    }

    /// The blob review of `digest` is done: the item is kept (or gone).
    pub async fn finish_blob_review(&mut self, digest: &str) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM gc_blob_review_queue WHERE digest = $1")
            .bind(digest)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The manifest review of `id` is done: the item is kept (or gone).
    pub async fn finish_manifest_review(&mut self, id: i64) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM gc_manifest_review_queue WHERE manifest_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Looks at blob `digest` again at `until` (a writer held it).
    pub async fn postpone_blob_review(
        &mut self,
        digest: &str,
        until: i64,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "UPDATE gc_blob_review_queue SET review_after = $2, review_count = review_count + 1 \
             WHERE digest = $1",
        )
        .bind(digest)
        .bind(until)
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
