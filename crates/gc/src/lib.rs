//! Online garbage collection, the runtime: what runs GitLab-style online GC on every instance.
//!
//! - [`worker`]: the loops. A [`Worker`] repeats one [`Pass`] (take what is due, in a batch):
//!   at once while there is work, every `interval` when idle, with exponential backoff up to
//!   `gc.maxbackoff` on errors, each pass bounded by `gc.transactiontimeout`; it stops when
//!   shut down. Tests call [`Worker::step`] with a [`ManualClock`] instead of sleeping.
//! - [`review`]: the [`Reviewer`] the blob and manifest workers call. The review itself
//!   (claim due rows, lock, re-check references, delete what is still dangling, queue what that
//!   frees) belongs to the write service; this crate only schedules it.
//! - [`deleter`]: the storage deleter, which removes the bytes of blobs whose metadata the
//!   review removed (`gc_storage_deletions`), idempotently, retrying failures with backoff.
//! - [`leftovers`]: the sweep of storage objects no live upload session owns.
//! - [`pacing`]: batch sizes and pauses: large batches while nothing else writes, small ones
//!   with pauses while pushes come in.
//! - [`pass`]: `stowage gc run`: one full mark-and-sweep now, or its dry run.
//! - [`jobs`]: what runs once across instances, as durable jobs of the `jobs` crate: the
//!   leftovers sweep (periodic) and a full pass (on demand, `POST /api/v4/admin/registry/gc`).
//!   The review workers and the storage deleter run on every instance.
//!
//! Each pass is a plain async function over the stores.
//! This crate owns no SQL (that is `meta::gc`) and no storage keys (that is `blobstore::layout`),
//! and knows nothing of HTTP.

pub mod clock;
pub mod deleter;
pub mod jobs;
pub mod leftovers;
pub mod pacing;
pub mod pass;
pub mod review;
pub mod settings;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use deleter::{DeleterReport, StorageDeleter};
pub use jobs::{FullPassJob, GcJobs, FULL_PASS_JOB, LEFTOVERS_JOB};
pub use leftovers::{Leftover, LeftoverKind, LeftoverReport, LeftoverSweep};
pub use pacing::Pacing;
pub use pass::{dry_run, full_pass, DryRunReport, FullPassOptions, FullPassSummary, Progress};
pub use review::{Queue, Removed, RemovedKind, ReviewError, ReviewReport, Reviewer};
pub use settings::{GcSettings, WorkerSettings};
pub use worker::{
    spawn_background, Background, BackgroundParts, Pass, PassReport, ReviewPass, Worker,
};

/// What can stop a GC pass. None of them loses work: a pass that fails leaves its rows for the
/// next one.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error(transparent)]
    Storage(#[from] blobstore::BlobError),
    #[error("review failed: {0}")]
    Review(ReviewError),
    #[error("the pass took longer than gc.transactiontimeout ({0:?}) and was abandoned")]
    Timeout(std::time::Duration),
}

impl GcError {
    /// PostgreSQL rolled the pass back as the victim of a deadlock with a concurrent write:
    /// the write won, as it must, and nothing is lost; the pass simply runs again.
    pub fn lost_to_a_write(&self) -> bool {
        match self {
            GcError::Meta(e) => e.is_deadlock(),
            GcError::Review(e) => {
                e.downcast_ref::<meta::MetaError>().is_some_and(|m| m.is_deadlock())
                    || e.downcast_ref::<service::ServiceError>().is_some_and(
                        |s| matches!(s, service::ServiceError::Meta(m) if m.is_deadlock()),
                    )
            }
            _ => false,
        }
    }
}
