//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic, mount) and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.
//!
//! A session's state (offset, saved SHA-256 state, list of parts) lives in the metadata
//! database and its bytes in storage, so any instance can continue it, also after a restart.
//! Each PATCH (or PUT with a body) streams its body into a storage object of its own while
//! hashing it, and only then tries to append that part to the session at the offset it
//! started from; of requests racing on one session exactly one lands, and the others delete
//! their own objects and answer 416 with the session's current state. PUT verifies the digest
//! and publishes exactly the listed parts. A failed, short or losing chunk leaves the session
//! at its previous offset.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use blobstore::ResumableSha256;
use meta::{UploadPart, UploadRecord};
use oci::{ChunkRange, Digest, ErrorCode, RepositoryName};

use auth::access::RepositoryAccess;

use crate::error::{RegistryError, Result};
use crate::routes::{parse_digest, upload_unknown, UploadId};
use crate::{header, Query, Registry};

fn upload_location(name: &RepositoryName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The `Range` header value for a session holding `size` bytes (inclusive end, as clients expect).
fn range_value(size: i64) -> String {
    format!("0-{}", (size - 1).max(0))
}

fn session_response(status: StatusCode, name: &RepositoryName, upload: &UploadRecord) -> Response {
    (
        status,
        [
            ("location", upload_location(name, &upload.id)),
            ("range", range_value(upload.size)),
            ("docker-upload-uuid", upload.id.clone()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response()
}

fn blob_created(name: &RepositoryName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response()
}

/// The session ended while this request was writing to it.
fn upload_gone() -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        "the upload finished, was cancelled or expired while this chunk was written; start a new one",
    )
}

fn new_session(name: &RepositoryName) -> UploadRecord {
    let now = meta::now_millis();
    UploadRecord {
        id: UploadId::random().to_string(),
        repository: name.to_string(),
        size: 0,
        parts: 0,
        hash_state: ResumableSha256::new().to_bytes(),
        created_at: now,
        updated_at: now,
    }
}

async fn load(registry: &Registry, name: &RepositoryName, id: &UploadId) -> Result<UploadRecord> {
    match registry.store.upload(id.as_str()).await? {
        Some(upload) if upload.repository == name.as_str() => Ok(upload),
        _ => Err(upload_unknown(id.as_str())),
    }
}

fn hasher_of(upload: &UploadRecord) -> Result<ResumableSha256> {
    ResumableSha256::from_bytes(&upload.hash_state).ok_or_else(|| {
        RegistryError::internal(format!("upload {} has a corrupt hash state", upload.id))
    })
}

/// Bytes one more part may hold under the blob size limit.
fn remaining(registry: &Registry, size_so_far: i64) -> Option<u64> {
    registry.limits.max_blob_bytes.map(|max| max.saturating_sub(size_so_far as u64))
}

/// The request's `Content-Range`, if it has one.
fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>> {
    let Some(value) = header(headers, "content-range") else { return Ok(None) };
    ChunkRange::parse(value)
        .map(Some)
        .map_err(|e| RegistryError::new(ErrorCode::RangeInvalid, e.to_string()))
}

fn out_of_order(name: &RepositoryName, upload: &UploadRecord, start: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!(
            "chunk starts at byte {start} but the upload holds {} bytes; resend from there",
            upload.size
        ),
    )
    .with_header("location", upload_location(name, &upload.id))
    .with_header("range", range_value(upload.size))
    .with_header("docker-upload-uuid", upload.id.clone())
}

/// Streams `body` into a new part object of the session (checking its `Content-Range`, if
/// any, against what the session holds). The part is not recorded yet.
async fn write_part(
    registry: &Registry,
    name: &RepositoryName,
    upload: &UploadRecord,
    headers: &HeaderMap,
    body: Body,
) -> Result<blobstore::WrittenPart> {
    let range = content_range(headers)?;
    if let Some(range) = range {
        if range.start() != upload.size as u64 {
            return Err(out_of_order(name, upload, range.start()));
        }
    }
    let hasher = hasher_of(upload)?;
    let written = registry
        .blobs
        .write_part(&upload.id, &hasher, body.into_data_stream(), remaining(registry, upload.size))
        .await?;
    if let Some(range) = range {
        let expected = range.len();
        if written.size != expected {
            registry.blobs.discard_part(&upload.id, &written.object).await;
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "Content-Range announced {expected} bytes but the body had {}; resend the chunk",
                    written.size
                ),
            ));
        }
    }
    Ok(written)
}

/// Streams `body` into a new part of its own and appends it to the session, unless another
/// request appended first. Returns the updated session.
async fn append(
    registry: &Registry,
    name: &RepositoryName,
    mut upload: UploadRecord,
    headers: &HeaderMap,
    body: Body,
) -> Result<UploadRecord> {
    let written = write_part(registry, name, &upload, headers, body).await?;
    let part = UploadPart { start: upload.size, size: written.size as i64, object: written.object };
    let state = written.hasher.to_bytes();
    let appended = registry.store.append_upload_part(&upload.id, upload.size, &part, &state).await;
    match appended {
        Ok(true) => {}
        Ok(false) => {
            // Another request appended first (or the session ended): this chunk does not
            // count, and only this request's own object goes.
            registry.blobs.discard_part(&upload.id, &part.object).await;
            let current = match registry.store.upload(&upload.id).await? {
                Some(current) => current,
                None => return Err(upload_gone()),
            };
            return Err(out_of_order(name, &current, upload.size as u64));
        }
        Err(e) => {
            registry.blobs.discard_part(&upload.id, &part.object).await;
            return Err(e.into());
        }
    }
    if part.size > 0 {
        upload.parts += 1;
    }
    upload.size += part.size;
    upload.hash_state = state;
    Ok(upload)
}

/// The parts the session has recorded, in order.
async fn recorded_parts(
    registry: &Registry,
    upload: &UploadRecord,
) -> Result<Vec<blobstore::UploadPart>> {
    Ok(registry
        .store
        .upload_parts(&upload.id, upload.size)
        .await?
        .into_iter()
        .map(|p| blobstore::UploadPart { object: p.object, size: p.size as u64 })
        .collect())
}

/// Verifies the digest, publishes the blob and links it to `name` (the write service does
/// both in one transaction), and ends the session.
async fn commit(
    registry: &Registry,
    name: &RepositoryName,
    upload: &UploadRecord,
    digest: &Digest,
) -> Result<Response> {
    let hasher = hasher_of(upload)?;
    let parts = recorded_parts(registry, upload).await?;
    commit_parts(registry, name, upload, &parts, &hasher, digest).await
}

/// [`commit`] with a last chunk in the same request (a `PUT` with a body, a monolithic
/// `POST ?digest=`): the chunk is streamed into a part and the commit takes it directly. It is
/// never recorded on its own, since the transaction that publishes the blob ends the session
/// anyway: one database commit less per push (on PostgreSQL each waits for a WAL flush).
async fn append_and_commit(
    registry: &Registry,
    name: &RepositoryName,
    upload: &UploadRecord,
    headers: &HeaderMap,
    body: Body,
    digest: &Digest,
) -> Result<Response> {
    let written = write_part(registry, name, upload, headers, body).await?;
    let mut parts = recorded_parts(registry, upload).await?;
    let last = written.object.clone();
    if written.size > 0 {
        parts.push(blobstore::UploadPart { object: written.object, size: written.size });
    }
    let result = commit_parts(registry, name, upload, &parts, &written.hasher, digest).await;
    if result.is_err() || written.size == 0 {
        // Ended sessions lose every object anyway; a live one keeps only recorded parts.
        registry.blobs.discard_part(&upload.id, &last).await;
    }
    result
}

/// Commits `parts` (hashed by `hasher`) as the blob of session `upload`, read at its
/// current size: see [`service::WriteService::commit_upload_session`].
async fn commit_parts(
    registry: &Registry,
    name: &RepositoryName,
    upload: &UploadRecord,
    parts: &[blobstore::UploadPart],
    hasher: &ResumableSha256,
    digest: &Digest,
) -> Result<Response> {
    let committed = registry
        .service
        .commit_upload_session(name, &upload.id, upload.size, parts, hasher, digest)
        .await;
    match committed {
        Ok(()) => {}
        Err(service::ServiceError::Blob(e @ blobstore::BlobError::DigestMismatch { .. })) => {
            // The session cannot be completed any more: end it with everything it stored.
            end_session(registry, &upload.id).await?;
            return Err(
                RegistryError::from(e).with_detail(serde_json::json!({"digest": digest.as_str()}))
            );
        }
        Err(e) => {
            // A concurrent PUT finished (or a cancel ended) this session while this one read
            // it: the client's answer is that the session is over. A chunk another request
            // appended meanwhile: this request's offset is stale. Anything else is a server
            // fault.
            return match registry.store.upload(&upload.id).await? {
                None => Err(upload_unknown(&upload.id)),
                Some(current) if matches!(e, service::ServiceError::UploadSessionChanged) => {
                    Err(out_of_order(name, &current, upload.size as u64))
                }
                Some(_) => Err(e.into()),
            };
        }
    }
    // The write service ended the session's row with the commit; its parts go now.
    registry.blobs.delete_upload(&upload.id).await;
    Ok(blob_created(name, digest))
}

/// Ends a session: its row first (no request can append or commit any more), then every
/// object it stored, found by listing its storage prefix.
async fn end_session(registry: &Registry, id: &str) -> Result<bool> {
    let existed = registry.store.delete_upload(id).await?;
    registry.blobs.delete_upload(id).await;
    Ok(existed)
}

pub(crate) async fn start(
    registry: &Registry,
    access: &RepositoryAccess,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let name = access.name();
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(response) = try_mount(registry, access, &digest, query.get("from")).await? {
            return Ok(response);
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
    }
    // New content: refused when the namespace is full, unless it already holds the blob (a
    // mount that fell back to an upload names the blob too).
    let known = query.get("digest").or(query.get("mount")).and_then(|d| parse_digest(d).ok());
    let known = known.as_ref().map(|d| [d.as_str()]);
    crate::quota::require_room(registry, name, known.as_ref().map(|d| &d[..])).await?;
    let upload = new_session(name);
    registry.store.create_upload(&upload).await?;
    if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        let result = append_and_commit(registry, name, &upload, headers, body, &digest).await;
        if result.is_err() {
            // A failed monolithic upload leaves no session behind.
            let _ = end_session(registry, &upload.id).await;
        }
        return result;
    }
    Ok(session_response(StatusCode::ACCEPTED, name, &upload))
}

/// Links `digest` into the caller's repository from `from` (or, with no `from`, from any
/// repository holding it), provided the caller may read that repository.
async fn try_mount(
    registry: &Registry,
    access: &RepositoryAccess,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Option<Response>> {
    let name = access.name();
    let source = match from {
        Some(from) => match from.parse::<RepositoryName>() {
            Ok(from) if access.may_pull(&from).await? => {
                registry.store.repository_blob(&from, digest).await?
            }
            _ => None,
        },
        None => {
            let mut found = None;
            for repo in registry.store.repositories_with_blob(digest, 50).await? {
                let Ok(repo) = repo.parse::<RepositoryName>() else { continue };
                if access.may_pull(&repo).await? {
                    found = registry.store.blob(digest).await?;
                    break;
                }
            }
            found
        }
    };
    if source.is_none() {
        return Ok(None);
    }
    // The blob may have been collected since it was found: then there is nothing to mount.
    match registry.service.mount_blob(name, digest).await? {
        Some(_) => Ok(Some(blob_created(name, digest))),
        None => Ok(None),
    }
}

pub(crate) async fn status(
    registry: &Registry,
    access: &RepositoryAccess,
    id: &UploadId,
) -> Result<Response> {
    let name = access.name();
    let upload = load(registry, name, id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, name, &upload))
}

pub(crate) async fn patch(
    registry: &Registry,
    access: &RepositoryAccess,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let name = access.name();
    let upload = load(registry, name, id).await?;
    let upload = append(registry, name, upload, headers, body).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &upload))
}

pub(crate) async fn finish(
    registry: &Registry,
    access: &RepositoryAccess,
    id: &UploadId,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let name = access.name();
    let upload = load(registry, name, id).await?;
    let digest = query.get("digest").ok_or_else(|| {
        RegistryError::new(ErrorCode::DigestInvalid, "PUT must name the blob's digest in ?digest=")
    })?;
    let digest = parse_digest(digest)?;
    let has_body = header(headers, "content-length").is_none_or(|l| l.trim() != "0")
        || header(headers, "transfer-encoding").is_some();
    if has_body {
        append_and_commit(registry, name, &upload, headers, body, &digest).await
    } else {
        commit(registry, name, &upload, &digest).await
    }
}

pub(crate) async fn cancel(
    registry: &Registry,
    access: &RepositoryAccess,
    id: &UploadId,
) -> Result<Response> {
    let name = access.name();
    let upload = load(registry, name, id).await?;
    if !end_session(registry, &upload.id).await? {
        return Err(upload_unknown(id.as_str()));
    }
    Ok((StatusCode::NO_CONTENT, [("content-length", "0")]).into_response())
}
