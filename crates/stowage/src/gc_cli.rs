//! `stowage gc status` and `stowage gc run`, and the wiring of the online-GC workers into
//! `stowage serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::config::{parse_duration, Config};

#[derive(Subcommand)]
pub enum GcCommand {
    /// Queue lengths, the oldest due item, what was removed in the last hour and day,
    /// failures and pending storage deletions.
    Status {
        /// Print the figures as JSON (the shape of GET /api/v4/admin/registry/gc).
        #[arg(long)]
        json: bool,
    },
    /// One full pass now: queue every unreferenced manifest and blob for review, review them
    /// until nothing is left, delete their bytes, sweep leftovers; print what was removed.
    Run {
        /// Print what would be removed (cascades included) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave alone what was pushed (or linked) more recently than this, e.g. 1h or 0s: a
        /// push in progress uploads layers before its manifest.
        #[arg(long, default_value = "1h")]
        min_age: String,
    },
}

/// Why `stowage gc run` refuses on SQLite while `serve` runs, and what to do instead.
pub const RUN_BESIDE_SERVE: &str = "a running `stowage serve` collects garbage itself on \
    SQLite; ask it for a full pass with POST /api/v4/admin/registry/gc (an instance admin's \
    token), or stop it to run the pass from here";

impl GcCommand {
    /// Whether the command deletes anything (`gc run` without `--dry-run`).
    pub fn changes_state(&self) -> bool {
        matches!(self, GcCommand::Run { dry_run: false, .. })
    }
}

/// Starts this instance's GC workers for `stowage serve` (see `gc::spawn_background`): the
/// review workers and the storage deleter. The leftovers sweep and full passes are jobs
/// ([`register_jobs`]).
pub fn start_background(
    config: &Config,
    registry: &registry::Registry,
) -> anyhow::Result<gc::Background> {
    let settings = config.gc.settings()?;
    let parts = gc::BackgroundParts {
        deleter: gc::StorageDeleter::new(
            registry.store.clone(),
            registry.blobs.clone(),
            settings.max_backoff,
        ),
        // The write service reviews: the one place that deletes registry state.
        reviewer: Some(Arc::new(registry.service.clone())),
        activity: Some(registry.store.clone()),
    };
    let background = gc::spawn_background(&settings, parts, Arc::new(gc::SystemClock));
    if settings.disabled {
        tracing::info!("online garbage collection is off (gc.disabled)");
    } else {
        tracing::info!(workers = ?background.workers(), "online garbage collection running");
    }
    Ok(background)
}

/// Registers the GC jobs on `runner` (`serve` and `stowage jobs run-due`): the leftovers sweep
/// every `storage.maintenance.uploadpurging.interval` unless `gc.disabled`, and full passes.
pub fn register_jobs(
    runner: &mut jobs::Runner,
    config: &Config,
    registry: &registry::Registry,
) -> anyhow::Result<()> {
    let settings = config.gc.settings()?;
    let sweep_every = parse_duration(&config.storage.maintenance.uploadpurging.interval)?
        .max(Duration::from_secs(1));
    let parts = gc::GcJobs {
        store: registry.store.clone(),
        blobs: registry.blobs.clone(),
        reviewer: Arc::new(registry.service.clone()),
        max_backoff: settings.max_backoff,
        leftovers_age: config.leftovers_age()?,
    };
    gc::jobs::register(runner, parts, (!settings.disabled).then_some(sweep_every));
    Ok(())
}

pub async fn run(
    cmd: GcCommand,
    config: &Config,
    registry: &registry::Registry,
) -> anyhow::Result<()> {
    match cmd {
        GcCommand::Status { json } => {
            let status = registry.store.gc_status(meta::now_millis()).await?;
            if json {
                let view = api::gc_api::GcStatusView::new(&status);
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", status_text(&status));
            }
            Ok(())
        }
        GcCommand::Run { dry_run, min_age } => {
            let options = gc::FullPassOptions {
                min_age: parse_duration(&min_age).context("--min-age")?,
                max_backoff: config.gc.settings()?.max_backoff,
                ..Default::default()
            };
            if dry_run {
                let report =
                    gc::dry_run(&registry.store, &registry.blobs, &gc::SystemClock, &options)
                        .await?;
                print!("{}", dry_run_text(&report));
                return Ok(());
            }
            let mut print_progress = |p: gc::Progress<'_>| println!("{}", progress_text(&p));
            let summary = gc::full_pass(
                &registry.store,
                &registry.blobs,
                &registry.service,
                &gc::SystemClock,
                &options,
                &mut print_progress,
            )
            .await?;
            print!("{}", summary_text(&summary));
            Ok(())
        }
    }
}

/// `1234567 bytes (1.2 MiB)`.
fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({value:.1} {})", units[unit])
    }
}

fn status_text(s: &meta::GcStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "online garbage collection at {}", meta::rfc3339(s.now));
    let _ = writeln!(out, "review queues:");
    for (name, q) in [("manifests", &s.manifests), ("blobs", &s.blobs)] {
        let _ = write!(out, "  {name}: {} queued, {} due", q.queued, q.due);
        match &q.oldest_due {
            Some(item) => {
                let what = match &item.repository {
                    Some(repository) => format!("{repository}@{}", item.digest),
                    None => item.digest.clone(),
                };
                let overdue = (s.now - item.review_after).max(0) / 1000;
                let _ = writeln!(out, "; oldest due: {what} ({}, due {overdue} s ago)", item.event);
            }
            None => out.push('\n'),
        }
    }
    let st = &s.storage;
    let _ = write!(
        out,
        "storage deletions: {} pending, {}; {} due; {} failing",
        st.pending,
        bytes(st.pending_bytes),
        st.due,
        st.failing
    );
    if let Some(at) = st.oldest_created_at {
        let _ = write!(out, "; oldest queued {}", meta::rfc3339(at));
    }
    if let Some(error) = &st.last_error {
        let _ = write!(out, "; last error: {error}");
    }
    out.push('\n');
    for (window, a) in [("hour", &s.last_hour), ("day", &s.last_day)] {
        let _ = writeln!(
            out,
            "removed in the last {window}: {} manifests, {} blobs ({}), {} storage objects ({}), \
             {} leftovers ({}); {} failures",
            a.manifests_removed,
            a.blobs_removed,
            bytes(a.blob_bytes_removed),
            a.storage_objects_removed,
            bytes(a.storage_bytes_removed),
            a.leftovers_removed,
            bytes(a.leftover_bytes_removed),
            a.failures
        );
    }
    out
}

fn dry_run_text(r: &gc::DryRunReport) -> String {
    use std::fmt::Write;
    let mut out = String::from("dry run: nothing is removed\n");
    for m in &r.dangling.manifests {
        let _ = writeln!(
            out,
            "would remove manifest {}@{} ({})",
            m.repository,
            m.digest,
            bytes(m.size)
        );
    }
    for b in &r.dangling.blobs {
        let _ = writeln!(out, "would remove blob {} ({})", b.digest, bytes(b.size));
    }
    for d in &r.pending_storage {
        let _ = writeln!(
            out,
            "would delete the bytes of {} ({}, {} failed attempts so far)",
            d.digest,
            bytes(d.size),
            d.attempts
        );
    }
    for l in &r.leftovers {
        let _ = writeln!(
            out,
            "would remove leftover {} ({}, {})",
            l.key,
            bytes(l.size as i64),
            l.kind.reason()
        );
    }
    let blob_bytes: i64 = r.dangling.blobs.iter().map(|b| b.size).sum();
    let pending_bytes: i64 = r.pending_storage.iter().map(|d| d.size).sum();
    let leftover_bytes: i64 = r.leftovers.iter().map(|l| l.size as i64).sum();
    let _ = writeln!(
        out,
        "summary: would remove {} manifests, {} blobs ({}), {} pending storage deletions ({}), \
         {} leftovers ({})",
        r.dangling.manifests.len(),
        r.dangling.blobs.len(),
        bytes(blob_bytes),
        r.pending_storage.len(),
        bytes(pending_bytes),
        r.leftovers.len(),
        bytes(leftover_bytes)
    );
    out
}

fn progress_text(p: &gc::Progress<'_>) -> String {
    match p {
        gc::Progress::Marked { round, manifests, blobs } => format!(
            "round {round}: queued {manifests} unreferenced manifests and {blobs} blobs for review"
        ),
        gc::Progress::Reviewed { queue, report } => format!(
            "reviewed {} {}: removed {}, kept {}",
            report.reviewed,
            queue.name(),
            report.deleted.len(),
            report.kept
        ),
        gc::Progress::Storage(r) => format!(
            "storage: deleted {} objects ({}), {} failed (retried later)",
            r.deleted,
            bytes(r.deleted_bytes),
            r.failed
        ),
        gc::Progress::Leftovers(r) => format!(
            "leftovers: removed {} ({}), {} failed; queued {} blob objects without a record \
             ({}) for the storage deleter",
            r.removed,
            bytes(r.removed_bytes as i64),
            r.failed,
            r.queued,
            bytes(r.queued_bytes as i64)
        ),
    }
}

fn summary_text(s: &gc::FullPassSummary) -> String {
    format!(
        "summary: removed {} manifests, {} blobs ({}), {} storage objects ({}), {} leftovers \
         ({}) in {} rounds; {} storage deletions failed and will be retried\n",
        s.manifests_removed,
        s.blobs_removed,
        bytes(s.blob_bytes_removed),
        s.storage.deleted,
        bytes(s.storage.deleted_bytes),
        s.leftovers.removed,
        bytes(s.leftovers.removed_bytes as i64),
        s.rounds,
        s.storage.failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(1023), "1023 bytes");
        assert_eq!(bytes(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(bytes(5 * 1024 * 1024), "5242880 bytes (5.0 MiB)");
    }
}
