//! Protected repositories, protected tags and immutable tags, end to end: rules are managed
//! through `/api/v4/projects/:id/registry/protection/…` by the roles GitLab allows, and the
//! `/v2/` API refuses pushes and deletes they forbid with `PROTECTED_TAG`, `IMMUTABLE_TAG`,
//! `PROTECTED_MANIFEST` or `DENIED`, naming the rule.

mod common;

use std::time::Duration;

use common::{path_of, with_query, Image, OCI_MANIFEST};
use e2e::{backend_tests, MetaBackend, TestServer};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT_TOKEN: &str = "stwp_e2e-root-token-for-protection-tests";
const ROOT_PASSWORD: &str = "Root-protection-Passw0rd";
const PASSWORD: &str = "long enough password";

backend_tests!(
    tag_protection_and_rule_permissions,
    immutable_tags,
    rule_limits,
    repository_protection
);

struct Env {
    server: TestServer,
    http: Client,
}

/// A user who can sign in to `/jwt/auth` with a password, and call the REST API with a token.
struct Person {
    username: String,
    password: String,
    token: String,
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
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        Env { server, http }
    }

    fn root(&self) -> Person {
        Person { username: "root".into(), password: ROOT_PASSWORD.into(), token: ROOT_TOKEN.into() }
    }

    async fn api(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.server.url(&format!("/api/v4{path}")))
            .header("PRIVATE-TOKEN", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn api_ok(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.api(token, method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// Root creates `username` with a password and an `api` token.
    async fn person(&self, username: &str) -> Person {
        let user = self
            .api_ok(
                ROOT_TOKEN,
                Method::POST,
                "/users",
                Some(json!({"username": username, "email": format!("{username}@example.com"),
                            "name": username, "password": PASSWORD})),
            )
            .await;
        let id = user["id"].as_i64().expect("user id");
        let token = self
            .api_ok(
                ROOT_TOKEN,
                Method::POST,
                &format!("/users/{id}/personal_access_tokens"),
                Some(json!({"name": "api", "scopes": ["api"]})),
            )
            .await;
        Person {
            username: username.into(),
            password: PASSWORD.into(),
            token: token["token"].as_str().expect("token").into(),
        }
    }

    async fn user_id(&self, username: &str) -> i64 {
        let users = self.api_ok(ROOT_TOKEN, Method::GET, "/users", None).await;
        users
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["username"] == username)
            .and_then(|u| u["id"].as_i64())
            .expect("user listed")
    }

    /// Root creates group `group` and project `group/project`; returns the project id.
    async fn project(&self, group: &str, project: &str) -> i64 {
        let (status, existing) =
            self.api(ROOT_TOKEN, Method::GET, &format!("/groups/{group}"), None).await;
        let group_id = if status == StatusCode::OK {
            existing["id"].as_i64().expect("group id")
        } else {
            self.api_ok(
                ROOT_TOKEN,
                Method::POST,
                "/groups",
                Some(json!({"name": group, "path": group, "visibility": "private"})),
            )
            .await["id"]
                .as_i64()
                .expect("group id")
        };
        self.api_ok(
            ROOT_TOKEN,
            Method::POST,
            "/projects",
            Some(json!({"name": project, "path": project, "namespace_id": group_id, "visibility": "private"})),
        )
        .await["id"]
            .as_i64()
            .expect("project id")
    }

    async fn add_member(&self, project: i64, person: &Person, level: i64) {
        let user_id = self.user_id(&person.username).await;
        self.api_ok(
            ROOT_TOKEN,
            Method::POST,
            &format!("/projects/{project}/members"),
            Some(json!({"user_id": user_id, "access_level": level})),
        )
        .await;
    }

    /// A registry token for `repo` with everything `person` may do there.
    async fn registry_token(&self, person: &Person, repo: &str) -> String {
        let resp = self
            .http
            .get(self.server.url("/jwt/auth"))
            .query(&[
                ("service", "container_registry"),
                ("scope", &format!("repository:{repo}:pull,push,delete")),
            ])
            .basic_auth(&person.username, Some(&person.password))
            .send()
            .await
            .expect("GET /jwt/auth");
        assert_eq!(resp.status(), StatusCode::OK, "token for {}", person.username);
        let v: Value = resp.json().await.expect("token JSON");
        v["token"].as_str().expect("token").to_string()
    }

    fn v2(&self, bearer: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.server.url(&path_of(path))).bearer_auth(bearer)
    }

    async fn push_blob(&self, bearer: &str, repo: &str, data: &[u8]) {
        let resp = self
            .v2(bearer, Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .expect("start upload");
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload in {repo}");
        let location = resp.headers()["location"].to_str().expect("location").to_string();
        let digest = e2e::sha256_digest(data);
        let resp = self
            .v2(bearer, Method::PUT, &with_query(&location, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(resp.status(), StatusCode::CREATED, "finish upload in {repo}");
    }

    /// Pushes `image` as `person` to `repo:reference`: the blobs, then the manifest. Returns
    /// the manifest PUT's status and body.
    async fn push(
        &self,
        person: &Person,
        repo: &str,
        reference: &str,
        image: &Image,
    ) -> (StatusCode, String) {
        let bearer = self.registry_token(person, repo).await;
        self.push_blob(&bearer, repo, &image.config).await;
        self.push_blob(&bearer, repo, &image.layer).await;
        let resp = self
            .v2(&bearer, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(image.manifest.clone())
            .send()
            .await
            .expect("PUT manifest");
        (resp.status(), resp.text().await.unwrap_or_default())
    }

    async fn delete(&self, person: &Person, repo: &str, reference: &str) -> (StatusCode, String) {
        let bearer = self.registry_token(person, repo).await;
        let resp = self
            .v2(&bearer, Method::DELETE, &format!("/v2/{repo}/manifests/{reference}"))
            .send()
            .await
            .expect("DELETE manifest");
        (resp.status(), resp.text().await.unwrap_or_default())
    }
}

#[track_caller]
fn assert_created(answer: &(StatusCode, String), what: &str) {
    assert_eq!(answer.0, StatusCode::CREATED, "{what}: {}", answer.1);
}

#[track_caller]
fn assert_accepted(answer: &(StatusCode, String), what: &str) {
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{what}: {}", answer.1);
}

/// A 403 with OCI error `code` whose message mentions `mentions` (the rule's pattern).
#[track_caller]
fn assert_oci_refusal(answer: &(StatusCode, String), code: &str, mentions: &str, what: &str) {
    assert_eq!(answer.0, StatusCode::FORBIDDEN, "{what}: {}", answer.1);
    let body: Value =
        serde_json::from_str(&answer.1).unwrap_or_else(|e| panic!("{what}: {e}: {}", answer.1));
    assert_eq!(body["errors"][0]["code"], code, "{what}: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "{what}: message {message:?} should name {mentions:?}");
}

#[track_caller]
fn assert_api_status(answer: &(StatusCode, Value), status: StatusCode, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    if !status.is_success() {
        assert!(
            answer.1["message"].is_string(),
            "{what}: errors are {{\"message\": …}}: {}",
            answer.1
        );
    }
}

async fn tag_protection_and_rule_permissions(backend: MetaBackend) {
    let env = Env::start(backend);
    let project = env.project("acme", "app").await;
    let repo = "acme/app";
    let dev = env.person("dev").await;
    let maint = env.person("maint").await;
    let owner = env.person("owner").await;
    env.add_member(project, &dev, 30).await;
    env.add_member(project, &maint, 40).await;
    env.add_member(project, &owner, 50).await;
    let rules = format!("/projects/{project}/registry/protection/tag/rules");
    let protect_v = json!({"tag_name_pattern": "^v.*", "minimum_access_level_for_push": "maintainer",
                           "minimum_access_level_for_delete": "owner"});

    // Developers neither see nor manage rules; maintainers do.
    let answer = env.api(&dev.token, Method::POST, &rules, Some(protect_v.clone())).await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "developer creates a tag rule");
    assert_api_status(
        &env.api(&dev.token, Method::GET, &rules, None).await,
        StatusCode::FORBIDDEN,
        "developer lists",
    );
    let stable = json!({"tag_name_pattern": "^stable$", "minimum_access_level_for_push": "maintainer",
                        "minimum_access_level_for_delete": "maintainer"});
    let answer = env.api(&maint.token, Method::POST, &rules, Some(stable)).await;
    assert_api_status(&answer, StatusCode::CREATED, "maintainer creates a tag rule");
    assert_eq!(answer.1["tag_name_pattern"], "^stable$");
    assert_eq!(answer.1["minimum_access_level_for_push"], "maintainer");
    assert_eq!(answer.1["minimum_access_level_for_delete"], "maintainer");
    assert_eq!(answer.1["project_id"], project);
    assert_eq!(answer.1["immutable"], false);

    // A rule may not demand more than its author has: owners make owner-level rules.
    let answer = env.api(&maint.token, Method::POST, &rules, Some(protect_v.clone())).await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "maintainer creates an owner-level rule");
    let answer = env.api(&owner.token, Method::POST, &rules, Some(protect_v.clone())).await;
    assert_api_status(&answer, StatusCode::CREATED, "owner creates an owner-level rule");
    assert_eq!(answer.1["minimum_access_level_for_delete"], "owner");
    let rule_id = answer.1["id"].as_i64().expect("rule id");
    let listed = env.api_ok(&maint.token, Method::GET, &rules, None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Nor admin-level rules, nor immutable rules.
    let answer = env
        .api(&maint.token, Method::POST, &rules, Some(json!({"tag_name_pattern": "^prod$",
             "minimum_access_level_for_push": "admin", "minimum_access_level_for_delete": "admin"})))
        .await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "maintainer creates an admin rule");
    let immutable = json!({"tag_name_pattern": "^release-", "immutable": true});
    let answer = env.api(&maint.token, Method::POST, &rules, Some(immutable.clone())).await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "maintainer creates an immutable rule");

    // Push protection: developer refused on a matching tag, allowed elsewhere; maintainer allowed.
    assert_created(
        &env.push(&dev, repo, "dev-1", &Image::random("dev-1")).await,
        "developer pushes dev-1",
    );
    let refused = env.push(&dev, repo, "v1", &Image::random("v1")).await;
    assert_oci_refusal(&refused, "PROTECTED_TAG", "^v.*", "developer pushes v1");
    let v1 = Image::random("v1");
    assert_created(&env.push(&maint, repo, "v1", &v1).await, "maintainer pushes v1");
    assert_created(
        &env.push(&maint, repo, "v2", &Image::random("v2")).await,
        "maintainer pushes v2",
    );

    // Delete protection: owners only, by tag and by digest (the manifest carries tag v1).
    assert_oci_refusal(
        &env.delete(&maint, repo, "v1").await,
        "PROTECTED_TAG",
        "^v.*",
        "maintainer deletes v1",
    );
    assert_oci_refusal(
        &env.delete(&maint, repo, &v1.digest).await,
        "PROTECTED_MANIFEST",
        "^v.*",
        "maintainer deletes v1's manifest by digest",
    );
    assert_accepted(&env.delete(&owner, repo, "v1").await, "owner deletes v1");
    assert_accepted(&env.delete(&maint, repo, "dev-1").await, "maintainer deletes dev-1");

    // Editing: maintainers may relax the rule to maintainer deletes; then a maintainer deletes v2.
    let answer = env
        .api(
            &maint.token,
            Method::PATCH,
            &format!("{rules}/{rule_id}"),
            Some(json!({"minimum_access_level_for_delete": "maintainer"})),
        )
        .await;
    // The rule demands owner for deletes now, above the maintainer's level: refused.
    assert_api_status(&answer, StatusCode::FORBIDDEN, "maintainer edits an owner-level rule");
    let answer = env
        .api(
            &owner.token,
            Method::PATCH,
            &format!("{rules}/{rule_id}"),
            Some(json!({"minimum_access_level_for_delete": "maintainer"})),
        )
        .await;
    assert_api_status(&answer, StatusCode::OK, "owner edits the rule");
    assert_eq!(answer.1["minimum_access_level_for_delete"], "maintainer");
    assert_eq!(answer.1["minimum_access_level_for_push"], "maintainer", "unchanged fields stay");
    assert_accepted(&env.delete(&maint, repo, "v2").await, "maintainer deletes v2 after the edit");

    // Deleting the rule lifts protection.
    let answer = env.api(&maint.token, Method::DELETE, &format!("{rules}/{rule_id}"), None).await;
    assert_api_status(&answer, StatusCode::NO_CONTENT, "maintainer deletes the rule");
    assert_created(
        &env.push(&dev, repo, "v3", &Image::random("v3")).await,
        "developer pushes v3 without rules",
    );
}

async fn immutable_tags(backend: MetaBackend) {
    let env = Env::start(backend);
    let project = env.project("acme", "app").await;
    let repo = "acme/app";
    let dev = env.person("dev").await;
    let maint = env.person("maint").await;
    let owner = env.person("owner").await;
    env.add_member(project, &dev, 30).await;
    env.add_member(project, &maint, 40).await;
    env.add_member(project, &owner, 50).await;
    let root = env.root();
    let rules = format!("/projects/{project}/registry/protection/tag/rules");

    let latest = Image::random("latest");
    assert_created(&env.push(&dev, repo, "latest", &latest).await, "push latest");

    let answer = env
        .api(
            &owner.token,
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^release-", "immutable": true})),
        )
        .await;
    assert_api_status(&answer, StatusCode::CREATED, "owner creates an immutable rule");
    assert_eq!(answer.1["immutable"], true);
    assert_eq!(answer.1["minimum_access_level_for_push"], Value::Null);
    let rule_id = answer.1["id"].as_i64().expect("rule id");
    let answer = env
        .api(
            &owner.token,
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^x", "immutable": true,
             "minimum_access_level_for_push": "maintainer"})),
        )
        .await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "immutable rule with access levels");

    // Immutable rules cannot be edited, by anyone.
    for who in [&owner, &root] {
        let answer = env
            .api(
                &who.token,
                Method::PATCH,
                &format!("{rules}/{rule_id}"),
                Some(json!({"tag_name_pattern": "^rel-"})),
            )
            .await;
        assert_api_status(&answer, StatusCode::BAD_REQUEST, "editing an immutable rule");
        assert!(
            answer.1["message"].as_str().unwrap_or_default().contains("cannot be edited"),
            "{}",
            answer.1
        );
    }

    // A new matching tag may be created (by anyone who may push), and re-pushed unchanged.
    let release = Image::random("release-1");
    assert_created(
        &env.push(&dev, repo, "release-1", &release).await,
        "developer creates release-1",
    );
    assert_created(
        &env.push(&dev, repo, "release-1", &release).await,
        "re-push of the same manifest",
    );

    // Racing pushes of different manifests to a new immutable tag: one wins, the others are
    // refused, and the tag ends where the winner put it.
    let bearer = env.registry_token(&maint, repo).await;
    let racers: Vec<Image> = (0..8).map(|i| Image::random(&format!("racer-{i}"))).collect();
    for image in &racers {
        env.push_blob(&bearer, repo, &image.config).await;
        env.push_blob(&bearer, repo, &image.layer).await;
    }
    let puts = racers.iter().map(|image| {
        env.v2(&bearer, Method::PUT, &format!("/v2/{repo}/manifests/release-race"))
            .header("Content-Type", OCI_MANIFEST)
            .body(image.manifest.clone())
            .send()
    });
    let answers = futures::future::join_all(puts).await;
    let mut winners = Vec::new();
    for (image, answer) in racers.iter().zip(answers) {
        let answer = answer.expect("PUT manifest");
        match answer.status() {
            StatusCode::CREATED => winners.push(image.digest.clone()),
            StatusCode::FORBIDDEN => {
                let text = answer.text().await.unwrap_or_default();
                assert!(text.contains("IMMUTABLE_TAG"), "refusal names the rule kind: {text}");
            }
            other => {
                panic!("racing push answered {other}: {}", answer.text().await.unwrap_or_default())
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing push may create the immutable tag");
    let now = env
        .v2(&bearer, Method::HEAD, &format!("/v2/{repo}/manifests/release-race"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("HEAD manifest");
    let digest = now.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
    assert_eq!(digest, Some(winners[0].as_str()), "the tag points at the winner");

    // Nobody may move or delete it: not the owner, not the instance admin.
    for who in [&dev, &maint, &owner, &root] {
        let moved = env.push(who, repo, "release-1", &Image::random("other")).await;
        assert_oci_refusal(
            &moved,
            "IMMUTABLE_TAG",
            "^release-",
            &format!("{} moves release-1", who.username),
        );
        let deleted = env.delete(who, repo, "release-1").await;
        if who.username == "dev" {
            // Developers may not delete at all: the token has no delete action.
            assert!(
                matches!(deleted.0, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED),
                "{}",
                deleted.1
            );
        } else {
            assert_oci_refusal(
                &deleted,
                "IMMUTABLE_TAG",
                "^release-",
                &format!("{} deletes release-1", who.username),
            );
        }
    }

    // The REST API refuses too: a single delete names the rule, a bulk delete skips the tag.
    let repos = env
        .api_ok(
            &owner.token,
            Method::GET,
            &format!("/projects/{project}/registry/repositories"),
            None,
        )
        .await;
    let repo_id = repos[0]["id"].as_i64().expect("repository id");
    let tags_path = format!("/projects/{project}/registry/repositories/{repo_id}/tags");
    let answer =
        env.api(&root.token, Method::DELETE, &format!("{tags_path}/release-1"), None).await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "admin deletes release-1 through REST");
    assert!(answer.1["message"].as_str().unwrap_or_default().contains("^release-"), "{}", answer.1);
    let answer = env
        .api(&owner.token, Method::DELETE, &tags_path, Some(json!({"name_regex_delete": ".*"})))
        .await;
    assert_api_status(&answer, StatusCode::ACCEPTED, "bulk delete of every tag");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = env.api_ok(&owner.token, Method::GET, &tags_path, None).await;
    let names: Vec<&str> =
        left.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"release-1"), "bulk delete skipped the immutable tag: {names:?}");

    // While an immutable rule exists, no manifest may be deleted by digest, even an untagged one.
    assert_oci_refusal(
        &env.delete(&root, repo, &release.digest).await,
        "PROTECTED_MANIFEST",
        "^release-",
        "admin deletes release-1's manifest by digest",
    );
    assert_oci_refusal(
        &env.delete(&owner, repo, &latest.digest).await,
        "PROTECTED_MANIFEST",
        "immutable",
        "owner deletes another manifest by digest",
    );
    // Other tags stay deletable.
    assert_accepted(&env.delete(&maint, repo, "latest").await, "maintainer deletes latest");

    // Only owners delete immutable rules; afterwards the tag can be deleted again.
    let answer = env.api(&maint.token, Method::DELETE, &format!("{rules}/{rule_id}"), None).await;
    assert_api_status(&answer, StatusCode::FORBIDDEN, "maintainer deletes the immutable rule");
    let answer = env.api(&owner.token, Method::DELETE, &format!("{rules}/{rule_id}"), None).await;
    assert_api_status(&answer, StatusCode::NO_CONTENT, "owner deletes the immutable rule");
    assert_accepted(
        &env.delete(&maint, repo, &release.digest).await,
        "digest delete after the rule is gone",
    );
}

async fn rule_limits(backend: MetaBackend) {
    let env = Env::start(backend);
    let project = env.project("acme", "limits").await;
    let rules = format!("/projects/{project}/registry/protection/tag/rules");
    let rule = |pattern: &str| {
        json!({"tag_name_pattern": pattern, "minimum_access_level_for_push": "maintainer",
               "minimum_access_level_for_delete": "maintainer"})
    };

    let too_long = "a".repeat(101);
    for (pattern, what) in [
        ("(unclosed", "invalid regex"),
        (r"(a)\1", "backreference (not RE2)"),
        (too_long.as_str(), "101 characters"),
        ("", "empty"),
    ] {
        let answer = env.api(ROOT_TOKEN, Method::POST, &rules, Some(rule(pattern))).await;
        assert_api_status(&answer, StatusCode::BAD_REQUEST, what);
    }
    let answer = env
        .api(
            ROOT_TOKEN,
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^v", "minimum_access_level_for_push": "developer",
             "minimum_access_level_for_delete": "maintainer"})),
        )
        .await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "developer is not a rule level");
    let answer =
        env.api(ROOT_TOKEN, Method::POST, &rules, Some(json!({"tag_name_pattern": "^v"}))).await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "no access levels");

    let hundred = "b".repeat(100);
    for pattern in [hundred.as_str(), "^a", "^b"] {
        let answer = env.api(ROOT_TOKEN, Method::POST, &rules, Some(rule(pattern))).await;
        assert_api_status(&answer, StatusCode::CREATED, pattern);
    }
    let answer = env.api(ROOT_TOKEN, Method::POST, &rules, Some(rule("^a"))).await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "duplicate pattern");
    let answer = env
        .api(
            ROOT_TOKEN,
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^c", "immutable": true})),
        )
        .await;
    assert_api_status(&answer, StatusCode::CREATED, "4th rule (immutable)");
    let answer = env.api(ROOT_TOKEN, Method::POST, &rules, Some(rule("^d"))).await;
    assert_api_status(&answer, StatusCode::CREATED, "5th rule");
    let answer = env.api(ROOT_TOKEN, Method::POST, &rules, Some(rule("^e"))).await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "6th rule");
    assert!(answer.1["message"].as_str().unwrap_or_default().contains("at most 5"), "{}", answer.1);

    // An invalid pattern is refused on edit too; unknown rules are 404.
    let listed = env.api_ok(ROOT_TOKEN, Method::GET, &rules, None).await;
    let first = listed[0]["id"].as_i64().expect("id");
    let answer = env
        .api(
            ROOT_TOKEN,
            Method::PATCH,
            &format!("{rules}/{first}"),
            Some(json!({"tag_name_pattern": "["})),
        )
        .await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "edit to an invalid regex");
    let answer = env.api(ROOT_TOKEN, Method::DELETE, &format!("{rules}/999999"), None).await;
    assert_api_status(&answer, StatusCode::NOT_FOUND, "unknown rule");
}

async fn repository_protection(backend: MetaBackend) {
    let env = Env::start(backend);
    let project = env.project("acme", "app").await;
    let maint = env.person("maint").await;
    let owner = env.person("owner").await;
    env.add_member(project, &maint, 40).await;
    env.add_member(project, &owner, 50).await;
    let rules = format!("/projects/{project}/registry/protection/repository/rules");

    let answer = env
        .api(
            &maint.token,
            Method::POST,
            &rules,
            Some(json!({"repository_path_pattern": "other/*",
             "minimum_access_level_for_push": "maintainer"})),
        )
        .await;
    assert_api_status(&answer, StatusCode::BAD_REQUEST, "pattern outside the project");
    let answer = env
        .api(
            &owner.token,
            Method::POST,
            &rules,
            Some(json!({"repository_path_pattern": "acme/app/prod-*",
             "minimum_access_level_for_push": "owner", "minimum_access_level_for_delete": null})),
        )
        .await;
    assert_api_status(&answer, StatusCode::CREATED, "owner creates a repository rule");
    assert_eq!(answer.1["repository_path_pattern"], "acme/app/prod-*");
    assert_eq!(answer.1["minimum_access_level_for_push"], "owner");
    assert_eq!(answer.1["minimum_access_level_for_delete"], Value::Null);
    let rule_id = answer.1["id"].as_i64().expect("rule id");

    let refused = env.push(&maint, "acme/app/prod-eu", "1.0", &Image::random("prod")).await;
    assert_oci_refusal(
        &refused,
        "DENIED",
        "acme/app/prod-*",
        "maintainer pushes to a protected repository",
    );
    let by_digest = Image::random("x");
    let refused = env.push(&maint, "acme/app/prod-eu", &by_digest.digest, &by_digest).await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "push by digest is a push too: {}", refused.1);
    assert_created(
        &env.push(&owner, "acme/app/prod-eu", "1.0", &Image::random("prod")).await,
        "owner pushes",
    );
    assert_created(
        &env.push(&maint, "acme/app/dev-eu", "1.0", &Image::random("dev")).await,
        "other repository",
    );
    assert_accepted(
        &env.delete(&maint, "acme/app/prod-eu", "1.0").await,
        "deletes are not restricted",
    );

    let answer = env
        .api(
            &owner.token,
            Method::PATCH,
            &format!("{rules}/{rule_id}"),
            Some(json!({"minimum_access_level_for_push": "maintainer"})),
        )
        .await;
    assert_api_status(&answer, StatusCode::OK, "owner relaxes the rule");
    assert_created(
        &env.push(&maint, "acme/app/prod-eu", "1.1", &Image::random("prod")).await,
        "maintainer pushes after the edit",
    );
    let listed = env.api_ok(&maint.token, Method::GET, &rules, None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let answer = env.api(&maint.token, Method::DELETE, &format!("{rules}/{rule_id}"), None).await;
    assert_api_status(&answer, StatusCode::NO_CONTENT, "maintainer deletes the rule");
}
