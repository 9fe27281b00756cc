//! The end-to-end test harness: starts a real `stowage serve` process on a random loopback port
//! with its own temporary data directory and a fresh metadata database, and hands tests its
//! address. Every end-to-end test — raw HTTP and real clients alike — goes through this one
//! harness, so tests read like user stories.
//!
//! The server runs as its own process rather than inside the test process: that exercises the
//! real binary, its environment variables and start-up exactly as an operator runs it, and lets
//! a test restart it (uploads must survive restarts) or read its log.
//!
//! Environment knobs:
//! - `STOWAGE_BIN`: the binary to run (default: `cargo build -p stowage` then `target/debug/stowage`).
//! - `STOWAGE_TEST_PG`: PostgreSQL server URL without a database
//!   (default `postgres://postgres@127.0.0.1:5432`); each server gets a database of its own.
//! - `STOWAGE_TEST_REGISTRY`: `host:port` of an already running registry to test instead
//!   (used to check the tests themselves against another implementation).
//! - `STOWAGE_TEST_STORAGE`: `filesystem` (default) or `s3`: every server stores its blobs in
//!   a bucket of an S3 server (moto) of its own, so any test runs against object storage.

pub mod cli;
pub mod db_proxy;
pub mod dockerd;
pub mod gitlab;
pub mod round_robin;
pub mod tenants;
pub mod tools;
pub mod upstream;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which metadata database the server under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaBackend {
    Sqlite,
    Postgres,
}

/// Which blob storage the server under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobBackend {
    Filesystem,
    /// A bucket on a moto S3 server started for this server (and its siblings).
    S3,
}

impl BlobBackend {
    /// `STOWAGE_TEST_STORAGE`, filesystem when unset; anything else is a mistake.
    pub fn from_env() -> BlobBackend {
        match std::env::var("STOWAGE_TEST_STORAGE").as_deref() {
            Err(_) | Ok("filesystem") => BlobBackend::Filesystem,
            Ok("s3") => BlobBackend::S3,
            Ok(other) => panic!("STOWAGE_TEST_STORAGE={other}: use filesystem or s3"),
        }
    }
}

/// A running `stowage serve`. Killed (and its database dropped) when dropped.
pub struct TestServer {
    /// `127.0.0.1:PORT`, as docker/skopeo want it.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub backend: MetaBackend,
    child: Option<Child>,
    data_dir: DataDir,
    log_name: String,
    database_url: Option<String>,
    /// The PostgreSQL database this server created and drops when dropped.
    pg_database: Option<String>,
    extra_env: Vec<(String, String)>,
    /// The S3 server holding the blobs (shared with siblings), stopped after the last one.
    object_store: Option<std::sync::Arc<blobstore::test_servers::ObjectStoreServer>>,
}

/// A server's temporary data directory, removed when the last server using it (the first one
/// and its siblings) is dropped.
#[derive(Clone)]
struct DataDir(std::sync::Arc<tempfile::TempDir>);

impl DataDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Generates one `#[tokio::test]` per metadata backend for each named async test function
/// taking a [`MetaBackend`]: `backend_tests!(push_and_pull, chunked_upload);`
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::MetaBackend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::MetaBackend::Postgres).await
                }
            )*
        }
    };
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The `stowage` binary, built once per test process when `STOWAGE_BIN` is not given.
pub fn stowage_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("STOWAGE_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "stowage", "--bin", "stowage"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build for the stowage binary");
        assert!(status.success(), "building the stowage binary failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target"));
        target.join("debug").join("stowage")
    })
    .clone()
}

pub(crate) fn pg_server() -> String {
    std::env::var("STOWAGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one SQL statement on the PostgreSQL server's `postgres` database with `psql`.
fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(format!("{}/postgres", pg_server()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("run psql (install postgresql-client)");
    assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

impl TestServer {
    /// Starts a server with default settings on `backend`.
    pub fn start(backend: MetaBackend) -> TestServer {
        TestServer::start_with(backend, &[])
    }

    /// Starts a server with extra `STOWAGE_*` environment variables.
    pub fn start_with(backend: MetaBackend, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_on(backend, BlobBackend::from_env(), env)
    }

    /// Starts a server on a fresh PostgreSQL database that it reaches through `via`
    /// (`host:port`, e.g. a [`db_proxy::DbProxy`] a test can cut), not the server's own address.
    pub fn start_postgres_via(via: &str, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner(MetaBackend::Postgres, BlobBackend::from_env(), env, Some(via))
    }

    /// Starts a server on `storage` with extra `STOWAGE_*` environment variables. For S3 the
    /// `storage.s3` keys come from the environment like an operator's would.
    pub fn start_on(
        backend: MetaBackend,
        storage: BlobBackend,
        env: &[(&str, &str)],
    ) -> TestServer {
        TestServer::start_inner(backend, storage, env, None)
    }

    fn start_inner(
        backend: MetaBackend,
        storage: BlobBackend,
        env: &[(&str, &str)],
        via: Option<&str>,
    ) -> TestServer {
        let mut extra_env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let object_store = match storage {
            BlobBackend::Filesystem => None,
            BlobBackend::S3 => {
                let server = blobstore::test_servers::ObjectStoreServer::moto();
                let s3 = server.s3_bucket("stowage");
                for (key, value) in [
                    ("BUCKET", s3.bucket),
                    ("REGION", s3.region.unwrap_or_default()),
                    ("REGIONENDPOINT", s3.endpoint.unwrap_or_default()),
                    ("FORCEPATHSTYLE", "true".into()),
                    ("ACCESSKEY", s3.access_key.unwrap_or_default()),
                    ("SECRETKEY", s3.secret_key.unwrap_or_default()),
                ] {
                    extra_env.insert(0, (format!("STOWAGE_STORAGE__S3__{key}"), value));
                }
                Some(std::sync::Arc::new(server))
            }
        };
        let data_dir = tempfile::Builder::new().prefix("stowage-e2e-").tempdir().expect("tempdir");
        let (database_url, pg_database) = match backend {
            MetaBackend::Sqlite => (None, None),
            MetaBackend::Postgres => {
                let db = format!("stowage_test_{}", random_suffix());
                psql(&format!("CREATE DATABASE {db}"));
                let mut server = url::Url::parse(&pg_server()).expect("STOWAGE_TEST_PG is a URL");
                if let Some(via) = via {
                    let (host, port) = via.rsplit_once(':').expect("via is host:port");
                    server.set_host(Some(host)).expect("proxy host");
                    server.set_port(Some(port.parse().expect("proxy port"))).expect("proxy port");
                }
                let server = server.as_str().trim_end_matches('/').to_string();
                (Some(format!("{server}/{db}")), Some(db))
            }
        };
        let mut server = TestServer {
            addr: String::new(),
            base: String::new(),
            backend,
            child: None,
            data_dir: DataDir(std::sync::Arc::new(data_dir)),
            log_name: "server.log".into(),
            database_url,
            pg_database,
            extra_env,
            object_store,
        };
        server.spawn();
        server
    }

    /// Starts a second `stowage serve` process on this server's data directory and
    /// database, as a second instance behind a load balancer would run. PostgreSQL only:
    /// SQLite means one process. The sibling logs to a file of its own; the database is
    /// dropped with this server, so drop the sibling first.
    pub fn start_sibling(&self) -> TestServer {
        assert_eq!(self.backend, MetaBackend::Postgres, "several instances need PostgreSQL");
        let mut sibling = TestServer {
            addr: String::new(),
            base: String::new(),
            backend: self.backend,
            child: None,
            data_dir: self.data_dir.clone(),
            log_name: format!("server-sibling-{}.log", random_suffix()),
            database_url: self.database_url.clone(),
            pg_database: None,
            extra_env: self.extra_env.clone(),
            object_store: self.object_store.clone(),
        };
        sibling.spawn();
        sibling
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join(&self.log_name)
    }

    /// The data directory the server stores blobs (and, on SQLite, metadata) in.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        if let Ok(external) = std::env::var("STOWAGE_TEST_REGISTRY") {
            self.addr = external.clone();
            self.base = format!("http://{external}");
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let start_offset = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut cmd = Command::new(stowage_bin());
        // A restart keeps the port, so clients holding `base`/`addr` go on working.
        let listen =
            if self.addr.is_empty() { "127.0.0.1:0".to_string() } else { self.addr.clone() };
        cmd.arg("serve")
            .env("STOWAGE_HTTP_ADDR", listen)
            .env("STOWAGE_DATA_DIR", self.data_dir.path().join("data"))
            .env("RUST_LOG", "info")
            // Registry-core tests run against an open registry; auth tests ask for
            // `STOWAGE_AUTH__MODE=token` through `start_with`.
            .env("STOWAGE_AUTH__MODE", "none")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if let Some(url) = &self.database_url {
            cmd.env("STOWAGE_DATABASE_URL", url);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start stowage serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(pos) = log.get(start_offset..).and_then(|l| l.find("listening on http")) {
                let rest = &log[start_offset + pos + "listening on ".len()..];
                let url: String =
                    rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                let (scheme, addr) = url.split_once("://").expect("listening on <scheme>://");
                self.addr = addr.to_string();
                self.base = format!("{scheme}://{addr}");
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("stowage serve exited with {status} before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "stowage serve did not start within 60 s:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address the server logged after `what` (e.g. `debug endpoints at http://`).
    pub fn logged_address(&self, what: &str) -> Option<String> {
        let log = self.log();
        let rest = &log[log.rfind(what)? + what.len()..];
        Some(rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect())
    }

    /// Sends SIGTERM, what an orchestrator sends to stop a container.
    pub fn terminate(&self) {
        let child = self.child.as_ref().expect("a running server");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit; `None` if it has not.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait for stowage") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the server abruptly (SIGKILL), as a crash would; [`restart`](Self::restart)
    /// starts it again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server abruptly and starts it again on the same data and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the server abruptly (SIGKILL) and starts it again on the same data and database
    /// with `env` set on top of the variables it was started with (later ones win).
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        for (key, value) in env {
            self.extra_env.retain(|(k, _)| k != key);
            self.extra_env.push((key.to_string(), value.to_string()));
        }
        self.restart();
    }

    /// The file holding blob `digest`'s bytes in the server's filesystem storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').expect("digest is algorithm:hex");
        self.data_dir().join("data/blobs").join(algorithm).join(&hex[..2]).join(hex)
    }

    /// Where object `key` of the server's storage is: a file under its data directory, or a
    /// URL of its S3 bucket (moto answers unsigned requests).
    fn object_location(&self, key: &str) -> Result<PathBuf, String> {
        match &self.object_store {
            None => Ok(self.data_dir().join("data").join(key)),
            Some(s3) => Err(format!("{}/stowage/{key}", s3.endpoint())),
        }
    }

    /// Writes `bytes` as object `key` straight into the server's storage (filesystem or S3),
    /// bypassing the registry: what a crash can leave behind.
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        match self.object_location(key) {
            Ok(path) => {
                std::fs::create_dir_all(path.parent().expect("a key has a parent")).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
            Err(url) => {
                let resp = reqwest::Client::new().put(&url).body(bytes).send().await.unwrap();
                assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
            }
        }
    }

    /// Whether object `key` is in the server's storage (filesystem or S3).
    pub async fn object_exists(&self, key: &str) -> bool {
        match self.object_location(key) {
            Ok(path) => path.exists(),
            // A listing: moto answers unsigned HEADs of objects with 403.
            Err(_) => self.object_keys(key).await.iter().any(|k| k == key),
        }
    }

    /// The keys of every object under `prefix` in the server's storage (filesystem or S3).
    pub async fn object_keys(&self, prefix: &str) -> Vec<String> {
        match self.object_location(prefix) {
            Ok(path) => {
                fn walk(dir: &Path, key: &str, out: &mut Vec<String>) {
                    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let name = format!("{key}/{}", entry.file_name().to_string_lossy());
                        if entry.path().is_dir() {
                            walk(&entry.path(), &name, out);
                        } else {
                            out.push(name);
                        }
                    }
                }
                let mut out = Vec::new();
                walk(&path, prefix.trim_end_matches('/'), &mut out);
                out.sort();
                out
            }
            Err(_) => {
                let s3 = self.object_store.as_ref().expect("S3");
                let url = format!("{}/stowage?list-type=2&prefix={prefix}", s3.endpoint());
                let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
                let mut out: Vec<String> = body
                    .split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// The digests of every blob object in the server's filesystem storage (interrupted
    /// writes, `<hex>#1`, are not blobs and are left out).
    pub fn stored_blobs(&self) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let root = self.data_dir().join("data/blobs");
        for algorithm in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = algorithm.file_name().to_string_lossy().into_owned();
            for prefix in std::fs::read_dir(algorithm.path()).into_iter().flatten().flatten() {
                for object in std::fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                    let hex = object.file_name().to_string_lossy().into_owned();
                    if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        found.insert(format!("{name}:{hex}"));
                    }
                }
            }
        }
        found
    }

    /// Runs `stowage jobs run-due` (as of `at`, a `YYYY-MM-DD` day, when given) on this
    /// server's data and returns what it printed: the deterministic way to run background work
    /// (cleanup policies, deletes, the upload purge) now. See [`run_offline`](Self::run_offline).
    pub fn run_due_jobs(&mut self, at: Option<&str>) -> String {
        let mut args = vec!["jobs", "run-due"];
        if let Some(at) = at {
            args.extend(["--at", at]);
        }
        self.run_offline(&args)
    }

    /// Everything the metadata database holds, as bytes (the SQLite files of the data
    /// directory, or a `pg_dump` of the PostgreSQL database): to check that a secret is not
    /// stored in the clear.
    pub fn database_bytes(&self) -> Vec<u8> {
        match &self.database_url {
            Some(url) => {
                let out = Command::new("pg_dump")
                    .args(["--data-only", url.as_str()])
                    .output()
                    .expect("run pg_dump (install postgresql-client)");
                assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
            None => {
                let mut all = Vec::new();
                for dir in [self.data_dir().to_path_buf(), self.data_dir().join("data")] {
                    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let path = entry.path();
                        let name = path.file_name().unwrap_or_default().to_string_lossy();
                        if path.is_file() && name.contains(".db") {
                            all.extend(std::fs::read(&path).unwrap_or_default());
                        }
                    }
                }
                assert!(!all.is_empty(), "no SQLite files in {}", self.data_dir().display());
                all
            }
        }
    }

    /// Runs `stowage gc run <args>` (a full GC pass now, e.g. `["--min-age", "0s"]`) on this
    /// server's data and returns what it printed. See [`run_offline`](Self::run_offline).
    pub fn run_gc(&mut self, args: &[&str]) -> String {
        let mut all = vec!["gc", "run"];
        all.extend_from_slice(args);
        self.run_offline(&all)
    }

    /// Runs `stowage <args>`, a command that changes registry state on its own, and returns
    /// what it printed, asserting success. SQLite mode is one process (such a command refuses
    /// beside `serve`), so there the server is stopped for the command and started again, on
    /// the same port. On PostgreSQL it runs beside the
    /// server, as another instance.
    pub fn run_offline(&mut self, args: &[&str]) -> String {
        let sqlite = self.backend == MetaBackend::Sqlite;
        if sqlite {
            self.kill();
        }
        let out = self.stowage_command(args).output().expect("run stowage");
        if sqlite {
            self.spawn();
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "stowage {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The jobs `stowage jobs list --json` shows, newest first; only those of `kind` if given.
    pub fn jobs(&self, kind: Option<&str>) -> Vec<serde_json::Value> {
        let mut args = vec!["jobs", "list", "--json", "--limit", "1000"];
        if let Some(kind) = kind {
            args.extend(["--kind", kind]);
        }
        let out = self.stowage_command(&args).output().expect("run stowage jobs list");
        assert!(out.status.success(), "jobs list: {}", String::from_utf8_lossy(&out.stderr));
        match serde_json::from_slice(&out.stdout).expect("jobs list prints JSON") {
            serde_json::Value::Array(jobs) => jobs,
            other => panic!("jobs list printed {other}"),
        }
    }

    /// Waits until `count` jobs of `kind` exist and all have finished (succeeded or dead) —
    /// the server's workers start a job as soon as it is enqueued — and returns them, newest
    /// first. Bounded: panics after 30 s.
    pub fn await_jobs(&self, kind: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = self.jobs(Some(kind));
            let finished = jobs.iter().all(|j| j["state"] == "succeeded" || j["state"] == "dead");
            if jobs.len() >= count && finished {
                return jobs;
            }
            assert!(Instant::now() < deadline, "{kind} jobs did not finish: {jobs:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String =
                log.chars().rev().take(8000).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("---- stowage server log (tail) ----\n{tail}\n---- end of server log ----");
        }
        if let Some(db) = &self.pg_database {
            psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// SHA-256 digest string (`sha256:<hex>`) of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A unique repository name for one test, e.g. `e2e/<prefix>-<random>`.
pub fn unique_repo(prefix: &str) -> String {
    format!("e2e/{prefix}-{}", &random_suffix()[..8])
}
