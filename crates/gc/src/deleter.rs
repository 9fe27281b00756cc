//! The storage deleter: removes the bytes of blobs whose metadata the review removed.
//!
//! The review deletes a blob's `blobs` row and inserts a `gc_storage_deletions` row in one
//! transaction, so bytes go only after nothing can reference them. The deleter claims due rows
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite), skips any digest that
//! has a `blobs` row again, deletes the objects in parallel (an object already gone counts as
//! deleted), and in the same transaction deletes the rows of what went or, for a failure,
//! records `attempts + 1`, the error and `next_attempt_at = now + min(2^attempts s,
//! gc.maxbackoff)`. An upload commit of the same digest deletes the row first and so waits for
//! a deleter holding it: bytes a committed blob needs are never removed. A pass that fails or
//! is cut off rolls back and leaves every row: nothing is ever lost, at worst deleted twice.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use meta::DeletionOutcome;
use oci::Digest;

use crate::pacing::Pacing;
use crate::worker::{Pass, PassReport};
use crate::GcError;

/// Rows claimed per pass while nothing else writes.
pub const DELETER_BATCH: usize = 500;
/// Rows claimed per pass while writes come in (see [`crate::pacing`]).
pub const BUSY_DELETER_BATCH: usize = 16;
/// Storage deletes in flight at once.
pub const DELETER_CONCURRENCY: usize = 32;

/// The reason logged and recorded for each object the deleter removes.
pub const STORAGE_REASON: &str = "blob removed from the metadata";

/// What storage deletion passes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleterReport {
    /// Rows taken.
    pub claimed: usize,
    pub deleted: usize,
    pub deleted_bytes: i64,
    /// Failed deletes, retried later.
    pub failed: usize,
    /// Rows dropped without touching storage because the blob was published again.
    pub republished: usize,
}

impl DeleterReport {
    fn add(&mut self, other: &DeleterReport) {
        self.claimed += other.claimed;
        self.deleted += other.deleted;
        self.deleted_bytes += other.deleted_bytes;
        self.failed += other.failed;
        self.republished += other.republished;
    }
}

/// See the module doc. Cheap to clone.
#[derive(Clone)]
pub struct StorageDeleter {
    store: meta::Store,
    blobs: blobstore::BlobStore,
    max_backoff: Duration,
    pacing: Pacing,
    concurrency: usize,
}

impl StorageDeleter {
    pub fn new(
        store: meta::Store,
        blobs: blobstore::BlobStore,
        max_backoff: Duration,
    ) -> StorageDeleter {
        StorageDeleter {
            store,
            blobs,
            max_backoff,
            pacing: Pacing::fixed(DELETER_BATCH),
            concurrency: DELETER_CONCURRENCY,
        }
    }

    /// Other batch size and parallelism (tests, benchmarks).
    pub fn with_batch(mut self, batch: usize, concurrency: usize) -> StorageDeleter {
        self.pacing = Pacing::fixed(batch);
        self.concurrency = concurrency.max(1);
        self
    }

    /// The same deleter taking small batches with pauses while `store` sees foreground
    /// writes (see [`crate::pacing`]).
    pub fn giving_way_to(mut self, store: meta::Store) -> StorageDeleter {
        self.pacing = Pacing::giving_way(store, self.pacing.batch, BUSY_DELETER_BATCH);
        self
    }

    /// One batch of what is due at `now_ms`.
    pub async fn delete_due(&self, now_ms: i64) -> Result<DeleterReport, GcError> {
        let batch = self.pacing.batch();
        let claim = self.store.gc_claim_storage_deletions(now_ms, batch as i64).await?;
        // Owned items and handles: the futures must not borrow from the claim (Send bounds).
        let outcomes: Vec<(String, DeletionOutcome)> = futures::stream::iter(claim.items.clone())
            .map(|item| {
                let blobs = self.blobs.clone();
                async move {
                    let outcome = match item.digest.parse::<Digest>() {
                        Ok(digest) => match blobs.delete_blob(&digest).await {
                            Ok(()) => DeletionOutcome::Deleted,
                            Err(e) => DeletionOutcome::Failed(e.to_string()),
                        },
                        Err(e) => DeletionOutcome::Failed(format!("not a digest: {e}")),
                    };
                    (item.digest, outcome)
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let items = claim.items.clone();
        let republished = claim.republished.clone();
        let max_backoff_ms = self.max_backoff.as_millis().min(i64::MAX as u128) as i64;
        claim.finish(now_ms, max_backoff_ms, &outcomes).await?;

        let mut report = DeleterReport {
            claimed: items.len() + republished.len(),
            republished: republished.len(),
            ..Default::default()
        };
        for item in &republished {
            tracing::info!(digest = %item.digest, "GC kept blob bytes: the blob was pushed again");
        }
        for (digest, outcome) in &outcomes {
            let Some(item) = items.iter().find(|i| &i.digest == digest) else { continue };
            match outcome {
                DeletionOutcome::Deleted => {
                    report.deleted += 1;
                    report.deleted_bytes += item.size;
                    tracing::info!(
                        %digest,
                        size = item.size,
                        reason = STORAGE_REASON,
                        "GC removed blob bytes from storage"
                    );
                }
                DeletionOutcome::Failed(error) => {
                    report.failed += 1;
                    let attempts = item.attempts + 1;
                    let retry_in = meta::storage_retry_backoff_ms(attempts, max_backoff_ms);
                    tracing::warn!(
                        %digest,
                        size = item.size,
                        attempts,
                        retry_in_ms = retry_in,
                        %error,
                        "GC could not remove blob bytes from storage; will retry"
                    );
                }
            }
        }
        Ok(report)
    }

    /// Batches until nothing is due at `now_ms` (a failure is postponed past it, so this ends).
    pub async fn drain(&self, now_ms: i64) -> Result<DeleterReport, GcError> {
        let mut total = DeleterReport::default();
        loop {
            let report = self.delete_due(now_ms).await?;
            total.add(&report);
            if report.claimed == 0 {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl Pass for StorageDeleter {
    fn name(&self) -> &'static str {
        "storage"
    }

    async fn run(&self, now_ms: i64) -> Result<PassReport, GcError> {
        let report = self.delete_due(now_ms).await?;
        Ok(PassReport { found: report.claimed, removed: report.deleted })
    }

    fn pause(&self) -> Duration {
        self.pacing.pause()
    }
}
