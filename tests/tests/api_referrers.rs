//! Raw-HTTP tests of the OCI 1.1 referrers API and the `OCI-Subject` header.

mod common;

use std::collections::BTreeMap;

use common::*;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend};
use serde_json::{json, Value};

backend_tests!(
    subject_header_on_put,
    referrers_list,
    referrers_filter_by_artifact_type,
    referrers_of_unknown_subject,
    referrers_forget_deleted_manifests,
    referrers_artifact_type_of_images_and_indexes,
    referrers_tag_entries_without_artifact_type,
);

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

/// Pushes an artifact manifest (by digest) whose subject is `subject`; returns (digest, bytes).
async fn push_referrer(
    reg: &Registry,
    repo: &str,
    subject: &Value,
    artifact_type: Option<&str>,
    config: Value,
    annotations: Value,
) -> (String, Vec<u8>) {
    let payload = random_bytes(64);
    reg.push_blob(repo, &payload).await;
    let mut m = oci_image_manifest(config, vec![descriptor("application/octet-stream", &payload)]);
    if let Some(t) = artifact_type {
        m["artifactType"] = json!(t);
    }
    m["subject"] = subject.clone();
    m["annotations"] = annotations;
    let body = to_bytes(&m);
    let digest = sha256_digest(&body);
    let resp = reg.put_manifest(repo, &digest, OCI_MANIFEST, &body).await;
    let status = resp.status().as_u16();
    let oci_subject = header(&resp, "oci-subject");
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "PUT referrer: {text}");
    assert_eq!(
        oci_subject.as_deref(),
        subject["digest"].as_str(),
        "a manifest with a subject gets an OCI-Subject response header"
    );
    (digest, body)
}

/// GETs the referrers of `digest` (with `query`), asserting an OCI index; returns
/// (descriptors by digest, OCI-Filters-Applied).
async fn referrers(
    reg: &Registry,
    repo: &str,
    digest: &str,
    query: &str,
) -> (BTreeMap<String, Value>, Option<String>) {
    let path = if query.is_empty() {
        format!("/v2/{repo}/referrers/{digest}")
    } else {
        format!("/v2/{repo}/referrers/{digest}?{query}")
    };
    let resp = reg.get(&path).await;
    let status = resp.status().as_u16();
    let content_type = header(&resp, "content-type");
    let filters = header(&resp, "oci-filters-applied");
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "GET {path}: {text}");
    assert_eq!(content_type.as_deref(), Some(OCI_INDEX), "referrers Content-Type");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schemaVersion"], json!(2), "{text}");
    assert_eq!(v["mediaType"], json!(OCI_INDEX), "{text}");
    let manifests = v["manifests"].as_array().unwrap_or_else(|| panic!("manifests array: {text}"));
    let mut out = BTreeMap::new();
    for d in manifests {
        let digest = d["digest"].as_str().expect("descriptor digest").to_string();
        assert!(out.insert(digest.clone(), d.clone()).is_none(), "{digest} listed twice: {text}");
    }
    (out, filters)
}

async fn subject_header_on_put(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("subject");
    let image = reg.push_image(&repo, Some("v1")).await;
    reg.push_blob(&repo, b"{}").await;
    push_referrer(&reg, &repo, &image.descriptor(), Some(SBOM), empty_descriptor(), json!({}))
        .await;

    // A subject that does not exist (yet) is accepted too.
    let absent = Image::random("absent");
    push_referrer(&reg, &repo, &absent.descriptor(), Some(SIG), empty_descriptor(), json!({}))
        .await;
    let (list, _) = referrers(&reg, &repo, &absent.digest, "").await;
    assert_eq!(list.len(), 1, "the referrer of a not-yet-pushed subject is listed");

    // Without a subject there is no OCI-Subject header.
    let other = Image::random("plain");
    reg.push_blob(&repo, &other.config).await;
    reg.push_blob(&repo, &other.layer).await;
    let resp = reg.put_manifest(&repo, "plain", OCI_MANIFEST, &other.manifest).await;
    assert_status(&resp, 201);
    assert!(header(&resp, "oci-subject").is_none(), "no subject, no OCI-Subject");
}

async fn referrers_list(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("referrers");
    let image = reg.push_image(&repo, Some("v1")).await;
    let unrelated = reg.push_image(&repo, Some("v2")).await;
    reg.push_blob(&repo, b"{}").await;
    let subject = image.descriptor();

    let (sbom, sbom_body) = push_referrer(
        &reg,
        &repo,
        &subject,
        Some(SBOM),
        empty_descriptor(),
        json!({ "org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }),
    )
    .await;
    let (sig, sig_body) = push_referrer(
        &reg,
        &repo,
        &subject,
        Some(SIG),
        empty_descriptor(),
        json!({ "org.example.kind": "sig" }),
    )
    .await;
    // No artifactType: the descriptor's artifactType is the config media type.
    let config = br#"{"custom":true}"#;
    reg.push_blob(&repo, config).await;
    let (custom, custom_body) = push_referrer(
        &reg,
        &repo,
        &subject,
        None,
        descriptor(CUSTOM_CONFIG, config),
        json!({ "k": "v" }),
    )
    .await;
    // A referrer of the unrelated image must not show up.
    push_referrer(&reg, &repo, &unrelated.descriptor(), Some(SBOM), empty_descriptor(), json!({}))
        .await;

    let (list, _) = referrers(&reg, &repo, &image.digest, "").await;
    assert_eq!(
        list.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![sbom.clone(), sig.clone(), custom.clone()];
            v.sort();
            v
        },
        "referrers of the image: {list:?}"
    );
    for (digest, body, artifact_type, annotations) in [
        (
            &sbom,
            &sbom_body,
            SBOM,
            json!({ "org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }),
        ),
        (&sig, &sig_body, SIG, json!({ "org.example.kind": "sig" })),
        (&custom, &custom_body, CUSTOM_CONFIG, json!({ "k": "v" })),
    ] {
        let d = &list[digest];
        assert_eq!(d["mediaType"], json!(OCI_MANIFEST), "{d}");
        assert_eq!(d["size"], json!(body.len()), "{d}");
        assert_eq!(d["artifactType"], json!(artifact_type), "{d}");
        assert_eq!(d["annotations"], annotations, "{d}");
    }

    // The referrers of the referrer: none.
    let (list, _) = referrers(&reg, &repo, &sbom, "").await;
    assert!(list.is_empty());
}

async fn referrers_filter_by_artifact_type(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("ref-filter");
    let image = reg.push_image(&repo, Some("v1")).await;
    reg.push_blob(&repo, b"{}").await;
    let subject = image.descriptor();
    let (sbom, _) =
        push_referrer(&reg, &repo, &subject, Some(SBOM), empty_descriptor(), json!({})).await;
    let (sbom2, _) =
        push_referrer(&reg, &repo, &subject, Some(SBOM), empty_descriptor(), json!({ "n": "2" }))
            .await;
    push_referrer(&reg, &repo, &subject, Some(SIG), empty_descriptor(), json!({})).await;

    let (list, filters) = referrers(&reg, &repo, &image.digest, &artifact_type_query(SBOM)).await;
    let mut expected = vec![sbom, sbom2];
    expected.sort();
    assert_eq!(list.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(filters.as_deref(), Some("artifactType"), "OCI-Filters-Applied");

    let (list, filters) =
        referrers(&reg, &repo, &image.digest, "artifactType=application/vnd.example.none").await;
    assert!(list.is_empty());
    assert_eq!(filters.as_deref(), Some("artifactType"));

    // Unfiltered: no OCI-Filters-Applied.
    let (list, filters) = referrers(&reg, &repo, &image.digest, "").await;
    assert_eq!(list.len(), 3);
    assert!(filters.is_none(), "no filter, no OCI-Filters-Applied: {filters:?}");
}

async fn referrers_of_unknown_subject(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("ref-unknown");
    reg.push_image(&repo, Some("v1")).await;
    let unknown = sha256_digest(&random_bytes(32));
    let (list, _) = referrers(&reg, &repo, &unknown, "").await;
    assert!(list.is_empty());

    // An invalid digest is a 400.
    let resp = reg.get(&format!("/v2/{repo}/referrers/sha256:nothex")).await;
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;
}

async fn referrers_forget_deleted_manifests(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("ref-delete");
    let image = reg.push_image(&repo, Some("v1")).await;
    reg.push_blob(&repo, b"{}").await;
    let subject = image.descriptor();
    let (a, _) =
        push_referrer(&reg, &repo, &subject, Some(SBOM), empty_descriptor(), json!({})).await;
    let (b, _) =
        push_referrer(&reg, &repo, &subject, Some(SIG), empty_descriptor(), json!({})).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{a}")).await;
    assert_status(&resp, 202);
    let (list, _) = referrers(&reg, &repo, &image.digest, "").await;
    assert_eq!(list.keys().cloned().collect::<Vec<_>>(), vec![b]);
}

/// `artifactType=<t>`, percent-encoded as clients send it (a bare `+` in a query means a space).
fn artifact_type_query(t: &str) -> String {
    format!("artifactType={}", t.replace('+', "%2B"))
}

/// PUTs `manifest` by digest with `media_type`, asserting 201; returns (digest, bytes).
async fn put_by_digest(
    reg: &Registry,
    repo: &str,
    media_type: &str,
    manifest: &Value,
) -> (String, Vec<u8>) {
    let body = to_bytes(manifest);
    let digest = reg.push_manifest(repo, &sha256_digest(&body), media_type, &body).await;
    (digest, body)
}

/// distribution-spec, "Listing Referrers": an image manifest without `artifactType` is listed
/// under its config's media type — the plain image config types too — and the filter matches
/// that value; an index without one is listed without one.
async fn referrers_artifact_type_of_images_and_indexes(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("ref-types");
    let image = reg.push_image(&repo, Some("v1")).await;
    let subject = image.descriptor();
    reg.push_blob(&repo, b"{}").await;

    // An OCI image manifest with an ordinary image config, as `docker buildx` attestations
    // and signatures by older tools look.
    let layer = random_bytes(100);
    reg.push_blob(&repo, &layer).await;
    let config = config_json(&sha256_digest(&layer), "referrer");
    reg.push_blob(&repo, &config).await;
    let mut m =
        oci_image_manifest(descriptor(OCI_CONFIG, &config), vec![descriptor(OCI_LAYER, &layer)]);
    m["subject"] = subject.clone();
    let (oci_plain, _) = put_by_digest(&reg, &repo, OCI_MANIFEST, &m).await;

    // A Docker schema 2 manifest with a subject: its config type.
    let docker_config = config_json(&sha256_digest(&layer), "docker referrer");
    reg.push_blob(&repo, &docker_config).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &docker_config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
        "subject": subject,
    });
    let (docker_plain, _) = put_by_digest(&reg, &repo, DOCKER_MANIFEST, &m).await;

    // An empty artifactType counts as missing.
    let mut m = oci_image_manifest(empty_descriptor(), vec![empty_descriptor()]);
    m["artifactType"] = json!("");
    m["subject"] = subject.clone();
    let (declared_empty, _) = put_by_digest(&reg, &repo, OCI_MANIFEST, &m).await;

    // Indexes: without an artifactType, none is listed; with one, it is.
    let mut m = oci_index(vec![]);
    m["subject"] = subject.clone();
    m["annotations"] = json!({ "kind": "plain index" });
    let (index_plain, _) = put_by_digest(&reg, &repo, OCI_INDEX, &m).await;
    let mut m = oci_index(vec![]);
    m["subject"] = subject.clone();
    m["artifactType"] = json!(SIG);
    let (index_typed, _) = put_by_digest(&reg, &repo, OCI_INDEX, &m).await;

    let (list, _) = referrers(&reg, &repo, &image.digest, "").await;
    let types: BTreeMap<String, Option<String>> = list
        .iter()
        .map(|(d, v)| {
            (d.clone(), v.get("artifactType").map(|a| a.as_str().expect("string").to_string()))
        })
        .collect();
    let expected: BTreeMap<String, Option<String>> = [
        (oci_plain.clone(), Some(OCI_CONFIG)),
        (docker_plain.clone(), Some(DOCKER_CONFIG)),
        (declared_empty.clone(), Some(OCI_EMPTY)),
        (index_plain.clone(), None),
        (index_typed.clone(), Some(SIG)),
    ]
    .into_iter()
    .map(|(d, a)| (d, a.map(str::to_string)))
    .collect();
    assert_eq!(types, expected, "{list:?}");
    assert_eq!(list[&index_plain]["annotations"], json!({ "kind": "plain index" }));

    for (filter, matching) in [
        (OCI_CONFIG, &oci_plain),
        (DOCKER_CONFIG, &docker_plain),
        (OCI_EMPTY, &declared_empty),
        (SIG, &index_typed),
    ] {
        let (list, filters) =
            referrers(&reg, &repo, &image.digest, &artifact_type_query(filter)).await;
        assert_eq!(list.keys().collect::<Vec<_>>(), vec![matching], "filter {filter}");
        assert_eq!(list[matching]["artifactType"], json!(filter));
        assert_eq!(filters.as_deref(), Some("artifactType"));
    }
}

/// Entries of a client-kept referrers tag index (`sha256-<hex>`) that lack an `artifactType`
/// get the one the registry lists the described manifest under, when it holds it; the filter
/// compares that value. (The registry runs with sparse indexes allowed, so the tag index may
/// list a manifest the repository does not hold.)
async fn referrers_tag_entries_without_artifact_type(backend: MetaBackend) {
    let reg = Registry::start_with(
        backend,
        &[("STOWAGE_VALIDATION__MANIFESTS__INDEXES__PLATFORMS", "none")],
    );
    let repo = unique_repo("ref-tag-types");
    let image = reg.push_image(&repo, Some("v1")).await;
    // A signature pushed without a subject (as for a registry without the referrers API),
    // with an ordinary image config and no artifactType.
    let held = reg.push_image(&repo, None).await;
    let absent = Image::random("not pushed");
    let sbom = reg.push_image(&repo, None).await;
    let mut sbom_entry = sbom.descriptor();
    sbom_entry["artifactType"] = json!(SBOM);
    let tag_index = oci_index(vec![held.descriptor(), absent.descriptor(), sbom_entry]);
    let fallback_tag = image.digest.replacen(':', "-", 1);
    let body = to_bytes(&tag_index);
    reg.push_manifest(&repo, &fallback_tag, OCI_INDEX, &body).await;

    let (list, _) = referrers(&reg, &repo, &image.digest, "").await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(list[&held.digest]["artifactType"], json!(OCI_CONFIG), "{list:?}");
    assert!(list[&absent.digest].get("artifactType").is_none(), "unknown, so left out: {list:?}");
    assert_eq!(list[&sbom.digest]["artifactType"], json!(SBOM), "declared wins: {list:?}");

    let (list, _) = referrers(&reg, &repo, &image.digest, &artifact_type_query(OCI_CONFIG)).await;
    assert_eq!(list.keys().collect::<Vec<_>>(), vec![&held.digest]);
    let (list, _) = referrers(&reg, &repo, &image.digest, &artifact_type_query(SBOM)).await;
    assert_eq!(list.keys().collect::<Vec<_>>(), vec![&sbom.digest]);
}
