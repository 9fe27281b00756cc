//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: streaming, with `Range` support.

use auth::access::RepositoryAccess;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use meta::UnlinkOutcome;
use oci::{ByteRange, Digest, ErrorCode, RepositoryName};

use crate::error::{RegistryError, Result};
use crate::{header, Registry};

fn blob_unknown(digest: &Digest, name: &RepositoryName) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in repository {name}"))
        .with_detail(serde_json::json!({ "digest": digest.as_str() }))
}

pub(crate) async fn get(
    registry: &Registry,
    access: &RepositoryAccess,
    digest: &Digest,
    headers: &HeaderMap,
    head_only: bool,
) -> Result<Response> {
    let name = access.name();
    let blob = registry
        .store
        .repository_blob(name, digest)
        .await?
        .ok_or_else(|| blob_unknown(digest, name))?;
    let size = blob.size as u64;
    let range = match header(headers, "range") {
        Some(value) => Some(ByteRange::parse(value, size).map_err(|e| {
            RegistryError::new(ErrorCode::RangeInvalid, e.to_string())
                .with_header("content-range", format!("bytes */{size}"))
        })?),
        None => None,
    };
    let mut response_headers = vec![
        ("docker-content-digest", digest.to_string()),
        ("content-type", "application/octet-stream".to_string()),
        ("accept-ranges", "bytes".to_string()),
        ("etag", format!("\"{digest}\"")),
        ("cache-control", "max-age=31536000".to_string()),
    ];
    // Whole-blob GETs may go straight to the object store; HEAD and ranges are answered
    // here (both are cheap, and a range needs no second round trip).
    if !head_only && range.is_none() {
        if let Some(url) = registry.blobs.redirect_url(digest).await? {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            for (name, value) in
                [("location", url.to_string()), ("docker-content-digest", digest.to_string())]
            {
                if let Ok(v) = value.parse() {
                    response.headers_mut().insert(name, v);
                }
            }
            return Ok(response);
        }
    }
    let (status, length) = match &range {
        Some(r) => {
            response_headers.push(("content-range", r.content_range(size)));
            (StatusCode::PARTIAL_CONTENT, r.len())
        }
        None => (StatusCode::OK, size),
    };
    response_headers.push(("content-length", length.to_string()));
    let body = if head_only {
        Body::empty()
    } else {
        let read = registry.blobs.read(digest, range.map(|r| r.as_range())).await?;
        Body::from_stream(read.stream.map(|r| r.map_err(std::io::Error::other)))
    };
    let mut response = (status, body).into_response();
    for (name, value) in response_headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}

pub(crate) async fn delete(
    registry: &Registry,
    access: &RepositoryAccess,
    digest: &Digest,
) -> Result<Response> {
    let name = access.name();
    match registry.service.unlink_blob(name, digest).await? {
        UnlinkOutcome::Unlinked => {
            Ok((StatusCode::ACCEPTED, [("docker-content-digest", digest.to_string())])
                .into_response())
        }
        UnlinkOutcome::NotLinked => Err(blob_unknown(digest, name)),
        UnlinkOutcome::Referenced { manifest, tag, as_config } => {
            Err(still_referenced(name, digest, &manifest, tag.as_deref(), as_config))
        }
    }
}

/// Why a blob a manifest still uses cannot go, and what to do instead.
fn still_referenced(
    name: &RepositoryName,
    digest: &Digest,
    manifest: &str,
    tag: Option<&str>,
    as_config: bool,
) -> RegistryError {
    let role = if as_config { "the config" } else { "a layer" };
    let tagged = tag.map(|t| format!(" (tag {t})")).unwrap_or_default();
    RegistryError::new(
        ErrorCode::Denied,
        format!(
            "blob {digest} is {role} of manifest {manifest}{tagged} in repository {name}: \
             deleting it would break that image; delete the manifest first \
             (DELETE /v2/{name}/manifests/{manifest}), then the blob"
        ),
    )
    .with_detail(serde_json::json!({ "digest": digest.as_str(), "manifest": manifest, "tag": tag }))
}
