//! The job runtime on a real database (SQLite and PostgreSQL): handlers run by kind, failures
//! retried with backoff until dead, periodic jobs once per period across instances, leases
//! renewed while a job runs, and pruning — all driven by a manual clock and `run_due`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs::{JobError, ManualClock, Queue, RunReport, Runner, Settings};
use meta::jobs::{JobFilter, JobState};
use meta::testing::TestDb;
use meta::Backend;
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

fn runner(store: &meta::Store, clock: &ManualClock, settings: Settings) -> Runner {
    Runner::new(Queue::new(store.clone(), Arc::new(clock.clone())), settings)
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

async fn handlers_run_what_is_due(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let clock = ManualClock::at(T0);
    let mut runner = runner(&db.store, &clock, Settings::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    runner.handle("echo", move |ctx| {
        let log = log.clone();
        async move {
            let p: serde_json::Value = ctx.payload()?;
            log.lock().unwrap().push((p["n"].as_i64().unwrap(), ctx.now));
            Ok(())
        }
    });
    let queue = runner.queue().clone();
    for n in 1..=3 {
        queue.enqueue("echo", json!({"n": n})).await.unwrap();
    }
    // A kind nobody here handles stays queued.
    queue.enqueue("unknown", json!({})).await.unwrap();
    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(report, RunReport { succeeded: 3, failed: 0, dead: 0 });
    assert_eq!(*seen.lock().unwrap(), vec![(1, T0), (2, T0), (3, T0)]);
    assert_eq!(runner.run_due(T0).await.unwrap().ran(), 0, "each job runs once");
    let queued = JobFilter { state: Some(JobState::Queued), ..Default::default() };
    let left = db.store.list_jobs(&queued).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, "unknown");
    // An invalid payload fails for good at once.
    runner.handle("typed", |ctx| async move {
        let _: Vec<String> = ctx.payload()?;
        Ok(())
    });
    let id = queue.enqueue("typed", json!({"not": "a list"})).await.unwrap();
    assert_eq!(runner.run_due(T0).await.unwrap().dead, 1);
    let job = db.store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("payload is invalid"));
    db.drop_database().await;
}

async fn retries_back_off_then_give_up(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let clock = ManualClock::at(T0);
    let settings = Settings {
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(30),
        ..Settings::default()
    };
    let mut runner = runner(&db.store, &clock, settings);
    let calls = counter();
    let c = calls.clone();
    runner.handle("flaky", move |ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt < 3 {
                Err(JobError::retry(format!("storage down (attempt {})", ctx.attempt)))
            } else {
                Ok(())
            }
        }
    });
    let id = runner.queue().enqueue("flaky", json!({})).await.unwrap();
    let mut now = T0;
    for (attempt, delay) in [(1, 10_000), (2, 20_000)] {
        assert_eq!(runner.run_due(now).await.unwrap().failed, 1, "attempt {attempt}");
        let job = db.store.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.last_error.as_deref(),
            Some(format!("storage down (attempt {attempt})").as_str())
        );
        // Exponential backoff with up to 25 % jitter on top.
        let wait = job.run_at - now;
        assert!((delay..=delay + delay / 4 + 50).contains(&wait), "attempt {attempt}: {wait} ms");
        assert_eq!(runner.run_due(job.run_at - 1).await.unwrap().ran(), 0, "not before run_at");
        now = job.run_at;
    }
    assert_eq!(runner.run_due(now).await.unwrap().succeeded, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let job = db.store.job(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 3));

    // The cap holds, and after max_attempts the job is dead.
    let s = Settings {
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(30),
        ..Settings::default()
    };
    assert!(s.retry_delay(10) <= Duration::from_millis(37_500));
    assert!(s.retry_delay(10) >= Duration::from_secs(30));
    runner.handle("broken", |_| async { Err(JobError::retry("always")) });
    let id = runner.queue().enqueue("broken", json!({})).await.unwrap();
    let mut now = T0;
    for _ in 0..jobs::DEFAULT_MAX_ATTEMPTS {
        runner.run_due(now).await.unwrap();
        now += 3_600_000;
    }
    let job = db.store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, jobs::DEFAULT_MAX_ATTEMPTS);
    assert_eq!(runner.run_due(now).await.unwrap().ran(), 0);
    // A panicking handler fails its job like an error does.
    runner.handle("panics", |_| async { panic!("handler bug") });
    let id = runner.queue().enqueue("panics", json!({})).await.unwrap();
    assert_eq!(runner.run_due(now).await.unwrap().failed, 1);
    let job = db.store.job(id).await.unwrap().unwrap();
    assert!(job.last_error.unwrap().contains("panicked"), "recorded");
    db.drop_database().await;
}

/// Two instances (two runners on one database) run a periodic job once per period, whichever
/// gets there first, even when both look at the same moment.
async fn periodic_jobs_run_once_per_period(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let clock = ManualClock::at(T0);
    let runs = counter();
    let periods = Arc::new(std::sync::Mutex::new(Vec::new()));
    let make = |name: &str| {
        let mut r = runner(&db.store, &clock, Settings::default());
        let (runs, periods, name) = (runs.clone(), periods.clone(), name.to_string());
        r.handle("tick", move |ctx| {
            let (runs, periods, name) = (runs.clone(), periods.clone(), name.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                periods.lock().unwrap().push((ctx.now / 60_000, name));
                Ok(())
            }
        });
        r.every("tick", Duration::from_secs(60), json!({}));
        r
    };
    let (a, b) = (make("a"), make("b"));
    let start = T0 - T0 % 60_000;
    let mut expected = 0;
    for step in 0..12 {
        // Several looks per period, at different moments, by both instances at once.
        let now = start + step * 20_000 + 7;
        let (ra, rb) = tokio::join!(a.run_due(now), b.run_due(now));
        ra.unwrap();
        rb.unwrap();
        if step % 3 == 0 {
            expected += 1;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            expected,
            "step {step}: {:?}",
            periods.lock().unwrap()
        );
    }
    assert_eq!(expected, 4);
    // Pruning keeps a period's job while its period lasts, so it is not run again.
    let now = start + 3 * 60_000 + 30_000;
    let mut fresh = make("fresh");
    assert_eq!(fresh.prune(now).await.unwrap(), 0, "retention is 7 days");
    fresh =
        runner(&db.store, &clock, Settings { retention: Duration::ZERO, ..Settings::default() });
    fresh.every("tick", Duration::from_secs(60), json!({}));
    assert_eq!(fresh.prune(now).await.unwrap(), 3, "the three past periods, not the current one");
    let (runs_c, c) = (runs.clone(), {
        let mut c = make("c");
        c.handle("noop", |_| async { Ok(()) });
        c
    });
    assert_eq!(c.run_due(now).await.unwrap().ran(), 0, "the current period ran already");
    assert_eq!(runs_c.load(Ordering::SeqCst), 4);
    db.drop_database().await;
}

/// A job that runs longer than its lease keeps it by renewal: no other instance takes it over.
async fn running_jobs_keep_their_lease(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    // The real clock here: renewal happens while the handler runs.
    let queue = Queue::new(db.store.clone(), Arc::new(jobs::SystemClock));
    let settings = Settings { lease: Duration::from_millis(600), ..Settings::default() };
    let mut slow = Runner::new(queue.clone(), settings.clone());
    slow.handle("slow", |_| async {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        Ok(())
    });
    let mut other = Runner::new(queue.clone(), settings);
    let stolen = counter();
    let s = stolen.clone();
    other.handle("slow", move |_| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let id = queue.enqueue("slow", json!({})).await.unwrap();
    let slow_run = tokio::spawn(async move { slow.run_due(meta::now_millis()).await });
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        other.run_due(meta::now_millis()).await.unwrap();
    }
    assert_eq!(slow_run.await.unwrap().unwrap().succeeded, 1);
    assert_eq!(stolen.load(Ordering::SeqCst), 0, "the lease was renewed");
    assert_eq!(db.store.job(id).await.unwrap().unwrap().attempts, 1);
    db.drop_database().await;
}

trait Now {
    fn now(&self) -> i64;
}

impl Now for ManualClock {
    fn now(&self) -> i64 {
        jobs::Clock::now_ms(self)
    }
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(meta::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(meta::Backend::Postgres).await })*
        }
    };
}
on_both_backends!(
    handlers_run_what_is_due,
    retries_back_off_then_give_up,
    periodic_jobs_run_once_per_period,
    running_jobs_keep_their_lease
);
