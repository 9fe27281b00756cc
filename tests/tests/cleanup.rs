//! Cleanup policies through the REST API: set with `PUT /projects/:id`
//! (`container_expiration_policy_attributes`), shown by `GET /projects/:id` with `next_run_at`,
//! validated, limited to maintainers, and previewed by the dry run. Runs with an injected clock
//! (keep_n, older_than, regexes, protected tags, budgets) are in `crates/api/tests/cleanup.rs`.

use std::time::Duration;

use e2e::{backend_tests, MetaBackend, TestServer};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT_TOKEN: &str = "stwp_e2e-root-token-for-cleanup-tests";

backend_tests!(policy_settings_and_dry_run);

async fn call(
    http: &Client,
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req =
        http.request(method, server.url(&format!("/api/v4{path}"))).header("PRIVATE-TOKEN", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn policy_settings_and_dry_run(backend: MetaBackend) {
    let server = TestServer::start_with(backend, &[("STOWAGE_ADMIN_TOKEN", ROOT_TOKEN)]);
    let http = Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let api = |token: &'static str, method: Method, path: String, body: Option<Value>| {
        let (http, server) = (&http, &server);
        async move { call(http, server, token, method, &path, body).await }
    };
    let (_, group) = api(
        ROOT_TOKEN,
        Method::POST,
        "/groups".into(),
        Some(json!({"name": "acme", "path": "acme"})),
    )
    .await;
    let (_, project) = api(
        ROOT_TOKEN,
        Method::POST,
        "/projects".into(),
        Some(json!({"name": "app", "path": "app", "namespace_id": group["id"]})),
    )
    .await;
    let id = project["id"].as_i64().expect("project id");

    // Every project has a policy, disabled by default, GitLab's defaults.
    let (status, shown) = api(ROOT_TOKEN, Method::GET, format!("/projects/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let policy = &shown["container_expiration_policy"];
    assert_eq!(policy["enabled"], false, "{shown}");
    assert_eq!(policy["next_run_at"], Value::Null, "{shown}");

    let attributes = json!({"container_expiration_policy_attributes": {"enabled": true, "cadence": "7d",
        "keep_n": 5, "older_than": "14d", "name_regex": ".*", "name_regex_keep": "^stable$"}});
    let (status, updated) =
        api(ROOT_TOKEN, Method::PUT, format!("/projects/{id}"), Some(attributes)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let policy = &updated["container_expiration_policy"];
    assert_eq!(policy["enabled"], true);
    assert_eq!(policy["cadence"], "7d");
    assert_eq!(policy["keep_n"], 5);
    assert_eq!(policy["older_than"], "14d");
    assert_eq!(policy["name_regex"], ".*");
    assert_eq!(policy["name_regex_keep"], "^stable$");
    assert!(policy["next_run_at"].is_string(), "{policy}");
    let (_, shown) = api(ROOT_TOKEN, Method::GET, format!("/projects/{id}"), None).await;
    assert_eq!(shown["container_expiration_policy"], *policy);

    for bad in [
        json!({"cadence": "2d"}),
        json!({"keep_n": 7}),
        json!({"older_than": "1y"}),
        json!({"name_regex": "(unclosed"}),
    ] {
        let (status, answer) = api(
            ROOT_TOKEN,
            Method::PUT,
            format!("/projects/{id}"),
            Some(json!({"container_expiration_policy_attributes": bad.clone()})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }

    // A developer may neither change the policy nor see a dry run.
    let (_, user) = api(
        ROOT_TOKEN,
        Method::POST,
        "/users".into(),
        Some(json!({"username": "dev", "email": "dev@example.com", "name": "Dev", "password": "long enough password"})),
    )
    .await;
    let user_id = user["id"].as_i64().expect("user id");
    let (_, token) = api(
        ROOT_TOKEN,
        Method::POST,
        format!("/users/{user_id}/personal_access_tokens"),
        Some(json!({"name": "api", "scopes": ["api"]})),
    )
    .await;
    let dev_token: &'static str =
        Box::leak(token["token"].as_str().expect("token").to_string().into_boxed_str());
    api(
        ROOT_TOKEN,
        Method::POST,
        format!("/projects/{id}/members"),
        Some(json!({"user_id": user_id, "access_level": 30})),
    )
    .await;
    let (status, _) = api(
        dev_token,
        Method::PUT,
        format!("/projects/{id}"),
        Some(json!({"container_expiration_policy_attributes": {"enabled": false}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api(
        dev_token,
        Method::GET,
        format!("/projects/{id}/registry/cleanup_policy/dry_run"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The dry run lists what would go now: nothing is 14 days old in a new registry.
    let (status, plan) = api(
        ROOT_TOKEN,
        Method::GET,
        format!("/projects/{id}/registry/cleanup_policy/dry_run"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["tags_count"], 0);
    assert_eq!(plan["tags"], json!([]));

    // Disabling clears next_run_at.
    let (_, updated) = api(
        ROOT_TOKEN,
        Method::PUT,
        format!("/projects/{id}"),
        Some(json!({"container_expiration_policy_attributes": {"enabled": false}})),
    )
    .await;
    assert_eq!(updated["container_expiration_policy"]["enabled"], false);
    assert_eq!(updated["container_expiration_policy"]["next_run_at"], Value::Null);
}

/// `stowage admin projects cleanup-dry-run --at <day>` previews a future run: tags that will
/// be old enough by then are listed, the newest `keep_n`, `latest` and protected tags are not,
/// and nothing is deleted.
async fn cli_dry_run_previews_a_future_run(backend: MetaBackend) {
    use e2e::gitlab::{self, GitLab, ADMIN_PASSWORD};
    let server = gitlab::start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let group = api.create_group("acme", None, "private").await;
    let project = api.create_project(group, "app", "private").await;
    let scopes = [gitlab::repo_scope("acme/app", "pull,push")];
    let token =
        gitlab::token_for(&api.http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let registry = gitlab::Registry::new(&server, Some(token));
    for tag in ["v1", "v2", "v3", "latest", "keep-me"] {
        registry.push_image("acme/app", tag).await.assert_allowed(&format!("push {tag}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = api
        .request(
            Method::PUT,
            &format!("/projects/{project}"),
            Some(json!({"container_expiration_policy_attributes": {
                "enabled": true, "cadence": "7d", "keep_n": 1, "older_than": "7d",
                "name_regex": ".*", "name_regex_keep": "keep-.*"
            }})),
        )
        .await;
    assert!(status.is_success(), "set policy: {status} {body}");

    // An invalid policy refuses the whole update: the visibility change is not applied either.
    let (status, body) = api
        .request(
            Method::PUT,
            &format!("/projects/{project}"),
            Some(json!({"visibility": "internal",
                        "container_expiration_policy_attributes": {"keep_n": 7}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "keep_n 7 is not allowed: {body}");
    let (_, shown) = api.request(Method::GET, &format!("/projects/{project}"), None).await;
    assert_eq!(shown["visibility"], "private", "nothing changed: {shown}");
    assert_eq!(shown["container_expiration_policy"]["keep_n"], 1, "{shown}");

    let dry_run = |at: Option<String>| {
        let mut args = vec!["admin", "projects", "cleanup-dry-run", "acme/app"];
        let at_owned = at.unwrap_or_default();
        if !at_owned.is_empty() {
            args.extend(["--at", at_owned.as_str()]);
        }
        let out = server.stowage_command(&args).output().expect("run stowage admin");
        assert!(out.status.success(), "dry run: {}", String::from_utf8_lossy(&out.stderr));
        let plan: Value = serde_json::from_slice(&out.stdout).expect("dry run prints JSON");
        let mut names: Vec<String> = plan
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert!(dry_run(None).is_empty(), "nothing is older than 7 days yet");
    let in_thirty_days = day_from_now(30);
    assert_eq!(dry_run(Some(in_thirty_days)), vec!["v1".to_string(), "v2".to_string()]);
    // A dry run deletes nothing.
    for tag in ["v1", "v2", "v3", "latest", "keep-me"] {
        registry.pull("acme/app", tag).await.assert_allowed(&format!("{tag} still there"));
    }
}

/// `YYYY-MM-DD` of the day `days` from now (UTC).
fn day_from_now(days: u64) -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            + days * 86_400;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A cleanup policy runs as a periodic job: `stowage jobs run-due --at <day>` runs the pass due
/// then, which deletes exactly what the dry run listed for that day, records the run on the
/// policy, and runs once per period however often it is asked.
async fn policy_runs_as_a_job(backend: MetaBackend) {
    use e2e::gitlab::{self, GitLab, ADMIN_PASSWORD};
    let mut server = gitlab::start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let group = api.create_group("acme", None, "private").await;
    let project = api.create_project(group, "app", "private").await;
    let scopes = [gitlab::repo_scope("acme/app", "pull,push")];
    let token =
        gitlab::token_for(&api.http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let registry = gitlab::Registry::new(&server, Some(token));
    for tag in ["v1", "v2", "v3", "latest", "keep-me"] {
        registry.push_image("acme/app", tag).await.assert_allowed(&format!("push {tag}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = api
        .request(
            Method::PUT,
            &format!("/projects/{project}"),
            Some(json!({"container_expiration_policy_attributes": {
                "enabled": true, "cadence": "7d", "keep_n": 1, "older_than": "7d",
                "name_regex": ".*", "name_regex_keep": "keep-.*"
            }})),
        )
        .await;
    assert!(status.is_success(), "set policy: {status} {body}");

    // Not due today: nothing runs the policy yet.
    let out = server.run_due_jobs(None);
    assert!(out.starts_with("ran "), "{out}");
    let day = day_from_now(30);
    let out = server.run_due_jobs(Some(&day));
    // The policy's run and the other periodic jobs due by then (purge, GC sweep, audit prune).
    assert!(
        out.contains(" 0 failed (retried later), 0 dead") && !out.contains(": 0 succeeded"),
        "{out}"
    );
    let ran = server.jobs(Some("cleanup_policies"));
    assert!(ran.iter().all(|j| j["state"] == "succeeded"), "{ran:?}");

    // (On SQLite the server was restarted for the command: new clients for its new port.)
    let api = GitLab::root(&server);
    let token =
        gitlab::token_for(&api.http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let registry = gitlab::Registry::new(&server, Some(token));
    for tag in ["v1", "v2"] {
        let pulled = registry.pull("acme/app", tag).await;
        assert_eq!(pulled.status, StatusCode::NOT_FOUND, "{tag} was cleaned up: {}", pulled.body);
    }
    for tag in ["v3", "latest", "keep-me"] {
        registry.pull("acme/app", tag).await.assert_allowed(&format!("{tag} kept"));
    }
    let (_, shown) = api.request(Method::GET, &format!("/projects/{project}"), None).await;
    let policy = &shown["container_expiration_policy"];
    assert_eq!(policy["last_run_deleted_tags_count"], 2, "{policy}");
    assert_eq!(policy["last_run_status"], "finished", "{policy}");

    // The period of that day ran already: asking again runs nothing.
    let out = server.run_due_jobs(Some(&day));
    assert!(out.starts_with("ran 0 jobs"), "{out}");
    assert_eq!(server.jobs(Some("cleanup_policies")).len(), ran.len());
}

mod cli {
    use super::*;
    backend_tests!(cli_dry_run_previews_a_future_run, policy_runs_as_a_job);
}
