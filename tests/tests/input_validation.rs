//! Hostile spellings of every untrusted string and number that reaches the metadata database:
//! NUL as `%00` in paths, queries and JSON bodies, other control characters, invalid UTF-8,
//! 100 KB values, huge and negative numbers, LIKE wildcards. Each case has one expected status
//! (and, for `/v2`, error code) that both SQLite and PostgreSQL must give; none may be a 5xx.
//!
//! `/v2` runs on an open registry (no auth layer in the way); `/api/v4` as root with a token.

mod common;

use common::*;
use e2e::gitlab::{self, repo_scope, start_auth_server, token_for, GitLab, ADMIN_PASSWORD};
use e2e::{backend_tests, sha256_digest, unique_repo, MetaBackend};
use reqwest::{Client, Method};
use serde_json::{json, Value};

backend_tests!(
    v2_listings_and_paths,
    v2_manifest_fields,
    api_v4_paths_and_bodies,
    api_v4_tag_listings
);

/// 100 KB of `c`, for bodies.
fn huge(c: char) -> String {
    c.to_string().repeat(100 * 1024)
}

/// 60 000 of `c`, for URLs: HTTP libraries refuse URIs of 64 KiB and more, so this is as long
/// as a URL value gets (and longer than SQLite's 50 000-byte `LIKE` pattern limit).
fn long(c: char) -> String {
    c.to_string().repeat(60_000)
}

/// What a case must answer: a status, and a `/v2` error code or a `/api/v4` message part.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    status: u16,
    expect: &'static str,
}

fn case(method: Method, path: impl Into<String>, status: u16, expect: &'static str) -> Case {
    Case { method, path: path.into(), body: None, status, expect }
}

fn get(path: impl Into<String>, status: u16, expect: &'static str) -> Case {
    case(Method::GET, path, status, expect)
}

fn with_body(method: Method, path: &str, body: Value, status: u16, expect: &'static str) -> Case {
    Case { method, path: path.to_string(), body: Some(body), status, expect }
}

/// Sends every case; collects every mismatch and fails once, listing them all.
async fn run(
    http: &Client,
    base: &str,
    token: Option<&str>,
    api_v4: bool,
    cases: Vec<Case>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for c in cases {
        let shown =
            if c.path.len() > 120 { format!("{}…", &c.path[..120]) } else { c.path.clone() };
        let what = format!("{} {shown}", c.method);
        let mut req = http.request(c.method.clone(), format!("{base}{}", c.path));
        if let Some(token) = token {
            req = req.header("PRIVATE-TOKEN", token);
        }
        if let Some(body) = &c.body {
            req = req.json(body);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                problems.push(format!("{what}: no answer: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let text_shown: String = text.chars().take(300).collect();
        if status >= 500 {
            problems.push(format!("{what}: server error {status}: {text_shown}"));
            continue;
        }
        if status != c.status {
            problems.push(format!("{what}: expected {}, got {status}: {text_shown}", c.status));
            continue;
        }
        if text.len() > 4096 {
            problems.push(format!("{what}: a {}-byte answer echoes the input", text.len()));
        }
        if status < 400 {
            continue;
        }
        if api_v4 {
            // `{"message": "…"}`, or `{"message": {"field": ["…"]}}` for a field's validation.
            let message =
                serde_json::from_str::<Value>(&text).ok().and_then(|v| match &v["message"] {
                    Value::String(m) => Some(m.clone()),
                    Value::Object(fields) => Some(Value::Object(fields.clone()).to_string()),
                    _ => None,
                });
            match message {
                Some(m) if m.contains(c.expect) => {}
                _ => problems.push(format!(
                    "{what}: expected {{\"message\"}} containing {:?}: {text_shown}",
                    c.expect
                )),
            }
        } else if let Some(problem) = error_body_problem(&text, &[c.expect], &what) {
            problems.push(problem);
        }
    }
    problems
}

#[track_caller]
fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "{} case(s) failed:\n{}", problems.len(), problems.join("\n"));
}

async fn v2_listings_and_paths(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("inputs");
    let image = reg.push_image(&repo, Some("v1")).await;
    let d = &image.digest;
    let tags = format!("/v2/{repo}/tags/list");
    let referrers = format!("/v2/{repo}/referrers/{d}");
    const BAD_VALUE: &str = "INVALID_QUERY_PARAMETER_VALUE";
    let cases = vec![
        // Tag listing: `last` must be a tag.
        get(format!("{tags}?last=a%00b"), 400, BAD_VALUE),
        get(format!("{tags}?last=%00"), 400, BAD_VALUE),
        get(format!("{tags}?last=a%01b"), 400, BAD_VALUE),
        get(format!("{tags}?last=a%0Ab"), 400, BAD_VALUE),
        get(format!("{tags}?last=%FF%FE"), 400, BAD_VALUE),
        get(format!("{tags}?last=-v"), 400, BAD_VALUE),
        get(format!("{tags}?last=a%25"), 400, BAD_VALUE),
        get(format!("{tags}?last={}", long('a')), 400, BAD_VALUE),
        get(format!("{tags}?last=v0"), 200, ""),
        get(format!("{tags}?last="), 200, ""),
        get(format!("{tags}?n=9223372036854775807"), 200, ""),
        get(format!("{tags}?n=9223372036854775808"), 400, "PAGINATION_NUMBER_INVALID"),
        get(format!("{tags}?n=-1"), 400, "PAGINATION_NUMBER_INVALID"),
        get(format!("{tags}?n=-9223372036854775808"), 400, "PAGINATION_NUMBER_INVALID"),
        get(format!("{tags}?n=%00"), 400, "PAGINATION_NUMBER_INVALID"),
        get(format!("{tags}?n={}", long('9')), 400, "PAGINATION_NUMBER_INVALID"),
        // Catalog: `last` must be a repository name.
        get("/v2/_catalog?last=a%00b", 400, BAD_VALUE),
        get("/v2/_catalog?last=UPPER", 400, BAD_VALUE),
        get("/v2/_catalog?last=a%2F%2Fb", 400, BAD_VALUE),
        get(format!("/v2/_catalog?last={}", long('a')), 400, BAD_VALUE),
        get(format!("/v2/_catalog?last={repo}"), 200, ""),
        get("/v2/_catalog?n=9223372036854775807", 200, ""),
        get("/v2/_catalog?n=-5", 400, "PAGINATION_NUMBER_INVALID"),
        // Referrers: `artifactType` must be a media type.
        get(format!("{referrers}?artifactType=a%00b"), 400, BAD_VALUE),
        get(format!("{referrers}?artifactType=application%2Fjson%00"), 400, BAD_VALUE),
        get(format!("{referrers}?artifactType=application%2Fa%0Db"), 400, BAD_VALUE),
        get(format!("{referrers}?artifactType=nonsense"), 400, BAD_VALUE),
        get(format!("{referrers}?artifactType=a%2F{}", long('b')), 400, BAD_VALUE),
        get(format!("{referrers}?artifactType=application/vnd.example%2Bjson"), 200, ""),
        // NUL, control characters and size in path segments: the router refuses any
        // percent-encoded byte; what it lets through, the handlers parse.
        get("/v2/a%00b/tags/list", 400, "NAME_INVALID"),
        get(format!("/v2/{repo}%00/tags/list"), 400, "NAME_INVALID"),
        get(format!("/v2/{}/tags/list", long('a')), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/manifests/a%00b"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/manifests/v1%0A"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/manifests/sha256:a%00"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/manifests/-v1"), 400, "MANIFEST_INVALID"),
        get(format!("/v2/{repo}/manifests/{}", long('a')), 400, "MANIFEST_INVALID"),
        get(format!("/v2/{repo}/manifests/sha256:zz"), 400, "DIGEST_INVALID"),
        get(format!("/v2/{repo}/blobs/sha256:%00"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/blobs/sha256:{}", long('a')), 400, "DIGEST_INVALID"),
        case(
            Method::DELETE,
            format!("/v2/{repo}/blobs/{}%00", image.layer_digest),
            400,
            "NAME_INVALID",
        ),
        case(
            Method::DELETE,
            format!("/v2/{repo}/blobs/{}0", image.layer_digest),
            400,
            "DIGEST_INVALID",
        ),
        get(format!("/v2/{repo}/referrers/sha256:%00"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/referrers/sha256:zz"), 400, "DIGEST_INVALID"),
        get(format!("/v2/{repo}/blobs/uploads/%00"), 400, "NAME_INVALID"),
        get(format!("/v2/{repo}/blobs/uploads/not-a-session"), 404, "BLOB_UPLOAD_UNKNOWN"),
        case(Method::PUT, format!("/v2/{repo}/manifests/v2?tag=a%00b"), 400, "MANIFEST_INVALID"),
    ];
    assert_no_problems(run(&reg.http, &reg.server.base, None, false, cases).await);

    // Longer than any URI a client library sends: the HTTP layer refuses it, never a 5xx.
    for path in [format!("/v2/{}/tags/list", huge('a')), format!("{tags}?last={}", huge('a'))] {
        let resp = raw_request(&reg.server.addr, "GET", &path, &[], b"").await;
        assert!((400..500).contains(&resp.status), "a 100 KB URI: {}", resp.head);
    }
}

/// Strings inside a manifest that the database stores: a NUL there made PostgreSQL fail the
/// PUT while SQLite stored it.
async fn v2_manifest_fields(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("manifest-fields");
    let image = reg.push_image(&repo, Some("v1")).await;
    let config = reg.push_blob(&repo, b"{}").await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut m = oci_image_manifest(
            json!({"mediaType": OCI_EMPTY, "digest": config, "size": 2}),
            vec![descriptor(OCI_LAYER, &image.layer)],
        );
        m["subject"] = image.descriptor();
        edit(&mut m);
        to_bytes(&m)
    };
    for (what, manifest) in [
        ("artifactType with NUL", with(&|m| m["artifactType"] = json!("application/a\u{0}b"))),
        ("artifactType with newline", with(&|m| m["artifactType"] = json!("application/a\nb"))),
        ("artifactType not a media type", with(&|m| m["artifactType"] = json!("sbom"))),
        ("huge artifactType", with(&|m| m["artifactType"] = json!(format!("a/{}", huge('b'))))),
        ("config mediaType with NUL", with(&|m| m["config"]["mediaType"] = json!("a/\u{0}"))),
    ] {
        let digest = sha256_digest(&manifest);
        for reference in [digest.as_str(), "t1"] {
            let resp = reg.put_manifest(&repo, reference, OCI_MANIFEST, &manifest).await;
            let body = assert_oci_error(resp, &[400], &["MANIFEST_INVALID"]).await;
            let message = body["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.len() < 1000, "{what}: the refusal echoes the input: {message}");
        }
        let resp = reg.get_manifest(&repo, &digest).await;
        assert_oci_error(resp, &[404], &["MANIFEST_UNKNOWN"]).await;
    }
    // Annotations are stored as JSON text, where a NUL is escaped: accepted on both backends.
    let manifest = with(&|m| m["annotations"] = json!({"note": "a\u{0}b"}));
    let digest = reg.push_manifest(&repo, "annotated", OCI_MANIFEST, &manifest).await;
    let resp = reg.get(&format!("/v2/{repo}/referrers/{}", image.digest)).await;
    assert_status(&resp, 200);
    let index: Value = resp.json().await.unwrap();
    let entry =
        index["manifests"].as_array().unwrap().iter().find(|e| e["digest"] == json!(digest));
    assert_eq!(entry.expect("the referrer is listed")["annotations"]["note"], json!("a\u{0}b"));
}

/// An `/api/v4` server with group `acme`, project `acme/app` (which holds image tags), and
/// the ids `/api/v4` addresses them by.
struct ApiEnv {
    server: e2e::TestServer,
    root: GitLab,
    project: i64,
    repository: i64,
}

async fn api_env(backend: MetaBackend, tags: &[&str]) -> ApiEnv {
    let server = start_auth_server(backend, &[]);
    let root = GitLab::root(&server);
    let group = root.create_group("acme", None, "private").await;
    let project = root.create_project(group, "app", "private").await;
    let scopes = [repo_scope("acme/app", "pull,push,delete")];
    let http = gitlab::http_client();
    let token = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let registry = gitlab::Registry::new(&server, Some(token));
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    gitlab::seed_image(&registry, "acme/app", &tags).await;
    let repositories =
        root.call(Method::GET, &format!("/projects/{project}/registry/repositories"), None).await;
    let repository = repositories[0]["id"].as_i64().expect("the repository is listed");
    ApiEnv { server, root, project, repository }
}

async fn api_v4_paths_and_bodies(backend: MetaBackend) {
    let env = api_env(backend, &["v1"]).await;
    let p = env.project;
    let mut cases = Vec::new();
    // Project and group ids: a number or a full path that could exist.
    for prefix in ["/projects", "/groups"] {
        for (id, status, expect) in [
            ("a%00b", 400, "id \"a\\0b\" is neither a numeric id nor a URL-encoded full path"),
            ("acme%2Fa%00b", 400, "neither a numeric id nor"),
            ("%00", 400, "neither a numeric id nor"),
            ("a%01b", 400, "neither a numeric id nor"),
            ("a%0Ab", 400, "neither a numeric id nor"),
            ("a%7Fb", 400, "neither a numeric id nor"),
            ("a%FFb", 400, "Invalid UTF-8 in `id`"),
            ("-1", 400, "neither a numeric id nor"),
            ("Acme", 400, "must be lowercase"),
            ("acme%2F..%2Fapp", 400, "neither a numeric id nor"),
            ("acme%2F%2Fapp", 400, "neither a numeric id nor"),
            ("%2Facme", 400, "neither a numeric id nor"),
            ("acme%2F", 400, "neither a numeric id nor"),
            ("99999999999999999999", 404, "Not Found"),
            ("acme%2Fnope", 404, "Not Found"),
        ] {
            cases.push(get(format!("{prefix}/{id}"), status, expect));
        }
        cases.push(get(format!("{prefix}/{}", long('a')), 400, "no full path is longer"));
        cases.push(get(format!("{prefix}/a%00b/registry/repositories"), 400, "neither"));
    }
    cases.extend([
        get("/groups/acme", 200, ""),
        get("/projects/acme%2Fapp", 200, ""),
        get("/projects/a%00b/members", 400, "neither"),
        get("/groups/a%00b/deploy_tokens", 400, "neither"),
        get("/projects/a%00b/registry/protection/tag/rules", 400, "neither"),
        get("/projects/a%00b/registry/cleanup_policy/dry_run", 400, "neither"),
        case(Method::PUT, "/projects/a%00b", 400, "neither"),
        case(Method::POST, "/projects/a%00b/job_tokens", 400, "neither"),
        // Numeric-only ids: anything else names nothing.
        get("/users/a%00b", 404, "User Not Found"),
        get("/personal_access_tokens/a%00b", 404, "Token Not Found"),
        get("/registry/repositories/a%00b", 404, "Repository Not Found"),
        get("/registry/repositories/-1", 404, "Repository Not Found"),
        get("/registry/repositories/99999999999999999999", 404, "Repository Not Found"),
        // Query parameters.
        get("/projects/acme%2Fapp/registry/repositories?tags=%00", 400, "NUL"),
        // Bodies: no parameter may hold a NUL; references are parsed like path ids.
        with_body(Method::POST, "/groups", json!({"name": "x\u{0}", "path": "x"}), 400, "parameter \"name\" contains a NUL"),
        with_body(Method::POST, "/groups", json!({"name": "x", "path": "x\u{0}"}), 400, "NUL"),
        with_body(Method::POST, "/groups", json!({"name": "sub", "path": "sub", "parent_id": "a\u{0}b"}), 400, "NUL"),
        with_body(Method::POST, "/groups", json!({"name": "sub", "path": "sub", "parent_id": "a\u{1}b"}), 400, "parent_id"),
        with_body(Method::POST, "/projects", json!({"name": "p", "path": "p", "namespace_id": "acme/x y"}), 400, "namespace_id"),
        with_body(Method::POST, "/projects", json!({"name": "p", "path": "p", "namespace_id": huge('a')}), 400, "namespace_id"),
        with_body(Method::POST, "/users", json!({"username": "u1", "email": "u1@example.com\u{0}", "name": "U"}), 400, "NUL"),
        with_body(Method::POST, "/users", json!({"username": "u2", "email": format!("u2@{}", huge('e')), "name": "U"}), 400, "too long"),
        with_body(Method::POST, "/users", json!({"username": "u\u{0}3", "email": "u3@example.com", "name": "U"}), 400, "NUL"),
        with_body(Method::POST, "/users/1/personal_access_tokens", json!({"name": "t\u{0}", "scopes": ["api"]}), 400, "NUL"),
        with_body(Method::POST, "/users/1/personal_access_tokens", json!({"name": "t", "scopes": ["api", "\u{0}"]}), 400, "NUL"),
        with_body(Method::POST, &format!("/projects/{p}/registry/protection/tag/rules"), json!({"tag_name_pattern": "v\u{0}", "immutable": true}), 400, "NUL"),
        with_body(Method::POST, &format!("/projects/{p}/registry/protection/repository/rules"), json!({"repository_path_pattern": "acme/app\u{0}", "minimum_access_level_for_push": "owner"}), 400, "NUL"),
        with_body(Method::PUT, &format!("/projects/{p}"), json!({"container_expiration_policy_attributes": {"enabled": true, "name_regex": "v\u{0}"}}), 400, "container_expiration_policy_attributes.name_regex"),
        with_body(Method::POST, &format!("/projects/{p}/deploy_tokens"), json!({"name": "d\u{0}", "scopes": ["read_registry"]}), 400, "NUL"),
    ]);
    // Form-encoded and query-string parameters go through the same check.
    let problems = run(
        &env.root.http,
        &format!("{}/api/v4", env.server.base),
        Some(&env.root.token),
        true,
        cases,
    )
    .await;
    let mut problems = problems;
    let form = env
        .root
        .http
        .post(format!("{}/api/v4/groups", env.server.base))
        .header("PRIVATE-TOKEN", &env.root.token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("name=f%00&path=f")
        .send()
        .await
        .unwrap();
    if form.status().as_u16() != 400 {
        problems.push(format!("form-encoded NUL: {}", form.status()));
    }
    assert_no_problems(problems);
    // Nothing was created by the refused requests.
    let (_, group) = env.root.request(Method::GET, "/groups/sub", None).await;
    assert_eq!(group["message"], json!("404 Group Not Found"), "{group}");
}

async fn api_v4_tag_listings(backend: MetaBackend) {
    let env = api_env(backend, &["v1", "a_b", "ab", "latest"]).await;
    let tags = format!("/projects/{}/registry/repositories/{}/tags", env.project, env.repository);
    let keyset = format!("/registry/repositories/{}/tags/list", env.repository);
    let cases = vec![
        // Page numbers: OFFSET must never overflow (PostgreSQL refuses a negative one).
        get(format!("{tags}?page=9223372036854775807"), 400, "page must be at most 1000000"),
        get(format!("{tags}?page=9223372036854775807&per_page=100"), 400, "page must be at most"),
        get(format!("{tags}?page=1000001"), 400, "page must be at most"),
        get(format!("{tags}?page=1000000&per_page=100"), 200, ""),
        get(format!("{tags}?page=9223372036854775808"), 400, "is not an integer"),
        get(format!("{tags}?page={}", long('9')), 400, "is not an integer"),
        get(format!("{tags}?page=%00"), 400, "NUL"),
        get(format!("{tags}?page=-1"), 200, ""),
        get(format!("{tags}?page=-9223372036854775808"), 200, ""),
        get(format!("{tags}?page=0&per_page=0"), 200, ""),
        get(format!("{tags}?per_page=9223372036854775807"), 200, ""),
        get(format!("{tags}?per_page=-9223372036854775808"), 200, ""),
        // Tag names in paths.
        get(format!("{tags}/v1"), 200, ""),
        get(format!("{tags}/a%00b"), 400, "tag_name"),
        get(format!("{tags}/v1%0A"), 400, "tag_name"),
        get(format!("{tags}/{}", long('a')), 400, "tag_name"),
        get(format!("{tags}/nope"), 404, "Tag Not Found"),
        get(format!("{tags}/v%FF"), 400, "Invalid UTF-8 in `tag_name`"),
        case(Method::DELETE, format!("{tags}/a%00b"), 400, "tag_name"),
        // Keyset listing: markers and filters are tags or parts of one.
        get(format!("{keyset}?last=a%00b"), 400, "last"),
        get(format!("{keyset}?before=a%00b"), 400, "before"),
        get(format!("{keyset}?last={}", long('a')), 400, "last"),
        get(format!("{keyset}?sort=published_at&last=1%7Ca%00b"), 400, "last"),
        get(
            format!("{keyset}?sort=-published_at&before=99999999999999999999%7Cv1"),
            400,
            "published_at",
        ),
        get(format!("{keyset}?sort=published_at&last=%00%7Cv1"), 400, "NUL"),
        get(format!("{keyset}?name=a%00b"), 400, "NUL"),
        get(format!("{keyset}?name={}", long('a')), 400, "not part of a tag name"),
        get(format!("{keyset}?name=%25"), 400, "not part of a tag name"),
        get(format!("{keyset}?name_exact=a%00b"), 400, "NUL"),
        get(format!("{keyset}?name_exact=-v"), 400, "name_exact"),
        get(format!("{keyset}?n=9223372036854775807"), 400, "n must be between"),
        get(format!("{keyset}?sort={}", long('x')), 400, "sort"),
        get(format!("{keyset}?last=v0"), 200, ""),
    ];
    let base = format!("{}/api/v4", env.server.base);
    assert_no_problems(run(&env.root.http, &base, Some(&env.root.token), true, cases).await);

    // `_` in the name filter is a literal, not LIKE's any-character: only `a_b` matches.
    let listed = env.root.call(Method::GET, &format!("{keyset}?name=_"), None).await;
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a_b"], "{listed}");
    // The page past the end is empty, with the right headers.
    let resp = env
        .root
        .http
        .get(format!("{base}{tags}?page=1000000&per_page=100"))
        .header("PRIVATE-TOKEN", &env.root.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-total"], "4");
    assert_eq!(resp.headers()["x-page"], "1000000");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
}
