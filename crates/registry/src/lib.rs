//! The `/v2/` OCI Distribution API: routing, request parsing, streaming and responses.
//!
//! Handlers stay thin: they parse untrusted input into `oci` types, call the metadata store
//! (`meta`) and the blob store (`blobstore`), and map failures to the OCI error JSON. This crate
//! owns no SQL and no storage keys. Authentication is a layer in front of [`router`]; handlers
//! never look at credentials.

mod blobs;
mod error;
mod listing;
mod manifests;
mod routes;
mod uploads;

use std::time::Duration;

use blobstore::BlobStore;
use meta::Store;

pub use error::RegistryError;
pub use routes::{requirement, router, Action, Requirement};

/// Limits a deployment may tune.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Largest single blob accepted, in bytes (`None`: no limit).
    pub max_blob_bytes: Option<u64>,
    /// Largest page of tags or repositories one request may ask for.
    pub max_page: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_manifest_bytes: 4 * 1024 * 1024, max_blob_bytes: None, max_page: 10_000 }
    }
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub blobs: BlobStore,
    pub limits: Limits,
}

impl Registry {
    /// Removes upload sessions idle for longer than `max_idle`, with their stored parts.
    /// Returns how many were removed. Safe to run on every instance at once.
    pub async fn purge_idle_uploads(&self, max_idle: Duration) -> Result<usize, meta::MetaError> {
        let cutoff = meta::now_millis() - max_idle.as_millis() as i64;
        let mut removed = 0;
        loop {
            let batch = self.store.idle_uploads(cutoff, 100).await?;
            if batch.is_empty() {
                return Ok(removed);
            }
            for upload in batch {
                if self.store.delete_upload(&upload.id).await? {
                    self.blobs.delete_upload(&upload.id, upload.parts).await;
                    removed += 1;
                }
            }
        }
    }
}

/// Decides which repositories a caller may read, for listings and cross-repository mounts.
/// The authorization layer puts one in the request's extensions; without one (an open
/// registry) every repository is readable.
#[async_trait::async_trait]
pub trait RepositoryFilter: Send + Sync {
    async fn can_pull(&self, name: &str) -> bool;
    /// Whether the caller may read everything (instance admins): listings skip filtering.
    fn sees_everything(&self) -> bool {
        false
    }
}

/// The request extension carrying a [`RepositoryFilter`].
#[derive(Clone)]
pub struct ReadFilter(pub std::sync::Arc<dyn RepositoryFilter>);

/// The caller's role on the project a write request targets, put into the request's
/// extensions by the authorization layer for push and delete requests; rules such as tag
/// protection compare against it. GitLab's access levels: 10 guest … 50 owner; instance
/// admins are [`Actor::ADMIN`]. Without an authorization layer there is no `Actor` and
/// callers count as admins (an open registry trusts everyone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub access_level: i64,
}

impl Actor {
    pub const ADMIN: i64 = 60;
}

/// A parsed query string; keys may repeat (`?tag=a&tag=b`).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub(crate) fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
