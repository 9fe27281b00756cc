//! The worker loop, driven step by step with a scripted reviewer and a manual clock: batches
//! follow each other at once, an idle worker waits its interval, failures back off
//! exponentially up to gc.maxbackoff, a pass longer than gc.transactiontimeout fails, the
//! disabled flags start no worker, and shutdown stops the loop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{reviewed, ScriptedReviewer};
use gc::worker::{backoff, BackgroundParts, REVIEW_BATCH};
use gc::{GcSettings, ManualClock, Pacing, Queue, ReviewPass, Reviewer, StorageDeleter, Worker};

const INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn worker(reviewer: &Arc<ScriptedReviewer>, queue: Queue, clock: &Arc<ManualClock>) -> Worker {
    let reviewer: Arc<dyn Reviewer> = reviewer.clone();
    let pass = ReviewPass { reviewer, queue, pacing: Pacing::fixed(7) };
    Worker::new(Arc::new(pass), clock.clone(), INTERVAL, MAX_BACKOFF, Some(Duration::from_secs(10)))
}

#[tokio::test]
async fn batches_follow_at_once_and_an_idle_worker_waits_its_interval() {
    let reviewer = Arc::new(ScriptedReviewer::default());
    reviewer
        .then(Queue::Blobs, Ok(reviewed(7)))
        .then(Queue::Blobs, Ok(reviewed(2)))
        .then(Queue::Blobs, Ok(reviewed(0)));
    let clock = Arc::new(ManualClock::new(1_000));
    let mut w = worker(&reviewer, Queue::Blobs, &clock);
    assert_eq!(w.step().await, Duration::ZERO, "a full batch: more may be due");
    clock.advance(Duration::from_millis(10));
    assert_eq!(w.step().await, Duration::ZERO, "found some: look again at once");
    assert_eq!(w.step().await, INTERVAL, "nothing due: wait");
    assert_eq!(w.step().await, INTERVAL, "still nothing");
    let calls = reviewer.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0], (Queue::Blobs, 1_000, 7), "the clock's now and the batch size");
    assert_eq!(calls[1].1, 1_010);
    assert!(calls.iter().all(|c| c.0 == Queue::Blobs), "only its own queue");
}

#[tokio::test]
async fn failures_back_off_exponentially_up_to_maxbackoff_and_success_resets() {
    let reviewer = Arc::new(ScriptedReviewer::default());
    for _ in 0..5 {
        reviewer.then(Queue::Manifests, Err("database is down"));
    }
    reviewer.then(Queue::Manifests, Ok(reviewed(1))).then(Queue::Manifests, Err("again"));
    let clock = Arc::new(ManualClock::new(0));
    let mut w = worker(&reviewer, Queue::Manifests, &clock);
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(w.step().await);
    }
    let secs = |s| Duration::from_secs(s);
    assert_eq!(waits, [secs(5), secs(10), secs(20), secs(30), secs(30)]);
    assert_eq!(w.failures(), 5);
    assert_eq!(w.step().await, Duration::ZERO, "recovered and found work");
    assert_eq!(w.failures(), 0);
    assert_eq!(w.step().await, secs(5), "the backoff starts over");
}

#[test]
fn backoff_is_bounded() {
    let max = Duration::from_secs(86_400);
    assert_eq!(backoff(Duration::from_millis(10), 1, max), Duration::from_secs(1), "at least 1 s");
    assert_eq!(backoff(INTERVAL, 200, max), max, "no overflow");
    assert_eq!(backoff(INTERVAL, 3, max), Duration::from_secs(20));
}

/// A reviewer that takes longer than the transaction timeout.
struct Stuck;

#[async_trait::async_trait]
impl Reviewer for Stuck {
    async fn review_blobs(&self, _: i64, _: usize) -> Result<gc::ReviewReport, gc::ReviewError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(reviewed(1))
    }

    async fn review_manifests(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<gc::ReviewReport, gc::ReviewError> {
        self.review_blobs(now, limit).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_pass_longer_than_the_transaction_timeout_fails() {
    let pass =
        ReviewPass { reviewer: Arc::new(Stuck), queue: Queue::Blobs, pacing: Pacing::fixed(1) };
    let clock = Arc::new(ManualClock::new(0));
    let timeout = Some(Duration::from_secs(10));
    let mut w = Worker::new(Arc::new(pass), clock, INTERVAL, MAX_BACKOFF, timeout);
    let started = tokio::time::Instant::now();
    assert_eq!(w.step().await, INTERVAL, "the first failure's backoff");
    assert_eq!(started.elapsed(), Duration::from_secs(10), "abandoned at the timeout");
    assert_eq!(w.failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn run_repeats_on_its_interval_and_stops_on_shutdown() {
    let reviewer = Arc::new(ScriptedReviewer::default());
    reviewer.then(Queue::Blobs, Ok(reviewed(7))).then(Queue::Blobs, Ok(reviewed(7)));
    let clock = Arc::new(ManualClock::new(0));
    let w = worker(&reviewer, Queue::Blobs, &clock);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(w.run(shutdown.clone()));
    // Paused time jumps from timer to timer: two full batches at t=0, an empty one at t=0,
    // then one every 5 s: t=5, t=10.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(reviewer.calls().len(), 5);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), handle).await.expect("stops").unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(reviewer.calls().len(), 5, "no pass after shutdown");
}

#[tokio::test]
async fn the_disabled_flags_decide_which_workers_start() {
    let db = meta::testing::TestDb::new(meta::Backend::Sqlite, None).await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = blobstore::BlobStore::filesystem(dir.path()).unwrap();
    let started = |settings: GcSettings, with_reviewer: bool| {
        let reviewer: Option<Arc<dyn Reviewer>> =
            with_reviewer.then(|| Arc::new(ScriptedReviewer::default()) as Arc<dyn Reviewer>);
        let parts = BackgroundParts {
            deleter: StorageDeleter::new(db.store.clone(), blobs.clone(), MAX_BACKOFF),
            reviewer,
            activity: Some(db.store.clone()),
        };
        async move {
            let background = gc::spawn_background(&settings, parts, Arc::new(ManualClock::new(0)));
            let mut names = background.workers();
            names.sort();
            background.stop(Duration::from_secs(5)).await;
            names
        }
    };
    let defaults = GcSettings::default();
    assert_eq!(started(defaults.clone(), true).await, ["blobs", "manifests", "storage"]);
    assert_eq!(started(defaults.clone(), false).await, ["storage"], "no review without a reviewer");
    let mut off = defaults.clone();
    off.disabled = true;
    assert!(started(off, true).await.is_empty(), "gc.disabled");
    let mut no_blobs = defaults.clone();
    no_blobs.blobs.disabled = true;
    assert_eq!(started(no_blobs, true).await, ["manifests"], "gc.blobs.disabled");
    let mut no_manifests = defaults;
    no_manifests.manifests.disabled = true;
    assert_eq!(started(no_manifests, true).await, ["blobs", "storage"], "gc.manifests.disabled");
    assert_eq!(REVIEW_BATCH, 1000);
    db.drop_database().await;
}
