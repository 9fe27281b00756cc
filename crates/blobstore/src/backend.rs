//! Which object store holds the blobs, as typed settings, and how each becomes an
//! `object_store` client. The binary's configuration parses its `storage` section into one
//! [`Backend`]; this module is the only place that knows the object_store builders.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::{BlobError, BlobStore};

/// One storage backend with its settings (distribution's `storage.<driver>` sections).
#[derive(Clone, Debug)]
pub enum Backend {
    Filesystem { root: PathBuf },
    InMemory,
    S3(S3Settings),
    Azure(AzureSettings),
    Gcs(GcsSettings),
}

#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Region; `us-east-1` when absent (and what most S3-compatible servers accept).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, moto…); AWS when absent.
    pub endpoint: Option<String>,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`) instead of virtual-hosted ones.
    pub force_path_style: bool,
    /// Static credentials; both or neither. Neither: the standard AWS chain (environment,
    /// web identity, ECS/EC2 instance metadata).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Key prefix under which everything is stored.
    pub root: Option<String>,
    /// Smallest part of a multipart write (see [`PartSizes`]).
    pub chunk_size: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct AzureSettings {
    pub account_name: String,
    /// Shared key; absent: the environment's credentials (managed identity, …).
    pub account_key: Option<String>,
    pub container: String,
    /// The account URL, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`; absent:
    /// `https://<account>.blob.<realm>`.
    pub endpoint: Option<String>,
    /// Domain suffix of the cloud, `core.windows.net` when absent.
    pub realm: Option<String>,
    pub root: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct GcsSettings {
    pub bucket: String,
    /// Service account JSON file; absent: application default credentials.
    pub keyfile: Option<PathBuf>,
    pub root: Option<String>,
}

/// Multipart writes (S3 allows 10 000 parts of at least 5 MiB but the last): parts start at
/// the configured chunk size and double every 1 000 parts, so a write of any size fits
/// without knowing it in advance (10 MiB start: 10 GiB in the first 1 000 parts, over 10 TiB
/// in 10 000), while small blobs still go in small parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSizes {
    pub first: usize,
}

/// S3's floor for every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// distribution's default `chunksize`.
pub const DEFAULT_PART_SIZE: usize = 10 * 1024 * 1024;
/// Parts of one size before the size doubles.
const PARTS_PER_STEP: usize = 1000;

impl Default for PartSizes {
    fn default() -> Self {
        PartSizes { first: DEFAULT_PART_SIZE }
    }
}

impl PartSizes {
    /// Size of part number `index` (0-based).
    pub fn of(&self, index: usize) -> usize {
        let doublings = (index / PARTS_PER_STEP).min(16) as u32;
        self.first.saturating_mul(1 << doublings)
    }
}

impl Backend {
    /// The configuration section naming this backend, for messages (`storage.s3`).
    pub fn setting(&self) -> &'static str {
        match self {
            Backend::Filesystem { .. } => "storage.filesystem",
            Backend::InMemory => "storage.inmemory",
            Backend::S3(_) => "storage.s3",
            Backend::Azure(_) => "storage.azure",
            Backend::Gcs(_) => "storage.gcs",
        }
    }

    /// Where the blobs are, for the start-up log line (no secrets).
    pub fn describe(&self) -> String {
        let root = |r: &Option<String>| prefix(r).map(|p| format!("/{p}")).unwrap_or_default();
        match self {
            Backend::Filesystem { root } => root.display().to_string(),
            Backend::InMemory => "memory (lost on exit)".into(),
            Backend::S3(s) => format!(
                "s3://{}{} at {}",
                s.bucket,
                root(&s.root),
                s.endpoint.as_deref().unwrap_or("AWS")
            ),
            Backend::Azure(a) => {
                format!("azure://{}/{}{}", a.account_name, a.container, root(&a.root))
            }
            Backend::Gcs(g) => format!("gs://{}{}", g.bucket, root(&g.root)),
        }
    }
}

/// Throttling answers (S3 `SlowDown`, 503, 500 `InternalError`) and dropped connections are
/// retried with exponential backoff rather than failing a push.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// At start a backend that does not answer is a configuration mistake: say so within seconds.
fn probe_retry() -> RetryConfig {
    RetryConfig { max_retries: 1, retry_timeout: Duration::from_secs(5), ..retry() }
}

fn client_options(endpoint: Option<&str>) -> ClientOptions {
    // Large blobs stream for minutes: no overall request timeout, only one for connecting.
    ClientOptions::new()
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout_disabled()
}

/// `root` as a key prefix, `None` when it names the bucket's top.
fn prefix(root: &Option<String>) -> Option<Path> {
    root.as_deref().map(|r| r.trim_matches('/')).filter(|r| !r.is_empty()).map(Path::from)
}

/// A blob store over `client` (S3, Azure, GCS), keys under `root`, presigning with it.
fn cloud_blob_store<T: ObjectStore + Signer>(
    client: T,
    root: &Option<String>,
    part_sizes: PartSizes,
) -> BlobStore {
    let client = Arc::new(client);
    let prefix = prefix(root);
    let signer: Arc<dyn Signer> = client.clone();
    let unprefixed: Arc<dyn ObjectStore> = client;
    let store: Arc<dyn ObjectStore> = match &prefix {
        Some(p) => Arc::new(PrefixStore::new(unprefixed, p.clone())),
        None => unprefixed,
    };
    let mut blobs = BlobStore::from_object_store(store).with_part_sizes(part_sizes);
    blobs.signer = Some(crate::Presigner { signer, prefix, expiry: None });
    blobs
}

impl Backend {
    /// Checks that the backend answers and lets us list (a missing bucket or container, wrong
    /// credentials or an unreachable endpoint fail here, at start, not at the first push),
    /// through a client that retries little so a mistake is reported within seconds.
    pub async fn probe(&self) -> Result<(), BlobError> {
        let blobs = build(self, probe_retry())?;
        let prefix = crate::layout::blobs();
        let probe = blobs.store.list_with_delimiter(Some(&prefix));
        match tokio::time::timeout(Duration::from_secs(20), probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BlobError::Config(format!("{}: {e}", self.setting()))),
            Err(_) => Err(BlobError::Config(format!(
                "{}: no answer from {} within 20s",
                self.setting(),
                self.describe()
            ))),
        }
    }
}

impl BlobStore {
    /// Opens the configured backend. Builds the client only: [`Backend::probe`] checks that
    /// it answers.
    pub fn open(backend: &Backend) -> Result<BlobStore, BlobError> {
        build(backend, retry())
    }
}

fn build(backend: &Backend, retry: RetryConfig) -> Result<BlobStore, BlobError> {
    let config = |e: object_store::Error| BlobError::Config(format!("{}: {e}", backend.setting()));
    match backend {
        Backend::Filesystem { root } => BlobStore::filesystem(root),
        Backend::InMemory => {
            Ok(BlobStore::from_object_store(Arc::new(object_store::memory::InMemory::new())))
        }
        Backend::S3(s) => {
            if s.access_key.is_some() != s.secret_key.is_some() {
                return Err(BlobError::Config(
                    "storage.s3: set both accesskey and secretkey, or neither (to use the \
                         standard AWS credential chain)"
                        .into(),
                ));
            }
            // from_env: the standard chain's variables (AWS_ACCESS_KEY_ID, web identity,
            // container credentials…) fill what the configuration leaves out.
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&s.bucket)
                .with_region(s.region.as_deref().unwrap_or("us-east-1"))
                .with_virtual_hosted_style_request(!s.force_path_style)
                .with_retry(retry.clone())
                .with_client_options(client_options(s.endpoint.as_deref()));
            if let Some(endpoint) = &s.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let (Some(key), Some(secret)) = (&s.access_key, &s.secret_key) {
                builder = builder.with_access_key_id(key).with_secret_access_key(secret);
            }
            let part_sizes = PartSizes { first: s.chunk_size.unwrap_or(DEFAULT_PART_SIZE) };
            Ok(cloud_blob_store(builder.build().map_err(config)?, &s.root, part_sizes))
        }
        Backend::Azure(a) => {
            let endpoint = a.endpoint.clone().unwrap_or_else(|| {
                let realm = a.realm.as_deref().unwrap_or("core.windows.net");
                format!("https://{}.blob.{realm}", a.account_name)
            });
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_account(&a.account_name)
                .with_container_name(&a.container)
                .with_endpoint(endpoint.clone())
                .with_retry(retry.clone())
                .with_client_options(client_options(Some(&endpoint)));
            if let Some(key) = &a.account_key {
                builder = builder.with_access_key(key);
            }
            Ok(cloud_blob_store(builder.build().map_err(config)?, &a.root, PartSizes::default()))
        }
        Backend::Gcs(g) => {
            let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&g.bucket)
                .with_retry(retry.clone())
                .with_client_options(client_options(None));
            if let Some(keyfile) = &g.keyfile {
                builder = builder.with_service_account_path(keyfile.display().to_string());
            }
            Ok(cloud_blob_store(builder.build().map_err(config)?, &g.root, PartSizes::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_fit_100_gib_in_10_000_parts() {
        for first in [MIN_PART_SIZE, DEFAULT_PART_SIZE] {
            let sizes = PartSizes { first };
            let total: u128 = (0..10_000).map(|i| sizes.of(i) as u128).sum();
            assert!(total >= 100 << 30, "{first}: {total}");
            assert_eq!(sizes.of(0), first);
            assert_eq!(sizes.of(999), first);
            assert_eq!(sizes.of(1000), 2 * first);
        }
    }

    #[test]
    fn half_a_key_pair_is_refused() {
        let s3 = S3Settings {
            bucket: "b".into(),
            access_key: Some("AKIA".into()),
            ..Default::default()
        };
        let err = BlobStore::open(&Backend::S3(s3)).err().unwrap().to_string();
        assert!(err.contains("storage.s3") && err.contains("secretkey"), "{err}");
    }
}
