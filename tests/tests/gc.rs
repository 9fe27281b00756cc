//! Online garbage collection from the operator's side: `stowage gc status` and
//! `stowage gc run --dry-run` on a server with pushed and deleted content, and the admin
//! figures at `GET /api/v4/admin/registry/gc`. The runtime's loops, the storage deleter and
//! the leftovers sweep are tested deterministically in `crates/gc/tests`.

mod common;

use std::time::{Duration, SystemTime};

use common::Registry;
use e2e::gitlab::{start_auth_server, GitLab};
use e2e::{backend_tests, unique_repo, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};

backend_tests!(
    status_and_dry_run_after_pushes_and_deletes,
    only_admins_see_the_gc_figures,
    online_gc_reclaims_exactly_the_unreferenced_bytes
);

/// A temporary file of an interrupted write next to a blob, two hours old, in `server`'s
/// storage; returns its key.
fn plant_interrupted_write(server: &TestServer) -> String {
    let hex = e2e::sha256_digest(e2e::random_suffix().as_bytes())["sha256:".len()..].to_string();
    let key = format!("blobs/sha256/{}/{hex}#1", &hex[..2]);
    let path = server.data_dir().join("data").join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0u8; 1234]).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(two_hours_ago).unwrap();
    key
}

async fn status_and_dry_run_after_pushes_and_deletes(backend: MetaBackend) {
    let r = Registry::start(backend);
    let repo = unique_repo("gc");
    let kept = r.push_image(&repo, Some("v1")).await;
    let deleted = r.push_image(&repo, Some("v2")).await;
    let resp = r.delete(&format!("/v2/{repo}/manifests/{}", deleted.digest)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let untagged = r.push_image(&repo, None).await;
    let leftover = plant_interrupted_write(&r.server);

    let status = r.server.stowage(&["gc", "status"]);
    for line in [
        "review queues:",
        "  manifests: ",
        "  blobs: ",
        "storage deletions: 0 pending",
        "removed in the last hour: ",
        "removed in the last day: ",
    ] {
        assert!(status.contains(line), "{line:?} missing from gc status:\n{status}");
    }
    let json = r.server.gc_status();
    assert_eq!(json["storage_deletions"]["pending"], 0, "{json}");
    assert!(json["review_queues"]["manifests"]["queued"].is_i64(), "{json}");
    assert_eq!(json["removed"]["last_day"]["failures"], 0, "{json}");

    // Everything counts as old enough with --min-age 0s.
    let dry = r.server.stowage(&["gc", "run", "--dry-run", "--min-age", "0s"]);
    assert!(dry.starts_with("dry run: nothing is removed\n"), "{dry}");
    assert!(dry.contains(&format!("would remove manifest {repo}@{}", untagged.digest)), "{dry}");
    for blob in [
        &untagged.config_digest,
        &untagged.layer_digest, // freed by the untagged manifest that would go: the cascade
        &deleted.config_digest,
        &deleted.layer_digest,
    ] {
        assert!(dry.contains(&format!("would remove blob {blob} (")), "{blob}: {dry}");
    }
    for still_used in [&kept.digest, &kept.config_digest, &kept.layer_digest] {
        assert!(!dry.contains(still_used.as_str()), "{still_used} is tagged: {dry}");
    }
    assert!(dry.contains(&format!("would remove leftover {leftover} (1234 bytes")), "{dry}");
    assert!(
        dry.contains("summary: would remove 1 manifests, 4 blobs (")
            && dry.contains("0 pending storage deletions (0 bytes), 1 leftovers (1234 bytes"),
        "{dry}"
    );
    // By default what was pushed within the last hour is left alone; the old leftover is not.
    let cautious = r.server.stowage(&["gc", "run", "--dry-run"]);
    assert!(cautious.contains("summary: would remove 0 manifests, 0 blobs"), "{cautious}");
    assert!(cautious.contains(&leftover), "{cautious}");

    // Nothing was removed.
    assert_eq!(r.get_manifest(&repo, &untagged.digest).await.status(), StatusCode::OK);
    for blob in [&untagged.layer_digest, &deleted.layer_digest, &kept.layer_digest] {
        assert_eq!(r.blob_status(&repo, blob).await, StatusCode::OK, "{blob}");
    }
    assert!(r.server.data_dir().join("data").join(&leftover).exists());
    let again = r.server.stowage(&["gc", "run", "--dry-run", "--min-age", "0s"]);
    assert_eq!(again, dry, "a dry run changes nothing");
}

async fn only_admins_see_the_gc_figures(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let root = GitLab::root(&server);
    let (status, figures) = root.request(Method::GET, "/admin/registry/gc", None).await;
    assert_eq!(status, StatusCode::OK, "{figures}");
    for field in ["at", "review_queues", "storage_deletions", "removed"] {
        assert!(!figures[field].is_null(), "{field} missing: {figures}");
    }
    assert_eq!(figures["review_queues"]["blobs"]["due"], 0, "{figures}");
    assert_eq!(figures["removed"]["last_hour"]["storage_bytes"], 0, "{figures}");
    // The same figures as the CLI's.
    let cli = server.gc_status();
    assert_eq!(cli["storage_deletions"], figures["storage_deletions"]);
    assert_eq!(cli["removed"], figures["removed"]);

    let alice = root.create_user("alice").await;
    let token = root.create_pat(&alice, &["api"]).await;
    let (status, body) = GitLab::with_token(&server, &token.token)
        .request(Method::GET, "/admin/registry/gc", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user who is no admin: {body}");
    assert!(body["message"].as_str().unwrap_or("").starts_with("403"), "{body}");
    let anonymous = e2e::gitlab::http_client()
        .get(server.url("/api/v4/admin/registry/gc"))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// `stowage gc run` (a full pass through the write service's review) reclaims the bytes of
/// exactly what deletes left unreferenced: a deleted manifest's config and layer, an untagged
/// manifest and its blobs, while the tagged image keeps its bytes and still pulls.
async fn online_gc_reclaims_exactly_the_unreferenced_bytes(backend: MetaBackend) {
    let r = Registry::start(backend);
    let repo = unique_repo("gc");
    let kept = r.push_image(&repo, Some("v1")).await;
    let deleted = r.push_image(&repo, Some("v2")).await;
    let resp = r.delete(&format!("/v2/{repo}/manifests/{}", deleted.digest)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let untagged = r.push_image(&repo, None).await;

    let gone = [
        &deleted.config_digest,
        &deleted.layer_digest,
        &untagged.config_digest,
        &untagged.layer_digest,
    ];
    let run = r.server.stowage(&["gc", "run", "--min-age", "0s"]);
    for d in gone {
        assert!(!r.server.blob_path(d).exists(), "{d} is still stored:\n{run}");
    }
    for d in gone {
        assert_eq!(r.blob_status(&repo, d).await, StatusCode::NOT_FOUND, "{d}");
    }
    assert_eq!(r.get_manifest(&repo, &untagged.digest).await.status(), StatusCode::NOT_FOUND);
    // The tagged image is whole.
    assert_eq!(r.get_manifest(&repo, "v1").await.status(), StatusCode::OK);
    for d in [&kept.config_digest, &kept.layer_digest] {
        assert!(r.server.blob_path(d).exists(), "{d} was deleted");
        assert_eq!(r.blob_status(&repo, d).await, StatusCode::OK, "{d}");
    }
    let json = r.server.gc_status();
    assert_eq!(json["removed"]["last_hour"]["failures"], 0, "{json}");
}
