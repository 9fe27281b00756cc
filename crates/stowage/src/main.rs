//! `stowage`: the registry binary. Reads the configuration, wires the metadata store, the blob
//! store and the HTTP surfaces together, and runs the command the operator asked for.

mod admin;
mod background;
mod bootstrap;
mod client_addr;
mod config;
mod debug;
mod gc_cli;
mod http;
mod import_cli;
mod memory;
mod notifications;
mod server;
mod sqlite_lock;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;

use crate::config::{parse_duration, redact, Config};

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "A self-hosted, multi-tenant container registry",
    after_help = "Configuration: defaults < the YAML file named by STOWAGE_CONFIG < STOWAGE_* \
                  environment variables. See `stowage serve --help` for the main settings."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `stowage serve --help`: the settings an operator reaches for first, with their variables.
const SERVE_HELP: &str = "\
Settings (YAML key in the STOWAGE_CONFIG file, or environment variable; `__` separates levels):
  STOWAGE_CONFIG                       YAML configuration file to read
  http.addr          STOWAGE_HTTP_ADDR        listen address [default: 127.0.0.1:5000]
  http.host          STOWAGE_HTTP__HOST       URL clients reach the registry at, e.g. https://registry.example.com
  data_dir           STOWAGE_DATA_DIR         SQLite database and blobs [default: ./data]
  database.url       STOWAGE_DATABASE_URL     sqlite://<file> or postgres://user:pass@host/db
  storage.filesystem.rootdirectory
                     STOWAGE_STORAGE__FILESYSTEM__ROOTDIRECTORY  blob storage [default: data_dir]
  auth.mode          STOWAGE_AUTH__MODE       token or none [default: token]
  log.level          STOWAGE_LOG__LEVEL       error, warn, info, debug or trace [default: info]
  log.formatter      STOWAGE_LOG__FORMATTER   text or json [default: text]
  STOWAGE_ADMIN_PASSWORD                      root's password on first start (else generated and printed)

Every key is listed in README.md; `stowage config show` prints the resolved configuration and
`stowage config check` validates it. Unknown keys and invalid values stop the server at start.";

#[derive(Subcommand)]
enum Command {
    /// Start the registry (default: 127.0.0.1:5000, SQLite + filesystem under ./data).
    #[command(after_help = SERVE_HELP)]
    Serve,
    /// Apply pending metadata database migrations and exit.
    Migrate,
    /// Validate or print the configuration (defaults < STOWAGE_CONFIG file < environment).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users, groups, projects, members and tokens (acts as the instance admin).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The durable job queue: list jobs, or run the due ones now.
    #[command(subcommand)]
    Jobs(background::JobsCommand),
    /// Container registry usage figures.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Online garbage collection: its figures, or one full pass now.
    #[command(subcommand)]
    Gc(gc_cli::GcCommand),
    /// Copy repositories from another registry (distribution, GitLab, another Stowage…) into
    /// a group or project: all tags, indexes, referrers, exact digests; resumable.
    Import(import_cli::ImportArgs),
    /// Print CI_REGISTRY* variables with a fresh CI job token:
    /// eval "$(stowage ci-env --project acme/app)".
    CiEnv {
        /// Full path of the project the job builds, e.g. acme/platform/api.
        #[arg(required_unless_present = "project_flag")]
        project: Option<String>,
        /// Same as the positional PROJECT.
        #[arg(long = "project", conflicts_with = "project")]
        project_flag: Option<String>,
    },
    /// Print a shell completion script: `stowage completions bash > /etc/bash_completion.d/stowage`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `stowage man | man -l -`.
    Man,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration without starting: exits 0 when valid, else 1 with the problem.
    Check,
    /// Print the fully resolved configuration, defaults filled in, secrets masked.
    Show,
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Recalculate usage from scratch and print every figure that was wrong (and is now
    /// corrected). Usage is kept current on every write; this reconciles after a restore or
    /// manual database surgery.
    Recompute {
        /// Only this top-level group (a subgroup path means its top-level group).
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn", config.log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log.formatter == config::LogFormatter::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open_registry(config: &Config) -> anyhow::Result<registry::Registry> {
    let store = config.connect_store(&config.database_url()?).await?;
    let backend = config.storage_backend()?;
    let mut blobs = blobstore::BlobStore::open(&backend)
        .with_context(|| format!("cannot open blob storage at {}", backend.describe()))?;
    if let Some(expiry) = config.storage.redirect_expiry()? {
        blobs = blobs.with_redirects(expiry);
    }
    backend
        .probe()
        .await
        .with_context(|| format!("cannot reach blob storage at {}", backend.describe()))?;
    let limits = registry::Limits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_blob_bytes: (config.limits.max_blob_bytes > 0).then_some(config.limits.max_blob_bytes),
        index_validation: config.validation.manifests.indexes.index_validation()?,
        ..Default::default()
    };
    let service =
        service::WriteService::new(store.clone(), blobs.clone(), config.gc.service_settings()?)
            .with_events(event_settings(config, None));
    // The CLI commands that open the registry need no access decisions; `serve` sets the gate.
    Ok(registry::Registry {
        store,
        blobs,
        service,
        limits,
        gate: auth::Gate::Open,
        pull_through: None,
    })
}

/// The dependency proxy of top-level groups, as `dependency_proxy.*` configures it.
fn dependency_proxy(
    config: &Config,
    registry: &registry::Registry,
    key: std::sync::Arc<service::dependency_proxy::CredentialKey>,
) -> anyhow::Result<std::sync::Arc<dyn service::dependency_proxy::PullThrough>> {
    let settings = &config.dependency_proxy;
    let timeout = Duration::from_secs(30);
    let mut upstreams = Vec::new();
    for (url, entry) in settings.upstreams()? {
        let (username, password) = (entry.username, entry.password);
        let upstream =
            proxy::Upstream::new(proxy::UpstreamSettings { url, username, password, timeout })
                .context("cannot build the dependency proxy's HTTP client")?;
        upstreams.push(upstream);
    }
    let groups = proxy::GroupSources::new(key, settings.allow_local_requests, timeout);
    let cache =
        proxy::CacheSettings { ttl: settings.ttl()?, stale_if_error: settings.stale_if_error()? };
    let instance = registry.service.event_settings().instance_id.clone();
    Ok(std::sync::Arc::new(proxy::DependencyProxy::new(
        registry.service.clone(),
        upstreams,
        groups,
        cache,
        instance,
    )))
}

/// The key that seals the passwords of the upstreams groups set: derived from
/// `dependency_proxy.encryption_key`, else from the token signing key (the file, or the one
/// in the database that every instance shares, created if there is none yet).
async fn credential_key(
    config: &Config,
    store: &meta::Store,
) -> anyhow::Result<service::dependency_proxy::CredentialKey> {
    use service::dependency_proxy::CredentialKey;
    if let Some(secret) =
        config.dependency_proxy.encryption_key.as_deref().filter(|k| !k.is_empty())
    {
        if secret.len() < 16 {
            anyhow::bail!("dependency_proxy.encryption_key must be at least 16 characters");
        }
        return Ok(CredentialKey::derive(secret.as_bytes()));
    }
    if let Some(path) = config.auth.signing_key.as_deref().filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        return Ok(CredentialKey::derive(&pem));
    }
    if store.signing_key().await?.is_none() {
        auth::jwt::TokenService::load(
            store,
            None,
            &config.auth.issuer,
            &config.auth.service,
            parse_duration(&config.auth.token_lifetime)?,
        )
        .await
        .context("cannot create the token signing key")?;
    }
    let key = store.signing_key().await?.context("the token signing key is missing")?;
    Ok(CredentialKey::derive(&key.private_der))
}

/// How this instance names itself in registry events: `http.host`'s authority when set, else
/// the address it listens on (`http.addr` before it listens).
fn event_settings(
    config: &Config,
    listening: Option<std::net::SocketAddr>,
) -> service::EventSettings {
    let source_addr = match (&config.http.host, listening) {
        (Some(host), _) if !host.is_empty() => {
            let external = config.external_url();
            external.split_once("://").map_or(external.clone(), |(_, a)| a.to_string())
        }
        (_, Some(addr)) => addr.to_string(),
        _ => config.http.addr.clone(),
    };
    service::EventSettings {
        source_addr,
        instance_id: uuid::Uuid::new_v4().to_string(),
        pull_events: config.notifications.events.pull,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Before the database is opened (and migrated): a second process on the same SQLite file
    // must not touch it at all.
    let _sqlite_lock = match meta::sqlite_database_file(&config.database_url()?) {
        Some(database) => Some(sqlite_lock::SqliteLock::acquire(&database)?),
        None => None,
    };
    let registry = open_registry(&config).await?;
    let admin_notice = bootstrap::ensure_admin(&registry.store).await?;
    // Every instance stores the default it is configured with; triggers and quota checks
    // read it from the database, so all instances decide alike.
    registry.store.set_default_storage_limit(config.quotas.default_limit.bytes()? as i64).await?;
    registry.store.log_storage_notices().await;
    tracing::info!(
        database = %redact(&config.database_url()?),
        storage = %config.storage_backend()?.describe(),
        "metadata and storage ready"
    );
    match &registry.limits.index_validation {
        oci::IndexValidation::All => {}
        oci::IndexValidation::None => tracing::warn!(
            "validation.manifests.indexes.platforms is none: indexes may list manifests this \
             registry does not hold, and pulls of those platforms will fail"
        ),
        oci::IndexValidation::Platforms(list) => tracing::warn!(
            platforms = %list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "validation.manifests.indexes.platforms is list: indexes may leave out manifests \
             of other platforms"
        ),
    }
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.addr))?;
    let local_addr = listener.local_addr()?;
    let mut registry = registry;
    registry.service = registry.service.with_events(event_settings(&config, Some(local_addr)));
    let credential_key = std::sync::Arc::new(credential_key(&config, &registry.store).await?);
    registry.pull_through = Some(dependency_proxy(&config, &registry, credential_key.clone())?);
    memory::start_trimming();
    // Background work (deletes, cleanup policies, the upload purge) runs as durable jobs: with
    // several instances each job, and each period of a periodic one, runs once.
    let queue = background::queue(&registry.store);
    let _jobs = background::runner(&config, &registry, queue.clone())?.start();
    // Online GC on every instance: review workers, the storage deleter, the leftovers sweep.
    let gc_workers = gc_cli::start_background(&config, &registry)?;
    let api = api::ApiState {
        store: registry.store.clone(),
        writes: registry.service.clone(),
        job_token_lifetime: parse_duration(&config.auth.job_token_lifetime)?,
        jobs: queue.clone(),
        hooks_allow_local: config.webhooks.allow_local_requests,
        dependency_proxy_key: credential_key,
        dependency_proxy_allow_local: config.dependency_proxy.allow_local_requests,
    };
    if let Some(addr) = config.http.debug.addr.as_deref().filter(|a| !a.is_empty()) {
        let metrics = debug::install_recorder().context("cannot start the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (http.debug.addr)"))?;
        tracing::info!("debug endpoints at http://{}", listener.local_addr()?);
        let router = debug::router(registry.clone(), metrics);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the debug address stopped serving");
            }
        });
    }
    let shared = match config.redis.settings()? {
        Some(settings) => {
            tracing::info!(addr = %settings.addr, "rate limits and login throttling shared through Redis");
            shared::Shared::redis(&settings).map_err(|e| anyhow::anyhow!(e))?
        }
        None => shared::Shared::local(),
    };
    let rate_limiter = std::sync::Arc::new(auth::ratelimit::RateLimiter::new(
        config.ratelimit.limits()?,
        shared.clone(),
    ));
    let auth = match config.auth.mode {
        config::AuthMode::Token => {
            let tokens = std::sync::Arc::new(
                auth::jwt::TokenService::load(
                    &registry.store,
                    config.auth.signing_key.as_deref(),
                    &config.auth.issuer,
                    &config.auth.service,
                    parse_duration(&config.auth.token_lifetime)?,
                )
                .await
                .context("cannot load the token signing key")?,
            );
            tracing::info!(kid = tokens.kid(), "token authentication on");
            let realm = config.token_realm(local_addr);
            if config.auth.realm.is_none() && config.http.host.is_none() {
                tracing::warn!(
                    %realm,
                    "http.host is not set: clients are sent to the listening address for tokens; \
                     set http.host to the URL clients reach this registry at"
                );
            }
            registry.gate = auth::Gate::token(registry.store.clone(), tokens.clone(), realm);
            Some(auth::web::AuthState {
                store: registry.store.clone(),
                tokens,
                limiter: std::sync::Arc::new(
                    auth::throttle::LoginLimiter::default().sharing(shared.clone()),
                ),
            })
        }
        config::AuthMode::None => {
            tracing::warn!(
                "auth.mode is none: anyone who can reach this registry may push, pull and delete"
            );
            None
        }
    };
    // The web UI signs people in, so it runs with token authentication only; its cookies are
    // `Secure` when browsers reach the registry over HTTPS (served here, or behind a proxy
    // named by an https `http.host`).
    let web = auth.clone().map(|auth| web::WebState {
        auth,
        writes: registry.service.clone(),
        jobs: queue,
        secure_cookies: config.external_url().starts_with("https://"),
        session_lifetime: web::DEFAULT_SESSION_LIFETIME,
    });
    let app =
        http::app(registry, api, auth, web, config.http.trusted_proxies.clone(), rate_limiter);
    let limits = server::ConnectionLimits {
        header_read: parse_duration(&config.http.timeouts.header_read)?,
        idle: parse_duration(&config.http.timeouts.idle)?,
        max_connections: config.http.max_connections,
    };
    server::raise_open_file_limit(limits.max_connections);
    let tls = match config.http.tls.files()? {
        Some((certificate, key)) => Some(server::tls_acceptor(certificate, key)?),
        None => None,
    };
    let drain = parse_duration(&config.http.draintimeout)?;
    tracing::info!("listening on {}://{local_addr}", config.scheme());
    admin_notice.announce();
    server::serve(listener, app, limits, tls, shutdown_signal(), drain).await;
    let grace = config.gc.settings()?.transaction_timeout + Duration::from_secs(1);
    gc_workers.stop(grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands that need no configuration.
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "stowage", &mut script);
            return print_bytes(&script);
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
                return fail(e.into());
            }
            return print_bytes(&page);
        }
        _ => {}
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    if let Command::Config(ConfigCommand::Check) = cli.command {
        println!("configuration is valid");
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(&config);
    memory::return_freed_memory();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(e.into()),
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Writes generated output to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> std::process::ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(e.into()),
        _ => std::process::ExitCode::SUCCESS,
    }
}

/// Prints `error: <cause chain>` and gives the exit code 1.
fn fail(error: anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    std::process::ExitCode::FAILURE
}

/// The database an operator command (admin, jobs, gc, usage, ci-env) acts on: the configured
/// one, which must exist. These commands never create a database (that would be a new, empty
/// instance beside the real one); they say which one they use, on stderr (stdout is the
/// command's output).
fn existing_database_url(config: &Config) -> anyhow::Result<String> {
    let url = match config.database.url.as_ref().filter(|u| !u.is_empty()) {
        Some(url) => url.clone(),
        None => {
            let file = std::path::absolute(config.data_dir.join("stowage.db"))?;
            if !file.exists() {
                anyhow::bail!(
                    "no database at {}: point STOWAGE_CONFIG, STOWAGE_DATABASE_URL or \
                     STOWAGE_DATA_DIR at the registry's database (admin commands never create one; \
                     `stowage serve` or `stowage migrate` does)",
                    file.display()
                );
            }
            format!("sqlite://{}", std::fs::canonicalize(&file)?.display())
        }
    };
    if let Some(file) = meta::sqlite_database_file(&url) {
        if !file.exists() {
            anyhow::bail!(
                "no database at {} (database.url {url}): admin commands never create one; \
                 `stowage serve` or `stowage migrate` does",
                file.display()
            );
        }
    }
    eprintln!("using database {}", redact(&url));
    Ok(url)
}

/// The metadata store of [`existing_database_url`].
async fn existing_store(config: &Config) -> anyhow::Result<meta::Store> {
    let url = existing_database_url(config)?;
    config.connect_store(&url).await
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let url = config.database_url()?;
            let store = config.connect_store(&url).await?;
            store.migrate().await?;
            println!("metadata database {} is up to date", redact(&url));
            Ok(())
        }
        Command::Gc(cmd) => {
            existing_database_url(&config)?;
            // A full pass deletes registry state: on SQLite, not behind a serving process.
            let _sqlite_lock = if cmd.changes_state() {
                sqlite_lock::for_command(&config.database_url()?, gc_cli::RUN_BESIDE_SERVE)?
            } else {
                None
            };
            let registry = open_registry(&config).await?;
            gc_cli::run(cmd, &config, &registry).await
        }
        Command::Import(args) => {
            existing_database_url(&config)?;
            import_cli::run(args, &config).await
        }
        Command::Admin(cmd) => {
            let store = existing_store(&config).await?;
            admin::run(cmd, &store, &config.external_url()).await
        }
        Command::Jobs(cmd) => {
            existing_database_url(&config)?;
            background::run(cmd, &config).await
        }
        Command::Usage(UsageCommand::Recompute { namespace }) => {
            let store = existing_store(&config).await?;
            let report = store.recompute_usage(namespace.as_deref()).await?;
            for c in &report.corrections {
                println!(
                    "corrected {} {}: {} -> {} bytes",
                    c.scope,
                    c.path.as_deref().unwrap_or("(gone)"),
                    c.stored_bytes,
                    c.actual_bytes
                );
            }
            if report.reference_rows_corrected > 0 || report.scope_links_corrected > 0 {
                println!(
                    "corrected {} blob reference counts and {} repository scope links",
                    report.reference_rows_corrected, report.scope_links_corrected
                );
            }
            println!(
                "recomputed {} namespace(s): {}",
                report.namespaces,
                if report.is_clean() { "no drift" } else { "drift corrected" }
            );
            store.log_storage_notices().await;
            Ok(())
        }
        Command::CiEnv { project, project_flag } => {
            let project = project.or(project_flag).unwrap_or_default();
            let store = existing_store(&config).await?;
            let lifetime = parse_duration(&config.auth.job_token_lifetime)?;
            let host = admin::registry_host(&config.external_url());
            print!("{}", admin::ci_env(&store, &project, &host, lifetime).await?);
            Ok(())
        }
        Command::Config(_) => {
            print!("{}", config.resolved_yaml()?);
            Ok(())
        }
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and subcommand says what it does in `--help` and the man page.
    #[test]
    fn every_subcommand_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "stowage", &mut missing);
        assert!(missing.is_empty(), "subcommands without a description: {missing:#?}");
        super::Cli::command().debug_assert();
    }
}
