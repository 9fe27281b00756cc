//! Attacks on authentication and authorization. Each must fail cleanly: no 2xx, no 5xx, and a
//! 401/403 (429 for rate limiting) with the OCI error JSON; and no secret ever reaches the log.
//!
//! Failed logins count against the client address (127.0.0.1 for every test) and the address
//! and username, so each test that fails logins on purpose stays well below the limits (50 and
//! 10), except the brute-force test, which has a server of its own. Lockout and enumeration
//! attacks are in `attack_enumeration.rs`, floods and huge inputs in `attack_exhaustion.rs`.

use std::time::Duration;

use e2e::gitlab::{
    base64url, generate_p256_key, granted_actions, jwt_parts, level, now_secs, raw_request,
    repo_scope, request_token, seed_image, sign_es256, start_auth_server, token_for, GitLab,
    Outcome, Registry, User, ADMIN_PASSWORD, ADMIN_TOKEN, CI_USERNAME, SERVICE,
};
use e2e::{random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

e2e::backend_tests!(
    unauthenticated_requests_are_challenged,
    expired_tokens_fail_but_a_started_push_completes,
    forged_tokens_are_refused,
    tokens_and_credentials_do_not_cross_projects,
    scope_escalation_and_crafted_names_grant_nothing,
    revoked_blocked_and_expired_credentials_cannot_log_in,
    brute_force_logins_are_rate_limited,
);

/// Two private projects `acme/a` and `acme/b` (each with an image `latest`) and a public
/// `acme/pub`; `alice` is developer on `acme/a` only, `rita` reporter on `acme/a` only.
struct World {
    server: TestServer,
    api: GitLab,
    http: reqwest::Client,
    a: i64,
    b: i64,
    alice: User,
    rita: User,
}

async fn world(backend: MetaBackend, env: &[(&str, &str)]) -> World {
    let server = start_auth_server(backend, env);
    let api = GitLab::root(&server);
    let acme = api.create_group("acme", None, "public").await;
    let a = api.create_project(acme, "a", "private").await;
    let b = api.create_project(acme, "b", "private").await;
    api.create_project(acme, "pub", "public").await;
    let alice = api.create_user("alice").await;
    let rita = api.create_user("rita").await;
    api.add_member("projects", a, alice.id, level::DEVELOPER).await;
    api.add_member("projects", a, rita.id, level::REPORTER).await;
    let http = e2e::gitlab::http_client();
    let scopes: Vec<String> =
        ["acme/a", "acme/b", "acme/pub"].iter().map(|n| repo_scope(n, "pull,push")).collect();
    let root = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    let root = Registry::new(&server, Some(root));
    for name in ["acme/a", "acme/b", "acme/pub"] {
        seed_image(&root, name, &["latest".to_string()]).await;
    }
    World { server, api, http, a, b, alice, rita }
}

impl World {
    async fn token(&self, cred: (&str, &str), scopes: &[String]) -> String {
        token_for(&self.http, &self.server.base, Some(cred), scopes).await
    }

    fn registry(&self, token: &str) -> Registry {
        Registry::new(&self.server, Some(token.to_string()))
    }

    /// Panics if the server log contains any of `secrets`.
    fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = self.server.log();
        for s in secrets.iter().chain([&ADMIN_PASSWORD, &ADMIN_TOKEN]) {
            assert!(!s.is_empty());
            assert!(
                !log.contains(s),
                "the server log contains a secret ({}…)",
                &s[..4.min(s.len())]
            );
        }
    }
}

/// Panics unless the token service refused with `status` and an OCI error body.
#[track_caller]
fn assert_login_refused(
    result: Result<String, (StatusCode, String)>,
    status: StatusCode,
    context: &str,
) {
    match result {
        Ok(token) => panic!("{context}: a token was issued: {:?}", jwt_parts(&token).1),
        Err((got, body)) => {
            assert_eq!(got, status, "{context}: {body}");
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{context}: refusal is not JSON ({e}): {body}"));
            assert!(v["errors"][0]["code"].is_string(), "{context}: no OCI error: {body}");
        }
    }
}

/// Panics unless `o` is a 401 with an OCI error body and a Bearer challenge.
#[track_caller]
fn assert_challenged(o: &Outcome, context: &str) {
    o.assert_refused(context);
    assert_eq!(o.status, StatusCode::UNAUTHORIZED, "{context}: {}", o.body);
    let challenge =
        o.www_authenticate.as_deref().unwrap_or_else(|| panic!("{context}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer realm="), "{context}: {challenge}");
}

/// A request without a token is challenged towards the token service; garbage is too.
async fn unauthenticated_requests_are_challenged(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let anon = Registry::new(&w.server, None);
    let base = anon.send(Method::GET, "/v2/").await;
    assert_challenged(&base, "GET /v2/ without a token");
    let challenge = base.www_authenticate.clone().unwrap();
    assert!(
        challenge.contains(&format!("realm=\"http://{}/jwt/auth\"", w.server.addr))
            && challenge.contains(&format!("service=\"{SERVICE}\"")),
        "{challenge}"
    );
    let pull = anon.pull("acme/a", "latest").await;
    assert_challenged(&pull, "anonymous pull of a private image");
    assert!(
        pull.www_authenticate.as_deref().unwrap().contains("scope=\"repository:acme/a:pull\""),
        "{:?}",
        pull.www_authenticate
    );
    let push = anon.start_upload("acme/a").await;
    assert_challenged(&push, "anonymous push");
    assert!(push
        .www_authenticate
        .as_deref()
        .unwrap()
        .contains("scope=\"repository:acme/a:pull,push\""));
    // A private repository answers as a nonexistent one.
    let absent = anon.pull("acme/nothing", "latest").await;
    assert_eq!(pull.normalized("acme/a"), absent.normalized("acme/nothing"));

    for garbage in ["garbage", "a.b.c", "", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"] {
        let r = Registry::new(&w.server, Some(garbage.to_string()));
        assert_challenged(&r.pull("acme/pub", "latest").await, &format!("bearer {garbage:?}"));
        assert_challenged(
            &r.send(Method::GET, "/v2/").await,
            &format!("bearer {garbage:?} on /v2/"),
        );
    }
    // A malformed Basic header at the token service: a clean 401, not a 5xx.
    for header in ["Basic !!!notbase64", "Basic Zm9v", "Digest abc"] {
        let resp = w
            .http
            .get(w.server.url("/jwt/auth?service=container_registry&scope=repository:acme/a:pull"))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "Authorization: {header}");
    }
    // Anonymous pull of the public project works with an anonymous token.
    let scopes = vec![repo_scope("acme/pub", "pull,push"), repo_scope("acme/a", "pull")];
    let t = request_token(&w.http, &w.server.base, None, &scopes).await.expect("anonymous token");
    assert_eq!(granted_actions(&t, "acme/pub"), vec!["pull"]);
    assert!(granted_actions(&t, "acme/a").is_empty());
    w.registry(&t)
        .pull("acme/pub", "latest")
        .await
        .assert_allowed("anonymous pull of a public image");
    w.assert_log_free_of(&[&w.alice.password, &w.rita.password]);
}

/// Registry tokens and CI job tokens expire; an upload started before the token expired may
/// still be finished with it (the long-push rule), but nothing new may be started.
async fn expired_tokens_fail_but_a_started_push_completes(backend: MetaBackend) {
    let w = world(
        backend,
        &[("STOWAGE_AUTH__TOKEN_LIFETIME", "2s"), ("STOWAGE_AUTH__JOB_TOKEN_LIFETIME", "3s")],
    )
    .await;
    let scopes = vec![repo_scope("acme/a", "pull,push")];
    let token = w.token((&w.alice.username, &w.alice.password), &scopes).await;
    let (_, claims) = jwt_parts(&token);
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(lifetime <= 2, "token lifetime is {lifetime} s, configured 2 s: {claims}");
    let alice = w.registry(&token);
    alice.pull("acme/a", "latest").await.assert_allowed("fresh token");
    let started = alice.start_upload("acme/a").await;
    started.assert_allowed("start of a long push");
    let location = started.body.clone();

    let job = w.api.create_job_token(w.a).await;
    let job_registry_token = w.token((CI_USERNAME, &job.token), &scopes).await;
    assert_eq!(granted_actions(&job_registry_token, "acme/a"), vec!["pull", "push"]);

    // Past the lifetime, and past any clock-skew leeway the server allows (5 s).
    tokio::time::sleep(Duration::from_secs(9)).await;

    // The expired registry token no longer pulls or starts anything.
    assert_challenged(&alice.pull("acme/a", "latest").await, "pull with an expired token");
    assert_challenged(&alice.start_upload("acme/a").await, "new upload with an expired token");
    assert_challenged(
        &w.registry(&job_registry_token).pull("acme/a", "latest").await,
        "pull with an expired token from a job token",
    );

    // But the upload it started continues and completes: two PATCH chunks and the PUT.
    let data = random_bytes(64 * 1024);
    let digest = sha256_digest(&data);
    let mut location = location;
    for (i, chunk) in data.chunks(32 * 1024).enumerate() {
        let start = i * 32 * 1024;
        let resp = alice
            .req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{}", start + chunk.len() - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let next = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::ACCEPTED, "PATCH chunk {i} with the expired token: {body}");
        location = next.expect("PATCH answers a Location");
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = alice.send(Method::PUT, &format!("{location}{sep}digest={digest}")).await;
    assert_eq!(
        put.status,
        StatusCode::CREATED,
        "finishing the upload with the expired token: {}",
        put.body
    );

    // The CI job token itself has expired too (3 s): it cannot log in any more.
    assert_login_refused(
        request_token(&w.http, &w.server.base, Some((CI_USERNAME, &job.token)), &scopes).await,
        StatusCode::UNAUTHORIZED,
        "expired job token",
    );
    // A fresh token sees the finished blob.
    let fresh = w.registry(&w.token((&w.alice.username, &w.alice.password), &scopes).await);
    fresh
        .send(Method::HEAD, &format!("/v2/acme/a/blobs/{digest}"))
        .await
        .assert_allowed("HEAD of the pushed blob");
    w.assert_log_free_of(&[&w.alice.password, &job.token]);
}

/// Tokens not signed by the server's key, or signed by it for another issuer or audience,
/// with `alg: none`, tampered, expired or not yet valid, are refused. A control token forged
/// with the server's own key and correct claims is accepted, which shows the forgeries fail
/// for the reason they are meant to.
async fn forged_tokens_are_refused(backend: MetaBackend) {
    let keys = tempfile::tempdir().unwrap();
    let server_key = generate_p256_key(keys.path(), "server.pem");
    let other_key = generate_p256_key(keys.path(), "other.pem");
    let w = world(backend, &[("STOWAGE_AUTH__SIGNING_KEY", server_key.to_str().unwrap())]).await;
    let scopes = vec![repo_scope("acme/a", "pull,push")];
    let real = w.token((&w.rita.username, &w.rita.password), &scopes).await;
    assert_eq!(granted_actions(&real, "acme/a"), vec!["pull"]);
    w.registry(&real).pull("acme/a", "latest").await.assert_allowed("real token");
    let (header, claims) = jwt_parts(&real);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert!(header["kid"].is_string(), "{header}");
    for claim in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
        assert!(!claims[claim].is_null(), "token lacks claim {claim}: {claims}");
    }
    assert_eq!(claims["aud"], SERVICE);

    // What rita would like: push on acme/a and pull on acme/b.
    let wanted = json!([
        {"type": "repository", "name": "acme/a", "actions": ["pull", "push"]},
        {"type": "repository", "name": "acme/b", "actions": ["pull"]},
    ]);
    let mut forged_claims = claims.clone();
    forged_claims["access"] = wanted;
    forged_claims["jti"] = "forged".into();
    let try_token = |token: String| {
        let r = Registry::new(&w.server, Some(token));
        async move { r.pull("acme/b", "latest").await }
    };

    // Control: the server's key and correct claims → accepted (the forging works).
    let control = sign_es256(&server_key, &header, &forged_claims);
    try_token(control).await.assert_allowed("control token signed with the server's key");

    let now = now_secs();
    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |k: &str, v: Value| {
        let mut c = forged_claims.clone();
        c[k] = v;
        c
    };
    cases.push(("signed with another key", sign_es256(&other_key, &header, &forged_claims)));
    cases.push(("another issuer", sign_es256(&server_key, &header, &with("iss", "evil".into()))));
    cases.push((
        "another audience",
        sign_es256(&server_key, &header, &with("aud", "other_registry".into())),
    ));
    cases.push((
        "refresh audience",
        sign_es256(&server_key, &header, &with("aud", format!("{SERVICE}:refresh").into())),
    ));
    cases.push((
        "expired long ago",
        sign_es256(&server_key, &header, &with("exp", (now - 3600).into())),
    ));
    cases.push((
        "not yet valid",
        sign_es256(&server_key, &header, &with("nbf", (now + 3600).into())),
    ));
    let mut no_iss = forged_claims.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    cases.push(("no issuer", sign_es256(&server_key, &header, &no_iss)));
    let mut hs = header.clone();
    hs["alg"] = "HS256".into();
    cases.push((
        "alg HS256 header on an ES256 signature",
        sign_es256(&server_key, &hs, &forged_claims),
    ));
    // alg none, with and without a signature part.
    let none_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(forged_claims.to_string().as_bytes());
    cases.push(("alg none", format!("{none_header}.{payload}.")));
    cases.push((
        "alg none with signature",
        format!("{none_header}.{payload}.{}", real.split('.').nth(2).unwrap()),
    ));
    // The real token's signature on the forged payload.
    let parts: Vec<&str> = real.split('.').collect();
    cases.push(("tampered payload", format!("{}.{payload}.{}", parts[0], parts[2])));
    // A real token with one signature character flipped.
    let mut sig: Vec<char> = parts[2].chars().collect();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
    cases.push((
        "bad signature",
        format!("{}.{}.{}", parts[0], parts[1], sig.into_iter().collect::<String>()),
    ));
    // A real refresh token used as an access token.
    let refresh = w
        .http
        .post(w.server.url("/jwt/auth"))
        .form(&[
            ("grant_type", "password"),
            ("username", w.rita.username.as_str()),
            ("password", w.rita.password.as_str()),
            ("service", SERVICE),
            ("scope", "repository:acme/a:pull"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::OK);
    let refresh: Value = refresh.json().await.unwrap();
    let refresh_token = refresh["refresh_token"]
        .as_str()
        .expect("POST /jwt/auth answers a refresh_token")
        .to_string();
    cases.push(("refresh token as access token", refresh_token));

    for (what, token) in cases {
        let o = try_token(token.clone()).await;
        assert_challenged(&o, &format!("forged token ({what}) pulling acme/b"));
        // Not even the real token's own project opens with a bad signature or claims.
        let o = Registry::new(&w.server, Some(token)).pull("acme/a", "latest").await;
        assert_challenged(&o, &format!("forged token ({what}) pulling acme/a"));
    }
    w.assert_log_free_of(&[&w.rita.password, &w.alice.password]);
}

/// A token for project A does not open project B; neither does a deploy token or a CI job
/// token of A (unless B allowlists A's jobs, and then only for pulling).
async fn tokens_and_credentials_do_not_cross_projects(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let both =
        vec![repo_scope("acme/a", "pull,push,delete"), repo_scope("acme/b", "pull,push,delete")];
    let absent = |r: &Registry| {
        let r = r.clone();
        async move { r.pull("acme/none", "latest").await }
    };

    // alice's token: A yes, B nothing; used on B it answers as for a nonexistent repository.
    let t = w.token((&w.alice.username, &w.alice.password), &both).await;
    assert_eq!(granted_actions(&t, "acme/a"), vec!["pull", "push"]);
    assert!(granted_actions(&t, "acme/b").is_empty());
    let alice = w.registry(&t);
    alice.push_image("acme/a", "alice").await.assert_allowed("alice pushes to A");
    for o in [
        alice.pull("acme/b", "latest").await,
        alice.push_image("acme/b", "x").await,
        alice.delete_tag("acme/b", "latest").await,
    ] {
        assert_challenged(&o, "alice's token on B");
        assert_eq!(o.error_code().as_deref(), Some("DENIED"), "{}", o.body);
        assert!(o.www_authenticate.as_deref().unwrap().contains("error=\"insufficient_scope\""));
    }
    let on_b = alice.pull("acme/b", "latest").await;
    assert_eq!(on_b.normalized("acme/b"), absent(&alice).await.normalized("acme/none"));

    // A deploy token of A.
    let dt = w
        .api
        .create_deploy_token("projects", w.a, "deploy-a", &["read_registry", "write_registry"])
        .await;
    let t = w.token((&dt.username, &dt.token), &both).await;
    assert_eq!(granted_actions(&t, "acme/a"), vec!["pull", "push"]);
    assert!(granted_actions(&t, "acme/b").is_empty(), "deploy token of A granted on B");
    let deploy = w.registry(&t);
    deploy.pull("acme/a", "latest").await.assert_allowed("deploy token of A on A");
    assert_challenged(&deploy.pull("acme/b", "latest").await, "deploy token of A pulling B");
    assert_challenged(&deploy.push_image("acme/b", "x").await, "deploy token of A pushing B");
    // A deploy token never deletes.
    assert_challenged(&deploy.delete_tag("acme/a", "latest").await, "deploy token deleting");

    // A CI job token of A: B refuses until B allowlists A, then B allows pull only.
    let job = w.api.create_job_token(w.a).await;
    let t = w.token((CI_USERNAME, &job.token), &both).await;
    assert_eq!(granted_actions(&t, "acme/a"), vec!["pull", "push"]);
    assert!(granted_actions(&t, "acme/b").is_empty(), "job token of A granted on B");
    assert_challenged(&w.registry(&t).pull("acme/b", "latest").await, "job token of A on B");
    // Allowlisting the other way round (A lets B's jobs in) does not help A's jobs on B.
    w.api.allow_job_token(w.a, w.b).await;
    let t = w.token((CI_USERNAME, &job.token), &both).await;
    assert!(granted_actions(&t, "acme/b").is_empty(), "A allowlisting B let A's jobs into B");
    w.api.allow_job_token(w.b, w.a).await;
    let t = w.token((CI_USERNAME, &job.token), &both).await;
    assert_eq!(granted_actions(&t, "acme/b"), vec!["pull"]);
    let ci = w.registry(&t);
    ci.pull("acme/b", "latest").await.assert_allowed("allowlisted job token pulls B");
    assert_challenged(&ci.push_image("acme/b", "ci").await, "allowlisted job token pushing B");

    // A username/secret pair from different credentials does not log in.
    let mismatched = [
        (w.rita.username.as_str(), dt.token.as_str()),
        (dt.username.as_str(), w.alice.password.as_str()),
    ];
    for (user, secret) in mismatched {
        assert_login_refused(
            request_token(&w.http, &w.server.base, Some((user, secret)), &both).await,
            StatusCode::UNAUTHORIZED,
            &format!("{user} with another credential's secret"),
        );
    }
    w.assert_log_free_of(&[&w.alice.password, &dt.token, &job.token]);
}

/// Asking for more than allowed grants only what is allowed (never an error, never more);
/// crafted repository names grant nothing and are refused cleanly.
async fn scope_escalation_and_crafted_names_grant_nothing(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let rita = (w.rita.username.as_str(), w.rita.password.as_str());
    // rita (reporter on A) asks for everything on A in many ways.
    let greedy: Vec<String> = vec![
        repo_scope("acme/a", "pull,push,delete,*"),
        repo_scope("acme/a", "push"),
        repo_scope("acme/a", "*"),
        "repository:acme/a:push repository:acme/a:delete".into(),
        repo_scope("acme/b", "pull"),
        "registry:catalog:*".into(),
    ];
    let t = w.token(rita, &greedy).await;
    assert_eq!(granted_actions(&t, "acme/a"), vec!["pull"], "{:?}", jwt_parts(&t).1);
    assert!(granted_actions(&t, "acme/b").is_empty());
    let r = w.registry(&t);
    r.pull("acme/a", "latest").await.assert_allowed("rita pulls A");
    assert_challenged(&r.push_image("acme/a", "rita").await, "rita pushing A");
    assert_challenged(&r.delete_tag("acme/a", "latest").await, "rita deleting on A");
    // The OAuth2 form (POST) grants the same.
    let resp = w
        .http
        .post(w.server.url("/jwt/auth"))
        .form(&[
            ("grant_type", "password"),
            ("username", rita.0),
            ("password", rita.1),
            ("service", SERVICE),
            (
                "scope",
                "repository:acme/a:pull,push,delete repository:acme/a:* repository:acme/b:pull",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let posted = v["access_token"].as_str().or(v["token"].as_str()).expect("POST /jwt/auth token");
    assert_eq!(granted_actions(posted, "acme/a"), vec!["pull"]);
    assert!(granted_actions(posted, "acme/b").is_empty());

    // Crafted names, asked by alice (developer on A) and by root (admin): nothing granted.
    let crafted = [
        "acme/../acme/b",
        "acme/a/../b",
        "acme/a/../../acme/b",
        "ACME/b",
        "Acme/A",
        "acme/b/",
        "/acme/b",
        "acme//b",
        "acme/a/1/2/3/4",
        "acme/a/1/2/3/4/5",
        "acme/b:latest",
        "acme/b%2F..",
    ];
    let mut scopes: Vec<String> =
        crafted.iter().map(|n| repo_scope(n, "pull,push,delete")).collect();
    scopes.push(repo_scope("acme/a/1/2/3", "pull,push")); // 3 extra segments: allowed
    for (who, cred) in [
        ("alice", (w.alice.username.as_str(), w.alice.password.as_str())),
        ("root", ("root", ADMIN_PASSWORD)),
    ] {
        let t = w.token(cred, &scopes).await;
        let (_, claims) = jwt_parts(&t);
        for entry in claims["access"].as_array().unwrap() {
            let name = entry["name"].as_str().unwrap();
            assert_eq!(
                name, "acme/a/1/2/3",
                "{who} was granted {entry} for a crafted name: {claims}"
            );
        }
        assert_eq!(granted_actions(&t, "acme/a/1/2/3"), vec!["pull", "push"], "{who}: {claims}");
        let r = w.registry(&t);
        r.push_image("acme/a/1/2/3", "deep")
            .await
            .assert_allowed(&format!("{who} pushes 3 segments below A"));
        let too_deep = r.push_image("acme/a/1/2/3/4", "deep").await;
        too_deep.assert_refused(&format!("{who} pushing 4 segments below A"));
        let upper = r.pull("ACME/b", "latest").await;
        assert!(
            !upper.allowed() && !upper.status.is_server_error() && upper.error_code().is_some(),
            "{who} pulling ACME/b: {} {}",
            upper.status,
            upper.body
        );
        // Raw requests with `..` (reqwest would normalise them away).
        for path in [
            "/v2/acme/../acme/b/manifests/latest",
            "/v2/acme/a/../b/manifests/latest",
            "/v2/acme/a/../b/tags/list",
        ] {
            let (status, text) = raw_request(
                &w.server.addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n", w.server.addr),
            )
            .await;
            assert!(
                (400..500).contains(&status) && text.contains("\"errors\""),
                "{who}: GET {path} answered {status}:\n{text}"
            );
            assert!(
                !text.contains("schemaVersion") && !text.contains("\"tags\""),
                "{who}: {path} leaked:\n{text}"
            );
        }
    }
    w.assert_log_free_of(&[&w.alice.password, &w.rita.password]);
}

/// Revoked tokens, blocked users and revoked deploy tokens cannot log in any more.
async fn revoked_blocked_and_expired_credentials_cannot_log_in(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let scopes = vec![repo_scope("acme/a", "pull,push"), "registry:catalog:*".to_string()];

    // A PAT works, then is revoked.
    let pat = w.api.create_pat(&w.alice, &["read_registry", "write_registry"]).await;
    let t = w.token((&w.alice.username, &pat.token), &scopes).await;
    assert_eq!(granted_actions(&t, "acme/a"), vec!["pull", "push"]);
    w.api.revoke_pat(pat.id).await;
    assert_login_refused(
        request_token(&w.http, &w.server.base, Some((&w.alice.username, &pat.token)), &scopes)
            .await,
        StatusCode::UNAUTHORIZED,
        "revoked PAT",
    );
    // A registry token issued before the revocation lists nothing through the catalog.
    if let Ok(listed) = w.registry(&t).catalog().await {
        assert!(listed.is_empty(), "catalog with a revoked PAT's token lists {listed:?}");
    }

    // A deploy token works, then is revoked.
    let dt = w.api.create_deploy_token("projects", w.a, "deploy-revoked", &["read_registry"]).await;
    w.token((&dt.username, &dt.token), &scopes).await;
    w.api.call(Method::DELETE, &format!("/projects/{}/deploy_tokens/{}", w.a, dt.id), None).await;
    assert_login_refused(
        request_token(&w.http, &w.server.base, Some((&dt.username, &dt.token)), &scopes).await,
        StatusCode::UNAUTHORIZED,
        "revoked deploy token",
    );

    // rita is blocked: neither her password nor her PAT logs in.
    let rita_pat = w.api.create_pat(&w.rita, &["read_registry"]).await;
    let before = w.token((&w.rita.username, &w.rita.password), &scopes).await;
    assert_eq!(granted_actions(&before, "acme/a"), vec!["pull"]);
    w.api.block_user(w.rita.id).await;
    for (what, secret) in [("password", w.rita.password.as_str()), ("PAT", rita_pat.token.as_str())]
    {
        assert_login_refused(
            request_token(&w.http, &w.server.base, Some((&w.rita.username, secret)), &scopes).await,
            StatusCode::UNAUTHORIZED,
            &format!("blocked user's {what}"),
        );
    }
    if let Ok(listed) = w.registry(&before).catalog().await {
        assert!(listed.is_empty(), "catalog with a blocked user's token lists {listed:?}");
    }
    // The blocked user's API token no longer works either.
    let (status, body) =
        GitLab::with_token(&w.server, &rita_pat.token).request(Method::GET, "/user", None).await;
    assert!(matches!(status.as_u16(), 401 | 403), "blocked user's PAT on the API: {status} {body}");
    w.assert_log_free_of(&[
        &pat.token,
        &dt.token,
        &w.rita.password,
        &rita_pat.token,
        &w.alice.password,
    ]);
}

/// More than 10 wrong passwords for one user from one address: 429 TOOMANYREQUESTS from that
/// address, even for the right password, with `Retry-After`. (From another address the right
/// password works at once: see `attack_enumeration.rs`.)
async fn brute_force_logins_are_rate_limited(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let scopes = vec![repo_scope("acme/a", "pull")];
    let user = w.alice.username.as_str();
    let mut wrong = Vec::new();
    for i in 0..12 {
        let guess = format!("wrong-guess-{i}-{}", e2e::random_suffix());
        let got = request_token(&w.http, &w.server.base, Some((user, &guess)), &scopes).await;
        let expected =
            if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        assert_login_refused(got, expected, &format!("wrong password #{}", i + 1));
        wrong.push(guess);
    }
    let right =
        request_token(&w.http, &w.server.base, Some((user, &w.alice.password)), &scopes).await;
    match right {
        Ok(_) => panic!("the right password was accepted after 12 wrong guesses"),
        Err((status, body)) => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
        }
    }
    // The limit is per address and user: another user logging in from the same address is not
    // throttled (the address limit is higher, for runners and offices behind one address).
    request_token(
        &w.http,
        &w.server.base,
        Some((w.rita.username.as_str(), &w.rita.password)),
        &scopes,
    )
    .await
    .map(|_| ())
    .unwrap_or_else(|(status, body)| {
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "rita is locked out: {body}")
    });
    // The OAuth2 form is limited alike.
    let resp = w
        .http
        .post(w.server.url("/jwt/auth"))
        .form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", w.alice.password.as_str()),
            ("service", SERVICE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok());
    assert!(
        retry_after.and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| (1..=300).contains(&s)),
        "Retry-After: {retry_after:?}"
    );
    let guesses: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let mut secrets = guesses.clone();
    secrets.push(&w.alice.password);
    w.assert_log_free_of(&secrets);
}
