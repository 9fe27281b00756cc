//! The leftovers sweep: storage objects that no live upload session owns and nothing else
//! will ever remove, older than a safe age.
//!
//! - interrupted writes next to blobs (`blobs/sha256/xx/<hex>#1` on the filesystem), left by
//!   a crash during a commit; object_store's listings skip them, so nothing else finds them;
//! - `uploads/<id>/…` objects whose session row is gone (a crash between ending a session and
//!   removing its objects, a request that wrote a part after its session ended), found by
//!   listing `uploads/` on every backend;
//! - blob objects (`blobs/sha256/xx/<hex>`) that no `blobs` row records: a crash (kill -9,
//!   power loss) between publishing an upload's bytes and committing its row. Found by listing
//!   `blobs/` (a directory walk, or pages of an S3/GCS/Azure bucket listing) and comparing
//!   each page with the database. Their bytes are not deleted here but queued for the storage
//!   deleter an hour later ([`service::ORPHANED_BYTES_DELAY`]), the one place that deletes blob
//!   bytes: a push of the same digest that is committing right now records its row first and
//!   the deleter then leaves the bytes alone.
//!
//! The safe age is `max(1h, storage.maintenance.uploadpurging.age)` in the server: an upload
//! session lives at most that long idle, so anything older belongs to none. Each removal is
//! logged and recorded in `gc_events` (kind `leftover`, the key in `digest`); queued blob bytes
//! are logged, and recorded by the deleter when it removes them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use meta::{GcEventRecord, GC_EVENT_LEFTOVER, GC_OUTCOME_DELETED};

use crate::GcError;

/// Blob objects compared with the database per query.
const LISTING_PAGE: usize = 500;

/// What kind of leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftoverKind {
    /// A temporary file of a write next to a blob.
    InterruptedWrite,
    /// The objects of an upload session the database no longer knows.
    UploadWithoutSession,
    /// A blob object no `blobs` row records (queued for the storage deleter).
    BlobWithoutRecord,
}

impl LeftoverKind {
    pub fn reason(self) -> &'static str {
        match self {
            LeftoverKind::InterruptedWrite => "interrupted write next to a blob",
            LeftoverKind::UploadWithoutSession => "upload objects without a session",
            LeftoverKind::BlobWithoutRecord => "blob bytes without a blob record",
        }
    }
}

/// One leftover: its storage key (an upload session's directory for its objects) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub key: String,
    pub size: u64,
    pub kind: LeftoverKind,
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeftoverReport {
    pub removed: usize,
    pub removed_bytes: u64,
    pub failed: usize,
    /// Blob objects without a record, queued for the storage deleter.
    pub queued: usize,
    pub queued_bytes: u64,
}

/// See the module doc. Cheap to clone.
#[derive(Clone)]
pub struct LeftoverSweep {
    store: meta::Store,
    blobs: blobstore::BlobStore,
    min_age: Duration,
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl LeftoverSweep {
    /// Sweeps objects older than `min_age`.
    pub fn new(store: meta::Store, blobs: blobstore::BlobStore, min_age: Duration) -> Self {
        LeftoverSweep { store, blobs, min_age }
    }

    /// The leftovers at `now_ms`, without removing anything.
    pub async fn find(&self, now_ms: i64) -> Result<Vec<Leftover>, GcError> {
        let cutoff = system_time(now_ms).checked_sub(self.min_age).unwrap_or(UNIX_EPOCH);
        let mut found: Vec<Leftover> = self
            .blobs
            .interrupted_writes(cutoff)
            .await?
            .into_iter()
            .map(|o| Leftover { key: o.key, size: o.size, kind: LeftoverKind::InterruptedWrite })
            .collect();
        found.extend(self.unrecorded_blobs(cutoff).await?);
        for session in self.blobs.idle_upload_session_usage(cutoff).await? {
            if !self.store.upload_session_exists(&session.id).await? {
                found.push(Leftover {
                    key: blobstore::layout::upload_dir(&session.id).to_string(),
                    size: session.bytes,
                    kind: LeftoverKind::UploadWithoutSession,
                });
            }
        }
        Ok(found)
    }

    /// Blob objects older than `cutoff` that no `blobs` row records, a page at a time.
    async fn unrecorded_blobs(&self, cutoff: SystemTime) -> Result<Vec<Leftover>, GcError> {
        let mut found = Vec::new();
        let mut listing = self.blobs.blob_objects(cutoff).chunks(LISTING_PAGE);
        while let Some(page) = listing.next().await {
            let page = page.into_iter().collect::<Result<Vec<_>, _>>()?;
            let digests: Vec<&str> = page.iter().map(|b| b.digest.as_str()).collect();
            let unrecorded: HashSet<String> =
                self.store.gc_unrecorded_blobs(&digests).await?.into_iter().collect();
            found.extend(page.iter().filter(|b| unrecorded.contains(b.digest.as_str())).map(|b| {
                Leftover {
                    key: blobstore::layout::blob(&b.digest).to_string(),
                    size: b.size,
                    kind: LeftoverKind::BlobWithoutRecord,
                }
            }));
        }
        Ok(found)
    }

    /// Removes the leftovers at `now_ms` (queues blob bytes without a record for the storage
    /// deleter); each removal is logged and recorded.
    pub async fn sweep(&self, now_ms: i64) -> Result<LeftoverReport, GcError> {
        let mut report = LeftoverReport::default();
        for leftover in self.find(now_ms).await? {
            if leftover.kind == LeftoverKind::BlobWithoutRecord {
                self.queue_unrecorded(&leftover, now_ms, &mut report).await?;
                continue;
            }
            let removed = match leftover.kind {
                LeftoverKind::InterruptedWrite => {
                    self.blobs.delete_interrupted_write(&leftover.key).await.map(|_| ())
                }
                LeftoverKind::UploadWithoutSession => {
                    let id = blobstore::layout::upload_session_of(&leftover.key).unwrap_or("");
                    // Checked again right before: a session is never created for an id
                    // that already has objects, but this costs one query.
                    if self.store.upload_session_exists(id).await? {
                        continue;
                    }
                    self.blobs.delete_upload(id).await;
                    Ok(())
                }
                LeftoverKind::BlobWithoutRecord => unreachable!("queued above"),
            };
            if let Err(error) = removed {
                report.failed += 1;
                tracing::warn!(key = %leftover.key, %error, "GC could not remove a leftover");
                continue;
            }
            report.removed += 1;
            report.removed_bytes += leftover.size;
            let reason = leftover.kind.reason();
            tracing::info!(key = %leftover.key, size = leftover.size, reason, "GC removed a leftover");
            self.store
                .gc_record_event(&GcEventRecord {
                    at: now_ms,
                    kind: GC_EVENT_LEFTOVER,
                    digest: &leftover.key,
                    repository: None,
                    size: leftover.size as i64,
                    reason,
                    outcome: GC_OUTCOME_DELETED,
                })
                .await?;
        }
        Ok(report)
    }

    /// Queues the bytes of a blob object without a record for the storage deleter, an hour
    /// from `now_ms` (see the module doc).
    async fn queue_unrecorded(
        &self,
        leftover: &Leftover,
        now_ms: i64,
        report: &mut LeftoverReport,
    ) -> Result<(), GcError> {
        let Some(digest) = blobstore::layout::blob_digest_of(&leftover.key) else { return Ok(()) };
        // Listed before the database said "no record": a storage deleter (of this instance
        // or another) may have removed the bytes, and their record with them, in between.
        // Queueing those again would count one deletion twice.
        if self.blobs.size(&digest).await?.is_none() {
            return Ok(());
        }
        let at = now_ms.saturating_add(service::ORPHANED_BYTES_DELAY.as_millis() as i64);
        let size = leftover.size.min(i64::MAX as u64) as i64;
        if self.store.gc_queue_unrecorded_bytes(digest.as_str(), size, at).await? {
            report.queued += 1;
            report.queued_bytes += leftover.size;
            tracing::info!(
                %digest,
                size,
                reason = leftover.kind.reason(),
                "GC queued blob bytes no blob record owns for deletion (a push was interrupted between storing and recording them)"
            );
        }
        Ok(())
    }
}
