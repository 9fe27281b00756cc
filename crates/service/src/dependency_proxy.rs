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
