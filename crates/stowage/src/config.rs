//! Configuration: defaults, then the YAML file named by `STOWAGE_CONFIG`, then `STOWAGE_*`
//! environment variables (environment beats file beats defaults).
//!
//! Sections and keys follow the CNCF distribution registry's `config.yml` where the concept is
//! the same (`http.addr`, `storage.filesystem.rootdirectory`,
//! `storage.maintenance.uploadpurging`, `validation.manifests.indexes`, `log.level`,
//! `log.formatter`). Any key can be set
//! from the environment with `__` between levels, e.g.
//! `STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__AGE=2h`; the documented short forms are
//! `STOWAGE_HTTP_ADDR`, `STOWAGE_DATA_DIR` and `STOWAGE_DATABASE_URL`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::client_addr::TrustedProxies;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database and (by default) the blobs live.
    pub data_dir: PathBuf,
    pub http: Http,
    pub database: Database,
    pub storage: Storage,
    pub limits: LimitsConfig,
    pub validation: Validation,
    pub log: Log,
    pub auth: AuthConfig,
    pub jobs: JobsConfig,
    pub quotas: Quotas,
    pub gc: Gc,
    pub audit: AuditConfig,
    pub notifications: Notifications,
    pub webhooks: Webhooks,
    pub dependency_proxy: DependencyProxyConfig,
    pub redis: Redis,
    pub ratelimit: RateLimitConfig,
}

/// `redis`: optional, with distribution's key names. When set, the instances share rate
/// limits and failed-login counts through it; when unset, or while it is unreachable, each
/// instance counts on its own and everything else works the same (the metadata database is
/// the source of truth for everything else).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// `host:port`, e.g. `127.0.0.1:6379`; unset (the default): no Redis.
    pub addr: Option<String>,
    pub password: Option<String>,
    /// The database number.
    pub db: i64,
}

impl Redis {
    /// The settings, `None` when `redis.addr` is unset.
    pub fn settings(&self) -> anyhow::Result<Option<shared::RedisSettings>> {
        let Some(addr) = self.addr.as_ref().filter(|a| !a.is_empty()) else { return Ok(None) };
        if self.db < 0 {
            bail!("redis.db must be a database number (0 or more)");
        }
        let settings = shared::RedisSettings {
            addr: addr.clone(),
            password: self.password.clone(),
            db: self.db,
        };
        settings.validate().map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(settings))
    }
}

/// `ratelimit`: requests per second (`rate`, 0 = off) and `burst` per client address and per
/// credential, for each class of requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `GET` and `HEAD` under `/v2` (pulls); off by default.
    pub pull: RateLimitEntry,
    /// Every other request under `/v2` (pushes, deletes).
    pub push: RateLimitEntry,
    /// `/jwt/auth` (logins).
    pub token: RateLimitEntry,
    /// `/api/v4`.
    pub api: RateLimitEntry,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitEntry {
    /// Requests per second on average; 0 turns the limit off.
    pub rate: f64,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Default for RateLimitEntry {
    fn default() -> Self {
        RateLimitEntry { rate: 0.0, burst: 0 }
    }
}

impl RateLimitConfig {
    pub fn limits(&self) -> anyhow::Result<auth::ratelimit::RateLimits> {
        let limit = |key: &str, e: &RateLimitEntry| {
            auth::ratelimit::RateLimit::new(key, e.rate, e.burst).map_err(|e| anyhow::anyhow!(e))
        };
        Ok(auth::ratelimit::RateLimits {
            pull: limit("ratelimit.pull", &self.pull)?,
            push: limit("ratelimit.push", &self.push)?,
            token: limit("ratelimit.token", &self.token)?,
            api: limit("ratelimit.api", &self.api)?,
        })
    }
}

/// The dependency proxy of top-level groups (see the README's "Dependency proxy"). From the
/// environment: `STOWAGE_DEPENDENCY_PROXY__UPSTREAM=http://mirror.internal:5000`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyProxyConfig {
    /// The registry images are pulled from: `https://` (or `http://` on a private network).
    pub upstream: String,
    /// Credentials at the upstream (its token service or basic auth); anonymous without.
    pub username: Option<String>,
    pub password: Option<String>,
    /// More upstreams, tried in order after `upstream` when it fails or lacks an image.
    pub upstreams: Vec<UpstreamEntry>,
    /// After how long a manifest pulled by tag is revalidated upstream (a `HEAD`).
    pub ttl: String,
    /// How long after its last validation a cached manifest is still served, with a warning,
    /// when the upstream fails (timeout, 5xx, 429).
    pub stale_if_error: String,
    /// Whether upstreams that group owners set may be on the local network (never for
    /// untrusted owners: they could make the server call internal services).
    pub allow_local_requests: bool,
    /// The secret the passwords of group upstreams are sealed with (through HKDF); default:
    /// the token signing key, which every instance shares. Changing it makes the stored
    /// passwords unreadable (owners set them again).
    pub encryption_key: Option<String>,
}

/// One more upstream of the instance (`dependency_proxy.upstreams`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl Default for DependencyProxyConfig {
    fn default() -> Self {
        DependencyProxyConfig {
            upstream: "https://registry-1.docker.io".into(),
            username: None,
            password: None,
            upstreams: Vec::new(),
            ttl: "24h".into(),
            stale_if_error: "168h".into(),
            allow_local_requests: false,
            encryption_key: None,
        }
    }
}

impl DependencyProxyConfig {
    /// The instance's upstreams in order, checked (the URL parsed, an empty username none):
    /// `upstream` first, then `upstreams`.
    pub fn upstreams(&self) -> anyhow::Result<Vec<(url::Url, UpstreamEntry)>> {
        let first = UpstreamEntry {
            url: self.upstream.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        };
        let mut out = Vec::new();
        for (i, e) in std::iter::once(&first).chain(&self.upstreams).enumerate() {
            let key = if i == 0 {
                "dependency_proxy.upstream".to_string()
            } else {
                format!("dependency_proxy.upstreams[{}].url", i - 1)
            };
            let url = service::dependency_proxy::upstream_url(&e.url)
                .map_err(|m| anyhow::anyhow!("{key} {m}"))?;
            let username = e.username.clone().filter(|u| !u.is_empty());
            out.push((url, UpstreamEntry { username, ..e.clone() }));
        }
        Ok(out)
    }

    pub fn ttl(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.ttl).context("dependency_proxy.ttl")
    }

    pub fn stale_if_error(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.stale_if_error).context("dependency_proxy.stale_if_error")
    }
}

/// The audit log (see the README's "Audit log").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long audit events are kept, e.g. `90d`; `0` keeps them forever.
    pub retention: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention: "90d".into() }
    }
}

/// Project and group hooks (see the README's "Webhooks and notifications").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhooks {
    /// Hooks may target this machine and its local networks (loopback, private, link-local
    /// addresses). Off by default, as GitLab's "Allow requests to the local network from
    /// webhooks and integrations": otherwise any maintainer could make the server call internal
    /// services. Instance endpoints (`notifications.endpoints`) are the operator's and exempt.
    pub allow_local_requests: bool,
}

/// Registry event notifications, with distribution's keys (see the README's "Webhooks and
/// notifications").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notifications {
    pub events: NotificationEvents,
    /// Instance-wide receivers of every registry event.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationEvents {
    /// Whether manifest pulls are events too (off by default: they are many).
    pub pull: bool,
}

/// One instance-wide notification endpoint, as distribution's `notifications.endpoints[]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    /// Extra headers on every delivery; each a list of values, as distribution's.
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    /// How long one delivery may take.
    pub timeout: String,
    /// Failed attempts of an event after which `backoff` is waited between attempts.
    pub threshold: u32,
    pub backoff: String,
    /// Events whose target has one of these media types are not sent here.
    pub ignoredmediatypes: Vec<String>,
    pub ignore: EndpointIgnore,
    pub disabled: bool,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            name: String::new(),
            url: String::new(),
            headers: Default::default(),
            timeout: "5s".into(),
            threshold: 3,
            backoff: "1s".into(),
            ignoredmediatypes: Vec::new(),
            ignore: EndpointIgnore::default(),
            disabled: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointIgnore {
    pub mediatypes: Vec<String>,
    /// push, pull or delete.
    pub actions: Vec<String>,
}

impl AuditConfig {
    /// `audit.retention`, `None` for forever.
    pub fn retention(&self) -> anyhow::Result<Option<Duration>> {
        let d = parse_duration(&self.retention).context("audit.retention")?;
        Ok((!d.is_zero()).then_some(d))
    }
}

impl Notifications {
    /// Checks every endpoint: a name, an http(s) URL, valid durations and actions, header
    /// names and values that can be sent.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("notifications.endpoints[{i}]");
            if e.name.is_empty() {
                bail!("{key}.name is required");
            }
            if !names.insert(e.name.as_str()) {
                bail!("{key}.name {:?} is used by another endpoint", e.name);
            }
            let ok = url::Url::parse(&e.url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                bail!("{key}.url must be an http:// or https:// URL; {:?} is not", e.url);
            }
            if parse_duration(&e.timeout).with_context(|| format!("{key}.timeout"))?.is_zero() {
                bail!("{key}.timeout must be longer than 0");
            }
            parse_duration(&e.backoff).with_context(|| format!("{key}.backoff"))?;
            for a in &e.ignore.actions {
                if !matches!(a.as_str(), "push" | "pull" | "delete") {
                    bail!("{key}.ignore.actions: {a:?} is not push, pull or delete");
                }
            }
            for (name, values) in &e.headers {
                axum::http::HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("{key}.headers: {name:?} is not a header name"))?;
                for v in values {
                    axum::http::HeaderValue::from_str(v).with_context(|| {
                        format!("{key}.headers.{name}: the value is not a valid header value")
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The durable job queue's runtime (see the README's "Background jobs").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs one instance runs at once.
    pub workers: usize,
    /// How long a claimed job stays claimed without renewal (renewed every third of it while it
    /// runs): a job of an instance that died is taken over after at most this long.
    pub lease: String,
    /// How long finished jobs stay listed before they are pruned, e.g. `7d`.
    pub retention: String,
    /// How often idle workers look for due jobs (retries, jobs enqueued by other instances).
    pub poll: String,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { workers: 2, lease: "60s".into(), retention: "7d".into(), poll: "1s".into() }
    }
}

impl JobsConfig {
    pub fn settings(&self) -> anyhow::Result<jobs::Settings> {
        if self.workers == 0 {
            bail!("jobs.workers must be greater than 0");
        }
        let lease = positive_duration("jobs.lease", &self.lease)?;
        if lease < Duration::from_secs(1) {
            bail!("jobs.lease must be at least 1s");
        }
        Ok(jobs::Settings {
            workers: self.workers,
            lease,
            retention: parse_duration(&self.retention).context("jobs.retention")?,
            poll: positive_duration("jobs.poll", &self.poll)?,
            ..jobs::Settings::default()
        })
    }
}

/// Container registry storage quotas of top-level groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// The limit of every top-level group without its own (`20GiB`, `500MB`, or bytes);
    /// 0 means no limit.
    pub default_limit: ByteSizeSetting,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { default_limit: ByteSizeSetting::Bytes(0) }
    }
}

/// A byte size as configured: a number of bytes, or text with a unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteSizeSetting {
    Bytes(u64),
    Text(String),
}

impl ByteSizeSetting {
    pub fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            ByteSizeSetting::Bytes(n) => Ok(*n),
            ByteSizeSetting::Text(text) => parse_byte_size(text),
        }
    }
}

/// Parses byte sizes such as `20GiB`, `500 MB`, `1.5TiB` or `1048576` (bytes). IEC units
/// (KiB, MiB, GiB, TiB) are powers of 1024, SI units (KB, MB, GB, TB) powers of 1000. The one
/// place byte sizes are read (configuration and CLI).
pub fn parse_byte_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let size: bytesize::ByteSize = s.parse().map_err(|e| {
        anyhow::anyhow!("{s:?} is not a byte size like 20GiB, 500MB or 1048576 ({e})")
    })?;
    if size.as_u64() > i64::MAX as u64 {
        bail!("{s:?} is too large a byte size");
    }
    Ok(size.as_u64())
}

/// Online garbage collection, with GitLab's key names (`gc.disabled`, `gc.reviewafter`,
/// `gc.blobs.interval`, …). From the environment: `STOWAGE_GC__REVIEWAFTER=0s`,
/// `STOWAGE_GC__BLOBS__DISABLED=true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Gc {
    /// No GC worker runs on this instance (items still queue up).
    pub disabled: bool,
    /// How long after the event that queued it an item is reviewed, e.g. `24h`; `0s` for
    /// tests. Up to 60 s of jitter (never more than the delay) is added when it is not 0.
    pub reviewafter: String,
    /// The longest wait between retries after failures, e.g. `24h`.
    pub maxbackoff: String,
    /// The longest one worker pass (one transaction) may take, e.g. `10s`.
    pub transactiontimeout: String,
    /// The blob review worker and the storage deleter.
    pub blobs: GcWorker,
    /// The manifest review worker.
    pub manifests: GcWorker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct GcWorker {
    pub disabled: bool,
    /// How long the worker waits when nothing is due, e.g. `5s`.
    pub interval: String,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            disabled: false,
            reviewafter: "24h".into(),
            maxbackoff: "24h".into(),
            transactiontimeout: "10s".into(),
            blobs: GcWorker::default(),
            manifests: GcWorker::default(),
        }
    }
}

impl Default for GcWorker {
    fn default() -> Self {
        GcWorker { disabled: false, interval: "5s".into() }
    }
}

impl Gc {
    /// The settings as the GC runtime uses them.
    pub fn settings(&self) -> anyhow::Result<gc::GcSettings> {
        Ok(gc::GcSettings {
            disabled: self.disabled,
            review_after: parse_duration(&self.reviewafter).context("gc.reviewafter")?,
            max_backoff: positive_duration("gc.maxbackoff", &self.maxbackoff)?,
            transaction_timeout: positive_duration(
                "gc.transactiontimeout",
                &self.transactiontimeout,
            )?,
            blobs: gc::WorkerSettings {
                disabled: self.blobs.disabled,
                interval: positive_duration("gc.blobs.interval", &self.blobs.interval)?,
            },
            manifests: gc::WorkerSettings {
                disabled: self.manifests.disabled,
                interval: positive_duration("gc.manifests.interval", &self.manifests.interval)?,
            },
        })
    }

    /// The settings the write service queues reviews with (one parse of `gc.reviewafter`).
    pub fn service_settings(&self) -> anyhow::Result<service::GcSettings> {
        Ok(service::GcSettings { review_after: self.settings()?.review_after })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `token` (Docker token authentication, GitLab permissions) or `none` (an open registry,
    /// for local experiments and benchmarks).
    pub mode: AuthMode,
    /// Lifetime of registry tokens issued by `/jwt/auth`, e.g. `5m`.
    pub token_lifetime: String,
    /// Lifetime of CI job tokens, e.g. `1h`.
    pub job_token_lifetime: String,
    /// `iss` of registry tokens.
    pub issuer: String,
    /// `service` (and `aud`) of registry tokens.
    pub service: String,
    /// The token endpoint clients are sent to; default: `<http.host>/jwt/auth`, or the listening
    /// address when `http.host` is unset (never a request's `Host` header, which a client
    /// controls).
    pub realm: Option<String>,
    /// PKCS#8 PEM file with a P-256 key to sign tokens; default: generated on first start and
    /// kept in the metadata database, shared by every instance.
    pub signing_key: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Token,
            token_lifetime: "5m".into(),
            job_token_lifetime: "1h".into(),
            issuer: "stowage".into(),
            service: "container_registry".into(),
            realm: None,
            signing_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Listen address; port 0 picks a free port (logged at start).
    pub addr: String,
    /// The URL clients reach the registry at (e.g. `https://registry.example.com`);
    /// default `http://<addr>`. Used for `CI_REGISTRY` and the token realm.
    pub host: Option<String>,
    pub timeouts: HttpTimeouts,
    /// Open client connections at most. When every slot is taken, the connection that has
    /// waited longest without a request in progress is closed to make room; if every
    /// connection has a request in progress, new connections wait in the listen queue.
    pub max_connections: usize,
    /// Proxies (CIDRs) whose `X-Forwarded-For` names the client; default none. From the
    /// environment: `STOWAGE_HTTP__TRUSTED_PROXIES=[10.0.0.0/8,127.0.0.1/32]`.
    pub trusted_proxies: TrustedProxies,
    /// The operations endpoints (distribution's `http.debug`).
    pub debug: HttpDebug,
    /// Serve HTTPS directly (distribution's `http.tls`).
    pub tls: HttpTls,
    /// On SIGTERM: how long requests in progress may take to finish before the server exits
    /// anyway (distribution's `http.draintimeout`), e.g. `30s`.
    pub draintimeout: String,
}

/// `http.debug`: liveness (`/debug/health`), readiness (`/debug/ready`) and Prometheus
/// metrics (`/metrics`) on an address of their own, for the cluster rather than for clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpDebug {
    /// Listen address, e.g. `127.0.0.1:5001`; unset (the default) serves none of it.
    pub addr: Option<String>,
}

/// `http.tls`: PEM files of the certificate chain and its private key. Both or neither.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTls {
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl HttpTls {
    /// The certificate and key files when TLS is on; an error when only one is set.
    pub fn files(&self) -> anyhow::Result<Option<(&std::path::Path, &std::path::Path)>> {
        fn set(p: &Option<PathBuf>) -> Option<&std::path::Path> {
            p.as_deref().filter(|p| !p.as_os_str().is_empty())
        }
        match (set(&self.certificate), set(&self.key)) {
            (Some(certificate), Some(key)) => Ok(Some((certificate, key))),
            (None, None) => Ok(None),
            (Some(_), None) => {
                bail!("http.tls.certificate is set but http.tls.key is not: set both")
            }
            (None, Some(_)) => {
                bail!("http.tls.key is set but http.tls.certificate is not: set both")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTimeouts {
    /// Time a client has to send a complete request head (request line and headers): from
    /// the connection's start, or from the first byte of a later request on a kept-alive
    /// connection. Request bodies are not covered: a slow, steady upload is never cut.
    pub header_read: String,
    /// Time a kept-alive connection may wait for the next request before it is closed.
    pub idle: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `sqlite://…` or `postgres://…`; default: `<data_dir>/stowage.db`.
    pub url: Option<String>,
    /// How long a request waits for a database connection (GitLab registry's name) before it
    /// answers 503 with `Retry-After`: an outage fails fast instead of hanging requests.
    pub connecttimeout: String,
}

impl Default for Database {
    fn default() -> Self {
        let timeout = meta::PoolSettings::default().acquire_timeout;
        Database { url: None, connecttimeout: humantime::format_duration(timeout).to_string() }
    }
}

impl Database {
    /// The pool settings as the metadata store takes them.
    pub fn pool_settings(&self) -> anyhow::Result<meta::PoolSettings> {
        let acquire_timeout =
            parse_duration(&self.connecttimeout).context("database.connecttimeout")?;
        if acquire_timeout.is_zero() {
            bail!("database.connecttimeout must be longer than 0");
        }
        Ok(meta::PoolSettings { acquire_timeout })
    }
}

/// Where blobs are stored: one backend section at a time, with distribution's key names
/// (`storage.filesystem`, `storage.s3`, `storage.azure`, `storage.gcs`, `storage.inmemory`);
/// none means the filesystem under the data dir.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inmemory: Option<InMemory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<Azure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Gcs>,
    pub redirect: Redirect,
    pub maintenance: Maintenance,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filesystem {
    /// Root of blob storage; default: the data dir.
    pub rootdirectory: Option<PathBuf>,
}

/// `storage.inmemory: {}`: blobs in memory, lost on exit (tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InMemory {}

/// `storage.s3` (distribution's names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    pub bucket: String,
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub regionendpoint: Option<String>,
    pub forcepathstyle: bool,
    /// With `secretkey`; both absent: the standard AWS credential chain.
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub rootdirectory: Option<String>,
    /// First part size of multipart writes (at least 5MiB; parts grow for large blobs).
    pub chunksize: Option<ByteSizeSetting>,
    /// Accepted for distribution compatibility; commits never copy objects, so unused.
    pub multipartcopythresholdsize: Option<ByteSizeSetting>,
}

/// `storage.azure` (distribution's names, plus `endpoint` for Azurite or private clouds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Azure {
    pub accountname: String,
    pub accountkey: Option<String>,
    pub container: String,
    /// Domain suffix, default `core.windows.net`.
    pub realm: Option<String>,
    /// The account URL instead of `https://<accountname>.blob.<realm>`.
    pub endpoint: Option<String>,
    pub rootdirectory: Option<String>,
}

/// `storage.gcs` (distribution's names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gcs {
    pub bucket: String,
    /// Service account key file; absent: application default credentials.
    pub keyfile: Option<PathBuf>,
    pub rootdirectory: Option<String>,
}

/// `storage.redirect`: blob GETs answered with a 307 to a presigned object store URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redirect {
    /// `false` turns redirects on (object stores only; the filesystem always serves bytes).
    pub disable: bool,
    /// How long a presigned URL stays valid, e.g. `20m`.
    pub expiry: String,
}

impl Default for Redirect {
    fn default() -> Self {
        Redirect { disable: true, expiry: "20m".into() }
    }
}

impl Storage {
    /// The one configured backend as typed settings; more than one is refused, none is the
    /// filesystem under `data_dir`.
    pub fn backend(&self, data_dir: &std::path::Path) -> anyhow::Result<blobstore::Backend> {
        use blobstore::backend::{AzureSettings, GcsSettings, S3Settings, MIN_PART_SIZE};
        let configured: Vec<&str> = [
            ("storage.filesystem", self.filesystem.is_some()),
            ("storage.inmemory", self.inmemory.is_some()),
            ("storage.s3", self.s3.is_some()),
            ("storage.azure", self.azure.is_some()),
            ("storage.gcs", self.gcs.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if configured.len() > 1 {
            bail!(
                "storage: {} are all configured; configure exactly one storage backend",
                configured.join(" and ")
            );
        }
        let required = |key: &str, value: &str| -> anyhow::Result<String> {
            if value.trim().is_empty() {
                bail!("{key} is required");
            }
            Ok(value.to_string())
        };
        let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(if let Some(s3) = &self.s3 {
            let chunk_size = match &s3.chunksize {
                Some(size) => {
                    let bytes = size.bytes().context("storage.s3.chunksize")?;
                    if bytes < MIN_PART_SIZE as u64 || bytes > 5 << 30 {
                        bail!(
                            "storage.s3.chunksize must be between 5MiB and 5GiB (S3's part sizes)"
                        );
                    }
                    Some(bytes as usize)
                }
                None => None,
            };
            if let Some(threshold) = &s3.multipartcopythresholdsize {
                threshold.bytes().context("storage.s3.multipartcopythresholdsize")?;
            }
            if let Some(endpoint) = nonempty(&s3.regionendpoint) {
                check_url("storage.s3.regionendpoint", &endpoint)?;
            }
            blobstore::Backend::S3(S3Settings {
                bucket: required("storage.s3.bucket", &s3.bucket)?,
                region: nonempty(&s3.region),
                endpoint: nonempty(&s3.regionendpoint),
                force_path_style: s3.forcepathstyle,
                access_key: nonempty(&s3.accesskey),
                secret_key: nonempty(&s3.secretkey),
                root: nonempty(&s3.rootdirectory),
                chunk_size,
            })
        } else if let Some(azure) = &self.azure {
            if let Some(endpoint) = nonempty(&azure.endpoint) {
                check_url("storage.azure.endpoint", &endpoint)?;
            }
            blobstore::Backend::Azure(AzureSettings {
                account_name: required("storage.azure.accountname", &azure.accountname)?,
                account_key: nonempty(&azure.accountkey),
                container: required("storage.azure.container", &azure.container)?,
                endpoint: nonempty(&azure.endpoint),
                realm: nonempty(&azure.realm),
                root: nonempty(&azure.rootdirectory),
            })
        } else if let Some(gcs) = &self.gcs {
            blobstore::Backend::Gcs(GcsSettings {
                bucket: required("storage.gcs.bucket", &gcs.bucket)?,
                keyfile: gcs.keyfile.clone(),
                root: nonempty(&gcs.rootdirectory),
            })
        } else if self.inmemory.is_some() {
            blobstore::Backend::InMemory
        } else {
            let root = self.filesystem.as_ref().and_then(|f| f.rootdirectory.clone());
            blobstore::Backend::Filesystem { root: root.unwrap_or_else(|| data_dir.to_path_buf()) }
        })
    }

    /// How long presigned blob URLs stay valid, or `None` when redirects are off.
    pub fn redirect_expiry(&self) -> anyhow::Result<Option<Duration>> {
        let expiry = parse_duration(&self.redirect.expiry).context("storage.redirect.expiry")?;
        if expiry.is_zero() || expiry > Duration::from_secs(7 * 86400) {
            bail!("storage.redirect.expiry must be longer than 0 and at most 7d (S3's limit)");
        }
        Ok((!self.redirect.disable).then_some(expiry))
    }
}

/// `value` must be an http(s) URL with a host.
fn check_url(key: &str, value: &str) -> anyhow::Result<()> {
    let ok = url::Url::parse(value).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if !ok {
        bail!("{key} must be an http:// or https:// URL, e.g. https://s3.example.com; {value:?} is not");
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Maintenance {
    pub uploadpurging: UploadPurging,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadPurging {
    pub enabled: bool,
    /// Idle time after which an unfinished upload is removed, e.g. `24h`.
    pub age: String,
    /// How often to look for idle uploads, e.g. `1h`.
    pub interval: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_manifest_bytes: usize,
    /// 0 means no limit.
    pub max_blob_bytes: u64,
}

/// What the registry checks in pushed content (distribution's `validation` section; only
/// `manifests.indexes` so far).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Validation {
    pub manifests: ValidationManifests,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationManifests {
    pub indexes: ValidationIndexes,
}

/// Which manifests an index lists must be in the repository when the index is pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationIndexes {
    /// `all` (every one), `none` (sparse indexes are accepted) or `list` (those of the
    /// platforms in `platformlist`); case does not matter, as in distribution.
    pub platforms: String,
    pub platformlist: Vec<PlatformEntry>,
}

/// One entry of `platformlist`: distribution's two keys, nothing else (a `variant` would not
/// be compared, so it is refused rather than silently ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformEntry {
    pub architecture: String,
    pub os: String,
}

impl Default for ValidationIndexes {
    fn default() -> Self {
        ValidationIndexes { platforms: "all".into(), platformlist: Vec::new() }
    }
}

impl ValidationIndexes {
    /// The setting as the registry applies it. A `platformlist` is only read with `list`
    /// (distribution ignores it otherwise too).
    pub fn index_validation(&self) -> anyhow::Result<oci::IndexValidation> {
        const KEY: &str = "validation.manifests.indexes";
        Ok(match self.platforms.to_ascii_lowercase().as_str() {
            "all" => oci::IndexValidation::All,
            "none" => oci::IndexValidation::None,
            "list" => {
                if self.platformlist.is_empty() {
                    bail!(
                        "{KEY}.platforms is list but {KEY}.platformlist is empty: name the \
                         platforms whose manifests must be present, e.g. \
                         [{{architecture: amd64, os: linux}}], or use all or none"
                    );
                }
                let mut list = Vec::new();
                for p in &self.platformlist {
                    if p.architecture.is_empty() || p.os.is_empty() {
                        bail!("{KEY}.platformlist entries need both architecture and os");
                    }
                    list.push(oci::Platform {
                        architecture: p.architecture.clone(),
                        os: p.os.clone(),
                    });
                }
                oci::IndexValidation::Platforms(list)
            }
            other => bail!("{KEY}.platforms must be all, none or list, not {other:?}"),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info`, `debug` or `trace` (`RUST_LOG` overrides).
    pub level: LogLevel,
    /// `text` or `json`.
    pub formatter: LogFormatter,
}

/// `auth.mode`. Typed, so a misspelt value is refused with the accepted ones named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Token,
    None,
}

/// `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// `log.formatter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatter {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http: Http::default(),
            database: Database::default(),
            storage: Storage::default(),
            limits: LimitsConfig::default(),
            validation: Validation::default(),
            log: Log::default(),
            auth: AuthConfig::default(),
            jobs: JobsConfig::default(),
            quotas: Quotas::default(),
            gc: Gc::default(),
            audit: AuditConfig::default(),
            notifications: Notifications::default(),
            webhooks: Webhooks::default(),
            dependency_proxy: DependencyProxyConfig::default(),
            redis: Redis::default(),
            ratelimit: RateLimitConfig::default(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            addr: "127.0.0.1:5000".into(),
            host: None,
            timeouts: HttpTimeouts::default(),
            max_connections: 1024,
            trusted_proxies: Default::default(),
            debug: HttpDebug::default(),
            tls: HttpTls::default(),
            draintimeout: "30s".into(),
        }
    }
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts { header_read: "10s".into(), idle: "60s".into() }
    }
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging { enabled: true, age: "24h".into(), interval: "1h".into() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_manifest_bytes: 4 * 1024 * 1024, max_blob_bytes: 0 }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log { level: LogLevel::Info, formatter: LogFormatter::Text }
    }
}

/// Parses durations such as `90s`, `30m`, `24h`, `7d`, `250ms` or `1h 30m` (a bare number is
/// seconds). The one place configuration durations are read.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().with_context(|| format!("{s:?} is too large a duration"))?;
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .with_context(|| format!("{s:?} is not a duration like 250ms, 90s, 30m, 24h or 7d"))
}

/// Parses the duration of configuration key `key` (see [`parse_duration`]) and refuses 0:
/// the one check of every setting that must be longer than nothing.
pub fn positive_duration(key: &str, value: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(value).with_context(|| key.to_string())?;
    if d.is_zero() {
        bail!("{key} must be longer than 0");
    }
    Ok(d)
}

/// A URL without its password, for messages and `config show`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Whether a configuration key holds a secret that `config show` must not print.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "access_key", "accesskey", "private_key", "credentials"]
        .iter()
        .any(|s| key.contains(s))
        || key == "token"
        || key.ends_with("_token")
        || key.ends_with("key") && !key.ends_with("signing_key")
}

/// Masks secrets in a configuration tree: values of secret keys, passwords inside URLs (e.g.
/// `database.url`) and inline PEM keys. By key name, so settings added later are covered too.
fn mask_secrets(value: &mut serde_yaml::Value, key: &str) {
    use serde_yaml::Value;
    match value {
        // Notification endpoints' headers carry credentials (`Authorization`): all masked.
        Value::Mapping(map) if key == "headers" => {
            for (_, v) in map.iter_mut() {
                mask_secrets(v, "password");
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                mask_secrets(v, k.as_str().unwrap_or_default());
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| mask_secrets(v, key)),
        Value::String(s) if !s.is_empty() && is_secret_key(key) => *s = "***".into(),
        Value::String(s) if s.contains("-----BEGIN") => *s = "***".into(),
        Value::String(s) if s.contains("://") => *s = redact(s),
        _ => {}
    }
}

/// `STOWAGE_*` variables that are not configuration keys (lowercase, prefix removed).
const NOT_CONFIG_KEYS: &[&str] = &[
    "config",
    "admin_password",
    "admin_token",
    "new_user_password",
    "bin",
    "hostile_seed",
    "hostile_cases",
];

/// A figment error as one message per problem, naming the key, where it was set (file or
/// environment variable) and what is accepted.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            let what = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    let mut what = format!("unknown key; known keys here: {}", expected.join(", "));
                    // `STOWAGE_AUTH_MODE` meant `STOWAGE_AUTH__MODE`: levels need `__`.
                    if let Some((section, rest)) = field
                        .match_indices('_')
                        .map(|(i, _)| (&field[..i], &field[i + 1..]))
                        .find(|(section, _)| expected.contains(section))
                    {
                        what.push_str(&format!(
                            " (levels are separated by `__`: did you mean {section}.{rest}, \
                             STOWAGE_{}__{}?)",
                            section.to_ascii_uppercase(),
                            rest.to_ascii_uppercase()
                        ));
                    }
                    what
                }
                figment::error::Kind::UnknownVariant(actual, expected) => {
                    format!("{actual:?} is not accepted; use one of: {}", expected.join(", "))
                }
                kind => kind.to_string(),
            };
            let key = path.join(".");
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
            let place = match &e.metadata {
                _ if from_env => format!(
                    " (environment variable STOWAGE_{})",
                    path.iter().map(|k| k.to_ascii_uppercase()).collect::<Vec<_>>().join("__")
                ),
                Some(figment::Metadata { source: Some(source), .. }) => format!(" (in {source})"),
                _ => String::new(),
            };
            format!("{key}{place}: {what}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads defaults < `STOWAGE_CONFIG` file < `STOWAGE_*` environment, refusing unknown keys
    /// (in the file and in the environment alike) and invalid values.
    pub fn load() -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var("STOWAGE_CONFIG") {
            if !std::path::Path::new(&path).exists() {
                bail!("STOWAGE_CONFIG names {path}, which does not exist");
            }
            figment = figment.merge(Yaml::file(&path));
        }
        let config: Config = figment
            .merge(Self::env())
            .extract()
            .map_err(|e| anyhow::anyhow!(describe(e)))
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// `STOWAGE_*` variables as configuration keys: `__` separates levels
    /// (`STOWAGE_AUTH__MODE` is `auth.mode`); a single `_` does not, so `STOWAGE_AUTH_MODE`
    /// is the unknown top-level key `auth_mode` and refused like any other unknown key.
    fn env() -> Env {
        Env::prefixed("STOWAGE_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                // Variables that are not configuration keys: read elsewhere by the binary, or
                // knobs of the end-to-end test harness (inherited by the servers it starts).
                !NOT_CONFIG_KEYS.contains(&key.as_str()) && !key.starts_with("test_")
            })
            .map(|key| {
                match key.as_str().to_ascii_lowercase().as_str() {
                    "http_addr" => "http.addr".to_string(),
                    "data_dir" => "data_dir".to_string(),
                    "database_url" => "database.url".to_string(),
                    other => other.replace("__", "."),
                }
                .into()
            })
    }

    fn validate(&self) -> anyhow::Result<()> {
        parse_duration(&self.storage.maintenance.uploadpurging.age)
            .context("storage.maintenance.uploadpurging.age")?;
        parse_duration(&self.storage.maintenance.uploadpurging.interval)
            .context("storage.maintenance.uploadpurging.interval")?;
        parse_duration(&self.auth.token_lifetime).context("auth.token_lifetime")?;
        parse_duration(&self.auth.job_token_lifetime).context("auth.job_token_lifetime")?;
        positive_duration("http.timeouts.header_read", &self.http.timeouts.header_read)?;
        positive_duration("http.timeouts.idle", &self.http.timeouts.idle)?;
        parse_duration(&self.http.draintimeout).context("http.draintimeout")?;
        self.http.tls.files()?;
        if self.http.max_connections == 0 {
            bail!("http.max_connections must be greater than 0");
        }
        if let Some(host) = self.http.host.as_ref().filter(|h| !h.is_empty()) {
            let ok = url::Url::parse(host).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                bail!(
                    "http.host must be the URL clients reach the registry at, with http:// or \
                     https://, e.g. https://registry.example.com; {host:?} is not"
                );
            }
        }
        if self.limits.max_manifest_bytes == 0 {
            bail!("limits.max_manifest_bytes must be greater than 0");
        }
        self.validation.manifests.indexes.index_validation()?;
        self.database.pool_settings()?;
        self.jobs.settings()?;
        self.quotas.default_limit.bytes().context("quotas.default_limit")?;
        self.gc.settings()?;
        self.audit.retention()?;
        self.notifications.validate()?;
        self.storage.backend(&self.data_dir)?;
        self.storage.redirect_expiry()?;
        self.redis.settings()?;
        self.ratelimit.limits()?;
        self.dependency_proxy.upstreams()?;
        self.dependency_proxy.ttl()?;
        self.dependency_proxy.stale_if_error()?;
        Ok(())
    }

    /// How old a storage object must be before the GC leftovers sweep may remove it:
    /// `max(1h, storage.maintenance.uploadpurging.age)`. An upload session lives at most the
    /// purge age idle, so nothing older belongs to one.
    pub fn leftovers_age(&self) -> anyhow::Result<Duration> {
        let purge = parse_duration(&self.storage.maintenance.uploadpurging.age)?;
        Ok(purge.max(Duration::from_secs(3600)))
    }

    /// The configuration as `stowage config show` prints it: every key, defaults filled in
    /// (the database URL and blob root derived from `data_dir` too), secrets masked.
    pub fn resolved_yaml(&self) -> anyhow::Result<String> {
        let mut resolved = self.clone();
        let data_dir =
            std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        if resolved.database.url.as_ref().is_none_or(|u| u.is_empty()) {
            resolved.database.url =
                Some(format!("sqlite://{}", data_dir.join("stowage.db").display()));
        }
        if let blobstore::Backend::Filesystem { root } = self.storage.backend(&data_dir)? {
            resolved.storage.filesystem = Some(Filesystem { rootdirectory: Some(root) });
        }
        let mut value = serde_yaml::to_value(&resolved)?;
        mask_secrets(&mut value, "");
        Ok(serde_yaml::to_string(&value)?)
    }

    /// The metadata database URL: the configured one, or a SQLite file in the data dir.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = self.database.url.as_ref().filter(|u| !u.is_empty()) {
            return Ok(url.clone());
        }
        let dir = self.data_dir_created()?;
        Ok(format!("sqlite://{}", dir.join("stowage.db").display()))
    }

    /// Opens (and migrates) the metadata database at `url` with the configured pool settings:
    /// the one way every command connects.
    pub async fn connect_store(&self, url: &str) -> anyhow::Result<meta::Store> {
        meta::Store::connect_with(url, &self.database.pool_settings()?)
            .await
            .with_context(|| format!("cannot open the metadata database ({})", redact(url)))
    }

    /// The data dir, created if needed, as an absolute path.
    pub fn data_dir_created(&self) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data dir {}", self.data_dir.display()))?;
        Ok(std::fs::canonicalize(&self.data_dir)?)
    }

    /// `https` when the server serves TLS itself (`http.tls`), else `http`.
    pub fn scheme(&self) -> &'static str {
        match self.http.tls.files() {
            Ok(Some(_)) => "https",
            _ => "http",
        }
    }

    /// The registry's external URL, without a trailing slash.
    pub fn external_url(&self) -> String {
        match &self.http.host {
            Some(host) if !host.is_empty() => host.trim_end_matches('/').to_string(),
            _ => format!("{}://{}", self.scheme(), self.http.addr),
        }
    }

    /// The token endpoint clients are sent to: `auth.realm`, else `<http.host>/jwt/auth`, else
    /// the address the server listens on.
    pub fn token_realm(&self, listening: std::net::SocketAddr) -> String {
        if let Some(realm) = self.auth.realm.as_ref().filter(|r| !r.is_empty()) {
            return realm.clone();
        }
        match self.http.host.as_ref().filter(|h| !h.is_empty()) {
            Some(_) => format!("{}/jwt/auth", self.external_url()),
            None => format!("{}://{listening}/jwt/auth", self.scheme()),
        }
    }

    /// The configured storage backend (the filesystem under the data dir by default).
    pub fn storage_backend(&self) -> anyhow::Result<blobstore::Backend> {
        let rooted = self.storage.filesystem.as_ref().is_some_and(|f| f.rootdirectory.is_some());
        match self.storage.backend(&self.data_dir)? {
            blobstore::Backend::Filesystem { .. } if !rooted => {
                Ok(blobstore::Backend::Filesystem { root: self.data_dir_created()? })
            }
            backend => Ok(backend),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_byte_size("500 MB").unwrap(), 500_000_000);
        assert_eq!(parse_byte_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_byte_size("0").unwrap(), 0);
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("-1GiB").is_err());
        assert_eq!(ByteSizeSetting::Text("1KiB".into()).bytes().unwrap(), 1024);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 1h 30m ").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn gc_settings_from_defaults_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            let settings = Config::load().map_err(|e| e.to_string())?.gc.settings().unwrap();
            assert_eq!(settings, gc::GcSettings::default(), "GitLab's defaults");
            jail.create_file(
                "stowage.yml",
                "gc:\n  maxbackoff: 1h\n  blobs:\n    interval: 2s\n  manifests:\n    disabled: true\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            jail.set_env("STOWAGE_GC__REVIEWAFTER", "0s");
            jail.set_env("STOWAGE_GC__TRANSACTIONTIMEOUT", "3s");
            jail.set_env("STOWAGE_GC__BLOBS__DISABLED", "true");
            let config = Config::load().map_err(|e| e.to_string())?;
            let settings = config.gc.settings().unwrap();
            assert_eq!(settings.review_after, Duration::ZERO);
            assert_eq!(settings.max_backoff, Duration::from_secs(3600));
            assert_eq!(settings.transaction_timeout, Duration::from_secs(3));
            assert_eq!(settings.blobs.interval, Duration::from_secs(2));
            assert!(settings.blobs.disabled && settings.manifests.disabled && !settings.disabled);
            assert_eq!(settings.manifests.interval, Duration::from_secs(5));
            assert_eq!(config.leftovers_age().unwrap(), Duration::from_secs(24 * 3600));
            jail.set_env("STOWAGE_GC__DISABLED", "true");
            assert!(Config::load().map_err(|e| e.to_string())?.gc.disabled);
            jail.set_env("STOWAGE_GC__BLOBS__INTERVAL", "0s");
            let error = format!("{:#}", Config::load().unwrap_err());
            assert!(error.contains("gc.blobs.interval must be longer than 0"), "{error}");
            jail.set_env("STOWAGE_GC__BLOBS__INTERVAL", "soon");
            let error = format!("{:#}", Config::load().unwrap_err());
            assert!(error.contains("gc.blobs.interval"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn storage_backends_from_file_and_environment_one_at_a_time() {
        use blobstore::Backend;
        figment::Jail::expect_with(|jail| {
            let config = Config::load().map_err(|e| e.to_string())?;
            assert!(matches!(config.storage_backend().unwrap(), Backend::Filesystem { .. }));
            assert_eq!(config.storage.redirect_expiry().unwrap(), None, "redirects off by default");
            jail.create_file(
                "stowage.yml",
                "storage:\n  s3:\n    bucket: blobs\n    region: eu-west-1\n    \
                 regionendpoint: http://127.0.0.1:9000\n    forcepathstyle: true\n    \
                 accesskey: AKIAEXAMPLE\n    secretkey: s3cr3t\n    rootdirectory: /registry\n    \
                 chunksize: 16MiB\n    multipartcopythresholdsize: 33554432\n  \
                 redirect:\n    disable: false\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            jail.set_env("STOWAGE_STORAGE__S3__BUCKET", "from-env");
            let config = Config::load().map_err(|e| e.to_string())?;
            let Backend::S3(s3) = config.storage_backend().unwrap() else { panic!("not s3") };
            assert_eq!(s3.bucket, "from-env", "the environment beats the file");
            assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
            assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
            assert!(s3.force_path_style);
            assert_eq!(s3.root.as_deref(), Some("/registry"));
            assert_eq!(s3.chunk_size, Some(16 << 20));
            assert_eq!(config.storage.redirect_expiry().unwrap(), Some(Duration::from_secs(1200)));
            let shown = config.resolved_yaml().unwrap();
            assert!(!shown.contains("s3cr3t") && !shown.contains("AKIAEXAMPLE"), "{shown}");
            assert!(shown.contains("bucket: from-env"), "{shown}");
            assert!(!shown.contains("filesystem"), "only the configured backend: {shown}");

            jail.set_env("STOWAGE_STORAGE__FILESYSTEM__ROOTDIRECTORY", "/srv/blobs");
            let error = format!("{:#}", Config::load().unwrap_err());
            assert!(
                error.contains(
                    "storage.filesystem and storage.s3 are all configured; configure \
                     exactly one storage backend"
                ),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn storage_mistakes_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            for (vars, expected) in [
                (vec![("S3__REGION", "x")], "storage.s3.bucket is required"),
                (
                    vec![("S3__BUCKET", "b"), ("S3__CHUNKSIZE", "1MiB")],
                    "storage.s3.chunksize must be between 5MiB and 5GiB",
                ),
                (vec![("S3__BUCKET", "b"), ("S3__CHUNKSIZE", "lots")], "storage.s3.chunksize"),
                (
                    vec![("S3__BUCKET", "b"), ("S3__REGIONENDPOINT", "127.0.0.1:9000")],
                    "storage.s3.regionendpoint must be an http:// or https:// URL",
                ),
                (vec![("S3__BUCKET", "b"), ("S3__BUKET", "c")], "storage.s3.buket"),
                (vec![("AZURE__ACCOUNTNAME", "a")], "storage.azure.container is required"),
                (vec![("AZURE__CONTAINER", "c")], "storage.azure.accountname is required"),
                (vec![("GCS__KEYFILE", "/k.json")], "storage.gcs.bucket is required"),
                (
                    vec![("GCS__BUCKET", "b"), ("AZURE__ACCOUNTNAME", "a")],
                    "storage.azure and storage.gcs are all configured",
                ),
                (vec![("REDIRECT__EXPIRY", "0s")], "storage.redirect.expiry must be longer than 0"),
                (vec![("REDIRECT__EXPIRY", "8d")], "at most 7d"),
            ] {
                let names: Vec<String> =
                    vars.iter().map(|(k, _)| format!("STOWAGE_STORAGE__{k}")).collect();
                for (name, (_, value)) in names.iter().zip(&vars) {
                    jail.set_env(name, value);
                }
                let error = format!("{:#}", Config::load().unwrap_err());
                assert!(error.contains(expected), "{vars:?}: {error}");
                for name in &names {
                    std::env::remove_var(name);
                }
            }
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn storage_azure_gcs_and_inmemory_sections() {
        use blobstore::Backend;
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "stowage.yml",
                "storage:\n  azure:\n    accountname: acct\n    accountkey: c2VjcmV0\n    \
                 container: registry\n    realm: core.chinacloudapi.cn\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            let config = Config::load().map_err(|e| e.to_string())?;
            let Backend::Azure(a) = config.storage_backend().unwrap() else { panic!("not azure") };
            assert_eq!(a.realm.as_deref(), Some("core.chinacloudapi.cn"));
            assert!(!config.resolved_yaml().unwrap().contains("c2VjcmV0"));
            jail.create_file(
                "stowage.yml",
                "storage:\n  gcs:\n    bucket: b\n    keyfile: /etc/key.json\n",
            )?;
            let config = Config::load().map_err(|e| e.to_string())?;
            let Backend::Gcs(g) = config.storage_backend().unwrap() else { panic!("not gcs") };
            assert_eq!(g.keyfile.as_deref(), Some(std::path::Path::new("/etc/key.json")));
            jail.create_file("stowage.yml", "storage:\n  inmemory: {}\n")?;
            let config = Config::load().map_err(|e| e.to_string())?;
            assert!(matches!(config.storage_backend().unwrap(), Backend::InMemory));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn connection_limits_must_be_positive() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("STOWAGE_HTTP__TIMEOUTS__IDLE", "0s");
            let error = format!("{:#}", Config::load().unwrap_err());
            assert!(error.contains("http.timeouts.idle must be longer than 0"), "{error}");
            jail.set_env("STOWAGE_HTTP__TIMEOUTS__IDLE", "1m");
            jail.set_env("STOWAGE_HTTP__MAX_CONNECTIONS", "0");
            let error = format!("{:#}", Config::load().unwrap_err());
            assert!(error.contains("http.max_connections must be greater than 0"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn env_beats_file_beats_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "stowage.yml",
                "http:\n  addr: 0.0.0.0:6000\nstorage:\n  maintenance:\n    uploadpurging:\n      age: 2h\nlog:\n  level: debug\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            jail.set_env("STOWAGE_HTTP_ADDR", "127.0.0.1:7000");
            jail.set_env("STOWAGE_DATABASE_URL", "postgres://x@y/z");
            jail.set_env("STOWAGE_HTTP__TIMEOUTS__HEADER_READ", "3s");
            jail.set_env("STOWAGE_HTTP__MAX_CONNECTIONS", "64");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.http.timeouts.header_read, "3s");
            assert_eq!(config.http.timeouts.idle, "60s");
            assert_eq!(config.http.max_connections, 64);
            assert_eq!(config.http.addr, "127.0.0.1:7000");
            assert_eq!(config.storage.maintenance.uploadpurging.age, "2h");
            assert_eq!(config.storage.maintenance.uploadpurging.interval, "1h");
            assert_eq!(config.log.level, LogLevel::Debug);
            assert_eq!(config.database.url.as_deref(), Some("postgres://x@y/z"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn index_validation_from_file_and_environment() {
        use oci::{IndexValidation, Platform};
        let platform = |architecture: &str, os: &str| Platform {
            architecture: architecture.into(),
            os: os.into(),
        };
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load()
                    .map_err(|e| e.to_string())?
                    .validation
                    .manifests
                    .indexes
                    .index_validation()
                    .unwrap(),
                IndexValidation::All,
                "all by default"
            );
            // Distribution's own example spells the value `List`.
            jail.create_file(
                "stowage.yml",
                "validation:\n  manifests:\n    indexes:\n      platforms: List\n      platformlist:\n      - architecture: amd64\n        os: linux\n      - os: windows\n        architecture: arm64\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                config.validation.manifests.indexes.index_validation().unwrap(),
                IndexValidation::Platforms(vec![
                    platform("amd64", "linux"),
                    platform("arm64", "windows")
                ])
            );
            jail.set_env("STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMS", "none");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                config.validation.manifests.indexes.index_validation().unwrap(),
                IndexValidation::None
            );
            jail.set_env("STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMS", "list");
            jail.set_env(
                "STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMLIST",
                "[{architecture=s390x,os=linux}]",
            );
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                config.validation.manifests.indexes.index_validation().unwrap(),
                IndexValidation::Platforms(vec![platform("s390x", "linux")])
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn index_validation_refusals() {
        for (env, expected) in [
            (vec![("PLATFORMS", "some")], "must be all, none or list, not \"some\""),
            (vec![("PLATFORMS", "list")], "platformlist is empty"),
            (
                vec![("PLATFORMS", "list"), ("PLATFORMLIST", "[{architecture=amd64,os=\"\"}]")],
                "need both",
            ),
            (
                vec![
                    ("PLATFORMS", "list"),
                    ("PLATFORMLIST", "[{architecture=arm,os=linux,variant=v7}]"),
                ],
                "variant",
            ),
        ] {
            figment::Jail::expect_with(|jail| {
                for (key, value) in &env {
                    jail.set_env(format!("STOWAGE_VALIDATION__MANIFESTS__INDEXES__{key}"), value);
                }
                let error = format!("{:#}", Config::load().unwrap_err());
                assert!(error.contains(expected), "{env:?}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail dictates the closure's error type
    fn trusted_proxies_from_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            let load = |jail: &mut figment::Jail, value: &str| {
                jail.set_env("STOWAGE_HTTP__TRUSTED_PROXIES", value);
                Config::load().map(|c| c.http.trusted_proxies).map_err(|e| format!("{e:#}"))
            };
            let both = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1/32"]).unwrap();
            assert_eq!(load(jail, "[10.0.0.0/8,127.0.0.1/32]")?, both);
            assert_eq!(load(jail, "[10.0.0.0/8, 127.0.0.1]")?, both);
            assert_eq!(load(jail, "10.0.0.0/8,127.0.0.1/32")?, both);
            assert_eq!(load(jail, "127.0.0.1/32")?, TrustedProxies::parse(&["127.0.0.1"]).unwrap());
            assert_eq!(load(jail, "[fd00::/8]")?, TrustedProxies::parse(&["fd00::/8"]).unwrap());
            let bad = load(jail, "[10.0.0.0/33]").unwrap_err();
            assert!(bad.contains("CIDR"), "{bad}");
            jail.set_env("STOWAGE_HTTP__TRUSTED_PROXIES", "");
            jail.create_file(
                "stowage.yml",
                "http:\n  trusted_proxies: [10.0.0.0/8, 127.0.0.1/32]\n",
            )?;
            jail.set_env("STOWAGE_CONFIG", "stowage.yml");
            // An empty variable still wins over the file (and means none).
            assert!(Config::load().map_err(|e| e.to_string())?.http.trusted_proxies.is_empty());
            Ok(())
        });
    }
}
