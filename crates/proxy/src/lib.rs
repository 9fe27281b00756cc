//! The dependency proxy: a pull-through cache of an upstream registry (Docker Hub by default)
//! for every top-level group, at `<group>/dependency_proxy/containers/<image>`, as GitLab's.
//!
//! This crate owns the conversation with the upstream ([`upstream`]: the token dance,
//! `library/`, `Accept`), which upstreams a pull tries ([`Sources`]: the group's own, else
//! the instance's, in order; the first that has the content serves it) and the cache's
//! behaviour: manifests by tag are revalidated with a
//! `HEAD` after `dependency_proxy.ttl` (digests never are), a failing upstream is answered
//! from the cache for `dependency_proxy.stale_if_error`, and a blob miss is streamed to the
//! client while it is hashed and written to storage, then committed only if its digest
//! matches. One fetch per blob at a time: in this process by a map of fetches in flight,
//! across instances by a lease row in the database.
//!
//! It decides no access (the `/v2` surface asks `auth` first) and writes registry state only
//! through the write service; what it caches is ordinary content of the repository
//! `<group>/dependency_proxy/containers/<image>`, counted in usage and collected by GC.

pub mod import;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use meta::ProxyManifest;
use oci::{Digest, ParsedManifest, Reference, RepositoryName};
use service::dependency_proxy::{
    CredentialKey, ProxiedBlob, ProxiedManifest, PullThrough, PullThroughError, ALLOW_LOCAL_SETTING,
};
use service::{RequestContext, WriteService};
use tokio::sync::watch;

pub use upstream::{Upstream, UpstreamError, UpstreamSettings};

/// How the cache behaves (`dependency_proxy.*`).
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// After this long a manifest pulled by tag is revalidated upstream.
    pub ttl: Duration,
    /// How long after its last validation a cached manifest is served when the upstream fails.
    pub stale_if_error: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(24 * 3600),
            stale_if_error: Duration::from_secs(168 * 3600),
        }
    }
}

/// How long an instance's lease on fetching a blob lasts; renewed while the fetch runs.
const FETCH_LEASE: Duration = Duration::from_secs(60);
/// How often a pull waiting for another instance's fetch looks again.
const FETCH_POLL: Duration = Duration::from_millis(200);
/// Chunks buffered between the upstream and a slow client.
const CLIENT_BUFFER: usize = 16;

type FetchKey = (String, String);

/// The upstreams one pull tries, in order; an entry that could not be set up (its password
/// cannot be opened, …) counts as a failing upstream.
pub type Sources = Arc<Vec<Result<Arc<Upstream>, String>>>;

/// Asks `ask` of each upstream of `sources` in order and answers with the first that has it.
/// The rule: a failure (timeout, connection refused, 5xx, 429, refused credentials) or a 404
/// moves on to the next upstream; when none has it, a failure counts over 404s (one that
/// failed might have had it), and the first failure is reported.
async fn first_answer<T, F, Fut>(sources: &Sources, ask: F) -> Result<Option<T>, UpstreamError>
where
    F: Fn(Arc<Upstream>) -> Fut,
    Fut: Future<Output = Result<Option<T>, UpstreamError>>,
{
    let mut failure = None;
    for source in sources.iter() {
        let upstream = match source {
            Ok(upstream) => upstream,
            Err(message) => {
                failure.get_or_insert(UpstreamError::Failed(message.clone()));
                continue;
            }
        };
        match ask(upstream.clone()).await {
            Ok(Some(answer)) => return Ok(Some(answer)),
            Ok(None) => {}
            Err(e) => {
                if sources.len() > 1 {
                    tracing::info!(
                        upstream = %upstream.base_url(), error = %e,
                        "a dependency proxy upstream failed; trying the next"
                    );
                }
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The upstreams top-level groups set, built on first use and rebuilt when they change.
pub struct GroupSources {
    key: Arc<CredentialKey>,
    /// `dependency_proxy.allow_local_requests`.
    allow_local: bool,
    timeout: Duration,
    built: Mutex<HashMap<i64, (Vec<meta::GroupUpstream>, Sources)>>,
}

impl GroupSources {
    pub fn new(key: Arc<CredentialKey>, allow_local: bool, timeout: Duration) -> GroupSources {
        GroupSources { key, allow_local, timeout, built: Mutex::new(HashMap::new()) }
    }

    fn build(&self, group_id: i64, stored: &[meta::GroupUpstream]) -> Sources {
        let sources = stored.iter().map(|u| -> Result<Arc<Upstream>, String> {
            let url = url::Url::parse(&u.url).map_err(|e| format!("{}: {e}", u.url))?;
            let password = match &u.sealed_password {
                None => None,
                Some(sealed) => {
                    let opened = self.key.open(group_id, &u.url, u.username.as_deref(), sealed);
                    Some(opened.ok_or_else(|| {
                        format!(
                            "the stored password of the group's upstream {} cannot be read \
                             (was dependency_proxy.encryption_key changed?); an owner must \
                             set it again",
                            u.url
                        )
                    })?)
                }
            };
            let settings = UpstreamSettings {
                url,
                username: u.username.clone(),
                password,
                timeout: self.timeout,
            };
            let upstream = if self.allow_local {
                Upstream::new(settings)
            } else {
                Upstream::public_only(settings, ALLOW_LOCAL_SETTING)
            };
            upstream.map(Arc::new).map_err(|e| format!("{}: {e}", u.url))
        });
        Arc::new(sources.collect())
    }

    /// The sources of group `group_id`, whose stored upstreams are `stored` (not empty).
    fn sources(&self, group_id: i64, stored: Vec<meta::GroupUpstream>) -> Sources {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((was, sources)) = built.get(&group_id) {
            if *was == stored {
                return sources.clone();
            }
        }
        let sources = self.build(group_id, &stored);
        built.insert(group_id, (stored, sources.clone()));
        sources
    }
}

/// The pull-through cache. Cheap to share.
pub struct DependencyProxy {
    service: WriteService,
    /// The instance's upstreams (`dependency_proxy.upstream`, then `.upstreams`).
    upstreams: Sources,
    groups: GroupSources,
    cache: CacheSettings,
    /// Names this instance in fetch leases.
    instance: String,
    /// Blob fetches in flight on this instance; the receiver turns `true` when one ends.
    fetching: Arc<Mutex<HashMap<FetchKey, watch::Receiver<bool>>>>,
}

fn ctx() -> RequestContext {
    RequestContext::system("dependency-proxy")
}

fn upstream_failure(e: UpstreamError) -> PullThroughError {
    match e {
        UpstreamError::RateLimited { retry_after } => PullThroughError::RateLimited {
            message: "the dependency proxy's upstream registry is rate-limiting it and \
                      nothing usable is cached; retry later"
                .into(),
            retry_after,
        },
        UpstreamError::Failed(message) => PullThroughError::Unavailable(format!(
            "{message}; the dependency proxy has no usable cached copy"
        )),
    }
}

fn served(m: &ProxyManifest, stale: bool) -> ProxiedManifest {
    ProxiedManifest {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        payload: Bytes::from(m.payload.clone()),
        stale,
    }
}

fn image_of(repo: &RepositoryName) -> Result<&str, PullThroughError> {
    repo.dependency_proxy()
        .map(|i| i.image)
        .ok_or_else(|| PullThroughError::NotFound(format!("{repo} is no dependency proxy image")))
}

impl DependencyProxy {
    pub fn new(
        service: WriteService,
        upstreams: Vec<Upstream>,
        groups: GroupSources,
        cache: CacheSettings,
        instance: String,
    ) -> DependencyProxy {
        DependencyProxy {
            service,
            upstreams: Arc::new(upstreams.into_iter().map(|u| Ok(Arc::new(u))).collect()),
            groups,
            cache,
            instance,
            fetching: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The upstreams a pull of `repo` tries: its group's own if it set any, else the
    /// instance's (a group's list replaces the instance's, so its image names never reach
    /// an upstream it did not choose).
    async fn sources(&self, repo: &RepositoryName) -> Result<Sources, PullThroughError> {
        let group = repo.dependency_proxy().map(|i| i.group).unwrap_or_default();
        match self.service.store().group_upstreams_by_path(group).await? {
            Some((id, stored)) if !stored.is_empty() => Ok(self.groups.sources(id, stored)),
            _ => Ok(self.upstreams.clone()),
        }
    }

    fn ms(d: Duration) -> i64 {
        d.as_millis().min(i64::MAX as u128 / 4) as i64
    }

    /// The cached copy answered instead of an upstream failure, if it is recent enough.
    fn stale_or_fail(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        cached: Option<ProxyManifest>,
        error: UpstreamError,
    ) -> Result<ProxiedManifest, PullThroughError> {
        let now = meta::now_millis();
        match cached {
            Some(c) if now - c.validated_at <= Self::ms(self.cache.stale_if_error) => {
                tracing::warn!(
                    repository = %repo, %reference, digest = %c.digest, error = %error,
                    "the dependency proxy's upstream failed; serving the cached manifest stale"
                );
                Ok(served(&c, true))
            }
            _ => Err(upstream_failure(error)),
        }
    }

    /// Fetches the manifest of `reference` and caches it (for the reference and, for a tag,
    /// for its digest too).
    async fn fetch_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        cached: Option<ProxyManifest>,
    ) -> Result<ProxiedManifest, PullThroughError> {
        let image = image_of(repo)?.to_string();
        let key = reference.to_string();
        let sources = self.sources(repo).await?;
        let asked = first_answer(&sources, |u| {
            let (image, key) = (image.clone(), key.clone());
            async move { u.manifest(&image, &key).await }
        })
        .await;
        let fetched = match asked {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(PullThroughError::NotFound(format!(
                    "manifest {reference} of {image} is not in the dependency proxy's upstream"
                )))
            }
            Err(e) => return self.stale_or_fail(repo, reference, cached, e),
        };
        let digest = match reference {
            Reference::Digest(d) => {
                let computed = Digest::of(d.algorithm(), &fetched.payload);
                if computed != *d {
                    return Err(PullThroughError::Unavailable(format!(
                        "the upstream served a manifest with digest {computed} for {d}"
                    )));
                }
                computed
            }
            Reference::Tag(_) => Digest::sha256_of(&fetched.payload),
        };
        let parsed = ParsedManifest::parse(fetched.content_type.as_deref(), &fetched.payload)
            .map_err(|e| {
                PullThroughError::Unavailable(format!(
                    "the upstream served an invalid manifest for {reference}: {e}"
                ))
            })?;
        let now = meta::now_millis();
        let record = ProxyManifest {
            repository: repo.to_string(),
            reference: key,
            digest: digest.to_string(),
            media_type: parsed.media_type.clone(),
            payload: fetched.payload.to_vec(),
            validated_at: now,
            last_used_at: now,
        };
        if matches!(reference, Reference::Tag(_)) {
            let by_digest = ProxyManifest { reference: digest.to_string(), ..record.clone() };
            self.service.cache_proxy_manifest(&by_digest, &ctx()).await?;
        }
        self.service.cache_proxy_manifest(&record, &ctx()).await?;
        Ok(served(&record, false))
    }

    /// Waits until no fetch of `key` runs on this instance, or becomes the one that runs it
    /// (`Some(sender)`: send `true` when done).
    async fn join_or_lead(&self, key: &FetchKey) -> Option<watch::Sender<bool>> {
        let mut waiting = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            match fetching.get(key) {
                Some(rx) if !*rx.borrow() => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(false);
                    fetching.insert(key.clone(), rx);
                    return Some(tx);
                }
            }
        };
        let _ = waiting.wait_for(|done| *done).await;
        None
    }
}

#[async_trait::async_trait]
impl PullThrough for DependencyProxy {
    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ProxiedManifest, PullThroughError> {
        let store = self.service.store();
        let key = reference.to_string();
        let cached = store.proxy_manifest(repo, &key).await?;
        let now = meta::now_millis();
        let Some(c) = cached else { return self.fetch_manifest(repo, reference, None).await };
        let fresh = match reference {
            // A digest names its content forever.
            Reference::Digest(_) => true,
            Reference::Tag(_) => now - c.validated_at < Self::ms(self.cache.ttl),
        };
        if fresh {
            if let Err(e) = store.touch_proxy_manifest(repo, &key, now).await {
                tracing::warn!(error = %e, "recording a dependency proxy pull failed");
            }
            return Ok(served(&c, false));
        }
        let image = image_of(repo)?.to_string();
        let sources = self.sources(repo).await?;
        let asked = first_answer(&sources, |u| {
            let (image, key) = (image.clone(), key.clone());
            async move { u.manifest_digest(&image, &key).await }
        })
        .await;
        match asked {
            Ok(Some(digest)) if digest == c.digest => {
                self.service.mark_proxy_manifest_validated(repo, &key).await?;
                Ok(served(&c, false))
            }
            Ok(Some(_)) => self.fetch_manifest(repo, reference, Some(c)).await,
            Ok(None) => Err(PullThroughError::NotFound(format!(
                "manifest {reference} is no longer in the dependency proxy's upstream"
            ))),
            Err(e) => self.stale_or_fail(repo, reference, Some(c), e),
        }
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ProxiedBlob>, PullThroughError> {
        let store = self.service.store().clone();
        let key: FetchKey = (repo.to_string(), digest.to_string());
        let done = loop {
            if store.repository_blob(repo, digest).await?.is_some() {
                return Ok(None);
            }
            if let Some(done) = self.join_or_lead(&key).await {
                break done;
            }
        };
        // From here this instance's fetch of the blob is `done`; finish it on every path.
        let finish = {
            let fetching = self.fetching.clone();
            let key = key.clone();
            move |done: watch::Sender<bool>| {
                fetching.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                let _ = done.send(true);
            }
        };
        // Across instances: the lease holder fetches, the others wait for the blob.
        loop {
            let now = meta::now_millis();
            let expires = now + Self::ms(FETCH_LEASE);
            match store.claim_proxy_fetch(repo, digest.as_str(), &self.instance, now, expires).await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    finish(done);
                    return Err(e.into());
                }
            }
            tokio::time::sleep(FETCH_POLL).await;
            match store.repository_blob(repo, digest).await {
                Ok(Some(_)) => {
                    finish(done);
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => {
                    finish(done);
                    return Err(e.into());
                }
            }
        }
        let (image, sources) = match (image_of(repo), self.sources(repo).await) {
            (Ok(image), Ok(sources)) => (image.to_string(), sources),
            (Err(e), _) | (_, Err(e)) => {
                let _ = store.release_proxy_fetch(repo, digest.as_str(), &self.instance).await;
                finish(done);
                return Err(e);
            }
        };
        let asked = first_answer(&sources, |u| {
            let (image, digest) = (image.clone(), digest.to_string());
            async move { u.blob(&image, &digest).await }
        })
        .await;
        let response = match asked {
            Ok(Some(response)) => response,
            outcome => {
                let _ = store.release_proxy_fetch(repo, digest.as_str(), &self.instance).await;
                finish(done);
                return Err(match outcome {
                    Ok(_) => PullThroughError::NotFound(format!(
                        "blob {digest} of {image} is not in the dependency proxy's upstream"
                    )),
                    Err(e) => upstream_failure(e),
                });
            }
        };
        let size = response.content_length();
        let (client, stream) = futures::channel::mpsc::channel(CLIENT_BUFFER);
        let tee = Tee {
            service: self.service.clone(),
            repo: repo.clone(),
            digest: digest.clone(),
            instance: self.instance.clone(),
        };
        tokio::spawn(async move {
            tee.run(response, client).await;
            finish(done);
        });
        Ok(Some(ProxiedBlob { size, stream: stream.boxed() }))
    }
}

/// One blob on its way from the upstream to a client and into storage.
struct Tee {
    service: WriteService,
    repo: RepositoryName,
    digest: Digest,
    instance: String,
}

type ClientSender = futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>;

impl Tee {
    /// Streams the upstream's body to the client and into a private storage object at the
    /// same pace, hashing it; commits the blob only if the digest matches. The client gets
    /// every byte but the last chunk as it arrives; the last one only once the digest is
    /// verified, so a client never receives a complete blob with wrong content (it gets an
    /// error instead). A client that goes away does not stop the fetch: the blob is still
    /// cached. The fetch lease is renewed while the bytes flow and released at the end.
    async fn run(self, response: reqwest::Response, mut client: ClientSender) {
        let store = self.service.store().clone();
        let upload_id = uuid::Uuid::new_v4().to_string();
        let hasher = blobstore::ResumableSha256::new();
        let (mut to_storage, storage_body) =
            futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(CLIENT_BUFFER);
        let blobs = self.service.blobs().clone();
        let write = blobs.write_part(&upload_id, &hasher, storage_body, None);
        let pump = async {
            let mut body = response.bytes_stream();
            let mut held: Option<Bytes> = None;
            let mut client_open = true;
            let mut renewed = std::time::Instant::now();
            let mut failed = None;
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        failed = Some(format!("the upstream's blob stream failed: {e}"));
                        break;
                    }
                };
                if to_storage.send(Ok(chunk.clone())).await.is_err() {
                    failed = Some("writing the blob to storage failed".to_string());
                    break;
                }
                if let Some(previous) = held.replace(chunk) {
                    if client_open && client.send(Ok(previous)).await.is_err() {
                        client_open = false;
                    }
                }
                if renewed.elapsed() > FETCH_LEASE / 3 {
                    renewed = std::time::Instant::now();
                    let now = meta::now_millis();
                    let until = now + DependencyProxy::ms(FETCH_LEASE);
                    let repo = &self.repo;
                    let _ = store
                        .claim_proxy_fetch(repo, self.digest.as_str(), &self.instance, now, until)
                        .await;
                }
            }
            if let Some(message) = &failed {
                let _ = to_storage.send(Err(std::io::Error::other(message.clone()))).await;
            }
            drop(to_storage);
            (held, failed)
        };
        let (written, (held, failed)) = tokio::join!(write, pump);
        let outcome = match (written, failed) {
            (_, Some(message)) => Err(message),
            (Err(e), None) => Err(format!("writing the blob to storage failed: {e}")),
            (Ok(part), None) => {
                let stored = blobstore::UploadPart { object: part.object, size: part.size };
                self.service
                    .commit_proxy_blob(
                        &self.repo,
                        &upload_id,
                        stored,
                        &part.hasher,
                        &self.digest,
                        &ctx(),
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        blobs.delete_upload(&upload_id).await;
        let _ = store.release_proxy_fetch(&self.repo, self.digest.as_str(), &self.instance).await;
        match outcome {
            Ok(()) => {
                tracing::info!(repository = %self.repo, digest = %self.digest, "the dependency proxy cached a blob");
                if let Some(last) = held {
                    let _ = client.send(Ok(last)).await;
                }
            }
            Err(message) => {
                tracing::warn!(
                    repository = %self.repo, digest = %self.digest, error = %message,
                    "the dependency proxy could not cache a blob from its upstream"
                );
                let _ = client.send(Err(std::io::Error::other(message))).await;
            }
        }
    }
}
