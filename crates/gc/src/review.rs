//! The review the blob and manifest workers run: the write service's
//! `review_blobs` / `review_manifests` (see the issue 10 design), behind a trait so the
//! runtime does not depend on the service and tests can script it.

use async_trait::async_trait;

/// What was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedKind {
    Blob,
    Manifest,
}

/// One item a review removed (the reviewer has logged it and written its `gc_events` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub kind: RemovedKind,
    pub digest: String,
    /// The manifest's repository; `None` for blobs, which are global.
    pub repository: Option<String>,
    pub size: i64,
    pub reason: String,
}

/// What one review batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewReport {
    /// Due rows taken from the queue (0: nothing was due).
    pub reviewed: usize,
    pub deleted: Vec<Removed>,
    /// Rows found still referenced (their queue rows are gone or postponed).
    pub kept: usize,
}

pub type ReviewError = Box<dyn std::error::Error + Send + Sync>;

/// Reviews due queue rows at `now_ms`, at most `limit` per call, each in the reviewer's own
/// transaction. A reviewed row leaves the queue or is postponed, kept or deleted, so
/// repeated calls make progress; a failed call leaves its rows for the next one.
#[async_trait]
pub trait Reviewer: Send + Sync {
    async fn review_blobs(&self, now_ms: i64, limit: usize) -> Result<ReviewReport, ReviewError>;
    async fn review_manifests(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ReviewError>;
}

/// The two review queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Blobs,
    Manifests,
}

impl Queue {
    pub fn name(self) -> &'static str {
        match self {
            Queue::Blobs => "blobs",
            Queue::Manifests => "manifests",
        }
    }

    /// One review batch of this queue.
    pub async fn review(
        self,
        reviewer: &dyn Reviewer,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ReviewError> {
        match self {
            Queue::Blobs => reviewer.review_blobs(now_ms, limit).await,
            Queue::Manifests => reviewer.review_manifests(now_ms, limit).await,
        }
    }
}
