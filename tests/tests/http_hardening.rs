//! The HTTP layer under abuse: slowloris connections (half-open requests, silent and idle
//! connections) are closed and never keep real clients out; every response carries the
//! security headers; and what the HTTP machinery answers by itself — malformed paths, bytes
//! no URL may hold, bad headers, unknown paths, wrong methods, oversized requests — is JSON.

mod common;

use std::time::Duration;

use common::*;
use e2e::gitlab::{start_auth_server, ADMIN_TOKEN};
use e2e::{backend_tests, random_bytes, unique_repo, MetaBackend, TestServer};
use reqwest::{Client, Method};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

backend_tests!(
    slowloris_leaves_room_for_real_clients,
    slow_and_idle_connections_are_closed,
    slow_steady_upload_is_not_cut,
    security_headers_on_every_response,
    http_layer_errors_are_json,
    token_and_api_answers_are_not_cached,
);

fn registry_with(backend: MetaBackend, env: &[(&str, &str)]) -> Registry {
    let server = TestServer::start_with(backend, env);
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Registry { server, http }
}

/// Opens `n` connections that each send the start of a request and never finish it.
async fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ").as_bytes())
            .await
            .expect("send a partial request");
        connections.push(stream);
    }
    connections
}

/// Waits (within a generous bound) until the server has closed `stream`; returns what it sent.
async fn closed_by_server(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed {what}");
    received
}

/// 600 half-open requests against a cap of 200 connections and a header timeout far longer
/// than the test: the server closes the ones that waited longest to make room, and a real
/// pull and push go through at once.
async fn slowloris_leaves_room_for_real_clients(backend: MetaBackend) {
    let reg = registry_with(
        backend,
        &[
            ("STOWAGE_HTTP__MAX_CONNECTIONS", "200"),
            ("STOWAGE_HTTP__TIMEOUTS__HEADER_READ", "10m"),
            ("STOWAGE_HTTP__TIMEOUTS__IDLE", "10m"),
        ],
    );
    let repo = unique_repo("slowloris");
    let data = random_bytes(200_000);
    let digest = reg.push_blob(&repo, &data).await;

    let mut attackers = half_open(&reg.server.addr, 600).await;

    // A new client, on new connections: without room it would wait ten minutes.
    let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let resp = client
        .get(reg.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("a pull is served while 600 half-open requests are held");
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
    let more = random_bytes(50_000);
    let resp = client
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", e2e::sha256_digest(&more))))
        .header("content-type", "application/octet-stream")
        .body(more)
        .send()
        .await
        .expect("a push is served too");
    assert_status(&resp, 201);

    // The oldest half-open requests were closed to make room; they never got an answer.
    let received = closed_by_server(&mut attackers[0], "the oldest half-open request").await;
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    assert!(reg.server.log().contains("connection limit reached (http.max_connections)"));
}

/// With a 1 s header timeout and idle timeout: half-open requests, silent connections and
/// kept-alive connections without a next request are all closed by the server.
async fn slow_and_idle_connections_are_closed(backend: MetaBackend) {
    let reg = registry_with(
        backend,
        &[("STOWAGE_HTTP__TIMEOUTS__HEADER_READ", "1s"), ("STOWAGE_HTTP__TIMEOUTS__IDLE", "1s")],
    );
    let addr = reg.server.addr.clone();
    let mut half_open = half_open(&addr, 300).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // A kept-alive connection that made one request, then says nothing.
    let mut kept_alive = TcpStream::connect(&addr).await.unwrap();
    kept_alive
        .write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();

    for stream in &mut half_open {
        let received = closed_by_server(stream, "a half-open request").await;
        assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    }
    for stream in &mut silent {
        closed_by_server(stream, "a connection that sent nothing").await;
    }
    let answered = closed_by_server(&mut kept_alive, "an idle kept-alive connection").await;
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200 OK\r\n"), "its request was answered: {answered}");

    // And the server goes on serving.
    assert_status(&reg.get("/v2/").await, 200);
}

/// A body that streams slowly but steadily for longer than both timeouts is not cut: the
/// timeouts cover waiting for a request head, not a request in progress.
async fn slow_steady_upload_is_not_cut(backend: MetaBackend) {
    let reg = registry_with(
        backend,
        &[("STOWAGE_HTTP__TIMEOUTS__HEADER_READ", "1s"), ("STOWAGE_HTTP__TIMEOUTS__IDLE", "1s")],
    );
    let repo = unique_repo("slow-upload");
    let location = reg.start_upload(&repo).await;
    let chunks: Vec<Vec<u8>> = (0..8).map(|_| random_bytes(64 * 1024)).collect();
    let data = chunks.concat();
    let digest = e2e::sha256_digest(&data);
    let path = with_query(&location, &format!("digest={digest}"));
    let addr = reg.server.addr.clone();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // About 3.2 s in all, each gap shorter than a timeout, the whole longer than both.
    for chunk in &chunks {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(chunk).await.expect("the server keeps reading the upload");
    }
    let answer = closed_by_server(&mut stream, "the finished upload").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
}

/// One response read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "JSON answer: {}",
            self.head
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}\n\n{}", self.head, String::from_utf8_lossy(&self.body))
        })
    }
}

/// Sends `request` verbatim — any bytes — and reads every answer until the server closes.
async fn exchange(addr: &str, request: &[u8]) -> Vec<Answer> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything: read what it said.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .expect("answered and closed within 60 s")
        .ok();
    let mut answers = Vec::new();
    let mut rest = &buf[..];
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut answer = Answer { status, head, body: Vec::new() };
        let length: usize =
            answer.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let body_end = (end + 4 + length).min(rest.len());
        answer.body = rest[end + 4..body_end].to_vec();
        rest = &rest[body_end..];
        answers.push(answer);
    }
    assert!(!answers.is_empty(), "no answer to {:?}", String::from_utf8_lossy(request));
    answers
}

async fn answer(addr: &str, request: &[u8]) -> Answer {
    exchange(addr, request).await.remove(0)
}

fn get(path: &[u8]) -> Vec<u8> {
    [b"GET ".as_slice(), path, b" HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n"].concat()
}

fn assert_security_headers(answer: &Answer, what: &str) {
    assert_eq!(answer.header("x-content-type-options").as_deref(), Some("nosniff"), "{what}");
    assert_eq!(answer.header("x-frame-options").as_deref(), Some("DENY"), "{what}");
    assert_eq!(
        answer.header("content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'"),
        "{what}"
    );
}

/// An OCI error (`/v2`): `{"errors":[{"code": <code>, "message": …}]}`.
fn assert_oci_error(answer: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.head);
    let json = answer.json();
    assert_eq!(json["errors"][0]["code"], code, "{what}: {json}");
    assert!(json["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    assert_security_headers(answer, what);
}

/// GitLab's error (`{"message": "<status> …"}`), with the OCI `errors` array too.
fn assert_message_error(answer: &Answer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.head);
    let json = answer.json();
    let message = json["message"].as_str().unwrap_or_else(|| panic!("{what}: {json}"));
    assert!(message.starts_with(&status.to_string()), "{what}: {json}");
    assert!(json["errors"][0]["code"].is_string(), "{what}: {json}");
    assert_security_headers(answer, what);
}

async fn security_headers_on_every_response(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("headers");
    let data = random_bytes(1000);
    let digest = reg.push_blob(&repo, &data).await;
    let addr = &reg.server.addr;

    let base = answer(addr, &get(b"/v2/")).await;
    assert_eq!(base.status, 200);
    assert_security_headers(&base, "GET /v2/");

    // Blobs are immutable: their own Cache-Control stays.
    let blob = answer(addr, &get(format!("/v2/{repo}/blobs/{digest}").as_bytes())).await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body, data);
    assert_security_headers(&blob, "blob GET");
    assert_eq!(blob.header("cache-control").as_deref(), Some("max-age=31536000"));

    let unknown = answer(addr, &get(format!("/v2/{repo}/manifests/nope").as_bytes())).await;
    assert_oci_error(&unknown, 404, "MANIFEST_UNKNOWN", "unknown manifest");

    // reqwest sees them too, on HEAD and on errors.
    for (method, path) in [
        (Method::HEAD, format!("/v2/{repo}/blobs/{digest}")),
        (Method::GET, format!("/v2/{repo}/tags/list")),
        (Method::DELETE, "/v2/".to_string()),
        (Method::GET, "/api/v4/projects".to_string()),
    ] {
        let resp = reg.req(method.clone(), &path).send().await.unwrap();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ] {
            assert_eq!(header(&resp, name).as_deref(), Some(value), "{method} {path}");
        }
    }
}

async fn http_layer_errors_are_json(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let addr = &reg.server.addr;

    // Percent-encoded bytes that do not decode to UTF-8, in each /v2 endpoint.
    for path in [
        "/v2/a%FF/manifests/latest",
        "/v2/acme/app/manifests/%FF",
        "/v2/a%C0%AF/tags/list",
        "/v2/acme/app/blobs/sha256%3A%FE",
        "/v2/%80/blobs/uploads/",
    ] {
        let refused = answer(addr, &get(path.as_bytes())).await;
        assert_oci_error(&refused, 400, "NAME_INVALID", path);
    }
    // NUL is UTF-8, and no name may hold it.
    let nul = answer(addr, &get(b"/v2/a%00b/tags/list")).await;
    assert_oci_error(&nul, 400, "NAME_INVALID", "NUL in a name");
    let nul = answer(addr, &get(b"/v2/a/manifests/%00")).await;
    assert_eq!(nul.status, 400, "NUL in a reference");
    nul.json();

    // Bytes no URL may hold, sent raw: hyper refuses them before any handler runs.
    for byte in [0x80u8, 0xC0, 0xFF] {
        let path = [b"/v2/a".as_slice(), &[byte], b"b/tags/list"].concat();
        let refused = answer(addr, &get(&path)).await;
        assert_message_error(&refused, 400, &format!("raw byte {byte:#x} in a /v2 path"));
        let path = [b"/api/v4/projects/".as_slice(), &[byte]].concat();
        let refused = answer(addr, &get(&path)).await;
        assert_message_error(&refused, 400, &format!("raw byte {byte:#x} in an API path"));
    }
    // The API answers bad UTF-8 in its path parameters itself, GitLab's way.
    let api = answer(addr, &get(b"/api/v4/projects/a%FF")).await;
    assert_eq!(api.status, 400, "bad UTF-8 in an API path: {}", api.head);
    assert!(api.json()["message"].is_string(), "bad UTF-8 in an API path");
    assert_security_headers(&api, "bad UTF-8 in an API path");

    // Unknown paths, wrong methods.
    for path in ["/", "/nonexistent", "/v2x", "/api/v40/x", "/.env"] {
        let unknown = answer(addr, &get(path.as_bytes())).await;
        assert_message_error(&unknown, 404, path);
    }
    let post_base = answer(
        addr,
        b"POST /v2/ HTTP/1.1\r\nHost: registry\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_oci_error(&post_base, 405, "UNSUPPORTED", "POST /v2/");

    // Requests hyper cannot parse.
    let malformed: [(&str, Vec<u8>, u16); 6] = [
        (
            "a space in a header name",
            b"GET /v2/ HTTP/1.1\r\nHost: r\r\nBad Header: y\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a control byte in a header value",
            b"GET /v2/ HTTP/1.1\r\nHost: r\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a Content-Length that is not a number",
            b"POST /v2/ HTTP/1.1\r\nHost: r\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
        ),
        ("an unknown HTTP version", b"GET /v2/ HTTP/9.1\r\nHost: r\r\n\r\n".to_vec(), 400),
        (
            "a 70 000-byte path",
            get(format!("/v2/{}/tags/list", "a".repeat(70_000)).as_bytes()),
            414,
        ),
        (
            "200 headers",
            [
                b"GET /v2/ HTTP/1.1\r\nHost: r\r\n".to_vec(),
                (0..200).flat_map(|i| format!("X-H{i}: v\r\n").into_bytes()).collect(),
                b"\r\n".to_vec(),
            ]
            .concat(),
            431,
        ),
    ];
    for (what, request, status) in malformed {
        let refused = answer(addr, &request).await;
        assert_message_error(&refused, status, what);
        assert_eq!(refused.header("cache-control").as_deref(), Some("no-store"), "{what}");
    }

    // On a kept-alive connection: a good request, then a malformed one. The first answer is
    // intact, the second is JSON.
    let answers = exchange(
        addr,
        b"GET /v2/ HTTP/1.1\r\nHost: r\r\n\r\nGET /v2/\xff HTTP/1.1\r\nHost: r\r\n\r\n",
    )
    .await;
    assert_eq!(answers.len(), 2, "two answers");
    assert_eq!((answers[0].status, answers[0].body.as_slice()), (200, b"{}".as_slice()));
    assert_message_error(&answers[1], 400, "a malformed second request");
}

/// Token and API answers carry secrets: never cached. So is every 401. A body over the
/// token endpoint's limit is refused with 413 in JSON.
async fn token_and_api_answers_are_not_cached(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let addr = &server.addr;
    let no_store = |answer: &Answer, what: &str| {
        assert_security_headers(answer, what);
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"), "{what}");
    };

    let anonymous = answer(addr, &get(b"/jwt/auth?service=container_registry")).await;
    assert_eq!(anonymous.status, 200);
    no_store(&anonymous, "anonymous token");
    let login = answer(
        addr,
        format!(
            "GET /jwt/auth?service=container_registry HTTP/1.1\r\nHost: r\r\n\
             Authorization: Basic {}\r\nConnection: close\r\n\r\n",
            e2e::gitlab::base64_std(format!("root:{ADMIN_TOKEN}").as_bytes())
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(login.status, 200, "{}", String::from_utf8_lossy(&login.body));
    assert!(login.json()["token"].is_string());
    no_store(&login, "token for root");
    let bad_login = answer(
        addr,
        b"GET /jwt/auth?service=container_registry HTTP/1.1\r\nHost: r\r\n\
          Authorization: Basic cm9vdDp3cm9uZw==\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(bad_login.status, 401);
    no_store(&bad_login, "refused login");
    let put = answer(
        addr,
        b"PUT /jwt/auth HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_message_error(&put, 405, "PUT /jwt/auth");
    // axum's own 405: rewritten as JSON, its Allow header kept.
    assert!(put.header("allow").is_some_and(|allow| allow.contains("POST")), "{}", put.head);
    no_store(&put, "PUT /jwt/auth");

    let challenge = answer(addr, &get(b"/v2/")).await;
    assert_eq!(challenge.status, 401);
    assert!(challenge.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer ")));
    no_store(&challenge, "401 on /v2/");

    let user = answer(
        addr,
        format!(
            "GET /api/v4/user HTTP/1.1\r\nHost: r\r\nPRIVATE-TOKEN: {ADMIN_TOKEN}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(user.status, 200);
    no_store(&user, "GET /api/v4/user");
    let api_401 = answer(addr, &get(b"/api/v4/user")).await;
    assert_eq!(api_401.status, 401);
    no_store(&api_401, "401 on /api/v4");

    // The token endpoint reads form bodies up to 64 KiB (a real one is a few hundred bytes);
    // one byte more is 413, in JSON. (One byte over, so the server has read all of it when it
    // answers and closes.)
    let big = vec![b'a'; 64 * 1024 + 1];
    let too_large = answer(
        addr,
        &[
            format!(
                "POST /jwt/auth HTTP/1.1\r\nHost: r\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                big.len()
            )
            .into_bytes(),
            big,
        ]
        .concat(),
    )
    .await;
    assert_message_error(&too_large, 413, "an oversized token request");
    assert_eq!(too_large.json()["errors"][0]["code"], "SIZE_INVALID");
}
