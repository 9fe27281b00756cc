//! Attack class: **escalation**: doing more than a credential allows, or reaching a tenant it
//! has no part in.
//!
//! - No credential, garbage, and forged tokens (another key, issuer or audience, `alg: none`,
//!   tampered, expired, not yet valid, a refresh token) are challenged with 401.
//! - Asking for more than allowed grants only what is allowed; crafted repository names
//!   (dot segments, case, extra segments, `%2F`) grant nothing.
//! - Tokens, deploy tokens and CI job tokens of one project do not open another.
//! - A blob of another tenant cannot be mounted (linked without its bytes).
//! - Protected and immutable tags hold on every route that can move or delete a tag.
//!
//! Every refusal is asserted exactly (status and OCI code), on both backends. Failed logins
//! count against the client address, so each test stays well below the limits.

use e2e::gitlab::{
    base64url, generate_p256_key, granted_actions, jwt_parts, now_secs, raw_request, repo_scope,
    request_token, sign_es256, GitLab, Outcome, Registry, ADMIN_PASSWORD, CI_USERNAME, SERVICE,
};
use e2e::tenants::{assert_challenged, assert_login_refused, assert_refusal, world};
use e2e::{random_bytes, MetaBackend};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

e2e::backend_tests!(
    unauthenticated_requests_are_challenged,
    forged_tokens_are_refused,
    tokens_and_credentials_do_not_cross_projects,
    scope_escalation_and_crafted_names_grant_nothing,
    another_tenants_blob_cannot_be_mounted,
    protected_and_immutable_tags_hold_on_every_route,
);

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

/// A cross-repository mount links a blob into a repository without its bytes, so it may only
/// take a blob from a repository the caller may pull. alice (developer on A, nothing on B)
/// names a layer only B holds, with `from=acme/b`, without `from`, and with crafted `from`s:
/// none links it; each falls back to an ordinary upload session (202, as the spec says), and A
/// still does not serve the blob. Mounting A's blob into B, where she may not push, is denied.
async fn another_tenants_blob_cannot_be_mounted(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let root_token = w.token(("root", ADMIN_PASSWORD), &[repo_scope("acme/b", "pull,push")]).await;
    let only_in_b = random_bytes(2048);
    let secret =
        w.registry(&root_token).upload_blob("acme/b", &only_in_b).await.expect("root uploads to B");

    let scopes = [repo_scope("acme/a", "pull,push"), repo_scope("acme/b", "pull,push")];
    let t = w.token((&w.alice.username, &w.alice.password), &scopes).await;
    assert!(granted_actions(&t, "acme/b").is_empty());
    let alice = w.registry(&t);
    for query in [
        format!("mount={secret}&from=acme/b"),
        format!("mount={secret}"),
        format!("mount={secret}&from=acme/a"),
        format!("mount={secret}&from=acme/a/../b"),
        format!("mount={secret}&from=ACME/b"),
        format!("mount={secret}&from=acme%2Fb"),
        format!("mount={secret}&from=acme/pub"),
    ] {
        let o = alice.send(Method::POST, &format!("/v2/acme/a/blobs/uploads/?{query}")).await;
        assert_eq!(
            o.status,
            StatusCode::ACCEPTED,
            "mount ?{query} must start a session: {}",
            o.body
        );
        let o = alice.send(Method::HEAD, &format!("/v2/acme/a/blobs/{secret}")).await;
        assert_eq!(o.status, StatusCode::NOT_FOUND, "after mount ?{query}, A serves B's blob");
        let o = alice.send(Method::GET, &format!("/v2/acme/a/blobs/{secret}")).await;
        assert_refusal(&o, StatusCode::NOT_FOUND, "BLOB_UNKNOWN", &format!("after mount ?{query}"));
    }
    // Into B, where alice may not push: refused before anything happens.
    let mine = alice.upload_blob("acme/a", b"alice's layer").await.expect("alice uploads to A");
    let o = alice
        .send(Method::POST, &format!("/v2/acme/b/blobs/uploads/?mount={mine}&from=acme/a"))
        .await;
    assert_challenged(&o, "alice mounting into B");
    assert_eq!(o.error_code().as_deref(), Some("DENIED"), "{}", o.body);
    let o = w.registry(&root_token).send(Method::GET, &format!("/v2/acme/b/blobs/{mine}")).await;
    assert_refusal(&o, StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "B after alice's mount");
    // Control: with the bytes, the same blob lands in A.
    let pushed = alice.upload_blob("acme/a", &only_in_b).await.expect("alice pushes the bytes");
    assert_eq!(pushed, secret);
    let o = alice.send(Method::HEAD, &format!("/v2/acme/a/blobs/{secret}")).await;
    assert_eq!(o.status, StatusCode::OK, "the pushed blob is served");
}

/// Tag rules on A: `^prod-` may be pushed and deleted by maintainers only, `^release-` is
/// immutable, and repository rule `acme/a/locked*` may be pushed by maintainers only. A
/// developer and a maintainer try every route that creates, moves or deletes a tag: a push by
/// tag, a push by digest with `?tag=`, a tag delete, a manifest delete by digest, and the REST
/// API's tag delete (its bulk delete skipping them is in `protection.rs`). Each is refused
/// exactly, and the tags stay where they were.
async fn protected_and_immutable_tags_hold_on_every_route(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let mia_user = w.api.create_user("mia").await;
    w.api.add_member("projects", w.a, mia_user.id, e2e::gitlab::level::MAINTAINER).await;
    let rules = format!("/projects/{}/registry/protection", w.a);
    for (kind, rule) in [
        (
            "tag",
            json!({"tag_name_pattern": "^prod-", "minimum_access_level_for_push": "maintainer",
                       "minimum_access_level_for_delete": "owner"}),
        ),
        ("tag", json!({"tag_name_pattern": "^release-", "immutable": true})),
        (
            "repository",
            json!({"repository_path_pattern": "acme/a/locked*",
                              "minimum_access_level_for_push": "maintainer"}),
        ),
    ] {
        let (status, body) =
            w.api.request(Method::POST, &format!("{rules}/{kind}/rules"), Some(rule)).await;
        assert_eq!(status, StatusCode::CREATED, "creating a {kind} rule: {body}");
    }
    let everything =
        [repo_scope("acme/a", "pull,push,delete"), repo_scope("acme/a/locked", "pull,push")];
    let root = w.registry(&w.token(("root", ADMIN_PASSWORD), &everything).await);
    for tag in ["prod-1", "release-1"] {
        root.push_image("acme/a", tag).await.assert_allowed(&format!("root pushes {tag}"));
    }
    let before = |tag: &'static str| {
        let root = root.clone();
        async move { root.pull("acme/a", tag).await.body }
    };
    let (prod, release) = (before("prod-1").await, before("release-1").await);
    let prod_digest = e2e::sha256_digest(prod.as_bytes());
    let release_digest = e2e::sha256_digest(release.as_bytes());

    let alice = w.registry(&w.token((&w.alice.username, &w.alice.password), &everything).await);
    assert_eq!(granted_actions(&alice.token.clone().unwrap(), "acme/a"), vec!["pull", "push"]);
    let mia = w.registry(&w.token((&mia_user.username, &mia_user.password), &everything).await);
    // A manifest both may push (its blobs are in A): latest's.
    let other = before("latest").await;
    let other_digest = e2e::sha256_digest(other.as_bytes());
    let put = |r: &Registry, reference: String| {
        let r = r.clone();
        let other = other.clone();
        async move {
            let resp = r
                .req(Method::PUT, &format!("/v2/acme/a/manifests/{reference}"))
                .header("Content-Type", e2e::gitlab::OCI_MANIFEST)
                .body(other.into_bytes())
                .send()
                .await
                .unwrap();
            outcome(format!("PUT /v2/acme/a/manifests/{reference}"), resp).await
        }
    };
    let forbidden = StatusCode::FORBIDDEN;
    for (who, r) in [("developer", &alice), ("maintainer", &mia)] {
        // Moving an immutable tag: by tag and by digest with ?tag=.
        assert_refusal(&put(r, "release-1".into()).await, forbidden, "IMMUTABLE_TAG", who);
        assert_refusal(
            &put(r, format!("{other_digest}?tag=release-1")).await,
            forbidden,
            "IMMUTABLE_TAG",
            who,
        );
        assert_refusal(
            &put(r, format!("{other_digest}?tag=fine&tag=release-1")).await,
            forbidden,
            "IMMUTABLE_TAG",
            &format!("{who}, the immutable tag second of two"),
        );
    }
    // Protected tags: developers may neither move nor create them, by either route.
    for reference in [
        "prod-1".to_string(),
        "prod-2".to_string(),
        format!("{other_digest}?tag=prod-1"),
        format!("{other_digest}?tag=prod-2"),
    ] {
        assert_refusal(
            &put(&alice, reference.clone()).await,
            forbidden,
            "PROTECTED_TAG",
            &format!("developer PUT {reference}"),
        );
    }
    // ... maintainers may.
    put(&mia, "prod-2".into()).await.assert_allowed("maintainer creates prod-2");
    // A protected repository: developers may not push to it at all.
    let locked = alice.push_image("acme/a/locked", "v1").await;
    assert_refusal(&locked, forbidden, "DENIED", "developer pushing to acme/a/locked");

    // Deletes: only maintainers get the delete action; prod-* needs an owner, release-* nobody.
    let o = alice.delete_tag("acme/a", "prod-1").await;
    assert_challenged(&o, "developer deleting prod-1");
    assert_eq!(o.error_code().as_deref(), Some("DENIED"));
    assert_refusal(
        &mia.delete_tag("acme/a", "prod-1").await,
        forbidden,
        "PROTECTED_TAG",
        "maintainer deletes prod-1",
    );
    for r in [&mia, &root] {
        assert_refusal(
            &r.delete_tag("acme/a", "release-1").await,
            forbidden,
            "IMMUTABLE_TAG",
            "deleting release-1",
        );
        for digest in [&prod_digest, &release_digest] {
            let o = r.send(Method::DELETE, &format!("/v2/acme/a/manifests/{digest}")).await;
            assert_refusal(
                &o,
                forbidden,
                "PROTECTED_MANIFEST",
                "deleting a tagged manifest by digest",
            );
        }
    }
    // The REST API: a single tag delete names the rule; a bulk delete skips both tags.
    let repos =
        w.api.call(Method::GET, &format!("/projects/{}/registry/repositories", w.a), None).await;
    let id =
        repos.as_array().unwrap().iter().find(|r| r["path"] == "acme/a").expect("acme/a is listed")
            ["id"]
            .as_i64()
            .unwrap();
    let tags = format!("/projects/{}/registry/repositories/{id}/tags", w.a);
    let mia_api = GitLab::with_token(&w.server, &w.api.create_pat(&mia_user, &["api"]).await.token);
    for (tag, rule) in [("prod-1", "^prod-"), ("release-1", "^release-")] {
        let (status, body) = mia_api.request(Method::DELETE, &format!("{tags}/{tag}"), None).await;
        assert_eq!(status, forbidden, "REST delete of {tag}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(rule), "{body}");
    }

    // Every tag is where it was.
    for (tag, digest) in [("prod-1", &prod_digest), ("release-1", &release_digest)] {
        let o = root.pull("acme/a", tag).await;
        o.assert_allowed(tag);
        assert_eq!(&e2e::sha256_digest(o.body.as_bytes()), digest, "{tag} was moved");
    }
}

/// The outcome of a request sent by hand.
async fn outcome(what: String, resp: reqwest::Response) -> Outcome {
    let status = resp.status();
    let www_authenticate =
        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(String::from);
    Outcome { what, status, www_authenticate, body: resp.text().await.unwrap_or_default() }
}
