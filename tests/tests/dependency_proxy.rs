//! The dependency proxy (pull-through cache) as a client sees it: a real `stowage serve`
//! whose `dependency_proxy.upstream` is a local Debian `docker-registry` (distribution 2.8)
//! behind a counting proxy, or a second Stowage with token auth and credentials. Pulls go
//! through `/v2/<group>/dependency_proxy/containers/<image>` with tokens from `/jwt/auth`.

use std::time::Duration;

use e2e::dockerd::Dockerd;
use e2e::gitlab::{
    granted_actions, http_client, level, repo_scope, request_token, start_auth_server, token_for,
    GitLab, ADMIN_PASSWORD,
};
use e2e::tools::{oci_layout_blob, oci_layout_manifests, Containers};
use e2e::upstream::{CountingProxy, Distribution, Pusher, UpstreamMode};
use e2e::{backend_tests, random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A Stowage whose dependency proxy pulls from a distribution behind a counting proxy.
struct Setup {
    server: TestServer,
    api: GitLab,
    upstream: Pusher,
    counter: CountingProxy,
    distribution: Option<Distribution>,
    http: reqwest::Client,
}

async fn setup(backend: MetaBackend, env: &[(&str, &str)]) -> Setup {
    let distribution = Distribution::start().await;
    let counter = CountingProxy::start(&distribution.base).await;
    let mut all = vec![("STOWAGE_DEPENDENCY_PROXY__UPSTREAM", counter.base.as_str())];
    all.extend_from_slice(env);
    let server = start_auth_server(backend, &all);
    let api = GitLab::root(&server);
    Setup {
        upstream: Pusher::new(&distribution.base, None),
        server,
        api,
        counter,
        distribution: Some(distribution),
        http: http_client(),
    }
}

fn proxied(group: &str, image: &str) -> String {
    format!("{group}/dependency_proxy/containers/{image}")
}

impl Setup {
    async fn root_token(&self, name: &str) -> String {
        let scopes = [repo_scope(name, "pull")];
        token_for(&self.http, &self.server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await
    }

    async fn get(&self, token: Option<&str>, path: &str) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.server.base)).header("accept", ACCEPT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn manifest(&self, token: &str, name: &str, reference: &str) -> reqwest::Response {
        self.get(Some(token), &format!("/v2/{name}/manifests/{reference}")).await
    }

    async fn blob(&self, token: &str, name: &str, digest: &str) -> Vec<u8> {
        let r = self.get(Some(token), &format!("/v2/{name}/blobs/{digest}")).await;
        assert_eq!(r.status(), 200, "GET blob {digest} of {name}");
        r.bytes().await.unwrap().to_vec()
    }

    fn blob_gets(&self, image: &str, digest: &str) -> usize {
        self.counter.count("GET", &format!("/v2/{image}/blobs/{digest}"))
    }

    fn manifest_requests(&self, method: &str, image: &str, reference: &str) -> usize {
        self.counter.count(method, &format!("/v2/{image}/manifests/{reference}"))
    }
}

fn digest_header(r: &reqwest::Response) -> String {
    r.headers()["docker-content-digest"].to_str().unwrap().to_string()
}

/// A cold pull fetches from the upstream and streams; a warm pull is served from the cache
/// even with the upstream gone, and the image is an ordinary tagged image of the repository.
async fn cold_then_warm_pull(backend: MetaBackend) {
    let mut s = setup(backend, &[]).await;
    s.api.create_group("acme", None, "private").await;
    let image = s.upstream.push_image("alpine", "3", 3 * 1024 * 1024).await;
    let name = proxied("acme", "alpine");
    let token = s.root_token(&name).await;

    let r = s.manifest(&token, &name, "3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), image.digest);
    assert!(r.headers().get("warning").is_none());
    assert_eq!(r.bytes().await.unwrap().to_vec(), image.manifest, "the upstream's exact bytes");
    let layer = s.blob(&token, &name, &image.layer).await;
    assert_eq!(sha256_digest(&layer), image.layer);
    s.blob(&token, &name, &image.config).await;
    assert_eq!(s.blob_gets("alpine", &image.layer), 1);

    // Warm: the upstream is gone, everything is served from the cache.
    s.distribution.take();
    let r = s.manifest(&token, &name, "3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), image.digest);
    let r = s.manifest(&token, &name, &image.digest).await;
    assert_eq!(r.status(), 200, "by digest");
    assert_eq!(s.blob(&token, &name, &image.layer).await, layer);
    assert_eq!(s.blob_gets("alpine", &image.layer), 1, "warm pulls do not go upstream");
    assert_eq!(s.manifest_requests("GET", "alpine", "3"), 1);

    // The cache is an ordinary repository: the tag is listed, and usage counts its bytes.
    let tags = s.get(Some(&token), &format!("/v2/{name}/tags/list")).await;
    let tags: serde_json::Value = tags.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["3"]), "{tags}");
    let group = s.api.call(Method::GET, "/groups/acme?statistics=true", None).await;
    let used = group["statistics"]["container_registry_size"].as_i64().unwrap_or(-1);
    assert!(used >= 3 * 1024 * 1024, "usage counts the cached image: {group}");

    // Nobody writes through the proxy's names, not even an admin.
    let push = token_for(
        &s.http,
        &s.server.base,
        Some(("root", ADMIN_PASSWORD)),
        &[repo_scope(&name, "pull,push,delete")],
    )
    .await;
    assert_eq!(granted_actions(&push, &name), vec!["pull".to_string()]);
    s.server.terminate();
}

/// A tag revalidates with a HEAD after the ttl and follows a moved tag; when the upstream
/// fails (5xx, 429, down) the cached copy is served stale with a Warning; without a cached
/// copy the failure is reported as a clear error.
async fn revalidation_and_stale(backend: MetaBackend) {
    let s = setup(
        backend,
        &[
            ("STOWAGE_DEPENDENCY_PROXY__TTL", "1s"),
            ("STOWAGE_DEPENDENCY_PROXY__STALE_IF_ERROR", "1h"),
        ],
    )
    .await;
    s.api.create_group("acme", None, "public").await;
    let first = s.upstream.push_image("tool", "v1", 1024).await;
    let name = proxied("acme", "tool");
    let token = s.root_token(&name).await;
    let r = s.manifest(&token, &name, "v1").await;
    assert_eq!(digest_header(&r), first.digest);

    // Within the ttl: no upstream request at all.
    s.manifest(&token, &name, "v1").await;
    assert_eq!(s.manifest_requests("HEAD", "tool", "v1"), 0);
    assert_eq!(s.manifest_requests("GET", "tool", "v1"), 1);

    // After the ttl, unchanged: one HEAD, no GET.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = s.manifest(&token, &name, "v1").await;
    assert_eq!(digest_header(&r), first.digest);
    assert_eq!(s.manifest_requests("HEAD", "tool", "v1"), 1);
    assert_eq!(s.manifest_requests("GET", "tool", "v1"), 1);

    // The tag moves upstream: after the ttl the new digest is served.
    let second = s.upstream.push_image("tool", "v1", 1024).await;
    assert_ne!(first.digest, second.digest);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = s.manifest(&token, &name, "v1").await;
    assert_eq!(digest_header(&r), second.digest);
    assert_eq!(r.bytes().await.unwrap().to_vec(), second.manifest);

    // The upstream fails: stale with a warning, for 5xx, 429 and a dead upstream alike.
    for mode in [UpstreamMode::Fail(503), UpstreamMode::Fail(429), UpstreamMode::Down] {
        s.counter.set_mode(mode);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let r = s.manifest(&token, &name, "v1").await;
        assert_eq!(r.status(), 200, "{mode:?}");
        assert_eq!(digest_header(&r), second.digest, "{mode:?}");
        assert_eq!(
            r.headers().get("warning").map(|v| v.to_str().unwrap()),
            Some("110 - \"Response is Stale\""),
            "{mode:?}"
        );
    }
    assert!(s.server.log().contains("serving the cached manifest stale"));

    // Nothing cached: the failure itself, as an OCI error.
    s.counter.set_mode(UpstreamMode::Fail(429));
    let r = s.manifest(&token, &name, "never-pulled").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    s.counter.set_mode(UpstreamMode::Fail(502));
    let r = s.manifest(&token, &name, "never-pulled").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
    // A tag the upstream does not have.
    s.counter.set_mode(UpstreamMode::Forward);
    let r = s.manifest(&token, &name, "nope").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");
}

/// Eight clients pull the same uncached 24 MiB layer at once: one upstream fetch, and every
/// client gets every byte.
async fn concurrent_cold_pulls_fetch_once(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    s.api.create_group("acme", None, "private").await;
    let image = s.upstream.push_image("big", "latest", 24 * 1024 * 1024).await;
    let name = proxied("acme", "big");
    let token = s.root_token(&name).await;
    assert_eq!(s.manifest(&token, &name, "latest").await.status(), 200);
    let pulls = (0..8).map(|_| s.blob(&token, &name, &image.layer));
    for bytes in futures::future::join_all(pulls).await {
        assert_eq!(sha256_digest(&bytes), image.layer);
    }
    assert_eq!(s.blob_gets("big", &image.layer), 1, "{:?}", s.counter.seen());
    // And it stays cached.
    s.blob(&token, &name, &image.layer).await;
    assert_eq!(s.blob_gets("big", &image.layer), 1);
}

/// A multi-arch index comes through as an index; its platforms are pulled by digest.
async fn multi_arch_index(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    s.api.create_group("acme", None, "private").await;
    let amd = s.upstream.push_image_for("multi", "amd64", 2048, "amd64").await;
    let arm = s.upstream.push_image_for("multi", "arm64", 2048, "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.digest,
             "size": amd.manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.digest,
             "size": arm.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    s.upstream.manifest("multi", "latest", "application/vnd.oci.image.index.v1+json", &index).await;
    let name = proxied("acme", "multi");
    let token = s.root_token(&name).await;
    let r = s.manifest(&token, &name, "latest").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(digest_header(&r), sha256_digest(&index));
    assert_eq!(r.bytes().await.unwrap().to_vec(), index);
    for platform in [&amd, &arm] {
        let r = s.manifest(&token, &name, &platform.digest).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().to_vec(), platform.manifest);
        assert_eq!(sha256_digest(&s.blob(&token, &name, &platform.layer).await), platform.layer);
        s.blob(&token, &name, &platform.config).await;
    }
    let tags = s.get(Some(&token), &format!("/v2/{name}/tags/list")).await;
    let tags: serde_json::Value = tags.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["latest"]), "{tags}");
}

/// (who, credential, image name, may pull).
type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str, bool);

/// Who may pull through which group's proxy; private groups are invisible; the setting and
/// the cache purge are the owners'.
async fn permission_matrix(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    let public = s.api.create_group("pubg", None, "public").await;
    let private = s.api.create_group("privg", None, "private").await;
    let project = s.api.create_project(private, "app", "private").await;
    // A project at `<group>/dependency_proxy` must not make the proxy's names writable.
    s.api.create_project(private, "dependency_proxy", "private").await;
    let guest = s.api.create_user("guest").await;
    let outsider = s.api.create_user("outsider").await;
    let developer = s.api.create_user("dev").await;
    s.api.add_member("groups", private, guest.id, level::GUEST).await;
    s.api.add_member("groups", private, developer.id, level::DEVELOPER).await;
    let deploy =
        s.api.create_deploy_token("groups", private, "proxy-deploy", &["read_registry"]).await;
    let other_deploy =
        s.api.create_deploy_token("groups", public, "pub-deploy", &["read_registry"]).await;
    let job = s.api.create_job_token(project).await;
    s.upstream.push_image("alpine", "3", 1024).await;

    let private_name = proxied("privg", "alpine");
    let public_name = proxied("pubg", "alpine");
    let missing_name = proxied("nosuch", "alpine");
    let cases: Vec<Case> = vec![
        ("anonymous", None, public_name.as_str(), true),
        ("anonymous", None, private_name.as_str(), false),
        (
            "outsider",
            Some((outsider.username.as_str(), outsider.password.as_str())),
            public_name.as_str(),
            true,
        ),
        (
            "outsider",
            Some((outsider.username.as_str(), outsider.password.as_str())),
            private_name.as_str(),
            false,
        ),
        (
            "guest",
            Some((guest.username.as_str(), guest.password.as_str())),
            private_name.as_str(),
            true,
        ),
        (
            "developer",
            Some((developer.username.as_str(), developer.password.as_str())),
            private_name.as_str(),
            true,
        ),
        (
            "group deploy token",
            Some((deploy.username.as_str(), deploy.token.as_str())),
            private_name.as_str(),
            true,
        ),
        (
            "another group's deploy token",
            Some((other_deploy.username.as_str(), other_deploy.token.as_str())),
            private_name.as_str(),
            false,
        ),
        (
            "job token",
            Some((job.username.as_str(), job.token.as_str())),
            private_name.as_str(),
            true,
        ),
        ("root", Some(("root", ADMIN_PASSWORD)), missing_name.as_str(), false),
    ];
    for (who, cred, name, allowed) in &cases {
        let scopes = [repo_scope(name, "pull,push")];
        let token = request_token(&s.http, &s.server.base, *cred, &scopes)
            .await
            .unwrap_or_else(|e| panic!("{who}: no token: {e:?}"));
        let granted = granted_actions(&token, name);
        let expected: Vec<String> = if *allowed { vec!["pull".into()] } else { Vec::new() };
        assert_eq!(granted, expected, "{who} on {name}");
        let r = s.manifest(&token, name, "3").await;
        if *allowed {
            assert_eq!(r.status(), 200, "{who} pulls {name}");
        } else {
            assert_eq!(r.status(), 401, "{who} pulls {name}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "DENIED", "{who}: {body}");
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("dependency proxy serves pulls only"), "{who}: {body}");
        }
    }

    // A private group's proxy answers an outsider exactly like a group that does not exist.
    let cred = Some((outsider.username.as_str(), outsider.password.as_str()));
    let mut answers = Vec::new();
    for name in [&private_name, &missing_name] {
        let token = request_token(&s.http, &s.server.base, cred, &[repo_scope(name, "pull")])
            .await
            .unwrap();
        let r = s.manifest(&token, name, "3").await;
        let status = r.status();
        let challenge =
            r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        let norm = |t: &str| t.replace(name.as_str(), "<NAME>");
        answers.push((status, norm(&body), challenge.as_deref().map(norm)));
    }
    assert_eq!(answers[0], answers[1]);

    // Writes: refused to the group's developer and to root.
    for cred in
        [(developer.username.as_str(), developer.password.as_str()), ("root", ADMIN_PASSWORD)]
    {
        let scopes = [repo_scope(&private_name, "pull,push")];
        let token = token_for(&s.http, &s.server.base, Some(cred), &scopes).await;
        let r = s
            .http
            .post(format!("{}/v2/{private_name}/blobs/uploads/", s.server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{} pushes", cred.0);
        let body = r.text().await.unwrap();
        assert!(body.contains("dependency proxy serves pulls only"), "{body}");
    }

    // Turning the proxy off: only owners; then nobody pulls.
    let as_guest = GitLab::with_token(&s.server, &s.api.create_pat(&guest, &["api"]).await.token);
    let (status, _) = as_guest
        .request(
            Method::PUT,
            &format!("/groups/{private}/dependency_proxy"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = as_guest
        .request(Method::DELETE, &format!("/groups/{private}/dependency_proxy/cache"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v = s
        .api
        .call(
            Method::PUT,
            &format!("/groups/{private}/dependency_proxy"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(v["enabled"], false, "{v}");
    let cred = Some((guest.username.as_str(), guest.password.as_str()));
    let token = request_token(&s.http, &s.server.base, cred, &[repo_scope(&private_name, "pull")])
        .await
        .unwrap();
    assert!(granted_actions(&token, &private_name).is_empty());
    s.api
        .call(
            Method::PUT,
            &format!("/groups/{private}/dependency_proxy"),
            Some(json!({"enabled": true})),
        )
        .await;
    let token = request_token(&s.http, &s.server.base, cred, &[repo_scope(&private_name, "pull")])
        .await
        .unwrap();
    assert_eq!(s.manifest(&token, &private_name, "3").await.status(), 200);
}

/// Purging a group's cache removes its repositories; the next pull fetches again.
async fn purge_cache(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    let group = s.api.create_group("acme", None, "private").await;
    let image = s.upstream.push_image("alpine", "3", 1024).await;
    let name = proxied("acme", "alpine");
    let token = s.root_token(&name).await;
    s.manifest(&token, &name, "3").await;
    s.blob(&token, &name, &image.layer).await;
    s.blob(&token, &name, &image.config).await;
    let (status, _) = s
        .api
        .request(Method::DELETE, &format!("/groups/{group}/dependency_proxy/cache"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let tags = s.get(Some(&token), &format!("/v2/{name}/tags/list")).await;
    assert_eq!(tags.status(), 404, "the repository is gone");
    s.manifest(&token, &name, "3").await;
    assert_eq!(s.manifest_requests("GET", "alpine", "3"), 2);
    s.blob(&token, &name, &image.layer).await;
    assert_eq!(s.blob_gets("alpine", &image.layer), 2);
}

/// A private upstream with token auth (another Stowage): the proxy logs in with
/// `dependency_proxy.username`/`password`; wrong credentials fail cleanly.
async fn private_upstream_with_credentials(backend: MetaBackend) {
    let upstream = start_auth_server(backend, &[]);
    let up_api = GitLab::root(&upstream);
    let team = up_api.create_group("team", None, "private").await;
    up_api.create_project(team, "svc", "private").await;
    let deploy = up_api.create_deploy_token("groups", team, "mirror", &["read_registry"]).await;
    let http = http_client();
    let push = token_for(
        &http,
        &upstream.base,
        Some(("root", ADMIN_PASSWORD)),
        &[repo_scope("team/svc", "pull,push")],
    )
    .await;
    let image = Pusher::new(&upstream.base, Some(push)).push_image("team/svc", "1.0", 4096).await;

    for (password, works) in [(deploy.token.as_str(), true), ("wrong-password", false)] {
        let server = start_auth_server(
            backend,
            &[
                ("STOWAGE_DEPENDENCY_PROXY__UPSTREAM", upstream.base.as_str()),
                ("STOWAGE_DEPENDENCY_PROXY__USERNAME", deploy.username.as_str()),
                ("STOWAGE_DEPENDENCY_PROXY__PASSWORD", password),
            ],
        );
        GitLab::root(&server).create_group("acme", None, "private").await;
        let name = proxied("acme", "team/svc");
        let token = token_for(
            &http,
            &server.base,
            Some(("root", ADMIN_PASSWORD)),
            &[repo_scope(&name, "pull")],
        )
        .await;
        let r = http
            .get(format!("{}/v2/{name}/manifests/1.0", server.base))
            .header("accept", ACCEPT)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if works {
            assert_eq!(r.status(), 200);
            assert_eq!(digest_header(&r), image.digest);
            let blob = http
                .get(format!("{}/v2/{name}/blobs/{}", server.base, image.layer))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(sha256_digest(&blob.bytes().await.unwrap()), image.layer);
        } else {
            assert_eq!(r.status(), 503);
            let body = r.text().await.unwrap();
            assert!(body.contains("refused the proxy's credentials"), "{body}");
        }
        // The upstream credential never shows up in the proxy's log.
        assert!(!server.log().contains(&deploy.token));
    }
}

/// A registry (distribution) behind a counting proxy.
struct Counted {
    distribution: Distribution,
    counter: CountingProxy,
    pusher: Pusher,
}

async fn counted() -> Counted {
    let distribution = Distribution::start().await;
    let counter = CountingProxy::start(&distribution.base).await;
    let pusher = Pusher::new(&distribution.base, None);
    Counted { distribution, counter, pusher }
}

/// An API answer's body as text, for "never shows the password" checks.
async fn body_text(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// `dependency_proxy.upstreams` adds upstreams after `dependency_proxy.upstream`, tried in
/// order: the first that has an image serves it, a 404 or a failing upstream moves on to the
/// next, and a failure counts over 404s when none has it.
async fn instance_upstreams_in_order(backend: MetaBackend) {
    let first = counted().await;
    let second = counted().await;
    let list = format!("[{{url=\"{}\"}}]", second.counter.base);
    let server = start_auth_server(
        backend,
        &[
            ("STOWAGE_DEPENDENCY_PROXY__UPSTREAM", first.counter.base.as_str()),
            ("STOWAGE_DEPENDENCY_PROXY__UPSTREAMS", list.as_str()),
        ],
    );
    let api = GitLab::root(&server);
    api.create_group("acme", None, "private").await;
    let http = http_client();
    let pull = |name: String, reference: String| {
        let http = http.clone();
        let base = server.base.clone();
        async move {
            let token = token_for(
                &http,
                &base,
                Some(("root", ADMIN_PASSWORD)),
                &[repo_scope(&name, "pull")],
            )
            .await;
            http.get(format!("{base}/v2/{name}/manifests/{reference}"))
                .header("accept", ACCEPT)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
        }
    };

    // Both have it: the first serves it, the second is not asked.
    let in_first = first.pusher.push_image("both", "1", 1024).await;
    second.pusher.push_image("both", "1", 1024).await;
    let r = pull(proxied("acme", "both"), "1".into()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), in_first.digest);
    assert_eq!(second.counter.count("GET", "/v2/both/manifests/1"), 0);

    // Only the second has it: the first's 404 falls through; its blobs come from the second.
    let only = second.pusher.push_image("only2", "1", 4096).await;
    let name = proxied("acme", "only2");
    let r = pull(name.clone(), "1".into()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), only.digest);
    assert_eq!(first.counter.count("GET", "/v2/only2/manifests/1"), 1);
    let token = token_for(
        &http,
        &server.base,
        Some(("root", ADMIN_PASSWORD)),
        &[repo_scope(&name, "pull")],
    )
    .await;
    let blob = http
        .get(format!("{}/v2/{name}/blobs/{}", server.base, only.layer))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(sha256_digest(&blob.bytes().await.unwrap()), only.layer);
    assert_eq!(second.counter.count("GET", &format!("/v2/only2/blobs/{}", only.layer)), 1);

    // The first is down or failing: the second serves what both have.
    for (i, mode) in
        [UpstreamMode::Down, UpstreamMode::Fail(503), UpstreamMode::Fail(429)].iter().enumerate()
    {
        first.counter.set_mode(*mode);
        let image = format!("app{i}");
        first.pusher.push_image(&image, "1", 1024).await;
        let in_second = second.pusher.push_image(&image, "1", 1024).await;
        let r = pull(proxied("acme", &image), "1".into()).await;
        assert_eq!(r.status(), 200, "{mode:?}");
        assert_eq!(digest_header(&r), in_second.digest, "{mode:?}");
        assert!(r.headers().get("warning").is_none(), "{mode:?}");
        assert_eq!(first.counter.count("GET", &format!("/v2/{image}/manifests/1")), 1);
    }
    assert!(server.log().contains("a dependency proxy upstream failed; trying the next"));

    // The first rate-limits and the second does not have it: the rate limit is reported.
    first.counter.set_mode(UpstreamMode::Fail(429));
    let r = pull(proxied("acme", "nowhere"), "1".into()).await;
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    // Neither has it: 404.
    first.counter.set_mode(UpstreamMode::Forward);
    let r = pull(proxied("acme", "nowhere"), "1".into()).await;
    assert_eq!(r.status(), 404);
    drop((first.distribution, second.distribution));
}

/// A top-level group sets its own upstreams, with credentials: owners only; the password is
/// sealed at rest and never shown (GET, PUT answer, log); local addresses need
/// `dependency_proxy.allow_local_requests`; the group's list replaces the instance's; a
/// password left out is kept; a changed encryption key makes it unreadable, clearly.
async fn group_upstreams_with_credentials(backend: MetaBackend) {
    // The private upstream: another Stowage with token auth, read with a deploy token.
    let upstream = start_auth_server(backend, &[]);
    let up_api = GitLab::root(&upstream);
    let team = up_api.create_group("team", None, "private").await;
    up_api.create_project(team, "svc", "private").await;
    let deploy = up_api.create_deploy_token("groups", team, "mirror", &["read_registry"]).await;
    let http = http_client();
    let push = token_for(
        &http,
        &upstream.base,
        Some(("root", ADMIN_PASSWORD)),
        &[repo_scope("team/svc", "pull,push")],
    )
    .await;
    let pusher = Pusher::new(&upstream.base, Some(push));
    let image = pusher.push_image("team/svc", "1.0", 4096).await;

    let mut s = setup(backend, &[]).await;
    let group = s.api.create_group("acme", None, "private").await;
    let path = format!("/groups/{group}/dependency_proxy");
    let secret = deploy.token.clone();
    let entry = json!([{"url": upstream.base, "username": deploy.username, "password": secret}]);

    // Defaults, before anything is set.
    let shown = s.api.call(Method::GET, &path, None).await;
    assert_eq!(
        shown,
        json!({"enabled": true, "ttl_policy": {"enabled": true, "ttl": 90}, "upstreams": []})
    );

    // Local addresses are refused by default, however they are written; so are credentials
    // in the URL and what is no registry URL.
    for url in [
        upstream.base.as_str(),
        "http://localhost:5000",
        "http://[::1]:5000",
        "http://2130706433/",
        "http://169.254.169.254/",
        "http://10.0.0.8:5000",
    ] {
        let (status, body) =
            s.api.request(Method::PUT, &path, Some(json!({"upstreams": [{"url": url}]}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert!(
            body.to_string().contains("dependency_proxy.allow_local_requests"),
            "{url}: {body}"
        );
    }
    for (bad, says) in [
        (json!([{"url": "https://user:pw@registry.example"}]), "must not hold credentials"),
        (json!([{"url": "ftp://registry.example"}]), "http:// or https://"),
        (json!([{"url": "registry.example"}]), "http:// or https://"),
        (json!([{"url": "https://registry.example", "password": "x"}]), "needs a username"),
        (json!([{"url": "https://registry.example", "token": "x"}]), "unknown field"),
        (json!("https://registry.example"), "invalid type"),
    ] {
        let (status, body) =
            s.api.request(Method::PUT, &path, Some(json!({"upstreams": bad}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.to_string().contains(says), "{bad}: {body}");
    }
    let eleven: Vec<_> = (0..11).map(|i| json!({"url": format!("https://r{i}.example")})).collect();
    let (status, _) = s.api.request(Method::PUT, &path, Some(json!({"upstreams": eleven}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.api.call(Method::GET, &path, None).await["upstreams"], json!([]));

    // Allowed by the operator: set, and never shown back.
    s.server.restart_with(&[("STOWAGE_DEPENDENCY_PROXY__ALLOW_LOCAL_REQUESTS", "true")]);
    s.api = GitLab::root(&s.server);
    let r = s
        .http
        .put(format!("{}/api/v4{path}", s.server.base))
        .header("private-token", e2e::gitlab::ADMIN_TOKEN)
        .json(&json!({"upstreams": entry}))
        .send()
        .await
        .unwrap();
    let (status, text) = body_text(r).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains(&secret), "the PUT answer shows the password: {text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    let expected =
        json!([{"url": upstream.base, "username": deploy.username, "password_set": true}]);
    assert_eq!(shown["upstreams"], expected, "{shown}");
    let r = s
        .http
        .get(format!("{}/api/v4{path}", s.server.base))
        .header("private-token", e2e::gitlab::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, text) = body_text(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains(&secret), "GET shows the password: {text}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["upstreams"], expected);
    let stored = s.server.database_bytes();
    let holds = |needle: &str| stored.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds(&deploy.username), "the scan does not see the upstreams' rows");
    assert!(!holds(&secret), "the password is stored in the clear");

    // Only owners read or change it; outsiders do not see the group at all.
    let guest = s.api.create_user("guest").await;
    s.api.add_member("groups", group, guest.id, level::MAINTAINER).await;
    let outsider = s.api.create_user("outsider").await;
    let as_guest = GitLab::with_token(&s.server, &s.api.create_pat(&guest, &["api"]).await.token);
    let as_outsider =
        GitLab::with_token(&s.server, &s.api.create_pat(&outsider, &["api"]).await.token);
    assert_eq!(as_guest.request(Method::GET, &path, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(as_outsider.request(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    let (status, _) = as_guest
        .request(Method::PUT, &path, Some(json!({"upstreams": [{"url": "https://x.example"}]})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Pulls through the group use its upstream with the credentials; the instance's upstream
    // is not asked. Another group still uses the instance's.
    let name = proxied("acme", "team/svc");
    let token = s.root_token(&name).await;
    let r = s.manifest(&token, &name, "1.0").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), image.digest);
    assert_eq!(sha256_digest(&s.blob(&token, &name, &image.layer).await), image.layer);
    assert!(s.counter.seen().is_empty(), "the instance upstream was asked: {:?}", s.counter.seen());
    s.api.create_group("other", None, "private").await;
    let plain = s.upstream.push_image("alpine", "3", 1024).await;
    let other = proxied("other", "alpine");
    let r = s.manifest(&s.root_token(&other).await, &other, "3").await;
    assert_eq!(digest_header(&r), plain.digest);
    assert_eq!(s.manifest_requests("GET", "alpine", "3"), 1);

    // The same upstream again without a password keeps the stored one.
    s.api
        .call(
            Method::PUT,
            &path,
            Some(json!({"upstreams": [{"url": upstream.base, "username": deploy.username}]})),
        )
        .await;
    assert_eq!(s.api.call(Method::GET, &path, None).await["upstreams"], expected);
    let second = pusher.push_image("team/svc", "2.0", 1024).await;
    let r = s.manifest(&token, &name, "2.0").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), second.digest);

    // A wrong password fails cleanly.
    let wrong = json!([{"url": upstream.base, "username": deploy.username, "password": "wrong"}]);
    s.api.call(Method::PUT, &path, Some(json!({"upstreams": wrong}))).await;
    pusher.push_image("team/svc", "3.0", 1024).await;
    let r = s.manifest(&token, &name, "3.0").await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("refused the proxy's credentials"));

    // Another encryption key cannot open what the old one sealed: a clear error, no login.
    s.api.call(Method::PUT, &path, Some(json!({"upstreams": entry}))).await;
    s.server.restart_with(&[(
        "STOWAGE_DEPENDENCY_PROXY__ENCRYPTION_KEY",
        "another-key-of-enough-length-0123",
    )]);
    s.api = GitLab::root(&s.server);
    let token = s.root_token(&name).await;
    let r = s.manifest(&token, &name, "3.0").await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("cannot be read"), "{text}");
    assert!(!s.server.log().contains(&secret), "the password is in the log");

    // Back to the instance's upstreams.
    let v = s.api.call(Method::PUT, &path, Some(json!({"upstreams": []}))).await;
    assert_eq!(v["upstreams"], json!([]));
}

/// GitLab's `ttl_policy`: the periodic cleanup job removes what nobody pulled for the
/// group's ttl (default 90 days) unless the group turned it off; the next pull fetches again.
async fn ttl_policy_cleanup(backend: MetaBackend) {
    let mut s = setup(backend, &[]).await;
    let short = s.api.create_group("short", None, "private").await;
    s.api.create_group("default", None, "private").await;
    let off = s.api.create_group("off", None, "private").await;
    let image = s.upstream.push_image("alpine", "3", 2048).await;

    // Bad policies are refused; good ones are shown.
    for bad in [
        json!({"ttl_policy": {"ttl": 0}}),
        json!({"ttl_policy": {"ttl": 3651}}),
        json!({"ttl_policy": {"ttl": "ninety"}}),
        json!({"ttl_policy": {}}),
        json!({"ttl_policy": {"enabled": "perhaps"}}),
        json!({"ttl_policy": {"ttl": 5, "days": 5}}),
        json!({}),
    ] {
        let (status, body) = s
            .api
            .request(Method::PUT, &format!("/groups/{short}/dependency_proxy"), Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let v = s
        .api
        .call(
            Method::PUT,
            &format!("/groups/{short}/dependency_proxy"),
            Some(json!({"ttl_policy": {"ttl": 30}})),
        )
        .await;
    assert_eq!(v["ttl_policy"], json!({"enabled": true, "ttl": 30}));
    let v = s
        .api
        .call(
            Method::PUT,
            &format!("/groups/{off}/dependency_proxy"),
            Some(json!({"ttl_policy": {"enabled": false}})),
        )
        .await;
    assert_eq!(v["ttl_policy"], json!({"enabled": false, "ttl": 90}));

    for group in ["short", "default", "off"] {
        let name = proxied(group, "alpine");
        let token = s.root_token(&name).await;
        assert_eq!(s.manifest(&token, &name, "3").await.status(), 200);
        s.blob(&token, &name, &image.layer).await;
        s.blob(&token, &name, &image.config).await;
    }
    assert_eq!(s.manifest_requests("GET", "alpine", "3"), 3);
    let listed = |s: &Setup, group: &str| {
        let name = proxied(group, "alpine");
        let http = s.http.clone();
        let base = s.server.base.clone();
        async move {
            let token = token_for(
                &http,
                &base,
                Some(("root", ADMIN_PASSWORD)),
                &[repo_scope(&name, "pull")],
            )
            .await;
            let r = http
                .get(format!("{base}/v2/{name}/tags/list"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            r.status()
        }
    };

    // In 45 days: only the group with a 30-day ttl lost its cache.
    let out = s.server.run_due_jobs(Some(&day(45)));
    assert!(out.contains(" 0 dead"), "{out}");
    let ran = s.server.jobs(Some("dependency_proxy_cleanup"));
    assert!(!ran.is_empty() && ran.iter().all(|j| j["state"] == "succeeded"), "{ran:?}");
    s.api = GitLab::root(&s.server);
    assert_eq!(listed(&s, "short").await, StatusCode::NOT_FOUND);
    assert_eq!(listed(&s, "default").await, StatusCode::OK);
    assert_eq!(listed(&s, "off").await, StatusCode::OK);

    // In 100 days: the default group's too; the group that turned it off keeps its cache.
    s.server.run_due_jobs(Some(&day(100)));
    s.api = GitLab::root(&s.server);
    assert_eq!(listed(&s, "default").await, StatusCode::NOT_FOUND);
    assert_eq!(listed(&s, "off").await, StatusCode::OK);

    // A pull after the cleanup fetches from the upstream again.
    let name = proxied("short", "alpine");
    let token = s.root_token(&name).await;
    let r = s.manifest(&token, &name, "3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(digest_header(&r), image.digest);
    assert_eq!(s.manifest_requests("GET", "alpine", "3"), 4);
    s.blob(&token, &name, &image.layer).await;
    assert_eq!(s.blob_gets("alpine", &image.layer), 4);
}

/// `YYYY-MM-DD` of the day `days` from now (UTC), for `stowage jobs run-due --at`.
fn day(days: u64) -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            + days * 86_400;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Two instances on one PostgreSQL: concurrent cold pulls of one large blob through both
/// make one upstream fetch (the lease row), and every client gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_instance_single_flight() {
    let s = setup(MetaBackend::Postgres, &[]).await;
    let sibling = s.server.start_sibling();
    s.api.create_group("acme", None, "private").await;
    let image = s.upstream.push_image("big", "latest", 32 * 1024 * 1024).await;
    let name = proxied("acme", "big");
    let token = s.root_token(&name).await;
    assert_eq!(s.manifest(&token, &name, "latest").await.status(), 200);
    // A slow upstream: every pull starts while the first fetch is still waiting.
    s.counter.set_blob_delay(Duration::from_millis(1500));
    let pull = |base: String| {
        let http = s.http.clone();
        let token = token.clone();
        let url = format!("{base}/v2/{name}/blobs/{}", image.layer);
        async move {
            let r = http.get(url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().to_vec()
        }
    };
    let pulls =
        (0..6).map(|i| pull(if i % 2 == 0 { s.server.base.clone() } else { sibling.base.clone() }));
    for bytes in futures::future::join_all(pulls).await {
        assert_eq!(sha256_digest(&bytes), image.layer);
    }
    assert_eq!(s.blob_gets("big", &image.layer), 1, "{:?}", s.counter.seen());
    drop(sibling);
}

/// `docker pull` through the proxy: a real image (built with buildah, pushed to the
/// upstream) arrives with its ID; a second pull after `docker rmi` is served from the cache.
async fn docker_pull_through_proxy(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    s.api.create_group("pubg", None, "public").await;
    let c = Containers::new();
    let payload = random_bytes(512 * 1024);
    let id = c.build_scratch_image("localhost/e2e-proxy:1", "amd64", &[("/payload.bin", &payload)]);
    let upstream_addr = s.upstream.base.trim_start_matches("http://").to_string();
    c.buildah(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-proxy:1",
        &format!("docker://{upstream_addr}/team/app:1"),
    ])
    .ok();
    let docker = Dockerd::start(&s.server.addr);
    let image = format!("{}/{}", s.server.addr, proxied("pubg", "team/app"));
    let pulled = docker.docker(&["pull", &format!("{image}:1")]).ok().combined();
    let inspected = docker.docker(&["image", "inspect", &format!("{image}:1")]).ok().json();
    assert_eq!(inspected[0]["Id"], format!("sha256:{id}"), "{pulled}");
    let blob_gets = |s: &Setup| -> usize {
        s.counter
            .seen()
            .iter()
            .filter(|(k, _)| k.starts_with("GET /v2/team/app/blobs/"))
            .map(|(_, n)| n)
            .sum()
    };
    let cold = blob_gets(&s);
    assert_eq!(cold, 2, "config and layer, once each: {:?}", s.counter.seen());

    // Warm: rmi and pull again, by tag and by digest; nothing more from the upstream.
    docker.docker(&["rmi", &format!("{image}:1")]).ok();
    let again = docker.docker(&["pull", &format!("{image}:1")]).ok().combined();
    let digest = again
        .lines()
        .find_map(|l| l.trim().strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in:\n{again}"))
        .to_string();
    docker.docker(&["pull", &format!("{image}@{digest}")]).ok();
    assert_eq!(blob_gets(&s), cold, "{:?}", s.counter.seen());
    let inspected = docker.docker(&["image", "inspect", &format!("{image}:1")]).ok().json();
    assert_eq!(inspected[0]["Id"], format!("sha256:{id}"));
}

/// `skopeo copy --all` of a multi-arch index by digest through the proxy: the index and every
/// platform arrive with their exact digests.
async fn skopeo_copies_multi_arch_index_by_digest(backend: MetaBackend) {
    let s = setup(backend, &[]).await;
    s.api.create_group("pubg", None, "public").await;
    let c = Containers::new();
    c.build_scratch_image("localhost/e2e-pmulti:amd64", "amd64", &[("/arch", b"amd64\n")]);
    c.build_scratch_image("localhost/e2e-pmulti:arm64", "arm64", &[("/arch", b"arm64\n")]);
    c.buildah(&["manifest", "create", "localhost/e2e-pmulti:list"]).ok();
    for arch in ["amd64", "arm64"] {
        c.buildah(&[
            "manifest",
            "add",
            "localhost/e2e-pmulti:list",
            &format!("containers-storage:localhost/e2e-pmulti:{arch}"),
        ])
        .ok();
    }
    let upstream_addr = s.upstream.base.trim_start_matches("http://").to_string();
    let digestfile = c.path("digest");
    c.buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        digestfile.to_str().unwrap(),
        "localhost/e2e-pmulti:list",
        &format!("docker://{upstream_addr}/multi:latest"),
    ])
    .ok();
    let index_digest = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    let upstream_index = s
        .http
        .get(format!("{}/v2/multi/manifests/{index_digest}", s.upstream.base))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let upstream_index: serde_json::Value = serde_json::from_slice(&upstream_index).unwrap();
    let children: Vec<String> = upstream_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(children.len(), 2, "{upstream_index}");

    let image = format!("{}/{}", s.server.addr, proxied("pubg", "multi"));
    let layout = c.path("copied");
    c.skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{image}@{index_digest}"),
        &format!("oci:{}", layout.to_str().unwrap()),
    ])
    .ok();
    let copied = oci_layout_manifests(&layout);
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(copied[0].0, index_digest, "the index's digest changed");
    for child in &children {
        let m: serde_json::Value =
            serde_json::from_slice(&oci_layout_blob(&layout, child)).unwrap();
        for layer in m["layers"].as_array().unwrap() {
            oci_layout_blob(&layout, layer["digest"].as_str().unwrap());
        }
        oci_layout_blob(&layout, m["config"]["digest"].as_str().unwrap());
    }
    let raw = c
        .skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}@{index_digest}"),
        ])
        .ok();
    assert_eq!(sha256_digest(&raw.output.stdout), index_digest);
}

backend_tests!(
    cold_then_warm_pull,
    revalidation_and_stale,
    concurrent_cold_pulls_fetch_once,
    multi_arch_index,
    permission_matrix,
    purge_cache,
    private_upstream_with_credentials,
    instance_upstreams_in_order,
    group_upstreams_with_credentials,
    ttl_policy_cleanup,
    docker_pull_through_proxy,
    skopeo_copies_multi_arch_index_by_digest,
);
