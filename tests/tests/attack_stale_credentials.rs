//! Attack class: **stale credentials**: going on with a credential that was valid a moment ago.
//!
//! A registry token lives minutes, and an upload session may be continued with an expired one
//! (long pushes). Neither may outlive the credential behind it: every write re-checks that the
//! password's user is not blocked, that the token was not revoked, and that the caller still
//! has push rights; a CI job token acts with its user's current rights. Also here: the token
//! realm never follows a request's `Host` header (a client would send its password there).
//!
//! Revoked personal access tokens and deploy tokens, blocked users and expired CI job tokens
//! cannot log in any more; an expired registry token pulls and starts nothing, and only the
//! upload it started may be finished with it.

use std::time::Duration;

use e2e::gitlab::{
    granted_actions, jwt_parts, level, raw_request, repo_scope, request_token, seed_image,
    start_auth_server, token_for, GitLab, Outcome, Registry, User, ADMIN_PASSWORD, CI_USERNAME,
};
use e2e::tenants::{self, assert_challenged, assert_login_refused};
use e2e::{random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};

e2e::backend_tests!(
    revoked_or_demoted_credentials_stop_writing_at_once,
    expired_tokens_cannot_continue_uploads_for_a_blocked_user,
    job_tokens_follow_their_users_current_rights,
    the_token_realm_ignores_the_host_header,
    expired_tokens_fail_but_a_started_push_completes,
    revoked_blocked_and_expired_credentials_cannot_log_in,
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

/// Registry tokens and CI job tokens expire; an upload started before the token expired may
/// still be finished with it (the long-push rule), but nothing new may be started.
async fn expired_tokens_fail_but_a_started_push_completes(backend: MetaBackend) {
    let w = tenants::world(
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

/// Revoked tokens, blocked users and revoked deploy tokens cannot log in any more.
async fn revoked_blocked_and_expired_credentials_cannot_log_in(backend: MetaBackend) {
    let w = tenants::world(backend, &[]).await;
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
