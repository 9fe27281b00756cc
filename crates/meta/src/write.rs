//! Typed write operations on a [`WriteTx`]: every statement that changes registry state
//! (repositories, blobs and their links, manifests, tags) and the garbage-collection review
//! rows those changes queue, in the same transaction.
//!
//! The write service (crate `service`) composes these with storage work and policy checks;
//! nothing else calls them. Each operation that may orphan something queues it for review
//! (`gc_blob_review_queue` / `gc_manifest_review_queue`, one row per item, upserted) at the
//! time [`ReviewSchedule`] says, with the event that queued it.
//!
//! Locking (PostgreSQL; on SQLite every write transaction runs alone): before relying on an
//! existing blob or manifest, a writer locks its row `FOR SHARE`; GC locks the row
//! `FOR UPDATE SKIP LOCKED` before re-checking it (see `gc_review.rs`). Writers lock item rows
//! (`blobs`, `manifests`) before any row that refers to them (links, references, tags), so GC,
//! which never waits for a writer's item rows, cannot deadlock with one over them. It
//! may still wait on a review-queue row a writer upserted; PostgreSQL then rolls one of the
//! two back as a deadlock victim ([`MetaError::is_deadlock`]), and the write service runs a
//! manifest push again.

use oci::{Digest, RepositoryName, Tag};
use sqlx::Row;

use crate::registry::{BlobRecord, NewManifest, PutManifestError, UnlinkOutcome};
use crate::store::{get_i64, MetaError, WriteTx};

/// When the review rows a write queues fall due, computed by the write service from
/// `gc.reviewafter` (milliseconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewSchedule {
    pub now: i64,
    /// `now + gc.reviewafter` (+ jitter): when a queued item is reviewed.
    pub due: i64,
    /// A review row of an item a writer relies on that is due before this is pushed back to
    /// it: `now + min(gc.reviewafter, 1h)`.
    pub postpone_to: i64,
}

impl ReviewSchedule {
    /// Everything due at `now` (tests; `gc.reviewafter: 0s`).
    pub fn immediate(now: i64) -> ReviewSchedule {
        ReviewSchedule { now, due: now, postpone_to: now }
    }
}

/// The item a review row is about.
enum ReviewedItem<'a> {
    Blob(&'a str),
    Manifest(i64),
}

/// What queued a review row (the `event` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcEvent {
    BlobUpload,
    BlobMount,
    BlobUnlink,
    ManifestUpload,
    ManifestDelete,
    IndexDelete,
    SubjectDelete,
    TagDelete,
    TagSwitch,
    RepositoryDelete,
}

impl GcEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            GcEvent::BlobUpload => "blob_upload",
            GcEvent::BlobMount => "blob_mount",
            GcEvent::BlobUnlink => "blob_unlink",
            GcEvent::ManifestUpload => "manifest_upload",
            GcEvent::ManifestDelete => "manifest_delete",
            GcEvent::IndexDelete => "index_delete",
            GcEvent::SubjectDelete => "subject_delete",
            GcEvent::TagDelete => "tag_delete",
            GcEvent::TagSwitch => "tag_switch",
            GcEvent::RepositoryDelete => "repository_delete",
        }
    }
}

/// What [`WriteTx::put_manifest`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutManifestOutcome {
    pub manifest_id: i64,
    pub repository_id: i64,
}

/// A manifest found (and locked) for deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRow {
    pub id: i64,
    pub repository_id: i64,
    pub digest: String,
    pub subject_digest: Option<String>,
    /// The payload's size in bytes.
    pub size: i64,
}

/// An index of the repository that lists a manifest, with one of its tags if it has any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingIndex {
    pub digest: String,
    pub tag: Option<String>,
}

impl WriteTx<'_> {
    // ---- repositories -------------------------------------------------------------------

    pub async fn repository_id(&mut self, repo: &RepositoryName) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| get_i64(&r, "id")))
    }

    /// The repository's id, creating it on first use.
    pub async fn ensure_repository(&mut self, repo: &RepositoryName) -> Result<i64, MetaError> {
        if let Some(id) = self.repository_id(repo).await? {
            return Ok(id);
        }
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(crate::now_millis())
        .execute(&mut *self.tx)
        .await?;
        self.repository_id(repo).await?.ok_or(MetaError::NotFound("repository"))
    }

    // ---- review queues ------------------------------------------------------------------

    /// Queues (or re-queues) blob `digest` for review at `schedule.due`.
    pub async fn queue_blob_review(
        &mut self,
        digest: &str,
        event: GcEvent,
        schedule: &ReviewSchedule,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO gc_blob_review_queue (digest, review_after, event, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO UPDATE \
             SET review_after = excluded.review_after, event = excluded.event",
        )
        .bind(digest)
        .bind(schedule.due)
        .bind(event.as_str())
        .bind(schedule.now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues (or re-queues) manifest `manifest_id` for review at `schedule.due`.
    pub async fn queue_manifest_review(
        &mut self,
        manifest_id: i64,
        repository_id: i64,
        event: GcEvent,
        schedule: &ReviewSchedule,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO gc_manifest_review_queue \
             (manifest_id, repository_id, review_after, event, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (manifest_id) DO UPDATE \
             SET review_after = excluded.review_after, event = excluded.event",
        )
        .bind(manifest_id)
        .bind(repository_id)
        .bind(schedule.due)
        .bind(event.as_str())
        .bind(schedule.now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    // ---- blobs --------------------------------------------------------------------------

    /// Locks the `blobs` row of `digest` against deletion until the transaction ends
    /// (`FOR SHARE`) and pushes a review of it that is due soon back to
    /// `schedule.postpone_to`. `None`: the blob is not stored (any more).
    pub async fn lock_blob(
        &mut self,
        digest: &str,
        schedule: &ReviewSchedule,
    ) -> Result<Option<BlobRecord>, MetaError> {
        let sql = format!("SELECT digest, size FROM blobs WHERE digest = $1{}", self.for_share());
        let row = sqlx::query(&sql).bind(digest).fetch_optional(&mut *self.tx).await?;
        let Some(row) = row else { return Ok(None) };
        self.postpone_due_review(ReviewedItem::Blob(digest), schedule).await?;
        Ok(Some(BlobRecord { digest: row.get("digest"), size: get_i64(&row, "size") }))
    }

    /// Records that `digest` (of `size` bytes) is stored, or locks its existing row, and
    /// cancels any pending deletion of its bytes (waiting for a deleter that is at work on
    /// them). Call it before publishing the bytes, in the same transaction: a deleter can then
    /// never remove bytes that a committed `blobs` row needs.
    pub async fn store_blob(
        &mut self,
        digest: &Digest,
        size: i64,
        schedule: &ReviewSchedule,
    ) -> Result<BlobRecord, MetaError> {
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(size)
        .bind(schedule.now)
        .execute(&mut *self.tx)
        .await?;
        let blob =
            self.lock_blob(digest.as_str(), schedule).await?.ok_or(MetaError::NotFound("blob"))?;
        sqlx::query("DELETE FROM gc_storage_deletions WHERE digest = $1")
            .bind(digest.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(blob)
    }

    /// Links a stored blob to the repository (idempotent). Lock the blob first
    /// ([`lock_blob`](Self::lock_blob) or [`store_blob`](Self::store_blob)).
    pub async fn link_blob(&mut self, repository_id: i64, digest: &str) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, blob_digest, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (repository_id, blob_digest) DO NOTHING",
        )
        .bind(repository_id)
        .bind(digest)
        .bind(crate::now_millis())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Removes the link between `repo` and the blob, unless a manifest of `repo` references it
    /// as config or layer (then nothing changes: drop the transaction); queues the blob for
    /// review when the link went.
    ///
    /// The link row is deleted first and the references are looked at after, and
    /// [`put_manifest`](Self::put_manifest) locks every link it relies on: whichever of the
    /// two gets the row first, the other sees its outcome.
    pub async fn unlink_blob(
        &mut self,
        repo: &RepositoryName,
        digest: &Digest,
        schedule: &ReviewSchedule,
    ) -> Result<UnlinkOutcome, MetaError> {
        let Some(repo_id) = self.repository_id(repo).await? else {
            return Ok(UnlinkOutcome::NotLinked);
        };
        // The blob row before the link row, as every writer does (see the module docs).
        if self.lock_blob(digest.as_str(), schedule).await?.is_none() {
            return Ok(UnlinkOutcome::NotLinked);
        }
        let deleted = sqlx::query(
            "DELETE FROM repository_blobs WHERE repository_id = $1 AND blob_digest = $2",
        )
        .bind(repo_id)
        .bind(digest.as_str())
        .execute(&mut *self.tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(UnlinkOutcome::NotLinked);
        }
        // A tagged manifest first: it names the image the user would otherwise have broken.
        let referencing = sqlx::query(
            "SELECT m.digest, m.config_digest, \
             (SELECT MIN(t.name) FROM tags t WHERE t.manifest_id = m.id) AS tag \
             FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id \
             WHERE m.repository_id = $1 AND mb.blob_digest = $2 \
             ORDER BY CASE WHEN EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id) \
             THEN 0 ELSE 1 END, m.digest LIMIT 1",
        )
        .bind(repo_id)
        .bind(digest.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        if let Some(row) = referencing {
            let config: Option<String> = row.get("config_digest");
            return Ok(UnlinkOutcome::Referenced {
                manifest: row.get("digest"),
                tag: row.get("tag"),
                as_config: config.as_deref() == Some(digest.as_str()),
            });
        }
        self.queue_blob_review(digest.as_str(), GcEvent::BlobUnlink, schedule).await?;
        Ok(UnlinkOutcome::Unlinked)
    }

    // ---- manifests and tags -------------------------------------------------------------

    /// Locks manifest `digest` of the repository against deletion until the transaction ends
    /// (`FOR SHARE`) and pushes a review of it that is due soon back to
    /// `schedule.postpone_to`, as [`lock_blob`](Self::lock_blob) does for blobs: a tag create
    /// or move to it, or an index listing it, relies on it. `None`: it is not stored (any
    /// more). Answers its id.
    pub async fn lock_manifest(
        &mut self,
        repository_id: i64,
        digest: &str,
        schedule: &ReviewSchedule,
    ) -> Result<Option<i64>, MetaError> {
        let sql = format!(
            "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2{}",
            self.for_share()
        );
        let row = sqlx::query(&sql)
            .bind(repository_id)
            .bind(digest)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id = get_i64(&row, "id");
        self.postpone_due_review(ReviewedItem::Manifest(id), schedule).await?;
        Ok(Some(id))
    }

    /// Pushes the review row of an item a writer relies on back to `schedule.postpone_to` if
    /// it is due before then (GitLab: rows due within the hour), for blobs and manifests alike.
    async fn postpone_due_review(
        &mut self,
        item: ReviewedItem<'_>,
        schedule: &ReviewSchedule,
    ) -> Result<(), MetaError> {
        let query = match item {
            ReviewedItem::Blob(digest) => sqlx::query(
                "UPDATE gc_blob_review_queue SET review_after = $2 \
                 WHERE digest = $1 AND review_after < $2",
            )
            .bind(digest),
            ReviewedItem::Manifest(id) => sqlx::query(
                "UPDATE gc_manifest_review_queue SET review_after = $2 \
                 WHERE manifest_id = $1 AND review_after < $2",
            )
            .bind(id),
        };
        query.bind(schedule.postpone_to).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// The manifest `digest` of the repository, locked `FOR UPDATE` (for a delete).
    pub async fn manifest_for_delete(
        &mut self,
        repository_id: i64,
        digest: &str,
    ) -> Result<Option<ManifestRow>, MetaError> {
        let sql = format!(
            "SELECT id, repository_id, digest, subject_digest, \
             CAST(LENGTH(payload) AS BIGINT) AS size FROM manifests \
             WHERE repository_id = $1 AND digest = $2{}",
            self.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(repository_id)
            .bind(digest)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| manifest_row(&r)))
    }

    /// Names of the tags pointing at manifest `manifest_id`, in order.
    pub async fn manifest_tags(&mut self, manifest_id: i64) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query("SELECT name FROM tags WHERE manifest_id = $1 ORDER BY name")
            .bind(manifest_id)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }

    /// The digest of the manifest tag `tag` points at now, locking the tag row `FOR UPDATE`
    /// so the answer holds until the transaction ends.
    pub async fn tag_target(
        &mut self,
        repository_id: i64,
        tag: &str,
    ) -> Result<Option<String>, MetaError> {
        let sql = format!(
            "SELECT manifest_id FROM tags WHERE repository_id = $1 AND name = $2{}",
            self.for_update()
        );
        let row =
            sqlx::query(&sql).bind(repository_id).bind(tag).fetch_optional(&mut *self.tx).await?;
        let Some(row) = row else { return Ok(None) };
        let row = sqlx::query("SELECT digest FROM manifests WHERE id = $1")
            .bind(get_i64(&row, "manifest_id"))
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(Some(row.get("digest")))
    }

    /// An index of the same repository that lists the manifest (by id, or by digest), a
    /// tagged one first.
    pub async fn listing_index(
        &mut self,
        m: &ManifestRow,
    ) -> Result<Option<ListingIndex>, MetaError> {
        let row = sqlx::query(
            "SELECT p.digest, (SELECT MIN(t.name) FROM tags t WHERE t.manifest_id = p.id) AS tag \
             FROM manifests p WHERE p.id <> $1 AND p.id IN ( \
               SELECT parent_id FROM manifest_references WHERE child_id = $1 \
               UNION SELECT parent_id FROM manifest_digest_references \
                 WHERE repository_id = $2 AND child_digest = $3) \
             ORDER BY CASE WHEN EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = p.id) \
             THEN 0 ELSE 1 END, p.digest LIMIT 1",
        )
        .bind(m.id)
        .bind(m.repository_id)
        .bind(&m.digest)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| ListingIndex { digest: r.get("digest"), tag: r.get("tag") }))
    }

    /// Stores a manifest, its blob and child references, and points each of `tags` at it
    /// (refusing to move any of `frozen_tags` that points elsewhere). Re-pushing an existing
    /// manifest changes nothing but the tags. Queues the manifest (`manifest_upload`) and the
    /// manifest a moved tag pointed at before (`tag_switch`).
    ///
    /// Every blob row is locked `FOR SHARE` before its link, and every listed child manifest
    /// and the manifest itself if it exists: GC cannot delete what this relies on, or it got
    /// there first and this finds it gone.
    pub async fn put_manifest(
        &mut self,
        repo_id: i64,
        manifest: &NewManifest,
        tags: &[Tag],
        frozen_tags: &[Tag],
        schedule: &ReviewSchedule,
    ) -> Result<PutManifestOutcome, PutManifestError> {
        // Manifests first (this one and the children it lists), then blobs, each kind in sorted
        // order: the order GC's review takes them in too, so a review holding a manifest and
        // waiting for a blob never waits on a push that holds the blob and waits for the
        // manifest (a deadlock on PostgreSQL).
        let mut manifest_digests: Vec<&str> =
            manifest.children.iter().map(|c| c.digest.as_str()).collect();
        manifest_digests.push(manifest.digest.as_str());
        manifest_digests.sort_unstable();
        manifest_digests.dedup();
        let mut locked = std::collections::HashMap::with_capacity(manifest_digests.len());
        for digest in manifest_digests {
            locked.insert(digest, self.lock_manifest(repo_id, digest, schedule).await?);
        }
        let mut child_ids = Vec::with_capacity(manifest.children.len());
        let mut absent_children = Vec::new();
        for child in &manifest.children {
            match locked.get(child.digest.as_str()).copied().flatten() {
                Some(id) => child_ids.push(id),
                None if child.must_exist => {
                    return Err(PutManifestError::ManifestUnknown(child.digest.to_string()))
                }
                None => absent_children.push(&child.digest),
            }
        }
        // Sorted, so concurrent writers lock shared blobs in the same order.
        let mut blobs: Vec<&Digest> = manifest.blobs.iter().collect();
        blobs.sort();
        blobs.dedup();
        for blob in &blobs {
            if self.lock_blob(blob.as_str(), schedule).await?.is_none() {
                return Err(PutManifestError::BlobUnknown(blob.to_string()));
            }
        }
        // Each link is checked with a no-op UPDATE rather than a SELECT: the UPDATE locks the
        // row until this transaction ends, so a concurrent unlink either waits and then sees
        // this manifest referencing the blob, or has removed the link and this finds it gone.
        for blob in &blobs {
            let linked = sqlx::query(
                "UPDATE repository_blobs SET created_at = created_at \
                 WHERE repository_id = $1 AND blob_digest = $2",
            )
            .bind(repo_id)
            .bind(blob.as_str())
            .execute(&mut *self.tx)
            .await?;
            if linked.rows_affected() == 0 {
                return Err(PutManifestError::BlobUnknown(blob.to_string()));
            }
        }
        let now = schedule.now;
        let existing = locked.get(manifest.digest.as_str()).copied().flatten();
        let manifest_id = match existing {
            Some(id) => id,
            None => {
                // A concurrent push of the same manifest may win the insert; then we reuse its row.
                let inserted = sqlx::query(
                    "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, \
                     subject_digest, config_digest, total_size, annotations, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (repository_id, digest) DO NOTHING RETURNING id",
                )
                .bind(repo_id)
                .bind(manifest.digest.as_str())
                .bind(&manifest.media_type)
                .bind(manifest.artifact_type.as_deref())
                .bind(manifest.subject.as_ref().map(|d| d.as_str()))
                .bind(manifest.config_digest.as_ref().map(|d| d.as_str()))
                .bind(manifest.total_size)
                .bind(manifest.annotations.as_deref())
                .bind(&manifest.payload)
                .bind(now)
                .fetch_optional(&mut *self.tx)
                .await?;
                match inserted {
                    Some(row) => {
                        let id = get_i64(&row, "id");
                        for blob in &blobs {
                            sqlx::query(
                                "INSERT INTO manifest_blobs (manifest_id, blob_digest) VALUES ($1, $2)",
                            )
                            .bind(id)
                            .bind(blob.as_str())
                            .execute(&mut *self.tx)
                            .await?;
                        }
                        let mut seen = std::collections::HashSet::new();
                        for child in &child_ids {
                            if seen.insert(*child) {
                                sqlx::query(
                                    "INSERT INTO manifest_references (parent_id, child_id) VALUES ($1, $2)",
                                )
                                .bind(id)
                                .bind(*child)
                                .execute(&mut *self.tx)
                                .await?;
                            }
                        }
                        let mut seen = std::collections::HashSet::new();
                        for child in &absent_children {
                            if !seen.insert(child.as_str()) {
                                continue;
                            }
                            sqlx::query(
                                "INSERT INTO manifest_digest_references \
                                 (parent_id, repository_id, child_digest) VALUES ($1, $2, $3)",
                            )
                            .bind(id)
                            .bind(repo_id)
                            .bind(child.as_str())
                            .execute(&mut *self.tx)
                            .await?;
                        }
                        id
                    }
                    None => self
                        .lock_manifest(repo_id, manifest.digest.as_str(), schedule)
                        .await?
                        .ok_or(MetaError::NotFound("manifest"))?,
                }
            }
        };

        let previous_sql = format!(
            "SELECT manifest_id FROM tags WHERE repository_id = $1 AND name = $2{}",
            self.for_update()
        );
        for tag in tags {
            let previous = sqlx::query(&previous_sql)
                .bind(repo_id)
                .bind(tag.as_str())
                .fetch_optional(&mut *self.tx)
                .await?
                .map(|r| get_i64(&r, "manifest_id"));
            // A frozen (immutable) tag may be created, or re-pushed unchanged, but never moved.
            // The condition is part of the upsert, so a concurrent push cannot slip past it.
            let frozen = frozen_tags.contains(tag);
            let sql = if frozen {
                "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (repository_id, name) DO UPDATE \
                 SET updated_at = excluded.updated_at WHERE tags.manifest_id = excluded.manifest_id"
            } else {
                "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (repository_id, name) DO UPDATE \
                 SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at"
            };
            let written = sqlx::query(sql)
                .bind(repo_id)
                .bind(tag.as_str())
                .bind(manifest_id)
                .bind(now)
                .execute(&mut *self.tx)
                .await?;
            if frozen && written.rows_affected() == 0 {
                return Err(PutManifestError::TagFrozen(tag.to_string()));
            }
            if let Some(previous) = previous.filter(|p| *p != manifest_id) {
                self.queue_manifest_review(previous, repo_id, GcEvent::TagSwitch, schedule).await?;
            }
        }
        self.queue_manifest_review(manifest_id, repo_id, GcEvent::ManifestUpload, schedule).await?;
        Ok(PutManifestOutcome { manifest_id, repository_id: repo_id })
    }

    /// Removes tag `tag`; the manifest stays addressable by digest and is queued for review
    /// (`tag_delete`). Answers whether the tag existed.
    pub async fn delete_tag(
        &mut self,
        repository_id: i64,
        tag: &str,
        schedule: &ReviewSchedule,
    ) -> Result<bool, MetaError> {
        let row = sqlx::query(
            "DELETE FROM tags WHERE repository_id = $1 AND name = $2 RETURNING manifest_id",
        )
        .bind(repository_id)
        .bind(tag)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let manifest_id = get_i64(&row, "manifest_id");
        self.queue_manifest_review(manifest_id, repository_id, GcEvent::TagDelete, schedule)
            .await?;
        Ok(true)
    }

    /// THE manifest delete, for users and for GC alike: removes the manifest (locked by
    /// [`manifest_for_delete`](Self::manifest_for_delete) or GC) with its tags and references,
    /// and queues what it may have orphaned: its config and layers (`manifest_delete`), the
    /// manifests it lists (`index_delete`) and the manifests of the repository whose subject
    /// it is (`subject_delete`).
    pub async fn delete_manifest(
        &mut self,
        m: &ManifestRow,
        schedule: &ReviewSchedule,
    ) -> Result<(), MetaError> {
        let blobs = sqlx::query(
            "SELECT blob_digest FROM manifest_blobs WHERE manifest_id = $1 ORDER BY blob_digest",
        )
        .bind(m.id)
        .fetch_all(&mut *self.tx)
        .await?;
        let children = sqlx::query(
            "SELECT child_id AS id FROM manifest_references WHERE parent_id = $1 AND child_id <> $1 \
             UNION SELECT c.id FROM manifest_digest_references md JOIN manifests c \
               ON c.repository_id = md.repository_id AND c.digest = md.child_digest \
               WHERE md.parent_id = $1 AND c.id <> $1",
        )
        .bind(m.id)
        .fetch_all(&mut *self.tx)
        .await?;
        let referrers = sqlx::query(
            "SELECT id FROM manifests WHERE repository_id = $1 AND subject_digest = $2 AND id <> $3",
        )
        .bind(m.repository_id)
        .bind(&m.digest)
        .bind(m.id)
        .fetch_all(&mut *self.tx)
        .await?;
        // Indexes that list this manifest keep listing it: their references become references
        // by digest, which count again if the manifest is pushed anew.
        sqlx::query(
            "INSERT INTO manifest_digest_references (parent_id, repository_id, child_digest) \
             SELECT mr.parent_id, $2, $3 FROM manifest_references mr \
             WHERE mr.child_id = $1 AND mr.parent_id <> $1 \
             ON CONFLICT (parent_id, child_digest) DO NOTHING",
        )
        .bind(m.id)
        .bind(m.repository_id)
        .bind(&m.digest)
        .execute(&mut *self.tx)
        .await?;
        for row in &children {
            let id = get_i64(row, "id");
            self.queue_manifest_review(id, m.repository_id, GcEvent::IndexDelete, schedule).await?;
        }
        for row in &referrers {
            let id = get_i64(row, "id");
            self.queue_manifest_review(id, m.repository_id, GcEvent::SubjectDelete, schedule)
                .await?;
        }
        // Review rows are taken manifests first, then blobs, before the deletes (whose usage
        // triggers lock usage rows): the order a push takes them in, so the two cannot deadlock.
        for row in &blobs {
            let digest: String = row.get("blob_digest");
            self.queue_blob_review(&digest, GcEvent::ManifestDelete, schedule).await?;
        }
        // Explicit deletes keep both backends identical even where cascades are off.
        for sql in [
            "DELETE FROM tags WHERE manifest_id = $1",
            "DELETE FROM manifest_blobs WHERE manifest_id = $1",
            "DELETE FROM manifest_references WHERE parent_id = $1 OR child_id = $1",
            "DELETE FROM manifest_digest_references WHERE parent_id = $1",
            "DELETE FROM gc_manifest_review_queue WHERE manifest_id = $1",
            "DELETE FROM manifests WHERE id = $1",
        ] {
            sqlx::query(sql).bind(m.id).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Deletes a repository's metadata: tags, manifests, blob links, then the row itself, and
    /// queues every blob that was linked to it (`repository_delete`). Answers whether it
    /// existed.
    pub async fn delete_repository(
        &mut self,
        repository_id: i64,
        schedule: &ReviewSchedule,
    ) -> Result<bool, MetaError> {
        // Item rows first (see the module docs): the manifests, then the linked blobs.
        let lock = self.for_update();
        sqlx::query(&format!(
            "SELECT id FROM manifests WHERE repository_id = $1 ORDER BY id{lock}"
        ))
        .bind(repository_id)
        .fetch_all(&mut *self.tx)
        .await?;
        let linked = sqlx::query(
            "SELECT blob_digest FROM repository_blobs WHERE repository_id = $1 ORDER BY blob_digest",
        )
        .bind(repository_id)
        .fetch_all(&mut *self.tx)
        .await?;
        let linked: Vec<String> = linked.iter().map(|r| r.get("blob_digest")).collect();
        for digest in &linked {
            self.lock_blob(digest, schedule).await?;
        }
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1",
            "DELETE FROM manifest_references WHERE parent_id IN \
             (SELECT id FROM manifests WHERE repository_id = $1) OR child_id IN \
             (SELECT id FROM manifests WHERE repository_id = $1)",
            "DELETE FROM manifest_blobs WHERE manifest_id IN \
             (SELECT id FROM manifests WHERE repository_id = $1)",
            "DELETE FROM manifest_digest_references WHERE repository_id = $1",
            "DELETE FROM gc_manifest_review_queue WHERE repository_id = $1",
            "DELETE FROM manifests WHERE repository_id = $1",
            "DELETE FROM repository_blobs WHERE repository_id = $1",
        ] {
            sqlx::query(sql).bind(repository_id).execute(&mut *self.tx).await?;
        }
        let result = sqlx::query("DELETE FROM repositories WHERE id = $1")
            .bind(repository_id)
            .execute(&mut *self.tx)
            .await?;
        for digest in &linked {
            self.queue_blob_review(digest, GcEvent::RepositoryDelete, schedule).await?;
        }
        Ok(result.rows_affected() > 0)
    }
}

pub(crate) fn manifest_row(r: &sqlx::any::AnyRow) -> ManifestRow {
    ManifestRow {
        id: get_i64(r, "id"),
        repository_id: get_i64(r, "repository_id"),
        digest: r.get("digest"),
        subject_digest: r.get("subject_digest"),
        size: get_i64(r, "size"),
    }
}

#[cfg(test)]
mod tests {
    use oci::IndexChild;

    use super::*;
    use crate::store::testing::TestDb;
    use crate::{Backend, QueuedReview};

    fn repo() -> RepositoryName {
        "a/app".parse().unwrap()
    }

    fn manifest(label: &str, children: &[&Digest]) -> NewManifest {
        let payload = format!("manifest {label}").into_bytes();
        NewManifest {
            digest: Digest::sha256_of(&payload),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            artifact_type: None,
            subject: None,
            config_digest: None,
            total_size: 100,
            annotations: None,
            payload,
            blobs: vec![],
            children: children
                .iter()
                .map(|d| IndexChild { digest: (*d).clone(), must_exist: true })
                .collect(),
        }
    }

    /// Puts `m` with `tags` under `schedule`, in its own transaction.
    async fn put(db: &TestDb, m: &NewManifest, tags: &[&str], schedule: &ReviewSchedule) {
        let tags: Vec<Tag> = tags.iter().map(|t| t.parse().unwrap()).collect();
        let mut w = db.store.write_tx().await.unwrap();
        let id = w.ensure_repository(&repo()).await.unwrap();
        w.put_manifest(id, m, &tags, &[], schedule).await.unwrap();
        w.commit().await.unwrap();
    }

    async fn review_after(db: &TestDb, digest: &Digest) -> i64 {
        let queued: Vec<QueuedReview> = db.store.queued_manifest_reviews().await.unwrap();
        queued.iter().find(|q| q.digest == digest.as_str()).expect("queued").review_after
    }

    /// Manifest-side writes postpone a manifest review that is due soon, as blob-side writes
    /// postpone blob reviews (GitLab pushes rows due within the hour back): an index that
    /// lists a manifest, and a tag created on an existing manifest. A review due later than
    /// that stays where it was.
    async fn manifest_writes_postpone_due_manifest_reviews(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let t0 = 1_000_000;
        // Three untagged manifests, each queued and due at t0 (gc.reviewafter 0s).
        let child = manifest("child", &[]);
        let tagged = manifest("tagged", &[]);
        let later = manifest("later", &[]);
        for m in [&child, &tagged, &later] {
            put(&db, m, &[], &ReviewSchedule::immediate(t0)).await;
        }
        let far = t0 + 10 * 3_600_000;
        put(&db, &later, &[], &ReviewSchedule { now: t0, due: far, postpone_to: far }).await;
        assert_eq!(review_after(&db, &child.digest).await, t0);
        assert_eq!(review_after(&db, &later.digest).await, far);

        // Writes at t1 with gc.reviewafter 24h: due rows are pushed back to t1 + 1h.
        let t1 = t0 + 5_000;
        let at_t1 = ReviewSchedule { now: t1, due: t1 + 86_400_000, postpone_to: t1 + 3_600_000 };
        let index = manifest("index", &[&child.digest, &later.digest]);
        put(&db, &index, &["multi"], &at_t1).await;
        assert_eq!(review_after(&db, &child.digest).await, t1 + 3_600_000, "listed by the index");
        assert_eq!(review_after(&db, &later.digest).await, far, "due later already");

        // A tag created on the existing manifest: its row is not left due (the write queues it
        // again a full delay out, after the lock pushed it back).
        put(&db, &tagged, &["v1"], &at_t1).await;
        assert!(review_after(&db, &tagged.digest).await >= t1 + 3_600_000);

        // Inside the writer's transaction, before it commits, the row is already pushed back:
        // a review claiming due rows at t1 does not see it.
        let other = manifest("other", &[]);
        put(&db, &other, &[], &ReviewSchedule::immediate(t1)).await;
        let mut w = db.store.write_tx().await.unwrap();
        let id = w.repository_id(&repo()).await.unwrap().unwrap();
        assert!(w.lock_manifest(id, other.digest.as_str(), &at_t1).await.unwrap().is_some());
        let claimed = w.claim_manifest_reviews(t1, 100).await.unwrap();
        assert!(claimed.is_empty(), "nothing due at t1 after the lock: {claimed:?}");
        w.commit().await.unwrap();
        assert_eq!(review_after(&db, &other.digest).await, t1 + 3_600_000);
        db.drop_database().await;
    }

    mod sqlite {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn manifest_writes_postpone_due_manifest_reviews() {
            super::manifest_writes_postpone_due_manifest_reviews(crate::Backend::Sqlite).await
        }
    }

    mod postgres {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn manifest_writes_postpone_due_manifest_reviews() {
            super::manifest_writes_postpone_due_manifest_reviews(crate::Backend::Postgres).await
        }
    }
}
