//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use meta::ManifestRecord;
use oci::{Digest, ErrorCode, ManifestError, ParsedManifest, Reference, RepositoryName, Tag};
use service::events::EventTarget;
use service::{RequestContext, ServiceError};

use auth::access::RepositoryAccess;

use crate::error::{refused, RegistryError, Result};
use crate::{header, Query, Registry};

fn manifest_unknown(name: &RepositoryName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in repository {name}"),
    )
    .with_detail(serde_json::json!({ "reference": reference.to_string() }))
}

/// Whether an `Accept` header admits `media_type`. No header (or a wildcard) admits anything.
pub(crate) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any_listed = false;
    for value in headers.get_all("accept") {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let item = item.split(';').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            any_listed = true;
            if item == media_type || item == "*/*" || item == "application/*" {
                return true;
            }
        }
    }
    !any_listed
}

pub(crate) async fn get(
    registry: &Registry,
    access: &RepositoryAccess,
    reference: &Reference,
    headers: &HeaderMap,
    head_only: bool,
    ctx: &RequestContext,
) -> Result<Response> {
    let name = access.name();
    let found: Option<ManifestRecord> = match reference {
        Reference::Tag(tag) => registry.store.manifest_by_tag(name, tag).await?,
        Reference::Digest(digest) => registry.store.manifest_by_digest(name, digest).await?,
    };
    let manifest = found.ok_or_else(|| manifest_unknown(name, reference))?;
    if !accepts(headers, &manifest.media_type) {
        return Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {reference} is a {}, which the request's Accept header does not allow",
                manifest.media_type
            ),
        ));
    }
    let headers = [
        ("content-type", manifest.media_type.clone()),
        ("docker-content-digest", manifest.digest.clone()),
        ("etag", format!("\"{}\"", manifest.digest)),
        ("content-length", manifest.payload.len().to_string()),
    ];
    if !head_only {
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.as_str()),
            Reference::Digest(_) => None,
        };
        let target = EventTarget {
            repository: name.as_str(),
            media_type: &manifest.media_type,
            digest: &manifest.digest,
            size: manifest.payload.len() as i64,
            tag,
        };
        registry.service.record_pull(ctx, &target).await;
    }
    let body = if head_only { Body::empty() } else { Body::from(manifest.payload) };
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Reads at most `limit` bytes of body; a larger body is refused without reading it all.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>> {
    let too_large = || {
        RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("manifest is larger than the {limit}-byte limit of this registry"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest body could not be read: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub(crate) async fn put(
    registry: &Registry,
    access: &RepositoryAccess,
    reference: &Reference,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
    ctx: &RequestContext,
) -> Result<Response> {
    let name = access.name();
    // `?tag=` names tags for a push by digest (distribution-spec, "Pushing Manifests"); a push
    // by tag names its one tag in the path, and mixing both ways has no defined answer.
    let mut query_tags: Vec<Tag> = Vec::new();
    for tag in query.all("tag") {
        let tag: Tag = tag.parse().map_err(|e: oci::NameError| {
            RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
        })?;
        if !query_tags.contains(&tag) {
            query_tags.push(tag);
        }
    }
    if let (Reference::Tag(tag), Some(_)) = (reference, query_tags.first()) {
        return Err(RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!(
                "the tag query parameter adds tags to a push by digest \
                 (PUT /v2/{name}/manifests/<digest>?tag=…); this push names tag {tag} in its path"
            ),
        ));
    }
    let limit = registry.limits.max_manifest_bytes;
    if let Some(length) = header(headers, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        if length > limit {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("manifest is {length} bytes; the limit of this registry is {limit}"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }
    let payload = read_limited(body, limit).await?;

    let (digest, tags) = match reference {
        Reference::Digest(given) => {
            let computed = Digest::of(given.algorithm(), &payload);
            if computed != *given {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest's digest is {computed}, not the {given} in the URL"),
                ));
            }
            (computed, query_tags.clone())
        }
        Reference::Tag(tag) => (Digest::sha256_of(&payload), vec![tag.clone()]),
    };

    // Protection is checked before the manifest is even parsed, for a clear answer; the write
    // service checks it again inside its transaction, against the tag rows it has locked.
    if let Some(protection) = registry.store.protection_for_repository(name.as_str()).await? {
        let level = access.role();
        if tags.is_empty() {
            protection.check_push(None, false, level).map_err(refused)?;
        }
        for tag in &tags {
            let current = registry.store.manifest_by_tag(name, tag).await?;
            let moves = current.is_some_and(|m| m.digest != digest.as_str());
            protection.check_push(Some(tag.as_str()), moves, level).map_err(refused)?;
        }
    }

    let parsed = ParsedManifest::parse(header(headers, "content-type"), &payload).map_err(
        |e: ManifestError| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()),
    )?;
    let new = service::dependency_proxy::new_manifest(
        digest.clone(),
        &parsed,
        payload,
        &registry.limits.index_validation,
    );
    let digests: Vec<&str> = new.blobs.iter().map(|d| d.as_str()).collect();
    crate::quota::require_room(registry, name, Some(&digests)).await?;
    registry.service.put_manifest(name, access.into(), &new, &tags, ctx).await.map_err(|e| match e {
        ServiceError::TagFrozen(tag) => RegistryError::new(
            ErrorCode::ImmutableTag,
            format!("tag {tag} is immutable: it cannot be moved to another manifest; push a new tag instead"),
        ),
        ServiceError::BlobUnknown(d) => RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            format!("blob {d} is not in repository {name}; push it before the manifest"),
        )
        .with_detail(serde_json::json!({ "digest": d })),
        ServiceError::ManifestUnknown(d) => RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            format!("manifest {d} listed by the index is not in repository {name}; push it first"),
        )
        .with_detail(serde_json::json!({ "digest": d })),
        other => other.into(),
    })?;

    registry.store.log_storage_notices().await;
    let mut response = (
        StatusCode::CREATED,
        [
            ("location", format!("/v2/{name}/manifests/{digest}")),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response();
    if let Some(subject) = &parsed.subject {
        if let Ok(v) = subject.digest.as_str().parse() {
            response.headers_mut().insert("oci-subject", v);
        }
    }
    // One `OCI-Tag` per tag accepted from `?tag=` (the spec's MUST for registries that support
    // the parameter). A push by tag has none: the spec defines the header for a push by digest.
    for tag in &query_tags {
        if let Ok(v) = tag.as_str().parse() {
            response.headers_mut().append("oci-tag", v);
        }
    }
    Ok(response)
}

pub(crate) async fn delete(
    registry: &Registry,
    access: &RepositoryAccess,
    reference: &Reference,
    ctx: &RequestContext,
) -> Result<Response> {
    let name = access.name();
    let deleted = match reference {
        Reference::Tag(tag) => registry.service.delete_tag(name, tag, access.into(), ctx).await?,
        Reference::Digest(digest) => {
            registry.service.delete_manifest(name, digest, access.into(), ctx).await?
        }
    };
    if !deleted {
        return Err(manifest_unknown(name, reference));
    }
    Ok((StatusCode::ACCEPTED, [("content-length", "0")]).into_response())
}
