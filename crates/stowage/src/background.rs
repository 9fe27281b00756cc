//! Wiring of the durable job queue: the one place that says which jobs this binary runs (the
//! REST API's deletes and cleanup policies, the upload purge, the GC leftovers sweep and full
//! passes, pull mirror syncs), used alike by `serve` (workers
//! in the background) and by `stowage jobs` (list the queue, or run what is due now).

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use jobs::{JobError, Queue, Runner};
use meta::jobs::Job;

use crate::config::{parse_duration, Config};

/// Purges upload sessions idle longer than `storage.maintenance.uploadpurging.age`.
pub const UPLOAD_PURGE: &str = "upload_purge";
/// Removes what the dependency proxies cached and nobody pulled for their group's
/// `ttl_policy` (see `WriteService::cleanup_dependency_proxy_cache`).
pub const DEPENDENCY_PROXY_CLEANUP: &str = "dependency_proxy_cleanup";
const DEPENDENCY_PROXY_CLEANUP_INTERVAL: Duration = Duration::from_secs(24 * 3600);

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first: id, kind, state, attempts, run_at, last_error.
    List {
        /// queued, running, succeeded, failed (will be retried) or dead.
        #[arg(long)]
        state: Option<String>,
        /// e.g. repository_delete, bulk_tag_delete, cleanup_policies, upload_purge,
        /// dependency_proxy_cleanup, gc_leftovers, gc_full_pass, registry_mirrors.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print the jobs as JSON (with payloads) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run every job that is due now (or on --at), including this period's periodic jobs, and
    /// exit. On PostgreSQL it runs beside serving instances; on SQLite, stop `serve` first (it
    /// runs due jobs itself).
    RunDue {
        /// Run as of this day (YYYY-MM-DD, 00:00 UTC) instead of now, e.g. to see what cleanup
        /// policies will do then. Jobs it runs act as of that day.
        #[arg(long)]
        at: Option<String>,
    },
}

/// A runner with every job this binary knows, on `registry`'s database.
pub fn runner(
    config: &Config,
    registry: &registry::Registry,
    queue: Queue,
) -> anyhow::Result<Runner> {
    let mut runner = Runner::new(queue, config.jobs.settings()?);
    api::background::register(
        &mut runner,
        registry.service.clone(),
        api::cleanup::CleanupBudget::default(),
    );
    crate::notifications::register(&mut runner, config, &registry.store)?;
    crate::gc_cli::register_jobs(&mut runner, config, registry)?;
    let mirrors = registry.clone();
    runner.handle(crate::import_cli::REGISTRY_MIRRORS, move |ctx| {
        let registry = mirrors.clone();
        async move {
            crate::import_cli::sync_due_mirrors(&registry, ctx.now).await.map_err(JobError::retry)
        }
    });
    runner.every(
        crate::import_cli::REGISTRY_MIRRORS,
        crate::import_cli::MIRRORS_EVERY,
        serde_json::json!({}),
    );
    let service = registry.service.clone();
    runner.handle(DEPENDENCY_PROXY_CLEANUP, move |ctx| {
        let service = service.clone();
        async move {
            let context = service::RequestContext::system("dependency-proxy-cleanup");
            let removed = service
                .cleanup_dependency_proxy_cache(ctx.now, &context)
                .await
                .map_err(JobError::retry)?;
            if removed != Default::default() {
                tracing::info!(
                    references = removed.references,
                    repositories = removed.repositories,
                    "the dependency proxy cache cleanup removed unused images"
                );
            }
            Ok(())
        }
    });
    runner.every(
        DEPENDENCY_PROXY_CLEANUP,
        DEPENDENCY_PROXY_CLEANUP_INTERVAL,
        serde_json::json!({}),
    );
    let purging = config.storage.maintenance.uploadpurging.clone();
    let age = parse_duration(&purging.age)?;
    let registry = registry.clone();
    runner.handle(UPLOAD_PURGE, move |_| {
        let registry = registry.clone();
        async move {
            // A job left from when purging was enabled does nothing once it is disabled.
            if !purging.enabled {
                return Ok(());
            }
            let removed = registry.purge_idle_uploads(age).await.map_err(JobError::retry)?;
            if removed > 0 {
                tracing::info!(removed, "purged idle upload sessions");
            }
            Ok(())
        }
    });
    if config.storage.maintenance.uploadpurging.enabled {
        let interval = parse_duration(&config.storage.maintenance.uploadpurging.interval)?
            .max(Duration::from_secs(1));
        runner.every(UPLOAD_PURGE, interval, serde_json::json!({}));
    }
    Ok(runner)
}

/// The queue on the real clock.
pub fn queue(store: &meta::Store) -> Queue {
    Queue::new(store.clone(), Arc::new(jobs::SystemClock))
}

pub async fn run(command: JobsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { state, kind, limit, json } => {
            let store = config.connect_store(&config.database_url()?).await?;
            let filter =
                api::background::job_filter(state.as_deref(), kind.as_deref(), Some(limit))?;
            let jobs = store.list_jobs(&filter).await?;
            if json {
                let views: Vec<_> = jobs.iter().map(api::background::JobView::from).collect();
                println!("{}", api::views::pretty(&views));
            } else {
                print!("{}", table(&jobs));
            }
            Ok(())
        }
        JobsCommand::RunDue { at } => {
            // SQLite mode is one process: a serving process caches what it wrote, and jobs
            // change registry state behind its back. So this takes serve's lock.
            let _sqlite_lock = crate::sqlite_lock::for_command(
                &config.database_url()?,
                "a running `stowage serve` runs due jobs itself; stop it to run them from here",
            )?;
            let registry = crate::open_registry(config).await?;
            let now = match at {
                Some(day) => api::time::parse_expiry_date(&day)?,
                None => meta::now_millis(),
            };
            let runner = runner(config, &registry, queue(&registry.store))?;
            let report = runner.run_due(now).await?;
            println!(
                "ran {} jobs due at {}: {} succeeded, {} failed (retried later), {} dead",
                report.ran(),
                meta::rfc3339(now),
                report.succeeded,
                report.failed,
                report.dead
            );
            Ok(())
        }
    }
}

/// Jobs as an aligned text table.
fn table(jobs: &[Job]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "KIND".into(),
        "STATE".into(),
        "ATTEMPTS".into(),
        "RUN_AT".into(),
        "LAST_ERROR".into(),
    ]];
    for j in jobs {
        let error = j.last_error.as_deref().unwrap_or("").replace('\n', " ");
        let error: String = if error.chars().count() > 80 {
            error.chars().take(79).chain(std::iter::once('…')).collect()
        } else {
            error
        };
        rows.push([
            j.id.to_string(),
            j.kind.clone(),
            j.state.to_string(),
            format!("{}/{}", j.attempts, j.max_attempts),
            meta::rfc3339(j.run_at),
            error,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
