//! The review the blob and manifest workers run: the write service's
//! `review_blobs` / `review_manifests` (see the issue 10 design), behind a trait so tests can
//! script the review the worker loops run.

use async_trait::async_trait;

/// What a review batch did, as the write service reports it: the runtime uses the service's
/// own types, so there is one definition of a review's outcome.
pub use service::{Removed, RemovedKind, ReviewReport};

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

/// In service the review is the write service's: the one place that deletes registry state,
/// with the same locks and re-checks as every other write.
#[async_trait]
impl Reviewer for service::WriteService {
    async fn review_blobs(&self, now_ms: i64, limit: usize) -> Result<ReviewReport, ReviewError> {
        Ok(service::WriteService::review_blobs(self, now_ms, limit).await?)
    }

    async fn review_manifests(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ReviewError> {
        Ok(service::WriteService::review_manifests(self, now_ms, limit).await?)
    }
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
