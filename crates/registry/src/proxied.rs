//! Manifest and blob reads of a dependency proxy's repositories
//! (`<group>/dependency_proxy/containers/<image>`): what the repository holds is served as
//! usual; a miss is fetched from the upstream through [`PullThrough`], blobs streamed to the
//! client while they are stored.

use std::sync::Arc;

use auth::access::RepositoryAccess;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use oci::{Digest, ErrorCode, Reference};
use service::dependency_proxy::{PullThrough, PullThroughError};

use crate::error::{RegistryError, Result};
use crate::{blobs, manifests, Registry};

/// The `Warning` header of a response served from the cache because the upstream failed.
const STALE_WARNING: &str = "110 - \"Response is Stale\"";

/// The pull-through of the repository the access was granted for, if it is a dependency
/// proxy's and this server proxies.
pub(crate) fn pull_through<'a>(
    registry: &'a Registry,
    access: &RepositoryAccess,
) -> Option<&'a Arc<dyn PullThrough>> {
    access.name().dependency_proxy()?;
    registry.pull_through.as_ref()
}

fn upstream_error(e: PullThroughError, not_found: ErrorCode) -> RegistryError {
    match e {
        PullThroughError::NotFound(message) => RegistryError::new(not_found, message),
        PullThroughError::RateLimited { message, retry_after } => {
            let error = RegistryError::new(ErrorCode::TooManyRequests, message);
            match retry_after {
                Some(secs) => error.with_header("retry-after", secs.to_string()),
                None => error,
            }
        }
        PullThroughError::Unavailable(message) => RegistryError::new(ErrorCode::Unknown, message)
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_header("retry-after", "10".into()),
        PullThroughError::Service(e) => e.into(),
    }
}

pub(crate) async fn manifest(
    proxy: &Arc<dyn PullThrough>,
    access: &RepositoryAccess,
    reference: &Reference,
    headers: &HeaderMap,
    head_only: bool,
) -> Result<Response> {
    let manifest = proxy
        .manifest(access.name(), reference)
        .await
        .map_err(|e| upstream_error(e, ErrorCode::ManifestUnknown))?;
    if !manifests::accepts(headers, &manifest.media_type) {
        return Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {reference} is a {}, which the request's Accept header does not allow",
                manifest.media_type
            ),
        ));
    }
    let mut response_headers = vec![
        ("content-type", manifest.media_type.clone()),
        ("docker-content-digest", manifest.digest.clone()),
        ("etag", format!("\"{}\"", manifest.digest)),
        ("content-length", manifest.payload.len().to_string()),
    ];
    if manifest.stale {
        response_headers.push(("warning", STALE_WARNING.to_string()));
    }
    let body = if head_only { Body::empty() } else { Body::from(manifest.payload) };
    let mut response = (StatusCode::OK, body).into_response();
    for (name, value) in response_headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}

pub(crate) async fn blob(
    registry: &Registry,
    proxy: &Arc<dyn PullThrough>,
    access: &RepositoryAccess,
    digest: &Digest,
    headers: &HeaderMap,
    head_only: bool,
) -> Result<Response> {
    if registry.store.repository_blob(access.name(), digest).await?.is_some() {
        return blobs::get(registry, access, digest, headers, head_only).await;
    }
    let fetched = proxy
        .blob(access.name(), digest)
        .await
        .map_err(|e| upstream_error(e, ErrorCode::BlobUnknown))?;
    let Some(fetched) = fetched else {
        return blobs::get(registry, access, digest, headers, head_only).await;
    };
    // A range of a blob not cached yet is answered with the whole blob (as HTTP allows):
    // the proxy stores it from its first byte.
    let body = if head_only { Body::empty() } else { Body::from_stream(fetched.stream) };
    let mut response = (StatusCode::OK, body).into_response();
    let mut response_headers = vec![
        ("docker-content-digest", digest.to_string()),
        ("content-type", "application/octet-stream".to_string()),
        ("etag", format!("\"{digest}\"")),
    ];
    if let Some(size) = fetched.size {
        response_headers.push(("content-length", size.to_string()));
    }
    for (name, value) in response_headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}
