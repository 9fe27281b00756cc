//! Two tenants and their people, for the attack tests (`tests/attack_*.rs`): private projects
//! `acme/a` and `acme/b` (each holding an image `latest`), a public `acme/pub`; `alice` is a
//! developer on `acme/a` only, `rita` a reporter on `acme/a` only. Plus the assertions every
//! attack class makes: a refusal with a challenge, a refused login, a log free of secrets.

use reqwest::StatusCode;
use serde_json::Value;

use crate::gitlab::{
    jwt_parts, level, repo_scope, seed_image, start_auth_server, token_for, GitLab, Outcome,
    Registry, User, ADMIN_PASSWORD, ADMIN_TOKEN,
};
use crate::{MetaBackend, TestServer};

pub struct World {
    pub server: TestServer,
    pub api: GitLab,
    pub http: reqwest::Client,
    /// Project ids of `acme/a` and `acme/b`.
    pub a: i64,
    pub b: i64,
    pub alice: User,
    pub rita: User,
}

/// Starts a token-auth server with `env` and builds the world on it.
pub async fn world(backend: MetaBackend, env: &[(&str, &str)]) -> World {
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
    let http = crate::gitlab::http_client();
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
    /// A registry token for `cred` asking for `scopes`; panics unless one is issued.
    pub async fn token(&self, cred: (&str, &str), scopes: &[String]) -> String {
        token_for(&self.http, &self.server.base, Some(cred), scopes).await
    }

    pub fn registry(&self, token: &str) -> Registry {
        Registry::new(&self.server, Some(token.to_string()))
    }

    /// Panics if the server log contains any of `secrets` (or root's password or token).
    pub fn assert_log_free_of(&self, secrets: &[&str]) {
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
pub fn assert_login_refused(
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
pub fn assert_challenged(o: &Outcome, context: &str) {
    o.assert_refused(context);
    assert_eq!(o.status, StatusCode::UNAUTHORIZED, "{context}: {}", o.body);
    let challenge =
        o.www_authenticate.as_deref().unwrap_or_else(|| panic!("{context}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer realm="), "{context}: {challenge}");
}

/// Panics unless `o` is exactly `status` with the OCI error `code`.
#[track_caller]
pub fn assert_refusal(o: &Outcome, status: StatusCode, code: &str, context: &str) {
    assert_eq!(o.status, status, "{context}: {} answered {}: {}", o.what, o.status, o.body);
    assert_eq!(o.error_code().as_deref(), Some(code), "{context}: {}: {}", o.what, o.body);
}
