//! The worker loop: one [`Pass`] repeated — at once while it finds work, every `interval`
//! when it finds none, with exponential backoff (up to `gc.maxbackoff`) after failures — until
//! shut down. [`Worker::step`] is one iteration, so tests drive the loop without sleeping.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::deleter::StorageDeleter;
use crate::pacing::Pacing;
use crate::review::{Queue, Reviewer};
use crate::settings::GcSettings;
use crate::GcError;

/// One unit of GC work: take what is due at `now_ms` (one batch) and deal with it.
#[async_trait]
pub trait Pass: Send + Sync {
    /// For logs: `blobs`, `manifests`, `storage`, `leftovers`.
    fn name(&self) -> &'static str;
    async fn run(&self, now_ms: i64) -> Result<PassReport, GcError>;
    /// The wait after a pass that found work before the next one (see [`crate::pacing`]).
    fn pause(&self) -> Duration {
        Duration::ZERO
    }
}

/// What one pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Items it took (0: nothing was due, the worker waits `interval`).
    pub found: usize,
    pub removed: usize,
}

/// Repeats one pass (see the module doc).
pub struct Worker {
    pass: Arc<dyn Pass>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    max_backoff: Duration,
    /// `gc.transactiontimeout`: a pass that takes longer is abandoned (its transaction rolls
    /// back) and counts as a failure.
    timeout: Option<Duration>,
    failures: u32,
}

/// The wait after the `failures`-th failure in a row: `interval` (at least 1 s) doubled each
/// time, at most `max_backoff`.
pub fn backoff(interval: Duration, failures: u32, max_backoff: Duration) -> Duration {
    let base = interval.max(Duration::from_secs(1));
    let factor = 1u32 << failures.saturating_sub(1).min(31);
    base.saturating_mul(factor).min(max_backoff)
}

impl Worker {
    pub fn new(
        pass: Arc<dyn Pass>,
        clock: Arc<dyn Clock>,
        interval: Duration,
        max_backoff: Duration,
        timeout: Option<Duration>,
    ) -> Worker {
        Worker { pass, clock, interval, max_backoff, timeout, failures: 0 }
    }

    /// Failed passes in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Runs one pass now; returns how long to wait before the next one.
    pub async fn step(&mut self) -> Duration {
        let now = self.clock.now_ms();
        let run = self.pass.run(now);
        let outcome = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(GcError::Timeout(limit)),
            },
            None => run.await,
        };
        match outcome {
            Ok(report) => {
                if self.failures > 0 {
                    tracing::info!(worker = self.pass.name(), "GC worker recovered");
                }
                self.failures = 0;
                if report.found > 0 {
                    self.pass.pause()
                } else {
                    self.interval
                }
            }
            Err(error) if error.lost_to_a_write() => {
                tracing::info!(
                    worker = self.pass.name(),
                    "a GC pass gave way to a concurrent write (deadlock); it runs again"
                );
                Duration::ZERO
            }
            Err(error) => {
                self.failures += 1;
                let wait = backoff(self.interval, self.failures, self.max_backoff);
                tracing::warn!(
                    worker = self.pass.name(),
                    %error,
                    failures = self.failures,
                    retry_in = ?wait,
                    "GC pass failed"
                );
                wait
            }
        }
    }

    /// Runs until `shutdown` is cancelled. A pass in progress is finished (it is bounded by
    /// its timeout), never cut off half-way.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let wait = self.step().await;
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!(worker = self.pass.name(), "GC worker stopped");
    }
}

/// Review rows taken per pass while nothing else writes: each batch is a handful of
/// statements whatever its size, so large batches make a backlog drain fast.
pub const REVIEW_BATCH: usize = 1000;
/// Review rows taken per pass while writes come in (see [`crate::pacing`]).
pub const BUSY_REVIEW_BATCH: usize = 25;

/// A review worker's pass: one batch of a queue through the [`Reviewer`].
pub struct ReviewPass {
    pub reviewer: Arc<dyn Reviewer>,
    pub queue: Queue,
    pub pacing: Pacing,
}

#[async_trait]
impl Pass for ReviewPass {
    fn name(&self) -> &'static str {
        self.queue.name()
    }

    async fn run(&self, now_ms: i64) -> Result<PassReport, GcError> {
        let report = self
            .queue
            .review(&*self.reviewer, now_ms, self.pacing.batch())
            .await
            .map_err(GcError::Review)?;
        if report.reviewed > 0 {
            tracing::debug!(
                queue = self.queue.name(),
                reviewed = report.reviewed,
                deleted = report.deleted.len(),
                kept = report.kept,
                "GC review batch"
            );
        }
        Ok(PassReport { found: report.reviewed, removed: report.deleted.len() })
    }

    fn pause(&self) -> Duration {
        self.pacing.pause()
    }
}

/// The background workers of one instance; [`stop`](Self::stop) shuts them down.
pub struct Background {
    shutdown: CancellationToken,
    handles: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Background {
    /// Names of the workers running.
    pub fn workers(&self) -> Vec<&'static str> {
        self.handles.iter().map(|(name, _)| *name).collect()
    }

    /// Asks every worker to stop and waits up to `grace` for them to finish their pass.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        let all = futures::future::join_all(self.handles.into_iter().map(|(_, h)| h));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("GC workers did not stop within {grace:?}; abandoning their passes");
        }
    }
}

/// What [`spawn_background`] runs besides the review workers. (The leftovers sweep and full
/// passes run once across instances, as jobs: see [`crate::jobs`].)
pub struct BackgroundParts {
    pub deleter: StorageDeleter,
    /// Where the workers see foreground writes, to give way to them ([`crate::pacing`]);
    /// `None`: full batches always.
    pub activity: Option<meta::Store>,
    /// The review the blob and manifest workers run (`serve` passes the write service);
    /// `None` runs no review worker, only the storage deleter and the sweep.
    pub reviewer: Option<Arc<dyn Reviewer>>,
}

/// Starts the workers `settings` enable on this instance: a blob review worker and the
/// storage deleter (`gc.blobs.*`) and a manifest review worker (`gc.manifests.*`); none with
/// `gc.disabled`.
pub fn spawn_background(
    settings: &GcSettings,
    parts: BackgroundParts,
    clock: Arc<dyn Clock>,
) -> Background {
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut start = |name: &'static str, pass: Arc<dyn Pass>, interval, timeout| {
        let worker = Worker::new(pass, clock.clone(), interval, settings.max_backoff, timeout);
        handles.push((name, tokio::spawn(worker.run(shutdown.clone()))));
    };
    let timeout = Some(settings.transaction_timeout);
    if let Some(reviewer) = &parts.reviewer {
        for (queue, enabled, interval) in [
            (Queue::Manifests, settings.manifests_enabled(), settings.manifests.interval),
            (Queue::Blobs, settings.blobs_enabled(), settings.blobs.interval),
        ] {
            if enabled {
                let pacing = match &parts.activity {
                    Some(store) => {
                        Pacing::giving_way(store.clone(), REVIEW_BATCH, BUSY_REVIEW_BATCH)
                    }
                    None => Pacing::fixed(REVIEW_BATCH),
                };
                let pass = ReviewPass { reviewer: reviewer.clone(), queue, pacing };
                start(queue.name(), Arc::new(pass), interval, timeout);
            }
        }
    }
    if settings.blobs_enabled() {
        let deleter = match &parts.activity {
            Some(store) => parts.deleter.giving_way_to(store.clone()),
            None => parts.deleter,
        };
        start("storage", Arc::new(deleter), settings.blobs.interval, timeout);
    }
    Background { shutdown, handles }
}
