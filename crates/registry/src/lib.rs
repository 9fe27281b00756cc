//! The `/v2/` OCI Distribution API: routing, request parsing, streaming and responses.
//!
//! Handlers stay thin: every request is parsed once into typed values ([`routes::Route`]), the
//! access decision is made on them by [`auth::Gate`], and a handler receives the resulting
//! proof ([`auth::access::RepositoryAccess`]) with the repository name inside, then calls the
//! metadata store (`meta`) and the blob store (`blobstore`) and maps failures to the OCI error
//! JSON. This crate owns no SQL, no storage keys and no access rules; handlers never look at
//! credentials.

mod blobs;
mod error;
mod listing;
mod manifests;
mod proxied;
mod quota;
mod routes;
mod uploads;

use std::time::Duration;

use blobstore::BlobStore;
use meta::Store;

pub use error::RegistryError;
pub use routes::{router, Operation, Route, RouteTemplate, UploadId};

/// Limits a deployment may tune.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Largest single blob accepted, in bytes (`None`: no limit).
    pub max_blob_bytes: Option<u64>,
    /// Largest page of tags or repositories one request may ask for.
    pub max_page: i64,
    /// Which manifests an index lists must be in the repository before the index is pushed
    /// (`validation.manifests.indexes`).
    pub index_validation: oci::IndexValidation,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: None,
            max_page: 10_000,
            index_validation: oci::IndexValidation::All,
        }
    }
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub blobs: BlobStore,
    /// Every change of registry state goes through it.
    pub service: service::WriteService,
    pub limits: Limits,
    /// Decides who may do what; every request passes it before a handler runs.
    pub gate: auth::Gate,
    /// Fetches what a group's dependency proxy does not hold yet from its upstream; `None`
    /// serves those repositories from what they hold, like any other.
    pub pull_through: Option<std::sync::Arc<dyn service::dependency_proxy::PullThrough>>,
}

impl Registry {
    /// Removes upload sessions idle for longer than `max_idle`, with every object they
    /// stored, and objects in storage of sessions the database no longer knows (left by a
    /// crash or a request cut off mid-write) untouched for as long. Returns how many sessions
    /// were removed from the database. Safe to run on every instance at once.
    pub async fn purge_idle_uploads(&self, max_idle: Duration) -> Result<usize, meta::MetaError> {
        let cutoff = meta::now_millis() - max_idle.as_millis() as i64;
        let mut removed = 0;
        loop {
            let batch = self.store.idle_uploads(cutoff, 100).await?;
            if batch.is_empty() {
                break;
            }
            for upload in batch {
                if self.store.delete_upload(&upload.id).await? {
                    self.blobs.delete_upload(&upload.id).await;
                    removed += 1;
                }
            }
        }
        let idle_since = std::time::SystemTime::now() - max_idle;
        match self.blobs.idle_upload_sessions(idle_since).await {
            Ok(sessions) => {
                for id in sessions {
                    if self.store.upload(&id).await?.is_none() {
                        self.blobs.delete_upload(&id).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list upload objects to purge"),
        }
        Ok(removed)
    }
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
