//! The `gc.*` settings, parsed (the binary reads them from its configuration).

use std::time::Duration;

/// GitLab's online-GC settings, with its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcSettings {
    /// `gc.disabled`: no worker runs at all.
    pub disabled: bool,
    /// `gc.reviewafter`: how long after the event that queued it an item is reviewed (the
    /// write service applies it when it queues).
    pub review_after: Duration,
    /// `gc.maxbackoff`: the longest wait after failures (workers and storage retries).
    pub max_backoff: Duration,
    /// `gc.transactiontimeout`: the longest one pass (one batch, one transaction) may take.
    pub transaction_timeout: Duration,
    /// `gc.blobs.*`: the blob review worker and the storage deleter.
    pub blobs: WorkerSettings,
    /// `gc.manifests.*`: the manifest review worker.
    pub manifests: WorkerSettings,
}

/// One worker's `disabled` and `interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    pub disabled: bool,
    /// How long the worker waits when it found nothing due.
    pub interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings { disabled: false, interval: Duration::from_secs(5) }
    }
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            disabled: false,
            review_after: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(24 * 3600),
            transaction_timeout: Duration::from_secs(10),
            blobs: WorkerSettings::default(),
            manifests: WorkerSettings::default(),
        }
    }
}

impl GcSettings {
    pub fn blobs_enabled(&self) -> bool {
        !self.disabled && !self.blobs.disabled
    }

    pub fn manifests_enabled(&self) -> bool {
        !self.disabled && !self.manifests.disabled
    }
}
