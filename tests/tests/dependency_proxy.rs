//! The dependency proxy (pull-through cache) as a client sees it: a real `stowage serve`
//! whose `dependency_proxy.upstream` is a local Debian `docker-registry` (distribution 2.8)
//! behind a counting proxy, or a second Stowage with token auth and credentials. Pulls go
//! through `/v2/<group>/dependency_proxy/containers/<image>` with tokens from `/jwt/auth`.

use std::time::Duration;

use e2e::gitlab::{
    granted_actions, http_client, level, repo_scope, request_token, start_auth_server, token_for,
    GitLab, ADMIN_PASSWORD,
};
use e2e::upstream::{CountingProxy, Distribution, Pusher, UpstreamMode};
use e2e::{backend_tests, sha256_digest, MetaBackend, TestServer};
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
    assert_eq!(v, json!({"enabled": false}));
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

backend_tests!(
    cold_then_warm_pull,
    revalidation_and_stale,
    concurrent_cold_pulls_fetch_once,
    multi_arch_index,
    permission_matrix,
    purge_cache,
    private_upstream_with_credentials,
);
