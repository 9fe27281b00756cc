//! Online garbage collection from the operator's side: `stowage gc status` and
//! `stowage gc run --dry-run` on a server with pushed and deleted content, and the admin
//! figures at `GET /api/v4/admin/registry/gc`. The runtime's loops, the storage deleter and
//! the leftovers sweep are tested deterministically in `crates/gc/tests`.

mod common;

use std::time::{Duration, SystemTime};

use common::Registry;
use e2e::gitlab::{start_auth_server, GitLab, ADMIN_TOKEN};
use e2e::{backend_tests, unique_repo, BlobBackend, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

backend_tests!(
    status_and_dry_run_after_pushes_and_deletes,
    only_admins_see_the_gc_figures,
    online_gc_reclaims_exactly_the_unreferenced_bytes,
    gc_run_beside_a_serving_instance,
    admins_start_a_full_pass_as_a_job,
    the_leftovers_sweep_runs_once_per_period_as_a_job,
    leftovers_are_swept_on_the_filesystem_and_on_s3
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
    let mut r = Registry::start(backend);
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
    let run = r.server.run_gc(&["--min-age", "0s"]);
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

/// `stowage gc run` deletes registry state. On SQLite, where only one process may, it refuses
/// beside a serving instance, names both ways out, and removes nothing (its dry run, which
/// only reads, still runs); on PostgreSQL it runs beside serving instances.
async fn gc_run_beside_a_serving_instance(backend: MetaBackend) {
    let r = Registry::start(backend);
    let repo = unique_repo("gc");
    let untagged = r.push_image(&repo, None).await;
    let out = r.server.stowage_command(&["gc", "run", "--min-age", "0s"]).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match backend {
        MetaBackend::Sqlite => {
            assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
            assert!(
                stderr.lines().last().unwrap_or_default().starts_with(
                    "error: a running `stowage serve` collects garbage itself on SQLite; ask it \
                     for a full pass with POST /api/v4/admin/registry/gc (an instance admin's \
                     token), or stop it to run the pass from here: another stowage serve (pid "
                ),
                "{stderr}"
            );
            assert!(stdout.is_empty(), "nothing ran: {stdout}");
            assert_eq!(r.get_manifest(&repo, &untagged.digest).await.status(), StatusCode::OK);
            assert!(r.server.blob_path(&untagged.layer_digest).exists());
            let dry = r.server.stowage(&["gc", "run", "--dry-run", "--min-age", "0s"]);
            assert!(dry.contains(&untagged.digest), "{dry}");
        }
        MetaBackend::Postgres => {
            assert!(out.status.success(), "{stdout}{stderr}");
            assert_eq!(
                r.get_manifest(&repo, &untagged.digest).await.status(),
                StatusCode::NOT_FOUND
            );
            assert!(!r.server.blob_path(&untagged.layer_digest).exists());
        }
    }
}

/// `POST /api/v4/admin/registry/gc` enqueues a full pass as a job (`gc_full_pass`) that the
/// serving instance runs at once: it removes exactly the unreferenced content and shows in
/// `GET /admin/jobs`. Only instance admins may; `min_age_seconds` is checked.
async fn admins_start_a_full_pass_as_a_job(backend: MetaBackend) {
    let r = Registry::start_with(backend, &[("STOWAGE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let root = GitLab::root(&r.server);
    let repo = unique_repo("gc");
    let kept = r.push_image(&repo, Some("v1")).await;
    let untagged = r.push_image(&repo, None).await;

    // Refusals: nobody but an instance admin, and no odd ages; nothing is enqueued.
    let anonymous = e2e::gitlab::http_client()
        .post(r.server.url("/api/v4/admin/registry/gc"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let alice = root.create_user("alice").await;
    let token = root.create_pat(&alice, &["api"]).await;
    let (status, body) = GitLab::with_token(&r.server, &token.token)
        .request(Method::POST, "/admin/registry/gc", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for (bad, message) in [
        (serde_json::json!(-1), "must be between 0 and 2592000 (30 days), not -1"),
        (serde_json::json!(2_592_001), "must be between 0 and 2592000 (30 days), not 2592001"),
    ] {
        let (status, body) = root
            .request(
                Method::POST,
                "/admin/registry/gc",
                Some(serde_json::json!({"min_age_seconds": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["message"]["min_age_seconds"][0], message, "{body}");
    }
    for bad in [serde_json::json!({"min_age_seconds": "1h"}), serde_json::json!({"minage": 0})] {
        let (status, body) =
            root.request(Method::POST, "/admin/registry/gc", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap_or("").contains("min"), "{bad}: {body}");
    }
    assert!(r.server.jobs(Some("gc_full_pass")).is_empty(), "no job for a refused request");

    let (status, job) = root
        .request(
            Method::POST,
            "/admin/registry/gc",
            Some(serde_json::json!({"min_age_seconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "gc_full_pass", "{job}");
    assert_eq!(job["payload"]["min_age_seconds"], 0, "{job}");
    let done = r.server.await_jobs("gc_full_pass", 1);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], job["id"]);
    assert_eq!(done[0]["state"], "succeeded", "{done:?}");

    assert_eq!(r.get_manifest(&repo, &untagged.digest).await.status(), StatusCode::NOT_FOUND);
    for d in [&untagged.config_digest, &untagged.layer_digest] {
        assert!(!r.server.blob_path(d).exists(), "{d} is still stored");
    }
    assert_eq!(r.get_manifest(&repo, "v1").await.status(), StatusCode::OK);
    for d in [&kept.config_digest, &kept.layer_digest] {
        assert!(r.server.blob_path(d).exists(), "{d} was deleted");
    }
    let listed = root.call(Method::GET, "/admin/jobs?kind=gc_full_pass", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["state"], "succeeded", "{listed}");
    assert!(r.server.log().contains("GC full pass done"), "the pass logs its summary");
}

/// The leftovers sweep is a periodic job: each period's sweep runs once, whichever instance
/// (or `stowage jobs run-due`) claims it, and removes old leftovers.
async fn the_leftovers_sweep_runs_once_per_period_as_a_job(backend: MetaBackend) {
    let mut r = Registry::start(backend);
    let leftover = plant_interrupted_write(&r.server);
    let path = r.server.data_dir().join("data").join(&leftover);
    // A day far ahead is a period of its own, due only when asked for it.
    let day = "2099-01-01";
    let slot_jobs = |server: &TestServer| -> Vec<Value> {
        let jobs = server.jobs(Some("gc_leftovers"));
        jobs.into_iter()
            .filter(|j| j["run_at"].as_str().is_some_and(|at| at.starts_with(day)))
            .collect()
    };
    assert!(slot_jobs(&r.server).is_empty());
    r.server.run_due_jobs(Some(day));
    assert!(!path.exists(), "the sweep removed {leftover}");
    let jobs = slot_jobs(&r.server);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");

    // The same period again (on PostgreSQL as another instance beside the server): no new job.
    let leftover = plant_interrupted_write(&r.server);
    r.server.run_due_jobs(Some(day));
    assert_eq!(slot_jobs(&r.server).len(), 1, "one sweep per period");
    assert!(r.server.data_dir().join("data").join(&leftover).exists(), "not swept twice");
}

/// What a push killed at the wrong moment leaves in storage, on the filesystem and on S3: the
/// bytes of a blob published just before the kill, without the `blobs` row its commit never
/// wrote, and an upload's parts whose session is gone. The leftovers sweep (the periodic job,
/// here run as of a day far ahead, when all of it is old) removes the upload objects and
/// queues the bytes for the storage deleter, which removes them an hour later (`gc run` at
/// once); pushed images pull unchanged and an upload in progress still completes.
async fn leftovers_are_swept_on_the_filesystem_and_on_s3(backend: MetaBackend) {
    for storage in [BlobBackend::Filesystem, BlobBackend::S3] {
        // No upload purge: as of the far day it would end the upload in progress too.
        let purge_off = ("STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__ENABLED", "false");
        let mut r = Registry::start_on(backend, storage, &[purge_off]);
        let repo = unique_repo("leftovers");
        let image = r.push_image(&repo, Some("v1")).await;
        let killed = e2e::random_bytes(4096);
        let killed_digest = e2e::sha256_digest(&killed);
        let hex = &killed_digest["sha256:".len()..];
        let killed_key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
        r.server.put_object(&killed_key, killed.clone()).await;
        let stray = format!("uploads/{}/0123456789abcdef", e2e::random_suffix());
        r.server.put_object(&stray, vec![1u8; 300]).await;
        // An upload in progress: one chunk stored, not committed.
        let chunk = e2e::random_bytes(1000);
        let location = r.start_upload(&repo).await;
        let resp = r
            .req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .body(chunk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{storage:?}");
        let location = common::path_of(&common::header(&resp, "location").unwrap());
        let parts_before = r.server.object_keys("uploads").await;
        assert_eq!(parts_before.len(), 2, "{storage:?}: the stray part and the live one");

        r.server.run_due_jobs(Some("2099-01-01"));
        assert!(!r.server.object_exists(&stray).await, "{storage:?}: {stray} stays");
        assert!(
            r.server.object_exists(&killed_key).await,
            "{storage:?}: queued for the storage deleter, not removed at once"
        );
        let status = r.server.gc_status();
        assert_eq!(status["storage_deletions"]["pending"], 1, "{storage:?}: {status}");
        assert_eq!(status["storage_deletions"]["pending_bytes"], 4096, "{storage:?}: {status}");

        let out = r.server.run_gc(&["--min-age", "0s"]);
        assert!(out.contains("summary: removed 0 manifests, 0 blobs"), "{storage:?}: {out}");
        assert!(out.contains("1 storage objects (4096 bytes"), "{storage:?}: {out}");
        assert!(!r.server.object_exists(&killed_key).await, "{storage:?}: the killed push's bytes");
        assert_eq!(r.server.object_keys("uploads").await.len(), 1, "{storage:?}: the live part");

        // Everything pushed pulls unchanged; the upload in progress completes.
        for (digest, bytes) in
            [(&image.layer_digest, &image.layer), (&image.config_digest, &image.config)]
        {
            let resp = r.get(&format!("/v2/{repo}/blobs/{digest}")).await;
            let resp = if resp.status().is_redirection() {
                let to = common::header(&resp, "location").unwrap();
                reqwest::get(&to).await.unwrap()
            } else {
                resp
            };
            assert_eq!(resp.status(), StatusCode::OK, "{storage:?}: {digest}");
            assert_eq!(&resp.bytes().await.unwrap().to_vec(), bytes, "{storage:?}: {digest}");
        }
        let digest = e2e::sha256_digest(&chunk);
        let resp = r
            .req(Method::PUT, &common::with_query(&location, &format!("digest={digest}")))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{storage:?}: {}",
            resp.text().await.unwrap()
        );
        assert_eq!(r.blob_status(&repo, &digest).await, StatusCode::OK, "{storage:?}");
    }
}
