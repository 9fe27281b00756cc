//! Raw-HTTP tests of blob upload sessions: POST/PATCH/PUT/GET/DELETE, chunk order, streaming,
//! digest mismatch, truncated uploads, restarts and cross-repository mounts.

mod common;

use common::*;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend};
use reqwest::Method;

backend_tests!(
    session_headers,
    chunked_upload,
    out_of_order_chunk,
    streamed_upload,
    monolithic_put_after_post,
    cancel_upload,
    unknown_upload_session,
    finished_session_is_gone,
    digest_mismatch,
    put_digest_for_fewer_bytes,
    dropped_connection_leaves_nothing,
    upload_survives_restart,
    mount_from_other_repo,
    mount_falls_back_to_upload,
    mount_without_from,
);

/// PATCHes `chunk` at `start`, asserting 202 and `Range: 0-<end>`; returns the new Location.
async fn patch_chunk(reg: &Registry, location: &str, start: usize, chunk: &[u8]) -> String {
    let end = start + chunk.len() - 1;
    let resp = reg
        .req(Method::PATCH, location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 202 {
        panic!("PATCH {start}-{end}: {status}: {}", resp.text().await.unwrap_or_default());
    }
    assert_upload_range(&resp, end as u64);
    path_of(&header(&resp, "location").expect("PATCH response has a Location"))
}

/// `PUT <location>?digest=` with an optional final chunk; returns the response.
async fn finish(
    reg: &Registry,
    location: &str,
    digest: &str,
    body: Option<&[u8]>,
) -> reqwest::Response {
    let mut req = reg.req(Method::PUT, &with_query(location, &format!("digest={digest}")));
    if let Some(body) = body {
        req = req.header("Content-Type", "application/octet-stream").body(body.to_vec());
    } else {
        req = req.header("Content-Length", "0").body(Vec::new());
    }
    req.send().await.unwrap()
}

async fn assert_blob(reg: &Registry, repo: &str, digest: &str, data: &[u8]) {
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest));
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len(), "blob length");
    assert!(body.as_ref() == data, "blob content differs");
}

async fn session_headers(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("session");
    let resp = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .header("Content-Length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_status(&resp, 202);
    let location = header(&resp, "location").expect("Location");
    let uuid = header(&resp, "docker-upload-uuid").expect("Docker-Upload-UUID");
    assert!(!uuid.is_empty());
    assert!(
        path_of(&location).starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "upload Location {location} is under /v2/{repo}/blobs/uploads/"
    );
    assert!(location.contains(&uuid), "Location {location} contains the upload id {uuid}");

    // Status of a fresh session.
    let resp = reg.get(&location).await;
    assert_status(&resp, 204);
    assert!(header(&resp, "location").is_some(), "upload status has a Location");
    assert_eq!(header(&resp, "docker-upload-uuid").as_deref(), Some(uuid.as_str()));
}

async fn chunked_upload(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("chunked");
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);

    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data[..1000]).await;
    let location = patch_chunk(&reg, &location, 1000, &data[1000..2000]).await;

    let resp = reg.get(&location).await;
    assert_status(&resp, 204);
    assert_upload_range(&resp, 1999);
    assert!(header(&resp, "location").is_some(), "upload status has a Location");

    // Final chunk in the closing PUT.
    let resp = reg
        .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let blob_location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    assert_eq!(status, 201, "closing PUT: {}", resp.text().await.unwrap_or_default());
    let blob_location = blob_location.expect("201 has a Location");
    assert!(
        path_of(&blob_location).ends_with(&format!("/v2/{repo}/blobs/{digest}")),
        "{blob_location}"
    );
    assert_eq!(dcd.as_deref(), Some(digest.as_str()));
    assert_blob(&reg, &repo, &digest, &data).await;
}

async fn out_of_order_chunk(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("ooo");
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);

    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data[..1000]).await;

    for (start, end) in [(1500usize, 1999usize), (500, 1499), (0, 999)] {
        let resp = reg
            .req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{end}"))
            .body(data[start..=end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            416,
            "chunk {start}-{end} after 0-999 must be refused: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    // The session is intact and the client can resume from the reported offset.
    let resp = reg.get(&location).await;
    assert_status(&resp, 204);
    assert_upload_range(&resp, 999);
    let location = path_of(&header(&resp, "location").unwrap());
    let location = patch_chunk(&reg, &location, 1000, &data[1000..]).await;
    let resp = finish(&reg, &location, &digest, None).await;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await.unwrap_or_default());
    assert_blob(&reg, &repo, &digest, &data).await;
}

async fn streamed_upload(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("stream");
    let data = random_bytes(3 * 1024 * 1024 + 17);
    let digest = sha256_digest(&data);
    let half = data.len() / 2;

    let mut location = reg.start_upload(&repo).await;
    for (part, end) in [(&data[..half], half - 1), (&data[half..], data.len() - 1)] {
        // A streamed body: chunked transfer encoding, no Content-Length, no Content-Range.
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> =
            part.chunks(64 * 1024).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(pieces));
        let resp = reg
            .req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 202, "streamed PATCH: {}", resp.text().await.unwrap_or_default());
        assert_upload_range(&resp, end as u64);
        location = path_of(&header(&resp, "location").expect("Location"));
    }
    let resp = finish(&reg, &location, &digest, None).await;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await.unwrap_or_default());
    assert_blob(&reg, &repo, &digest, &data).await;
}

async fn monolithic_put_after_post(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("post-put");
    let data = random_bytes(10_000);
    let digest = sha256_digest(&data);
    let location = reg.start_upload(&repo).await;
    let resp = finish(&reg, &location, &digest, Some(&data)).await;
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert_blob(&reg, &repo, &digest, &data).await;

    // An empty blob is a blob too.
    let empty_digest = sha256_digest(b"");
    let location = reg.start_upload(&repo).await;
    let resp = finish(&reg, &location, &empty_digest, None).await;
    assert_status(&resp, 201);
    assert_blob(&reg, &repo, &empty_digest, b"").await;
}

async fn cancel_upload(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("cancel");
    let data = random_bytes(2000);
    let digest = sha256_digest(&data);
    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data[..1000]).await;

    let resp = reg.delete(&location).await;
    assert!(
        resp.status().is_success(),
        "DELETE upload: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );

    let resp = reg.get(&location).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = reg
        .req(Method::PATCH, &location)
        .header("Content-Range", "1000-1999")
        .body(data[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = finish(&reg, &location, &digest, Some(&data[1000..])).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = reg.delete(&location).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    assert_eq!(reg.blob_status(&repo, &digest).await, 404);
}

async fn unknown_upload_session(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("no-session");
    reg.push_blob(&repo, b"repository exists").await;
    let path = format!("/v2/{repo}/blobs/uploads/3f1c7a0e-58a5-4a4e-9a77-0c6d2f0e9b1d");
    let resp = reg.get(&path).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = reg
        .req(Method::PATCH, &path)
        .header("Content-Type", "application/octet-stream")
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = finish(&reg, &path, &sha256_digest(b"abc"), Some(b"abc")).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
}

async fn finished_session_is_gone(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("finished");
    let data = random_bytes(100);
    let digest = sha256_digest(&data);
    let location = reg.start_upload(&repo).await;
    let resp = finish(&reg, &location, &digest, Some(&data)).await;
    assert_status(&resp, 201);
    let resp = reg.get(&location).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = finish(&reg, &location, &digest, Some(&data)).await;
    assert_oci_error(resp, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
}

async fn digest_mismatch(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("mismatch");
    let data = random_bytes(4000);
    let actual = sha256_digest(&data);
    let claimed = sha256_digest(b"something else entirely");

    // POST + PUT with the wrong digest.
    let location = reg.start_upload(&repo).await;
    let resp = finish(&reg, &location, &claimed, Some(&data)).await;
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;

    // Chunked, then a closing PUT with the wrong digest.
    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data).await;
    let resp = finish(&reg, &location, &claimed, None).await;
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;

    for d in [&claimed, &actual] {
        assert_eq!(reg.blob_status(&repo, d).await, 404, "{d} must not exist after a mismatch");
    }

    // Single-POST with the wrong digest.
    let resp = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={claimed}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;

    for d in [&claimed, &actual] {
        assert_eq!(reg.blob_status(&repo, d).await, 404, "{d} must not exist after a mismatch");
        let hex = d.trim_start_matches("sha256:");
        assert!(!reg.data_dir_mentions(hex), "storage holds an object named after {d}");
    }
}

async fn put_digest_for_fewer_bytes(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("short");
    let data = random_bytes(4000);
    let digest = sha256_digest(&data);

    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data[..2500]).await;
    let resp = finish(&reg, &location, &digest, None).await;
    assert_oci_error(resp, &[400], &["DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"])
        .await;
    assert_eq!(reg.blob_status(&repo, &digest).await, 404);
    assert!(!reg.data_dir_mentions(digest.trim_start_matches("sha256:")));
}

async fn dropped_connection_leaves_nothing(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("dropped");
    reg.push_blob(&repo, b"repository exists").await;
    let data = random_bytes(200_000);
    let digest = sha256_digest(&data);
    let hex = digest.trim_start_matches("sha256:").to_string();

    // Closing PUT whose body stops half-way.
    let location = reg.start_upload(&repo).await;
    let path = with_query(&location, &format!("digest={digest}"));
    send_truncated(&reg.server.addr, "PUT", &path, data.len(), &data[..100_000]).await;
    assert_eq!(
        reg.blob_status(&repo, &digest).await,
        404,
        "truncated PUT must not create the blob"
    );

    // Single-POST whose body stops half-way.
    let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    send_truncated(&reg.server.addr, "POST", &path, data.len(), &data[..100_000]).await;
    assert_eq!(
        reg.blob_status(&repo, &digest).await,
        404,
        "truncated POST must not create the blob"
    );

    // A PATCH whose body stops half-way must not count as received bytes beyond what arrived.
    let location = reg.start_upload(&repo).await;
    send_truncated(&reg.server.addr, "PATCH", &location, data.len(), &data[..100_000]).await;
    let resp = reg.get(&location).await;
    let status = resp.status().as_u16();
    if status == 204 {
        let range = header(&resp, "range").unwrap_or_else(|| "0-0".into());
        let (_, end) = parse_range(&range);
        assert!(
            end < 100_000,
            "a truncated PATCH cannot have stored more than it received: {range}"
        );
    } else {
        // The registry may also have discarded the session.
        assert_eq!(status, 404, "upload status after a truncated PATCH");
    }
    // Finishing with the full digest and no more data cannot succeed.
    let resp = finish(&reg, &location, &digest, None).await;
    let status = resp.status().as_u16();
    assert!((400..500).contains(&status), "closing a truncated upload: {status}");
    assert_eq!(reg.blob_status(&repo, &digest).await, 404);
    assert!(!reg.data_dir_mentions(&hex), "storage holds an object named after {digest}");
}

async fn upload_survives_restart(backend: MetaBackend) {
    let mut reg = Registry::start(backend);
    let repo = unique_repo("restart");
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);

    let location = reg.start_upload(&repo).await;
    let location = patch_chunk(&reg, &location, 0, &data[..1200]).await;

    reg.restart();

    let resp = reg.get(&location).await;
    assert_status(&resp, 204);
    assert_upload_range(&resp, 1199);
    let location = patch_chunk(&reg, &location, 1200, &data[1200..2400]).await;
    let resp = finish(&reg, &location, &digest, Some(&data[2400..])).await;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await.unwrap_or_default());
    assert_blob(&reg, &repo, &digest, &data).await;
}

async fn mount_from_other_repo(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let from = unique_repo("mount-src");
    let to = unique_repo("mount-dst");
    let data = random_bytes(1500);
    let digest = reg.push_blob(&from, &data).await;

    let resp = reg
        .req(Method::POST, &format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"))
        .header("Content-Length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_status(&resp, 201);
    let location = header(&resp, "location").expect("mount 201 has a Location");
    assert!(path_of(&location).ends_with(&format!("/v2/{to}/blobs/{digest}")), "{location}");
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert_blob(&reg, &to, &digest, &data).await;
    assert_blob(&reg, &from, &digest, &data).await;
}

async fn mount_falls_back_to_upload(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let has = unique_repo("mount-has");
    let lacks = unique_repo("mount-lacks");
    let to = unique_repo("mount-to");
    let data = random_bytes(1500);
    let digest = reg.push_blob(&has, &data).await;
    reg.push_blob(&lacks, b"another blob").await;

    // From a repository that does not have the blob: a normal upload session starts.
    for from in [lacks.clone(), unique_repo("mount-nowhere")] {
        let to = unique_repo("mount-to");
        let resp = reg
            .req(Method::POST, &format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"))
            .header("Content-Length", "0")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_status(&resp, 202);
        let location = path_of(&header(&resp, "location").expect("202 has an upload Location"));
        assert!(header(&resp, "docker-upload-uuid").is_some());
        assert!(location.starts_with(&format!("/v2/{to}/blobs/uploads/")), "{location}");
        assert_eq!(reg.blob_status(&to, &digest).await, 404, "failed mount must not link the blob");
        let resp = finish(&reg, &location, &digest, Some(&data)).await;
        assert_status(&resp, 201);
        assert_blob(&reg, &to, &digest, &data).await;
    }

    // Mounting a digest nobody has also starts a normal upload.
    let unknown = sha256_digest(&random_bytes(32));
    let resp = reg
        .req(Method::POST, &format!("/v2/{to}/blobs/uploads/?mount={unknown}&from={has}"))
        .header("Content-Length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_status(&resp, 202);
}

async fn mount_without_from(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let from = unique_repo("mount-nofrom-src");
    let to = unique_repo("mount-nofrom-dst");
    let data = random_bytes(1500);
    let digest = reg.push_blob(&from, &data).await;

    let resp = reg
        .req(Method::POST, &format!("/v2/{to}/blobs/uploads/?mount={digest}"))
        .header("Content-Length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "mount without from of a known blob: {}",
        resp.text().await.unwrap_or_default()
    );
    assert_blob(&reg, &to, &digest, &data).await;

    // An unknown digest without `from` starts a normal upload.
    let unknown = sha256_digest(&random_bytes(32));
    let resp = reg
        .req(Method::POST, &format!("/v2/{to}/blobs/uploads/?mount={unknown}"))
        .header("Content-Length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_status(&resp, 202);
}
