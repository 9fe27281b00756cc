//! GC work that must run once across instances, as durable jobs (crate `jobs`): the leftovers
//! sweep, periodic (each period's sweep runs on one instance, whichever claims it), and a full
//! mark-and-sweep pass, enqueued on demand (`POST /api/v4/admin/registry/gc`). The review
//! workers and the storage deleter stay on every instance (GitLab's design: every instance
//! reviews, claiming rows with SKIP LOCKED), see [`crate::worker`].

use std::sync::Arc;
use std::time::Duration;

use jobs::{JobContext, JobError, Runner};
use serde::{Deserialize, Serialize};

use crate::clock::ManualClock;
use crate::leftovers::LeftoverSweep;
use crate::pass::{full_pass, FullPassOptions, Progress};
use crate::review::Reviewer;

/// The periodic leftovers sweep.
pub const LEFTOVERS_JOB: &str = "gc_leftovers";
/// One full pass (see [`full_pass`]).
pub const FULL_PASS_JOB: &str = "gc_full_pass";

/// The payload of a [`FULL_PASS_JOB`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullPassJob {
    /// What was pushed (or linked) more recently than this is left alone.
    pub min_age_seconds: u64,
}

impl FullPassJob {
    /// The longest `min_age_seconds` accepted: 30 days.
    pub const MAX_MIN_AGE_SECONDS: u64 = 30 * 86_400;
}

/// What the GC jobs run on.
#[derive(Clone)]
pub struct GcJobs {
    pub store: meta::Store,
    pub blobs: blobstore::BlobStore,
    /// The review (`serve` passes the write service).
    pub reviewer: Arc<dyn Reviewer>,
    /// `gc.maxbackoff`, for storage deletions that fail.
    pub max_backoff: Duration,
    /// How old a leftover must be before the sweep removes it.
    pub leftovers_age: Duration,
}

/// Registers both GC jobs on `runner`, and the leftovers sweep every `sweep_every` when it is
/// given (`None` with `gc.disabled`: an explicit full pass still runs, as `stowage gc run`
/// does).
pub fn register(runner: &mut Runner, gc: GcJobs, sweep_every: Option<Duration>) {
    let g = gc.clone();
    runner.handle(LEFTOVERS_JOB, move |ctx| leftovers(g.clone(), ctx));
    runner.handle(FULL_PASS_JOB, move |ctx| full(gc.clone(), ctx));
    if let Some(every) = sweep_every {
        runner.every(LEFTOVERS_JOB, every, serde_json::json!({}));
    }
}

async fn leftovers(gc: GcJobs, ctx: JobContext) -> Result<(), JobError> {
    let sweep = LeftoverSweep::new(gc.store, gc.blobs, gc.leftovers_age);
    let report = sweep.sweep(ctx.now).await.map_err(JobError::retry)?;
    if report.removed > 0 || report.failed > 0 {
        tracing::info!(
            removed = report.removed,
            bytes = report.removed_bytes,
            failed = report.failed,
            "GC leftovers sweep"
        );
    }
    Ok(())
}

async fn full(gc: GcJobs, ctx: JobContext) -> Result<(), JobError> {
    let job: FullPassJob = ctx.payload()?;
    let options = FullPassOptions {
        min_age: Duration::from_secs(job.min_age_seconds.min(FullPassJob::MAX_MIN_AGE_SECONDS)),
        max_backoff: gc.max_backoff,
        ..Default::default()
    };
    // As of the time the job was claimed, so `stowage jobs run-due --at` runs it as of then.
    let clock = ManualClock::new(ctx.now);
    let mut progress = |p: Progress<'_>| {
        if let Progress::Marked { round, manifests, blobs } = p {
            tracing::info!(job = ctx.id, round, manifests, blobs, "GC full pass marked");
        }
    };
    let summary = full_pass(&gc.store, &gc.blobs, &*gc.reviewer, &clock, &options, &mut progress)
        .await
        .map_err(JobError::retry)?;
    tracing::info!(
        job = ctx.id,
        rounds = summary.rounds,
        manifests = summary.manifests_removed,
        blobs = summary.blobs_removed,
        blob_bytes = summary.blob_bytes_removed,
        storage_objects = summary.storage.deleted,
        storage_failed = summary.storage.failed,
        leftovers = summary.leftovers.removed,
        "GC full pass done"
    );
    Ok(())
}
