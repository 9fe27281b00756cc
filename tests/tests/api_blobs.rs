//! Raw-HTTP tests: the base endpoint, blob HEAD/GET/DELETE, Range GETs, bad digests, and
//! concurrent pushes of one blob.

mod common;

use common::*;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend};
use reqwest::Method;

backend_tests!(
    base_endpoint,
    monolithic_post_then_head_and_get,
    range_get,
    unknown_blob,
    blob_delete,
    blobs_are_scoped_to_their_repository,
    bad_digests,
    concurrent_pushes_of_one_blob,
);

async fn base_endpoint(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let resp = reg.get("/v2/").await;
    assert_status(&resp, 200);
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0"),
        "GET /v2/ must carry Docker-Distribution-API-Version"
    );
    // Without the trailing slash too (docker probes /v2/ but some clients use /v2).
    let resp = reg.get("/v2").await;
    assert!(
        resp.status().is_success() || resp.status().is_redirection(),
        "GET /v2: {}",
        resp.status()
    );
}

async fn monolithic_post_then_head_and_get(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("mono");
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);

    let resp = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    let text = resp.text().await.unwrap();
    assert_eq!(status, 201, "single-POST monolithic upload: {text}");
    let location = location.expect("201 has a Location");
    assert!(
        path_of(&location).ends_with(&format!("/v2/{repo}/blobs/{digest}")),
        "Location {location} names the blob"
    );
    assert_eq!(dcd.as_deref(), Some(digest.as_str()));

    // HEAD: headers, no body.
    let resp = reg.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("5000"));
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

    // GET: the bytes.
    let resp = reg.get(&location).await;
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("5000"));
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}

async fn range_get(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("range");
    let data = random_bytes(1000);
    let digest = reg.push_blob(&repo, &data).await;
    let path = format!("/v2/{repo}/blobs/{digest}");

    let resp = reg.req(Method::GET, &path).header("Range", "bytes=100-199").send().await.unwrap();
    assert_status(&resp, 206);
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes 100-199/1000"));
    assert_eq!(header(&resp, "content-length").as_deref(), Some("100"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[100..200]);

    let resp = reg.req(Method::GET, &path).header("Range", "bytes=900-").send().await.unwrap();
    assert_status(&resp, 206);
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes 900-999/1000"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[900..]);

    // Suffix range: the last 10 bytes.
    let resp = reg.req(Method::GET, &path).header("Range", "bytes=-10").send().await.unwrap();
    assert_status(&resp, 206);
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes 990-999/1000"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[990..]);

    // A range starting past the end cannot be satisfied.
    let resp = reg.req(Method::GET, &path).header("Range", "bytes=5000-6000").send().await.unwrap();
    assert_status(&resp, 416);
}

async fn unknown_blob(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("unknown-blob");
    reg.push_blob(&repo, b"something so the repository exists").await;
    let missing = sha256_digest(&random_bytes(64));

    let resp = reg.get(&format!("/v2/{repo}/blobs/{missing}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;
    let resp = reg.head(&format!("/v2/{repo}/blobs/{missing}")).await;
    assert_status(&resp, 404);

    // In a repository that does not exist at all.
    let resp = reg.get(&format!("/v2/{}/blobs/{missing}", unique_repo("nowhere"))).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN", "NAME_UNKNOWN"]).await;
}

async fn blob_delete(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("blob-del");
    let other = unique_repo("blob-del-other");
    let data = random_bytes(300);
    let digest = reg.push_blob(&repo, &data).await;
    reg.push_blob(&other, &data).await;

    let resp = reg.delete(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 202);

    let resp = reg.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 404);
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;

    // The same content in another repository is untouched.
    let resp = reg.get(&format!("/v2/{other}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}

async fn blobs_are_scoped_to_their_repository(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let a = unique_repo("scope-a");
    let b = unique_repo("scope-b");
    let digest = reg.push_blob(&a, &random_bytes(100)).await;
    reg.push_blob(&b, b"b exists").await;
    assert_eq!(reg.blob_status(&a, &digest).await, 200);
    assert_eq!(reg.blob_status(&b, &digest).await, 404, "a blob pushed to {a} is not in {b}");
    let resp = reg.get(&format!("/v2/{b}/blobs/{digest}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;
}

async fn bad_digests(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("bad-digest");
    reg.push_blob(&repo, b"repository exists").await;
    let bad = [
        "sha256:xyz".to_string(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!("sha256:{}", "ab".repeat(16)),  // too short
        format!("sha256:{}0", "ab".repeat(32)), // too long
        format!("sha256:{}", "AB".repeat(32)),  // upper-case hex
        format!("sha512:{}", "ab".repeat(32)),  // wrong length for sha512
    ];
    for d in &bad {
        let resp = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;

        let location = reg.start_upload(&repo).await;
        let resp = reg
            .req(Method::PUT, &with_query(&location, &format!("digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .body(b"data".to_vec())
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;
    }
    // A well-formed sha512 digest is a digest (the blob is merely unknown).
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let resp = reg.get(&format!("/v2/{repo}/blobs/{sha512}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;

    // Single-POST uploads check the digest too.
    for d in &bad {
        let resp = reg
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(b"data".to_vec())
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;
    }
}

async fn concurrent_pushes_of_one_blob(backend: MetaBackend) {
    let reg = std::sync::Arc::new(Registry::start(backend));
    let repo = unique_repo("race-blob");
    let data = random_bytes(256 * 1024);
    let digest = sha256_digest(&data);

    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = reg.clone();
        let repo = repo.clone();
        let data = data.clone();
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                // POST + PUT
                let location = reg.start_upload(&repo).await;
                let resp = reg
                    .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
                    .header("Content-Type", "application/octet-stream")
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap_or_default())
            } else {
                // POST + PATCH + PUT
                let location = reg.start_upload(&repo).await;
                let resp = reg
                    .req(Method::PATCH, &location)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("0-{}", data.len() - 1))
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                if resp.status().as_u16() != 202 {
                    return (resp.status().as_u16(), resp.text().await.unwrap_or_default());
                }
                let location = path_of(&header(&resp, "location").unwrap());
                let resp = reg
                    .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap_or_default())
            }
        }));
    }
    for t in tasks {
        let (status, text) = t.await.unwrap();
        assert_eq!(status, 201, "concurrent push of one blob: {text}");
    }
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}
