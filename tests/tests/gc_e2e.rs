//! Online garbage collection and quotas end to end (issue 10, "Tests"): what GC removes is
//! computed here, independently of the server, from what the test pushed and deleted, and
//! checked against the files in the server's storage.
//!
//! - real clients (buildah, skopeo) push images sharing layers into several repositories; tags,
//!   manifests and a repository are deleted; one `gc run` leaves exactly the referenced blobs;
//! - a multi-arch index with children and signatures (referrers, `subject`);
//! - concurrent pushes reusing layers race tag deletes and the online workers (zero delay);
//! - two instances on one PostgreSQL collect the same backlog at once: each item goes once;
//! - the server is killed (SIGKILL) in the middle of a pass over a large backlog;
//! - a docker push is refused at 100 % of a group's storage limit and works again after GC.
//!
//! Every test runs on SQLite and PostgreSQL except the two-instance one (PostgreSQL only).
//! The docker test is named `docker_*` so nextest runs it in the one-engine-at-a-time group.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use e2e::dockerd::Dockerd;
use e2e::gitlab::{start_auth_server, GitLab, ADMIN_PASSWORD};
use e2e::tools::{oci_layout_blob, oci_layout_manifests, Containers};
use e2e::TestServer;
use e2e::{backend_tests, random_bytes, random_suffix, sha256_digest, unique_repo, MetaBackend};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    real_clients_then_gc_keeps_exactly_the_referenced_blobs,
    an_index_tag_delete_collects_children_and_signatures,
    pushes_racing_tag_deletes_and_online_gc_lose_nothing,
    gc_killed_mid_pass_completes_after_restart,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_collect_each_item_exactly_once() {
    two_instances_collect_each_item_exactly_once().await
}

#[test]
fn docker_quota_refuses_at_the_limit_and_gc_makes_room_sqlite() {
    docker_quota_refuses_at_the_limit_and_gc_makes_room(MetaBackend::Sqlite)
}

#[test]
fn docker_quota_refuses_at_the_limit_and_gc_makes_room_postgres() {
    docker_quota_refuses_at_the_limit_and_gc_makes_room(MetaBackend::Postgres)
}

/// A manifest's config and layers, as the test knows them from what it built.
fn blobs_of(manifest: &Value) -> BTreeSet<String> {
    let mut blobs = BTreeSet::new();
    if let Some(config) = manifest["config"]["digest"].as_str() {
        blobs.insert(config.to_string());
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        blobs.insert(layer["digest"].as_str().expect("layer digest").to_string());
    }
    blobs
}

async fn json_body(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON body")
}

/// Waits until both review queues are empty and no storage deletion is pending — with
/// `gc.reviewafter: 0s` the online workers have then reviewed everything ever queued — and
/// returns the final `gc status --json`. Bounded.
fn await_gc_idle(server: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = server.gc_status();
        let queues = &status["review_queues"];
        // What is due is done (a blob a push relied on stays queued, due after the push window).
        if queues["manifests"]["due"] == 0
            && queues["blobs"]["due"] == 0
            && status["storage_deletions"]["pending"] == 0
        {
            return status;
        }
        assert!(Instant::now() < deadline, "the GC workers did not catch up: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts the figures of the last hour: exactly these removals, each once, and no failure.
#[track_caller]
fn assert_removed(status: &Value, manifests: usize, blobs: usize) {
    let hour = &status["removed"]["last_hour"];
    assert_eq!(hour["manifests"], manifests, "{status}");
    assert_eq!(hour["blobs"], blobs, "{status}");
    assert_eq!(hour["storage_objects"], blobs, "{status}");
    assert_eq!(hour["failures"], 0, "{status}");
}

// ---- 1: real clients, several repositories, every kind of delete ---------------------------

/// An image built locally and saved in an OCI layout under `name`.
struct Built {
    digest: String,
    blobs: BTreeSet<String>,
}

fn layout_image(layout: &Path, name: &str) -> Built {
    let digest = oci_layout_manifests(layout)
        .into_iter()
        .find(|(_, n)| n.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} missing from the OCI layout"))
        .0;
    let manifest: Value =
        serde_json::from_slice(&oci_layout_blob(layout, &digest)).expect("manifest JSON");
    Built { blobs: blobs_of(&manifest), digest }
}

async fn real_clients_then_gc_keeps_exactly_the_referenced_blobs(backend: MetaBackend) {
    let mut server = start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let top = format!("gc{}", &random_suffix()[..8]);
    let group = api.create_group(&top, None, "private").await;
    let one = api.create_project(group, "one", "private").await;
    let two = api.create_project(group, "two", "private").await;

    // app1 and app2 share base's layer; solo and solo2 share nothing.
    let c = Containers::new();
    let local = |name: &str| format!("localhost/e2e-gc-{name}");
    c.build_image(&local("base"), "scratch", "amd64", &[("/base.bin", &random_bytes(96 << 10))]);
    let scratch = || "scratch".to_string();
    for (name, base) in [
        ("app1", local("base")),
        ("app2", local("base")),
        ("solo", scratch()),
        ("solo2", scratch()),
    ] {
        let file = format!("/{name}.bin");
        c.build_image(&local(name), &base, "amd64", &[(&file, &random_bytes(48 << 10))]);
    }
    let layout = c.path("layout");
    let layout_s = layout.to_str().unwrap();
    let names = ["base", "app1", "app2", "solo", "solo2"];
    for name in names {
        c.buildah(&["push", &local(name), &format!("oci:{layout_s}:{name}")]).ok();
    }
    let built: BTreeMap<&str, Built> =
        names.iter().map(|n| (*n, layout_image(&layout, n))).collect();
    let shared: Vec<_> = built["app1"].blobs.intersection(&built["app2"].blobs).collect();
    assert_eq!(shared.len(), 1, "app1 and app2 share base's layer: {shared:?}");
    assert!(built["base"].blobs.contains(shared[0]));

    let (r1, r2, r3) = (format!("{top}/one"), format!("{top}/one/extra"), format!("{top}/two"));
    let pushes: Vec<(&str, &str, &str)> = vec![
        (r1.as_str(), "v1", "app1"),
        (&r1, "v2", "app2"),
        (&r1, "base", "base"),
        (&r2, "v1", "app1"),
        (&r2, "s", "solo"),
        (&r3, "v1", "app2"),
        (&r3, "v2", "solo2"),
    ];
    let creds = format!("root:{ADMIN_PASSWORD}");
    let addr = server.addr.clone();
    let remote = |repo: &str, reference: &str| {
        let sep = if reference.starts_with("sha256:") { '@' } else { ':' };
        format!("docker://{addr}/{repo}{sep}{reference}")
    };
    for (repo, tag, name) in &pushes {
        let from = format!("oci:{layout_s}:{name}");
        let to = remote(repo, tag);
        c.skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &from, &to]).ok();
    }
    let pushed: BTreeSet<String> = built.values().flat_map(|b| b.blobs.clone()).collect();
    assert_eq!(server.stored_blobs(), pushed, "each blob is stored once");

    // Delete a tag (REST), a manifest by digest (skopeo) and a whole repository (REST).
    let rid1 = api.repository_id(one, &r1).await;
    api.call(
        Method::DELETE,
        &format!("/projects/{one}/registry/repositories/{rid1}/tags/v2"),
        None,
    )
    .await;
    let solo = remote(&r2, &built["solo"].digest);
    c.skopeo(&["delete", "--tls-verify=false", "--creds", &creds, &solo]).ok();
    let rid3 = api.repository_id(two, &r3).await;
    let (status, body) = api
        .request(Method::DELETE, &format!("/projects/{two}/registry/repositories/{rid3}"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let jobs = server.await_jobs("repository_delete", 1);
    assert_eq!(jobs[0]["state"], "succeeded", "{}", jobs[0]);
    assert_eq!(server.stored_blobs(), pushed, "deletes free nothing before GC");

    let alive = [(&r1, "v1", "app1"), (&r1, "base", "base"), (&r2, "v1", "app1")];
    let referenced: BTreeSet<String> =
        alive.iter().flat_map(|(_, _, name)| built[name].blobs.clone()).collect();
    let run = server.run_gc(&["--min-age", "0s"]);
    assert_eq!(server.stored_blobs(), referenced, "exactly the referenced blobs stay:\n{run}");
    // app2's own layer and config were used by r1:v2 and by r3 until both went.
    let freed: BTreeSet<_> = pushed.difference(&referenced).cloned().collect();
    assert!(built["app2"].blobs.iter().filter(|b| freed.contains(*b)).count() == 2, "{freed:?}");
    // GC removed r1:v2's manifest, untagged; the others went with their deletes.
    assert_removed(&server.gc_status(), 1, freed.len());

    // Everything left copies back out, digests intact; what was deleted does not.
    for (i, (repo, tag, name)) in alive.iter().enumerate() {
        let out = c.path(&format!("back-{i}"));
        let to = format!("oci:{}:{tag}", out.to_str().unwrap());
        c.skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &remote(repo, tag),
            &to,
        ])
        .ok();
        assert_eq!(layout_image(&out, tag).digest, built[name].digest, "{repo}:{tag}");
        for blob in &built[name].blobs {
            oci_layout_blob(&out, blob);
        }
    }
    for gone in [remote(&r1, "v2"), remote(&r3, "v1"), solo] {
        c.skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &gone]).failed();
    }
}

// ---- 2: a multi-arch index, its children and signatures ------------------------------------

const SIGNATURE: &str = "application/vnd.example.signature.v1";

/// A signature (an artifact manifest with `subject`) pushed by digest.
struct Signature {
    digest: String,
    payload: String,
    bytes: Vec<u8>,
}

impl Signature {
    async fn push(r: &Registry, repo: &str, subject: Value) -> Signature {
        let payload = random_bytes(100);
        let payload_digest = r.push_blob(repo, &payload).await;
        let mut m = oci_image_manifest(
            empty_descriptor(),
            vec![descriptor("application/octet-stream", &payload)],
        );
        m["artifactType"] = json!(SIGNATURE);
        m["subject"] = subject;
        let bytes = to_bytes(&m);
        let digest = sha256_digest(&bytes);
        r.push_manifest(repo, &digest, OCI_MANIFEST, &bytes).await;
        Signature { digest, payload: payload_digest, bytes }
    }

    fn descriptor(&self) -> Value {
        descriptor(OCI_MANIFEST, &self.bytes)
    }
}

async fn an_index_tag_delete_collects_children_and_signatures(backend: MetaBackend) {
    let mut r = Registry::start(backend);
    let repo = unique_repo("index");
    let amd = r.push_image(&repo, None).await;
    let arm = r.push_image(&repo, Some("arm")).await; // a child that is tagged too
    let live = r.push_image(&repo, Some("live")).await;
    let on = |image: &Image, arch: &str| {
        let mut d = image.descriptor();
        d["platform"] = json!({ "architecture": arch, "os": "linux" });
        d
    };
    let index = to_bytes(&oci_index(vec![on(&amd, "amd64"), on(&arm, "arm64")]));
    let index_digest = r.push_manifest(&repo, "multi", OCI_INDEX, &index).await;
    r.push_blob(&repo, b"{}").await; // the empty config every signature uses
    let on_index = Signature::push(&r, &repo, descriptor(OCI_INDEX, &index)).await;
    let on_index_sig = Signature::push(&r, &repo, on_index.descriptor()).await;
    let on_amd = Signature::push(&r, &repo, amd.descriptor()).await;
    let on_arm = Signature::push(&r, &repo, arm.descriptor()).await;
    let on_live = Signature::push(&r, &repo, live.descriptor()).await;

    let resp = r.delete(&format!("/v2/{repo}/manifests/multi")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let everything = r.server.stored_blobs();
    let run = r.server.run_gc(&["--min-age", "0s"]);

    for (what, digest) in [
        ("the index", &index_digest),
        ("its untagged child", &amd.digest),
        ("the index's signature", &on_index.digest),
        ("a signature of that signature", &on_index_sig.digest),
        ("the untagged child's signature", &on_amd.digest),
    ] {
        let status = r.get_manifest(&repo, digest).await.status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{what} {digest} is still there:\n{run}");
    }
    for (what, reference) in [
        ("the tagged child", &arm.digest),
        ("the tagged child's signature", &on_arm.digest),
        ("the live image", &live.digest),
        ("the live image's signature", &on_live.digest),
    ] {
        let status = r.get_manifest(&repo, reference).await.status();
        assert_eq!(status, StatusCode::OK, "{what} {reference} was collected:\n{run}");
    }
    let kept: BTreeSet<String> = [
        &arm.config_digest,
        &arm.layer_digest,
        &live.config_digest,
        &live.layer_digest,
        &on_arm.payload,
        &on_live.payload,
    ]
    .into_iter()
    .cloned()
    .chain([EMPTY_DIGEST.to_string()])
    .collect();
    assert_eq!(r.server.stored_blobs(), kept, "exactly the blobs of what lives stay:\n{run}");
    for gone in [&amd.layer_digest, &amd.config_digest, &on_index.payload, &on_amd.payload] {
        assert!(everything.contains(gone), "{gone} was stored before GC");
        assert_eq!(r.blob_status(&repo, gone).await, StatusCode::NOT_FOUND, "{gone}");
    }
    for blob in &kept {
        assert_eq!(r.blob_status(&repo, blob).await, StatusCode::OK, "{blob}");
    }
    // Live subjects keep their referrers.
    for (subject, signature) in [(&arm.digest, &on_arm.digest), (&live.digest, &on_live.digest)] {
        let listed = json_body(r.get(&format!("/v2/{repo}/referrers/{subject}")).await).await;
        let digests: Vec<&str> = listed["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["digest"].as_str())
            .collect();
        assert_eq!(digests, [signature.as_str()], "{listed}");
    }
    assert_removed(&r.server.gc_status(), 5, everything.len() - kept.len());
}

// ---- 3: pushes reusing layers race tag deletes and the online workers ----------------------

/// Pushes `blobs` (skipping those the registry says it has, as clients do) and the manifest;
/// `Err` when the registry no longer has a blob the manifest needs (GC took it between the
/// check and the manifest): the client pushes again.
async fn push_like_a_client(
    r: &Registry,
    repo: &str,
    tag: &str,
    blobs: &[&[u8]],
    manifest: &[u8],
) -> Result<(), String> {
    for blob in blobs {
        let digest = sha256_digest(blob);
        if r.blob_status(repo, &digest).await == StatusCode::OK {
            continue;
        }
        let location = r.start_upload(repo).await;
        let resp = r
            .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status != StatusCode::CREATED {
            let log = r.server.log();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
            panic!("upload {digest}: {status} {body}\n{}", errors.join("\n"));
        }
    }
    let resp = r.put_manifest(repo, tag, OCI_MANIFEST, manifest).await;
    match resp.status() {
        StatusCode::CREATED => Ok(()),
        StatusCode::INTERNAL_SERVER_ERROR => {
            panic!("PUT {repo}:{tag} failed with 500:\n{}", logged_errors(&r.server));
        }
        _ => {
            let body =
                assert_oci_error(resp, &[400, 404], &["MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"])
                    .await;
            Err(body.to_string())
        }
    }
}

/// The error lines of the server's log.
fn logged_errors(server: &TestServer) -> String {
    server.log().lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")
}

/// [`push_like_a_client`] until the push goes through (at most 50 times); returns how many
/// pushes GC refused first.
async fn push_until_it_sticks(
    r: &Registry,
    repo: &str,
    tag: &str,
    blobs: &[&[u8]],
    manifest: &[u8],
) -> usize {
    let mut refused = 0;
    while let Err(refusal) = push_like_a_client(r, repo, tag, blobs, manifest).await {
        refused += 1;
        assert!(refused < 50, "{repo}:{tag} refused 50 times: {refusal}");
    }
    refused
}

/// Every tag of `expected` pulls with its digest, every blob it needs is served with the right
/// bytes and is in storage, and each repository lists exactly the expected tags.
async fn assert_everything_pulls(r: &Registry, expected: &BTreeMap<(String, String), String>) {
    let repos: BTreeSet<&String> = expected.keys().map(|(repo, _)| repo).collect();
    for repo in repos {
        let want: Vec<String> =
            expected.keys().filter(|(r, _)| r == repo).map(|(_, t)| t.clone()).collect();
        let (mut listed, _) = r.tags(repo, "").await;
        listed.sort();
        assert_eq!(listed, want, "tags of {repo}");
    }
    for ((repo, tag), digest) in expected {
        let resp = r.get_manifest(repo, tag).await;
        assert_eq!(resp.status(), StatusCode::OK, "{repo}:{tag}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(&sha256_digest(&body), digest, "{repo}:{tag}");
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        for blob in blobs_of(&manifest) {
            assert!(r.server.blob_path(&blob).exists(), "{repo}:{tag} needs {blob}: not stored");
            let got = r.get(&format!("/v2/{repo}/blobs/{blob}")).await;
            assert_eq!(got.status(), StatusCode::OK, "{repo}:{tag} needs {blob}");
            assert_eq!(sha256_digest(&got.bytes().await.unwrap()), blob);
        }
    }
}

/// The manifest pusher `pusher` pushes in `round`: two of the three shared layers and the
/// shared config, told apart by an annotation (no new blob: with no review delay a blob
/// nothing references yet is collected before its manifest can arrive).
fn race_manifest(shared: &[Vec<u8>], config: &[u8], pusher: usize, round: usize) -> Vec<u8> {
    let mut m = oci_image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![
            descriptor(OCI_LAYER, &shared[round % 3]),
            descriptor(OCI_LAYER, &shared[(round + 1) % 3]),
        ],
    );
    m["annotations"] = json!({ "e2e.push": format!("{pusher}-{round}-{}", random_suffix()) });
    to_bytes(&m)
}

async fn pushes_racing_tag_deletes_and_online_gc_lose_nothing(backend: MetaBackend) {
    let fast = [
        ("STOWAGE_GC__REVIEWAFTER", "0s"),
        ("STOWAGE_GC__BLOBS__INTERVAL", "10ms"),
        ("STOWAGE_GC__MANIFESTS__INTERVAL", "10ms"),
        ("STOWAGE_GC__DISABLED", "true"),
    ];
    let mut registry = Registry::start_with(backend, &fast);
    let repos = [unique_repo("race-a"), unique_repo("race-b")];
    let shared: Arc<Vec<Vec<u8>>> = Arc::new((0..3).map(|_| random_bytes(4096)).collect());
    let config = Arc::new(config_json(&sha256_digest(&shared[0]), "race"));
    const PUSHERS: usize = 4;
    const ROUNDS: usize = 16;
    // Before GC runs, every pusher's three tags are pushed to both repositories: each shared
    // layer is referenced by several tags, which the race then moves and deletes.
    let blobs: Vec<&[u8]> =
        shared.iter().map(|l| l.as_slice()).chain([config.as_slice()]).collect();
    let mut initial: Vec<BTreeMap<(String, String), String>> = vec![BTreeMap::new(); PUSHERS];
    for (pusher, tags) in initial.iter_mut().enumerate() {
        for repo in &repos {
            for k in 0..3 {
                let manifest = race_manifest(&shared, &config, pusher, k);
                let tag = format!("p{pusher}-{k}");
                push_until_it_sticks(&registry, repo, &tag, &blobs, &manifest).await;
                tags.insert((repo.clone(), tag), sha256_digest(&manifest));
            }
        }
    }
    registry.server.restart_with(&[("STOWAGE_GC__DISABLED", "false")]);
    let r = Arc::new(registry);
    let mut tasks = Vec::new();
    for (pusher, mut expected) in initial.into_iter().enumerate() {
        let (r, shared, config, repos) = (r.clone(), shared.clone(), config.clone(), repos.clone());
        tasks.push(tokio::spawn(async move {
            // This pusher's tags and what they point at; no other pusher touches them.
            let mut untagged: Vec<(String, String)> = Vec::new();
            let mut retries = 0;
            let blobs: Vec<&[u8]> =
                shared.iter().map(|l| l.as_slice()).chain([config.as_slice()]).collect();
            for round in 0..ROUNDS {
                let repo = repos[(pusher + round) % 2].clone();
                let tag = format!("p{pusher}-{}", round % 3);
                let manifest = race_manifest(&shared, &config, pusher, round);
                retries += push_until_it_sticks(&r, &repo, &tag, &blobs, &manifest).await;
                let digest = sha256_digest(&manifest);
                if let Some(previous) = expected.insert((repo.clone(), tag.clone()), digest) {
                    untagged.push((repo.clone(), previous));
                }
                if round % 4 == 3 {
                    // Delete the tag pushed a round ago: its manifest is reviewed at once.
                    let key = (
                        repos[(pusher + round + 1) % 2].clone(),
                        format!("p{pusher}-{}", (round + 2) % 3),
                    );
                    if let Some(digest) = expected.remove(&key) {
                        let (repo, tag) = key;
                        let resp = r.delete(&format!("/v2/{repo}/manifests/{tag}")).await;
                        assert_eq!(resp.status(), StatusCode::ACCEPTED, "delete {repo}:{tag}");
                        untagged.push((repo, digest));
                    }
                }
                if round % 5 == 4 {
                    // Delete an untagged manifest by digest, unless GC was faster.
                    if let Some((repo, digest)) = untagged.pop() {
                        let resp = r.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
                        let status = resp.status();
                        assert!(
                            status == StatusCode::ACCEPTED || status == StatusCode::NOT_FOUND,
                            "delete {repo}@{digest}: {status}\n{}",
                            logged_errors(&r.server)
                        );
                    }
                }
            }
            (expected, retries)
        }));
    }
    let mut expected = BTreeMap::new();
    let mut retries = 0;
    for task in tasks {
        let (mine, n) = task.await.expect("pusher");
        expected.extend(mine);
        retries += n;
    }
    eprintln!("{} tags live; pushes retried after GC took a blob: {retries}", expected.len());
    assert_everything_pulls(&r, &expected).await;

    // Once the workers are idle, exactly the blobs of tagged manifests are left.
    let status = await_gc_idle(&r.server);
    assert_everything_pulls(&r, &expected).await;
    let mut referenced = BTreeSet::new();
    for (repo, tag) in expected.keys() {
        referenced.extend(blobs_of(&json_body(r.get_manifest(repo, tag).await).await));
    }
    assert_eq!(r.server.stored_blobs(), referenced);
    let hour = &status["removed"]["last_hour"];
    assert!(hour["manifests"].as_i64().unwrap() > 0, "GC ran during the pushes: {status}");
    assert_eq!(hour["failures"], 0, "{status}");
    let log = r.server.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("GC pass failed")).collect();
    assert!(failed.is_empty(), "a GC pass failed: {failed:#?}");
}

// ---- 4: two instances on one PostgreSQL --------------------------------------------------

/// Uploads `n` blobs of 64 random bytes, each in one request (POST with `?digest=`), eight at
/// a time; nothing references them. Returns their digests.
async fn upload_unreferenced_blobs(r: &Registry, repo: &str, n: usize) -> BTreeSet<String> {
    futures::stream::iter(0..n)
        .map(|_| async {
            let data = random_bytes(64);
            let digest = sha256_digest(&data);
            let resp = r
                .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
                .header("Content-Type", "application/octet-stream")
                .body(data)
                .send()
                .await
                .expect("monolithic upload");
            assert_eq!(resp.status(), StatusCode::CREATED, "upload {digest}");
            // An upload is protected for the push window (its manifest may still come);
            // unlinking it makes it due for review at once.
            let resp = r
                .req(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}"))
                .send()
                .await
                .expect("unlink");
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "unlink {digest}");
            digest
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// `psql -At -c sql` on `server`'s PostgreSQL database.
fn psql(server: &TestServer, sql: &str) -> String {
    let url = server
        .server_env()
        .into_iter()
        .find(|(k, _)| k == "STOWAGE_DATABASE_URL")
        .expect("a PostgreSQL server")
        .1;
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn two_instances_collect_each_item_exactly_once() {
    // The default review delay (24 h): the backlog waits until `gc run` marks it due; then the
    // online workers of both instances take it on together with two `gc run`s.
    let r = Registry::start_with(
        MetaBackend::Postgres,
        &[("STOWAGE_GC__BLOBS__INTERVAL", "20ms"), ("STOWAGE_GC__MANIFESTS__INTERVAL", "20ms")],
    );
    let sibling = r.server.start_sibling();
    let repo = unique_repo("two");
    // Each push moves tag `t`: nine manifests (and their config and layer) dangle.
    let mut images = Vec::new();
    for _ in 0..10 {
        images.push(r.push_image(&repo, Some("t")).await);
    }
    let kept = images.pop().unwrap();
    let bare = upload_unreferenced_blobs(&r, &repo, 300).await;
    let dangling_blobs = bare.len() + 2 * images.len();

    let runs: Vec<_> = [&r.server, &sibling]
        .iter()
        .map(|s| s.stowage_command(&["gc", "run", "--min-age", "0s"]).spawn().expect("gc run"))
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("gc run");
        assert!(out.status.success(), "gc run: {}", String::from_utf8_lossy(&out.stderr));
    }
    // What one instance's removal queued for later (the 24 h delay) after the other's run had
    // stopped marking is swept by one more pass.
    r.server.stowage(&["gc", "run", "--min-age", "0s"]);
    let status = r.server.gc_status();
    assert_eq!(status["review_queues"]["blobs"]["due"], 0, "{status}");
    assert_eq!(status["review_queues"]["manifests"]["due"], 0, "{status}");
    assert_eq!(status["storage_deletions"]["pending"], 0, "{status}");
    assert_removed(&status, images.len(), dangling_blobs);
    let twice = psql(
        &r.server,
        "SELECT kind || ' ' || digest FROM gc_events WHERE outcome = 'deleted' \
         GROUP BY kind, digest HAVING COUNT(*) > 1",
    );
    assert_eq!(twice, "", "deleted more than once");
    let counts = psql(
        &r.server,
        "SELECT kind || '=' || COUNT(*) FROM gc_events GROUP BY kind, outcome ORDER BY kind",
    );
    assert_eq!(
        counts,
        format!("blob={dangling_blobs}\nmanifest={}\nstorage={dangling_blobs}", images.len())
    );
    let expected = BTreeSet::from([kept.config_digest.clone(), kept.layer_digest.clone()]);
    assert_eq!(r.server.stored_blobs(), expected);
    for server in [&r.server, &sibling] {
        let log = server.log();
        assert!(!log.contains("ERROR") && !log.contains("GC pass failed"), "{log}");
    }
    let resp = r.get_manifest(&repo, "t").await;
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), kept.digest);
    drop(sibling);
}

// ---- 5: killed in the middle of a pass ------------------------------------------------------

const DELETED_A_BLOB: &str = "garbage collection deleted a blob";

async fn gc_killed_mid_pass_completes_after_restart(backend: MetaBackend) {
    let fast = [
        ("STOWAGE_GC__REVIEWAFTER", "0s"),
        ("STOWAGE_GC__BLOBS__INTERVAL", "10ms"),
        ("STOWAGE_GC__MANIFESTS__INTERVAL", "10ms"),
        ("STOWAGE_GC__DISABLED", "true"),
    ];
    let mut r = Registry::start_with(backend, &fast);
    let repo = unique_repo("kill");
    let mut kept = Vec::new();
    for tag in ["a", "b", "c"] {
        kept.push(r.push_image(&repo, Some(tag)).await);
    }
    const BACKLOG: usize = 2000;
    let backlog = upload_unreferenced_blobs(&r, &repo, BACKLOG).await;
    let referenced: BTreeSet<String> =
        kept.iter().flat_map(|i| [i.config_digest.clone(), i.layer_digest.clone()]).collect();
    assert_eq!(r.server.stored_blobs().len(), BACKLOG + referenced.len());

    // GC on: the workers start on the backlog at once; kill the server after the first batch.
    let logged_before = r.server.log().matches(DELETED_A_BLOB).count();
    r.server.restart_with(&[("STOWAGE_GC__DISABLED", "false")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.server.log().matches(DELETED_A_BLOB).count() == logged_before {
        assert!(Instant::now() < deadline, "GC deleted nothing within 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    r.server.kill();
    let status = r.server.gc_status();
    let left = status["review_queues"]["blobs"]["queued"].as_i64().unwrap();
    let removed = status["removed"]["last_hour"]["blobs"].as_i64().unwrap();
    assert!(left > 0 && removed > 0, "the kill did not hit the middle of the pass: {status}");
    for blob in &referenced {
        assert!(r.server.blob_path(blob).exists(), "{blob} is referenced");
    }

    r.restart();
    let status = await_gc_idle(&r.server);
    // Only the kept images' blobs stay queued: their pushes relied on them, which puts their
    // review after the push window.
    assert_eq!(status["review_queues"]["blobs"]["queued"], referenced.len() as i64, "{status}");
    assert_eq!(status["review_queues"]["blobs"]["due"], 0, "{status}");
    assert_removed(&status, 0, BACKLOG);
    assert_eq!(r.server.stored_blobs(), referenced, "the backlog is gone, nothing else");
    assert!(backlog.iter().all(|b| !r.server.blob_path(b).exists()));
    for (tag, image) in ["a", "b", "c"].iter().zip(&kept) {
        let resp = r.get_manifest(&repo, tag).await;
        assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), image.digest);
        for blob in [&image.config_digest, &image.layer_digest] {
            let got = r.get(&format!("/v2/{repo}/blobs/{blob}")).await;
            assert_eq!(sha256_digest(&got.bytes().await.unwrap()), *blob);
        }
    }
}

// ---- 6: a docker push at 100 % of the group's limit ---------------------------------------

/// Builds `addr/repo:tag` with docker: one layer of `size` random bytes.
fn docker_image(docker: &Dockerd, image: &str, size: usize) {
    let ctx = tempfile::Builder::new().prefix("stowage-docker-ctx-").tempdir().unwrap();
    std::fs::write(ctx.path().join("payload.bin"), random_bytes(size)).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY payload.bin /payload.bin\n")
        .unwrap();
    docker.build(image, ctx.path()).ok();
}

fn docker_quota_refuses_at_the_limit_and_gc_makes_room(backend: MetaBackend) {
    const LIMIT: i64 = 1_000_000;
    let mut server = start_auth_server(backend, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = GitLab::root(&server);
    let top = format!("dq{}", &random_suffix()[..8]);
    let (group_path, project) = rt.block_on(async {
        let group = api.create_group(&top, None, "private").await;
        let limit = json!({ "container_registry_storage_limit": LIMIT });
        api.call(Method::PUT, &format!("/groups/{group}"), Some(limit)).await;
        (format!("/groups/{group}"), api.create_project(group, "app", "private").await)
    });
    let group = || rt.block_on(api.call(Method::GET, &group_path, None));
    let addr = server.addr.clone();
    let docker = Dockerd::start(&addr);
    docker.docker(&["login", "-u", "root", "-p", ADMIN_PASSWORD, &addr]).ok();
    let image = |tag: &str| format!("{addr}/{top}/app:{tag}");

    // One layer each (plus a config of a few hundred bytes, and gzip's overhead): the group's
    // usage passes about 72, 86, 96.5 and 101.5 % — one threshold per push. The last push
    // starts below 100 % and may finish.
    for (i, (size, threshold)) in
        [(720_000, 70), (140_000, 85), (100_000, 95), (50_000, 100)].into_iter().enumerate()
    {
        let tag = format!("v{i}");
        docker_image(&docker, &image(&tag), size);
        docker.docker(&["push", &image(&tag)]).ok();
        let g = group();
        assert_eq!(g["container_registry_storage_notice"]["threshold"], threshold, "{g}");
        assert_eq!(
            server.logged_storage_notices(&top),
            [70, 85, 95, 100][..=i].to_vec(),
            "one notice per crossing"
        );
    }
    let usage = group()["container_registry_storage_usage"].as_i64().unwrap();
    assert!(usage >= LIMIT, "{usage}");

    // At 100 %: docker's push is refused, and says why and what to do.
    docker_image(&docker, &image("v4"), 10_000);
    let refused = docker.docker(&["push", &image("v4")]).failed().combined();
    for needle in [
        "denied".to_string(),
        format!("group {top}"),
        format!("({usage} bytes)"),
        format!("({LIMIT} bytes)"),
        "delete tags".into(),
    ] {
        assert!(refused.contains(&needle), "{needle:?} missing from:\n{refused}");
    }

    // A tag delete works at 100 %; GC frees its bytes; the push goes through.
    let rid = rt.block_on(api.repository_id(project, &format!("{top}/app")));
    let tag_url = format!("/projects/{project}/registry/repositories/{rid}/tags/v3");
    rt.block_on(api.call(Method::DELETE, &tag_url, None));
    assert_eq!(group()["container_registry_storage_usage"], usage, "GC frees the bytes");
    server.run_gc(&["--min-age", "0s"]);
    let after_gc = group()["container_registry_storage_usage"].as_i64().unwrap();
    assert!(after_gc < LIMIT && after_gc < usage - 50_000, "{after_gc}");
    docker.docker(&["push", &image("v4")]).ok();
    assert_eq!(server.logged_storage_notices(&top), vec![70, 85, 95, 100]);
}
