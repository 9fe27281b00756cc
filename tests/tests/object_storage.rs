//! Blobs in object storage: the server on an S3 server (moto) of its own, pushed to and pulled
//! from with raw HTTP and with skopeo and podman; blobs larger than several parts; presigned
//! redirects for blob GETs (HEAD and ranges still answered by the registry); and start-up
//! refusing a backend it cannot reach, naming the setting.

mod common;

use std::time::Duration;

use common::{path_of, Registry};
use e2e::cli::run_stowage;
use e2e::tools::Containers;
use e2e::{random_bytes, sha256_digest, unique_repo, BlobBackend, MetaBackend};
use reqwest::{Method, StatusCode};

e2e::backend_tests!(
    a_blob_of_several_parts_is_pushed_in_chunks_and_read_back,
    blob_gets_redirect_to_the_object_store_when_enabled,
);

/// One plain `#[test]` per metadata backend (real clients block).
macro_rules! client_tests {
    ($($name:ident),* $(,)?) => {
        mod clients_sqlite {
            $( #[test] fn $name() { super::$name(e2e::MetaBackend::Sqlite) } )*
        }
        mod clients_postgres {
            $( #[test] fn $name() { super::$name(e2e::MetaBackend::Postgres) } )*
        }
    };
}

client_tests!(skopeo_and_podman_push_and_pull_through_s3_and_its_redirects);

/// Parts of 5 MiB (S3's smallest), so a blob of a few tens of MiB crosses many of them.
const CHUNKSIZE: (&str, &str) = ("STOWAGE_STORAGE__S3__CHUNKSIZE", "5MiB");
const REDIRECTS: (&str, &str) = ("STOWAGE_STORAGE__REDIRECT__DISABLE", "false");

/// A 23 MiB blob sent in three PATCH chunks of uneven sizes, then read back whole and by
/// ranges that straddle part boundaries.
async fn a_blob_of_several_parts_is_pushed_in_chunks_and_read_back(backend: MetaBackend) {
    let registry = Registry::start_on(backend, BlobBackend::S3, &[CHUNKSIZE]);
    let repo = unique_repo("s3-parts");
    let data = random_bytes(23 * 1024 * 1024 + 17);
    let digest = sha256_digest(&data);
    let mut location = registry.start_upload(&repo).await;
    let mut offset = 0;
    for size in [9 * 1024 * 1024 + 3, 7 * 1024 * 1024, data.len() - 16 * 1024 * 1024 - 3] {
        let chunk = &data[offset..offset + size];
        let resp = registry
            .req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{}-{}", offset, offset + size - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", resp.text().await.unwrap());
        location = path_of(resp.headers()["location"].to_str().unwrap());
        offset += size;
    }
    let separator = if location.contains('?') { '&' } else { '?' };
    let resp = registry
        .req(Method::PUT, &format!("{location}{separator}digest={digest}"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());

    let path = format!("/v2/{repo}/blobs/{digest}");
    let whole = registry.get(&path).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(sha256_digest(&whole.bytes().await.unwrap()), digest);
    let boundary = 5 * 1024 * 1024;
    for (start, end) in [(boundary - 5, boundary + 5), (2 * boundary - 1, 2 * boundary)] {
        let resp = registry
            .req(Method::GET, &path)
            .header("Range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(resp.bytes().await.unwrap(), &data[start..=end]);
    }
}

/// With `storage.redirect.disable: false` a blob GET answers 307 to a presigned URL the object
/// store serves without credentials; HEAD and ranges are answered by the registry itself.
/// Without it (the default) the registry serves the bytes.
async fn blob_gets_redirect_to_the_object_store_when_enabled(backend: MetaBackend) {
    let registry = Registry::start_on(
        backend,
        BlobBackend::S3,
        &[REDIRECTS, ("STOWAGE_STORAGE__REDIRECT__EXPIRY", "5m")],
    );
    let repo = unique_repo("s3-redirect");
    let data = random_bytes(100_000);
    let digest = registry.push_blob(&repo, &data).await;
    let path = format!("/v2/{repo}/blobs/{digest}");

    let resp = registry.get(&path).await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "the configured expiry: {location}");
    let followed = reqwest::get(&location).await.unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(followed.bytes().await.unwrap(), data);

    let head = registry.head(&path).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    let range =
        registry.req(Method::GET, &path).header("Range", "bytes=10-19").send().await.unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().await.unwrap(), &data[10..20]);

    // Unknown and unlinked blobs are refused before any URL is signed.
    let other = unique_repo("s3-redirect-other");
    let resp = registry.get(&format!("/v2/{other}/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The default: bytes from the registry.
    let plain = Registry::start_on(backend, BlobBackend::S3, &[]);
    let digest = plain.push_blob(&repo, &data).await;
    let resp = plain.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), data);
}

/// skopeo pushes an image into the registry on S3 and copies it back out through presigned
/// redirects; podman pulls it the same way and gets the same content.
fn skopeo_and_podman_push_and_pull_through_s3_and_its_redirects(backend: MetaBackend) {
    let registry = e2e::TestServer::start_on(backend, BlobBackend::S3, &[CHUNKSIZE, REDIRECTS]);
    let c = Containers::new();
    // Larger than a part, so the layer crosses parts on its way in.
    let payload = random_bytes(7 * 1024 * 1024);
    c.build_scratch_image("localhost/e2e-s3:v1", "amd64", &[("/payload.bin", &payload)]);
    let layout = c.path("layout");
    let layout_s = layout.to_str().unwrap();
    c.buildah(&["push", "localhost/e2e-s3:v1", &format!("oci:{layout_s}:v1")]).ok();
    let image = format!("{}/{}", registry.addr, unique_repo("s3-clients"));
    c.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{layout_s}:v1"),
        &format!("docker://{image}:v1"),
    ])
    .ok();

    let back = c.path("back");
    let back_s = back.to_str().unwrap();
    c.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}:v1"),
        &format!("oci:{back_s}:v1"),
    ])
    .ok();
    let manifests = e2e::tools::oci_layout_manifests(&back);
    let manifest: serde_json::Value =
        serde_json::from_slice(&e2e::tools::oci_layout_blob(&back, &manifests[0].0)).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        e2e::tools::oci_layout_blob(&back, layer["digest"].as_str().unwrap());
    }
    c.buildah(&["rmi", "localhost/e2e-s3:v1"]).ok();
    c.podman(&["pull", "--tls-verify=false", &format!("{image}:v1")]).ok();
    let dir =
        c.podman(&["image", "mount", &format!("{image}:v1")]).ok().stdout().trim().to_string();
    assert_eq!(std::fs::read(format!("{dir}/payload.bin")).unwrap(), payload);
    c.podman(&["image", "unmount", &format!("{image}:v1")]).ok();
}

/// A backend the server cannot reach stops `serve` within seconds, naming the setting.
#[test]
fn start_fails_fast_when_storage_is_unreachable_or_misconfigured() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let moto = blobstore::test_servers::ObjectStoreServer::moto();
    let moto_endpoint = moto.endpoint();
    for (what, endpoint, expected) in [
        ("unreachable endpoint", endpoint.as_str(), "storage.s3"),
        ("missing bucket", moto_endpoint.as_str(), "storage.s3"),
    ] {
        let started = std::time::Instant::now();
        let run = run_stowage(
            &["serve"],
            &[
                ("STOWAGE_HTTP_ADDR", "127.0.0.1:0"),
                ("STOWAGE_STORAGE__S3__BUCKET", "no-such-bucket"),
                ("STOWAGE_STORAGE__S3__REGIONENDPOINT", endpoint),
                ("STOWAGE_STORAGE__S3__FORCEPATHSTYLE", "true"),
                ("STOWAGE_STORAGE__S3__ACCESSKEY", "testing"),
                ("STOWAGE_STORAGE__S3__SECRETKEY", "testing"),
            ],
            dir.path(),
            Duration::from_secs(60),
        );
        assert_ne!(run.code(), 0, "{what}: serve must not start");
        assert!(run.stderr.contains(expected), "{what}: {}", run.stderr);
        assert!(
            run.stderr.contains("cannot reach blob storage at s3://no-such-bucket"),
            "{what}: {}",
            run.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(25), "{what}: took {:?}", run.elapsed);
    }
}
