//! Blob DELETE never breaks an image: a blob a manifest of the repository uses as config or
//! layer stays linked (403 `DENIED`, naming the manifest and a tag on it) until that manifest
//! is deleted — whatever the tags, immutable ones included — and a manifest PUT racing the
//! delete cannot end up referencing a blob that is gone.

mod common;

use common::*;
use e2e::gitlab::{self, repo_scope, start_auth_server, token_for, GitLab};
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    referenced_blobs_stay_until_their_manifest_goes,
    every_manifest_counts_tagged_or_not,
    unreferenced_blobs_delete_as_before,
    blob_delete_racing_manifest_put,
    blob_of_an_immutable_image,
);

/// `DELETE /v2/<repo>/blobs/<digest>`, expecting the refusal that names `manifest` (and `tag`).
async fn assert_delete_refused(
    reg: &Registry,
    repo: &str,
    blob: &str,
    manifest: &str,
    tag: Option<&str>,
) -> String {
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{blob}")).await;
    let body = assert_oci_error(resp, &[403], &["DENIED"]).await;
    let error = &body["errors"][0];
    let message = error["message"].as_str().unwrap().to_string();
    assert!(message.contains(manifest), "the refusal names the manifest: {message}");
    assert!(message.contains("delete the manifest first"), "and what to do: {message}");
    assert_eq!(error["detail"]["manifest"], json!(manifest), "{body}");
    assert_eq!(error["detail"]["digest"], json!(blob), "{body}");
    assert_eq!(error["detail"]["tag"], json!(tag), "{body}");
    if let Some(tag) = tag {
        assert!(message.contains(&format!("tag {tag}")), "the refusal names the tag: {message}");
    }
    message
}

/// The image pulls whole: manifest by `reference`, config and layer with their bytes.
async fn assert_pulls(reg: &Registry, repo: &str, reference: &str, image: &Image) {
    let resp = reg.get_manifest(repo, reference).await;
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), image.manifest.as_slice());
    for (digest, bytes) in
        [(&image.config_digest, &image.config), (&image.layer_digest, &image.layer)]
    {
        let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_status(&resp, 200);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice(), "blob {digest}");
    }
}

async fn referenced_blobs_stay_until_their_manifest_goes(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("blob-ref");
    let image = reg.push_image(&repo, Some("v1")).await;

    let message =
        assert_delete_refused(&reg, &repo, &image.layer_digest, &image.digest, Some("v1")).await;
    assert!(message.contains("a layer"), "{message}");
    let message =
        assert_delete_refused(&reg, &repo, &image.config_digest, &image.digest, Some("v1")).await;
    assert!(message.contains("the config"), "{message}");
    // Refused again: nothing changed in between.
    assert_delete_refused(&reg, &repo, &image.layer_digest, &image.digest, Some("v1")).await;
    assert_pulls(&reg, &repo, "v1", &image).await;
    assert_pulls(&reg, &repo, &image.digest, &image).await;

    // Deleting the manifest first, as the message says, frees the blobs.
    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", image.digest)).await;
    assert_status(&resp, 202);
    for blob in [&image.layer_digest, &image.config_digest] {
        let resp = reg.delete(&format!("/v2/{repo}/blobs/{blob}")).await;
        assert_status(&resp, 202);
        assert_eq!(reg.blob_status(&repo, blob).await, StatusCode::NOT_FOUND);
    }
}

async fn every_manifest_counts_tagged_or_not(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("blob-shared");
    // Two images sharing one layer: `untagged` pushed by digest, `tagged` as `stable`.
    let layer = random_bytes(1024);
    let layer_digest = reg.push_blob(&repo, &layer).await;
    let mut images = Vec::new();
    for label in ["untagged", "tagged"] {
        let config = config_json(&layer_digest, label);
        let config_digest = reg.push_blob(&repo, &config).await;
        let manifest = to_bytes(&oci_image_manifest(
            descriptor(OCI_CONFIG, &config),
            vec![descriptor(OCI_LAYER, &layer)],
        ));
        let digest = sha256_digest(&manifest);
        let image = Image {
            config,
            config_digest,
            layer: layer.clone(),
            layer_digest: layer_digest.clone(),
            manifest,
            digest,
        };
        let reference = if label == "tagged" { "stable".to_string() } else { image.digest.clone() };
        reg.push_manifest(&repo, &reference, OCI_MANIFEST, &image.manifest).await;
        images.push(image);
    }
    let (untagged, tagged) = (&images[0], &images[1]);

    // The tagged manifest is named first: it is the image a user would have broken.
    assert_delete_refused(&reg, &repo, &layer_digest, &tagged.digest, Some("stable")).await;
    // An untagged manifest protects its blobs just the same.
    assert_delete_refused(&reg, &repo, &untagged.config_digest, &untagged.digest, None).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", tagged.digest)).await;
    assert_status(&resp, 202);
    assert_delete_refused(&reg, &repo, &layer_digest, &untagged.digest, None).await;
    assert_pulls(&reg, &repo, &untagged.digest, untagged).await;

    let resp = reg.delete(&format!("/v2/{repo}/manifests/{}", untagged.digest)).await;
    assert_status(&resp, 202);
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{layer_digest}")).await;
    assert_status(&resp, 202);

    // A manifest list's child counts like any manifest: its layer stays while the child does.
    let child = reg.push_image(&repo, None).await;
    let index = to_bytes(&oci_index(vec![child.descriptor()]));
    reg.push_manifest(&repo, "multi", OCI_INDEX, &index).await;
    assert_delete_refused(&reg, &repo, &child.layer_digest, &child.digest, None).await;
}

async fn unreferenced_blobs_delete_as_before(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("blob-free");
    let other = unique_repo("blob-free-other");
    let data = random_bytes(700);
    let digest = reg.push_blob(&repo, &data).await;
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 202);
    assert_eq!(header(&resp, "docker-content-digest").as_deref(), Some(digest.as_str()));
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;
    let resp = reg.delete(&format!("/v2/{}/blobs/{digest}", unique_repo("never-pushed"))).await;
    assert_oci_error(resp, &[404], &["BLOB_UNKNOWN"]).await;

    // Only manifests of the same repository count: an image elsewhere that uses the same
    // bytes neither blocks the delete here nor is harmed by it.
    let image = reg.push_image(&other, Some("v1")).await;
    reg.push_blob(&repo, &image.layer).await;
    let resp = reg.delete(&format!("/v2/{repo}/blobs/{}", image.layer_digest)).await;
    assert_status(&resp, 202);
    assert_pulls(&reg, &other, "v1", &image).await;
}

/// A manifest PUT and a DELETE of its layer, sent at the same moment, many times: whichever
/// wins, the repository never ends up with a manifest whose layer is gone.
async fn blob_delete_racing_manifest_put(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("blob-race");
    let (mut puts_won, mut deletes_won) = (0, 0);
    for round in 0..25 {
        let image = Image::random(&format!("race-{round}"));
        reg.push_blob(&repo, &image.config).await;
        reg.push_blob(&repo, &image.layer).await;
        let tag = format!("r{round}");
        let blob = format!("/v2/{repo}/blobs/{}", image.layer_digest);
        let (put, delete) = tokio::join!(
            reg.put_manifest(&repo, &tag, OCI_MANIFEST, &image.manifest),
            reg.delete(&blob),
        );
        let (put_status, delete_status) = (put.status().as_u16(), delete.status().as_u16());
        let put_body = put.text().await.unwrap_or_default();
        let delete_body = delete.text().await.unwrap_or_default();
        match (put_status, delete_status) {
            // The manifest came first: the layer stays and the image pulls.
            (201, 403) => {
                check_error_body(&delete_body, &["DENIED"], "blob delete after the PUT");
                assert_pulls(&reg, &repo, &tag, &image).await;
                puts_won += 1;
            }
            // The delete came first: the manifest is refused and nothing points at the layer.
            (400, 202) => {
                check_error_body(&put_body, &["MANIFEST_BLOB_UNKNOWN"], "PUT after the delete");
                assert_eq!(reg.blob_status(&repo, &image.layer_digest).await, StatusCode::NOT_FOUND);
                let resp = reg.get_manifest(&repo, &tag).await;
                assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
                deletes_won += 1;
            }
            other => panic!(
                "round {round}: PUT and DELETE answered {other:?}; PUT: {put_body} DELETE: {delete_body}"
            ),
        }
    }
    eprintln!("manifest PUT first {puts_won} times, blob DELETE first {deletes_won} times");
}

/// The story: a maintainer deletes a layer of an image under an immutable tag.
async fn blob_of_an_immutable_image(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let root = GitLab::root(&server);
    let group = root.create_group("acme", None, "private").await;
    let project = root.create_project(group, "app", "private").await;
    let maintainer = root.create_user("mia").await;
    root.add_member("projects", project, maintainer.id, gitlab::level::MAINTAINER).await;
    root.call(
        Method::POST,
        &format!("/projects/{project}/registry/protection/tag/rules"),
        Some(json!({"tag_name_pattern": "^release-", "immutable": true})),
    )
    .await;

    let name = "acme/app";
    let scopes = [repo_scope(name, "pull,push,delete")];
    let http = gitlab::http_client();
    let token =
        token_for(&http, &server.base, Some((&maintainer.username, &maintainer.password)), &scopes)
            .await;
    let registry = gitlab::Registry::new(&server, Some(token));
    registry.push_image(name, "release-1").await.assert_allowed("pushing release-1");
    let pulled = registry.pull(name, "release-1").await;
    pulled.assert_allowed("pulling release-1");
    let manifest: Value = serde_json::from_str(&pulled.body).unwrap();
    let manifest_digest = sha256_digest(pulled.body.as_bytes());

    for blob in [&manifest["layers"][0]["digest"], &manifest["config"]["digest"]] {
        let blob = blob.as_str().unwrap();
        let refused = registry.send(Method::DELETE, &format!("/v2/{name}/blobs/{blob}")).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert_eq!(refused.error_code().as_deref(), Some("DENIED"), "{}", refused.body);
        assert!(refused.body.contains(&manifest_digest), "{}", refused.body);
        assert!(refused.body.contains("release-1"), "{}", refused.body);
        let still = registry.send(Method::GET, &format!("/v2/{name}/blobs/{blob}")).await;
        still.assert_allowed("the blob of the immutable image is still served");
    }
    registry.pull(name, "release-1").await.assert_allowed("the immutable image still pulls");
}
