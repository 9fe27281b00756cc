//! Listings as users page through them, end to end on SQLite and PostgreSQL:
//!
//! - a project's and a group's repositories page as GitLab's do (`page`, `per_page`, the
//!   `X-Total`… headers and `Link`), and hostile page values get the same answers as the
//!   tag listing gives them;
//! - the catalog of a signed-in user lists exactly the repositories that user may pull —
//!   across private, internal and public projects, registry access private and disabled,
//!   inherited group membership, guest membership — and pages through them with `n`/`last`.

use std::time::Duration;

use e2e::{backend_tests, random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ROOT_TOKEN: &str = "stwp_e2e-root-token-for-listing-tests";
const ROOT_PASSWORD: &str = "Root-listings-Passw0rd";
const USER_PASSWORD: &str = "long enough password";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

backend_tests!(repository_listing_pages, catalog_of_a_restricted_user);

struct Env {
    server: TestServer,
    http: Client,
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Page {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    fn paths(&self) -> Vec<String> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("expected a list, got {}", self.body))
            .iter()
            .map(|r| r["path"].as_str().or(r["name"].as_str()).unwrap().to_string())
            .collect()
    }

    /// The pagination headers, in a fixed order, for comparing two listings.
    fn pagination(&self) -> Vec<String> {
        ["x-total", "x-total-pages", "x-page", "x-per-page", "x-next-page", "x-prev-page"]
            .iter()
            .map(|h| format!("{h}={}", self.header(h)))
            .collect()
    }
}

impl Env {
    fn start(backend: MetaBackend) -> Env {
        let server = TestServer::start_with(
            backend,
            &[
                ("STOWAGE_AUTH__MODE", "token"),
                ("STOWAGE_ADMIN_TOKEN", ROOT_TOKEN),
                ("STOWAGE_ADMIN_PASSWORD", ROOT_PASSWORD),
            ],
        );
        let http = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Env { server, http }
    }

    async fn get(&self, path: &str) -> Page {
        let resp = self
            .http
            .get(self.server.url(&format!("/api/v4{path}")))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Page { status, headers, body }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method.clone(), self.server.url(&format!("/api/v4{path}")))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    async fn group(&self, path: &str, parent: Option<i64>, visibility: &str) -> i64 {
        let mut body = json!({"name": path, "path": path, "visibility": visibility});
        if let Some(parent) = parent {
            body["parent_id"] = parent.into();
        }
        self.send(reqwest::Method::POST, "/groups", body).await["id"].as_i64().unwrap()
    }

    /// A project with `visibility` in group `group`.
    async fn project(&self, group: i64, path: &str, visibility: &str) -> i64 {
        let p = self
            .send(
                reqwest::Method::POST,
                "/projects",
                json!({"name": path, "path": path, "namespace_id": group,
                       "visibility": visibility}),
            )
            .await;
        p["id"].as_i64().unwrap()
    }

    async fn registry_access(&self, project: i64, access: &str) {
        self.send(
            reqwest::Method::PUT,
            &format!("/projects/{project}"),
            json!({"container_registry_access_level": access}),
        )
        .await;
    }

    async fn user(&self, username: &str) -> i64 {
        self.send(
            reqwest::Method::POST,
            "/users",
            json!({"username": username, "email": format!("{username}@example.com"),
                   "name": username, "password": USER_PASSWORD}),
        )
        .await["id"]
            .as_i64()
            .unwrap()
    }

    async fn member(&self, on: &str, id: i64, user: i64, level: i64) {
        self.send(
            reqwest::Method::POST,
            &format!("/{on}/{id}/members"),
            json!({"user_id": user, "access_level": level}),
        )
        .await;
    }

    /// A registry bearer token for `username`/`password` with `scope`.
    async fn token(&self, username: &str, password: &str, scope: &str) -> String {
        let resp = self
            .http
            .get(self.server.url("/jwt/auth"))
            .query(&[("service", "container_registry"), ("scope", scope)])
            .basic_auth(username, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "/jwt/auth for {username}");
        let v: Value = resp.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// Root pushes a tiny image to `repo` as `latest`.
    async fn push(&self, repo: &str) {
        let bearer =
            self.token("root", ROOT_PASSWORD, &format!("repository:{repo}:pull,push")).await;
        let layer = random_bytes(64);
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        for data in [&config, &layer] {
            let resp = self
                .http
                .post(self.server.url(&format!("/v2/{repo}/blobs/uploads/")))
                .bearer_auth(&bearer)
                .header("Content-Length", "0")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload in {repo}");
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            let url =
                if location.starts_with("http") { location } else { self.server.url(&location) };
            let sep = if url.contains('?') { '&' } else { '?' };
            let resp = self
                .http
                .put(format!("{url}{sep}digest={}", sha256_digest(data)))
                .bearer_auth(&bearer)
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED, "upload in {repo}");
        }
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256_digest(&layer), "size": layer.len()}]}))
        .unwrap();
        let resp = self
            .http
            .put(self.server.url(&format!("/v2/{repo}/manifests/latest")))
            .bearer_auth(&bearer)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "push {repo}");
    }

    /// Every name the catalog lists to `bearer`, following `Link`s with `n` per page.
    async fn catalog(&self, bearer: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/_catalog?n={n}"));
        while let Some(path) = next.take() {
            let resp =
                self.http.get(self.server.url(&path)).bearer_auth(bearer).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
            let link = resp.headers().get("link").map(|l| l.to_str().unwrap().to_string());
            let v: Value = resp.json().await.unwrap();
            let page: Vec<String> = v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            assert!(page.len() <= n, "{path}: {page:?}");
            if link.is_some() {
                assert_eq!(page.len(), n, "a page with a Link is full: {path}");
            }
            out.extend(page);
            next = link.map(|l| l[1..l.find('>').unwrap()].to_string());
            assert!(out.len() < 1000, "the catalog does not end");
        }
        out
    }
}

async fn repository_listing_pages(backend: MetaBackend) {
    let env = Env::start(backend);
    let group = env.group("acme", None, "internal").await;
    let project = env.project(group, "app", "private").await;
    let other = env.project(group, "web", "private").await;
    let names = ["acme/app", "acme/app/a", "acme/app/b", "acme/app/c/d", "acme/app/e"];
    for name in names {
        env.push(name).await;
    }
    env.push("acme/web").await;

    // ---- a project's repositories, page by page ----
    let base = format!("/projects/{project}/registry/repositories");
    let page1 = env.get(&format!("{base}?per_page=2")).await;
    assert_eq!(page1.status, StatusCode::OK, "{}", page1.body);
    assert_eq!(page1.paths(), ["acme/app", "acme/app/a"]);
    assert_eq!(
        page1.pagination(),
        [
            "x-total=5",
            "x-total-pages=3",
            "x-page=1",
            "x-per-page=2",
            "x-next-page=2",
            "x-prev-page="
        ]
    );
    let link = page1.header("link");
    assert!(link.contains(&format!("{base}?per_page=2&page=2>; rel=\"next\"")), "{link}");
    assert!(link.contains("page=1>; rel=\"first\"") && link.contains("page=3>; rel=\"last\""));
    assert!(!link.contains("rel=\"prev\""), "{link}");
    let next = link.split(", ").find(|l| l.ends_with("rel=\"next\"")).unwrap();
    let next = &next[1..next.find('>').unwrap()];
    let page2 = env
        .http
        .get(next)
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let page2: Vec<&str> =
        page2.as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(page2, ["acme/app/b", "acme/app/c/d"]);
    let page3 = env.get(&format!("{base}?per_page=2&page=3")).await;
    assert_eq!(page3.paths(), ["acme/app/e"]);
    assert_eq!(
        page3.pagination(),
        [
            "x-total=5",
            "x-total-pages=3",
            "x-page=3",
            "x-per-page=2",
            "x-next-page=",
            "x-prev-page=2"
        ]
    );
    // The extras are per repository of the page.
    let counted = env.get(&format!("{base}?per_page=1&page=2&tags_count=true")).await;
    assert_eq!(counted.body[0]["tags_count"], 1, "{}", counted.body);
    // Default: 20 per page.
    let all = env.get(&base).await;
    assert_eq!(all.paths(), names);
    assert_eq!(all.header("x-per-page"), "20");

    // ---- hostile values: the same answers as the tag listing gives ----
    let tags = format!(
        "/projects/{project}/registry/repositories/{}/tags",
        all.body[0]["id"].as_i64().unwrap()
    );
    for query in [
        "per_page=0",
        "per_page=-1",
        "per_page=1000000",
        "per_page=99999999999999999999",
        "page=0",
        "page=-1",
        "page=99",
        "page=1000000",
        "page=1000001",
        "page=abc",
        "per_page=1e2",
        "page=1&page=2",
        "per_page=",
        "page=%00",
        "per_page=2&page=2&per_page=3",
    ] {
        let ours = env.get(&format!("{base}?{query}")).await;
        let theirs = env.get(&format!("{tags}?{query}")).await;
        assert_eq!(
            ours.status,
            theirs.status,
            "{query}: {} {:?} vs {} {:?}",
            ours.body,
            ours.pagination(),
            theirs.body,
            theirs.pagination()
        );
        if ours.status == StatusCode::OK {
            let (ours_h, theirs_h) = (ours.pagination(), theirs.pagination());
            // The repository listing has 5 items, the tag listing 1: compare what does not
            // depend on the count.
            assert_eq!(ours_h[2..4], theirs_h[2..4], "{query}");
        } else {
            assert_eq!(ours.body, theirs.body, "{query}");
        }
    }
    let zero = env.get(&format!("{base}?per_page=0")).await;
    assert_eq!((zero.header("x-per-page"), zero.paths().len()), ("1".into(), 1));
    let huge = env.get(&format!("{base}?per_page=1000000")).await;
    assert_eq!(huge.header("x-per-page"), "100");
    let first = env.get(&format!("{base}?page=-1")).await;
    assert_eq!((first.header("x-page"), first.paths().len()), ("1".into(), 5));
    let past = env.get(&format!("{base}?page=99")).await;
    assert_eq!((past.status, past.paths().len()), (StatusCode::OK, 0));
    assert_eq!(past.header("x-total"), "5");
    // A repeated parameter: the last one counts (as in Rails, and in every listing here).
    let repeated = env.get(&format!("{base}?per_page=2&page=1&page=2")).await;
    assert_eq!(
        (repeated.header("x-page"), repeated.paths()),
        ("2".into(), vec!["acme/app/b".to_string(), "acme/app/c/d".to_string()])
    );
    for bad in ["page=abc", "page=1000001", "per_page=%2B%2B"] {
        let a = env.get(&format!("{base}?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
        let name = bad.split('=').next().unwrap();
        assert!(
            a.body["message"].as_str().unwrap().starts_with(&format!("{name} ")),
            "{bad}: {}",
            a.body
        );
    }

    // ---- a group's repositories: every readable project below it, paged ----
    let g = env.get(&format!("/groups/{group}/registry/repositories?per_page=4")).await;
    assert_eq!(g.paths(), ["acme/app", "acme/app/a", "acme/app/b", "acme/app/c/d"]);
    assert_eq!(g.header("x-total"), "6");
    assert_eq!(g.header("x-total-pages"), "2");
    let g2 = env.get(&format!("/groups/{group}/registry/repositories?per_page=4&page=2")).await;
    assert_eq!(g2.paths(), ["acme/app/e", "acme/web"]);
    assert_eq!(g2.body[1]["project_id"], other);

    // A reporter of one project sees only its repositories in the group's listing.
    let rita = env.user("rita").await;
    env.member("projects", other, rita, 20).await;
    let pat = env
        .send(
            reqwest::Method::POST,
            &format!("/users/{rita}/personal_access_tokens"),
            json!({"name": "api", "scopes": ["api"]}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = env
        .http
        .get(env.server.url(&format!("/api/v4/groups/{group}/registry/repositories")))
        .header("PRIVATE-TOKEN", &pat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-total"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["path"], "acme/web");
}

async fn catalog_of_a_restricted_user(backend: MetaBackend) {
    let env = Env::start(backend);
    // Group visibility bounds what projects may be; it is not what the registry checks.
    let acme = env.group("acme", None, "public").await;
    let team = env.group("team", Some(acme), "private").await;
    let public = env.group("pub", None, "public").await;
    // (project, visibility, registry access, the user's membership)
    let projects = [
        ("acme", acme, "mine", "private", "enabled", Some(("projects", 20))),
        ("acme", acme, "guest", "private", "enabled", Some(("projects", 10))),
        ("acme", acme, "theirs", "private", "enabled", None),
        ("acme", acme, "internal", "internal", "enabled", None),
        ("acme", acme, "internal-closed", "internal", "private", None),
        ("acme", acme, "member-closed", "private", "private", Some(("projects", 30))),
        ("acme", acme, "disabled", "public", "disabled", Some(("projects", 40))),
        ("acme/team", team, "inherited", "private", "enabled", None),
        ("pub", public, "open", "public", "enabled", None),
    ];
    let user = env.user("rita").await;
    env.member("groups", team, user, 20).await;
    for (group_path, group, path, visibility, access, membership) in projects {
        let id = env.project(group, path, visibility).await;
        if let Some((on, level)) = membership {
            env.member(on, id, user, level).await;
        }
        env.push(&format!("{group_path}/{path}")).await;
        env.push(&format!("{group_path}/{path}/sub/image")).await;
        // Set after the pushes: a disabled registry takes none.
        if access != "enabled" {
            env.registry_access(id, access).await;
        }
    }
    let expected = [
        "acme/internal",
        "acme/internal/sub/image",
        "acme/member-closed",
        "acme/member-closed/sub/image",
        "acme/mine",
        "acme/mine/sub/image",
        "acme/team/inherited",
        "acme/team/inherited/sub/image",
        "pub/open",
        "pub/open/sub/image",
    ];
    let bearer = env.token("rita", USER_PASSWORD, "registry:catalog:*").await;
    for n in [1, 3, 100] {
        assert_eq!(env.catalog(&bearer, n).await, expected, "n={n}");
    }
    // `last` may name a repository the user cannot see: the page starts after it all the same.
    let resp = env
        .http
        .get(env.server.url("/v2/_catalog?n=2&last=acme/theirs"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["pub/open", "pub/open/sub/image"]));

    // Root sees everything but the disabled registry.
    let root = env.token("root", ROOT_PASSWORD, "registry:catalog:*").await;
    let all = env.catalog(&root, 100).await;
    assert_eq!(all.len(), 16, "{all:?}");
    assert!(!all.iter().any(|r| r.starts_with("acme/disabled")), "{all:?}");

    // Membership removed: gone from the next catalog request, with the same token.
    let resp = env
        .http
        .delete(env.server.url(&format!("/api/v4/groups/{team}/members/{user}")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let now = env.catalog(&bearer, 100).await;
    assert!(!now.iter().any(|r| r.starts_with("acme/team/")), "{now:?}");

    // Blocked: the token lists nothing any more.
    env.send(reqwest::Method::POST, &format!("/users/{user}/block"), json!({})).await;
    let resp =
        env.http.get(env.server.url("/v2/_catalog")).bearer_auth(&bearer).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    // The credential behind the token is re-checked: refused, as an expired token would be,
    // so a client asks for a new token (which a blocked user cannot get).
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("UNAUTHORIZED"), "{text}");
}
