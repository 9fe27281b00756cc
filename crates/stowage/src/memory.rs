//! Giving memory back after a burst. With glibc's malloc, RSS after 64 concurrent clients
//! pushed and pulled 8 MiB images stayed near its peak: request buffers of a MiB or so fell
//! under glibc's dynamic mmap threshold (raised each time such a buffer is freed) and were
//! carved from per-thread arenas, whose free pages glibc returns only from the top of each
//! heap. Two settings fix that (figures in bench/README.md, "Memory after a burst"):
//! - a fixed mmap threshold: buffers of 256 KiB and more are mapped on their own and unmapped
//!   when freed, whatever was freed before;
//! - `malloc_trim(0)` every few seconds, which hands the free pages inside every arena back.
//!
//! Other platforms and allocators: nothing to do.

use std::time::Duration;

/// How often free arena pages are handed back.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Allocations from this size on are mapped on their own (glibc's default, but fixed).
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Before any thread starts: a fixed mmap threshold.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Trims the arenas every [`TRIM_EVERY`] on the current runtime.
pub fn start_trimming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            // SAFETY: malloc_trim is thread-safe; it only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}
