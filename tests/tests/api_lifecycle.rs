//! Behaviours beyond single requests: idle upload sessions expire and leave nothing behind,
//! `Accept` negotiation, the referrers tag schema kept consistent with the referrers API,
//! and configuration from a YAML file.

mod common;

use common::*;
use e2e::{backend_tests, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn registry_with(backend: MetaBackend, env: &[(&str, &str)]) -> Registry {
    Registry { server: TestServer::start_with(backend, env), http: client() }
}

async fn idle_uploads_expire_and_leave_nothing(backend: MetaBackend) {
    let reg = registry_with(
        backend,
        &[
            ("STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__AGE", "1s"),
            ("STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__INTERVAL", "1s"),
        ],
    );
    let repo = e2e::unique_repo("purge");
    let location = reg.start_upload(&repo).await;
    let id = location.rsplit('/').next().unwrap().to_string();
    let resp = reg
        .req(Method::PATCH, &location)
        .header("Content-Type", "application/octet-stream")
        .body(vec![7u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(reg.data_dir_mentions(&id), "the chunk is stored under the upload's id");

    // Idle for longer than the age: the purger removes the session and its parts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = reg.get(&location).await;
        if status.status() == StatusCode::NOT_FOUND {
            assert_oci_error(status, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "upload {id} was not purged within 20 s");
    }
    assert!(!reg.data_dir_mentions(&id), "purged upload left files behind");
    // The purge logs once its whole round is done (it also sweeps storage after the
    // database), which may be a moment after the session is gone.
    while !reg.server.log().contains("purged idle upload sessions") {
        assert!(std::time::Instant::now() < deadline, "purge is logged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn accept_negotiation(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = e2e::unique_repo("accept");
    let image = reg.push_image(&repo, Some("v1")).await;
    let path = format!("/v2/{repo}/manifests/v1");

    // A client that only understands Docker schema 2 cannot be given an OCI manifest.
    let resp = reg.req(Method::GET, &path).header("Accept", DOCKER_MANIFEST).send().await.unwrap();
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;

    // Listing the type (with parameters and q-values), a wildcard, or no Accept at all works.
    for accept in
        [Some(format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9")), Some("*/*".to_string()), None]
    {
        let mut req = reg.req(Method::GET, &path);
        if let Some(a) = &accept {
            req = req.header("Accept", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "Accept {accept:?}");
        assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(resp.bytes().await.unwrap().to_vec(), image.manifest);
    }
}

/// A client that keeps the referrers tag schema (an index tagged `sha256-<hex>`) and one that
/// uses the referrers API see the same referrers.
async fn referrers_tag_schema_is_merged(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = e2e::unique_repo("refschema");
    let subject = reg.push_image(&repo, Some("v1")).await;
    reg.push_blob(&repo, b"{}").await;

    // An artifact pushed with `subject` (the API way).
    let sbom = reg.push_blob(&repo, b"sbom").await;
    let mut with_subject = oci_image_manifest(
        empty_descriptor(),
        vec![serde_json::json!({
            "mediaType": "application/spdx+json", "digest": sbom, "size": 4
        })],
    );
    with_subject["artifactType"] = "application/spdx+json".into();
    with_subject["subject"] = subject.descriptor();
    let api_ref = reg
        .push_manifest(
            &repo,
            &sha256_digest(&to_bytes(&with_subject)),
            OCI_MANIFEST,
            &to_bytes(&with_subject),
        )
        .await;

    // An artifact without `subject`, listed in a client-kept fallback index instead.
    let sig = reg.push_blob(&repo, b"signature").await;
    let mut plain = oci_image_manifest(
        empty_descriptor(),
        vec![serde_json::json!({
            "mediaType": "application/vnd.example.sig", "digest": sig, "size": 9
        })],
    );
    plain["artifactType"] = "application/vnd.example.sig".into();
    let plain_bytes = to_bytes(&plain);
    let plain_digest =
        reg.push_manifest(&repo, &sha256_digest(&plain_bytes), OCI_MANIFEST, &plain_bytes).await;
    let mut entry = descriptor(OCI_MANIFEST, &plain_bytes);
    entry["artifactType"] = "application/vnd.example.sig".into();
    let fallback = oci_index(vec![entry]);
    let fallback_tag = subject.digest.replace(':', "-");
    reg.push_manifest(&repo, &fallback_tag, OCI_INDEX, &to_bytes(&fallback)).await;

    let resp = reg.get(&format!("/v2/{repo}/referrers/{}", subject.digest)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let index: Value = resp.json().await.unwrap();
    let mut digests: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    digests.sort();
    let mut expected = vec![api_ref.clone(), plain_digest.clone()];
    expected.sort();
    assert_eq!(digests, expected, "both referrers listed once: {index}");

    // The filter applies to both sources.
    let resp = reg
        .get(&format!(
            "/v2/{repo}/referrers/{}?artifactType=application/vnd.example.sig",
            subject.digest
        ))
        .await;
    assert_eq!(header(&resp, "oci-filters-applied").as_deref(), Some("artifactType"));
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(index["manifests"][0]["digest"].as_str(), Some(plain_digest.as_str()));
}

backend_tests!(
    idle_uploads_expire_and_leave_nothing,
    accept_negotiation,
    referrers_tag_schema_is_merged
);

/// `STOWAGE_CONFIG` names a YAML file whose settings apply; the environment still wins.
#[tokio::test]
async fn yaml_config_file_applies_and_env_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stowage.yml");
    std::fs::write(&file, "limits:\n  max_manifest_bytes: 1000\nlog:\n  formatter: json\nhttp:\n  addr: 127.0.0.1:1\n")
        .unwrap();
    // http.addr from the file would fail to bind; the harness's STOWAGE_HTTP_ADDR must win.
    let reg = registry_with(MetaBackend::Sqlite, &[("STOWAGE_CONFIG", file.to_str().unwrap())]);
    assert!(reg.server.log().contains("\"level\":\"INFO\""), "json log format from the file");
    let repo = e2e::unique_repo("cfg");
    let image = Image::random(&repo);
    reg.push_blob(&repo, &image.config).await;
    reg.push_blob(&repo, &image.layer).await;
    let mut big = serde_json::from_slice::<Value>(&image.manifest).unwrap();
    big["annotations"] = serde_json::json!({ "pad": "x".repeat(1200) });
    let resp = reg.put_manifest(&repo, "v1", OCI_MANIFEST, &to_bytes(&big)).await;
    let status = resp.status().as_u16();
    assert!(status == 413 || status == 400, "1000-byte manifest limit from the file: {status}");
    assert_oci_error(resp, &[400, 413], &["SIZE_INVALID"]).await;
    assert_eq!(
        reg.put_manifest(&repo, "v1", OCI_MANIFEST, &image.manifest).await.status(),
        StatusCode::CREATED
    );
}
