//! Attack class: **exhaustion** — making the registry spend CPU, memory or log space until it
//! stops serving others.
//!
//! - Login floods: password verification (argon2, tens of milliseconds each) runs on a bounded
//!   pool that leaves half the cores to the registry; what does not fit waits in a bounded
//!   line, and beyond it is refused at once with 429 and `Retry-After`.
//! - Huge or odd credentials (megabytes, NUL, control characters) are refused with the same
//!   401 as a wrong password before any database query or hash, and never reach the log whole.
//! - Token requests: repeated or unknown actions are dropped, at most 32 resources per
//!   request, so every issued token is small; tokens longer than any issued are not read.
//!
//! - Regexes users give (tag protection patterns, cleanup policies, bulk deletes) compile within
//!   a bounded size, or are refused with 400 when given; manifests beyond the size limit are
//!   refused with 413 `SIZE_INVALID` before they are read whole.
//!
//! Clients at many addresses are played through a trusted proxy (`X-Forwarded-For`), so that
//! throttling does not answer before the password check does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::gitlab::{
    jwt_parts, repo_scope, request_token, request_token_from, start_auth_server, GitLab, Registry,
    ADMIN_PASSWORD, SERVICE,
};
use e2e::MetaBackend;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

e2e::backend_tests!(
    a_login_flood_does_not_slow_the_registry,
    a_login_flood_beyond_the_password_pool_is_refused_with_retry_after,
    huge_and_control_character_credentials_are_refused_unread,
    token_requests_and_tokens_are_bounded,
    regex_bombs_and_oversized_manifests_are_refused,
);

const TRUSTED_PROXY: (&str, &str) = ("STOWAGE_HTTP__TRUSTED_PROXIES", "[127.0.0.1/32]");

/// The answer to a token request: status, `Retry-After`, body.
async fn token_attempt(
    http: &reqwest::Client,
    base: &str,
    client: &str,
    user: &str,
    secret: &str,
) -> (StatusCode, Option<String>, String) {
    let resp = http
        .get(format!("{base}/jwt/auth"))
        .query(&[("service", SERVICE)])
        .basic_auth(user, Some(secret))
        .header("X-Forwarded-For", client)
        .send()
        .await
        .expect("token request");
    let status = resp.status();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    (status, retry, resp.text().await.unwrap_or_default())
}

/// `n` failed logins, `concurrency` at a time, each from its own address, alternating `root`
/// (a real password hash) and unknown usernames (the dummy hash). Returns every answer.
async fn flood(
    base: &str,
    n: usize,
    concurrency: usize,
) -> Vec<(StatusCode, Option<String>, String)> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, base) = (http.clone(), base.to_string());
            async move {
                let client = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
                let user = if i % 2 == 0 { "root".to_string() } else { format!("nobody-{i}") };
                token_attempt(&http, &base, &client, &user, &format!("wrong-{i}")).await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Panics unless every answer is a 401 UNAUTHORIZED or a 429 TOOMANYREQUESTS with
/// `Retry-After`, both with the OCI error JSON; returns how many were 429.
#[track_caller]
fn assert_clean_refusals(answers: &[(StatusCode, Option<String>, String)]) -> usize {
    let mut busy = 0;
    for (status, retry, body) in answers {
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: the refusal is not JSON ({e}): {body}"));
        match *status {
            StatusCode::UNAUTHORIZED => assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED"),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
                let secs: u64 = retry
                    .as_deref()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_else(|| panic!("429 without Retry-After: {body}"));
                assert!(secs >= 1, "Retry-After: {secs}");
                busy += 1;
            }
            other => panic!("a failed login answered {other}: {body}"),
        }
    }
    busy
}

/// 300 failed logins, 32 at a time, from 300 addresses (so each one is really hashed), while
/// another client keeps using the registry: `GET /v2/` stays fast (median under 200 ms —
/// generous: it is about 10 ms on an idle debug build, and was about 1 s when argon2 ran on the
/// request threads) and never fails. The bound is loose on purpose, for busy 2-core machines.
async fn a_login_flood_does_not_slow_the_registry(backend: MetaBackend) {
    let server = start_auth_server(backend, &[TRUSTED_PROXY]);
    let http = e2e::gitlab::http_client();
    let token = request_token(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &[])
        .await
        .expect("root token");
    let registry = Registry::new(&server, Some(token));
    registry.send(Method::GET, "/v2/").await.assert_allowed("GET /v2/ before the flood");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (registry, done) = (registry.clone(), done.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let outcome = registry.send(Method::GET, "/v2/").await;
                latencies.push(started.elapsed());
                outcome.assert_allowed("GET /v2/ during a login flood");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let started = Instant::now();
    let answers = flood(&server.base, 300, 32).await;
    let flood_time = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut latencies = probe.await.expect("the probe never failed");
    let busy = assert_clean_refusals(&answers);
    assert!(busy < answers.len() / 2, "{busy} of {} logins were refused as busy", answers.len());

    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "login flood: 300 logins in {flood_time:?} ({busy} busy); GET /v2/ x{}: median \
         {median:?}, max {max:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 10, "too few probes ({}) to judge", latencies.len());
    assert!(median < Duration::from_millis(200), "GET /v2/ median {median:?} during the flood");
    // The right password still works afterwards from an address that did not guess.
    let got = request_token_from(
        &http,
        &server.base,
        Some(("root", ADMIN_PASSWORD)),
        &[],
        Some("203.0.113.7"),
    )
    .await;
    assert!(got.is_ok(), "root after the flood: {got:?}");
}

/// More logins at once than the password pool lets wait (128): the overflow is refused at
/// once with 429 TOOMANYREQUESTS and `Retry-After`, never queued without end nor failed with a
/// 5xx; the registry recovers as soon as the flood is over.
async fn a_login_flood_beyond_the_password_pool_is_refused_with_retry_after(backend: MetaBackend) {
    let server = start_auth_server(backend, &[TRUSTED_PROXY]);
    let answers = flood(&server.base, 400, 400).await;
    let busy = assert_clean_refusals(&answers);
    assert!(busy > 0, "400 logins at once all waited for the password pool");
    assert!(busy < 400, "no login was checked at all");
    let http = e2e::gitlab::http_client();
    let got = request_token_from(
        &http,
        &server.base,
        Some(("root", ADMIN_PASSWORD)),
        &[],
        Some("203.0.113.7"),
    )
    .await;
    assert!(got.is_ok(), "root after the flood: {got:?}");
}

/// Megabyte usernames and passwords, NUL and control characters, in Basic credentials and in
/// the OAuth2 form: the same 401 as a wrong password (on both database backends: a NUL once
/// made PostgreSQL fail with 500), the long name never logged, the log small. The API refuses
/// passwords that could never log in, and over-long API tokens.
async fn huge_and_control_character_credentials_are_refused_unread(backend: MetaBackend) {
    let server = start_auth_server(backend, &[TRUSTED_PROXY]);
    let http = e2e::gitlab::http_client();
    let log_before = server.log().len();
    let (_, _, wrong_password) =
        token_attempt(&http, &server.base, "192.0.2.1", "root", "wrong").await;
    assert_eq!(code(&wrong_password), "UNAUTHORIZED");

    // Basic credentials within what HTTP header limits let through.
    let long_name = format!("root{}", "Z".repeat(150_000));
    let long_secret = "S".repeat(150_000);
    let basic: Vec<(&str, &str, &str)> = vec![
        ("a 150 KB username", &long_name, "wrong"),
        ("a 150 KB password", "root", &long_secret),
        ("a 257-byte username", &long_name[..257], "wrong"),
        ("a NUL in the username", "ro\0ot", "wrong"),
        ("a NUL in the password", "root", "Root\0pass"),
        ("a newline in the username", "root\nFAKE LOG LINE", "wrong"),
        ("an escape sequence in the username", "\u{1b}[31mroot", "wrong"),
        ("DEL in the password", "root", "pass\u{7f}"),
        ("an empty username", "", "wrong"),
    ];
    for (i, (what, user, secret)) in basic.iter().enumerate() {
        let (status, _, body) =
            token_attempt(&http, &server.base, &format!("192.0.2.{}", 10 + i), user, secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body, wrong_password, "{what} answers unlike a wrong password");
    }
    // The right password with a NUL appended is not the right password.
    let (status, _, _) =
        token_attempt(&http, &server.base, "192.0.2.30", "root", &format!("{ADMIN_PASSWORD}\0"))
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Megabytes in a header: refused by the HTTP layer (431) or as credentials (401).
    let megabyte_name = "M".repeat(2 * 1024 * 1024);
    let resp =
        http.get(server.url("/jwt/auth")).basic_auth(&megabyte_name, Some("wrong")).send().await;
    if let Ok(resp) = resp {
        let status = resp.status().as_u16();
        assert!(matches!(status, 401 | 431), "a 2 MB Basic username answered {status}");
    }

    // The OAuth2 form: odd values as 401, a form over 64 KiB as 413, both as JSON.
    let form = |user: &str, password: &str| {
        http.post(server.url("/jwt/auth"))
            .header("X-Forwarded-For", "192.0.2.40")
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("service", SERVICE),
            ])
            .send()
    };
    let form_cases: Vec<(&str, String, String)> = vec![
        ("a 40 KB username", format!("root{}", "Z".repeat(40_000)), "wrong".into()),
        ("a NUL in the username", "ro\0ot".into(), "wrong".into()),
        ("a control character in the password", "root".into(), "x\u{8}y".into()),
    ];
    for (what, user, password) in &form_cases {
        let resp = form(user, password).await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "form with {what}: {body}");
        assert_eq!(code(&body), "UNAUTHORIZED", "form with {what}: {body}");
    }
    // Just over the limit (64 KiB), so the server has read the whole body when it answers.
    let just_over = "F".repeat(64 * 1024);
    let resp = form(&just_over, "wrong").await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "a form over 64 KiB: {body}");
    assert_eq!(code(&body), "SIZE_INVALID", "{body}");
    // Megabytes: the server stops reading at the limit and answers 413; the client may see the
    // connection closed under the rest of its upload instead. Never anything else.
    for big in [2 * 1024 * 1024 - 100, 1024 * 1024] {
        let user = "F".repeat(big);
        if let Ok(resp) = form(&user, "wrong").await {
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "a {big}-byte form");
        }
    }

    // The API: a password that could never log in is refused when set; an over-long token is
    // refused like any unknown one.
    let api = GitLab::root(&server);
    for (what, password) in [("300 bytes", "p".repeat(300)), ("a NUL", "password\0xyz".into())] {
        let (status, body) = api
            .request(
                Method::POST,
                "/users",
                Some(json!({
                    "username": format!("u{}", &e2e::random_suffix()[..6]),
                    "email": "u@example.com", "name": "U", "password": password,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a password with {what}: {body}");
        // Either the password field's own rule or the API's rule against NUL in any parameter.
        assert!(body.to_string().contains("password"), "{body}");
    }
    let (status, _) =
        GitLab::with_token(&server, &"t".repeat(100_000)).request(Method::GET, "/user", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The server keeps serving, and its log holds no long name and stays small.
    let (status, _, _) =
        token_attempt(&http, &server.base, "192.0.2.50", "root", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let log = server.log();
    let grown = log.len() - log_before;
    assert!(!log.contains(&"Z".repeat(100)), "a long username reached the log");
    assert!(!log.contains(&"M".repeat(100)) && !log.contains(&"F".repeat(100)));
    assert!(
        !log.contains("\nFAKE LOG LINE") && !log.contains('\u{1b}'),
        "raw control characters in the log"
    );
    assert!(grown < 64 * 1024, "the log grew by {grown} bytes for a few dozen requests");
    assert!(!log.contains(ADMIN_PASSWORD));
}

/// `pull` repeated 6 000 times, unknown actions, a thousand copies of one scope: one small
/// token with each action once. A thousand different scopes: 400 with a message. A bearer
/// token longer than any the service issues: refused unread.
async fn token_requests_and_tokens_are_bounded(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let acme = api.create_group("acme", None, "private").await;
    api.create_project(acme, "a", "private").await;
    let http = e2e::gitlab::http_client();
    let root = Some(("root", ADMIN_PASSWORD));

    let repeated = vec!["pull"; 6_000].join(",");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("pull x 6000", vec![repo_scope("acme/a", &repeated)]),
        ("unknown actions", vec![repo_scope("acme/a", "pull,admin,root,PUSH,,push,pull")]),
        ("one scope 1000 times", vec![repo_scope("acme/a", "pull,push"); 1_000]),
    ];
    for (what, scopes) in &cases {
        let token = request_token(&http, &server.base, root, scopes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(token.len() < 2_048, "{what}: a {}-byte token", token.len());
        let (_, claims) = jwt_parts(&token);
        let access = claims["access"].as_array().unwrap();
        assert_eq!(access.len(), 1, "{what}: {claims}");
        let mut actions: Vec<&str> =
            access[0]["actions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        actions.sort();
        let want: &[&str] = if *what == "pull x 6000" { &["pull"] } else { &["pull", "push"] };
        assert_eq!(actions, want, "{what}");
    }
    // The same through the OAuth2 form.
    let resp = http
        .post(server.url("/jwt/auth"))
        .form(&[
            ("grant_type", "password"),
            ("username", "root"),
            ("password", ADMIN_PASSWORD),
            ("service", SERVICE),
            ("scope", &repo_scope("acme/a", &repeated)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert!(v["access_token"].as_str().unwrap().len() < 2_048, "{v}");

    // At most 32 resources per request.
    let many: Vec<String> =
        (0..1_000).map(|i| repo_scope(&format!("acme/a/r{i}"), "pull")).collect();
    let (status, body) = request_token(&http, &server.base, root, &many).await.unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("at most 32"), "{body}");
    let resp = http
        .post(server.url("/jwt/auth"))
        .form(&[
            ("grant_type", "password"),
            ("username", "root"),
            ("password", ADMIN_PASSWORD),
            ("scope", &many[..33].join(" ")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let at_limit = request_token(&http, &server.base, root, &many[..32]).await.expect("32 scopes");
    assert!(at_limit.len() < 8 * 1024, "{} bytes", at_limit.len());

    // A bearer token longer than any issued is refused like garbage, on every surface.
    let huge = format!("{at_limit}{}", "A".repeat(20_000));
    let outcome = Registry::new(&server, Some(huge.clone())).send(Method::GET, "/v2/").await;
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED, "{}", outcome.body);
    let outcome = Registry::new(&server, Some(huge.clone())).pull("acme/a", "latest").await;
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED, "{}", outcome.body);
    let resp = http
        .post(server.url("/jwt/auth"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &huge), ("service", SERVICE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// The OCI error code of a refusal body.
#[track_caller]
fn code(body: &str) -> String {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("refusal is not JSON ({e}): {body}"));
    v["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no OCI error: {body}")).to_string()
}

/// Patterns that would compile to huge automata, and a manifest past the 4 MiB limit.
async fn regex_bombs_and_oversized_manifests_are_refused(backend: MetaBackend) {
    let w = e2e::tenants::world(backend, &[]).await;
    let repos =
        w.api.call(Method::GET, &format!("/projects/{}/registry/repositories", w.a), None).await;
    let repository = repos[0]["id"].as_i64().expect("acme/a's repository");
    let tags = format!("/projects/{}/registry/repositories/{repository}/tags", w.a);
    let bombs = [
        "(a{1000}){1000}",
        r"\w{1000}",
        "((((((((((a{20}){20}){20}){20}){20}){20}){20}){20}){20}){20})",
    ];
    for bomb in bombs {
        let (status, body) =
            w.api.request(Method::DELETE, &tags, Some(json!({"name_regex_delete": bomb}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "bulk delete with {bomb:?}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains("regular expression"),
            "{body}"
        );
        let policy = json!({"container_expiration_policy_attributes":
            {"enabled": true, "name_regex": ".*", "name_regex_keep": bomb}});
        let (status, body) =
            w.api.request(Method::PUT, &format!("/projects/{}", w.a), Some(policy)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "cleanup policy keeping {bomb:?}: {body}");
        let rule = json!({"tag_name_pattern": bomb, "immutable": true});
        let rules = format!("/projects/{}/registry/protection/tag/rules", w.a);
        let (status, body) = w.api.request(Method::POST, &rules, Some(rule)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "tag rule {bomb:?}: {body}");
    }
    // Nothing was changed by the refused requests: the tag is still there, no rule exists.
    let left = w.api.call(Method::GET, &tags, None).await;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    let rules = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/protection/tag/rules", w.a), None)
        .await;
    assert_eq!(rules, json!([]));

    let token = w.token(("root", ADMIN_PASSWORD), &[repo_scope("acme/a", "pull,push")]).await;
    let huge = format!(r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#, "x".repeat(5 << 20));
    for reference in ["big".to_string(), e2e::sha256_digest(huge.as_bytes())] {
        let path = format!("/v2/acme/a/manifests/{reference}");
        let (status, body) = put_early_answer(&w.server.addr, &path, &token, huge.as_bytes()).await;
        assert_eq!(status, 413, "PUT {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["errors"][0]["code"], "SIZE_INVALID", "{body}");
    }
    let o = w.registry(&token).pull("acme/a", "big").await;
    assert_eq!(o.status, StatusCode::NOT_FOUND, "{}", o.body);
}

/// `PUT path` of `body` over raw TCP, reading the answer even when the server sends it (and
/// closes) before the whole body is written: a client library would report a broken pipe.
async fn put_early_answer(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(body).await;
    };
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer);
    let (_, read) = tokio::join!(write, read);
    if let Err(e) = read {
        // A reset after the answer (the server closed with the body unread) is fine.
        assert!(!answer.is_empty(), "no answer to PUT {path}: {e}");
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
