//! `stowage import`: copies repositories from another registry into a group or project of
//! this one, on the configured database and storage (like `stowage admin`), beside a running
//! server. The copying itself is `proxy::import`; this is its command line: arguments,
//! progress on stderr, the summary on stdout, and the exit code.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use proxy::import::{self, Copier, CopyCounters, CopyLimits, RepositoryCopy, TagOutcome};
use proxy::{Upstream, UpstreamSettings};

use crate::config::Config;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The registry to copy from, e.g. https://registry.example.com (http:// for one on a
    /// private network).
    #[arg(long, value_name = "URL")]
    from: String,
    /// User name at that registry (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the password (or token) for --username from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// A repository to copy: a name (team/svc) or a pattern where * matches anything and ?
    /// one character (team/*). Repeat it for several. Default: every repository of the
    /// registry's catalog.
    #[arg(long = "repository", value_name = "PATTERN")]
    repositories: Vec<String>,
    /// The group or project to copy into: team/svc imported into acme/app becomes
    /// acme/app/team/svc.
    #[arg(long, value_name = "PATH")]
    into: String,
    /// List what would be copied, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Join the levels of a name beyond the third below its project with '-'
    /// (a/b/c/d/e becomes a/b/c-d-e) instead of skipping it.
    #[arg(long)]
    flatten: bool,
    /// How many tags are copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// An upstream repository's tags (each one, or why it cannot be a tag here), or why they
/// could not be listed.
type TagListing = Result<Vec<Result<oci::Tag, String>>, String>;

/// Where the import stands, for the progress lines.
struct Progress {
    started: Instant,
    repositories: usize,
    tags_total: usize,
    tags_done: AtomicU64,
    counters: Arc<CopyCounters>,
}

impl Progress {
    fn line(&self) -> String {
        let done = self.tags_done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let bytes = CopyCounters::get(&self.counters.bytes);
        let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
        let eta = if done == 0 {
            "?".to_string()
        } else {
            let left = self.tags_total as u64 - done.min(self.tags_total as u64);
            human_duration(elapsed.mul_f64(left as f64 / done as f64))
        };
        format!(
            "progress: {} repositories, tags {done}/{}, {} downloaded ({}/s), {} elapsed, ETA {eta}",
            self.repositories,
            self.tags_total,
            human_bytes(bytes),
            human_bytes(rate as u64),
            human_duration(elapsed),
        )
    }
}

/// The limits a copy keeps: those of a push to this registry.
pub fn copy_limits(registry: &registry::Registry) -> CopyLimits {
    CopyLimits {
        max_manifest_bytes: registry.limits.max_manifest_bytes,
        max_blob_bytes: registry.limits.max_blob_bytes,
        index_validation: registry.limits.index_validation.clone(),
    }
}

/// Syncs the pull mirrors due at `now` (the periodic job [`REGISTRY_MIRRORS`]), one after
/// another, recording each run; the next run of each is `interval` after `now`.
pub async fn sync_due_mirrors(registry: &registry::Registry, now: i64) -> anyhow::Result<()> {
    for mirror in registry.store.due_registry_mirrors(now, MIRRORS_PER_PASS).await? {
        let run =
            import::sync_mirror(registry.service.clone(), copy_limits(registry), &mirror).await;
        tracing::info!(
            mirror = mirror.id, upstream = %mirror.upstream, repository = %mirror.destination,
            added = run.tags_added, moved = run.tags_moved, unchanged = run.tags_unchanged,
            failed = run.tags_failed, bytes = run.bytes, error = ?run.error,
            "pull mirror synced"
        );
        registry.store.record_mirror_run(&run, now + mirror.interval_ms).await?;
    }
    Ok(())
}

/// The periodic job that syncs due pull mirrors.
pub const REGISTRY_MIRRORS: &str = "registry_mirrors";
/// How often due mirrors are looked for.
pub const MIRRORS_EVERY: Duration = Duration::from_secs(60);
/// Mirrors synced per pass at most; the rest wait for the next pass.
const MIRRORS_PER_PASS: i64 = 20;

pub async fn run(args: ImportArgs, config: &Config) -> anyhow::Result<()> {
    let url: url::Url = args
        .from
        .parse()
        .ok()
        .filter(|u: &url::Url| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .with_context(|| {
            format!(
                "--from {:?} is no registry URL: give one like https://registry.example.com",
                args.from
            )
        })?;
    let password = if args.password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("cannot read the password from stdin")?;
        Some(password.trim_end_matches(['\r', '\n']).to_string())
    } else {
        None
    };
    // SQLite mode is one process: a `serve` caches the tags it read, so a tag moved by this
    // process would be served stale there. Without a serve, hold its lock (none starts
    // meanwhile) and move tags freely; beside one, only add tags.
    let database_url = config.database_url()?;
    let (_sqlite_lock, move_refusal) = match meta::sqlite_database_file(&database_url) {
        Some(database) => match crate::sqlite_lock::SqliteLock::acquire(&database) {
            Ok(lock) => (Some(lock), None),
            Err(_) => (
                None,
                Some(
                    "a running `stowage serve` uses this SQLite database and would go on \
                     serving the old manifest; stop it and import again to move tags (or use \
                     PostgreSQL)"
                        .to_string(),
                ),
            ),
        },
        None => (None, None),
    };
    let registry = crate::open_registry(config).await?;
    let store = registry.store.clone();
    // The target first: a typo should not wait for the upstream.
    import::check_target(&store, &args.into).await?;
    let upstream = Arc::new(
        Upstream::new(UpstreamSettings {
            url: url.clone(),
            username: args.username.clone(),
            password,
            timeout: Duration::from_secs(30),
        })
        .context("cannot build the HTTP client")?,
    );
    let names = import::select_repositories(&upstream, &args.repositories)
        .await
        .with_context(|| format!("cannot list the repositories of {url}"))?;
    let plan = import::plan(&store, &args.into, &names, args.flatten).await?;
    let mut problems: Vec<String> = Vec::new();
    for (source, reason) in &plan.skipped {
        eprintln!("skipped {source}: {reason}");
        problems.push(reason.clone());
    }
    let copier = Copier::new(registry.service.clone(), upstream, copy_limits(&registry));
    let copier = match move_refusal {
        Some(why) => copier.refusing_moves(why),
        None => copier,
    };
    let parallel = usize::from(args.parallel);
    let listed: Vec<(RepositoryCopy, TagListing)> =
        futures::stream::iter(plan.copies.iter().cloned())
            .map(|copy| {
                let copier = copier.clone();
                async move {
                    let tags = copier.tags(&copy.source).await;
                    (copy, tags)
                }
            })
            .buffered(parallel)
            .collect()
            .await;
    let mut units: Vec<(RepositoryCopy, oci::Tag)> = Vec::new();
    for (copy, tags) in listed {
        match tags {
            Ok(tags) => {
                for tag in tags {
                    match tag {
                        Ok(tag) => units.push((copy.clone(), tag)),
                        Err(reason) => {
                            eprintln!("skipped a tag of {}: {reason}", copy.source);
                            problems.push(reason);
                        }
                    }
                }
            }
            Err(reason) => {
                eprintln!("failed {}: {reason}", copy.source);
                problems.push(reason);
            }
        }
    }
    let progress = Arc::new(Progress {
        started: Instant::now(),
        repositories: plan.copies.len(),
        tags_total: units.len(),
        tags_done: AtomicU64::new(0),
        counters: copier.counters.clone(),
    });
    eprintln!(
        "{} {} tags of {} repositories from {url} into {}",
        if args.dry_run { "checking" } else { "importing" },
        units.len(),
        plan.copies.len(),
        args.into.trim_matches('/'),
    );
    let ticker = {
        let progress = progress.clone();
        let every = if std::io::stderr().is_terminal() { 1 } else { 5 };
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(every));
            interval.tick().await;
            loop {
                interval.tick().await;
                eprintln!("{}", progress.line());
            }
        })
    };
    let dry_run = args.dry_run;
    let outcomes: Vec<(RepositoryCopy, oci::Tag, TagOutcome)> = futures::stream::iter(units)
        .map(|(copy, tag)| {
            let copier = copier.clone();
            let progress = progress.clone();
            async move {
                let outcome = copier.copy_tag(&copy, &tag, dry_run).await;
                progress.tags_done.fetch_add(1, Ordering::Relaxed);
                let (from, to) =
                    (format!("{}:{tag}", copy.source), format!("{}:{tag}", copy.destination));
                match &outcome {
                    TagOutcome::Added(d) => eprintln!("copied {from} -> {to} ({d})"),
                    TagOutcome::Moved { from: old, to: d } => {
                        eprintln!("copied {from} -> {to} ({d}; was {old})")
                    }
                    TagOutcome::UpToDate(d) => eprintln!("up to date {to} ({d})"),
                    TagOutcome::WouldCopy(d) => println!("would copy {from} -> {to} ({d})"),
                    TagOutcome::Failed(reason) => eprintln!("failed {from}: {reason}"),
                }
                (copy, tag, outcome)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    ticker.abort();
    let count = |f: fn(&TagOutcome) -> bool| outcomes.iter().filter(|(_, _, o)| f(o)).count();
    let copied = count(|o| matches!(o, TagOutcome::Added(_) | TagOutcome::Moved { .. }));
    let up_to_date = count(|o| matches!(o, TagOutcome::UpToDate(_)));
    let would = count(|o| matches!(o, TagOutcome::WouldCopy(_)));
    for (copy, tag, outcome) in &outcomes {
        if let TagOutcome::Failed(reason) = outcome {
            problems.push(format!("{}:{tag}: {reason}", copy.source));
        }
    }
    let failed = count(|o| matches!(o, TagOutcome::Failed(_)));
    let c = &copier.counters;
    let elapsed = progress.started.elapsed();
    let bytes = CopyCounters::get(&c.bytes);
    if dry_run {
        println!(
            "dry run: {} repositories ({} skipped); tags: {would} would be copied, {up_to_date} up to date, {failed} failed; nothing was written",
            plan.copies.len(),
            plan.skipped.len(),
        );
    } else {
        println!(
            "import summary: {} repositories ({} skipped); tags: {copied} copied, {up_to_date} up to date, {failed} failed; \
             {} manifests ({} referrers), {} blobs downloaded ({}), {} blobs linked; {} ({}/s)",
            plan.copies.len(),
            plan.skipped.len(),
            CopyCounters::get(&c.manifests),
            CopyCounters::get(&c.referrers),
            CopyCounters::get(&c.blobs_downloaded),
            human_bytes(bytes),
            CopyCounters::get(&c.blobs_linked),
            human_duration(elapsed),
            human_bytes((bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64),
        );
    }
    if !problems.is_empty() {
        for problem in &problems {
            println!("not imported: {problem}");
        }
        bail!(
            "{} repositories or tags were not imported (listed above); run the same command again \
             to retry them: what was copied is not copied twice",
            problems.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_duration(Duration::from_millis(780)), "0.8s");
        assert_eq!(human_duration(Duration::from_secs(75)), "1m15s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h01m");
    }
}
