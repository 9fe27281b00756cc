//! Events: webhooks and notification endpoints receive distribution's event envelope, exactly
//! once per push and delete, also after being down for a while (and across a restart); the
//! audit log records a scripted scenario exactly; audit and hook endpoints refuse outsiders
//! and hostile input.
//!
//! The receiver is a tiny HTTP server inside the test, on loopback. Deliveries are jobs: the
//! tests wait for them with the harness's job hooks (`await_jobs`, `run_due_jobs`), never by
//! sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::gitlab::{
    level, repo_scope, start_auth_server, token_for, GitLab, Registry, ADMIN_PASSWORD, OCI_MANIFEST,
};
use e2e::{backend_tests, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on loopback that records every request and answers 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::on(0).await
    }

    async fn on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let sink = sink.clone();
                tokio::spawn(async move {
                    if let Some(r) = read_request(&mut conn).await {
                        sink.lock().unwrap().push(r);
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        Receiver { port, got, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The events received, flattened out of their envelopes, oldest first (deliveries run
    /// concurrently, so they may arrive in another order).
    fn events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = self
            .received()
            .iter()
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .collect();
        events.sort_by_key(|e| e["timestamp"].as_str().unwrap_or("").to_string());
        events
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Received { path, headers, body })
}

/// Root's registry client with push, pull and delete on `names`.
async fn root_registry(server: &TestServer, names: &[&str]) -> Registry {
    let http = e2e::gitlab::http_client();
    let scopes: Vec<String> = names.iter().map(|n| repo_scope(n, "pull,push,delete")).collect();
    let token = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    Registry::new(server, Some(token))
}

/// Pushes a one-layer image as `name:tag` with user agent `e2e-pusher/1.0`; answers the
/// manifest's bytes.
async fn push(registry: &Registry, name: &str, tag: &str) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
    let layer = e2e::random_bytes(300);
    let config_digest = registry.upload_blob(name, config.as_bytes()).await.expect("config");
    let layer_digest = registry.upload_blob(name, &layer).await.expect("layer");
    let manifest =
        e2e::gitlab::manifest_json(&config_digest, config.len(), &layer_digest, layer.len());
    let resp = registry
        .req(Method::PUT, &format!("/v2/{name}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .header("User-Agent", "e2e-pusher/1.0")
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap_or_default());
    manifest
}

/// The group `acme` and its private project `acme/app`; answers their ids.
async fn acme_app(api: &GitLab) -> (i64, i64) {
    let group = api.create_group("acme", None, "public").await;
    let project = api.create_project(group, "app", "private").await;
    (group, project)
}

/// Waits until every `webhook_delivery` job exists (`count`) and is in `state`.
/// The receivers in these tests listen on loopback, which hooks may only reach when the
/// operator allows it.
const ALLOW_LOCAL_HOOKS: (&str, &str) = ("STOWAGE_WEBHOOKS__ALLOW_LOCAL_REQUESTS", "true");

fn start_allowing_local_hooks(backend: MetaBackend, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![ALLOW_LOCAL_HOOKS];
    env.extend_from_slice(extra);
    start_auth_server(backend, &env)
}

fn await_delivery_state(server: &TestServer, count: usize, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = server.jobs(Some("webhook_delivery"));
        if jobs.len() >= count && jobs.iter().all(|j| j["state"] == state) {
            return;
        }
        assert!(Instant::now() < deadline, "deliveries are not {state}: {jobs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks every field of a delivered event.
#[allow(clippy::too_many_arguments)]
fn assert_event(
    e: &Value,
    server: &TestServer,
    action: &str,
    tag: Option<&str>,
    manifest: Option<&[u8]>,
    method: &str,
    useragent: &str,
) {
    assert_eq!(e["action"], action, "{e}");
    assert_eq!(e["id"].as_str().map(str::len), Some(36), "a UUID: {e}");
    let ts = e["timestamp"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z') && ts.starts_with("20"), "RFC 3339: {ts}");
    let t = &e["target"];
    assert_eq!(t["repository"], "acme/app");
    match tag {
        Some(tag) => assert_eq!(t["tag"], tag),
        None => assert!(t.get("tag").is_none(), "{e}"),
    }
    match manifest {
        Some(m) => {
            let digest = sha256_digest(m);
            assert_eq!(t["mediaType"], OCI_MANIFEST);
            assert_eq!(t["digest"], digest.as_str());
            assert_eq!(t["size"], m.len());
            assert_eq!(t["length"], m.len());
            assert_eq!(
                t["url"],
                format!("http://{}/v2/acme/app/manifests/{digest}", server.addr).as_str()
            );
        }
        None => {
            for absent in ["mediaType", "digest", "size", "length", "url"] {
                assert!(t.get(absent).is_none(), "{absent} in {e}");
            }
        }
    }
    let r = &e["request"];
    assert_eq!(r["id"].as_str().map(str::len), Some(36), "the request id: {e}");
    assert_eq!(r["addr"], "127.0.0.1");
    assert_eq!(r["host"], server.addr.as_str());
    assert_eq!(r["method"], method);
    assert_eq!(r["useragent"], useragent);
    assert_eq!(e["actor"]["name"], "root");
    assert_eq!(e["source"]["addr"], server.addr.as_str());
    assert_eq!(e["source"]["instanceID"].as_str().map(str::len), Some(36));
}

/// A project hook and an instance endpoint each get exactly one event per push and per delete,
/// in distribution's envelope, with the hook's token and the endpoint's headers; pulls are no
/// events by default; the hook is never shown with its token.
async fn receivers_get_one_event_per_push_and_delete(backend: MetaBackend) {
    let hook_receiver = Receiver::start().await;
    let endpoint_receiver = Receiver::start().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "notifications:\n  endpoints:\n    - name: audit-sink\n      url: {}\n      \
             headers:\n        Authorization: [Bearer sink-secret]\n      timeout: 2s\n    \
             - name: deletes-ignored\n      url: {}\n      ignore:\n        actions: [push, delete]\n",
            endpoint_receiver.url("/sink"),
            endpoint_receiver.url("/never"),
        ),
    )
    .unwrap();
    let path = config.path().to_string_lossy().into_owned();
    let server = start_allowing_local_hooks(backend, &[("STOWAGE_CONFIG", &path)]);
    let api = GitLab::root(&server);
    let (_, project) = acme_app(&api).await;
    let hook = api
        .call(
            Method::POST,
            &format!("/projects/{project}/hooks"),
            Some(json!({ "url": hook_receiver.url("/hook"), "token": "hook-s3cret",
                         "container_registry_events": true })),
        )
        .await;
    assert_eq!(hook["url"], hook_receiver.url("/hook").as_str());
    assert_eq!(hook["container_registry_events"], true);
    assert_eq!(hook["enable_ssl_verification"], true);
    assert!(hook.get("token").is_none(), "the token is never shown: {hook}");
    let shown = api.call(Method::GET, &format!("/projects/{project}/hooks"), None).await;
    assert!(!shown.to_string().contains("hook-s3cret"), "{shown}");

    let registry = root_registry(&server, &["acme/app"]).await;
    let manifest = push(&registry, "acme/app", "v1").await;
    registry.pull("acme/app", "v1").await.assert_allowed("pull");
    registry.delete_tag("acme/app", "v1").await.assert_allowed("tag delete");
    server.await_jobs("webhook_delivery", 2);

    for (receiver, path) in [(&hook_receiver, "/hook"), (&endpoint_receiver, "/sink")] {
        let got = receiver.received();
        assert_eq!(got.len(), 2, "{path}: one request per event: {got:?}");
        for r in &got {
            assert_eq!(r.path, path);
            assert_eq!(r.header("content-type"), Some(EVENTS_MEDIA_TYPE));
            assert_eq!(r.body["events"].as_array().map(Vec::len), Some(1));
        }
        let events = receiver.events();
        assert_event(
            &events[0],
            &server,
            "push",
            Some("v1"),
            Some(&manifest),
            "PUT",
            "e2e-pusher/1.0",
        );
        assert_event(&events[1], &server, "delete", Some("v1"), None, "DELETE", "");
    }
    let hook_got = hook_receiver.received();
    assert!(hook_got.iter().all(|r| r.header("x-gitlab-token") == Some("hook-s3cret")));
    assert!(hook_got.iter().all(|r| r.header("authorization").is_none()));
    let sink_got = endpoint_receiver.received();
    assert!(sink_got.iter().all(|r| r.header("authorization") == Some("Bearer sink-secret")));
    assert!(sink_got.iter().all(|r| r.header("x-gitlab-token").is_none()));
    assert!(!server.log().contains("hook-s3cret"), "the hook token is never logged");
}

/// A receiver that is down gets the backlog when it comes back, after a restart too: every
/// event once, none lost, none twice.
async fn a_receiver_that_was_down_gets_the_backlog(backend: MetaBackend) {
    // A port nobody listens on (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = start_allowing_local_hooks(backend, &[]);
    let api = GitLab::root(&server);
    let (_, project) = acme_app(&api).await;
    api.call(
        Method::POST,
        &format!("/projects/{project}/hooks"),
        Some(json!({ "url": format!("http://127.0.0.1:{port}/hook") })),
    )
    .await;
    let registry = root_registry(&server, &["acme/app"]).await;
    let first = push(&registry, "acme/app", "v1").await;
    let second = push(&registry, "acme/app", "v2").await;
    // The pushes were answered although nobody took their events; the deliveries failed.
    await_delivery_state(&server, 2, "failed");
    server.restart();

    let receiver = Receiver::on(port).await;
    server.run_due_jobs(Some("2100-01-01"));
    let mut events = receiver.events();
    events.sort_by_key(|e| e["target"]["tag"].as_str().unwrap_or("").to_string());
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["target"]["digest"], sha256_digest(&first).as_str());
    assert_eq!(events[1]["target"]["digest"], sha256_digest(&second).as_str());
    // Each failed at least once (while the receiver was down) before it was delivered.
    let jobs = server.jobs(Some("webhook_delivery"));
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded" && j["attempts"].as_i64().unwrap() >= 2),
        "{jobs:?}"
    );
    // Nothing is left to run, so nothing is sent twice.
    server.run_due_jobs(Some("2100-01-02"));
    assert_eq!(receiver.events().len(), 2);
}

/// `(event_name, author_name, entity_type, target_details, outcome)` of audit events newer
/// than `after`, oldest first.
async fn audit_since(
    api: &GitLab,
    path: &str,
    after: i64,
) -> Vec<(String, String, String, String, String)> {
    let events = api.call(Method::GET, &format!("{path}?per_page=100"), None).await;
    let mut out: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_i64().unwrap() > after)
        .map(|e| {
            let d = &e["details"];
            (
                e["event_name"].as_str().unwrap().to_string(),
                d["author_name"].as_str().unwrap().to_string(),
                e["entity_type"].as_str().unwrap().to_string(),
                d["target_details"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.reverse();
    out
}

/// A scripted scenario leaves exactly the expected audit trail, on the instance and on the
/// project, with actor, token kind and client address.
async fn audit_log_records_a_scripted_scenario(backend: MetaBackend) {
    let server = start_allowing_local_hooks(backend, &[]);
    let api = GitLab::root(&server);
    let (_, project) = acme_app(&api).await;
    let bob = api.create_user("bob").await;
    let latest = api.call(Method::GET, "/audit_events?per_page=1", None).await;
    let mark = latest.as_array().unwrap().first().map_or(0, |e| e["id"].as_i64().unwrap());

    let http = e2e::gitlab::http_client();
    let scopes = vec![repo_scope("acme/app", "pull,push,delete")];
    let refused =
        e2e::gitlab::request_token(&http, &server.base, Some(("bob", "wrong-password")), &scopes)
            .await;
    assert_eq!(refused.unwrap_err().0, StatusCode::UNAUTHORIZED);
    let registry = root_registry(&server, &["acme/app"]).await;
    let m1 = push(&registry, "acme/app", "v1").await;
    let m2 = push(&registry, "acme/app", "v1").await;
    registry.delete_tag("acme/app", "v1").await.assert_allowed("tag delete");
    let pat = api.create_pat(&bob, &["read_registry"]).await;
    api.revoke_pat(pat.id).await;
    api.add_member("projects", project, bob.id, level::DEVELOPER).await;

    let d1 = format!("acme/app@{}", sha256_digest(&m1));
    let d2 = format!("acme/app@{}", sha256_digest(&m2));
    let token_name =
        api.call(Method::GET, &format!("/personal_access_tokens/{}", pat.id), None).await["name"]
            .as_str()
            .unwrap()
            .to_string();
    let row = |a: &str, who: &str, entity: &str, target: &str, outcome: &str| {
        (
            a.to_string(),
            who.to_string(),
            entity.to_string(),
            target.to_string(),
            outcome.to_string(),
        )
    };
    let expected = vec![
        row("login", "bob", "User", "bob", "failure"),
        row("login", "root", "User", "root", "success"),
        row("manifest_push", "root", "Project", &d1, "success"),
        row("tag_push", "root", "Project", "acme/app:v1", "success"),
        row("manifest_push", "root", "Project", &d2, "success"),
        row("tag_move", "root", "Project", "acme/app:v1", "success"),
        row("tag_delete", "root", "Project", "acme/app:v1", "success"),
        row("token_create", "root", "User", &token_name, "success"),
        row("token_revoke", "root", "User", &token_name, "success"),
        row("member_add", "root", "Project", "bob", "success"),
    ];
    assert_eq!(audit_since(&api, "/audit_events", mark).await, expected);
    let on_project: Vec<_> = expected.iter().filter(|r| r.2 == "Project").cloned().collect();
    assert_eq!(
        audit_since(&api, &format!("/projects/{project}/audit_events"), mark).await,
        on_project
    );
    assert_eq!(audit_since(&api, "/groups/acme/audit_events", mark).await, on_project);

    // The details: who (id, token kind), from where, what.
    let events = api.call(Method::GET, "/audit_events?per_page=100", None).await;
    let events = events.as_array().unwrap();
    let find = |name: &str| events.iter().find(|e| e["event_name"] == name).unwrap().clone();
    let moved = find("tag_move");
    assert_eq!(moved["author_id"], 1);
    assert_eq!(moved["entity_id"], project);
    assert_eq!(moved["details"]["ip_address"], "127.0.0.1");
    assert_eq!(moved["details"]["token_kind"], "password");
    assert_eq!(moved["details"]["target_type"], "Tag");
    assert_eq!(moved["details"]["from"], sha256_digest(&m1).as_str());
    assert_eq!(moved["details"]["to"], sha256_digest(&m2).as_str());
    assert_eq!(moved["details"]["user_agent"], "e2e-pusher/1.0");
    let failed = events
        .iter()
        .find(|e| e["event_name"] == "login" && e["details"]["outcome"] == "failure")
        .unwrap();
    assert_eq!(failed["author_id"], -1, "an unauthenticated author: {failed}");
    let created = find("token_create");
    assert_eq!(created["details"]["token_kind"], "personal_access_token");
    assert_eq!(created["entity_id"], bob.id);

    // Time windows and pages, with GitLab's headers.
    let all =
        api.call(Method::GET, "/audit_events?created_after=2000-01-01&per_page=100", None).await;
    assert_eq!(all.as_array().unwrap().len(), events.len());
    let none =
        api.call(Method::GET, "/audit_events?created_before=2000-01-01T00:00:00Z", None).await;
    assert_eq!(none, json!([]));
    let resp = api
        .http
        .get(server.url("/api/v4/audit_events?per_page=2&page=2"))
        .header("PRIVATE-TOKEN", &api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-page"], "2");
    assert_eq!(resp.headers()["x-per-page"], "2");
    assert_eq!(resp.headers()["x-total"], events.len().to_string().as_str());
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page[0]["id"], events[2]["id"]);
    let (status, body) =
        api.request(Method::GET, "/audit_events?created_after=yesterday", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"]["created_after"][0],
        "\"yesterday\" is not a time: use ISO 8601, e.g. 2026-11-30T05:21:09Z"
    );
    // The access log names the caller and the client address.
    assert!(server.log().contains("actor=root (personal_access_token"), "access log without actor");
}

/// Outsiders do not learn that a private project's audit log or hooks exist; guests and
/// developers are refused; hostile hook input is refused with a reason and stores nothing.
async fn audit_and_hooks_refuse_outsiders_and_hostile_input(backend: MetaBackend) {
    let server = start_allowing_local_hooks(backend, &[]);
    let api = GitLab::root(&server);
    let (group, project) = acme_app(&api).await;
    let mut as_user = Vec::new();
    for (name, role) in [
        ("olga", None),
        ("gina", Some(level::GUEST)),
        ("dev", Some(level::DEVELOPER)),
        ("mia", Some(level::MAINTAINER)),
    ] {
        let user = api.create_user(name).await;
        if let Some(role) = role {
            api.add_member("projects", project, user.id, role).await;
        }
        let pat = api.create_pat(&user, &["api"]).await;
        as_user.push(GitLab::with_token(&server, &pat.token));
    }
    let [olga, gina, dev, mia] = <[GitLab; 4]>::try_from(as_user).ok().unwrap();
    let hook_body = json!({ "url": "http://127.0.0.1:9/hook" });
    for path in [format!("/projects/{project}/audit_events"), format!("/projects/{project}/hooks")]
    {
        let (status, body) = olga.request(Method::GET, &path, None).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::NOT_FOUND, Some("404 Project Not Found")),
            "{path}"
        );
        for who in [&gina, &dev] {
            let (status, body) = who.request(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert_eq!(
                body["message"],
                "403 Forbidden - the audit events and hooks of acme/app need the maintainer role or higher"
            );
        }
        assert_eq!(mia.request(Method::GET, &path, None).await.0, StatusCode::OK, "{path}");
    }
    let (status, _) = olga
        .request(Method::POST, &format!("/projects/{project}/hooks"), Some(hook_body.clone()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = dev
        .request(Method::POST, &format!("/projects/{project}/hooks"), Some(hook_body.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in [format!("/groups/{group}/audit_events"), format!("/groups/{group}/hooks")] {
        let (status, body) = mia.request(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(
            body["message"],
            "403 Forbidden - the audit events and hooks of acme need the owner role or higher"
        );
    }
    let (status, _) = mia.request(Method::GET, "/audit_events", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let anonymous = GitLab::with_token(&server, "");
    let (status, _) = anonymous.request(Method::GET, "/audit_events", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A hook of another project is not reachable through this one.
    let other = api.create_project(group, "other", "private").await;
    let foreign =
        api.call(Method::POST, &format!("/projects/{other}/hooks"), Some(hook_body.clone())).await;
    let (status, _) = mia
        .request(Method::GET, &format!("/projects/{project}/hooks/{}", foreign["id"]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = mia
        .request(Method::DELETE, &format!("/projects/{project}/hooks/{}", foreign["id"]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let hooks = format!("/projects/{project}/hooks");
    let huge = format!("http://x/{}", "a".repeat(5000));
    // Each refused with 400 and GitLab's `{"message": {"<field>": ["<why>"]}}`.
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({ "url": "ftp://127.0.0.1/x" }),
            "url",
            "\"ftp://127.0.0.1/x\" is not an http or https URL",
        ),
        (
            json!({ "url": "file:///etc/passwd" }),
            "url",
            "\"file:///etc/passwd\" is not an http or https URL",
        ),
        (
            json!({ "url": "javascript:alert(1)" }),
            "url",
            "\"javascript:alert(1)\" is not an http or https URL",
        ),
        (
            json!({ "url": "http://user:pw@127.0.0.1/" }),
            "url",
            "must not hold credentials: give the secret as token (sent as X-Gitlab-Token)",
        ),
        (
            json!({ "url": "http://127.0.0.1/a b" }),
            "url",
            "\"http://127.0.0.1/a b\" contains whitespace or control characters",
        ),
        (json!({ "url": huge }), "url", "is longer than 2048 characters"),
        (json!({}), "url", "is required"),
        (
            json!({ "url": "http://127.0.0.1/", "token": "line\nbreak" }),
            "token",
            "must be printable ASCII (it is sent as a header)",
        ),
        (
            json!({ "url": "http://127.0.0.1/", "token": "t".repeat(2000) }),
            "token",
            "is longer than 1024 characters",
        ),
    ];
    for (body, field, message) in cases {
        let (status, answer) = mia.request(Method::POST, &hooks, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["message"][field][0], message, "{body}");
    }
    let flag = json!({ "url": "http://127.0.0.1/", "enable_ssl_verification": "maybe" });
    let (status, answer) = mia.request(Method::POST, &hooks, Some(flag)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) =
        mia.request(Method::POST, &hooks, Some(json!({ "url": "http://x/\u{0}" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(mia.call(Method::GET, &hooks, None).await, json!([]), "nothing was stored");

    // Changing a hook keeps its token unless a new one is given; deleting it is final.
    let hook = mia
        .call(Method::POST, &hooks, Some(json!({ "url": "https://127.0.0.1/h", "token": "tok" })))
        .await;
    let id = hook["id"].as_i64().unwrap();
    let changed = mia
        .call(
            Method::PUT,
            &format!("{hooks}/{id}"),
            Some(json!({ "enable_ssl_verification": false })),
        )
        .await;
    assert_eq!(changed["url"], "https://127.0.0.1/h");
    assert_eq!(changed["enable_ssl_verification"], false);
    let (status, _) = mia
        .request(Method::PUT, &format!("{hooks}/{id}"), Some(json!({ "url": "gopher://x/" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    mia.call(Method::DELETE, &format!("{hooks}/{id}"), None).await;
    let (status, body) = mia.request(Method::GET, &format!("{hooks}/{id}"), None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("404 Hook Not Found"))
    );
    let trail = audit_since(&mia, &format!("/projects/{project}/audit_events"), 0).await;
    let names: Vec<&str> =
        trail.iter().map(|r| r.0.as_str()).filter(|n| n.starts_with("hook_")).collect();
    assert_eq!(names, ["hook_create", "hook_update", "hook_delete"]);
}

/// By default a hook may not reach this machine or its local network, however the address is
/// spelled (server-side request forgery); a hook saved while that was allowed is refused at
/// delivery, including a name that resolves to loopback, and its receiver gets nothing.
async fn hooks_may_not_reach_the_local_network(backend: MetaBackend) {
    let receiver = Receiver::start().await;
    let mut server = start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let (_, project) = acme_app(&api).await;
    let hooks = format!("/projects/{project}/hooks");
    let port = receiver.port;
    let refused = "is blocked: requests to the local network are not allowed \
                   (an administrator can allow them with webhooks.allow_local_requests)";
    for url in [
        receiver.url("/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        format!("http://[::ffff:7f00:1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://LocalHost.:{port}/hook"),
        format!("http://0:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://[fd00::1]/".to_string(),
    ] {
        let (status, answer) = api.request(Method::POST, &hooks, Some(json!({ "url": url }))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        let message = answer["message"]["url"][0].as_str().unwrap_or_default();
        assert!(message.ends_with(refused), "{url}: {answer}");
    }
    assert_eq!(api.call(Method::GET, &hooks, None).await, json!([]), "nothing was saved");

    // Saved while allowed, then the operator takes the permission back.
    server.restart_with(&[ALLOW_LOCAL_HOOKS]);
    let api = GitLab::root(&server);
    for url in [receiver.url("/literal"), format!("http://localhost:{port}/name")] {
        api.call(Method::POST, &hooks, Some(json!({ "url": url }))).await;
    }
    server.restart_with(&[("STOWAGE_WEBHOOKS__ALLOW_LOCAL_REQUESTS", "false")]);
    let registry = root_registry(&server, &["acme/app"]).await;
    push(&registry, "acme/app", "v1").await;
    await_delivery_state(&server, 1, "failed");
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
    let log = server.log();
    for key in ["hook:1", "hook:2"] {
        let blocked = log
            .lines()
            .any(|l| l.contains("event delivery failed") && l.contains(key) && l.contains(refused));
        assert!(blocked, "no refusal logged for {key}: {log}");
    }
}

backend_tests!(
    hooks_may_not_reach_the_local_network,
    receivers_get_one_event_per_push_and_delete,
    a_receiver_that_was_down_gets_the_backlog,
    audit_log_records_a_scripted_scenario,
    audit_and_hooks_refuse_outsiders_and_hostile_input,
);
