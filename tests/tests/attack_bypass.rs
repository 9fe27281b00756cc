//! Attack class: **bypass**: reaching a repository through another spelling of its name.
//!
//! The registry once authorized `/v2` requests on the raw path (where `acme/%61pp` was no valid
//! name and so needed nothing) while its handlers decoded the path and acted on `acme/app`:
//! anyone could read, write and delete any private repository. These tests send every `/v2`
//! route, with every other way of spelling a name we could think of, as every kind of caller,
//! over raw TCP (so no client library normalises the path), and demand for each request exactly
//! the answer the plain spelling gets from the same caller, or a 400/404 refusal in the OCI
//! error format. The same for `/api/v4` paths that carry a URL-encoded project path.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::gitlab::{
    level, repo_scope, seed_image, start_auth_server, token_for, GitLab, Registry, ADMIN_PASSWORD,
};
use e2e::{random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

e2e::backend_tests!(
    every_v2_route_answers_one_spelling_of_a_name,
    every_api_route_answers_one_spelling_of_a_project_path,
);

/// One answer: the status and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Sends one request over a fresh TCP connection, exactly as written (`target` is put on the
/// request line byte for byte).
async fn send_raw(
    addr: &str,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    request.extend_from_slice(addr.as_bytes());
    request.extend_from_slice(b"\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("send request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers within 30 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Answer { status, body }
}

/// Spellings of `acme/app` that must never reach `acme/app` by another way. Each is inserted
/// into the request path as raw bytes.
fn name_spellings() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        // percent-encoding of any byte, including '/'
        "acme/%61pp",
        "%61cme/app",
        "acme%2Fapp",
        "acme%2fapp",
        "acme%2F%61pp",
        "acme/ap%70",
        "acme/app%00",
        "acme/app%20",
        "acme/%2e/app",
        "acme/%2E%2E/acme/app",
        "acme%2F..%2Facme%2Fapp",
        // overlong UTF-8 of 'a' and of '/'
        "acme/%C1%A1pp",
        "acme%C0%AFapp",
        "acme/%E0%81%A1pp",
        // empty and dot segments, trailing slash
        "acme//app",
        "/acme/app",
        "acme/app/",
        "acme/./app",
        "./acme/app",
        "acme/app/.",
        "acme/x/../app",
        "x/../acme/app",
        "acme/app/..",
        // case changes
        "Acme/app",
        "acme/App",
        "ACME/APP",
        // unicode look-alikes, encoded
        "acme/%D0%B0pp",
        "acme/%EF%BD%81pp",
        "acme%E2%88%95app",
        // other separators
        "acme\\app",
        "acme/app;x",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Raw (unencoded) non-ASCII bytes: a Cyrillic 'а', a fullwidth 'ａ', an overlong '/'.
    out.push("acme/\u{430}pp".as_bytes().to_vec());
    out.push("acme/\u{ff41}pp".as_bytes().to_vec());
    out.push(b"acme\xc0\xafapp".to_vec());
    out
}

/// A request template: method, path with `{N}` for the name, headers, body.
struct Route {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Route {
    fn new(method: &'static str, path: String) -> Route {
        Route { method, path, headers: Vec::new(), body: Vec::new() }
    }

    fn target(&self, name: &[u8]) -> Vec<u8> {
        let (before, after) = self.path.split_once("{N}").expect("template has {N}");
        [before.as_bytes(), name, after.as_bytes()].concat()
    }
}

struct Caller {
    label: &'static str,
    token: Option<String>,
}

/// A private project `acme/app` holding `latest`, and callers of every kind.
struct World {
    server: TestServer,
    api: GitLab,
    project: i64,
    manifest: Vec<u8>,
    manifest_digest: String,
    layer: String,
    callers: Vec<Caller>,
    /// `PRIVATE-TOKEN`s (api scope) of the same people, for `/api/v4`.
    api_tokens: Vec<(&'static str, Option<String>)>,
}

async fn world(backend: MetaBackend) -> World {
    let server = start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let acme = api.create_group("acme", None, "private").await;
    let project = api.create_project(acme, "app", "private").await;
    let http = e2e::gitlab::http_client();
    let scopes = vec![repo_scope("acme/app", "pull,push,delete"), "registry:catalog:*".to_string()];
    let root = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let root = Registry::new(&server, Some(root));
    seed_image(&root, "acme/app", &["latest".to_string()]).await;
    let pulled = root.pull("acme/app", "latest").await;
    let manifest = pulled.body.as_bytes().to_vec();
    let manifest_digest = sha256_digest(&manifest);
    let v: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_string();

    let mut callers = vec![Caller { label: "no token", token: None }];
    let anonymous = token_for(&http, &server.base, None, &scopes).await;
    callers.push(Caller { label: "anonymous token", token: Some(anonymous) });
    let mut api_tokens = vec![("anonymous", None)];
    for (label, role) in [
        ("outsider", None),
        ("reporter", Some(level::REPORTER)),
        ("developer", Some(level::DEVELOPER)),
    ] {
        let user = api.create_user(label).await;
        if let Some(role) = role {
            api.add_member("projects", project, user.id, role).await;
        }
        let token = token_for(
            &http,
            &server.base,
            Some((user.username.as_str(), user.password.as_str())),
            &scopes,
        )
        .await;
        callers.push(Caller { label, token: Some(token) });
        let pat = api.create_pat(&user, &["api"]).await;
        api_tokens.push((label, Some(pat.token)));
    }
    World { server, api, project, manifest, manifest_digest, layer, callers, api_tokens }
}

impl World {
    /// Every `/v2` route of one repository, with `{N}` where the name goes.
    async fn v2_routes(&self) -> Vec<Route> {
        // A live session of the developer's, for the upload routes that need one, and an id
        // that is no session, for those that would end it.
        let developer = self.callers.iter().find(|c| c.label == "developer").unwrap();
        let dev = Registry::new(&self.server, developer.token.clone());
        let started = dev.start_upload("acme/app").await;
        started.assert_allowed("developer starts an upload");
        let session = started.body.rsplit('/').next().unwrap().to_string();
        let stranger = "0b0e3a5c-5d5e-4c1e-9a43-3b5a8f0e7c11";
        let (m, l) = (&self.manifest_digest, &self.layer);
        let empty = sha256_digest(b"");
        let mut put = Route::new("PUT", "/v2/{N}/manifests/spelled".into());
        put.headers.push(("Content-Type", e2e::gitlab::OCI_MANIFEST.into()));
        put.body = self.manifest.clone();
        let mut patch = Route::new("PATCH", format!("/v2/{{N}}/blobs/uploads/{session}"));
        patch.body = random_bytes(16);
        vec![
            Route::new("GET", "/v2/{N}/tags/list".into()),
            Route::new("GET", "/v2/{N}/manifests/latest".into()),
            Route::new("HEAD", "/v2/{N}/manifests/latest".into()),
            Route::new("GET", format!("/v2/{{N}}/manifests/{m}")),
            put,
            Route::new("DELETE", "/v2/{N}/manifests/latest".into()),
            Route::new("DELETE", format!("/v2/{{N}}/manifests/{m}")),
            Route::new("GET", format!("/v2/{{N}}/blobs/{l}")),
            Route::new("HEAD", format!("/v2/{{N}}/blobs/{l}")),
            Route::new("DELETE", format!("/v2/{{N}}/blobs/{l}")),
            Route::new("POST", "/v2/{N}/blobs/uploads/".into()),
            Route::new("POST", format!("/v2/{{N}}/blobs/uploads/?mount={l}&from=acme/app")),
            Route::new("POST", format!("/v2/{{N}}/blobs/uploads/?digest={empty}")),
            Route::new("GET", format!("/v2/{{N}}/blobs/uploads/{session}")),
            patch,
            Route::new("PUT", format!("/v2/{{N}}/blobs/uploads/{stranger}?digest={empty}")),
            Route::new("DELETE", format!("/v2/{{N}}/blobs/uploads/{stranger}")),
            Route::new("GET", format!("/v2/{{N}}/referrers/{m}")),
        ]
    }
}

/// Whether `answer` is an acceptable answer to a misspelled request whose plain spelling got
/// `plain`: the same status, or a 400/404 refusal in the OCI error format.
fn spelling_problem(plain: u16, answer: &Answer, what: &str) -> Option<String> {
    if answer.status == plain && !(200..300).contains(&plain) {
        return None;
    }
    // HEAD answers carry no body.
    if matches!(answer.status, 400 | 404) && what.contains(" HEAD ") {
        return None;
    }
    if matches!(answer.status, 400 | 404) {
        let json: Option<Value> = serde_json::from_str(&answer.body).ok();
        let code = json.as_ref().and_then(|v| v["errors"][0]["code"].as_str().map(String::from));
        return match code {
            Some(_) => None,
            None => Some(format!(
                "{what}: {} without an OCI error body: {:?}",
                answer.status, answer.body
            )),
        };
    }
    if answer.status == plain {
        // A success through another spelling is exactly the bypass.
        return Some(format!(
            "{what}: answered {} like the plain spelling: another spelling reached the repository",
            answer.status
        ));
    }
    Some(format!(
        "{what}: answered {} where the plain spelling got {plain} (only the same answer or 400/404 is acceptable): {}",
        answer.status,
        answer.body.chars().take(300).collect::<String>()
    ))
}

async fn every_v2_route_answers_one_spelling_of_a_name(backend: MetaBackend) {
    let w = world(backend).await;
    let addr = w.server.addr.clone();
    let routes = w.v2_routes().await;
    let spellings = name_spellings();
    let mut problems = Vec::new();
    let mut checked = 0;
    for caller in &w.callers {
        let auth = caller.token.as_ref().map(|t| format!("Bearer {t}"));
        for route in &routes {
            let mut headers: Vec<(&str, &str)> =
                route.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            let plain =
                send_raw(&addr, route.method, &route.target(b"acme/app"), &headers, &route.body)
                    .await;
            assert!(
                plain.status != 0 && plain.status < 500,
                "{} {} {}: plain spelling answered {}: {}",
                caller.label,
                route.method,
                route.path,
                plain.status,
                plain.body
            );
            for name in &spellings {
                let target = route.target(name);
                let answer = send_raw(&addr, route.method, &target, &headers, &route.body).await;
                let what = format!(
                    "{} {} {}",
                    caller.label,
                    route.method,
                    String::from_utf8_lossy(&target)
                );
                checked += 1;
                problems.extend(spelling_problem(plain.status, &answer, &what));
            }
        }
        // The catalog has no name, but a name of its own.
        let plain = send_raw(&addr, "GET", b"/v2/_catalog", &headers_for(&auth), b"").await;
        for target in [
            "/v2/_c%61talog",
            "/v2/%5Fcatalog",
            "/v2/_CATALOG",
            "/v2//_catalog",
            "/v2/_catalog/",
            "/v2/./_catalog",
            "/v2/x/../_catalog",
        ] {
            let answer = send_raw(&addr, "GET", target.as_bytes(), &headers_for(&auth), b"").await;
            checked += 1;
            problems.extend(spelling_problem(
                plain.status,
                &answer,
                &format!("{} GET {target}", caller.label),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} misspelled requests were answered wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Nothing happened to the repository but what the plain spellings were allowed to do.
    let root = Registry::new(
        &w.server,
        Some(
            token_for(
                &e2e::gitlab::http_client(),
                &w.server.base,
                Some(("root", ADMIN_PASSWORD)),
                &[repo_scope("acme/app", "pull"), "registry:catalog:*".to_string()],
            )
            .await,
        ),
    );
    let tags = root.tags("acme/app").await;
    let tags: Value = serde_json::from_str(&tags.body).unwrap();
    let tags: BTreeSet<&str> =
        tags["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(
        tags,
        BTreeSet::from(["latest", "spelled"]),
        "only the developer's plain push tagged"
    );
    root.send(Method::GET, &format!("/v2/acme/app/blobs/{}", w.layer))
        .await
        .assert_allowed("the layer nobody may delete is still there");
    assert_eq!(root.catalog().await.unwrap(), vec!["acme/app".to_string()]);
}

fn headers_for(auth: &Option<String>) -> Vec<(&'static str, &str)> {
    auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default()
}

async fn every_api_route_answers_one_spelling_of_a_project_path(backend: MetaBackend) {
    let w = world(backend).await;
    let addr = w.server.addr.clone();
    // The repository's id, for the routes below a project.
    let repos = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/repositories", w.project), None)
        .await;
    let repository = repos[0]["id"].as_i64().expect("repository id");
    let routes: Vec<Route> = vec![
        Route::new("GET", "/api/v4/projects/{N}".into()),
        Route::new("GET", "/api/v4/projects/{N}/registry/repositories".into()),
        Route::new(
            "GET",
            format!("/api/v4/projects/{{N}}/registry/repositories/{repository}/tags"),
        ),
        Route::new(
            "DELETE",
            format!("/api/v4/projects/{{N}}/registry/repositories/{repository}/tags/latest"),
        ),
        Route::new("DELETE", format!("/api/v4/projects/{{N}}/registry/repositories/{repository}")),
        Route::new("GET", "/api/v4/projects/{N}/members".into()),
        Route::new("GET", "/api/v4/projects/{N}/registry/protection/tag/rules".into()),
        Route::new("GET", "/api/v4/projects/{N}/deploy_tokens".into()),
        {
            let mut r = Route::new("PUT", "/api/v4/projects/{N}".into());
            r.headers.push(("Content-Type", "application/json".into()));
            r.body = br#"{"container_registry_access_level":"enabled"}"#.to_vec();
            r
        },
    ];
    let spellings: Vec<&[u8]> = vec![
        b"acme%2fapp",
        b"%61cme%2Fapp",
        b"acme%2F%61pp",
        b"acme%252Fapp",
        b"acme%2F.%2Fapp",
        b"acme%2F..%2Facme%2Fapp",
        b"acme%2Fx%2F..%2Fapp",
        b"acme%2F%2Fapp",
        b"%2Facme%2Fapp",
        b"acme%2Fapp%2F",
        b"ACME%2FAPP",
        b"acme%2FApp",
        b"acme%2Fapp%00",
        b"acme%2F%D0%B0pp",
        b"acme%2F%C1%A1pp",
        b"acme%C0%AFapp",
        b"acme/app",
        b"acme%5Capp",
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for (label, token) in &w.api_tokens {
        for route in &routes {
            let mut headers: Vec<(&str, &str)> =
                route.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(t) = token {
                headers.push(("PRIVATE-TOKEN", t.as_str()));
            }
            let plain =
                send_raw(&addr, route.method, &route.target(b"acme%2Fapp"), &headers, &route.body)
                    .await;
            assert!(
                plain.status != 0 && plain.status < 500,
                "{label} {} {}: plain spelling answered {}: {}",
                route.method,
                route.path,
                plain.status,
                plain.body
            );
            for name in &spellings {
                let target = route.target(name);
                let answer = send_raw(&addr, route.method, &target, &headers, &route.body).await;
                checked += 1;
                let what = format!("{label} {} {}", route.method, String::from_utf8_lossy(&target));
                // `%61cme%2Fapp` and `acme%2fapp` decode to the plain path: the API decodes
                // once and decides on what it decoded, so the same answer (even a success) is
                // right for them.
                let same_path = matches!(*name, b"acme%2fapp" | b"%61cme%2Fapp" | b"acme%2F%61pp");
                if same_path && answer.status == plain.status {
                    continue;
                }
                if answer.status >= 500 || answer.status == 0 {
                    problems.push(format!("{what}: answered {}: {}", answer.status, answer.body));
                } else if answer.status != plain.status && !matches!(answer.status, 400 | 404) {
                    problems.push(format!(
                        "{what}: answered {} where the plain spelling got {} (only the same answer or 400/404 is acceptable): {}",
                        answer.status, plain.status, answer.body
                    ));
                } else if (200..300).contains(&answer.status) {
                    problems.push(format!("{what}: another spelling of the path was served"));
                } else if serde_json::from_str::<Value>(&answer.body).is_err() {
                    problems
                        .push(format!("{what}: {} is not JSON: {:?}", answer.status, answer.body));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} misspelled API requests were answered wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Nobody in the table may delete: the repository and its tag are still there.
    let tags = w
        .api
        .call(
            Method::GET,
            &format!("/projects/{}/registry/repositories/{repository}/tags", w.project),
            None,
        )
        .await;
    assert_eq!(tags[0]["name"], "latest", "{tags}");
}
