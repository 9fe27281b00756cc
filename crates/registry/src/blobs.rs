//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: streaming, with `Range` support.

use auth::access::RepositoryAccess;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use meta::UnlinkOutcome;
use oci::{Digest, ErrorCode, RepositoryName};

use crate::error::{RegistryError, Result};
use crate::{header, Registry};

fn blob_unknown(digest: &Digest, name: &RepositoryName) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in repository {name}"))
        .with_detail(serde_json::json!({ "digest": digest.as_str() }))
}

/// A single byte range of a `size`-byte blob, parsed from `bytes=a-b`, `bytes=a-` or `bytes=-n`.
/// `Err` when the range cannot be satisfied.
fn parse_range(value: &str, size: u64) -> std::result::Result<std::ops::Range<u64>, ()> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(()); // multipart ranges are not served
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => {
            let e: u64 = e.parse().map_err(|_| ())?;
            (s.parse().map_err(|_| ())?, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(start..end + 1)
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
        Some(value) => Some(parse_range(value, size).map_err(|()| {
            RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("range {value:?} cannot be served from a blob of {size} bytes"),
            )
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
    let (status, length) = match &range {
        Some(r) => {
            response_headers
                .push(("content-range", format!("bytes {}-{}/{size}", r.start, r.end - 1)));
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    response_headers.push(("content-length", length.to_string()));
    let body = if head_only {
        Body::empty()
    } else {
        let read = registry.blobs.read(digest, range).await?;
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
    match registry.store.unlink_blob(name, digest).await? {
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

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Ok(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Ok(90..100));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(50..100));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
        assert!(parse_range("bytes=0-1,3-4", 100).is_err());
    }
}
