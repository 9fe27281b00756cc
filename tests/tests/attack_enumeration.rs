//! Attack classes: **lockout** (guessing a password to lock its owner out) and
//! **enumeration** (telling accounts apart by how a failed login answers).
//!
//! Failed logins are throttled per client address and per address and username, never per
//! username alone: a guesser is slowed down where it guesses from, and the same credential
//! presented from anywhere else keeps working — `root`'s, a deploy token's, and every CI job's
//! (whose shared username is never a throttling key). Client addresses come from the socket,
//! or from `X-Forwarded-For` when the request arrives through a trusted proxy; these tests
//! configure `http.trusted_proxies=127.0.0.1/32` and send `X-Forwarded-For` to play clients at
//! different addresses (nothing is sent to those addresses: they are header values).
//!
//! A failed login costs the same (one argon2 verification) whatever the username: a real user,
//! a blocked one, an unknown one, the CI username or a deploy token's username. More than 10
//! wrong passwords for one user from one address answer 429 there, even for the right one.
//!
//! Private repositories, projects and groups answer exactly as nonexistent ones (name aside)
//! to everyone who may not see them, on every `/v2` route and on `/api/v4`, and listings leave
//! them out.

use std::time::{Duration, Instant};

use e2e::gitlab::{
    level, repo_scope, request_token, request_token_from, start_auth_server, GitLab, Outcome,
    Registry, Token, User, ADMIN_PASSWORD, ADMIN_TOKEN, CI_USERNAME, SERVICE,
};
use e2e::tenants::{self, assert_challenged, assert_login_refused};
use e2e::{MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

e2e::backend_tests!(
    guessing_throttles_the_guessers_address_not_the_account,
    the_address_limit_stops_guessing_across_usernames,
    forwarded_addresses_count_only_from_trusted_proxies,
    failed_logins_take_as_long_for_every_kind_of_username,
    brute_force_logins_are_rate_limited,
    private_repositories_and_projects_answer_as_nonexistent,
);

const TRUSTED_PROXY: (&str, &str) = ("STOWAGE_HTTP__TRUSTED_PROXIES", "[127.0.0.1/32]");

/// Client addresses played through the trusted proxy (documentation ranges).
const A: &str = "203.0.113.7";
const B: &str = "198.51.100.9";
const C: &str = "192.0.2.33";

/// A private project `acme/a`, `alice` a developer there, a deploy token with
/// read and write access on it, and a CI job token for it.
struct World {
    server: TestServer,
    api: GitLab,
    http: reqwest::Client,
    alice: User,
    deploy: Token,
    job: Token,
}

async fn world(backend: MetaBackend, env: &[(&str, &str)]) -> World {
    let server = start_auth_server(backend, env);
    let api = GitLab::root(&server);
    let acme = api.create_group("acme", None, "private").await;
    let a = api.create_project(acme, "a", "private").await;
    let alice = api.create_user("alice").await;
    api.add_member("projects", a, alice.id, level::DEVELOPER).await;
    let deploy = api
        .create_deploy_token("projects", a, "deployer", &["read_registry", "write_registry"])
        .await;
    let job = api.create_job_token(a).await;
    World { server, api, http: e2e::gitlab::http_client(), alice, deploy, job }
}

impl World {
    /// A token request for `acme/a` as `user`/`secret`, from client address `client`.
    async fn login(
        &self,
        client: &str,
        user: &str,
        secret: &str,
    ) -> Result<String, (StatusCode, String)> {
        let scopes = [repo_scope("acme/a", "pull,push")];
        request_token_from(
            &self.http,
            &self.server.base,
            Some((user, secret)),
            &scopes,
            Some(client),
        )
        .await
    }

    /// Panics if the server log contains any of `secrets`.
    fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = self.server.log();
        for s in secrets.iter().chain([&ADMIN_PASSWORD, &ADMIN_TOKEN]) {
            assert!(!log.contains(s), "the server log contains a secret ({}…)", &s[..4]);
        }
    }
}

/// The OCI error code of a refusal body.
fn code(body: &str) -> String {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("refusal is not JSON ({e}): {body}"));
    v["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no OCI error: {body}")).to_string()
}

#[track_caller]
fn assert_status(got: &Result<String, (StatusCode, String)>, want: StatusCode, context: &str) {
    match got {
        Ok(_) if want == StatusCode::OK => {}
        Ok(_) => panic!("{context}: a token was issued, expected {want}"),
        Err((status, body)) => {
            assert_eq!(*status, want, "{context}: {body}");
            let expected = match want {
                StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
                StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
                _ => return,
            };
            assert_eq!(code(body), expected, "{context}: {body}");
        }
    }
}

/// Guesses `count` wrong secrets for `user` from `client`; the first `allowed` answer 401,
/// the rest 429.
async fn guess(w: &World, client: &str, user: &str, count: usize, allowed: usize) -> Vec<String> {
    let mut guesses = Vec::new();
    for i in 0..count {
        let guess = format!("wrong-{i}-{}", e2e::random_suffix());
        let want =
            if i < allowed { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        let got = w.login(client, user, &guess).await;
        assert_status(&got, want, &format!("wrong secret #{} for {user} from {client}", i + 1));
        guesses.push(guess);
    }
    guesses
}

/// 20 wrong passwords for `root`, for the CI username and for a deploy token's username from
/// address A: A is throttled for `root` and the deploy token after 10 (429 with Retry-After),
/// but the right credentials from address B work at once, and CI keeps pushing from B (and,
/// since the CI username is never a throttling key, from A too).
async fn guessing_throttles_the_guessers_address_not_the_account(backend: MetaBackend) {
    let w = world(backend, &[TRUSTED_PROXY]).await;
    let mut guesses = guess(&w, A, "root", 20, 10).await;
    // Even the right password is refused from A now, with a hint when to come back.
    let resp = w
        .http
        .get(w.server.url("/jwt/auth"))
        .query(&[("service", SERVICE)])
        .basic_auth("root", Some(ADMIN_PASSWORD))
        .header("X-Forwarded-For", A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("429 carries Retry-After in seconds");
    assert!((1..=300).contains(&retry), "Retry-After: {retry}");
    // From B, root logs in at once.
    assert_status(&w.login(B, "root", ADMIN_PASSWORD).await, StatusCode::OK, "root from B");

    // The CI username: 20 wrong job tokens from A are 20 plain refusals...
    guesses.extend(guess(&w, A, CI_USERNAME, 20, 20).await);
    guesses.extend(guess(&w, A, "gitlab-ci-token", 3, 3).await);
    // ...and real CI jobs keep logging in and pushing, from B and from A.
    for client in [B, A] {
        let token = w
            .login(client, CI_USERNAME, &w.job.token)
            .await
            .unwrap_or_else(|e| panic!("CI login from {client} refused: {e:?}"));
        Registry::new(&w.server, Some(token))
            .push_image("acme/a", &format!("ci-{}", &e2e::random_suffix()[..6]))
            .await
            .assert_allowed(&format!("CI push after its username was guessed at, from {client}"));
    }

    // A deploy token's username: throttled at A after 10, working from B.
    guesses.extend(guess(&w, A, &w.deploy.username, 20, 10).await);
    assert_status(
        &w.login(A, &w.deploy.username, &w.deploy.token).await,
        StatusCode::TOO_MANY_REQUESTS,
        "deploy token from A",
    );
    let token = w.login(B, &w.deploy.username, &w.deploy.token).await.expect("deploy from B");
    Registry::new(&w.server, Some(token))
        .push_image("acme/a", "deployed")
        .await
        .assert_allowed("deploy token push from B");

    // Other users at A are not affected by failures for root and the deploy token.
    assert_status(&w.login(A, "alice", &w.alice.password).await, StatusCode::OK, "alice from A");
    let mut secrets: Vec<&str> = guesses.iter().map(String::as_str).collect();
    secrets.extend([w.alice.password.as_str(), &w.deploy.token, &w.job.token]);
    w.assert_log_free_of(&secrets);
}

/// Guessing across many usernames from one address: after 50 failures the address is
/// throttled for everything (CI logins included); other addresses are not.
async fn the_address_limit_stops_guessing_across_usernames(backend: MetaBackend) {
    let w = world(backend, &[TRUSTED_PROXY]).await;
    for i in 0..50 {
        // Each username fails a few times at most: only the address limit can stop this.
        let user = format!("guess-{}", i / 5);
        let got = w.login(C, &user, "wrong").await;
        assert_status(&got, StatusCode::UNAUTHORIZED, &format!("failure #{} from C", i + 1));
    }
    for (user, secret) in
        [("someone-new", "wrong"), (CI_USERNAME, w.job.token.as_str()), ("root", ADMIN_PASSWORD)]
    {
        assert_status(
            &w.login(C, user, secret).await,
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{user} from C after 50 failures there"),
        );
    }
    assert_status(&w.login(B, CI_USERNAME, &w.job.token).await, StatusCode::OK, "CI from B");
    assert_status(&w.login(B, "root", ADMIN_PASSWORD).await, StatusCode::OK, "root from B");
    // Anonymous tokens need no login and are never throttled.
    let anonymous =
        request_token_from(&w.http, &w.server.base, None, &[], Some(C)).await.map(|_| ());
    assert!(anonymous.is_ok(), "anonymous token from C: {anonymous:?}");
    w.assert_log_free_of(&[&w.job.token]);
}

/// Without a trusted proxy, `X-Forwarded-For` is the client's own claim and ignored: a
/// guesser cannot escape throttling by inventing addresses. Through a trusted proxy, only the
/// entry the proxy appended (the right-most) counts, not what the client wrote before it.
async fn forwarded_addresses_count_only_from_trusted_proxies(backend: MetaBackend) {
    // No trusted proxies (the default): every guess comes from 127.0.0.1.
    let w = world(backend, &[]).await;
    for i in 0..12 {
        let fake = format!("10.9.{i}.1");
        let want = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        let got = w.login(&fake, "alice", "wrong").await;
        assert_status(&got, want, &format!("guess #{} claiming to be {fake}", i + 1));
    }
    drop(w);

    // Trusted proxy: a client prepending fake addresses is still counted as A.
    let w = world(backend, &[TRUSTED_PROXY]).await;
    for i in 0..12 {
        let spoofed = format!("10.9.{i}.1, {A}");
        let want = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        let got = w.login(&spoofed, "alice", "wrong").await;
        assert_status(&got, want, &format!("guess #{} via {spoofed:?}", i + 1));
    }
    assert_status(
        &w.login(A, "alice", &w.alice.password).await,
        StatusCode::TOO_MANY_REQUESTS,
        "A",
    );
    // A malformed header counts as the proxy itself (127.0.0.1), not as A or anyone else.
    assert_status(
        &w.login("not-an-address", "alice", &w.alice.password).await,
        StatusCode::OK,
        "alice through the proxy with a malformed X-Forwarded-For",
    );
    assert_status(&w.login(B, "alice", &w.alice.password).await, StatusCode::OK, "alice from B");
}

/// Failed logins for a real user (wrong password, or a token-shaped secret that matches
/// nothing), a blocked user (wrong or even right password), an unknown user, the CI username
/// and a deploy token's username all cost one password verification: none answers in a
/// fraction of the time of the others, so the time does not tell them apart. (A lower bound
/// only, relative to the same server's own real-user failures: robust on a busy machine.)
async fn failed_logins_take_as_long_for_every_kind_of_username(backend: MetaBackend) {
    let w = world(backend, &[TRUSTED_PROXY]).await;
    let blocked = w.api.create_user("blocked-bob").await;
    w.api.block_user(blocked.id).await;
    let kinds: Vec<(&str, String, String)> = vec![
        ("real user, wrong password", "alice".into(), "wrong-password".into()),
        ("real user, token-shaped secret", "alice".into(), format!("stwp_{}", "x".repeat(32))),
        ("blocked user, wrong password", blocked.username.clone(), "wrong-password".into()),
        ("blocked user, right password", blocked.username.clone(), blocked.password.clone()),
        ("unknown user", "nobody-here".into(), "wrong-password".into()),
        ("CI username", CI_USERNAME.into(), format!("stwj_{}", "x".repeat(32))),
        ("deploy token username", w.deploy.username.clone(), format!("stwd_{}", "x".repeat(32))),
    ];
    const ROUNDS: usize = 7;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    // Round-robin, so that a slow moment of the machine hits every kind alike; each attempt
    // from its own address, so that throttling never answers instead of the password check.
    for round in 0..ROUNDS {
        for (k, (what, user, secret)) in kinds.iter().enumerate() {
            let client = format!("198.18.{round}.{k}");
            let started = Instant::now();
            let got = w.login(&client, user, secret).await;
            times[k].push(started.elapsed());
            assert_status(&got, StatusCode::UNAUTHORIZED, what);
        }
    }
    let median = |t: &Vec<Duration>| {
        let mut t = t.clone();
        t.sort();
        t[t.len() / 2]
    };
    let reference = median(&times[0]);
    let report: Vec<String> = kinds
        .iter()
        .zip(&times)
        .map(|((what, ..), t)| format!("{what}: {:?}", median(t)))
        .collect();
    eprintln!("median failed-login times: {report:#?}");
    for ((what, ..), t) in kinds.iter().zip(&times) {
        assert!(
            median(t) * 2 >= reference,
            "{what} fails in {:?}, the real user's wrong password in {reference:?}: the time \
             tells them apart ({report:?})",
            median(t)
        );
    }
}

/// More than 10 wrong passwords for one user from one address: 429 TOOMANYREQUESTS from that
/// address, even for the right password, with `Retry-After`. (From another address the right
/// password works at once: see `attack_enumeration.rs`.)
async fn brute_force_logins_are_rate_limited(backend: MetaBackend) {
    let w = tenants::world(backend, &[]).await;
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

/// Everyone who may not see `acme/b` (private, holding `latest`) gets from every `/v2` route
/// exactly the answer `acme/none` gets, name aside: no token (401 `UNAUTHORIZED`), an
/// anonymous token and alice's token for project A (401 `DENIED`), each with its challenge.
/// On `/api/v4`, alice's API token finds a private project, its registry repositories and a
/// private group neither by path nor by id, exactly as if they did not exist (404); the
/// catalog leaves `acme/b` out.
async fn private_repositories_and_projects_answer_as_nonexistent(backend: MetaBackend) {
    let w = tenants::world(backend, &[]).await;
    let secret = w.api.create_group("secret", None, "private").await;
    let secret_app = w.api.create_project(secret, "app", "private").await;
    let root_token = w.token(("root", ADMIN_PASSWORD), &[repo_scope("acme/b", "pull")]).await;
    let latest = w.registry(&root_token).pull("acme/b", "latest").await;
    latest.assert_allowed("root pulls acme/b");
    let digest = e2e::sha256_digest(latest.body.as_bytes());
    let manifest: Value = serde_json::from_str(&latest.body).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();

    let names = ["acme/b", "acme/none"];
    let scopes: Vec<String> = names
        .iter()
        .map(|n| repo_scope(n, "pull,push,delete"))
        .chain([repo_scope("acme/a", "pull,push"), "registry:catalog:*".to_string()])
        .collect();
    let anonymous =
        request_token(&w.http, &w.server.base, None, &scopes).await.expect("anonymous token");
    let alice = w.token((&w.alice.username, &w.alice.password), &scopes).await;
    let routes = [
        (Method::GET, "manifests/latest".to_string()),
        (Method::HEAD, "manifests/latest".to_string()),
        (Method::GET, format!("manifests/{digest}")),
        (Method::GET, "tags/list".to_string()),
        (Method::GET, format!("blobs/{layer}")),
        (Method::HEAD, format!("blobs/{layer}")),
        (Method::GET, format!("referrers/{digest}")),
        (Method::POST, "blobs/uploads/".to_string()),
        (Method::PUT, "manifests/latest".to_string()),
        (Method::DELETE, "manifests/latest".to_string()),
        (Method::DELETE, format!("blobs/{layer}")),
    ];
    for (caller, token, code) in [
        ("no token", None, "UNAUTHORIZED"),
        ("an anonymous token", Some(anonymous), "DENIED"),
        ("alice's token", Some(alice.clone()), "DENIED"),
    ] {
        let r = Registry::new(&w.server, token);
        for (method, route) in &routes {
            let mut answers: Vec<(StatusCode, String, Option<String>)> = Vec::new();
            for name in names {
                let path = format!("/v2/{name}/{route}");
                let mut req = r.req(method.clone(), &path);
                if *method == Method::PUT {
                    req = req
                        .header("Content-Type", e2e::gitlab::OCI_MANIFEST)
                        .body(latest.body.clone());
                }
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let www_authenticate = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let o = Outcome {
                    what: format!("{method} {path}"),
                    status,
                    www_authenticate,
                    body: resp.text().await.unwrap_or_default(),
                };
                let context = format!("{caller}: {method} {path}");
                if *method == Method::HEAD {
                    // No body to carry a code: the status and the challenge say it.
                    assert_eq!(o.status, StatusCode::UNAUTHORIZED, "{context}");
                    assert!(o.www_authenticate.is_some(), "{context}: no challenge");
                } else {
                    assert_challenged(&o, &context);
                    assert_eq!(o.error_code().as_deref(), Some(code), "{context}: {}", o.body);
                }
                answers.push(o.normalized(name));
            }
            assert_eq!(
                answers[0], answers[1],
                "{caller}: {method} {route} tells acme/b from acme/none"
            );
        }
    }
    let listed = w.registry(&alice).catalog().await.expect("alice's catalog");
    assert!(
        !listed.iter().any(|n| n.starts_with("acme/b") || n.starts_with("secret/")),
        "{listed:?}"
    );

    // The REST API, as alice (member of acme/a only) and without a token.
    let repos =
        w.api.call(Method::GET, &format!("/projects/{}/registry/repositories", w.b), None).await;
    let b_repository = repos[0]["id"].as_i64().expect("acme/b's repository");
    let pat = w.api.create_pat(&w.alice, &["api"]).await;
    let missing = 999_999;
    let pairs = [
        ("/projects/acme%2Fb".to_string(), "/projects/acme%2Fnone".to_string()),
        (format!("/projects/{}", w.b), format!("/projects/{missing}")),
        ("/projects/secret%2Fapp".to_string(), "/projects/secret%2Fnone".to_string()),
        (format!("/projects/{secret_app}"), format!("/projects/{missing}")),
        (
            format!("/projects/{}/registry/repositories", w.b),
            format!("/projects/{missing}/registry/repositories"),
        ),
        (
            format!("/registry/repositories/{b_repository}"),
            format!("/registry/repositories/{missing}"),
        ),
        (
            format!("/registry/repositories/{b_repository}/tags/list"),
            format!("/registry/repositories/{missing}/tags/list"),
        ),
        ("/groups/secret".to_string(), "/groups/nothing".to_string()),
        (format!("/groups/{secret}"), format!("/groups/{missing}")),
        (format!("/groups/{secret}/members"), format!("/groups/{missing}/members")),
    ];
    let get = |token: Option<String>, path: String| {
        let req = w.http.get(format!("{}/api/v4{path}", w.server.base));
        let req = match token {
            Some(t) => req.header("PRIVATE-TOKEN", t),
            None => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap_or_default())
        }
    };
    for (who, token) in [("alice", Some(pat.token.clone())), ("anonymous", None)] {
        for (private, absent) in &pairs {
            let seen = get(token.clone(), private.clone()).await;
            let none = get(token.clone(), absent.clone()).await;
            assert_eq!(seen.0, StatusCode::NOT_FOUND, "{who}: GET {private}: {}", seen.1);
            assert_eq!(seen, none, "{who}: GET {private} and GET {absent} answer differently");
        }
    }
    let projects = GitLab::with_token(&w.server, &pat.token)
        .call(Method::GET, "/projects?per_page=100", None)
        .await;
    let paths: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path_with_namespace"].as_str())
        .collect();
    assert!(!paths.contains(&"acme/b") && !paths.contains(&"secret/app"), "{paths:?}");
}
