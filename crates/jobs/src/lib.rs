//! Durable background jobs: work that must outlive the request that asked for it and run once
//! across every instance — repository deletes, bulk tag deletes, cleanup policy passes, the
//! upload purge. This crate owns the queue's runtime: enqueueing ([`Queue`]), handlers
//! registered by kind, workers that claim due jobs under a lease they renew while the handler
//! runs, retries with exponential backoff and jitter, periodic schedules that run once per
//! period however many instances schedule them, and pruning of finished jobs. The rows and
//! their SQL live in `meta::jobs` (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on
//! SQLite).
//!
//! It must not know what a job does: handlers are registered by the crate that owns the work
//! (the REST API's deletes and cleanup policies) or by the binary, so this crate depends on
//! `meta` and nothing above it. Time comes from a [`Clock`], and [`Runner::run_due`] runs
//! everything due at a given time and returns, so tests drive jobs without sleeping.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meta::jobs::{Job, JobState, NewJob};
use meta::{MetaError, Store};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

/// Attempts a job gets unless its enqueuer says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;

// ---- time -----------------------------------------------------------------------------------

/// Where the queue reads the time (milliseconds since the Unix epoch).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        meta::now_millis()
    }
}

/// A clock tests set by hand. Clones share the time.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

// ---- enqueueing -----------------------------------------------------------------------------

/// Adds jobs. Cheap to clone; handed to whatever asks for background work (the REST API).
#[derive(Clone)]
pub struct Queue {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Wakes this process's idle workers, so a job enqueued here starts at once rather than at
    /// the next poll.
    wake: Arc<Notify>,
}

impl Queue {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Queue {
        Queue { store, clock, wake: Arc::new(Notify::new()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Enqueues a job of `kind` with `payload`, due now, with the default attempts; answers
    /// its id.
    pub async fn enqueue(&self, kind: &str, payload: impl Serialize) -> Result<i64, MetaError> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| MetaError::Conflict(format!("a {kind} job's payload: {e}")))?;
        let job = NewJob {
            kind: kind.to_string(),
            payload,
            dedupe_key: None,
            run_at: self.now_ms(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        };
        Ok(self.enqueue_job(&job).await?.id)
    }

    /// Enqueues `job` as given (dedupe key, time, attempts).
    pub async fn enqueue_job(&self, job: &NewJob) -> Result<meta::jobs::Enqueued, MetaError> {
        let enqueued = self.store.enqueue_job(job, self.now_ms()).await?;
        if enqueued.created {
            self.wake.notify_one();
        }
        Ok(enqueued)
    }
}

// ---- handlers -------------------------------------------------------------------------------

/// What a handler is given.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The time the job was claimed at: handlers that act "as of now" (cleanup policies) use
    /// it, so `run_due(at)` runs them as of `at`.
    pub now: i64,
}

impl JobContext {
    /// The payload as `T`; a payload that does not fit fails the job for good.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            JobError::Permanent(format!("the {} job's payload is invalid: {e}", self.kind))
        })
    }
}

/// How a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// Worth another attempt after a backoff (database or storage trouble).
    Retry(String),
    /// A retry would fail the same way (invalid payload): the job is dead at once.
    Permanent(String),
}

impl JobError {
    pub fn retry(error: impl std::fmt::Display) -> JobError {
        JobError::Retry(error.to_string())
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry(e) | JobError::Permanent(e) => f.write_str(e),
        }
    }
}

impl From<MetaError> for JobError {
    fn from(e: MetaError) -> JobError {
        JobError::retry(e)
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;

/// A job enqueued once per period: at most one job per `interval`-long slot (slots are aligned
/// to the Unix epoch, so every instance computes the same ones), whichever instance enqueues
/// it first.
struct Schedule {
    kind: String,
    interval_ms: i64,
    payload: serde_json::Value,
    /// The last slot this process enqueued, to spare the database a write on every tick.
    last_slot: Mutex<Option<i64>>,
}

// ---- settings -------------------------------------------------------------------------------

/// The runtime's knobs (`jobs.*` in the configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Jobs this instance runs at once.
    pub workers: usize,
    /// How long a claim holds without renewal; renewed every third of it while a job runs.
    /// An instance that dies leaves its jobs to others after at most this long.
    pub lease: Duration,
    /// How long finished jobs are kept (for `stowage jobs list`) before they are pruned.
    pub retention: Duration,
    /// How often idle workers look for due jobs enqueued elsewhere (other instances, retries).
    pub poll: Duration,
    /// Delay before the first retry; doubled for each further one, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workers: 2,
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 86_400),
            poll: Duration::from_secs(1),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

impl Settings {
    /// The delay before retrying after failed attempt number `attempt` (1-based): exponential,
    /// capped, plus up to a quarter more at random so that jobs failing together do not retry
    /// in lockstep.
    pub fn retry_delay(&self, attempt: i64) -> Duration {
        let doublings = attempt.clamp(1, 32) as u32 - 1;
        let delay =
            self.backoff.saturating_mul(2u32.saturating_pow(doublings)).min(self.max_backoff);
        let jitter_ms = (delay.as_millis() as u64) / 4;
        let jitter = if jitter_ms == 0 { 0 } else { rand::thread_rng().gen_range(0..=jitter_ms) };
        delay + Duration::from_millis(jitter)
    }
}

// ---- running --------------------------------------------------------------------------------

/// What [`Runner::run_due`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub succeeded: usize,
    /// Failed and queued for a retry.
    pub failed: usize,
    /// Failed for good.
    pub dead: usize,
}

impl RunReport {
    pub fn ran(&self) -> usize {
        self.succeeded + self.failed + self.dead
    }
}

/// The handlers and schedules of one instance, and the workers that run them.
pub struct Runner {
    queue: Queue,
    settings: Settings,
    /// This instance's name on the leases it holds.
    owner: String,
    handlers: HashMap<String, Handler>,
    schedules: Vec<Schedule>,
}

impl Runner {
    pub fn new(queue: Queue, settings: Settings) -> Runner {
        let owner = format!("{}-{:08x}", std::process::id(), rand::thread_rng().gen::<u32>());
        Runner { queue, settings, owner, handlers: HashMap::new(), schedules: Vec::new() }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs jobs of `kind` with `handler`. A kind without a handler is never claimed here.
    pub fn handle<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.handlers.insert(kind.to_string(), handler);
    }

    /// Enqueues a `kind` job with `payload` once every `interval` (see [`Schedule`]).
    pub fn every(&mut self, kind: &str, interval: Duration, payload: serde_json::Value) {
        self.schedules.push(Schedule {
            kind: kind.to_string(),
            interval_ms: (interval.as_millis() as i64).max(1000),
            payload,
            last_slot: Mutex::new(None),
        });
    }

    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Enqueues the job of each schedule's period containing `now`, unless it exists (on any
    /// instance). Answers how many were new.
    pub async fn schedule_due(&self, now: i64) -> Result<usize, MetaError> {
        let mut created = 0;
        for schedule in &self.schedules {
            let slot = now.div_euclid(schedule.interval_ms);
            if *schedule.last_slot.lock().expect("schedule lock") == Some(slot) {
                continue;
            }
            let job = NewJob {
                kind: schedule.kind.clone(),
                payload: schedule.payload.clone(),
                // The interval is part of the key: a changed interval starts a new series.
                dedupe_key: Some(format!("{}@{}/{slot}", schedule.kind, schedule.interval_ms)),
                run_at: slot * schedule.interval_ms,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            };
            if self.queue.enqueue_job(&job).await?.created {
                created += 1;
            }
            *schedule.last_slot.lock().expect("schedule lock") = Some(slot);
        }
        Ok(created)
    }

    /// Deletes finished jobs older than the retention period (a periodic job is kept until its
    /// period is over too, so it is not enqueued again).
    pub async fn prune(&self, now: i64) -> Result<u64, MetaError> {
        let retention = self.settings.retention.as_millis() as i64;
        let longest = self.schedules.iter().map(|s| s.interval_ms).max().unwrap_or(0);
        self.queue.store.prune_jobs(now - retention, now - retention.max(longest)).await
    }

    /// Schedules the periodic jobs due at `now`, then runs every job due at `now`, one after
    /// the other, until none is left, and returns. A job that fails is retried after a backoff,
    /// so it is not run again here. For tests and `stowage jobs run-due`.
    pub async fn run_due(&self, now: i64) -> Result<RunReport, MetaError> {
        self.schedule_due(now).await?;
        let kinds = self.kinds();
        let lease = self.settings.lease.as_millis() as i64;
        let mut report = RunReport::default();
        loop {
            let claimed = self.queue.store.claim_jobs(&kinds, &self.owner, now, lease, 1).await?;
            let Some(job) = claimed.into_iter().next() else { break };
            match self.run(job, now).await? {
                Some(JobState::Succeeded) => report.succeeded += 1,
                Some(JobState::Failed) => report.failed += 1,
                Some(_) => report.dead += 1,
                None => {}
            }
        }
        Ok(report)
    }

    /// Runs one claimed job to its outcome, renewing its lease meanwhile; answers the state
    /// recorded, `None` when the lease was lost (another instance has the job now).
    async fn run(&self, job: Job, now: i64) -> Result<Option<JobState>, MetaError> {
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            return Ok(None); // only registered kinds are claimed
        };
        let store = &self.queue.store;
        let ctx = JobContext {
            id: job.id,
            kind: job.kind.clone(),
            payload: job.payload.clone(),
            attempt: job.attempts,
            now,
        };
        let started = Instant::now();
        // Its own task: a panicking handler fails its job, not the worker.
        let mut task = tokio::spawn(handler(ctx));
        let renew_every = (self.settings.lease / 3).max(Duration::from_millis(100));
        let lease = self.settings.lease.as_millis() as i64;
        let outcome = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = tokio::time::sleep(renew_every) => {
                    let until = now + started.elapsed().as_millis() as i64 + lease;
                    match store.renew_job_lease(job.id, &self.owner, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job = job.id, kind = %job.kind,
                                "lost the lease on a running job; another instance runs it now");
                            task.abort();
                            return Ok(None);
                        }
                        Err(e) => tracing::warn!(job = job.id, error = %e, "renewing a job lease failed"),
                    }
                }
            }
        };
        let finished = now + started.elapsed().as_millis() as i64;
        let error = match outcome {
            Ok(Ok(())) => {
                let kept = store.complete_job(job.id, &self.owner, finished).await?;
                tracing::info!(job = job.id, kind = %job.kind, attempt = job.attempts,
                    elapsed_ms = started.elapsed().as_millis() as u64, "job succeeded");
                return Ok(kept.then_some(JobState::Succeeded));
            }
            Ok(Err(e)) => e,
            Err(joined) => JobError::Retry(format!("the handler panicked: {joined}")),
        };
        let retry_at = match &error {
            JobError::Retry(_) => {
                Some(finished + self.settings.retry_delay(job.attempts).as_millis() as i64)
            }
            JobError::Permanent(_) => None,
        };
        let state =
            store.fail_job(job.id, &self.owner, finished, &error.to_string(), retry_at).await?;
        match state {
            Some(JobState::Dead) => tracing::error!(job = job.id, kind = %job.kind,
                attempt = job.attempts, error = %error, "job failed for good"),
            _ => tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempts,
                error = %error, retry_at = ?retry_at, "job failed; it will be retried"),
        }
        Ok(state)
    }

    /// Starts `workers` workers and the scheduler with the queue's clock; they run until the
    /// returned handle is dropped or the process ends. A job cut off by the end of the process
    /// is taken over by another instance (or this one, restarted) when its lease runs out.
    pub fn start(self) -> Running {
        let runner = Arc::new(self);
        let mut tasks = Vec::new();
        for _ in 0..runner.settings.workers.max(1) {
            let runner = runner.clone();
            tasks.push(tokio::spawn(async move { runner.work().await }));
        }
        let scheduler = runner.clone();
        tasks.push(tokio::spawn(async move { scheduler.schedule().await }));
        Running { tasks }
    }

    async fn work(&self) {
        let kinds = self.kinds();
        let lease = self.settings.lease.as_millis() as i64;
        loop {
            let now = self.queue.now_ms();
            let claimed = self.queue.store.claim_jobs(&kinds, &self.owner, now, lease, 1).await;
            match claimed.map(|c| c.into_iter().next()) {
                Ok(Some(job)) => {
                    if let Err(e) = self.run(job, now).await {
                        tracing::warn!(error = %e, "recording a job's outcome failed");
                    }
                }
                Ok(None) => {
                    let _ =
                        tokio::time::timeout(self.settings.poll, self.queue.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed");
                    tokio::time::sleep(self.settings.poll).await;
                }
            }
        }
    }

    async fn schedule(&self) {
        let mut last_prune: Option<Instant> = None;
        loop {
            let now = self.queue.now_ms();
            if let Err(e) = self.schedule_due(now).await {
                tracing::warn!(error = %e, "scheduling periodic jobs failed");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                match self.prune(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "pruned finished jobs"),
                    Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
                }
                last_prune = Some(Instant::now());
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }
}

/// The running workers; dropping it stops them.
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
