//! Attack class: **stale credentials**: going on with a credential that was valid a moment ago.
//!
//! A registry token lives minutes, and an upload session may be continued with an expired one
//! (long pushes). Neither may outlive the credential behind it: every write re-checks that the
//! password's user is not blocked, that the token was not revoked, and that the caller still
//! has push rights; a CI job token acts with its user's current rights. Also here: the token
//! realm never follows a request's `Host` header (a client would send its password there).

use std::time::Duration;

use e2e::gitlab::{
    level, raw_request, repo_scope, seed_image, start_auth_server, token_for, GitLab, Outcome,
    Registry, User, ADMIN_PASSWORD, CI_USERNAME,
};
use e2e::{random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};

e2e::backend_tests!(
    revoked_or_demoted_credentials_stop_writing_at_once,
    expired_tokens_cannot_continue_uploads_for_a_blocked_user,
    job_tokens_follow_their_users_current_rights,
    the_token_realm_ignores_the_host_header,
);

/// A private project `acme/a` with an image, and `alice`, a developer there.
struct World {
    server: TestServer,
    api: GitLab,
    http: reqwest::Client,
    a: i64,
    alice: User,
}

async fn world(backend: MetaBackend, env: &[(&str, &str)]) -> World {
    let server = start_auth_server(backend, env);
    let api = GitLab::root(&server);
    let acme = api.create_group("acme", None, "private").await;
    let a = api.create_project(acme, "a", "private").await;
    let alice = api.create_user("alice").await;
    api.add_member("projects", a, alice.id, level::DEVELOPER).await;
    let http = e2e::gitlab::http_client();
    let root = token_for(
        &http,
        &server.base,
        Some(("root", ADMIN_PASSWORD)),
        &[repo_scope("acme/a", "pull,push")],
    )
    .await;
    seed_image(&Registry::new(&server, Some(root)), "acme/a", &["latest".to_string()]).await;
    World { server, api, http, a, alice }
}

impl World {
    async fn registry_as(&self, user: &str, secret: &str) -> Registry {
        let scopes = [repo_scope("acme/a", "pull,push")];
        let token = token_for(&self.http, &self.server.base, Some((user, secret)), &scopes).await;
        Registry::new(&self.server, Some(token))
    }
}

/// Sends one chunk of an upload; returns the outcome.
async fn patch(registry: &Registry, location: &str, data: &[u8]) -> Outcome {
    let resp = registry
        .req(Method::PATCH, location)
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("PATCH");
    let what = format!("PATCH {location}");
    let status = resp.status();
    let www_authenticate =
        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(String::from);
    Outcome { what, status, www_authenticate, body: resp.text().await.unwrap_or_default() }
}

/// `PUT <location>?digest=` without a body.
async fn finish(registry: &Registry, location: &str, digest: &str) -> Outcome {
    let sep = if location.contains('?') { '&' } else { '?' };
    registry.send(Method::PUT, &format!("{location}{sep}digest={digest}")).await
}

#[track_caller]
fn assert_unauthorized(o: &Outcome, context: &str) {
    o.assert_refused(context);
    assert_eq!(o.status, StatusCode::UNAUTHORIZED, "{context}: {}", o.body);
    assert!(o.www_authenticate.is_some(), "{context}: no challenge");
}

/// A PAT revoked, a user blocked, a membership removed or lowered: the registry token issued
/// before (still unexpired) stops pushing and deleting with the next request, in the middle of
/// an upload too.
async fn revoked_or_demoted_credentials_stop_writing_at_once(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let data = random_bytes(4096);
    let digest = sha256_digest(&data);

    // A revoked PAT.
    let pat = w.api.create_pat(&w.alice, &["read_registry", "write_registry"]).await;
    let by_pat = w.registry_as(&w.alice.username, &pat.token).await;
    let started = by_pat.start_upload("acme/a").await;
    started.assert_allowed("upload with a PAT's token");
    let location = started.body.clone();
    patch(&by_pat, &location, &data[..2048]).await.assert_allowed("first chunk");
    w.api.revoke_pat(pat.id).await;
    assert_unauthorized(&patch(&by_pat, &location, &data[2048..]).await, "chunk after revocation");
    assert_unauthorized(&finish(&by_pat, &location, &digest).await, "PUT after revocation");
    assert_unauthorized(&by_pat.start_upload("acme/a").await, "new upload after revocation");
    assert_unauthorized(
        &by_pat.push_image("acme/a", "after-revoke").await,
        "push after revocation",
    );

    // A membership lowered to reporter: pushes are denied (the token still says push).
    let by_password = w.registry_as(&w.alice.username, &w.alice.password).await;
    let started = by_password.start_upload("acme/a").await;
    started.assert_allowed("upload by password");
    let location = started.body.clone();
    w.api
        .call(
            Method::PUT,
            &format!("/projects/{}/members/{}", w.a, w.alice.id),
            Some(serde_json::json!({"access_level": level::REPORTER})),
        )
        .await;
    let o = patch(&by_password, &location, &data).await;
    o.assert_refused("chunk after demotion to reporter");
    assert!(
        o.www_authenticate.as_deref().unwrap_or_default().contains("insufficient_scope"),
        "{:?}",
        o.www_authenticate
    );
    by_password.pull("acme/a", "latest").await.assert_allowed("a reporter still pulls");

    // Removed from the project, then blocked: nothing is written.
    w.api.call(Method::DELETE, &format!("/projects/{}/members/{}", w.a, w.alice.id), None).await;
    by_password.push_image("acme/a", "after-removal").await.assert_refused("push after removal");
    w.api.block_user(w.alice.id).await;
    assert_unauthorized(
        &by_password.start_upload("acme/a").await,
        "upload by a blocked user's token",
    );

    // Nothing of theirs reached the repository.
    let root = w.registry_as("root", ADMIN_PASSWORD).await;
    let blob = root.send(Method::HEAD, &format!("/v2/acme/a/blobs/{digest}")).await;
    assert_eq!(blob.status, StatusCode::NOT_FOUND, "the blob was never committed");
    for tag in ["after-revoke", "after-removal"] {
        assert_eq!(root.pull("acme/a", tag).await.status, StatusCode::NOT_FOUND, "{tag}");
    }
}

/// An upload may be continued with a token that expired after it started, but not once the
/// user behind it is blocked.
async fn expired_tokens_cannot_continue_uploads_for_a_blocked_user(backend: MetaBackend) {
    let w = world(backend, &[("STOWAGE_AUTH__TOKEN_LIFETIME", "2s")]).await;
    let data = random_bytes(4096);
    let digest = sha256_digest(&data);
    let alice = w.registry_as(&w.alice.username, &w.alice.password).await;
    let first = alice.start_upload("acme/a").await;
    first.assert_allowed("first upload");
    let second = alice.start_upload("acme/a").await;
    second.assert_allowed("second upload");
    // Past the token's lifetime and the 5 s leeway the server allows for clock skew.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_unauthorized(&alice.pull("acme/a", "latest").await, "pull with the expired token");
    // Continuing works while alice is in good standing...
    patch(&alice, &first.body, &data).await.assert_allowed("chunk with the expired token");
    // ...and stops when she is blocked.
    w.api.block_user(w.alice.id).await;
    assert_unauthorized(&patch(&alice, &second.body, &data).await, "chunk after blocking");
    assert_unauthorized(&finish(&alice, &first.body, &digest).await, "PUT after blocking");
    let root = w.registry_as("root", ADMIN_PASSWORD).await;
    let blob = root.send(Method::HEAD, &format!("/v2/acme/a/blobs/{digest}")).await;
    assert_eq!(blob.status, StatusCode::NOT_FOUND, "nothing was committed for a blocked user");
}

/// A job token minted by alice pushes while alice may push, and stops when she is blocked or
/// leaves the project; its pulls from an allowlisting project need alice's read access there.
async fn job_tokens_follow_their_users_current_rights(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let alice_api =
        GitLab::with_token(&w.server, &w.api.create_pat(&w.alice, &["api"]).await.token);
    let job = alice_api.create_job_token(w.a).await;
    let scopes = [repo_scope("acme/a", "pull,push")];
    let job_registry = |token: String| Registry::new(&w.server, Some(token));
    let fresh = || token_for(&w.http, &w.server.base, Some((CI_USERNAME, &job.token)), &scopes);

    let before = job_registry(fresh().await);
    before.push_image("acme/a", "ci-1").await.assert_allowed("job token of a developer pushes");

    // Blocked: a new registry token grants nothing, and the one from before stops writing.
    w.api.block_user(w.alice.id).await;
    let blocked = job_registry(fresh().await);
    blocked.push_image("acme/a", "ci-2").await.assert_refused("job token of a blocked user");
    blocked.pull("acme/a", "latest").await.assert_refused("job token of a blocked user pulls");
    before.push_image("acme/a", "ci-3").await.assert_refused("earlier token, user blocked since");
    w.api.call(Method::POST, &format!("/users/{}/unblock", w.alice.id), None).await;

    // A reporter's job token pulls but does not push.
    w.api
        .call(
            Method::PUT,
            &format!("/projects/{}/members/{}", w.a, w.alice.id),
            Some(serde_json::json!({"access_level": level::REPORTER})),
        )
        .await;
    let reporter = job_registry(fresh().await);
    reporter.pull("acme/a", "latest").await.assert_allowed("job token of a reporter pulls");
    reporter.push_image("acme/a", "ci-4").await.assert_refused("job token of a reporter pushes");

    // Removed from the project: nothing.
    w.api.call(Method::DELETE, &format!("/projects/{}/members/{}", w.a, w.alice.id), None).await;
    let removed = job_registry(fresh().await);
    removed.pull("acme/a", "latest").await.assert_refused("job token of a former member");

    // Pulls from another project that allowlists acme/a need alice's read access there too.
    w.api.add_member("projects", w.a, w.alice.id, level::DEVELOPER).await;
    let acme = w.api.call(Method::GET, "/groups/acme", None).await["id"].as_i64().unwrap();
    let b = w.api.create_project(acme, "b", "private").await;
    let root = w.registry_as("root", ADMIN_PASSWORD).await;
    let root_b = Registry::new(
        &w.server,
        Some(
            token_for(
                &w.http,
                &w.server.base,
                Some(("root", ADMIN_PASSWORD)),
                &[repo_scope("acme/b", "pull,push")],
            )
            .await,
        ),
    );
    seed_image(&root_b, "acme/b", &["latest".to_string()]).await;
    w.api.allow_job_token(b, w.a).await;
    let b_scopes = [repo_scope("acme/b", "pull")];
    let cross =
        token_for(&w.http, &w.server.base, Some((CI_USERNAME, &job.token)), &b_scopes).await;
    Registry::new(&w.server, Some(cross))
        .pull("acme/b", "latest")
        .await
        .assert_refused("allowlisted, but alice may not read acme/b");
    w.api.add_member("projects", b, w.alice.id, level::REPORTER).await;
    let cross =
        token_for(&w.http, &w.server.base, Some((CI_USERNAME, &job.token)), &b_scopes).await;
    Registry::new(&w.server, Some(cross))
        .pull("acme/b", "latest")
        .await
        .assert_allowed("allowlisted, and alice may read acme/b");
    drop(root);
}

/// `Host: attacker.example` does not move the realm clients are sent to with their password.
async fn the_token_realm_ignores_the_host_header(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    for host in ["attacker.example", "attacker.example:443", "127.0.0.1:1"] {
        let (status, text) = raw_request(
            &server.addr,
            &format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 401, "{text}");
        let expected = format!("realm=\"http://{}/jwt/auth\"", server.addr);
        assert!(text.contains(&expected), "Host {host}: challenge should carry {expected}: {text}");
        assert!(!text.contains("attacker"), "Host {host}: {text}");
    }
    assert!(
        server.log().contains("http.host is not set"),
        "a start-up warning says http.host should be set"
    );
    // With http.host set, the realm is derived from it.
    let configured =
        start_auth_server(backend, &[("STOWAGE_HTTP__HOST", "https://registry.example.com")]);
    let (_, text) = raw_request(
        &configured.addr,
        "GET /v2/ HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.contains("realm=\"https://registry.example.com/jwt/auth\""), "{text}");
}
