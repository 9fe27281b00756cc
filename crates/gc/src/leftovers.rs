//! The leftovers sweep: storage objects that no live upload session owns and nothing else
//! will ever remove, older than a safe age.
//!
//! - interrupted writes next to blobs (`blobs/sha256/xx/<hex>#1` on the filesystem), left by
//!   a crash during a commit; object_store's listings skip them, so nothing else finds them;
//! - `uploads/<id>/…` objects whose session row is gone (a crash between ending a session and
//!   removing its objects, a request that wrote a part after its session ended).
//!
//! The safe age is `max(1h, storage.maintenance.uploadpurging.age)` in the server: an upload
//! session lives at most that long idle, so anything older belongs to none. Each removal is
//! logged and recorded in `gc_events` (kind `leftover`, the key in `digest`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meta::{GcEventRecord, GC_EVENT_LEFTOVER, GC_OUTCOME_DELETED};

use crate::GcError;

/// What kind of leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftoverKind {
    /// A temporary file of a write next to a blob.
    InterruptedWrite,
    /// The objects of an upload session the database no longer knows.
    UploadWithoutSession,
}

impl LeftoverKind {
    pub fn reason(self) -> &'static str {
        match self {
            LeftoverKind::InterruptedWrite => "interrupted write next to a blob",
            LeftoverKind::UploadWithoutSession => "upload objects without a session",
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

    /// Removes the leftovers at `now_ms`; each removal is logged and recorded.
    pub async fn sweep(&self, now_ms: i64) -> Result<LeftoverReport, GcError> {
        let mut report = LeftoverReport::default();
        for leftover in self.find(now_ms).await? {
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
}
