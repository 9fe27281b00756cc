//! `stowage import` as an operator runs it: a local distribution 2.8 (Debian's
//! `docker-registry`, behind a counting proxy) holds several repositories — a plain image with
//! two tags, a multi-arch index, an image with a referrer (kept by the referrers tag schema, as
//! oras does on registries without the referrers API) and a name too deep for the target —
//! and `stowage import` copies them into a project of a running `stowage serve`, which serves
//! them at once, digest for digest.

use std::io::Write;
use std::process::{Output, Stdio};

use e2e::gitlab::{
    http_client, level, repo_scope, start_auth_server, token_for, GitLab, ADMIN_PASSWORD,
};
use e2e::upstream::{CountingProxy, Distribution, Pusher};
use e2e::{backend_tests, random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    imports_repositories_digest_for_digest,
    resumes_after_a_failure_without_copying_twice,
    bad_arguments_are_refused_clearly,
    imports_from_another_stowage_with_token_auth,
    mirror_follows_an_upstream_repository,
);

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn import(server: &TestServer, args: &[&str]) -> Output {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    server.stowage_command(&all).output().expect("run stowage import")
}

fn project(server: &TestServer, group: &str, project: &str) {
    server.stowage(&["admin", "groups", "create", group]);
    server.stowage(&["admin", "projects", "create", &format!("{group}/{project}")]);
}

/// An image manifest (config + one layer) pushed by digest; returns (digest, bytes).
async fn push_untagged_image(up: &Pusher, name: &str, arch: &str) -> (String, Vec<u8>) {
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let layer = random_bytes(2048);
    let config_digest = up.blob(name, &config).await;
    let layer_digest = up.blob(name, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    up.manifest(name, &digest, OCI_MANIFEST, &manifest).await;
    (digest, manifest)
}

/// What the upstream holds, as pushed.
struct Upstream {
    svc_v1: e2e::upstream::PushedImage,
    svc_v2: e2e::upstream::PushedImage,
    index: (String, Vec<u8>),
    children: Vec<String>,
    signed: e2e::upstream::PushedImage,
    referrer: (String, Vec<u8>),
    shared_layer: String,
}

async fn fill(up: &Pusher) -> Upstream {
    let svc_v1 = up.push_image("team/svc", "v1", 4096).await;
    let svc_v2 = up.push_image("team/svc", "v2", 4096).await;
    let amd = push_untagged_image(up, "team/multi", "amd64").await;
    let arm = push_untagged_image(up, "team/multi", "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.0, "size": amd.1.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.0, "size": arm.1.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    up.manifest("team/multi", "latest", OCI_INDEX, &index).await;
    let signed = up.push_image("signed", "v1", 1024).await;
    // An SBOM whose subject is signed:v1, and the referrers tag schema's index listing it.
    let empty = up.blob("signed", b"{}").await;
    let sbom = random_bytes(300);
    let sbom_digest = up.blob("signed", &sbom).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.sbom.v1+json",
                    "digest": sbom_digest, "size": sbom.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": signed.digest,
                    "size": signed.manifest.len()},
    }))
    .unwrap();
    let referrer_digest = sha256_digest(&referrer);
    up.manifest("signed", &referrer_digest, OCI_MANIFEST, &referrer).await;
    let tag_index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": referrer_digest,
                       "size": referrer.len(),
                       "artifactType": "application/vnd.example.sbom.v1"}],
    }))
    .unwrap();
    let fallback_tag = signed.digest.replacen(':', "-", 1);
    up.manifest("signed", &fallback_tag, OCI_INDEX, &tag_index).await;
    // Two tags sharing a large layer: copied at once, it is still downloaded once.
    let shared = random_bytes(4 << 20);
    let shared_digest = up.blob("team/shared", &shared).await;
    for tag in ["a", "b"] {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
        let config_digest = up.blob("team/shared", config.as_bytes()).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": shared_digest, "size": shared.len()}],
        }))
        .unwrap();
        up.manifest("team/shared", tag, OCI_MANIFEST, &manifest).await;
    }
    // Four levels below the project: too deep without --flatten.
    up.push_image("a/b/c/d", "v1", 512).await;
    Upstream {
        svc_v1,
        svc_v2,
        index: (sha256_digest(&index), index),
        children: vec![amd.0, arm.0],
        signed,
        referrer: (referrer_digest, referrer),
        shared_layer: shared_digest,
    }
}

async fn get(http: &reqwest::Client, server: &TestServer, path: &str) -> reqwest::Response {
    http.get(server.url(path)).header("accept", ACCEPT).send().await.unwrap()
}

/// Asserts that `name:reference` is served with exactly `bytes` and digest `digest`.
async fn assert_manifest(
    http: &reqwest::Client,
    server: &TestServer,
    name: &str,
    reference: &str,
    digest: &str,
    bytes: &[u8],
) {
    let r = get(http, server, &format!("/v2/{name}/manifests/{reference}")).await;
    assert_eq!(r.status(), 200, "GET {name}:{reference}");
    let served = r.headers()["docker-content-digest"].to_str().unwrap().to_string();
    assert_eq!(served, digest, "{name}:{reference} keeps its digest");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes, "{name}:{reference} keeps its bytes");
}

async fn catalog(http: &reqwest::Client, server: &TestServer) -> Vec<String> {
    let r = get(http, server, "/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

async fn imports_repositories_digest_for_digest(backend: MetaBackend) {
    let distribution = Distribution::start().await;
    let counter = CountingProxy::start(&distribution.base).await;
    let up = Pusher::new(&distribution.base, None);
    let pushed = fill(&up).await;
    let server = TestServer::start(backend);
    project(&server, "acme", "app");
    let http = reqwest::Client::new();

    // A dry run lists what would be copied and writes nothing.
    let out = import(
        &server,
        &["--from", &counter.base, "--into", "acme/app", "--repository", "team/*", "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "would copy team/svc:v1 -> acme/app/team/svc:v1 ({})",
            pushed.svc_v1.digest
        )),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("team/multi:latest -> acme/app/team/multi:latest"), "{}", text(&out));
    assert!(!stdout.contains("signed"), "only the pattern's repositories: {}", text(&out));
    assert!(catalog(&http, &server).await.is_empty(), "a dry run writes nothing");
    let blob_gets: usize =
        counter.seen().iter().filter(|(k, _)| k.contains("/blobs/")).map(|(_, n)| n).sum();
    assert_eq!(blob_gets, 0, "a dry run downloads no blob: {:?}", counter.seen());

    // The whole catalog, into the project, while the server runs.
    let out = import(&server, &["--from", &counter.base, "--into", "acme/app", "--parallel", "3"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "the too-deep name is not imported: {all}");
    assert!(
        all.contains(
            "a/b/c/d would be acme/app/a/b/c/d, 4 levels below project acme/app; at most 3 are allowed"
        ),
        "{all}"
    );
    assert!(all.contains("import summary: 4 repositories (1 skipped); tags: 7 copied"), "{all}");
    assert!(all.contains("progress") || all.contains("copied team/svc:v1"), "{all}");

    // Digest for digest, served at once by the running server.
    assert_manifest(
        &http,
        &server,
        "acme/app/team/svc",
        "v1",
        &pushed.svc_v1.digest,
        &pushed.svc_v1.manifest,
    )
    .await;
    assert_manifest(
        &http,
        &server,
        "acme/app/team/svc",
        "v2",
        &pushed.svc_v2.digest,
        &pushed.svc_v2.manifest,
    )
    .await;
    assert_manifest(
        &http,
        &server,
        "acme/app/team/multi",
        "latest",
        &pushed.index.0,
        &pushed.index.1,
    )
    .await;
    for child in &pushed.children {
        let r = get(&http, &server, &format!("/v2/acme/app/team/multi/manifests/{child}")).await;
        assert_eq!(r.status(), 200, "index child {child}");
    }
    assert_manifest(
        &http,
        &server,
        "acme/app/signed",
        "v1",
        &pushed.signed.digest,
        &pushed.signed.manifest,
    )
    .await;
    assert_manifest(
        &http,
        &server,
        "acme/app/signed",
        &pushed.referrer.0,
        &pushed.referrer.0,
        &pushed.referrer.1,
    )
    .await;
    // A real client sees the index byte for byte.
    e2e::tools::require_tool("skopeo", "skopeo");
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/acme/app/team/multi:latest", server.addr))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", text(&raw));
    assert_eq!(raw.stdout, pushed.index.1, "skopeo inspect --raw");
    let layer =
        get(&http, &server, &format!("/v2/acme/app/team/svc/blobs/{}", pushed.svc_v1.layer)).await;
    assert_eq!(layer.status(), 200);
    assert_eq!(layer.bytes().await.unwrap().as_ref(), &pushed.svc_v1.layer_bytes[..]);
    // The referrer is found through this registry's referrers API.
    let r = get(&http, &server, &format!("/v2/acme/app/signed/referrers/{}", pushed.signed.digest))
        .await;
    assert_eq!(r.status(), 200);
    let referrers: Value = r.json().await.unwrap();
    let listed: Vec<&str> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![pushed.referrer.0.as_str()], "{referrers}");
    let mut names = catalog(&http, &server).await;
    names.sort();
    assert_eq!(
        names,
        ["acme/app/signed", "acme/app/team/multi", "acme/app/team/shared", "acme/app/team/svc"]
    );
    let shared_path = format!("/v2/team/shared/blobs/{}", pushed.shared_layer);
    assert_eq!(counter.count("GET", &shared_path), 1, "one download: {:?}", counter.seen());

    // Again with --flatten: the deep name lands as a/b/c-d; everything else is up to date and
    // not downloaded again.
    let layer_path = format!("/v2/team/svc/blobs/{}", pushed.svc_v1.layer);
    assert_eq!(counter.count("GET", &layer_path), 1, "{:?}", counter.seen());
    let out = import(&server, &["--from", &counter.base, "--into", "acme/app", "--flatten"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("tags: 1 copied, 7 up to date, 0 failed"), "{all}");
    assert!(all.contains("copied a/b/c/d:v1 -> acme/app/a/b/c-d:v1"), "{all}");
    assert_eq!(counter.count("GET", &layer_path), 1, "not downloaded twice: {:?}", counter.seen());
    let r = get(&http, &server, "/v2/acme/app/a/b/c-d/manifests/v1").await;
    assert_eq!(r.status(), 200);
}

async fn resumes_after_a_failure_without_copying_twice(backend: MetaBackend) {
    let distribution = Distribution::start().await;
    let counter = CountingProxy::start(&distribution.base).await;
    let up = Pusher::new(&distribution.base, None);
    let one = up.push_image("app", "one", 8192).await;
    let two = up.push_image("app", "two", 8192).await;
    let three = up.push_image("app", "three", 8192).await;
    // Half way: the upstream has lost one layer (its blob is deleted), so tag two fails.
    let deleted =
        up.http.delete(format!("{}/v2/app/blobs/{}", up.base, two.layer)).send().await.unwrap();
    assert_eq!(deleted.status(), 202, "blob delete on distribution");
    let mut server = TestServer::start(backend);
    project(&server, "acme", "app");
    let http = reqwest::Client::new();

    let out =
        import(&server, &["--from", &counter.base, "--repository", "app", "--into", "acme/app"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("tags: 2 copied, 0 up to date, 1 failed"), "{all}");
    assert!(
        all.contains(&format!(
            "not imported: app:two: blob {} of app is not in the upstream",
            two.layer
        )),
        "{all}"
    );
    assert_manifest(&http, &server, "acme/app/app", "one", &one.digest, &one.manifest).await;
    assert_manifest(&http, &server, "acme/app/app", "three", &three.digest, &three.manifest).await;
    let r = get(&http, &server, "/v2/acme/app/app/manifests/two").await;
    assert_eq!(r.status(), 404, "nothing half written for the failed tag");
    // Its config blob was copied before the layer failed; the re-run links it, not downloads.
    let config_path = format!("/v2/app/blobs/{}", two.config);
    let config_gets = counter.count("GET", &config_path);

    // The upstream is whole again; the re-run copies only what is missing.
    up.blob("app", &two.layer_bytes).await;
    let out =
        import(&server, &["--from", &counter.base, "--repository", "app", "--into", "acme/app"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("tags: 1 copied, 2 up to date, 0 failed"), "{all}");
    assert!(all.contains("1 blobs downloaded"), "only the missing layer: {all}");
    assert_manifest(&http, &server, "acme/app/app", "two", &two.digest, &two.manifest).await;
    for image in [&one, &three] {
        let path = format!("/v2/app/blobs/{}", image.layer);
        assert_eq!(counter.count("GET", &path), 1, "{path} downloaded once: {:?}", counter.seen());
    }
    assert_eq!(counter.count("GET", &config_path), config_gets, "{:?}", counter.seen());

    // A tag moved upstream is moved here on the next run. SQLite mode is one process: beside
    // a serving process (which caches tags) the import adds tags but moves none, and says so.
    let moved = up.push_image("app", "one", 512).await;
    let args = ["--from", &counter.base, "--repository", "app", "--into", "acme/app"];
    if backend == MetaBackend::Sqlite {
        let out = import(&server, &args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(
            all.contains(&format!(
                "not imported: app:one: acme/app/app:one is {} here and {} upstream, and was not \
                 moved: a running `stowage serve` uses this SQLite database",
                one.digest, moved.digest
            )),
            "{all}"
        );
        assert_manifest(&http, &server, "acme/app/app", "one", &one.digest, &one.manifest).await;
        server.kill();
    }
    let out = import(&server, &args);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(&format!("({}; was {})", moved.digest, one.digest)), "{all}");
    if backend == MetaBackend::Sqlite {
        server.restart();
    }
    assert_manifest(&http, &server, "acme/app/app", "one", &moved.digest, &moved.manifest).await;
}

async fn bad_arguments_are_refused_clearly(backend: MetaBackend) {
    let distribution = Distribution::start().await;
    let up = Pusher::new(&distribution.base, None);
    up.push_image("team/svc", "v1", 256).await;
    let server = TestServer::start(backend);
    project(&server, "acme", "app");
    let http = reqwest::Client::new();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--from", &distribution.base, "--into", "nope/nothing"],
            "error: no group or project at nope/nothing: create it first",
        ),
        (
            &["--from", "http://127.0.0.1:9", "--into", "acme/app"],
            "error: cannot list the repositories of http://127.0.0.1:9/: the upstream registry failed",
        ),
        (&["--from", "ftp://example.com", "--into", "acme/app"], "is no registry URL"),
        (
            // Into a group: the first level of the name must be a project there.
            &["--from", &distribution.base, "--into", "acme", "--repository", "team/svc"],
            "team/svc would be acme/team/svc, but there is no project at acme/team: create it with \
             `stowage admin projects create acme/team`",
        ),
        (
            &["--from", &distribution.base, "--into", "acme/app", "--parallel", "0"],
            "invalid value '0' for '--parallel <PARALLEL>'",
        ),
    ];
    for (args, expected) in cases {
        let out = import(&server, args);
        let all = text(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {all}");
        assert!(all.contains(expected), "{args:?} should say {expected:?}: {all}");
        assert!(!all.contains("panicked"), "{all}");
    }
    assert!(catalog(&http, &server).await.is_empty(), "refused imports write nothing");
}

/// Another Stowage with token authentication as the upstream: the catalog and the pulls go
/// through its token service with the given credentials, and the referrer comes from its
/// referrers API (no fallback tag there).
async fn imports_from_another_stowage_with_token_auth(backend: MetaBackend) {
    let source = start_auth_server(backend, &[]);
    project(&source, "src", "app");
    let http = http_client();
    let scopes = [repo_scope("src/app/svc", "pull,push")];
    let token = token_for(&http, &source.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let up = Pusher::new(&source.base, Some(token));
    let image = up.push_image("src/app/svc", "v1", 2048).await;
    let empty = up.blob("src/app/svc", b"{}").await;
    let signature = random_bytes(100);
    let signature_digest = up.blob("src/app/svc", &signature).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream",
                    "digest": signature_digest, "size": signature.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.manifest.len()},
    }))
    .unwrap();
    let referrer_digest = sha256_digest(&referrer);
    up.manifest("src/app/svc", &referrer_digest, OCI_MANIFEST, &referrer).await;

    let server = TestServer::start(backend);
    project(&server, "acme", "app");
    let run = |password: &str| {
        let mut child = server
            .stowage_command(&[
                "import",
                "--from",
                &source.base,
                "--username",
                "root",
                "--password-stdin",
                "--into",
                "acme/app",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("wrong-password");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("cannot list the repositories of"), "{all}");
    assert!(all.contains("refused"), "{all}");

    let out = run(ADMIN_PASSWORD);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("tags: 1 copied, 0 up to date, 0 failed; 2 manifests (1 referrers)"),
        "{all}"
    );
    let http = reqwest::Client::new();
    let name = "acme/app/src/app/svc";
    assert_manifest(&http, &server, name, "v1", &image.digest, &image.manifest).await;
    assert_manifest(&http, &server, name, &referrer_digest, &referrer_digest, &referrer).await;
    let r = get(&http, &server, &format!("/v2/{name}/referrers/{}", image.digest)).await;
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["manifests"][0]["digest"], referrer_digest.as_str(), "{listed}");
}

/// A pull mirror follows a repository of a distribution 2.8: its runs (driven with
/// `stowage jobs run-due --at`, so each is due) copy the tags its filter matches, pick up a
/// new upstream tag on the next run, transfer only what changed, and are recorded.
async fn mirror_follows_an_upstream_repository(backend: MetaBackend) {
    let distribution = Distribution::start().await;
    let counter = CountingProxy::start(&distribution.base).await;
    let up = Pusher::new(&distribution.base, None);
    let v1 = up.push_image("team/svc", "v1", 4096).await;
    up.push_image("team/svc", "nightly", 256).await;
    let mut server =
        start_auth_server(backend, &[("STOWAGE_WEBHOOKS__ALLOW_LOCAL_REQUESTS", "true")]);
    project(&server, "acme", "app");
    let api = GitLab::root(&server);
    let mirrors = "/projects/acme%2Fapp/registry/mirrors";
    let upstream = format!("{}/team/svc", counter.base);

    // Bad input gets a 400 naming the field; nothing is saved.
    for (body, field) in [
        (json!({"upstream": upstream, "interval": "5s"}), "interval"),
        (json!({"upstream": upstream, "interval": "often"}), "interval"),
        (json!({"upstream": "ftp://example.com/team/svc"}), "upstream"),
        (json!({"upstream": format!("{}/", counter.base)}), "upstream"),
        (json!({"upstream": format!("{}/a/b/c/d", counter.base)}), "upstream"),
        (json!({"upstream": upstream, "tag_filter": "("}), "tag_filter"),
        (json!({}), "upstream"),
    ] {
        let (status, answer) = api.request(Method::POST, mirrors, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.to_string().contains(field), "{body}: {answer}");
    }
    // Developers may not manage mirrors; outsiders do not see the project.
    let dev = api.create_user(&format!("dev{}", &e2e::random_suffix()[..6])).await;
    let project: Value = api.call(Method::GET, "/projects/acme%2Fapp", None).await;
    let project_id = project["id"].as_i64().unwrap();
    api.add_member("projects", project_id, dev.id, level::DEVELOPER).await;
    let dev_api = GitLab::with_token(&server, &api.create_pat(&dev, &["api"]).await.token);
    let (status, _) =
        dev_api.request(Method::POST, mirrors, Some(json!({"upstream": upstream}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let outsider = api.create_user(&format!("out{}", &e2e::random_suffix()[..6])).await;
    let out_api = GitLab::with_token(&server, &api.create_pat(&outsider, &["api"]).await.token);
    let (status, _) = out_api.request(Method::GET, mirrors, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a private project is invisible to outsiders");
    let (_, listed) = api.request(Method::GET, mirrors, None).await;
    assert_eq!(listed, json!([]));

    let created = api
        .call(
            Method::POST,
            mirrors,
            Some(json!({"upstream": upstream, "tag_filter": "v[0-9]+", "interval": "1h"})),
        )
        .await;
    assert_eq!(created["repository"], "acme/app/team/svc", "{created}");
    assert_eq!(created["interval_seconds"], 3600, "{created}");
    let runs = format!("{mirrors}/{}/runs", created["id"]);

    server.run_due_jobs(Some("2099-01-01"));
    let http = reqwest::Client::new();
    // A restart (SQLite runs due jobs with the server stopped) keeps the port.
    let server_base = server.base.clone();
    let pull = |reference: &str| {
        let scopes = [repo_scope("acme/app/team/svc", "pull")];
        let http = http.clone();
        let base = server_base.clone();
        let reference = reference.to_string();
        async move {
            let token = token_for(&http, &base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
            http.get(format!("{base}/v2/acme/app/team/svc/manifests/{reference}"))
                .header("accept", ACCEPT)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let r = pull("v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), v1.digest);
    assert_eq!(pull("nightly").await.status(), 404, "the filter leaves nightly out");

    // A new upstream tag arrives with the next run; v1 is not transferred again.
    let v2 = up.push_image("team/svc", "v2", 4096).await;
    server.run_due_jobs(Some("2099-01-02"));
    let r = pull("v2").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), v2.digest);
    let layer = format!("/v2/team/svc/blobs/{}", v1.layer);
    assert_eq!(counter.count("GET", &layer), 1, "{:?}", counter.seen());
    let recorded = api.call(Method::GET, &runs, None).await;
    let last = &recorded[0];
    assert_eq!(last["tags_added"], 1, "{recorded}");
    assert_eq!(last["tags_unchanged"], 1, "{recorded}");
    assert_eq!(last["tags_failed"], 0, "{recorded}");
    assert!(last["bytes"].as_i64().unwrap() >= 4096, "{recorded}");
    assert!(last["error"].is_null(), "{recorded}");

    let path = format!("{mirrors}/{}", created["id"]);
    let (status, _) = api.request(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.request(Method::GET, &runs, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
