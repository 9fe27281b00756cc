//! The `/api/v4` REST API end to end: root (seeded through `STOWAGE_ADMIN_TOKEN`) builds a
//! tenancy of users, groups and projects, and every answer is checked the way a GitLab script
//! would see it — shapes, status codes and `{"message": ...}` errors — on SQLite and PostgreSQL.

use std::time::Duration;

use e2e::{backend_tests, MetaBackend, TestServer};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT_TOKEN: &str = "stwp_e2e-root-token-for-api-tests";

struct Api {
    server: TestServer,
    http: Client,
}

/// One answer: status and JSON body (`Null` when empty).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn expect(self, status: StatusCode, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        self.body
    }

    /// The `message` of a validation error on `field`, or the plain message.
    fn message(&self) -> String {
        match &self.body["message"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Api {
    fn start(backend: MetaBackend) -> Api {
        let server = TestServer::start_with(backend, &[("STOWAGE_ADMIN_TOKEN", ROOT_TOKEN)]);
        let http =
            Client::builder().timeout(Duration::from_secs(60)).build().expect("reqwest client");
        Api { server, http }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, self.server.url(&format!("/api/v4{path}")));
        if let Some(token) = token {
            req = req.header("PRIVATE-TOKEN", token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, body }
    }

    async fn get(&self, token: Option<&str>, path: &str) -> Answer {
        self.call(token, Method::GET, path, None).await
    }

    async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Answer {
        self.call(token, Method::POST, path, Some(body)).await
    }

    async fn put(&self, token: Option<&str>, path: &str, body: Value) -> Answer {
        self.call(token, Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, token: Option<&str>, path: &str) -> Answer {
        self.call(token, Method::DELETE, path, None).await
    }

    /// Root creates a user and an `api` token for them; returns (user id, token).
    async fn user_with_token(&self, username: &str) -> (i64, String) {
        let user = self
            .post(
                Some(ROOT_TOKEN),
                "/users",
                json!({"username": username, "email": format!("{username}@example.com"),
                       "name": username.to_uppercase(), "password": "long enough password"}),
            )
            .await
            .expect(StatusCode::CREATED, "create user");
        let id = user["id"].as_i64().expect("user id");
        let token = self
            .post(
                Some(ROOT_TOKEN),
                &format!("/users/{id}/personal_access_tokens"),
                json!({"name": "api", "scopes": ["api"]}),
            )
            .await
            .expect(StatusCode::CREATED, "create token");
        (id, token["token"].as_str().expect("token").to_string())
    }

    async fn group(&self, token: &str, path: &str, parent: Option<i64>, visibility: &str) -> Value {
        self.post(
            Some(token),
            "/groups",
            json!({"name": path, "path": path, "parent_id": parent, "visibility": visibility}),
        )
        .await
        .expect(StatusCode::CREATED, &format!("create group {path}"))
    }

    async fn project(&self, token: &str, path: &str, namespace: i64, visibility: &str) -> Value {
        self.post(Some(token), "/projects", json!({"name": path, "path": path, "namespace_id": namespace, "visibility": visibility}))
            .await
            .expect(StatusCode::CREATED, &format!("create project {path}"))
    }
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

async fn tenancy_shapes_and_lookup_by_path(backend: MetaBackend) {
    let api = Api::start(backend);
    let me = api.get(Some(ROOT_TOKEN), "/user").await.expect(StatusCode::OK, "current user");
    assert_eq!(me["username"], "root");
    assert_eq!(me["is_admin"], true);

    let (alice, _) = api.user_with_token("alice").await;
    let user = api
        .get(Some(ROOT_TOKEN), &format!("/users/{alice}"))
        .await
        .expect(StatusCode::OK, "get user");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["state"], "active");
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'), "ISO 8601 UTC: {user}");
    let dup = api
        .post(Some(ROOT_TOKEN), "/users", json!({"username": "alice", "email": "a2@example.com", "name": "A", "password": "long enough password"}))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);

    let acme = api.group(ROOT_TOKEN, "acme", None, "public").await;
    assert_eq!(acme["full_path"], "acme");
    assert_eq!(acme["parent_id"], Value::Null);
    let platform = api.group(ROOT_TOKEN, "platform", Some(id(&acme)), "public").await;
    assert_eq!(platform["full_path"], "acme/platform");
    assert_eq!(platform["parent_id"], id(&acme));
    let project = api.project(ROOT_TOKEN, "api", id(&platform), "public").await;
    assert_eq!(project["path_with_namespace"], "acme/platform/api");
    assert_eq!(project["namespace"]["id"], id(&platform));
    assert_eq!(project["namespace"]["full_path"], "acme/platform");
    assert_eq!(project["visibility"], "public");
    assert_eq!(project["container_registry_access_level"], "enabled");
    assert_eq!(project["container_registry_enabled"], true);

    let by_id = api
        .get(None, &format!("/projects/{}", id(&project)))
        .await
        .expect(StatusCode::OK, "project by id");
    let by_path = api
        .get(None, "/projects/acme%2Fplatform%2Fapi")
        .await
        .expect(StatusCode::OK, "project by path");
    assert_eq!(by_id, by_path);
    let group =
        api.get(None, "/groups/acme%2Fplatform").await.expect(StatusCode::OK, "group by path");
    assert_eq!(id(&group), id(&platform));
    assert_eq!(api.get(None, "/projects/acme%2Fnope").await.status, StatusCode::NOT_FOUND);

    // A project may not be more visible than its group.
    let private = api.group(ROOT_TOKEN, "secret", None, "private").await;
    let too_open = api
        .post(
            Some(ROOT_TOKEN),
            "/projects",
            json!({"name": "x", "namespace_id": id(&private), "visibility": "public"}),
        )
        .await;
    assert_eq!(too_open.status, StatusCode::BAD_REQUEST, "{}", too_open.body);
    assert!(too_open.message().contains("visibility"), "{}", too_open.body);

    // Unknown routes and bad bodies answer JSON, never 500.
    let unknown = api.get(Some(ROOT_TOKEN), "/no/such/route").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, json!({"message": "404 Not Found"}));
    let resp = api
        .http
        .post(api.server.url("/api/v4/groups"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");
}

async fn paths_that_docker_cannot_use_are_refused(backend: MetaBackend) {
    let api = Api::start(backend);
    let acme = api.group(ROOT_TOKEN, "acme", None, "private").await;
    for (path, why) in [
        ("Platform", "lowercase"),
        ("_platform", "start with"),
        ("platform-", "end with"),
        ("plat..form", "\"..\""),
        ("a/b", "'/'"),
    ] {
        for (route, body) in [
            ("/groups", json!({"name": "n", "path": path, "parent_id": id(&acme)})),
            ("/projects", json!({"name": "n", "path": path, "namespace_id": id(&acme)})),
        ] {
            let answer = api.post(Some(ROOT_TOKEN), route, body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{route} {path}: {}", answer.body);
            let messages =
                answer.body["message"]["path"][0].as_str().unwrap_or_default().to_string();
            assert!(messages.contains(why), "{route} {path}: {}", answer.body);
            assert!(
                messages.contains("Docker") || messages.contains("subgroup"),
                "{route} {path}: says why: {}",
                answer.body
            );
        }
    }
    let groups = api.get(Some(ROOT_TOKEN), "/groups").await.expect(StatusCode::OK, "list groups");
    assert_eq!(groups.as_array().unwrap().len(), 1, "nothing was created: {groups}");
    // A name alone gives a valid derived path.
    let derived = api
        .post(Some(ROOT_TOKEN), "/projects", json!({"name": "My Web App", "namespace_id": "acme"}))
        .await;
    let derived = derived.expect(StatusCode::CREATED, "path derived from name");
    assert_eq!(derived["path_with_namespace"], "acme/my-web-app");
}

async fn inherited_group_roles_decide_what_members_may_do(backend: MetaBackend) {
    let api = Api::start(backend);
    let (dev, dev_token) = api.user_with_token("dev").await;
    let (rep, rep_token) = api.user_with_token("rep").await;
    let (maint, maint_token) = api.user_with_token("maint").await;
    let acme = api.group(ROOT_TOKEN, "acme", None, "private").await;
    let platform = api.group(ROOT_TOKEN, "platform", Some(id(&acme)), "private").await;
    let project = api.project(ROOT_TOKEN, "api", id(&platform), "private").await;
    let pid = id(&project);

    for (user, level) in [(dev, 30), (rep, 20), (maint, 40)] {
        let member = api
            .post(
                Some(ROOT_TOKEN),
                &format!("/groups/{}/members", id(&acme)),
                json!({"user_id": user, "access_level": level}),
            )
            .await
            .expect(StatusCode::CREATED, "add group member");
        assert_eq!(member["id"], user);
        assert_eq!(member["access_level"], level);
    }
    let again = api
        .post(
            Some(ROOT_TOKEN),
            &format!("/groups/{}/members", id(&acme)),
            json!({"user_id": dev, "access_level": 30}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let members = api
        .get(Some(ROOT_TOKEN), "/groups/acme/members")
        .await
        .expect(StatusCode::OK, "list members");
    assert_eq!(members.as_array().unwrap().len(), 4, "root (creator, owner) and three: {members}");

    // Group roles reach the project two levels down.
    let job = api.post(Some(&dev_token), &format!("/projects/{pid}/job_tokens"), json!({})).await;
    let job = job.expect(StatusCode::CREATED, "developer mints a job token");
    assert_eq!(job["username"], "stowage-ci-token");
    assert_eq!(job["project_id"], pid);
    assert!(job["token"].as_str().unwrap().len() > 20);
    let refused =
        api.post(Some(&rep_token), &format!("/projects/{pid}/job_tokens"), json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.message().starts_with("403 Forbidden"), "{}", refused.body);
    // The reporter sees the private project, the developer may not change it.
    api.get(Some(&rep_token), "/projects/acme%2Fplatform%2Fapi")
        .await
        .expect(StatusCode::OK, "reporter sees project");
    let put = api
        .put(Some(&dev_token), &format!("/projects/{pid}"), json!({"visibility": "internal"}))
        .await;
    assert_eq!(put.status, StatusCode::FORBIDDEN, "{}", put.body);

    // Maintainers manage members but cannot hand out ownership.
    let promote = api
        .put(
            Some(&maint_token),
            &format!("/projects/{pid}/members/{rep}"),
            json!({"access_level": 30}),
        )
        .await;
    assert_eq!(
        promote.status,
        StatusCode::NOT_FOUND,
        "rep is no direct project member: {}",
        promote.body
    );
    api.post(
        Some(&maint_token),
        &format!("/projects/{pid}/members"),
        json!({"user_id": rep, "access_level": 30}),
    )
    .await
    .expect(StatusCode::CREATED, "maintainer adds a project developer");
    api.post(Some(&rep_token), &format!("/projects/{pid}/job_tokens"), json!({}))
        .await
        .expect(StatusCode::CREATED, "the project role now allows it");
    let owner = api
        .put(
            Some(&maint_token),
            &format!("/projects/{pid}/members/{rep}"),
            json!({"access_level": 50}),
        )
        .await;
    assert_eq!(owner.status, StatusCode::FORBIDDEN, "{}", owner.body);
    let bad_level = api
        .put(
            Some(&maint_token),
            &format!("/projects/{pid}/members/{rep}"),
            json!({"access_level": 35}),
        )
        .await;
    assert_eq!(bad_level.status, StatusCode::BAD_REQUEST, "{}", bad_level.body);
    api.delete(Some(&maint_token), &format!("/projects/{pid}/members/{rep}"))
        .await
        .expect(StatusCode::NO_CONTENT, "remove");
    let refused =
        api.post(Some(&rep_token), &format!("/projects/{pid}/job_tokens"), json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "back to reporter: {}", refused.body);

    // Any signed-in user may create a top-level group and owns it; subgroups need maintainer+.
    let own = api.group(&rep_token, "reps", None, "private").await;
    let owners = api
        .get(Some(&rep_token), &format!("/groups/{}/members", id(&own)))
        .await
        .expect(StatusCode::OK, "members");
    assert_eq!(
        owners,
        json!([{"id": rep, "username": "rep", "name": "REP", "state": "active", "access_level": 50,
        "created_at": owners[0]["created_at"]}])
    );
    let sub = api
        .post(
            Some(&rep_token),
            "/groups",
            json!({"name": "x", "path": "x", "parent_id": id(&acme)}),
        )
        .await;
    assert_eq!(sub.status, StatusCode::FORBIDDEN, "{}", sub.body);
    api.group(&maint_token, "tools", Some(id(&acme)), "private").await;
}

async fn personal_access_tokens_are_shown_once_and_revocable(backend: MetaBackend) {
    let api = Api::start(backend);
    let (alice, alice_token) = api.user_with_token("alice").await;
    let created = api
        .post(Some(&alice_token), &format!("/users/{alice}/personal_access_tokens"),
              json!({"name": "laptop", "scopes": ["read_registry", "write_registry"], "expires_at": "2999-01-31"}))
        .await
        .expect(StatusCode::CREATED, "own token");
    assert_eq!(created["name"], "laptop");
    assert_eq!(created["scopes"], json!(["read_registry", "write_registry"]));
    assert_eq!(created["expires_at"], "2999-01-31");
    assert_eq!(created["revoked"], false);
    assert_eq!(created["active"], true);
    assert_eq!(created["user_id"], alice);
    let registry_only = created["token"].as_str().unwrap().to_string();

    let list =
        api.get(Some(&alice_token), "/personal_access_tokens").await.expect(StatusCode::OK, "list");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|t| t.get("token").is_none()), "never shown again: {list:?}");
    assert!(list.iter().any(|t| !t["last_used_at"].is_null()), "the api token was used: {list:?}");

    // Without the api scope the API refuses.
    let no_api = api.get(Some(&registry_only), "/user").await;
    assert!(
        matches!(no_api.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{}",
        no_api.body
    );
    // Bad input is a 400 with a sentence.
    let bad = api
        .post(
            Some(&alice_token),
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "x", "scopes": ["sudo"]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let past = api
        .post(
            Some(&alice_token),
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "x", "scopes": ["api"], "expires_at": "2001-01-01"}),
        )
        .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST, "{}", past.body);
    // Only admins make tokens for others.
    let (bob, bob_token) = api.user_with_token("bob").await;
    let other = api
        .post(
            Some(&bob_token),
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "x", "scopes": ["api"]}),
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    let root_sees = api
        .get(Some(ROOT_TOKEN), &format!("/personal_access_tokens?user_id={alice}"))
        .await
        .expect(StatusCode::OK, "admin list");
    assert_eq!(root_sees.as_array().unwrap().len(), 2);

    // Revoked: 401 from then on; another user's token is invisible.
    let api_token_id = list.iter().find(|t| t["name"] == "api").unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        api.delete(Some(&bob_token), &format!("/personal_access_tokens/{api_token_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    api.delete(Some(&alice_token), &format!("/personal_access_tokens/{api_token_id}"))
        .await
        .expect(StatusCode::NO_CONTENT, "revoke");
    let revoked = api.get(Some(&alice_token), "/user").await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.body, json!({"message": "401 Unauthorized"}));
    assert_eq!(
        api.get(Some("stwp_not-a-real-token-at-all"), "/user").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.get(None, "/user").await.status, StatusCode::UNAUTHORIZED);

    // Blocked users' tokens stop working, and work again once unblocked.
    api.get(Some(&bob_token), "/user").await.expect(StatusCode::OK, "bob active");
    assert_eq!(
        api.post(Some(&bob_token), &format!("/users/{bob}/block"), json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    let blocked = api
        .post(Some(ROOT_TOKEN), &format!("/users/{bob}/block"), json!({}))
        .await
        .expect(StatusCode::CREATED, "block");
    assert_eq!(blocked["state"], "blocked");
    assert_eq!(api.get(Some(&bob_token), "/user").await.status, StatusCode::UNAUTHORIZED);
    api.post(Some(ROOT_TOKEN), &format!("/users/{bob}/unblock"), json!({}))
        .await
        .expect(StatusCode::CREATED, "unblock");
    api.get(Some(&bob_token), "/user").await.expect(StatusCode::OK, "bob active again");
    // Bearer works too.
    let bearer =
        api.http.get(api.server.url("/api/v4/user")).bearer_auth(&bob_token).send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
}

async fn deploy_tokens_and_job_token_allowlist(backend: MetaBackend) {
    let api = Api::start(backend);
    let (dev, dev_token) = api.user_with_token("dev").await;
    let acme = api.group(ROOT_TOKEN, "acme", None, "private").await;
    let app = api.project(ROOT_TOKEN, "app", id(&acme), "private").await;
    let lib = api.project(ROOT_TOKEN, "lib", id(&acme), "private").await;
    api.post(
        Some(ROOT_TOKEN),
        &format!("/projects/{}/members", id(&app)),
        json!({"user_id": dev, "access_level": 30}),
    )
    .await
    .expect(StatusCode::CREATED, "dev on app");

    for (route, scopes) in [
        (format!("/projects/{}/deploy_tokens", id(&app)), json!(["read_registry"])),
        ("/groups/acme/deploy_tokens".to_string(), json!(["read_registry", "write_registry"])),
    ] {
        let token = api
            .post(
                Some(ROOT_TOKEN),
                &route,
                json!({"name": "k8s", "scopes": scopes, "expires_at": "2999-12-31"}),
            )
            .await
            .expect(StatusCode::CREATED, "create deploy token");
        assert_eq!(token["scopes"], scopes);
        assert_eq!(token["revoked"], false);
        assert_eq!(token["expired"], false);
        assert!(
            token["username"].as_str().unwrap().starts_with("stowage+deploy-token-"),
            "{token}"
        );
        assert!(token["token"].as_str().unwrap().len() > 20);
        let list =
            api.get(Some(ROOT_TOKEN), &route).await.expect(StatusCode::OK, "list deploy tokens");
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert!(list[0].get("token").is_none(), "{list}");
        api.delete(Some(ROOT_TOKEN), &format!("{route}/{}", id(&token)))
            .await
            .expect(StatusCode::NO_CONTENT, "revoke");
        let list = api.get(Some(ROOT_TOKEN), &route).await.expect(StatusCode::OK, "list again");
        assert_eq!(list[0]["revoked"], true);
        assert_eq!(
            api.delete(Some(ROOT_TOKEN), &format!("{route}/999")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    let named = api
        .post(
            Some(ROOT_TOKEN),
            &format!("/projects/{}/deploy_tokens", id(&app)),
            json!({"name": "ci", "scopes": ["read_registry"], "username": "app-puller"}),
        )
        .await
        .expect(StatusCode::CREATED, "named deploy token");
    assert_eq!(named["username"], "app-puller");
    let bad = api
        .post(
            Some(ROOT_TOKEN),
            &format!("/projects/{}/deploy_tokens", id(&app)),
            json!({"name": "x", "scopes": ["api"]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let dev_refused = api
        .post(
            Some(&dev_token),
            &format!("/projects/{}/deploy_tokens", id(&app)),
            json!({"name": "x", "scopes": ["read_registry"]}),
        )
        .await;
    assert_eq!(dev_refused.status, StatusCode::FORBIDDEN, "{}", dev_refused.body);

    // lib lets app's job tokens pull from it.
    let allow = format!("/projects/{}/job_token_scope/allowlist", id(&lib));
    let added = api
        .post(Some(ROOT_TOKEN), &allow, json!({"target_project_id": id(&app)}))
        .await
        .expect(StatusCode::CREATED, "allow");
    assert_eq!(added, json!({"source_project_id": id(&lib), "target_project_id": id(&app)}));
    let list = api.get(Some(ROOT_TOKEN), &allow).await.expect(StatusCode::OK, "allowlist");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["path_with_namespace"], "acme/app");
    let dev_list = api
        .get(Some(&dev_token), &format!("/projects/{}/job_token_scope/allowlist", id(&app)))
        .await;
    assert_eq!(dev_list.status, StatusCode::FORBIDDEN, "{}", dev_list.body);
    api.delete(Some(ROOT_TOKEN), &format!("{allow}/{}", id(&app)))
        .await
        .expect(StatusCode::NO_CONTENT, "remove");
    let list = api.get(Some(ROOT_TOKEN), &allow).await.expect(StatusCode::OK, "allowlist");
    assert_eq!(list, json!([]));
    assert_eq!(
        api.delete(Some(ROOT_TOKEN), &format!("{allow}/{}", id(&app))).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn private_projects_are_invisible_to_outsiders(backend: MetaBackend) {
    let api = Api::start(backend);
    let (_, outsider) = api.user_with_token("outsider").await;
    let acme = api.group(ROOT_TOKEN, "acme", None, "public").await;
    let secret = api.project(ROOT_TOKEN, "secret", id(&acme), "private").await;
    let internal = api.project(ROOT_TOKEN, "internal", id(&acme), "internal").await;
    api.project(ROOT_TOKEN, "open", id(&acme), "public").await;
    let hidden = api.group(ROOT_TOKEN, "hidden", None, "private").await;

    for (token, who) in [(Some(outsider.as_str()), "non-member"), (None, "anonymous")] {
        for path in [format!("/projects/{}", id(&secret)), "/projects/acme%2Fsecret".to_string()] {
            let answer = api.get(token, &path).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{who} {path}");
            assert_eq!(
                answer.body,
                json!({"message": "404 Project Not Found"}),
                "{who}: same as nonexistent"
            );
        }
        let missing = api.get(token, "/projects/acme%2Fdoes-not-exist").await;
        assert_eq!(missing.body, json!({"message": "404 Project Not Found"}));
        let members = api.get(token, &format!("/projects/{}/members", id(&secret))).await;
        assert_eq!(members.status, StatusCode::NOT_FOUND, "{who}: members of a private project");
        assert_eq!(
            api.get(token, &format!("/groups/{}", id(&hidden))).await.status,
            StatusCode::NOT_FOUND,
            "{who}"
        );
        let job =
            api.post(token, &format!("/projects/{}/job_tokens", id(&secret)), json!({})).await;
        assert!(
            matches!(job.status, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED),
            "{who}: {}",
            job.body
        );
    }
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["path_with_namespace"].as_str().unwrap().to_string())
            .collect()
    };
    let anonymous =
        names(api.get(None, "/projects").await.expect(StatusCode::OK, "anonymous list"));
    assert_eq!(anonymous, vec!["acme/open"]);
    let signed_in =
        names(api.get(Some(&outsider), "/projects").await.expect(StatusCode::OK, "outsider list"));
    // GitLab's default order: newest first.
    assert_eq!(signed_in, vec!["acme/open", "acme/internal"]);
    let root =
        names(api.get(Some(ROOT_TOKEN), "/projects").await.expect(StatusCode::OK, "root list"));
    assert_eq!(root.len(), 3);
    api.get(Some(&outsider), &format!("/projects/{}", id(&internal)))
        .await
        .expect(StatusCode::OK, "internal for signed-in");
    assert_eq!(
        api.get(None, &format!("/projects/{}", id(&internal))).await.status,
        StatusCode::NOT_FOUND
    );
    // Non-admins cannot create users.
    let create = api.post(Some(&outsider), "/users", json!({"username": "x", "email": "x@example.com", "name": "x", "password": "long enough password"})).await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    assert_eq!(create.body, json!({"message": "403 Forbidden"}));
}

async fn registry_access_level_round_trips(backend: MetaBackend) {
    let api = Api::start(backend);
    let acme = api.group(ROOT_TOKEN, "acme", None, "public").await;
    let project = api.project(ROOT_TOKEN, "api", id(&acme), "private").await;
    let path = "/projects/acme%2Fapi";
    for level in ["private", "disabled", "enabled"] {
        let updated = api
            .put(Some(ROOT_TOKEN), path, json!({"container_registry_access_level": level}))
            .await
            .expect(StatusCode::OK, "update");
        assert_eq!(updated["container_registry_access_level"], level);
        assert_eq!(updated["container_registry_enabled"], level != "disabled");
        let read = api
            .get(Some(ROOT_TOKEN), &format!("/projects/{}", id(&project)))
            .await
            .expect(StatusCode::OK, "read");
        assert_eq!(read["container_registry_access_level"], level);
    }
    let both = api
        .put(
            Some(ROOT_TOKEN),
            path,
            json!({"visibility": "public", "container_registry_access_level": "private"}),
        )
        .await;
    let both = both.expect(StatusCode::OK, "two at once");
    assert_eq!(both["visibility"], "public");
    assert_eq!(both["container_registry_access_level"], "private");
    let legacy = api
        .put(Some(ROOT_TOKEN), path, json!({"container_registry_enabled": false}))
        .await
        .expect(StatusCode::OK, "legacy flag");
    assert_eq!(legacy["container_registry_access_level"], "disabled");
    let bad = api
        .put(Some(ROOT_TOKEN), path, json!({"container_registry_access_level": "sometimes"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.message().contains("enabled, private or disabled"), "{}", bad.body);
    let anonymous = api.put(None, path, json!({"visibility": "private"})).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.body);
}

backend_tests!(
    tenancy_shapes_and_lookup_by_path,
    paths_that_docker_cannot_use_are_refused,
    inherited_group_roles_decide_what_members_may_do,
    personal_access_tokens_are_shown_once_and_revocable,
    deploy_tokens_and_job_token_allowlist,
    private_projects_are_invisible_to_outsiders,
    registry_access_level_round_trips,
);
