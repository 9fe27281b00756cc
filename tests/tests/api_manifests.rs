//! Raw-HTTP tests of manifests: every media type, validation errors, PUT by digest (with
//! `?tag=`), deletes, repository names and tags, and concurrent pushes to one tag.

mod common;

use common::*;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend};
use reqwest::Method;
use serde_json::json;

backend_tests!(
    oci_manifest_by_tag_and_digest,
    docker_schema2_and_manifest_list,
    oci_index_of_two_manifests,
    manifest_listed_by_index_is_not_deleted,
    index_with_missing_manifest,
    manifest_with_unknown_blob,
    foreign_layers_need_no_blob,
    invalid_manifests,
    schema1_is_refused,
    manifest_size_limit,
    put_by_digest_checks_the_digest,
    put_by_digest_with_tags,
    oci_tag_headers,
    artifact_manifest,
    delete_manifest_by_digest,
    delete_tag_keeps_manifest,
    unknown_manifest,
    deep_names,
    bad_names,
    bad_tags,
    concurrent_pushes_to_one_tag,
);

/// GETs and HEADs `repo:reference`, asserting the type, digest, length and bytes.
async fn assert_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let digest = sha256_digest(body);
    let len = body.len().to_string();
    let resp = reg.get_manifest(repo, reference).await;
    let status = resp.status().as_u16();
    if status != 200 {
        panic!("GET {repo}:{reference}: {status}: {}", resp.text().await.unwrap_or_default());
    }
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some(media_type),
        "GET {reference} Content-Type"
    );
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert_eq!(header(&resp, "content-length").as_deref(), Some(len.as_str()));
    assert!(
        resp.bytes().await.unwrap().as_ref() == body,
        "GET {reference} returns the pushed bytes"
    );

    let resp = reg.head_manifest(repo, reference).await;
    assert_status(&resp, 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some(media_type),
        "HEAD {reference} Content-Type"
    );
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert_eq!(header(&resp, "content-length").as_deref(), Some(len.as_str()));
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

async fn oci_manifest_by_tag_and_digest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("oci");
    let image = Image::random("oci");
    reg.push_blob(&repo, &image.config).await;
    reg.push_blob(&repo, &image.layer).await;

    let resp = reg.put_manifest(&repo, "v1", OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(image.digest.as_str()));
    let location = header(&resp, "location").expect("manifest PUT has a Location");

    assert_manifest(&reg, &repo, "v1", OCI_MANIFEST, &image.manifest).await;
    assert_manifest(&reg, &repo, &image.digest, OCI_MANIFEST, &image.manifest).await;

    // The Location is pullable.
    let resp = reg.req(Method::GET, &location).header("Accept", ACCEPT_ALL).send().await.unwrap();
    assert_status(&resp, 200);
    assert!(resp.bytes().await.unwrap().as_ref() == image.manifest.as_slice());

    // Re-pushing identical bytes is idempotent.
    reg.push_manifest(&repo, "v1", OCI_MANIFEST, &image.manifest).await;
}

fn docker_image(reg_label: &str, arch: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let layer = random_bytes(1024);
    let config = config_json(&sha256_digest(&layer), &format!("{reg_label}-{arch}"));
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    (config, layer, manifest)
}

async fn docker_schema2_and_manifest_list(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("docker");
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (config, layer, manifest) = docker_image("docker", arch);
        reg.push_blob(&repo, &config).await;
        reg.push_blob(&repo, &layer).await;
        reg.push_manifest(&repo, arch, DOCKER_MANIFEST, &manifest).await;
        assert_manifest(&reg, &repo, arch, DOCKER_MANIFEST, &manifest).await;
        let mut d = descriptor(DOCKER_MANIFEST, &manifest);
        d["platform"] = json!({ "architecture": arch, "os": "linux" });
        entries.push(d);
    }
    let list =
        to_bytes(&json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries }));
    reg.push_manifest(&repo, "multi", DOCKER_LIST, &list).await;
    assert_manifest(&reg, &repo, "multi", DOCKER_LIST, &list).await;
    assert_manifest(&reg, &repo, &sha256_digest(&list), DOCKER_LIST, &list).await;
}

async fn oci_index_of_two_manifests(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("index");
    let a = reg.push_image(&repo, None).await;
    let b = reg.push_image(&repo, None).await;
    let mut da = a.descriptor();
    da["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let mut db = b.descriptor();
    db["platform"] = json!({ "architecture": "arm64", "os": "linux", "variant": "v8" });
    let index = to_bytes(&oci_index(vec![da, db]));
    reg.push_manifest(&repo, "latest", OCI_INDEX, &index).await;
    assert_manifest(&reg, &repo, "latest", OCI_INDEX, &index).await;
    assert_manifest(&reg, &repo, &a.digest, OCI_MANIFEST, &a.manifest).await;
    assert_manifest(&reg, &repo, &b.digest, OCI_MANIFEST, &b.manifest).await;
}

/// DELETE of a manifest that an index of the repository lists is refused with `DENIED` (403),
/// naming the index and a tag of it; once the index is gone the manifest can be deleted.
async fn manifest_listed_by_index_is_not_deleted(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("index-child");
    let a = reg.push_image(&repo, None).await;
    let b = reg.push_image(&repo, None).await;
    let index = to_bytes(&oci_index(vec![a.descriptor(), b.descriptor()]));
    let index_digest = sha256_digest(&index);
    reg.push_manifest(&repo, "latest", OCI_INDEX, &index).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", a.digest)).await;
    let body = assert_oci_error(resp, &[403], &["DENIED"]).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    let expected = format!(
        "manifest {} is listed by index {index_digest} (tag latest); delete the index or its tags first",
        a.digest
    );
    assert_eq!(message, expected);
    assert_eq!(body["errors"][0]["detail"]["index"].as_str(), Some(index_digest.as_str()));
    assert_manifest(&reg, &repo, &a.digest, OCI_MANIFEST, &a.manifest).await;

    // Untagged, the index still lists it: still refused, now without a tag to name.
    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/latest")).await, 202);
    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", b.digest)).await;
    let body = assert_oci_error(resp, &[403], &["DENIED"]).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("is listed by index {index_digest};")), "{message}");

    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/{index_digest}")).await, 202);
    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/{}", a.digest)).await, 202);
    let resp = reg.get_manifest(&repo, &a.digest).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
}

async fn index_with_missing_manifest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("index-missing");
    let elsewhere = unique_repo("index-elsewhere");
    let present = reg.push_image(&repo, None).await;
    let absent = Image::random("never pushed");
    let index = to_bytes(&oci_index(vec![present.descriptor(), absent.descriptor()]));
    let resp = reg.put_manifest(&repo, "broken", OCI_INDEX, &index).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
    let resp = reg.get_manifest(&repo, "broken").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;

    // A manifest that exists only in another repository does not count.
    let other = reg.push_image(&elsewhere, None).await;
    let index = to_bytes(&oci_index(vec![present.descriptor(), other.descriptor()]));
    let resp = reg.put_manifest(&repo, "broken", OCI_INDEX, &index).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
}

async fn manifest_with_unknown_blob(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("unknown-layer");
    let elsewhere = unique_repo("unknown-layer-elsewhere");
    let image = Image::random("x");
    reg.push_blob(&repo, &image.config).await;
    // The layer is missing.
    let resp = reg.put_manifest(&repo, "t", OCI_MANIFEST, &image.manifest).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
    let resp = reg.get_manifest(&repo, "t").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    let resp = reg.get_manifest(&repo, &image.digest).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;

    // The layer exists, but only in another repository.
    reg.push_blob(&elsewhere, &image.layer).await;
    let resp = reg.put_manifest(&repo, "t", OCI_MANIFEST, &image.manifest).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;

    // The config is missing.
    let image = Image::random("y");
    reg.push_blob(&repo, &image.layer).await;
    let resp = reg.put_manifest(&repo, "t", OCI_MANIFEST, &image.manifest).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;

    // Docker schema 2 with a missing layer.
    let (config, _layer, manifest) = docker_image("missing", "amd64");
    reg.push_blob(&repo, &config).await;
    let resp = reg.put_manifest(&repo, "d", DOCKER_MANIFEST, &manifest).await;
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
}

async fn foreign_layers_need_no_blob(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("foreign");
    let layer = random_bytes(512);
    let foreign = random_bytes(4096); // never pushed
    let config = config_json(&sha256_digest(&layer), "foreign");
    reg.push_blob(&repo, &config).await;
    reg.push_blob(&repo, &layer).await;

    let mut foreign_desc = descriptor(DOCKER_FOREIGN_LAYER, &foreign);
    foreign_desc["urls"] = json!(["https://example.com/layers/foreign.tar.gz"]);
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [foreign_desc, descriptor(DOCKER_LAYER, &layer)],
    }));
    reg.push_manifest(&repo, "windows", DOCKER_MANIFEST, &manifest).await;
    assert_manifest(&reg, &repo, "windows", DOCKER_MANIFEST, &manifest).await;

    let mut nondist = descriptor(OCI_NONDISTRIBUTABLE_LAYER, &foreign);
    nondist["urls"] = json!(["https://example.com/layers/nondistributable.tar.gz"]);
    let config2 = config_json(&sha256_digest(&foreign), "nondistributable");
    reg.push_blob(&repo, &config2).await;
    let manifest = to_bytes(&oci_image_manifest(descriptor(OCI_CONFIG, &config2), vec![nondist]));
    reg.push_manifest(&repo, "nondist", OCI_MANIFEST, &manifest).await;
    assert_manifest(&reg, &repo, "nondist", OCI_MANIFEST, &manifest).await;
}

async fn invalid_manifests(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("invalid");
    let image = reg.push_image(&repo, Some("ok")).await;

    let bad_bodies: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, b"".to_vec()),
        (OCI_MANIFEST, b"[1, 2, 3]".to_vec()),
        (
            OCI_MANIFEST,
            to_bytes(
                &json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "nope", "layers": [] }),
            ),
        ),
        (
            OCI_MANIFEST,
            to_bytes(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": "sha256:nothex", "size": 2 },
                "layers": []
            })),
        ),
        (
            OCI_INDEX,
            to_bytes(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x" })),
        ),
    ];
    for (media_type, body) in bad_bodies {
        let resp = reg.put_manifest(&repo, "bad", media_type, &body).await;
        assert_oci_error(resp, &[400], &["MANIFEST_INVALID"]).await;
    }
    // Content-Type and the body's mediaType disagree.
    let resp = reg.put_manifest(&repo, "bad", OCI_INDEX, &image.manifest).await;
    assert_oci_error(resp, &[400], &["MANIFEST_INVALID"]).await;

    let resp = reg.get_manifest(&repo, "bad").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["ok".to_string()]);
}

async fn schema1_is_refused(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("schema1");
    reg.push_blob(&repo, b"repository exists").await;
    let body = to_bytes(&json!({
        "schemaVersion": 1,
        "name": repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{ "blobSum": sha256_digest(b"layer") }],
        "history": [{ "v1Compatibility": "{\"id\":\"abc\"}" }],
        "signatures": [{
            "header": { "jwk": { "crv": "P-256", "kid": "X", "kty": "EC", "x": "x", "y": "y" }, "alg": "ES256" },
            "signature": "c2ln",
            "protected": "cHJvdGVjdGVk"
        }]
    }));
    for media_type in
        [DOCKER_SCHEMA1_SIGNED, "application/vnd.docker.distribution.manifest.v1+json"]
    {
        let resp = reg.put_manifest(&repo, "old", media_type, &body).await;
        let v = assert_oci_error(resp, &[400, 415], &["MANIFEST_INVALID", "UNSUPPORTED"]).await;
        let text = v.to_string().to_lowercase();
        assert!(
            text.contains("schema 1") || text.contains("schema1") || text.contains("v1"),
            "the refusal must say schema 1 is unsupported: {v}"
        );
    }
    let resp = reg.get_manifest(&repo, "old").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
}

/// An OCI manifest padded with an annotation to exactly `size` bytes.
fn padded_manifest(image: &Image, size: usize) -> Vec<u8> {
    let mut m = oci_image_manifest(
        descriptor(OCI_CONFIG, &image.config),
        vec![descriptor(OCI_LAYER, &image.layer)],
    );
    m["annotations"] = json!({ "pad": "" });
    let base = serde_json::to_vec(&m).unwrap().len();
    m["annotations"]["pad"] = json!("x".repeat(size - base));
    let out = serde_json::to_vec(&m).unwrap();
    assert_eq!(out.len(), size);
    out
}

async fn manifest_size_limit(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("big");
    let image = reg.push_image(&repo, Some("small")).await;

    let too_big = padded_manifest(&image, 4 * 1024 * 1024 + 1024);
    // A registry may answer as soon as it sees the Content-Length and close the connection
    // while the body is still being sent; read the answer while writing.
    let resp = raw_request_early_answer(
        &reg.server.addr,
        "PUT",
        &format!("/v2/{repo}/manifests/big"),
        &[("Content-Type", OCI_MANIFEST)],
        too_big,
    )
    .await;
    let what = "PUT of a manifest over 4 MiB";
    assert!(
        resp.status == 413 || resp.status == 400,
        "{what}: expected 413 (or 400), got {}: {}",
        resp.status,
        resp.body_text()
    );
    check_error_body(&resp.body_text(), &["SIZE_INVALID", "MANIFEST_INVALID"], what);
    let resp = reg.get_manifest(&repo, "big").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;

    // Just under the limit is fine.
    let fits = padded_manifest(&image, 4 * 1024 * 1024 - 1024);
    reg.push_manifest(&repo, "fits", OCI_MANIFEST, &fits).await;
    assert_manifest(&reg, &repo, "fits", OCI_MANIFEST, &fits).await;
}

async fn put_by_digest_checks_the_digest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("by-digest");
    let a = reg.push_image(&repo, None).await;
    let b = Image::random("b");
    reg.push_blob(&repo, &b.config).await;
    reg.push_blob(&repo, &b.layer).await;

    let resp = reg.put_manifest(&repo, &a.digest, OCI_MANIFEST, &b.manifest).await;
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;
    let resp = reg.get_manifest(&repo, &b.digest).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    // `a` is unchanged.
    assert_manifest(&reg, &repo, &a.digest, OCI_MANIFEST, &a.manifest).await;
}

async fn put_by_digest_with_tags(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("digest-tags");
    let image = Image::random("tags");
    reg.push_blob(&repo, &image.config).await;
    reg.push_blob(&repo, &image.layer).await;

    let reference = format!("{}?tag=alpha&tag=beta", image.digest);
    let resp = reg.put_manifest(&repo, &reference, OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(image.digest.as_str()));
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["alpha".to_string(), "beta".to_string()]);
    assert_manifest(&reg, &repo, "alpha", OCI_MANIFEST, &image.manifest).await;
    assert_manifest(&reg, &repo, "beta", OCI_MANIFEST, &image.manifest).await;

    // An invalid tag in the query is refused and nothing changes.
    let other = reg.push_image(&repo, None).await;
    let reference = format!("{}?tag=-bad", other.digest);
    let resp = reg.put_manifest(&repo, &reference, OCI_MANIFEST, &other.manifest).await;
    assert_oci_error(resp, &[400], &["TAG_INVALID", "MANIFEST_INVALID"]).await;
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["alpha".to_string(), "beta".to_string()]);
}

/// Every `OCI-Tag` response header, in order, one value per header line.
fn oci_tags(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().expect("ASCII OCI-Tag").to_string())
        .collect()
}

/// distribution-spec, "Pushing Manifests": a registry that supports `?tag=` on a push by
/// digest MUST answer with an `OCI-Tag` header for each accepted tag.
async fn oci_tag_headers(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("oci-tag");
    let image = Image::random("oci-tag");
    reg.push_blob(&repo, &image.config).await;
    reg.push_blob(&repo, &image.layer).await;

    // Two tags, one of them percent-encoded, and one repeated: one header per distinct tag.
    let reference = format!("{}?tag=a&tag=v1%2E0&tag=a", image.digest);
    let resp = reg.put_manifest(&repo, &reference, OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert_eq!(oci_tags(&resp), vec!["a".to_string(), "v1.0".to_string()]);
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["a".to_string(), "v1.0".to_string()]);

    // Re-pushing with a tag that already points at the manifest accepts it again.
    let reference = format!("{}?tag=v1%2E0&tag=latest", image.digest);
    let resp = reg.put_manifest(&repo, &reference, OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert_eq!(oci_tags(&resp), vec!["v1.0".to_string(), "latest".to_string()]);

    // No tag parameter, no header; a push by tag names its tag itself and gets none either.
    let resp = reg.put_manifest(&repo, &image.digest, OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert!(oci_tags(&resp).is_empty(), "{:?}", oci_tags(&resp));
    let resp = reg.put_manifest(&repo, "by-tag", OCI_MANIFEST, &image.manifest).await;
    assert_status(&resp, 201);
    assert!(oci_tags(&resp).is_empty(), "a push by tag has no OCI-Tag: {:?}", oci_tags(&resp));

    // `?tag=` belongs to a push by digest: on a push by tag it is refused, and nothing changes.
    let resp = reg.put_manifest(&repo, "by-tag-2?tag=extra", OCI_MANIFEST, &image.manifest).await;
    assert!(oci_tags(&resp).is_empty());
    let v = assert_oci_error(resp, &[400], &["MANIFEST_INVALID"]).await;
    assert!(v.to_string().contains("push by digest"), "{v}");
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["a", "by-tag", "latest", "v1.0"]);

    // A refused push accepts no tag, and says none was.
    let other = Image::random("oci-tag-missing-layer");
    reg.push_blob(&repo, &other.config).await;
    let reference = format!("{}?tag=b", other.digest);
    let resp = reg.put_manifest(&repo, &reference, OCI_MANIFEST, &other.manifest).await;
    assert!(oci_tags(&resp).is_empty());
    assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
    let resp = reg.get_manifest(&repo, "b").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
}

async fn artifact_manifest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("artifact");
    assert_eq!(sha256_digest(b"{}"), EMPTY_DIGEST);
    let empty = reg.push_blob(&repo, b"{}").await;
    assert_eq!(empty, EMPTY_DIGEST);
    let payload = br#"{"sbom":"spdx"}"#;
    reg.push_blob(&repo, payload).await;
    let mut m = oci_image_manifest(
        empty_descriptor(),
        vec![descriptor("application/vnd.example.sbom.v1+json", payload)],
    );
    m["artifactType"] = json!("application/vnd.example.sbom.v1");
    m["annotations"] = json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" });
    let body = to_bytes(&m);
    let digest = sha256_digest(&body);
    reg.push_manifest(&repo, &digest, OCI_MANIFEST, &body).await;
    assert_manifest(&reg, &repo, &digest, OCI_MANIFEST, &body).await;

    // An artifact with no layers at all: the empty descriptor as its only blob.
    let mut m = oci_image_manifest(empty_descriptor(), vec![empty_descriptor()]);
    m["artifactType"] = json!("application/vnd.example.marker");
    let body = to_bytes(&m);
    reg.push_manifest(&repo, "marker", OCI_MANIFEST, &body).await;
    assert_manifest(&reg, &repo, "marker", OCI_MANIFEST, &body).await;
}

async fn delete_manifest_by_digest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("del-manifest");
    let image = reg.push_image(&repo, Some("gone")).await;
    let keep = reg.push_image(&repo, Some("kept")).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", image.digest)).await;
    assert_status(&resp, 202);
    let resp = reg.get_manifest(&repo, &image.digest).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    let resp = reg.head_manifest(&repo, &image.digest).await;
    assert_status(&resp, 404);
    let resp = reg.get_manifest(&repo, "gone").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", image.digest)).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;

    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["kept".to_string()], "the deleted manifest's tag is gone");
    assert_manifest(&reg, &repo, "kept", OCI_MANIFEST, &keep.manifest).await;
}

async fn delete_tag_keeps_manifest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("del-tag");
    let image = reg.push_image(&repo, Some("one")).await;
    reg.push_manifest(&repo, "two", OCI_MANIFEST, &image.manifest).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/one")).await;
    assert_status(&resp, 202);
    let resp = reg.get_manifest(&repo, "one").await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    assert_manifest(&reg, &repo, &image.digest, OCI_MANIFEST, &image.manifest).await;
    assert_manifest(&reg, &repo, "two", OCI_MANIFEST, &image.manifest).await;
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["two".to_string()]);

    let resp = reg.delete(&format!("/v2/{repo}/manifests/one")).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
}

async fn unknown_manifest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("unknown-manifest");
    reg.push_image(&repo, Some("exists")).await;
    let missing = sha256_digest(&random_bytes(16));
    for reference in ["nope", missing.as_str()] {
        let resp = reg.get_manifest(&repo, reference).await;
        assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
        let resp = reg.head_manifest(&repo, reference).await;
        assert_status(&resp, 404);
    }
    let nowhere = unique_repo("nowhere");
    let resp = reg.get_manifest(&nowhere, "latest").await;
    assert_oci_error(resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]).await;
    let resp = reg.delete(&format!("/v2/{nowhere}/manifests/{missing}")).await;
    assert_oci_error(resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]).await;
}

async fn deep_names(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = format!("{}/b/c/d/e/f/g/h/i", unique_repo("a"));
    let image = reg.push_image(&repo, Some("deep")).await;
    assert_manifest(&reg, &repo, "deep", OCI_MANIFEST, &image.manifest).await;
    let resp = reg.get(&format!("/v2/{repo}/blobs/{}", image.layer_digest)).await;
    assert_status(&resp, 200);
    assert!(resp.bytes().await.unwrap().as_ref() == image.layer.as_slice());
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["deep".to_string()]);

    // Path components that look like API keywords are still part of the name.
    let tricky = format!("{}/manifests/blobs/tags", unique_repo("kw"));
    let image = reg.push_image(&tricky, Some("kw")).await;
    assert_manifest(&reg, &tricky, "kw", OCI_MANIFEST, &image.manifest).await;

    // Separators allowed by the grammar, and a name of exactly 255 characters.
    let prefix = unique_repo("sep");
    let seps = format!("{prefix}/a.b_c__d-e--f");
    reg.push_image(&seps, Some("ok")).await;
    let long = format!("{prefix}/{}", "x".repeat(255 - prefix.len() - 1));
    assert_eq!(long.len(), 255);
    reg.push_image(&long, Some("ok")).await;
}

async fn bad_names(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let addr = reg.server.addr.clone();
    let digest = sha256_digest(b"x");
    let too_long = format!("e2e/{}", "a".repeat(260));
    // (name, routes like any other name so the answer must be 400 NAME_INVALID)
    let names = [
        ("e2e/UPPER".to_string(), true),
        ("e2e/-dash".to_string(), true),
        ("e2e/a..b".to_string(), true),
        (too_long, true),
        ("e2e//b".to_string(), false),
        ("e2e/../x".to_string(), false),
        ("e2e/x/".to_string(), false),
    ];
    let mut failures = Vec::new();
    for (name, routable) in &names {
        for (method, path) in [
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("PUT", format!("/v2/{name}/manifests/latest")),
            ("GET", format!("/v2/{name}/blobs/{digest}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
        ] {
            let resp =
                raw_request(&addr, method, &path, &[("Content-Type", OCI_MANIFEST)], b"").await;
            let what = format!("{method} {path}");
            let problem = if *routable {
                if resp.status == 400 {
                    error_body_problem(&resp.body_text(), &["NAME_INVALID"], &what)
                } else {
                    Some(format!(
                        "{what}: expected 400 NAME_INVALID, got {}: {}",
                        resp.status,
                        resp.body_text()
                    ))
                }
            } else {
                refused_problem(&resp, &["NAME_INVALID"], &what)
            };
            failures.extend(problem);
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad-name requests were not refused properly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn bad_tags(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("bad-tags");
    let image = reg.push_image(&repo, Some("good")).await;
    let long = "a".repeat(129);
    let mut failures = Vec::new();
    for tag in ["-bad", ".bad", long.as_str(), "a:b", "a%2Fb", "tag%20space"] {
        let resp = reg.put_manifest(&repo, tag, OCI_MANIFEST, &image.manifest).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let what = format!("PUT manifest with tag {tag:?}");
        if status != 400 && status != 404 {
            failures.push(format!("{what}: expected 400, got {status}: {text}"));
            continue;
        }
        if status == 400 || serde_json::from_str::<serde_json::Value>(&text).is_ok() {
            let codes = [
                "TAG_INVALID",
                "MANIFEST_INVALID",
                "DIGEST_INVALID",
                "NAME_INVALID",
                "MANIFEST_UNKNOWN",
            ];
            failures.extend(error_body_problem(&text, &codes, &what));
        }
    }
    assert!(failures.is_empty(), "bad tags were not refused properly:\n{}", failures.join("\n"));
    // The longest valid tag and the full character set are fine.
    let max = format!("A{}", "b".repeat(127));
    for tag in [max.as_str(), "_under", "v1.2.3-rc_1", "0"] {
        reg.push_manifest(&repo, tag, OCI_MANIFEST, &image.manifest).await;
    }
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags.len(), 5, "only the valid tags exist: {tags:?}");
}

async fn concurrent_pushes_to_one_tag(backend: MetaBackend) {
    let reg = std::sync::Arc::new(Registry::start(backend));
    let repo = unique_repo("race-tag");
    let layer = random_bytes(4096);
    let config = config_json(&sha256_digest(&layer), "race");

    // Everyone pushes the same blobs and a different manifest to the same tag, at once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = reg.clone();
        let repo = repo.clone();
        let layer = layer.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            reg.push_blob(&repo, &config).await;
            reg.push_blob(&repo, &layer).await;
            let mut m = oci_image_manifest(
                descriptor(OCI_CONFIG, &config),
                vec![descriptor(OCI_LAYER, &layer)],
            );
            m["annotations"] = json!({ "e2e.pusher": i.to_string() });
            let body = to_bytes(&m);
            let resp = reg.put_manifest(&repo, "race", OCI_MANIFEST, &body).await;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, text, body)
        }));
    }
    let mut pushed = Vec::new();
    for t in tasks {
        let (status, text, body) = t.await.unwrap();
        assert_eq!(status, 201, "concurrent manifest push: {text}");
        pushed.push(body);
    }
    let resp = reg.get_manifest(&repo, "race").await;
    assert_status(&resp, 200);
    let digest = header(&resp, "docker-content-digest").expect("digest");
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(sha256_digest(&body), digest);
    assert!(pushed.contains(&body), "the tag resolves to one of the pushed manifests");
    for body in &pushed {
        assert_manifest(&reg, &repo, &sha256_digest(body), OCI_MANIFEST, body).await;
    }
    let (tags, _) = reg.tags(&repo, "").await;
    assert_eq!(tags, vec!["race".to_string()]);
}
