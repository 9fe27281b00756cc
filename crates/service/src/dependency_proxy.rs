//! The dependency proxy's writes, and the interface the `/v2` surface uses to pull through it.
//!
//! What the proxy caches is ordinary registry content of the repository
//! `<group>/dependency_proxy/containers/<image>`: a blob streamed from the upstream is
//! committed like an upload ([`WriteService::commit_proxy_blob`]), and a manifest the upstream
//! served is recorded for its reference ([`WriteService::cache_proxy_manifest`]) and becomes an
//! ordinary manifest (with its tag) as soon as every blob it needs is cached, so usage, GC and
//! the UI count it like a pushed one. Until then it is served from its proxy record.

use bytes::Bytes;
use futures::stream::BoxStream;
use meta::{access_level, ProxyManifest};
use oci::{Digest, IndexValidation, ParsedManifest, Reference, RepositoryName, Tag};

use crate::{Actor, RequestContext, ServiceError, WriteService};

/// The setting that lets a group's upstreams be on the local network.
pub const ALLOW_LOCAL_SETTING: &str = "dependency_proxy.allow_local_requests";
/// Most upstreams a group may set.
pub const MAX_GROUP_UPSTREAMS: usize = 10;
const MAX_URL_LEN: usize = 2048;
const MAX_USERNAME_LEN: usize = 255;
const MAX_PASSWORD_LEN: usize = 4096;

/// An upstream registry's URL, checked: `http://` or `https://` with a host, no credentials,
/// query or fragment. The one check of every upstream URL (the instance's configuration and
/// the groups' settings).
pub fn upstream_url(raw: &str) -> Result<url::Url, String> {
    let refusal = || {
        format!(
            "must be a registry's URL with http:// or https://, e.g. https://registry-1.docker.io; \
             {:?} is not",
            oci::preview(raw)
        )
    };
    if raw.len() > MAX_URL_LEN {
        return Err(format!("is longer than {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| refusal())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(|h| h.is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(refusal());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials: give them as username and password".into());
    }
    Ok(url)
}

/// Seals and opens the passwords of the upstreams groups set: AES-256-GCM under a key derived
/// with HKDF-SHA256 from an instance secret (`dependency_proxy.encryption_key`, or the token
/// signing key every instance shares). Each sealed password is bound to its group, URL and
/// username, so it cannot be moved to another upstream.
pub struct CredentialKey {
    key: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(…)")
    }
}

/// The first byte of a sealed password: its format (nonce, then ciphertext and tag).
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// What a sealed password is bound to.
fn sealing_context(group_id: i64, url: &str, username: Option<&str>) -> String {
    format!("{group_id}\n{url}\n{}", username.unwrap_or(""))
}

impl CredentialKey {
    pub fn derive(secret: &[u8]) -> CredentialKey {
        use ring::{aead, hkdf};
        const INFO: &[&[u8]] = &[b"dependency proxy upstream credentials v1"];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"stowage").extract(secret);
        let okm = prk.expand(INFO, &aead::AES_256_GCM).expect("HKDF yields a 32-byte key");
        CredentialKey { key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)) }
    }

    /// `password` sealed for the upstream `url` (as `username`) of group `group_id`.
    pub fn seal(
        &self,
        group_id: i64,
        url: &str,
        username: Option<&str>,
        password: &str,
    ) -> Vec<u8> {
        use ring::aead::{Aad, Nonce};
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut nonce).expect("the system's random source");
        let context = sealing_context(group_id, url, username);
        let mut data = password.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .expect("a password fits AES-GCM");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + data.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&data);
        sealed
    }

    /// The password sealed for that upstream; `None` if it was sealed under another key (or
    /// for another upstream, or altered).
    pub fn open(
        &self,
        group_id: i64,
        url: &str,
        username: Option<&str>,
        sealed: &[u8],
    ) -> Option<String> {
        use ring::aead::{Aad, Nonce};
        let (&version, rest) = sealed.split_first()?;
        if version != SEALED_V1 || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let context = sealing_context(group_id, url, username);
        let mut data = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut data).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// What one run of the cache cleanup removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyCacheCleanup {
    /// Cached references (tags and digests) forgotten.
    pub references: usize,
    /// Repositories deleted because nothing in them was used.
    pub repositories: usize,
}

/// An upstream as a group owner gives it (`PUT /groups/:id/dependency_proxy`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamInput {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Omitted: the password already stored for the same URL and username is kept.
    #[serde(default)]
    pub password: Option<String>,
}

/// Checks the upstreams a group owner gives and seals their passwords: what to store for
/// group `group_id`, whose upstreams are `current`. URLs on the local network are refused
/// unless `allow_local` (`dependency_proxy.allow_local_requests`). The error names the entry
/// at fault.
pub fn group_upstreams(
    key: &CredentialKey,
    group_id: i64,
    current: &[meta::GroupUpstream],
    input: &[UpstreamInput],
    allow_local: bool,
) -> Result<Vec<meta::GroupUpstream>, String> {
    if input.len() > MAX_GROUP_UPSTREAMS {
        return Err(format!("has {} entries; at most {MAX_GROUP_UPSTREAMS}", input.len()));
    }
    let mut out = Vec::new();
    for (i, u) in input.iter().enumerate() {
        let at = |what: String| format!("[{i}].{what}");
        let url = upstream_url(u.url.trim()).map_err(|e| at(format!("url {e}")))?;
        let host = url.host().ok_or_else(|| at("url has no host".into()))?;
        crate::outbound::check_host(&host, allow_local).map_err(|_| {
            at(format!(
                "url {} {}",
                url.host_str().unwrap_or(""),
                crate::outbound::local_network_refused(ALLOW_LOCAL_SETTING)
            ))
        })?;
        let url = url.as_str().trim_end_matches('/').to_string();
        let username = u.username.as_deref().map(str::trim).filter(|n| !n.is_empty());
        if username.is_some_and(|n| n.len() > MAX_USERNAME_LEN || n.chars().any(char::is_control)) {
            return Err(at(format!(
                "username must be at most {MAX_USERNAME_LEN} characters, without control characters"
            )));
        }
        let sealed_password = match u.password.as_deref() {
            Some(p) if p.len() > MAX_PASSWORD_LEN => {
                return Err(at(format!("password is longer than {MAX_PASSWORD_LEN} bytes")))
            }
            Some("") => None,
            Some(p) => Some(key.seal(group_id, &url, username, p)),
            // Kept from the same upstream and username.
            None => current
                .iter()
                .find(|c| c.url == url && c.username.as_deref() == username)
                .and_then(|c| c.sealed_password.clone()),
        };
        if sealed_password.is_some() && username.is_none() {
            return Err(at("password needs a username".into()));
        }
        out.push(meta::GroupUpstream {
            url,
            username: username.map(str::to_string),
            sealed_password,
        });
    }
    Ok(out)
}

/// A manifest served through a dependency proxy.
#[derive(Clone, Debug)]
pub struct ProxiedManifest {
    pub digest: String,
    pub media_type: String,
    pub payload: Bytes,
    /// Served from the cache because the upstream failed (`stale_if_error`): the response
    /// carries `Warning: 110 - "Response is Stale"`.
    pub stale: bool,
}

/// A blob served through a dependency proxy that was not cached: its bytes as the upstream
/// sends them, stored while they pass.
pub struct ProxiedBlob {
    /// The size the upstream announced, when it did.
    pub size: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// Why a pull through a dependency proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum PullThroughError {
    /// The upstream does not have it (or refuses it to the proxy's credentials).
    #[error("{0}")]
    NotFound(String),
    /// The upstream rate-limits the proxy, and nothing usable is cached.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Option<u64> },
    /// The upstream failed or could not be reached, and nothing usable is cached.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<meta::MetaError> for PullThroughError {
    fn from(e: meta::MetaError) -> Self {
        PullThroughError::Service(e.into())
    }
}

/// Pulls content of a dependency proxy's repositories from their upstream on a miss. The
/// `/v2` surface calls it, after the access decision, for names that
/// [`RepositoryName::dependency_proxy`] recognizes.
#[async_trait::async_trait]
pub trait PullThrough: Send + Sync {
    /// The manifest of `reference`: cached and fresh, revalidated, fetched, or stale.
    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ProxiedManifest, PullThroughError>;

    /// Blob `digest`, which `repo` does not hold yet: `None` when it was cached meanwhile (by
    /// a concurrent pull; serve it from the repository), else the upstream's bytes.
    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ProxiedBlob>, PullThroughError>;
}

/// The manifest to store for `payload`, parsed: the one place a parsed manifest becomes a
/// [`meta::NewManifest`] (pushes and the dependency proxy).
pub fn new_manifest(
    digest: Digest,
    parsed: &ParsedManifest,
    payload: Vec<u8>,
    index_validation: &IndexValidation,
) -> meta::NewManifest {
    meta::NewManifest {
        digest,
        media_type: parsed.media_type.clone(),
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        config_digest: parsed.config.as_ref().map(|c| c.digest.clone()),
        total_size: (payload.len() as i64).saturating_add(parsed.referenced_size()),
        annotations: parsed.annotations.as_ref().map(|a| a.to_string()),
        blobs: parsed.required_blobs(),
        children: parsed.children(index_validation),
        payload,
    }
}

impl WriteService {
    /// Records the manifest the upstream served for `m.reference`, then stores what of the
    /// repository's cached manifests is complete (see the module docs).
    pub async fn cache_proxy_manifest(
        &self,
        m: &ProxyManifest,
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let mut w = self.store.write_tx().await?;
        w.put_proxy_manifest(m).await?;
        w.commit().await?;
        let repo: RepositoryName = m.repository.parse().map_err(|_| {
            ServiceError::Meta(meta::MetaError::Conflict(format!(
                "{} is not a repository name",
                m.repository
            )))
        })?;
        self.store_complete_proxy_manifests(&repo, ctx).await
    }

    /// Records that the upstream still serves the cached manifest of `reference`.
    pub async fn mark_proxy_manifest_validated(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<(), ServiceError> {
        let mut w = self.store.write_tx().await?;
        w.mark_proxy_manifest_validated(repo, reference, meta::now_millis()).await?;
        w.commit().await?;
        Ok(())
    }

    /// Commits a blob the proxy streamed from the upstream into the object `part` of upload
    /// session `upload_id`, hashed by `hasher` on the way: like an upload, only if the bytes
    /// have digest `digest`. Then stores the cached manifests this blob completes.
    pub async fn commit_proxy_blob(
        &self,
        repo: &RepositoryName,
        upload_id: &str,
        part: blobstore::UploadPart,
        hasher: &blobstore::ResumableSha256,
        digest: &Digest,
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let committed = self.commit_upload(repo, upload_id, &[part], hasher, digest).await;
        self.blobs.delete_upload(upload_id).await;
        committed?;
        self.store_complete_proxy_manifests(repo, ctx).await
    }

    /// Stores as ordinary manifests (with their tags) the cached manifests of `repo` whose
    /// blobs are all in the repository and that are not stored as the proxy saw them yet.
    async fn store_complete_proxy_manifests(
        &self,
        repo: &RepositoryName,
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        for cached in self.store.proxy_manifests(repo).await? {
            let Ok(digest) = cached.digest.parse::<Digest>() else { continue };
            let tag = cached.reference.parse::<Tag>().ok();
            let current = match &tag {
                Some(tag) => self.store.manifest_by_tag(repo, tag).await?,
                None => self.store.manifest_by_digest(repo, &digest).await?,
            };
            if current.is_some_and(|m| m.digest == cached.digest) {
                continue;
            }
            let parsed =
                match ParsedManifest::parse(Some(cached.media_type.as_str()), &cached.payload) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        tracing::warn!(
                            repository = %repo, digest = %cached.digest, error = %e,
                            "the dependency proxy serves a manifest it cannot store"
                        );
                        continue;
                    }
                };
            let mut complete = true;
            for blob in parsed.required_blobs() {
                if self.store.repository_blob(repo, &blob).await?.is_none() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                continue;
            }
            // A sparse index is normal here: clients pull the platforms they run.
            let new = new_manifest(digest, &parsed, cached.payload.clone(), &IndexValidation::None);
            let tags: Vec<Tag> = tag.into_iter().collect();
            self.put_manifest(repo, Actor::Level(access_level::ADMIN), &new, &tags, ctx).await?;
        }
        Ok(())
    }

    /// The cache cleanup (GitLab's `ttl_policy`), as of `now`: forgets the manifests cached
    /// by the dependency proxies that nobody pulled for their group's `ttl_days` (unless the
    /// group turned its cleanup off) and deletes them from the repository (an unused tag, a
    /// manifest by digest no kept reference still serves, or the whole repository when
    /// nothing in it is used); GC then frees the bytes. A pull meanwhile keeps a reference.
    pub async fn cleanup_dependency_proxy_cache(
        &self,
        now: i64,
        ctx: &RequestContext,
    ) -> Result<ProxyCacheCleanup, ServiceError> {
        const DAY_MS: i64 = 86_400_000;
        const PAGE: i64 = 500;
        let policies: std::collections::HashMap<String, (bool, i64)> = self
            .store
            .dependency_proxy_ttl_policies()
            .await?
            .into_iter()
            .map(|(path, enabled, days)| (path, (enabled, days)))
            .collect();
        let policy = |repository: &str| {
            let group = repository.split('/').next().unwrap_or("");
            policies.get(group).copied().unwrap_or((true, meta::DEFAULT_PROXY_TTL_DAYS))
        };
        let shortest = policies
            .values()
            .filter(|(enabled, _)| *enabled)
            .map(|(_, days)| *days)
            .chain([meta::DEFAULT_PROXY_TTL_DAYS])
            .min()
            .unwrap_or(meta::DEFAULT_PROXY_TTL_DAYS);
        // Each repository's expired references, with the cutoff of its group.
        let mut expired: std::collections::BTreeMap<String, (i64, Vec<ProxyManifest>)> =
            Default::default();
        let mut after: Option<ProxyManifest> = None;
        loop {
            let page = self
                .store
                .unused_proxy_manifests(now - shortest * DAY_MS, after.as_ref(), PAGE)
                .await?;
            let done = (page.len() as i64) < PAGE;
            after = page.last().cloned();
            for m in page {
                let (enabled, days) = policy(&m.repository);
                let cutoff = now - days * DAY_MS;
                if enabled && m.last_used_at < cutoff {
                    expired.entry(m.repository.clone()).or_insert((cutoff, Vec::new())).1.push(m);
                }
            }
            if done {
                break;
            }
        }
        let mut report = ProxyCacheCleanup::default();
        for (name, (cutoff, references)) in expired {
            let Ok(repo) = name.parse::<RepositoryName>() else { continue };
            let kept: Vec<ProxyManifest> = self
                .store
                .proxy_manifests(&repo)
                .await?
                .into_iter()
                .filter(|m| !references.iter().any(|r| r.reference == m.reference))
                .collect();
            if kept.is_empty() {
                let mut w = self.store.write_tx().await?;
                let id = w.repository_id(&repo).await?;
                w.commit().await?;
                if let Some(id) = id {
                    if self.delete_repository(id, ctx).await? {
                        report.repositories += 1;
                    }
                }
                let mut w = self.store.write_tx().await?;
                for r in &references {
                    if w.delete_unused_proxy_manifest(&name, &r.reference, cutoff).await? {
                        report.references += 1;
                    }
                }
                w.commit().await?;
                continue;
            }
            for r in &references {
                let mut w = self.store.write_tx().await?;
                let forgotten = w.delete_unused_proxy_manifest(&name, &r.reference, cutoff).await?;
                w.commit().await?;
                if !forgotten {
                    continue; // pulled meanwhile
                }
                report.references += 1;
                let actor = Actor::Level(access_level::ADMIN);
                if let Ok(tag) = r.reference.parse::<Tag>() {
                    self.delete_tag(&repo, &tag, actor, ctx).await?;
                } else if !kept.iter().any(|k| k.digest == r.digest) {
                    let Ok(digest) = r.digest.parse::<Digest>() else { continue };
                    match self.delete_manifest(&repo, &digest, actor, ctx).await {
                        // A kept index still lists it: it stays while the index does.
                        Ok(_) | Err(ServiceError::ManifestReferenced { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Purges the cache of top-level group `group_path`'s dependency proxy: its repositories
    /// (bytes are left to GC, as for any repository delete) and its manifest records.
    /// Returns how many repositories were deleted.
    pub async fn purge_dependency_proxy(
        &self,
        group_path: &str,
        ctx: &RequestContext,
    ) -> Result<usize, ServiceError> {
        let mut deleted = 0;
        for (id, name) in self.store.dependency_proxy_repositories(group_path).await? {
            if self.delete_repository(id, ctx).await? {
                deleted += 1;
            }
            let mut w = self.store.write_tx().await?;
            w.delete_proxy_manifests(&name).await?;
            w.commit().await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_passwords_open_only_for_their_upstream_and_key() {
        let key = CredentialKey::derive(b"instance secret");
        let sealed = key.seal(7, "https://r.example", Some("bot"), "s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "stored in the clear");
        assert_ne!(sealed, key.seal(7, "https://r.example", Some("bot"), "s3cret"), "nonce reused");
        assert_eq!(
            key.open(7, "https://r.example", Some("bot"), &sealed).as_deref(),
            Some("s3cret")
        );
        // Another group, URL or username, another key, or altered bytes: nothing.
        assert_eq!(key.open(8, "https://r.example", Some("bot"), &sealed), None);
        assert_eq!(key.open(7, "https://evil.example", Some("bot"), &sealed), None);
        assert_eq!(key.open(7, "https://r.example", Some("admin"), &sealed), None);
        let other = CredentialKey::derive(b"another secret");
        assert_eq!(other.open(7, "https://r.example", Some("bot"), &sealed), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(7, "https://r.example", Some("bot"), &altered), None);
        for short in [&[][..], &[SEALED_V1][..], &sealed[..10]] {
            assert_eq!(key.open(7, "https://r.example", Some("bot"), short), None);
        }
        assert!(!format!("{key:?}").contains("s3cret"));
    }

    #[test]
    fn group_upstreams_are_checked_and_passwords_kept_or_replaced() {
        let key = CredentialKey::derive(b"k");
        let input = |url: &str, user: Option<&str>, password: Option<&str>| UpstreamInput {
            url: url.into(),
            username: user.map(Into::into),
            password: password.map(Into::into),
        };
        let set = group_upstreams(
            &key,
            1,
            &[],
            &[input("https://r.example/", Some("bot"), Some("pw"))],
            false,
        )
        .unwrap();
        assert_eq!(set[0].url, "https://r.example");
        let sealed = set[0].sealed_password.clone().unwrap();
        assert_eq!(key.open(1, "https://r.example", Some("bot"), &sealed).as_deref(), Some("pw"));
        // Left out: kept for the same URL and username only.
        let again =
            group_upstreams(&key, 1, &set, &[input("https://r.example", Some("bot"), None)], false)
                .unwrap();
        assert_eq!(again[0].sealed_password, Some(sealed));
        let other =
            group_upstreams(&key, 1, &set, &[input("https://r.example", Some("x"), None)], false)
                .unwrap();
        assert_eq!(other[0].sealed_password, None);
        for (url, allow_local, ok) in [
            ("http://127.0.0.1:5000", false, false),
            ("http://127.0.0.1:5000", true, true),
            ("http://[::ffff:169.254.169.254]", false, false),
            ("https://u:p@r.example", true, false),
            ("https://r.example?x=1", true, false),
            ("file:///etc/passwd", true, false),
        ] {
            let got = group_upstreams(&key, 1, &[], &[input(url, None, None)], allow_local);
            assert_eq!(got.is_ok(), ok, "{url}: {got:?}");
        }
    }
}
