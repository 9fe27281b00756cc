//! Connecting, migrating, and running write transactions safely on both backends.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("metadata migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("the {0} just written could not be read back")]
    NotFound(&'static str),
    /// The database server could not be reached at all (the cause, not a pool timeout).
    #[error("{0}")]
    Unreachable(String),
    #[error("unsupported database URL {0:?}: use sqlite://<file> or postgres://user@host/db")]
    UnsupportedUrl(String),
}

/// How long a client should wait before retrying a request that failed because the database
/// was unavailable: about the time a restarted PostgreSQL takes to accept connections again.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl MetaError {
    /// Whether the database could not be reached or gave no connection in time (down,
    /// restarting, network cut, pool exhausted for `database.connecttimeout`), as opposed to
    /// a query that failed. The one place that tells the two apart: surfaces answer the first
    /// with 503 and `Retry-After` ([`MetaError::retry_after`]), the second with 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            MetaError::Unreachable(_) => true,
            MetaError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL's connection exceptions (class 08), shutdown and start-up
                // (57P01-57P03) and too many connections (53300).
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                }),
                _ => false,
            },
            _ => false,
        }
    }

    /// `Some(wait)` when the request may succeed if retried after `wait` (the database was
    /// unavailable): the value of the `Retry-After` header of a 503.
    pub fn retry_after(&self) -> Option<Duration> {
        self.is_unavailable().then_some(UNAVAILABLE_RETRY_AFTER)
    }
}

/// A pooled connection idle longer than this is pinged before it is used again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// How the metadata database's connection pool behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// How long a request waits for a connection (including connecting) before it fails as
    /// unavailable: short, so an outage answers 503 at once instead of hanging requests.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { acquire_timeout: Duration::from_secs(2) }
    }
}

impl MetaError {
    /// PostgreSQL chose this transaction as the victim of a deadlock (SQLSTATE 40P01): it was
    /// rolled back whole and may simply run again.
    pub fn is_deadlock(&self) -> bool {
        match self {
            MetaError::Database(sqlx::Error::Database(e)) => e.code().as_deref() == Some("40P01"),
            _ => false,
        }
    }
}

/// The file a `sqlite:` database URL names, read the way sqlx reads it; `None` for other URLs
/// and for in-memory SQLite databases.
pub fn sqlite_database_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().ok()?;
    let file = options.get_filename();
    let in_memory = url.contains("mode=memory")
        || file.as_os_str().is_empty()
        || file.to_string_lossy().starts_with("file:sqlx-in-memory-");
    (!in_memory).then(|| file.to_path_buf())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle on the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time; a deferred transaction that upgrades to a write
    /// lock can fail at once with SQLITE_BUSY when another writer got there first. Writers
    /// therefore queue on this lock, which makes SQLite writes wait instead of failing.
    sqlite_writer: Option<Arc<Mutex<()>>>,
    /// Manifests by (repository, tag): see [`TagCache`].
    pub(crate) tag_cache: Arc<TagCache>,
    /// When this process last began a foreground write (every write but garbage
    /// collection's): GC gives way to writes (see [`Store::since_foreground_write`]).
    foreground: Arc<ForegroundWrites>,
}

/// See [`Store::foreground`].
struct ForegroundWrites {
    start: std::time::Instant,
    /// Milliseconds after `start` of the last foreground write; `-1`: none yet.
    last_ms: std::sync::atomic::AtomicI64,
}

impl Default for ForegroundWrites {
    fn default() -> Self {
        ForegroundWrites {
            start: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicI64::new(-1),
        }
    }
}

/// What a cached manifest-by-tag answer was read under; it is served again only while this
/// is still current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagVersion {
    /// SQLite: this process is the only writer, so every change passes [`WriteTx::commit`],
    /// which bumps the process-wide generation and thereby invalidates every entry; a hit
    /// costs no query at all.
    Process(u64),
    /// PostgreSQL (several instances): the repository's id and `tag_generation`, which a
    /// trigger bumps in the transaction of every tag change (migration 0013); a hit costs one
    /// primary-key read of the repository's row, and no instance serves a tag moved by
    /// another once the move has committed.
    Repository { id: i64, generation: i64 },
}

/// Manifests by (repository, tag), each with the [`TagVersion`] it was read under.
#[derive(Default)]
pub(crate) struct TagCache {
    generation: std::sync::atomic::AtomicU64,
    entries: std::sync::Mutex<HashMap<(String, String), (TagVersion, crate::ManifestRecord)>>,
}

/// Entries kept at most; beyond that the cache starts over.
const TAG_CACHE_ENTRIES: usize = 10_000;

impl TagCache {
    /// The current process generation (SQLite); read it before querying, store the result
    /// with it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, repo: &str, tag: &str) -> Option<(TagVersion, crate::ManifestRecord)> {
        let entries = self.entries.lock().expect("tag cache lock");
        entries.get(&(repo.to_string(), tag.to_string())).cloned()
    }

    pub fn put(&self, version: TagVersion, repo: &str, tag: &str, record: crate::ManifestRecord) {
        let mut entries = self.entries.lock().expect("tag cache lock");
        if entries.len() >= TAG_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert((repo.to_string(), tag.to_string()), (version, record));
    }
}

/// A write transaction; on SQLite it also holds the process-wide writer lock.
///
/// A request whose client goes away is dropped at its next await, possibly in the middle of
/// a write. Two things keep that safe: on SQLite a write transaction begins with
/// `BEGIN IMMEDIATE`, so it takes the database's write lock before reading anything (a writer
/// that began while an abandoned one was still finishing waits for it, instead of failing with
/// "database is locked" because its snapshot went stale); and [`WriteTx::commit`] runs in a
/// task of its own, so once a commit has started it completes, the tag cache learns of it,
/// and only then is the writer lock released.
///
/// Public so that the write service can compose several typed operations (all SQL stays in
/// this crate: see `write.rs` and `gc_review.rs`) with storage work in one transaction.
/// Dropping it without [`commit`](WriteTx::commit) rolls everything back.
pub struct WriteTx<'a> {
    pub(crate) tx: Transaction<'static, Any>,
    guard: Option<OwnedMutexGuard<()>>,
    /// The process cache to invalidate on commit (SQLite only).
    cache: Option<Arc<TagCache>>,
    backend: Backend,
    _store: std::marker::PhantomData<&'a Store>,
}

impl WriteTx<'_> {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// ` FOR SHARE` on PostgreSQL, nothing on SQLite (where every write transaction runs
    /// alone): appended to a SELECT that must keep the rows it read from being deleted.
    pub(crate) fn for_share(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        }
    }

    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    pub async fn commit(self) -> Result<(), MetaError> {
        let WriteTx { tx, guard, cache, .. } = self;
        let committing = tokio::spawn(async move {
            let result = tx.commit().await;
            // After the commit: a reader that saw the old data cached it under the old
            // generation.
            if let Some(cache) = cache {
                cache.generation.fetch_add(1, Ordering::AcqRel);
            }
            drop(guard);
            result
        });
        match committing.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(MetaError::Conflict(format!("the commit task failed: {e}"))),
        }
    }
}

/// Connects once to a server database before a pool is built: the pool retries refused
/// connections until its acquire timeout and then reports only "pool timed out", where an
/// operator needs the cause (refused, unknown host, wrong password) within seconds.
async fn probe(url: &str) -> Result<(), MetaError> {
    use sqlx::Connection;
    let target = url::Url::parse(url)
        .ok()
        .map(|u| format!("{}:{}", u.host_str().unwrap_or("localhost"), u.port().unwrap_or(5432)))
        .unwrap_or_else(|| "the database server".into());
    match tokio::time::timeout(Duration::from_secs(10), sqlx::AnyConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(MetaError::Unreachable(format!(
                "connection refused to {target}: is the database server running and listening \
                 there?"
            )))
        }
        Ok(Err(e)) => Err(MetaError::Unreachable(format!("cannot connect to {target}: {e}"))),
        Err(_) => Err(MetaError::Unreachable(format!(
            "cannot connect to {target}: no answer within 10 s"
        ))),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, MetaError> {
        Store::connect_with(url, &PoolSettings::default()).await
    }

    /// [`Store::connect`] with explicit pool settings.
    pub async fn connect_with(url: &str, settings: &PoolSettings) -> Result<Store, MetaError> {
        let store = Store::open(url, settings).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Whether the database answers a trivial query now (readiness, `GET /v2/`).
    pub async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The connection pool's size and idle connections, for metrics.
    pub fn pool_figures(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Connects to `url` without touching the schema.
    async fn open(url: &str, settings: &PoolSettings) -> Result<Store, MetaError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(MetaError::UnsupportedUrl(url.to_string()));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        if backend == Backend::Postgres {
            probe(&url).await?;
        }
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(settings.acquire_timeout)
            // sqlx pings every connection when it is released (a round trip per use, off the
            // request's path) and by default again before every acquire (one more, on it).
            // A connection busy a moment ago is alive: only one idle for a while — possibly
            // from before a database restart — is pinged before it is handed out, so a
            // restarted server costs no failed requests and a busy one no extra round trips.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < IDLE_BEFORE_PING {
                        return Ok(true);
                    }
                    use sqlx::Connection;
                    Ok(conn.ping().await.is_ok())
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        let store = Store {
            pool,
            backend,
            sqlite_writer: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            tag_cache: Arc::new(TagCache::default()),
            foreground: Arc::default(),
        };
        Ok(store)
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        }
    }

    /// Applies every pending schema migration (idempotent; also run on start).
    pub async fn migrate(&self) -> Result<(), MetaError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction (on SQLite: waits for the single writer slot and takes the
    /// database's write lock at once, `BEGIN IMMEDIATE`).
    pub async fn write_tx(&self) -> Result<WriteTx<'_>, MetaError> {
        let f = &self.foreground;
        let now = f.start.elapsed().as_millis().min(i64::MAX as u128) as i64;
        f.last_ms.store(now, Ordering::Relaxed);
        self.begin_write().await
    }

    /// [`write_tx`](Self::write_tx) for background bookkeeping that does not count as a
    /// foreground write: garbage collection's own work (reviews, storage deletions) and the
    /// job queue's claims, which every worker polls each second.
    pub async fn background_write_tx(&self) -> Result<WriteTx<'_>, MetaError> {
        self.begin_write().await
    }

    /// How long ago this process last began a foreground write ([`write_tx`](Self::write_tx));
    /// `None` if it never did. GC uses it to give way to pushes: while writes come in it
    /// reviews in small batches with pauses between them (on SQLite they queue for the one
    /// writer; on PostgreSQL they share the CPU).
    pub fn since_foreground_write(&self) -> Option<Duration> {
        let f = &self.foreground;
        let last = f.last_ms.load(Ordering::Relaxed);
        let now = f.start.elapsed().as_millis().min(i64::MAX as u128) as i64;
        (last >= 0).then(|| Duration::from_millis(now.saturating_sub(last).max(0) as u64))
    }

    async fn begin_write(&self) -> Result<WriteTx<'_>, MetaError> {
        let (guard, tx) = match &self.sqlite_writer {
            Some(lock) => {
                let guard = lock.clone().lock_owned().await;
                (Some(guard), self.pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            None => (None, self.pool.begin().await?),
        };
        Ok(WriteTx {
            tx,
            guard,
            cache: (self.backend == Backend::Sqlite).then(|| self.tag_cache.clone()),
            backend: self.backend,
            _store: std::marker::PhantomData,
        })
    }
}

/// `$first, $first+1, …` for `n` values: the placeholders of an `IN (…)` list or a row.
/// For short lists only; a list of hundreds or thousands goes in one parameter
/// ([`json_values`], [`json_rows`]).
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A column's membership in the strings of parameter `$param`, bound as one JSON array of
/// strings (see [`json_array`]): `format!("… WHERE digest {}", json_in(backend, 1))` in place
/// of `digest IN ($1, $2, …)`.
///
/// Why one parameter: SQLite names `$N` parameters, and sqlx binds each by looking its name
/// up in a list, so a statement of n parameters costs O(n²) to bind — 1 000 review rows with
/// 7 columns each spent most of a GC batch there. One parameter also keeps the statement text
/// the same for every batch size, so it is prepared once.
///
/// On PostgreSQL the list is an array (`= ANY(ARRAY(…))`), not a subquery: an index scan over
/// an array visits the keys in index order, so rows are locked in digest order as writers
/// lock them. A subquery is joined in hash order, and locking in that order deadlocked a
/// manifest delete against a review batch.
pub(crate) fn json_in(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("IN (SELECT value FROM json_each(${param}))"),
        Backend::Postgres => {
            format!("= ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)))")
        }
    }
}

/// The SQL type of a column read by [`json_rows`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum JsonColumn {
    Text,
    BigInt,
}

/// A `SELECT` of one row per element of parameter `$param`, a JSON array of arrays (see
/// [`json_array`]), with `columns` taken from each element by position: the row source of a
/// multi-row `INSERT … {json_rows}` (for the reason in [`json_values`]). Ends in `WHERE true`,
/// which SQLite needs before an `ON CONFLICT` that follows a `SELECT … FROM`.
pub(crate) fn json_rows(backend: Backend, param: usize, columns: &[JsonColumn]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, col)| match (backend, col) {
            (Backend::Sqlite, _) => format!("json_extract(value, '$[{i}]')"),
            (Backend::Postgres, JsonColumn::Text) => format!("(e ->> {i})"),
            (Backend::Postgres, JsonColumn::BigInt) => format!("CAST(e ->> {i} AS BIGINT)"),
        })
        .collect();
    match backend {
        Backend::Sqlite => {
            format!("SELECT {} FROM json_each(${param}) WHERE true", cols.join(", "))
        }
        Backend::Postgres => format!(
            "SELECT {} FROM jsonb_array_elements(${param}::jsonb) AS e WHERE true",
            cols.join(", ")
        ),
    }
}

/// The JSON text of `values`, to bind for [`json_values`] or [`json_rows`].
pub(crate) fn json_array<T: serde::Serialize>(values: &[T]) -> String {
    serde_json::to_string(values).expect("strings and numbers serialize")
}

pub(crate) fn get_i64(row: &AnyRow, col: &str) -> i64 {
    use sqlx::Row;
    row.get::<i64, _>(col)
}

/// Stores on both backends for the crate's tests: a SQLite file in a temporary directory, and
/// a fresh PostgreSQL database on `STOWAGE_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`,
/// as for the end-to-end tests), dropped again by [`TestDb::drop_database`]. Other crates' tests
/// use it through the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    pub struct TestDb {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
        postgres: Option<(String, String)>,
    }

    impl TestDb {
        /// An empty database with migrations up to (not including) `before`, or all of them.
        pub async fn new(backend: Backend, before: Option<i64>) -> TestDb {
            let (url, dir, postgres) = match backend {
                Backend::Sqlite => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
                    (url, Some(dir), None)
                }
                Backend::Postgres => {
                    let server = std::env::var("STOWAGE_TEST_PG")
                        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
                    let name = format!("stowage_meta_{}", uuid::Uuid::new_v4().simple());
                    admin(&server, &format!("CREATE DATABASE {name}")).await;
                    (format!("{server}/{name}"), None, Some((server, name)))
                }
            };
            let store =
                Store::open(&url, &PoolSettings::default()).await.expect("open test database");
            let mut migrator = store.migrator();
            if let Some(before) = before {
                migrator.migrations = migrator
                    .migrations
                    .iter()
                    .filter(|m| m.version < before)
                    .cloned()
                    .collect::<Vec<_>>()
                    .into();
            }
            migrator.run(&store.pool).await.expect("migrate test database");
            TestDb { store, _dir: dir, postgres }
        }

        /// Runs one SQL statement (test fixtures the API has no call for).
        pub async fn exec(&self, sql: &str) {
            sqlx::query(sql)
                .execute(&self.store.pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }

        pub async fn drop_database(self) {
            self.store.close().await;
            if let Some((server, name)) = &self.postgres {
                admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            }
        }
    }

    async fn admin(server: &str, sql: &str) {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} (set STOWAGE_TEST_PG): {e}"));
        sqlx::query(sql).execute(&pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_database_file;
    use std::path::Path;

    #[test]
    fn sqlite_database_files() {
        let file = |url| sqlite_database_file(url);
        assert_eq!(
            file("sqlite:///var/lib/s/stowage.db").as_deref(),
            Some(Path::new("/var/lib/s/stowage.db"))
        );
        assert_eq!(file("sqlite://data/m.db?mode=rwc").as_deref(), Some(Path::new("data/m.db")));
        assert_eq!(file("sqlite:m.db").as_deref(), Some(Path::new("m.db")));
        assert_eq!(file("sqlite:///a%3Fb/m.db").as_deref(), Some(Path::new("/a?b/m.db")));
        assert_eq!(file("sqlite::memory:"), None);
        assert_eq!(file("sqlite://?mode=memory"), None);
        assert_eq!(file("postgres://u@h/db"), None);
    }
}
