//! Raw-HTTP tests of `validation.manifests.indexes`: whether an index may list manifests the
//! repository does not hold (sparse indexes, e.g. a mirror of only some platforms).

mod common;

use common::*;
use e2e::{backend_tests, MetaBackend};
use serde_json::{json, Value};

backend_tests!(
    all_platforms_must_be_present_by_default,
    none_accepts_sparse_indexes,
    list_requires_only_listed_platforms,
);

/// A setting the registry cannot apply stops it at start, with a message naming the key.
#[test]
fn invalid_settings_stop_the_server() {
    for (env, expected) in [
        (
            vec![(PLATFORMS, "some")],
            "validation.manifests.indexes.platforms must be all, none or list",
        ),
        (vec![(PLATFORMS, "list")], "platformlist is empty"),
        (
            vec![(PLATFORMS, "list"), (PLATFORMLIST, "[{architecture=arm,os=linux,variant=v7}]")],
            "variant",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("stderr")).expect("log file");
        let mut child = std::process::Command::new(e2e::stowage_bin())
            .arg("serve")
            .env("STOWAGE_DATA_DIR", dir.path().join("data"))
            .env("STOWAGE_HTTP_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run stowage serve");
        // A server that accepted the setting would run on: stop it and fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("{env:?}: the server started: {stderr}"));
        assert!(!status.success(), "{env:?}: the server must not start: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}

const PLATFORMS: &str = "STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMS";
const PLATFORMLIST: &str = "STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMLIST";

/// An index entry for `image` on `os`/`architecture` (with an optional variant).
fn entry(image: &Image, os: &str, architecture: &str, variant: Option<&str>) -> Value {
    let mut d = image.descriptor();
    d["platform"] = json!({ "os": os, "architecture": architecture });
    if let Some(v) = variant {
        d["platform"]["variant"] = json!(v);
    }
    d
}

/// PUTs an index by tag; returns the response.
async fn put_index(
    reg: &Registry,
    repo: &str,
    tag: &str,
    entries: Vec<Value>,
) -> reqwest::Response {
    reg.put_manifest(repo, tag, OCI_INDEX, &to_bytes(&oci_index(entries))).await
}

/// The index was refused for `missing`, and nothing was stored under `tag`.
async fn assert_refused_for(
    reg: &Registry,
    repo: &str,
    tag: &str,
    resp: reqwest::Response,
    missing: &Image,
) {
    let v = assert_oci_error(resp, &[400], &["MANIFEST_BLOB_UNKNOWN"]).await;
    assert_eq!(v["errors"][0]["detail"]["digest"], json!(missing.digest), "{v}");
    let resp = reg.get_manifest(repo, tag).await;
    assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
}

async fn all_platforms_must_be_present_by_default(backend: MetaBackend) {
    // `all` is the default; spelled out here as distribution's example spells it.
    for env in [vec![], vec![(PLATFORMS, "ALL")]] {
        let reg = Registry::start_with(backend, &env);
        let repo = e2e::unique_repo("idx-all");
        let amd64 = reg.push_image(&repo, None).await;
        let arm64 = Image::random("arm64, not pushed");
        let resp = put_index(
            &reg,
            &repo,
            "multi",
            vec![entry(&amd64, "linux", "amd64", None), entry(&arm64, "linux", "arm64", None)],
        )
        .await;
        assert_refused_for(&reg, &repo, "multi", resp, &arm64).await;
    }
}

async fn none_accepts_sparse_indexes(backend: MetaBackend) {
    let reg = Registry::start_with(backend, &[(PLATFORMS, "none")]);
    let repo = e2e::unique_repo("idx-none");
    let amd64 = reg.push_image(&repo, None).await;
    let arm64 = Image::random("arm64, pushed later");
    let s390x = Image::random("s390x, never pushed");
    // A manifest held only by another repository does not count as present here, and must not
    // become readable through this one.
    let elsewhere_repo = e2e::unique_repo("idx-none-elsewhere");
    let elsewhere = reg.push_image(&elsewhere_repo, None).await;

    let entries = vec![
        entry(&amd64, "linux", "amd64", None),
        entry(&arm64, "linux", "arm64", Some("v8")),
        entry(&s390x, "linux", "s390x", None),
        entry(&elsewhere, "windows", "amd64", None),
    ];
    let body = to_bytes(&oci_index(entries));
    let digest = reg.push_manifest(&repo, "mirror", OCI_INDEX, &body).await;
    let resp = reg.get_manifest(&repo, "mirror").await;
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert!(resp.bytes().await.unwrap().as_ref() == body.as_slice(), "the exact bytes");

    // The present platform pulls; the absent ones are unknown here.
    assert_status(&reg.get_manifest(&repo, &amd64.digest).await, 200);
    for absent in [&arm64, &s390x, &elsewhere] {
        let resp = reg.get_manifest(&repo, &absent.digest).await;
        assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    }
    // A missing platform pushed later (untagged, by digest) is then served.
    reg.push_blob(&repo, &arm64.config).await;
    reg.push_blob(&repo, &arm64.layer).await;
    reg.push_manifest(&repo, &arm64.digest, OCI_MANIFEST, &arm64.manifest).await;
    assert_status(&reg.get_manifest(&repo, &arm64.digest).await, 200);

    // An index none of whose manifests are here, and a Docker manifest list, are accepted too.
    reg.push_manifest(
        &repo,
        "nothing-here",
        OCI_INDEX,
        &to_bytes(&oci_index(vec![entry(&s390x, "linux", "s390x", None)])),
    )
    .await;
    let mut docker_entry = entry(&s390x, "linux", "s390x", None);
    docker_entry["mediaType"] = json!(DOCKER_MANIFEST);
    let list = to_bytes(
        &json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [docker_entry] }),
    );
    reg.push_manifest(&repo, "docker-list", DOCKER_LIST, &list).await;

    // Sparse does not mean unchecked: the index itself must still be valid.
    let mut bad = entry(&s390x, "linux", "s390x", None);
    bad["digest"] = json!("sha256:nothex");
    let resp =
        put_index(&reg, &repo, "bad", vec![entry(&amd64, "linux", "amd64", None), bad]).await;
    assert_oci_error(resp, &[400], &["MANIFEST_INVALID"]).await;

    // Deleting the index leaves its children alone.
    let resp = reg.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_status(&resp, 202);
    assert_status(&reg.get_manifest(&repo, &amd64.digest).await, 200);
    assert_status(&reg.get_manifest(&repo, &arm64.digest).await, 200);
}

async fn list_requires_only_listed_platforms(backend: MetaBackend) {
    // The value's case does not matter (distribution's own example writes `List`).
    let reg = Registry::start_with(
        backend,
        &[
            (PLATFORMS, "List"),
            (PLATFORMLIST, "[{architecture=amd64,os=linux},{architecture=arm64,os=linux}]"),
        ],
    );
    let repo = e2e::unique_repo("idx-list");
    let amd64 = reg.push_image(&repo, None).await;
    let arm64 = reg.push_image(&repo, None).await;
    let ppc = Image::random("ppc64le, not pushed");
    let windows = Image::random("windows/amd64, not pushed");
    let attestation = Image::random("no platform, not pushed");
    let arm_v7 = Image::random("linux/arm v7, not pushed");

    // Listed platforms present; other platforms, and entries without one, absent: accepted.
    let mut no_platform = attestation.descriptor();
    no_platform["annotations"] = json!({ "vnd.docker.reference.type": "attestation-manifest" });
    let entries = vec![
        entry(&amd64, "linux", "amd64", None),
        entry(&arm64, "linux", "arm64", Some("v8")),
        entry(&ppc, "linux", "ppc64le", None),
        entry(&windows, "windows", "amd64", None),
        entry(&arm_v7, "linux", "arm", Some("v7")),
        no_platform,
    ];
    let body = to_bytes(&oci_index(entries));
    reg.push_manifest(&repo, "partial", OCI_INDEX, &body).await;
    let resp = reg.get_manifest(&repo, "partial").await;
    assert_status(&resp, 200);
    assert!(resp.bytes().await.unwrap().as_ref() == body.as_slice());

    // A listed platform that is absent refuses the index, whatever the variant says.
    let amd64_v3 = Image::random("linux/amd64 v3, not pushed");
    let resp = put_index(
        &reg,
        &repo,
        "broken",
        vec![entry(&arm64, "linux", "arm64", None), entry(&amd64_v3, "linux", "amd64", Some("v3"))],
    )
    .await;
    assert_refused_for(&reg, &repo, "broken", resp, &amd64_v3).await;

    // A manifest listed once for an unlisted platform and once for a listed one must exist.
    let resp = put_index(
        &reg,
        &repo,
        "broken",
        vec![entry(&ppc, "linux", "ppc64le", None), entry(&ppc, "linux", "arm64", None)],
    )
    .await;
    assert_refused_for(&reg, &repo, "broken", resp, &ppc).await;
}
