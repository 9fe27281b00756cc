//! `stowage gc run`: one full pass now — a mark-and-sweep over the database, useful after an
//! import or on a fresh start — and its dry run.
//!
//! The full pass marks (queues for review, due now) every manifest and blob that is
//! unreferenced and older than `min_age`, drains both queues through the [`Reviewer`] (which
//! re-checks each item in its own transaction, so concurrent pushes win), and repeats while a
//! round removed something (what a removal frees, such as the layers of a deleted manifest, is
//! marked by the next round). Then it retries every pending storage deletion and sweeps
//! leftovers. The dry run computes the same set (cascades included) in one read-only snapshot.

use std::time::Duration;

use meta::{GcDryRun, StorageDeletion};

use crate::clock::Clock;
use crate::deleter::{DeleterReport, StorageDeleter};
use crate::leftovers::{Leftover, LeftoverReport, LeftoverSweep};
use crate::review::{Queue, RemovedKind, ReviewReport, Reviewer};
use crate::GcError;

/// How a full pass (or its dry run) runs.
#[derive(Clone, Debug)]
pub struct FullPassOptions {
    /// Only what was created (and, for blobs, last linked) longer ago than this is marked, and
    /// only leftovers older than this are swept: a push in progress uploads layers and index
    /// children before the manifest that references them.
    pub min_age: Duration,
    /// Review rows per batch.
    pub batch: usize,
    /// `gc.maxbackoff`, for storage deletions that fail.
    pub max_backoff: Duration,
}

impl Default for FullPassOptions {
    fn default() -> Self {
        FullPassOptions {
            min_age: Duration::from_secs(3600),
            batch: crate::worker::REVIEW_BATCH,
            max_backoff: Duration::from_secs(24 * 3600),
        }
    }
}

/// Progress of a full pass, for printing.
#[derive(Debug)]
pub enum Progress<'a> {
    Marked { round: usize, manifests: u64, blobs: u64 },
    Reviewed { queue: Queue, report: &'a ReviewReport },
    Storage(&'a DeleterReport),
    Leftovers(&'a LeftoverReport),
}

/// What a full pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FullPassSummary {
    pub rounds: usize,
    pub manifests_removed: usize,
    pub blobs_removed: usize,
    pub blob_bytes_removed: i64,
    pub storage: DeleterReport,
    pub leftovers: LeftoverReport,
}

/// One full pass now (see the module doc).
pub async fn full_pass(
    store: &meta::Store,
    blobs: &blobstore::BlobStore,
    reviewer: &dyn Reviewer,
    clock: &dyn Clock,
    options: &FullPassOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<FullPassSummary, GcError> {
    let min_age_ms = options.min_age.as_millis().min(i64::MAX as u128) as i64;
    let batch = options.batch.max(1);
    let mut summary = FullPassSummary::default();
    loop {
        summary.rounds += 1;
        let now = clock.now_ms();
        let (manifests, marked_blobs) =
            store.gc_mark_unreferenced(now, now.saturating_sub(min_age_ms)).await?;
        progress(Progress::Marked { round: summary.rounds, manifests, blobs: marked_blobs });
        let mut removed_this_round = 0;
        for queue in [Queue::Manifests, Queue::Blobs] {
            let (due_manifests, due_blobs) = store.gc_due_reviews(now).await?;
            let due = match queue {
                Queue::Manifests => due_manifests,
                Queue::Blobs => due_blobs,
            };
            // A reviewed row leaves the queue or is postponed; the budget only guards
            // against a reviewer that breaks that promise.
            let mut budget = due.max(0) as usize + batch;
            loop {
                let report = queue.review(reviewer, now, batch).await.map_err(GcError::Review)?;
                progress(Progress::Reviewed { queue, report: &report });
                for removed in &report.deleted {
                    match removed.kind {
                        RemovedKind::Manifest => summary.manifests_removed += 1,
                        RemovedKind::Blob => {
                            summary.blobs_removed += 1;
                            summary.blob_bytes_removed += removed.size;
                        }
                    }
                }
                removed_this_round += report.deleted.len();
                if report.reviewed == 0 || report.reviewed >= budget {
                    break;
                }
                budget -= report.reviewed;
            }
        }
        if removed_this_round == 0 {
            break;
        }
    }
    let now = clock.now_ms();
    store.gc_storage_deletions_due_now(now).await?;
    let deleter = StorageDeleter::new(store.clone(), blobs.clone(), options.max_backoff);
    summary.storage = deleter.drain(now).await?;
    progress(Progress::Storage(&summary.storage));
    let sweep = LeftoverSweep::new(store.clone(), blobs.clone(), options.min_age);
    summary.leftovers = sweep.sweep(now).await?;
    progress(Progress::Leftovers(&summary.leftovers));
    Ok(summary)
}

/// What a full pass would remove now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRunReport {
    /// Manifests and blob rows (with the bytes they free), cascades included.
    pub dangling: GcDryRun,
    /// Blob bytes already waiting for the storage deleter.
    pub pending_storage: Vec<StorageDeletion>,
    pub leftovers: Vec<Leftover>,
}

/// The dry run of [`full_pass`]: changes nothing.
pub async fn dry_run(
    store: &meta::Store,
    blobs: &blobstore::BlobStore,
    clock: &dyn Clock,
    options: &FullPassOptions,
) -> Result<DryRunReport, GcError> {
    let now = clock.now_ms();
    let min_age_ms = options.min_age.as_millis().min(i64::MAX as u128) as i64;
    let dangling = store.gc_dry_run(now.saturating_sub(min_age_ms)).await?;
    let pending_storage = store.gc_storage_deletions(i64::MAX).await?;
    let sweep = LeftoverSweep::new(store.clone(), blobs.clone(), options.min_age);
    let leftovers = sweep.find(now).await?;
    Ok(DryRunReport { dangling, pending_storage, leftovers })
}
