//! Generated hostile requests against the real server, on both backends: random methods,
//! valid paths of `/v2`, `/api/v4` and `/jwt/auth` with one mutation or none (a percent-encoded
//! byte, a doubled slash, a dot segment, a case change, a look-alike, a NUL, …), random query
//! strings, random `Range`, `Content-Range`, `Content-Type`, `Accept` and credential headers,
//! and random small bodies (bytes, JSON manifests with fields valid or not, JSON objects).
//!
//! Whatever arrives: never a 5xx, never a dropped connection, and every 4xx but HEAD's carries
//! a JSON error body of bounded size (`{"message"}` or `{"error"}` under `/api/v4`,
//! `{"errors":[…]}` everywhere else, the HTTP layer's own refusals included); the server logs
//! no panic.
//!
//! Requests are sent verbatim over TCP (no client library normalises them), a fixed number
//! per backend from a fixed seed, so a run is quick and repeatable. For a longer or different
//! run: `STOWAGE_HOSTILE_CASES=5000 STOWAGE_HOSTILE_SEED=7 cargo nextest run -p stowage-e2e -E
//! 'binary(hostile_requests)'`.

mod common;

use std::time::Duration;

use common::*;
use e2e::gitlab::{self, repo_scope, start_auth_server, token_for, GitLab, ADMIN_PASSWORD};
use e2e::{backend_tests, MetaBackend};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(hostile_requests_never_fail_the_server, range_headers_at_the_limits);

const CASES: usize = 1000;
const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What the generated requests aim at: real names, digests and sessions of the server.
#[derive(Clone, Debug)]
struct Targets {
    repo: String,
    digest: String,
    layer: String,
    uploads: Vec<String>,
    project: i64,
    repository: i64,
    token: String,
}

#[derive(Clone, Debug)]
struct Hostile {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,30}",
        Just(String::new()),
        Just("\u{0}".to_string()),
        "[0-9]{18,25}",
        any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).collect()),
    ]
}

fn range() -> impl Strategy<Value = String> {
    prop_oneof![
        "bytes=[0-9]{0,4}-[0-9]{0,4}",
        "bytes=-[0-9]{1,4}",
        "bytes=[0-9]{1,3}-[0-9]{1,3},[0-9]{1,3}-[0-9]{0,3}",
        Just(format!("bytes=0-{}", u64::MAX)),
        Just(format!("bytes=-{}", u64::MAX)),
        Just("bytes=99999999999999999999999-".to_string()),
        Just("bytes=-0".to_string()),
        Just("bytes= 1 - 2".to_string()),
        Just("bytes=-1-2".to_string()),
        header_value(),
    ]
}

fn content_range() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}-[0-9]{1,4}",
        Just(format!("0-{}", i64::MAX)),
        Just(format!("0-{}", u64::MAX)),
        Just(format!("{}-{}", i64::MAX, i64::MAX)),
        Just("-1-5".to_string()),
        Just("bytes 0-0/1".to_string()),
        Just("bytes=0-1/*".to_string()),
        "[0-9]{18,22}-[0-9]{18,22}",
        header_value(),
    ]
}

fn media_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(OCI_MANIFEST.to_string()),
        Just(OCI_INDEX.to_string()),
        Just(DOCKER_MANIFEST.to_string()),
        Just(DOCKER_LIST.to_string()),
        Just(DOCKER_SCHEMA1_SIGNED.to_string()),
        Just("application/json".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        "[a-z]{1,8}/[a-z.+-]{1,12}(; charset=[a-z0-9-]{1,8})?",
        header_value(),
    ]
}

/// A JSON value that may be anything, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!("a\u{0}b")),
        Just(json!("x".repeat(5_000))),
        media_type().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A manifest with every field kept, changed or replaced by anything.
fn manifest(t: &Targets) -> impl Strategy<Value = Value> {
    let valid = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": t.layer, "size": 1}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": t.digest, "size": 1},
    });
    let fields = [
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "manifests",
        "subject",
        "annotations",
    ];
    prop::collection::vec((0..fields.len(), any_json(), any::<bool>()), 0..4).prop_map(
        move |edits| {
            let mut m = valid.clone();
            for (field, value, remove) in edits {
                let key = fields[field];
                if remove {
                    m.as_object_mut().unwrap().remove(key);
                } else if let Some(inner) = m[key].as_object_mut() {
                    // Change one field of a descriptor rather than all of it.
                    let sub = ["mediaType", "digest", "size", "urls", "artifactType"];
                    inner.insert(sub[value.to_string().len() % sub.len()].into(), value);
                } else {
                    m[key] = value;
                }
            }
            m
        },
    )
}

fn body(t: &Targets) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 0..64),
        3 => manifest(t).prop_map(|m| m.to_string().into_bytes()),
        2 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => "(name|path|tag_name_pattern|name_regex|name_regex_delete|keep_n|older_than|scopes\\[\\]|expires_at|access_level)=[ -~]{0,12}(&[a-z_]{1,8}=[ -~]{0,8}){0,3}"
            .prop_map(String::into_bytes),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        "(n|last|digest|mount|from|tag|artifactType|page|per_page|sort|name|name_exact|before|tags|service|scope|account|offline_token|client_id)=[A-Za-z0-9%:._/+-]{0,14}",
        "n=-?[0-9]{1,22}",
        Just(format!("digest={DIGEST}")),
        Just("scope=repository:acme/app:pull,push,delete".to_string()),
        Just("scope=registry:catalog:*".to_string()),
        "[a-z%\\[\\]]{1,6}=[ -~&&[^ #]]{0,10}",
    ];
    prop::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&"))
}

/// A path of the server, valid for the seeded project and repository, with the methods its
/// endpoint serves.
fn path(t: &Targets) -> impl Strategy<Value = (String, &'static [&'static str])> {
    let (repo, digest, layer) = (t.repo.clone(), t.digest.clone(), t.layer.clone());
    let (project, repository) = (t.project, t.repository);
    let uploads = t.uploads.clone();
    (0..26usize, 0..uploads.len(), "[A-Za-z0-9_][A-Za-z0-9._-]{0,8}").prop_map(
        move |(kind, upload, tag)| {
            let u = &uploads[upload];
            let p = format!("/api/v4/projects/{project}");
            let r = format!("/api/v4/projects/{project}/registry/repositories/{repository}");
            const READ: &[&str] = &["GET", "HEAD"];
            const MANIFEST: &[&str] = &["GET", "HEAD", "PUT", "DELETE"];
            const BLOB: &[&str] = &["GET", "HEAD", "DELETE"];
            const UPLOAD: &[&str] = &["GET", "PATCH", "PUT", "DELETE"];
            const RULES: &[&str] = &["GET", "POST"];
            const TAG: &[&str] = &["GET", "DELETE"];
            const POST: &[&str] = &["POST"];
            const TOKEN: &[&str] = &["GET", "POST"];
            const EDIT: &[&str] = &["GET", "PUT"];
            match kind {
                0 => ("/v2/".to_string(), READ),
                1 => ("/v2/_catalog".to_string(), READ),
                2 => (format!("/v2/{repo}/tags/list"), READ),
                3 => (format!("/v2/{repo}/manifests/{tag}"), MANIFEST),
                4 => (format!("/v2/{repo}/manifests/v1"), MANIFEST),
                5 => (format!("/v2/{repo}/manifests/{digest}"), MANIFEST),
                6 => (format!("/v2/{repo}/blobs/{layer}"), BLOB),
                7 => (format!("/v2/{repo}/blobs/{DIGEST}"), BLOB),
                8 => (format!("/v2/{repo}/blobs/uploads/"), POST),
                9..=11 => (format!("/v2/{repo}/blobs/uploads/{u}"), UPLOAD),
                12 => (format!("/v2/{repo}/referrers/{digest}"), READ),
                13 => ("/jwt/auth".to_string(), TOKEN),
                14 => (p.clone(), EDIT),
                15 => (format!("{p}/registry/repositories"), READ),
                16 => (format!("{r}/tags"), TAG),
                17 => (format!("{r}/tags/{tag}"), TAG),
                18 => (format!("/api/v4/registry/repositories/{repository}/tags/list"), READ),
                19 => (format!("{p}/registry/protection/tag/rules"), RULES),
                20 => (format!("{p}/registry/protection/repository/rules"), RULES),
                21 => (format!("{p}/registry/cleanup_policy/dry_run"), TOKEN),
                22 => ("/api/v4/groups/acme".to_string(), READ),
                23 => ("/api/v4/users".to_string(), TOKEN),
                24 => ("/api/v4/personal_access_tokens".to_string(), READ),
                _ => (r, TAG),
            }
        },
    )
}

/// One mutation of `path` after its first segment, at a position chosen by `at`.
fn mutate(path: &str, kind: usize, at: f64, byte: u8) -> String {
    let prefix_end = path[1..].find('/').map_or(path.len(), |i| i + 2).min(path.len());
    let (prefix, body) = path.split_at(prefix_end);
    if body.is_empty() {
        return format!("{path}%{byte:02X}");
    }
    let i = ((body.len() - 1) as f64 * at) as usize;
    let i = (0..=i).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
    let (before, after) = body.split_at(i);
    let c = after.chars().next().unwrap_or('a');
    let rest = &after[c.len_utf8()..];
    let mutated = match kind {
        0 => format!("{before}%{:02X}{rest}", c as u32 & 0xff),
        1 => format!("{before}%{byte:02X}{after}"),
        2 => format!("{before}/{after}"),
        3 => format!("{body}/"),
        4 => format!("{before}./{after}"),
        5 => format!("{before}x/../{after}"),
        6 => format!("{before}{}{rest}", c.to_ascii_uppercase()),
        7 => format!("{before}\u{430}{rest}"),
        8 => format!("{before}%00{after}"),
        9 => format!("{before}%C0%AF{rest}"),
        10 => format!("{before}%2F{rest}"),
        11 => format!("{before}{}{after}", "a".repeat(300)),
        12 => format!("{before}{rest}"),
        _ => format!("{before}%FF{after}"),
    };
    format!("{prefix}{mutated}")
}

fn hostile(t: &Targets) -> impl Strategy<Value = Hostile> {
    let token = t.token.clone();
    let any_method = prop_oneof![
        4 => Just("GET".to_string()),
        2 => Just("HEAD".to_string()),
        3 => Just("PUT".to_string()),
        3 => Just("POST".to_string()),
        3 => Just("PATCH".to_string()),
        2 => Just("DELETE".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[A-Z]{1,8}",
    ];
    // Mostly a method the endpoint serves, so requests get past routing into the handlers.
    let target = (path(t), any::<prop::sample::Index>(), prop::option::weighted(0.25, any_method))
        .prop_map(|((path, served), pick, other)| {
            (other.unwrap_or_else(|| served[pick.index(served.len())].to_string()), path)
        });
    let request_line = (
        target,
        prop::option::weighted(0.45, (0..14usize, 0.0..1.0f64, any::<u8>())),
        prop::option::weighted(0.5, query()),
    )
        .prop_map(|((method, path), mutation, query)| {
            let path = match mutation {
                Some((kind, at, byte)) => mutate(&path, kind, at, byte),
                None => path,
            };
            let path = match query {
                Some(q) if !q.is_empty() => format!("{path}?{q}"),
                _ => path,
            };
            (method, path)
        });
    let credential = prop_oneof![
        4 => Just(Some(("Authorization".to_string(), format!("Bearer {token}")))),
        3 => Just(Some(("PRIVATE-TOKEN".to_string(), gitlab::ADMIN_TOKEN.to_string()))),
        1 => Just(None),
        1 => (0..token.len(), any::<u8>()).prop_map({
            let token = token.clone();
            move |(i, b)| {
                // The real token with one character changed: never accepted.
                let mut t = token.clone().into_bytes();
                t[i] = b"AZaz09-_."[b as usize % 9];
                Some(("Authorization".to_string(), format!("Bearer {}", String::from_utf8_lossy(&t))))
            }
        }),
        1 => header_value().prop_map(|v| Some(("Authorization".to_string(), format!("Bearer {v}")))),
        1 => header_value().prop_map(|v| Some(("Authorization".to_string(), format!("Basic {v}")))),
        1 => "[A-Za-z0-9+/=]{0,24}".prop_map(|v| Some(("Authorization".to_string(), format!("Basic {v}")))),
        1 => header_value().prop_map(|v| Some(("PRIVATE-TOKEN".to_string(), v))),
    ];
    let headers = (
        credential,
        prop::option::weighted(0.3, range()),
        prop::option::weighted(0.3, content_range()),
        prop::option::weighted(0.5, media_type()),
        prop::option::weighted(0.2, prop_oneof![media_type(), Just(ACCEPT_ALL.to_string())]),
    )
        .prop_map(|(credential, range, content_range, content_type, accept)| {
            let mut headers: Vec<(String, String)> = credential.into_iter().collect();
            let mut add = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    headers.push((k.to_string(), v));
                }
            };
            add("Range", range);
            add("Content-Range", content_range);
            add("Content-Type", content_type);
            add("Accept", accept);
            headers
        });
    (request_line, headers, body(t)).prop_map(|((method, path), headers, body)| Hostile {
        method,
        path,
        headers,
        body,
    })
}

/// Sends one request verbatim; `Err` when no complete response came back.
async fn send(addr: &str, r: &Hostile) -> Result<RawResponse, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut head =
        format!("{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n", r.method, r.path);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", r.body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(&r.body);
    // The server may answer and close before reading everything (a refused header): the
    // answer is still read below.
    let _ = stream.write_all(&request).await;
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf)).await {
        Err(_) => return Err("no answer within 60 s".into()),
        Ok(Err(e)) if buf.is_empty() => return Err(format!("connection failed: {e}")),
        Ok(_) => {}
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(RawResponse { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// What is wrong with the answer to `r` (`None`: a proper answer).
fn problem(r: &Hostile, resp: &RawResponse) -> Option<String> {
    let text = resp.body_text();
    if resp.status >= 500 {
        return Some(format!("server error {}: {text}", resp.status));
    }
    if resp.status < 400 || r.method == "HEAD" {
        return None;
    }
    if resp.body.len() > 16 * 1024 {
        return Some(format!("a {}-byte refusal echoes the input", resp.body.len()));
    }
    let Ok(body) = serde_json::from_str::<Value>(&text) else {
        return Some(format!("{} with a body that is not JSON: {text:?}", resp.status));
    };
    let oci = body["errors"][0]["code"].as_str().is_some_and(|c| !c.is_empty())
        && body["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty());
    let gitlab =
        body["message"].is_string() || body["message"].is_object() || body["error"].is_string();
    if under(&r.path, "/api/v4") {
        (!gitlab && !oci).then(|| format!("{} without a message: {text}", resp.status))
    } else {
        (!oci).then(|| format!("{} without an OCI error: {text}", resp.status))
    }
}

/// Whether `path` is routed to the surface mounted at `prefix` (`/v2`, `/api/v4`).
fn under(path: &str, prefix: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn hostile_requests_never_fail_the_server(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let root = GitLab::root(&server);
    let group = root.create_group("acme", None, "private").await;
    let project = root.create_project(group, "app", "private").await;
    let http = gitlab::http_client();
    let scopes = [repo_scope("acme/app", "pull,push,delete"), "registry:catalog:*".to_string()];
    let token = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let registry = gitlab::Registry::new(&server, Some(token.clone()));
    gitlab::seed_image(&registry, "acme/app", &["v1".to_string(), "v2".to_string()]).await;
    let pulled = registry.pull("acme/app", "v1").await;
    let manifest: Value = serde_json::from_str(&pulled.body).expect("the seeded manifest");
    let digest = e2e::sha256_digest(pulled.body.as_bytes());
    let layer = manifest["layers"][0]["digest"].as_str().expect("a layer").to_string();
    let repositories = root
        .call(reqwest::Method::GET, &format!("/projects/{project}/registry/repositories"), None)
        .await;
    let repository = repositories[0]["id"].as_i64().expect("the repository is listed");
    // Upload sessions for PATCH/PUT/GET/DELETE to find (and some to end).
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let started = registry.start_upload("acme/app").await;
        started.assert_allowed("starting an upload");
        let location = started.body; // where `start_upload` keeps the Location
        uploads.push(location.rsplit('/').next().unwrap().split('?').next().unwrap().to_string());
    }
    let targets = Targets {
        repo: "acme/app".into(),
        digest,
        layer,
        uploads,
        project,
        repository,
        token: token.clone(),
    };

    let seed = env_number("STOWAGE_HOSTILE_SEED", 1);
    let cases = env_number("STOWAGE_HOSTILE_CASES", CASES as u64) as usize;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8] = backend as u8;
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = hostile(&targets);
    let mut problems = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..cases {
        let r = strategy.new_tree(&mut runner).expect("a request").current();
        let shown = || {
            let path: String = r.path.chars().take(200).collect();
            let body: String = String::from_utf8_lossy(&r.body).chars().take(200).collect();
            format!("#{i} {} {path} {:?} body {body:?}", r.method, r.headers)
        };
        match send(&server.addr, &r).await {
            Ok(resp) => {
                *statuses.entry(resp.status).or_insert(0) += 1;
                if let Some(p) = problem(&r, &resp) {
                    problems.push(format!("{}: {p}", shown()));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", shown())),
        }
    }
    let log = server.log();
    if let Some(at) = log.find("panicked at") {
        problems.push(format!("the server panicked: {}", &log[at..(at + 600).min(log.len())]));
    }
    // Still serving.
    let resp = http.get(format!("{}/v2/", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the server still answers /v2/");
    assert!(
        problems.is_empty(),
        "seed {seed}, {cases} requests, statuses {statuses:?}; {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!("seed {seed}: {cases} hostile requests, statuses {statuses:?}");
}

/// What the generated requests found, kept as fixed cases: a `Content-Range` ending at
/// 2^63-1 made the chunk length overflow (`end - start + 1`), which killed the request in
/// debug builds; numbers past 2^64 and the other edges of both range headers.
async fn range_headers_at_the_limits(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = e2e::unique_repo("range-limits");
    let data = e2e::random_bytes(100);
    let digest = reg.push_blob(&repo, &data).await;
    let blob = format!("/v2/{repo}/blobs/{digest}");
    let max = i64::MAX;
    for (range, status, content_range) in [
        (format!("bytes=0-{}", u64::MAX), 206, Some("bytes 0-99/100")),
        ("bytes=0-99999999999999999999999999".to_string(), 206, Some("bytes 0-99/100")),
        (format!("bytes=-{}", u64::MAX), 206, Some("bytes 0-99/100")),
        ("bytes=90-".to_string(), 206, Some("bytes 90-99/100")),
        (format!("bytes={max}-"), 416, Some("bytes */100")),
        ("bytes=99999999999999999999999-".to_string(), 416, Some("bytes */100")),
        ("bytes=-0".to_string(), 416, Some("bytes */100")),
        ("bytes=+1-2".to_string(), 416, Some("bytes */100")),
        ("bytes=-1-2".to_string(), 416, Some("bytes */100")),
        ("bytes=0-1,5-6".to_string(), 416, Some("bytes */100")),
    ] {
        let resp =
            reg.req(reqwest::Method::GET, &blob).header("Range", &range).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "Range: {range}");
        assert_eq!(header(&resp, "content-range").as_deref(), content_range, "Range: {range}");
        if status == 416 {
            assert_oci_error(resp, &[416], &["RANGE_INVALID"]).await;
        }
    }

    for (content_range, status, code) in [
        (format!("0-{max}"), 400, "BLOB_UPLOAD_INVALID"),
        (format!("0-{}", u64::MAX), 416, "RANGE_INVALID"),
        (format!("{max}-{max}"), 416, "RANGE_INVALID"),
        ("-1-2".to_string(), 416, "RANGE_INVALID"),
        ("+0-2".to_string(), 416, "RANGE_INVALID"),
        ("0-99999999999999999999999".to_string(), 416, "RANGE_INVALID"),
    ] {
        let location = reg.start_upload(&repo).await;
        let resp = reg
            .req(reqwest::Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", &content_range)
            .body(b"abc".to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("Content-Range: {content_range}: no answer: {e}"));
        let body = assert_oci_error(resp, &[status], &[code]).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.len() < 400, "{message}");
        // The session is untouched: still empty, and still usable.
        let resp = reg.get(&location).await;
        assert_status(&resp, 204);
        assert_eq!(header(&resp, "range").as_deref(), Some("0-0"));
    }
}
