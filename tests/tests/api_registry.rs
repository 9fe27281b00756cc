//! Registry management through `/api/v4`, end to end on SQLite and PostgreSQL: root pushes
//! images through `/v2` (with a bearer token from `/jwt/auth`), then members of every role list
//! repositories and tags, page through them, read details and sizes, and delete — single tags,
//! tags in bulk by regex / keep_n / older_than, whole repositories — the way a GitLab script
//! would. A real client (`skopeo list-tags`) confirms what a bulk delete kept.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{backend_tests, random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT_TOKEN: &str = "stwp_e2e-root-token-for-registry-api-tests";
const ROOT_PASSWORD: &str = "Root-registry-api-Passw0rd";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

backend_tests!(
    repositories_tags_and_permissions,
    bulk_delete,
    keyset_tag_listing,
    openapi_document
);

struct Api {
    server: TestServer,
    http: Client,
}

/// One answer: status, a few headers and the JSON body (`Null` when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn expect(&self, status: StatusCode, what: &str) -> &Value {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        &self.body
    }

    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    fn message(&self) -> String {
        match &self.body["message"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn names(&self) -> Vec<String> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("expected a list, got {}", self.body))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// An image to push: config, one layer and the manifest.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    digest: String,
    config_digest: String,
}

impl Image {
    fn random() -> Image {
        let layer = random_bytes(1500);
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
            "config": {"Labels": {"nonce": e2e::random_suffix()}}}))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256_digest(&layer), "size": layer.len()}]}))
        .unwrap();
        Image {
            digest: sha256_digest(&manifest),
            config_digest: sha256_digest(&config),
            config,
            layer,
            manifest,
        }
    }

    fn blob_bytes(&self) -> i64 {
        (self.config.len() + self.layer.len()) as i64
    }
}

impl Api {
    fn start(backend: MetaBackend) -> Api {
        let server = TestServer::start_with(
            backend,
            &[
                ("STOWAGE_AUTH__MODE", "token"),
                ("STOWAGE_ADMIN_TOKEN", ROOT_TOKEN),
                ("STOWAGE_ADMIN_PASSWORD", ROOT_PASSWORD),
            ],
        );
        let http = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Api { server, http }
    }

    async fn call(&self, token: Option<&str>, method: Method, path: &str) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            self.server.url(&format!("/api/v4{path}"))
        };
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.header("PRIVATE-TOKEN", token);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, headers, body }
    }

    async fn get(&self, token: Option<&str>, path: &str) -> Answer {
        self.call(token, Method::GET, path).await
    }

    async fn delete(&self, token: Option<&str>, path: &str) -> Answer {
        self.call(token, Method::DELETE, path).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.server.url(&format!("/api/v4{path}")))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// A user with an `api` token, added to `project` at `level` (if any); returns the token.
    async fn member(&self, username: &str, project: i64, level: Option<i64>) -> String {
        let user = self
            .post(
                "/users",
                json!({"username": username, "email": format!("{username}@example.com"),
                "name": username, "password": "long enough password"}),
            )
            .await;
        let id = user["id"].as_i64().unwrap();
        if let Some(level) = level {
            self.post(
                &format!("/projects/{project}/members"),
                json!({"user_id": id, "access_level": level}),
            )
            .await;
        }
        let token = self
            .post(
                &format!("/users/{id}/personal_access_tokens"),
                json!({"name": "api", "scopes": ["api"]}),
            )
            .await;
        token["token"].as_str().unwrap().to_string()
    }

    /// A bearer token for root on `repo`.
    async fn registry_token(&self, repo: &str) -> String {
        let resp = self
            .http
            .get(self.server.url("/jwt/auth"))
            .query(&[
                ("service", "container_registry"),
                ("scope", &format!("repository:{repo}:pull,push,delete")),
            ])
            .basic_auth("root", Some(ROOT_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "/jwt/auth");
        let v: Value = resp.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    async fn push_blob(&self, repo: &str, bearer: &str, data: &[u8]) {
        let resp = self
            .http
            .post(self.server.url(&format!("/v2/{repo}/blobs/uploads/")))
            .bearer_auth(bearer)
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload in {repo}");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") { location } else { self.server.url(&location) };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = self
            .http
            .put(format!("{url}{sep}digest={}", sha256_digest(data)))
            .bearer_auth(bearer)
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "finish upload in {repo}");
    }

    /// Pushes `image`'s blobs and tags its manifest with each of `tags`, in order, at least a
    /// few milliseconds apart (so their published times differ).
    async fn push(&self, repo: &str, image: &Image, tags: &[&str]) {
        let bearer = self.registry_token(repo).await;
        self.push_blob(repo, &bearer, &image.config).await;
        self.push_blob(repo, &bearer, &image.layer).await;
        for tag in tags {
            let resp = self
                .http
                .put(self.server.url(&format!("/v2/{repo}/manifests/{tag}")))
                .bearer_auth(&bearer)
                .header("Content-Type", OCI_MANIFEST)
                .body(image.manifest.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED, "push {repo}:{tag}");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    /// Root creates a private group and a private project in it; returns the project id.
    async fn private_project(&self, group: &str, project: &str) -> i64 {
        let g = self
            .post("/groups", json!({"name": group, "path": group, "visibility": "private"}))
            .await;
        let p = self
            .post(
                "/projects",
                json!({"name": project, "path": project,
                "namespace_id": g["id"], "visibility": "private"}),
            )
            .await;
        p["id"].as_i64().unwrap()
    }

    /// The id of `path` among the project's repositories.
    async fn repository_id(&self, project: i64, path: &str) -> i64 {
        let list =
            self.get(Some(ROOT_TOKEN), &format!("/projects/{project}/registry/repositories")).await;
        list.expect(StatusCode::OK, "list repositories")
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no repository {path} in {}", list.body))["id"]
            .as_i64()
            .unwrap()
    }

    /// Every tag name of a repository (one page of up to 100).
    async fn tag_names(&self, project: i64, repository: i64) -> BTreeSet<String> {
        let a = self
            .get(
                Some(ROOT_TOKEN),
                &format!(
                    "/projects/{project}/registry/repositories/{repository}/tags?per_page=100"
                ),
            )
            .await;
        a.expect(StatusCode::OK, "list tags");
        a.names().into_iter().collect()
    }

    /// Waits for the `n`th bulk tag delete job to finish (they run in the background, as
    /// durable jobs), then checks it succeeded and left exactly `expected`.
    async fn await_bulk(&self, n: usize, project: i64, repository: i64, expected: &[&str]) {
        let jobs = self.server.await_jobs("bulk_tag_delete", n);
        assert_eq!(jobs.len(), n, "{jobs:?}");
        assert_eq!(jobs[0]["state"], "succeeded", "{}", jobs[0]);
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(self.tag_names(project, repository).await, expected);
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn repositories_tags_and_permissions(backend: MetaBackend) {
    let api = Api::start(backend);
    let project = api.private_project("acme", "app").await;
    let reporter = api.member("rita", project, Some(20)).await;
    let developer = api.member("dave", project, Some(30)).await;
    let maintainer = api.member("mia", project, Some(40)).await;
    let outsider = api.member("oscar", project, None).await;

    let first = Image::random();
    let second = Image::random();
    api.push("acme/app", &first, &["v1", "v2"]).await;
    api.push("acme/app", &second, &["v3"]).await;
    api.push("acme/app/sub/tool", &second, &["stable"]).await;
    let host = api.server.addr.clone();

    // ---- repositories of a project and of a group ----
    let list = api
        .get(
            Some(&reporter),
            &format!("/projects/{project}/registry/repositories?tags=true&tags_count=true"),
        )
        .await;
    let repos =
        list.expect(StatusCode::OK, "reporter lists repositories").as_array().unwrap().clone();
    assert_eq!(repos.len(), 2, "{repos:?}");
    let root_repo = &repos[0];
    assert_eq!(root_repo["name"], "");
    assert_eq!(root_repo["path"], "acme/app");
    assert_eq!(root_repo["project_id"], project);
    assert_eq!(root_repo["location"], format!("{host}/acme/app"));
    assert_eq!(root_repo["tags_count"], 3);
    assert_eq!(root_repo["cleanup_policy_started_at"], Value::Null);
    assert!(root_repo["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        root_repo["tags"][0],
        json!({"name": "v1", "path": "acme/app:v1", "location": format!("{host}/acme/app:v1")})
    );
    assert_eq!(repos[1]["name"], "sub/tool");
    let plain =
        api.get(Some(&reporter), &format!("/projects/{project}/registry/repositories")).await;
    assert!(
        plain.body[0].get("tags").is_none() && plain.body[0].get("tags_count").is_none(),
        "{}",
        plain.body
    );
    let by_path = api.get(Some(&reporter), "/projects/acme%2Fapp/registry/repositories").await;
    assert_eq!(by_path.expect(StatusCode::OK, "by path").as_array().unwrap().len(), 2);

    let group =
        api.get(Some(ROOT_TOKEN), "/groups/acme/registry/repositories?tags_count=true").await;
    let paths: Vec<&str> = group
        .expect(StatusCode::OK, "group repositories")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["acme/app", "acme/app/sub/tool"]);

    // A private project is invisible to outsiders and anonymous callers: 404, as if absent.
    for (who, token) in [("outsider", Some(outsider.as_str())), ("anonymous", None)] {
        let a = api.get(token, &format!("/projects/{project}/registry/repositories")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{who}: {}", a.body);
        assert_eq!(a.message(), "404 Project Not Found");
    }
    let missing = api.get(Some(&outsider), "/projects/999999/registry/repositories").await;
    assert_eq!(missing.message(), "404 Project Not Found");

    let app = root_repo["id"].as_i64().unwrap();
    let tool = repos[1]["id"].as_i64().unwrap();

    // ---- one repository, with size ----
    let one = api
        .get(Some(&reporter), &format!("/registry/repositories/{app}?size=true&tags_count=true"))
        .await;
    let one = one.expect(StatusCode::OK, "get repository");
    assert_eq!(one["tags_count"], 3);
    // v1 and v2 share one image: its blobs count once.
    assert_eq!(one["size"], first.blob_bytes() + second.blob_bytes(), "{one}");
    let a = api.get(Some(&outsider), &format!("/registry/repositories/{app}")).await;
    assert_eq!((a.status, a.message()), (StatusCode::NOT_FOUND, "404 Repository Not Found".into()));
    let details = api.get(Some(&reporter), &format!("/registry/repositories/{app}/details")).await;
    assert_eq!(
        details.expect(StatusCode::OK, "details")["size_bytes"],
        first.blob_bytes() + second.blob_bytes()
    );
    let with_sub = api
        .get(
            Some(&reporter),
            &format!("/registry/repositories/{app}/details?size=self_with_descendants"),
        )
        .await;
    // The sub-repository holds `second` again: still counted once.
    assert_eq!(with_sub.body["size_bytes"], first.blob_bytes() + second.blob_bytes());
    let sub_size =
        api.get(Some(&reporter), &format!("/registry/repositories/{tool}/details")).await;
    assert_eq!(sub_size.body["size_bytes"], second.blob_bytes());

    // ---- tags, page by page ----
    let tags_url = format!("/projects/{project}/registry/repositories/{app}/tags");
    let page1 = api.get(Some(&reporter), &format!("{tags_url}?per_page=2")).await;
    page1.expect(StatusCode::OK, "reporter lists tags");
    assert_eq!(page1.names(), ["v1", "v2"]);
    assert_eq!(page1.body[0]["location"], format!("{host}/acme/app:v1"));
    assert_eq!(page1.body[0]["path"], "acme/app:v1");
    for (h, v) in [
        ("x-total", "3"),
        ("x-total-pages", "2"),
        ("x-page", "1"),
        ("x-per-page", "2"),
        ("x-next-page", "2"),
        ("x-prev-page", ""),
    ] {
        assert_eq!(page1.header(h), v, "{h}");
    }
    let link = page1.header("link");
    // The link keeps the request's parameters and sets the page.
    assert!(link.contains("?per_page=2&page=2>; rel=\"next\""), "{link}");
    assert!(
        link.contains("rel=\"first\"")
            && link.contains("rel=\"last\"")
            && !link.contains("rel=\"prev\""),
        "{link}"
    );
    let next_url = link.split(", ").find(|l| l.ends_with("rel=\"next\"")).unwrap();
    let next_url = &next_url[1..next_url.find('>').unwrap()];
    let page2 = api.get(Some(&reporter), next_url).await;
    assert_eq!(page2.names(), ["v3"]);
    assert_eq!(
        (page2.header("x-page"), page2.header("x-next-page"), page2.header("x-prev-page")),
        ("2".into(), "".into(), "1".into())
    );
    assert!(page2.header("link").contains("rel=\"prev\""));
    let a = api.get(Some(&outsider), &tags_url).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A repository of another project is not reachable through this one.
    let other = api.private_project("other", "thing").await;
    let a = api
        .get(Some(ROOT_TOKEN), &format!("/projects/{other}/registry/repositories/{app}/tags"))
        .await;
    assert_eq!(a.message(), "404 Repository Not Found");

    // ---- one tag ----
    let tag = api.get(Some(&reporter), &format!("{tags_url}/v3")).await;
    let tag = tag.expect(StatusCode::OK, "tag details");
    let revision = second.config_digest.trim_start_matches("sha256:");
    assert_eq!(tag["name"], "v3");
    assert_eq!(tag["path"], "acme/app:v3");
    assert_eq!(tag["location"], format!("{host}/acme/app:v3"));
    assert_eq!(tag["revision"], revision);
    assert_eq!(tag["short_revision"], &revision[..9]);
    assert_eq!(tag["digest"], second.digest);
    assert!(tag["total_size"].as_i64().unwrap() >= second.blob_bytes(), "{tag}");
    assert!(tag["created_at"].as_str().unwrap().ends_with('Z'));
    let a = api.get(Some(&reporter), &format!("{tags_url}/nope")).await;
    assert_eq!((a.status, a.message()), (StatusCode::NOT_FOUND, "404 Tag Not Found".into()));

    // ---- deleting: maintainers only ----
    for (who, token) in [("reporter", &reporter), ("developer", &developer)] {
        let a = api.delete(Some(token), &format!("{tags_url}/v3")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{who} deletes a tag: {}", a.body);
        assert!(a.message().contains("maintainer"), "{}", a.message());
        let a = api.delete(Some(token), &format!("{tags_url}?name_regex_delete=.*")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{who} bulk-deletes");
        let a = api
            .delete(Some(token), &format!("/projects/{project}/registry/repositories/{tool}"))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{who} deletes a repository");
    }
    let a = api.delete(Some(&outsider), &format!("{tags_url}/v3")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "outsider deletes");
    api.delete(Some(&maintainer), &format!("{tags_url}/v3"))
        .await
        .expect(StatusCode::OK, "maintainer deletes");
    let a = api.get(Some(&reporter), &format!("{tags_url}/v3")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "deleted tag is gone");
    let a = api.delete(Some(&maintainer), &format!("{tags_url}/v3")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "deleting it again");
    assert_eq!(api.tag_names(project, app).await, set(&["v1", "v2"]));

    // ---- deleting a repository, in the background ----
    api.delete(Some(&maintainer), &format!("/projects/{project}/registry/repositories/{tool}"))
        .await
        .expect(StatusCode::ACCEPTED, "delete repository");
    let jobs = api.server.await_jobs("repository_delete", 1);
    assert_eq!(jobs[0]["state"], "succeeded", "{}", jobs[0]);
    let a = api.get(Some(&reporter), &format!("/registry/repositories/{tool}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "repository still there: {}", a.body);
    let list =
        api.get(Some(&reporter), &format!("/projects/{project}/registry/repositories")).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    // Its name is free again: a new push creates it afresh.
    api.push("acme/app/sub/tool", &first, &["again"]).await;
    let id = api.repository_id(project, "acme/app/sub/tool").await;
    assert_eq!(api.tag_names(project, id).await, set(&["again"]));
}

async fn bulk_delete(backend: MetaBackend) {
    let api = Api::start(backend);
    let project = api.private_project("acme", "app").await;
    let maintainer = api.member("mia", project, Some(40)).await;
    let repo = "acme/app/bulk";
    let image = Image::random();
    let other = Image::random();
    api.push(repo, &image, &["latest", "v1", "v2", "v3", "v4", "v5", "keep-1", "dev-a"]).await;
    api.push(repo, &other, &["dev-b"]).await;
    let id = api.repository_id(project, repo).await;
    let bulk = format!("/projects/{project}/registry/repositories/{id}/tags");

    // Refusals come before anything is deleted.
    let a = api.delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=%5B")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(
        a.message().contains("name_regex_delete is not a valid regular expression"),
        "{}",
        a.message()
    );
    let a = api
        .delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=.*&name_regex_keep=("))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = api.delete(Some(&maintainer), &bulk).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.message().contains("name_regex_delete is missing"), "{}", a.message());
    let a = api
        .delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=.*&older_than=soon"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.tag_names(project, id).await.len(), 9);

    // Regexes match the whole name: `dev` alone matches nothing, `dev-.*` both dev tags (one of
    // them shares its manifest with other tags, which stay).
    api.delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=dev"))
        .await
        .expect(StatusCode::ACCEPTED, "bulk");
    api.await_bulk(
        1,
        project,
        id,
        &["latest", "v1", "v2", "v3", "v4", "v5", "keep-1", "dev-a", "dev-b"],
    )
    .await;
    api.delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=dev-.*"))
        .await
        .expect(StatusCode::ACCEPTED, "bulk");
    api.await_bulk(2, project, id, &["latest", "v1", "v2", "v3", "v4", "v5", "keep-1"]).await;

    // keep regex and keep_n (the newest two of the candidates, by published time); the legacy
    // `name_regex` name works too; `latest` is never bulk-deleted.
    api.delete(
        Some(&maintainer),
        &format!("{bulk}?name_regex=.*&name_regex_keep=keep-.*&keep_n=2"),
    )
    .await
    .expect(StatusCode::ACCEPTED, "bulk keep_n");
    api.await_bulk(3, project, id, &["latest", "v4", "v5", "keep-1"]).await;

    // older_than: only tags published longer ago than that go.
    api.push(repo, &other, &["old-1"]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    api.push(repo, &other, &["new-1"]).await;
    api.delete(Some(&maintainer), &format!("{bulk}?name_regex_delete=(old|new)-.*&older_than=2s"))
        .await
        .expect(StatusCode::ACCEPTED, "bulk older_than");
    api.await_bulk(4, project, id, &["latest", "v4", "v5", "keep-1", "new-1"]).await;

    // Instance admins see the queue over REST too; others may not.
    let jobs = api.get(Some(ROOT_TOKEN), "/admin/jobs?kind=bulk_tag_delete").await;
    let jobs = jobs.expect(StatusCode::OK, "admin lists jobs").as_array().unwrap().clone();
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded" && j["attempts"] == 1), "{jobs:?}");
    assert_eq!(jobs[0]["payload"]["older_than"], "2s");
    let a = api.get(Some(&maintainer), "/admin/jobs").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = api.get(Some(ROOT_TOKEN), "/admin/jobs?state=sleeping").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);

    // A real client sees exactly the kept tags.
    let out = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", "--creds", &format!("root:{ROOT_PASSWORD}")])
        .arg(format!("docker://{}/{repo}", api.server.addr))
        .output()
        .expect("run skopeo (install skopeo)");
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tags: BTreeSet<String> = listed["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, set(&["latest", "v4", "v5", "keep-1", "new-1"]));

    // The images behind deleted tags are still addressable by digest (only tags went).
    let bearer = api.registry_token(repo).await;
    let resp = api
        .http
        .head(api.server.url(&format!("/v2/{repo}/manifests/{}", other.digest)))
        .bearer_auth(bearer)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// The `Link` target with `rel`, if any.
fn link(answer: &Answer, rel: &str) -> Option<String> {
    let header = answer.header("link");
    header
        .split(", ")
        .find(|l| l.ends_with(&format!("rel=\"{rel}\"")))
        .map(|l| l[1..l.find('>').unwrap()].to_string())
}

async fn keyset_tag_listing(backend: MetaBackend) {
    let api = Api::start(backend);
    let project = api.private_project("acme", "app").await;
    let reporter = api.member("rita", project, Some(20)).await;
    let image = Image::random();
    // Pushed newest-name-first, so published order is the reverse of name order.
    let names: Vec<String> = (0..25).rev().map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    api.push("acme/app", &image, &refs).await;
    let id = api.repository_id(project, "acme/app").await;
    let mut by_name = names.clone();
    by_name.sort();

    async fn walk(api: &Api, token: &str, first: &str) -> (Vec<String>, Vec<Answer>) {
        let mut pages = Vec::new();
        let mut seen = Vec::new();
        let mut next = Some(first.to_string());
        while let Some(url) = next {
            let page = api.get(Some(token), &url).await;
            page.expect(StatusCode::OK, &url);
            seen.extend(page.names());
            next = link(&page, "next").map(|l| l.trim_start_matches("/api/v4").to_string());
            pages.push(page);
            assert!(pages.len() < 10, "runaway pagination");
        }
        (seen, pages)
    }

    let base = format!("/registry/repositories/{id}/tags/list");
    let (seen, pages) = walk(&api, &reporter, &format!("{base}?n=10")).await;
    assert_eq!(seen, by_name);
    assert_eq!(pages.len(), 3);
    assert!(link(&pages[0], "previous").is_none());
    let t = &pages[0].body[0];
    assert_eq!(t["name"], "t00");
    assert_eq!(t["digest"], image.digest);
    assert_eq!(t["config_digest"], image.config_digest);
    assert_eq!(t["media_type"], OCI_MANIFEST);
    assert!(t["size_bytes"].as_i64().unwrap() > 0);
    for f in ["created_at", "updated_at", "published_at"] {
        assert!(t[f].as_str().unwrap().ends_with('Z'), "{f}: {t}");
    }
    // Back from page 2 to page 1.
    let prev = link(&pages[1], "previous").expect("page 2 has a previous link");
    let back = api.get(Some(&reporter), prev.trim_start_matches("/api/v4")).await;
    assert_eq!(back.names(), pages[0].names());
    assert!(link(&back, "previous").is_none());

    let (seen, _) = walk(&api, &reporter, &format!("{base}?n=7&sort=-name")).await;
    assert_eq!(seen, by_name.iter().rev().cloned().collect::<Vec<_>>());
    let (seen, pages) = walk(&api, &reporter, &format!("{base}?n=10&sort=published_at")).await;
    assert_eq!(seen, names, "published order is push order");
    let prev = link(&pages[2], "previous").unwrap();
    let back = api.get(Some(&reporter), prev.trim_start_matches("/api/v4")).await;
    assert_eq!(back.names(), pages[1].names());
    let (seen, _) = walk(&api, &reporter, &format!("{base}?n=10&sort=-published_at")).await;
    assert_eq!(seen, names.iter().rev().cloned().collect::<Vec<_>>());

    // Filters: substring (t1x) across pages, and exact.
    let (seen, _) = walk(&api, &reporter, &format!("{base}?n=4&name=T1")).await;
    assert_eq!(seen, (10..20).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let exact = api.get(Some(&reporter), &format!("{base}?name_exact=t07")).await;
    assert_eq!(exact.names(), ["t07"]);
    let none = api.get(Some(&reporter), &format!("{base}?name_exact=t7")).await;
    assert!(none.names().is_empty() && link(&none, "next").is_none());

    // Bad parameters and callers.
    for q in ["n=0", "n=1001", "sort=size", "last=a&before=b", "sort=published_at&last=nope"] {
        let a = api.get(Some(&reporter), &format!("{base}?{q}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {}", a.body);
    }
    let a = api.get(None, &base).await;
    assert_eq!((a.status, a.message()), (StatusCode::NOT_FOUND, "404 Repository Not Found".into()));
}

/// The OpenAPI document describes every operation, and every described operation is routed.
async fn openapi_document(backend: MetaBackend) {
    let api = Api::start(backend);
    let doc = api.get(None, "/openapi.json").await;
    let doc = doc.expect(StatusCode::OK, "openapi.json").clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/projects/{id}/registry/repositories",
        "/groups/{id}/registry/repositories",
        "/registry/repositories/{id}",
        "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
        "/projects/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "999999" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Anonymous, so nothing changes; an unrouted operation answers "404 Not Found".
            let a = api.call(None, m, &concrete).await;
            assert!(
                a.message() != "404 Not Found" && a.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed: {} {}",
                a.status,
                a.body
            );
        }
    }
}
