//! Three instances on one PostgreSQL database and one S3 bucket behave as one registry: a
//! client that sends each request to the next instance in turn pushes chunked uploads across
//! all three, sees a tag moved on one served moved by the others on the very next request,
//! docker and skopeo push and pull through a round-robin proxy, GC runs on all three and
//! removes each item once, and rate limits and login throttling are shared through Redis
//! (and degrade to per-instance limits, never to errors, when Redis is away).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use e2e::dockerd::Dockerd;
use e2e::round_robin::RoundRobinProxy;
use e2e::tools::Containers;
use e2e::{
    random_bytes, random_suffix, sha256_digest, unique_repo, BlobBackend, MetaBackend, TestServer,
};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;

/// Three instances; the siblings are dropped before the first, which owns the database.
struct Fleet {
    siblings: Vec<TestServer>,
    first: TestServer,
    http: Client,
    next: AtomicUsize,
}

impl Fleet {
    fn start(env: &[(&str, &str)]) -> Fleet {
        let first = TestServer::start_on(MetaBackend::Postgres, BlobBackend::S3, env);
        let siblings = vec![first.start_sibling(), first.start_sibling()];
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Fleet { siblings, first, http, next: AtomicUsize::new(0) }
    }

    fn instance(&self, i: usize) -> &TestServer {
        match i % 3 {
            0 => &self.first,
            n => &self.siblings[n - 1],
        }
    }

    fn instances(&self) -> [&TestServer; 3] {
        [self.instance(0), self.instance(1), self.instance(2)]
    }

    /// A request to instance `i`; `path` may be an absolute `Location` from another instance.
    fn at(&self, i: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.instance(i).url(&path_of(path)))
    }

    /// A request to the next instance in turn.
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.at(i, method, path)
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let resp = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let location = header(&resp, "location").unwrap();
        let resp = self
            .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());
        digest
    }

    async fn push_image(&self, repo: &str) -> Image {
        let image = Image::random(repo);
        self.push_blob(repo, &image.config).await;
        self.push_blob(repo, &image.layer).await;
        self.push_by_digest(repo, &image).await;
        image
    }

    async fn push_by_digest(&self, repo: &str, image: &Image) {
        self.tag_on(self.next.fetch_add(1, Ordering::Relaxed), repo, &image.digest, image).await;
    }

    async fn tag_on(&self, i: usize, repo: &str, reference: &str, image: &Image) {
        let resp = self
            .at(i, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());
    }

    /// The digest instance `i` serves for `repo:tag`, `None` on 404.
    async fn tag_digest_on(&self, i: usize, repo: &str, tag: &str) -> Option<String> {
        let resp = self
            .at(i, Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => {
                let dcd = header(&resp, "docker-content-digest").unwrap();
                let body = resp.bytes().await.unwrap();
                assert_eq!(sha256_digest(&body), dcd, "body and Docker-Content-Digest differ");
                Some(dcd)
            }
            other => panic!("GET {repo}:{tag} on instance {i}: {other}"),
        }
    }

    /// `psql` on the fleet's database.
    fn sql(&self, sql: &str) -> String {
        let url = self
            .first
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
}

/// A tag moved on one instance is served moved by every other on the next request: each
/// round first reads the tag on all three (so each has it cached), moves it on one, and reads
/// it back from all three at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_moves_are_served_moved_by_every_instance_at_once() {
    let fleet = Fleet::start(&[]);
    let repo = unique_repo("fleet-tags");
    let images = [fleet.push_image(&repo).await, fleet.push_image(&repo).await];
    fleet.tag_on(0, &repo, "t", &images[0]).await;
    for round in 0..60 {
        let current = &images[round % 2];
        for i in 0..3 {
            let served = fleet.tag_digest_on(i, &repo, "t").await;
            assert_eq!(
                served.as_deref(),
                Some(current.digest.as_str()),
                "round {round}, instance {i} before the move"
            );
        }
        let moved = &images[(round + 1) % 2];
        let writer = round % 3;
        fleet.tag_on(writer, &repo, "t", moved).await;
        for i in [writer + 1, writer + 2, writer] {
            let served = fleet.tag_digest_on(i, &repo, "t").await;
            assert_eq!(
                served.as_deref(),
                Some(moved.digest.as_str()),
                "round {round}: moved on instance {writer}, instance {} served the old manifest",
                i % 3
            );
        }
    }
    // A deleted tag is gone everywhere at once; a re-created repository starts afresh.
    let resp =
        fleet.at(1, Method::DELETE, &format!("/v2/{repo}/manifests/t")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for i in 0..3 {
        assert_eq!(fleet.tag_digest_on(i, &repo, "t").await, None, "instance {i} after delete");
    }
}

/// One blob uploaded in chunks, each request to the next instance: POST on one, PATCHes on
/// the others, PUT on yet another; every instance serves the whole blob and its ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_span_instances() {
    let fleet = Fleet::start(&[]);
    let repo = unique_repo("fleet-chunks");
    let data = random_bytes(5 * 1024 * 1024 + 123);
    let digest = sha256_digest(&data);
    let resp = fleet
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut location = header(&resp, "location").unwrap();
    let chunk = 1024 * 1024 + 7;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let resp = fleet
            .req(Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{}", end - 1))
            .body(data[offset..end].to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "chunk at {offset}: {}",
            resp.text().await.unwrap()
        );
        assert_upload_range(&resp, end as u64 - 1);
        location = header(&resp, "location").unwrap();
        offset = end;
    }
    let resp = fleet
        .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());
    for i in 0..3 {
        let resp =
            fleet.at(i, Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "instance {i}");
        assert_eq!(resp.bytes().await.unwrap(), data, "instance {i}");
        let resp = fleet
            .at(i, Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .header("range", "bytes=1048570-1048580")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "instance {i}");
        assert_eq!(resp.bytes().await.unwrap(), data[1048570..=1048580], "instance {i}");
    }
    // A manifest over it, pushed on the next instance, is served by all.
    let config = config_json(&digest, "fleet");
    fleet.push_blob(&repo, &config).await;
    let manifest = to_bytes(&oci_image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &data)],
    ));
    let resp = fleet
        .req(Method::PUT, &format!("/v2/{repo}/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for i in 0..3 {
        assert_eq!(fleet.tag_digest_on(i, &repo, "v1").await, Some(sha256_digest(&manifest)));
    }
}

/// skopeo copies a multi-layer image in and back out through a proxy that sends each
/// connection to the next instance; docker pushes and pulls another the same way.
#[test]
fn skopeo_and_docker_through_a_round_robin_proxy() {
    let fleet = Fleet::start(&[]);
    let [a, b, c] = fleet.instances();
    let proxy = RoundRobinProxy::start(&[&a.addr, &b.addr, &c.addr]);

    let tools = Containers::new();
    let layers: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(300 * 1024 + i)).collect();
    tools.build_scratch_image("localhost/fleet-base:v1", "amd64", &[("/one.bin", &layers[0])]);
    tools.build_image(
        "localhost/fleet-mid:v1",
        "localhost/fleet-base:v1",
        "amd64",
        &[("/two.bin", &layers[1])],
    );
    tools.build_image(
        "localhost/fleet:v1",
        "localhost/fleet-mid:v1",
        "amd64",
        &[("/three.bin", &layers[2])],
    );
    let layout = tools.path("layout");
    let layout_s = layout.to_str().unwrap().to_string();
    tools.buildah(&["push", "localhost/fleet:v1", &format!("oci:{layout_s}:v1")]).ok();
    let image = format!("{}/{}", proxy.addr, unique_repo("fleet-skopeo"));
    tools
        .skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{layout_s}:v1"),
            &format!("docker://{image}:v1"),
        ])
        .ok();
    let back = tools.path("back");
    let back_s = back.to_str().unwrap().to_string();
    tools
        .skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}:v1"),
            &format!("oci:{back_s}:v1"),
        ])
        .ok();
    let manifests = e2e::tools::oci_layout_manifests(&back);
    let manifest: Value =
        serde_json::from_slice(&e2e::tools::oci_layout_blob(&back, &manifests[0].0)).unwrap();
    let pulled = manifest["layers"].as_array().unwrap();
    assert_eq!(pulled.len(), 3, "{manifest}");
    for layer in pulled {
        let digest = layer["digest"].as_str().unwrap();
        assert_eq!(sha256_digest(&e2e::tools::oci_layout_blob(&back, digest)), digest);
    }

    let docker = Dockerd::start(&proxy.addr);
    let ctx = tempfile::Builder::new().prefix("stowage-fleet-ctx-").tempdir().unwrap();
    let payload = random_bytes(256 * 1024);
    std::fs::write(ctx.path().join("payload.bin"), &payload).unwrap();
    std::fs::write(ctx.path().join("hello.txt"), format!("hello {}\n", random_suffix())).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY payload.bin /payload.bin\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let tag = format!("{}/{}:v1", proxy.addr, unique_repo("fleet-docker"));
    docker.build(&tag, ctx.path()).ok();
    let push = docker.docker(&["push", &tag]).ok().combined();
    assert_eq!(push.matches(": Pushed").count(), 2, "{push}");
    docker.docker(&["rmi", &tag]).ok();
    docker.docker(&["pull", &tag]).ok();
    let ctr = docker.docker(&["create", &tag, "/none"]).ok().stdout().trim().to_string();
    let out = ctx.path().join("out.bin");
    docker.docker(&["cp", &format!("{ctr}:/payload.bin"), out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    let used = proxy.connections();
    assert!(used.iter().all(|n| *n > 0), "every instance served connections: {used:?}");
}

/// GC workers run on all three instances at once; every dangling manifest and blob is
/// removed exactly once, and what is still tagged stays pullable from every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_on_every_instance_and_removes_each_item_once() {
    let fleet = Fleet::start(&[
        // Long enough for a push to reference its blobs before they are reviewed.
        ("STOWAGE_GC__REVIEWAFTER", "3s"),
        ("STOWAGE_GC__BLOBS__INTERVAL", "20ms"),
        ("STOWAGE_GC__MANIFESTS__INTERVAL", "20ms"),
    ]);
    let repo = unique_repo("fleet-gc");
    let mut images = Vec::new();
    for i in 0..9 {
        let image = fleet.push_image(&repo).await;
        fleet.tag_on(i, &repo, "t", &image).await;
        images.push(image);
    }
    let kept = images.pop().unwrap();
    // Eight manifests dangle, and their sixteen blobs after them: GC removes all of them.
    // (This once stopped at 10 of 16: review jitter of up to 60 s on a 3 s delay, since capped
    // at the delay itself.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let manifests = fleet
            .sql("SELECT COUNT(*) FROM gc_events WHERE outcome = 'deleted' AND kind = 'manifest'");
        let blobs =
            fleet.sql("SELECT COUNT(*) FROM gc_events WHERE outcome = 'deleted' AND kind = 'blob'");
        if manifests == "8" && blobs == "16" {
            break;
        }
        if std::time::Instant::now() > deadline {
            let queued = fleet.sql(
                "SELECT string_agg(digest || ' due ' || review_after || ' (' || event || ')', \
                 E'\\n') FROM gc_blob_review_queue",
            );
            panic!("GC did not finish: {manifests} manifests, {blobs} blobs; queued:\n{queued}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let twice = fleet.sql(
        "SELECT kind || ' ' || digest FROM gc_events WHERE outcome = 'deleted' \
         GROUP BY kind, digest HAVING COUNT(*) > 1",
    );
    assert_eq!(twice, "", "deleted more than once");
    for (i, gone) in images.iter().take(3).enumerate() {
        assert_eq!(fleet.tag_digest_on(i, &repo, "t").await, Some(kept.digest.clone()));
        for digest in [&kept.config_digest, &kept.layer_digest] {
            let resp = fleet
                .at(i, Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "instance {i}: {digest}");
        }
        let gone = &gone.digest;
        let resp =
            fleet.at(i, Method::GET, &format!("/v2/{repo}/manifests/{gone}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "instance {i}: {gone}");
    }
    for server in fleet.instances() {
        let log = server.log();
        assert!(!log.contains("ERROR"), "{log}");
    }
}

/// A client address of its own for one test, announced through `X-Forwarded-For` (the fleet
/// trusts the loopback proxy): keys in the shared Redis never collide with another test's.
fn fresh_client() -> String {
    let n: u32 = rand::random();
    format!("2001:db8:{:x}:{:x}::7", n >> 16, n & 0xffff)
}

async fn assert_too_many(resp: Response, surface: &str) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{surface}");
    let retry: u64 = header(&resp, "retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{surface}: {body}");
    if surface == "api" {
        assert!(body["message"].as_str().unwrap().starts_with("429 Too Many Requests"), "{body}");
    }
}

const LIMITS: [(&str, &str); 9] = [
    ("STOWAGE_AUTH__MODE", "token"),
    ("STOWAGE_ADMIN_PASSWORD", "a-long-fleet-password"),
    ("STOWAGE_HTTP__TRUSTED_PROXIES", "[127.0.0.1/32]"),
    ("STOWAGE_RATELIMIT__API__RATE", "0.05"),
    ("STOWAGE_RATELIMIT__API__BURST", "4"),
    ("STOWAGE_RATELIMIT__PUSH__RATE", "0.05"),
    ("STOWAGE_RATELIMIT__PUSH__BURST", "4"),
    ("STOWAGE_RATELIMIT__TOKEN__RATE", "100"),
    ("STOWAGE_RATELIMIT__TOKEN__BURST", "100"),
];

/// With Redis, the three instances share one allowance per client (and per credential):
/// four API requests and four pushes in all, whichever instance each reaches; failed logins
/// counted on one instance block the same client on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_login_throttling_are_shared_through_redis() {
    let mut env = LIMITS.to_vec();
    env.push(("STOWAGE_REDIS__ADDR", "127.0.0.1:6379"));
    let fleet = Fleet::start(&env);
    let client = fresh_client();
    for n in 0..4 {
        let resp = fleet
            .req(Method::GET, "/api/v4/version")
            .header("x-forwarded-for", &client)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "API request {n}");
    }
    let resp = fleet
        .req(Method::GET, "/api/v4/version")
        .header("x-forwarded-for", &client)
        .send()
        .await
        .unwrap();
    assert_too_many(resp, "api").await;
    // Another client is not affected.
    let other = fresh_client();
    let resp = fleet
        .req(Method::GET, "/api/v4/version")
        .header("x-forwarded-for", &other)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // Pushes count apart from the API, in OCI's error format.
    for n in 0..4 {
        let resp = fleet
            .req(Method::POST, "/v2/x/y/blobs/uploads/")
            .header("x-forwarded-for", &client)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "push {n}");
    }
    let resp = fleet
        .req(Method::POST, "/v2/x/y/blobs/uploads/")
        .header("x-forwarded-for", &client)
        .send()
        .await
        .unwrap();
    assert_too_many(resp, "v2").await;
    // Pulls are not limited by default.
    for _ in 0..10 {
        let resp =
            fleet.req(Method::GET, "/v2/").header("x-forwarded-for", &client).send().await.unwrap();
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    // Ten failed logins for root from one client, spread over the fleet: the eleventh is
    // throttled on every instance, and root from elsewhere still logs in.
    let login = fresh_client();
    for n in 0..10 {
        let resp = fleet
            .req(Method::GET, "/jwt/auth?service=container_registry")
            .basic_auth("root", Some("wrong"))
            .header("x-forwarded-for", &login)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "failed login {n}");
    }
    for i in 0..3 {
        let resp = fleet
            .at(i, Method::GET, "/jwt/auth?service=container_registry")
            .basic_auth("root", Some("a-long-fleet-password"))
            .header("x-forwarded-for", &login)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "instance {i}");
    }
    let resp = fleet
        .req(Method::GET, "/jwt/auth?service=container_registry")
        .basic_auth("root", Some("a-long-fleet-password"))
        .header("x-forwarded-for", fresh_client())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Redis configured but unreachable: nothing fails; each instance limits on its own (four
/// requests per instance), quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_instance_limits_on_its_own_and_nothing_fails() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{closed}");
    let mut env = LIMITS.to_vec();
    env.push(("STOWAGE_REDIS__ADDR", &addr));
    let fleet = Fleet::start(&env);
    let client = fresh_client();
    let started = std::time::Instant::now();
    let mut allowed = 0;
    for _ in 0..15 {
        let resp = fleet
            .req(Method::GET, "/api/v4/version")
            .header("x-forwarded-for", &client)
            .send()
            .await
            .unwrap();
        assert!(resp.status().as_u16() < 500, "{}", resp.status());
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 12, "four per instance");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let resp = fleet
        .req(Method::GET, "/jwt/auth?service=container_registry")
        .basic_auth("root", Some("a-long-fleet-password"))
        .header("x-forwarded-for", fresh_client())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(fleet.first.log().contains("Redis is unavailable"));
}
