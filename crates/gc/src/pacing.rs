//! How GC shares the database with writes. Reviews and storage deletions run in batches, each
//! in one transaction: large batches while nothing else writes (few round trips per item, so
//! a backlog drains fast), small batches with a pause after each while writes come in (a push
//! that has to wait for a GC transaction waits for a short one: on SQLite every write queues
//! for the one writer, on PostgreSQL they share the CPU), so GC never stops but pushes keep
//! their latency. "Writes come in" means this process began a foreground write
//! ([`meta::Store::write_tx`]) within [`QUIET_AFTER`].

use std::time::Duration;

/// Writes within this long make GC take small batches.
pub const QUIET_AFTER: Duration = Duration::from_millis(500);
/// The pause after a batch while writes come in.
pub const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Batch sizes and pauses of one GC worker (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Pacing {
    /// Where foreground writes are seen; `None`: always the quiet batch, no pause.
    activity: Option<meta::Store>,
    /// Items per batch while nothing else writes.
    pub batch: usize,
    /// Items per batch while writes come in.
    pub busy_batch: usize,
    /// Pause after a batch that found work while writes come in.
    pub busy_pause: Duration,
}

impl Pacing {
    /// Always `batch` items, never a pause (tests, `stowage gc run`).
    pub fn fixed(batch: usize) -> Pacing {
        Pacing {
            activity: None,
            batch: batch.max(1),
            busy_batch: batch.max(1),
            busy_pause: Duration::ZERO,
        }
    }

    /// `batch` items while `store` sees no foreground write, `busy_batch` and a
    /// [`BUSY_PAUSE`] after each batch while it does.
    pub fn giving_way(store: meta::Store, batch: usize, busy_batch: usize) -> Pacing {
        Pacing {
            activity: Some(store),
            batch: batch.max(1),
            busy_batch: busy_batch.max(1),
            busy_pause: BUSY_PAUSE,
        }
    }

    /// Whether writes come in now.
    pub fn busy(&self) -> bool {
        self.activity
            .as_ref()
            .and_then(|store| store.since_foreground_write())
            .is_some_and(|since| since < QUIET_AFTER)
    }

    /// Items to take in the next batch.
    pub fn batch(&self) -> usize {
        if self.busy() {
            self.busy_batch
        } else {
            self.batch
        }
    }

    /// The wait after a batch that found work.
    pub fn pause(&self) -> Duration {
        if self.busy() {
            self.busy_pause
        } else {
            Duration::ZERO
        }
    }
}
