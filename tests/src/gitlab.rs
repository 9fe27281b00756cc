//! Helpers for the tenancy and authentication tests (`tests/auth_*.rs`): a server started with
//! token authentication on, the GitLab-shaped REST API (`/api/v4`) to set up users, groups,
//! projects, members and tokens, the Docker token flow (`/jwt/auth`), registry requests made
//! with a bearer token (pull, push, delete, catalog), JWT decoding and forging (for attacks),
//! and the `stowage` CLI run against the same data as a server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::{random_bytes, sha256_digest, MetaBackend, TestServer};

/// The root personal access token seeded by `STOWAGE_ADMIN_TOKEN` (every scope).
pub const ADMIN_TOKEN: &str = "stowage-e2e-root-token-0123456789abcdef";
/// The password of `root`, from `STOWAGE_ADMIN_PASSWORD`.
pub const ADMIN_PASSWORD: &str = "Root-e2e-Passw0rd-4f9c2a";
/// The username CI job tokens log in with.
pub const CI_USERNAME: &str = "stowage-ci-token";
/// `service` of the token endpoint.
pub const SERVICE: &str = "container_registry";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// GitLab access levels.
pub mod level {
    pub const GUEST: i64 = 10;
    pub const REPORTER: i64 = 20;
    pub const DEVELOPER: i64 = 30;
    pub const MAINTAINER: i64 = 40;
    pub const OWNER: i64 = 50;
}

/// Starts a server with token authentication, `root`'s password and a seeded root token,
/// plus `extra` environment variables.
pub fn start_auth_server(backend: MetaBackend, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("STOWAGE_AUTH__MODE", "token"),
        ("STOWAGE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("STOWAGE_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(backend, &env)
}

impl TestServer {
    /// The environment the server process runs with: its data directory, its database (on
    /// PostgreSQL) and the extra `STOWAGE_*` variables it was started with. Other `stowage`
    /// commands (`admin`, `ci-env`) given this environment work on the same data.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "STOWAGE_DATA_DIR".to_string(),
            self.data_dir.path().join("data").to_string_lossy().into_owned(),
        )];
        if let Some(url) = &self.database_url {
            env.push(("STOWAGE_DATABASE_URL".to_string(), url.clone()));
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// `stowage <args>` with [`TestServer::server_env`].
    pub fn stowage_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::stowage_bin());
        cmd.args(args).env("RUST_LOG", "warn");
        for (k, v) in self.server_env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `stowage <args>` on this server's data; returns stdout, asserting success.
    #[track_caller]
    pub fn stowage(&self, args: &[&str]) -> String {
        let out = self.stowage_command(args).output().expect("run stowage");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "stowage {args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `stowage gc status --json`.
    #[track_caller]
    pub fn gc_status(&self) -> Value {
        serde_json::from_str(&self.stowage(&["gc", "status", "--json"]))
            .expect("gc status --json prints JSON")
    }

    /// The storage notices (thresholds, in order) the server has logged for top-level group
    /// `group` so far: one line per threshold crossed.
    pub fn logged_storage_notices(&self, group: &str) -> Vec<i64> {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("group {group} has")))
            .filter_map(|l| {
                let at = l.find(" % of its container registry storage limit")?;
                l[..at].rsplit(' ').next()?.parse().ok()
            })
            .collect()
    }
}

/// An HTTP client that does not follow redirects.
pub fn http_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// `acme/app` → `acme%2Fapp`, for `:id` path parameters.
pub fn encode_path(path: &str) -> String {
    path.replace('/', "%2F")
}

/// A user created through the API.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password: String,
}

/// A token created through the API: its id (if any), the username to log in with, the secret.
#[derive(Clone, Debug)]
pub struct Token {
    pub id: i64,
    pub username: String,
    pub token: String,
}

/// The `/api/v4` REST API, authenticated with a personal access token (`PRIVATE-TOKEN`).
#[derive(Clone)]
pub struct GitLab {
    pub http: Client,
    pub base: String,
    pub token: String,
}

impl GitLab {
    /// The API as `root`, with the seeded admin token.
    pub fn root(server: &TestServer) -> GitLab {
        GitLab::with_token(server, ADMIN_TOKEN)
    }

    pub fn with_token(server: &TestServer, token: &str) -> GitLab {
        GitLab { http: http_client(), base: server.base.clone(), token: token.to_string() }
    }

    /// Sends a request; returns the status and the body as JSON (`Null` when empty, a string
    /// when not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/api/v4{path}", self.base))
            .header("PRIVATE-TOKEN", &self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} /api/v4{path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a request and panics unless it succeeded; returns the JSON body.
    #[track_caller]
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> impl std::future::Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        let path = path.to_string();
        async move {
            let (status, value) = self.request(method.clone(), &path, body.clone()).await;
            assert!(
                status.is_success(),
                "{method} /api/v4{path} {} answered {status}: {value}\n(called at {caller})",
                body.map(|b| b.to_string()).unwrap_or_default()
            );
            value
        }
    }

    pub async fn create_user(&self, username: &str) -> User {
        let password = format!("Pw-{username}-{}", &crate::random_suffix()[..10]);
        let v = self
            .call(
                Method::POST,
                "/users",
                Some(json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "name": format!("User {username}"),
                    "password": password,
                    "skip_confirmation": true,
                })),
            )
            .await;
        User { id: id_of(&v), username: username.to_string(), password }
    }

    /// Creates a group (a subgroup when `parent_id` is given); returns its id.
    pub async fn create_group(&self, path: &str, parent_id: Option<i64>, visibility: &str) -> i64 {
        let mut body = json!({ "name": path, "path": path, "visibility": visibility });
        if let Some(parent) = parent_id {
            body["parent_id"] = parent.into();
        }
        id_of(&self.call(Method::POST, "/groups", Some(body)).await)
    }

    /// Creates a project in namespace (group) `namespace_id`; returns its id.
    pub async fn create_project(&self, namespace_id: i64, path: &str, visibility: &str) -> i64 {
        let body = json!({
            "name": path, "path": path, "namespace_id": namespace_id, "visibility": visibility,
        });
        id_of(&self.call(Method::POST, "/projects", Some(body)).await)
    }

    /// The id of repository `name` of project `project`.
    pub async fn repository_id(&self, project: i64, name: &str) -> i64 {
        let repos = self
            .call(Method::GET, &format!("/projects/{project}/registry/repositories"), None)
            .await;
        repos
            .as_array()
            .unwrap_or_else(|| panic!("repository list is not an array: {repos}"))
            .iter()
            .find(|r| r["path"] == name)
            .unwrap_or_else(|| panic!("{name} in {repos}"))["id"]
            .as_i64()
            .unwrap()
    }

    /// Sets `container_registry_access_level` (`enabled`, `private`, `disabled`) and checks
    /// that the project answers with it.
    pub async fn set_registry_access(&self, project_id: i64, access: &str) {
        let v = self
            .call(
                Method::PUT,
                &format!("/projects/{project_id}"),
                Some(json!({ "container_registry_access_level": access })),
            )
            .await;
        assert_eq!(v["container_registry_access_level"], access, "PUT /projects/{project_id}: {v}");
    }

    /// Adds `user_id` as a member of a group (`kind` = `groups`) or project (`projects`).
    pub async fn add_member(&self, kind: &str, id: i64, user_id: i64, access_level: i64) {
        self.call(
            Method::POST,
            &format!("/{kind}/{id}/members"),
            Some(json!({ "user_id": user_id, "access_level": access_level })),
        )
        .await;
    }

    /// A personal access token for `user` with `scopes`.
    pub async fn create_pat(&self, user: &User, scopes: &[&str]) -> Token {
        let v = self
            .call(
                Method::POST,
                &format!("/users/{}/personal_access_tokens", user.id),
                Some(json!({
                    "name": format!("e2e-{}", &crate::random_suffix()[..6]),
                    "scopes": scopes,
                    "expires_at": "2099-12-31",
                })),
            )
            .await;
        let token = v["token"].as_str().unwrap_or_else(|| panic!("PAT answer has no token: {v}"));
        Token { id: id_of(&v), username: user.username.clone(), token: token.to_string() }
    }

    pub async fn revoke_pat(&self, id: i64) {
        self.call(Method::DELETE, &format!("/personal_access_tokens/{id}"), None).await;
    }

    pub async fn block_user(&self, user_id: i64) {
        self.call(Method::POST, &format!("/users/{user_id}/block"), None).await;
    }

    /// A deploy token on a project (`kind` = `projects`) or group (`groups`).
    pub async fn create_deploy_token(
        &self,
        kind: &str,
        id: i64,
        username: &str,
        scopes: &[&str],
    ) -> Token {
        let v = self
            .call(
                Method::POST,
                &format!("/{kind}/{id}/deploy_tokens"),
                Some(json!({
                    "name": username, "username": username, "scopes": scopes,
                    "expires_at": "2099-12-31",
                })),
            )
            .await;
        Token {
            id: id_of(&v),
            username: v["username"]
                .as_str()
                .unwrap_or_else(|| panic!("no username: {v}"))
                .to_string(),
            token: v["token"].as_str().unwrap_or_else(|| panic!("no token: {v}")).to_string(),
        }
    }

    /// A CI job token for `project_id` (username `stowage-ci-token`).
    pub async fn create_job_token(&self, project_id: i64) -> Token {
        let v = self
            .call(Method::POST, &format!("/projects/{project_id}/job_tokens"), Some(json!({})))
            .await;
        Token {
            id: v["id"].as_i64().unwrap_or(0),
            username: CI_USERNAME.to_string(),
            token: v["token"].as_str().unwrap_or_else(|| panic!("no token: {v}")).to_string(),
        }
    }

    /// Lets job tokens of `target_project_id` pull from `project_id`.
    pub async fn allow_job_token(&self, project_id: i64, target_project_id: i64) {
        self.call(
            Method::POST,
            &format!("/projects/{project_id}/job_token_scope/allowlist"),
            Some(json!({ "target_project_id": target_project_id })),
        )
        .await;
    }
}

#[track_caller]
fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("API answer has no numeric id: {v}"))
}

// ---------------------------------------------------------------------------------------------
// The Docker token flow and registry requests.

/// `username`/`secret` for Basic auth; `None` is anonymous.
pub type Cred<'a> = Option<(&'a str, &'a str)>;

/// `scope` parameter for `name` with `actions` (`pull,push,delete`).
pub fn repo_scope(name: &str, actions: &str) -> String {
    format!("repository:{name}:{actions}")
}

/// `GET /jwt/auth?service=container_registry&scope=…` with Basic `cred`. `Ok(token)` on 200,
/// otherwise the status and body.
pub async fn request_token(
    http: &Client,
    base: &str,
    cred: Cred<'_>,
    scopes: &[String],
) -> Result<String, (StatusCode, String)> {
    request_token_from(http, base, cred, scopes, None).await
}

/// Like [`request_token`], sent as if through a proxy for client address `client`
/// (`X-Forwarded-For: <client>`; the server believes it only from `http.trusted_proxies`).
pub async fn request_token_from(
    http: &Client,
    base: &str,
    cred: Cred<'_>,
    scopes: &[String],
    client: Option<&str>,
) -> Result<String, (StatusCode, String)> {
    let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
    for s in scopes {
        query.push(("scope", s));
    }
    if let Some((user, _)) = cred {
        query.push(("account", user));
    }
    let mut req = http.get(format!("{base}/jwt/auth")).query(&query);
    if let Some(client) = client {
        req = req.header("X-Forwarded-For", client);
    }
    if let Some((user, secret)) = cred {
        req = req.basic_auth(user, Some(secret));
    }
    let resp = req.send().await.expect("GET /jwt/auth");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err((status, text));
    }
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("/jwt/auth body is not JSON ({e}): {text}"));
    Ok(v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("/jwt/auth answer has no token: {v}"))
        .to_string())
}

/// Like [`request_token`] but panics unless a token was issued.
#[track_caller]
pub fn token_for<'a>(
    http: &'a Client,
    base: &'a str,
    cred: Cred<'a>,
    scopes: &'a [String],
) -> impl std::future::Future<Output = String> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        match request_token(http, base, cred, scopes).await {
            Ok(t) => t,
            Err((status, body)) => panic!(
                "/jwt/auth for {:?} answered {status}: {body} (called at {caller})",
                cred.map(|c| c.0)
            ),
        }
    }
}

// ---- base64 (no extra dependencies) ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..chunk.len() + 1 {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    if url {
        out = out.replace('+', "-").replace('/', "_");
    }
    out
}

/// Standard base64 with padding.
pub fn base64_std(data: &[u8]) -> String {
    b64_encode(data, false)
}

/// base64url without padding, as in JWTs.
pub fn base64url(data: &[u8]) -> String {
    b64_encode(data, true)
}

/// Decodes base64 or base64url, with or without padding.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

/// The header and payload of a JWT, decoded (the signature is not checked).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let decode = |p: &str| -> Value {
        serde_json::from_slice(&base64_decode(p).expect("JWT part is base64url"))
            .expect("JWT part is JSON")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// The actions a token's `access` claim grants on repository `name` (sorted).
pub fn granted_actions(token: &str, name: &str) -> Vec<String> {
    let (_, payload) = jwt_parts(token);
    let mut actions: Vec<String> = payload["access"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|a| a["type"] == "repository" && a["name"] == name)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    actions.sort();
    actions.dedup();
    actions
}

/// What the registry answered to one request.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub what: String,
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl Outcome {
    async fn from(what: String, resp: reqwest::Response) -> Outcome {
        let status = resp.status();
        let www_authenticate =
            resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(String::from);
        let body = resp.text().await.unwrap_or_default();
        Outcome { what, status, www_authenticate, body }
    }

    pub fn allowed(&self) -> bool {
        self.status.is_success()
    }

    /// The first OCI error code of the body, if it is an OCI error document.
    pub fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(String::from)
    }

    /// Panics unless this is a clean refusal: 401 or 403 with an OCI error body.
    #[track_caller]
    pub fn assert_refused(&self, context: &str) {
        assert!(
            matches!(self.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
            "{context}: {} should be refused (401/403) but answered {}: {}",
            self.what,
            self.status,
            self.body
        );
        assert!(
            self.error_code().is_some(),
            "{context}: {} refusal has no OCI error JSON body: {}",
            self.what,
            self.body
        );
    }

    /// Panics unless the answer is 2xx.
    #[track_caller]
    pub fn assert_allowed(&self, context: &str) {
        assert!(
            self.allowed(),
            "{context}: {} should be allowed but answered {} (www-authenticate: {:?}): {}",
            self.what,
            self.status,
            self.www_authenticate,
            self.body
        );
    }

    /// Status, body and challenge with `name` replaced by a placeholder, to compare the
    /// answers for two repositories.
    pub fn normalized(&self, name: &str) -> (StatusCode, String, Option<String>) {
        let norm = |s: &str| s.replace(name, "<NAME>");
        (self.status, norm(&self.body), self.www_authenticate.as_deref().map(norm))
    }
}

/// A registry client holding one bearer token (or none).
#[derive(Clone)]
pub struct Registry {
    pub http: Client,
    pub base: String,
    pub token: Option<String>,
}

impl Registry {
    pub fn new(server: &TestServer, token: Option<String>) -> Registry {
        Registry { http: http_client(), base: server.base.clone(), token }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(&self, method: Method, path: &str) -> Outcome {
        let resp = self.req(method.clone(), path).send().await.expect("registry request");
        Outcome::from(format!("{method} {path}"), resp).await
    }

    /// `GET /v2/<name>/manifests/<tag>`.
    pub async fn pull(&self, name: &str, tag: &str) -> Outcome {
        let resp = self
            .req(Method::GET, &format!("/v2/{name}/manifests/{tag}"))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET manifest");
        Outcome::from(format!("GET /v2/{name}/manifests/{tag}"), resp).await
    }

    /// `GET /v2/<name>/tags/list`.
    pub async fn tags(&self, name: &str) -> Outcome {
        self.send(Method::GET, &format!("/v2/{name}/tags/list")).await
    }

    /// `DELETE /v2/<name>/manifests/<tag>`.
    pub async fn delete_tag(&self, name: &str, tag: &str) -> Outcome {
        self.send(Method::DELETE, &format!("/v2/{name}/manifests/{tag}")).await
    }

    /// `POST /v2/<name>/blobs/uploads/` (the start of a push).
    pub async fn start_upload(&self, name: &str) -> Outcome {
        let resp = self
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .expect("POST upload");
        let location =
            resp.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
        let mut o = Outcome::from(format!("POST /v2/{name}/blobs/uploads/"), resp).await;
        if o.allowed() {
            // Keep the Location where callers can find it.
            o.body = location.unwrap_or_default();
        }
        o
    }

    /// Uploads `data` (POST + PUT `?digest=`). `Err` is the first refused request.
    pub async fn upload_blob(&self, name: &str, data: &[u8]) -> Result<String, Outcome> {
        let digest = sha256_digest(data);
        let started = self.start_upload(name).await;
        if !started.allowed() {
            return Err(started);
        }
        let location = started.body;
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .req(Method::PUT, &format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let o = Outcome::from(format!("PUT {location}"), resp).await;
        if o.status != StatusCode::CREATED {
            return Err(o);
        }
        Ok(digest)
    }

    /// Pushes a small image (config + one random layer) as `name:tag`: two blob uploads and a
    /// manifest PUT. Returns the outcome of the first refused request or of the manifest PUT.
    pub async fn push_image(&self, name: &str, tag: &str) -> Outcome {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = random_bytes(512);
        let config_digest = match self.upload_blob(name, config).await {
            Ok(d) => d,
            Err(o) => return o,
        };
        let layer_digest = match self.upload_blob(name, &layer).await {
            Ok(d) => d,
            Err(o) => return o,
        };
        let manifest = manifest_json(&config_digest, config.len(), &layer_digest, layer.len());
        self.put_manifest(name, tag, &manifest).await
    }

    /// `PUT /v2/<name>/manifests/<tag>` of an OCI image manifest.
    pub async fn put_manifest(&self, name: &str, tag: &str, manifest: &[u8]) -> Outcome {
        let resp = self
            .req(Method::PUT, &format!("/v2/{name}/manifests/{tag}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        Outcome::from(format!("PUT /v2/{name}/manifests/{tag}"), resp).await
    }

    /// `GET /v2/_catalog?n=10000`: `Ok(repositories)` or the refusal.
    pub async fn catalog(&self) -> Result<Vec<String>, Outcome> {
        let o = self.send(Method::GET, "/v2/_catalog?n=10000").await;
        if !o.allowed() {
            return Err(o);
        }
        let v: Value = serde_json::from_str(&o.body)
            .unwrap_or_else(|e| panic!("catalog not JSON ({e}): {}", o.body));
        let mut repos: Vec<String> = v["repositories"]
            .as_array()
            .unwrap_or_else(|| panic!("catalog has no repositories array: {v}"))
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        repos.sort();
        Ok(repos)
    }
}

/// The bytes of an OCI image manifest with one config and one layer.
pub fn manifest_json(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config, "size": config_size },
        "layers": [ { "mediaType": OCI_LAYER, "digest": layer, "size": layer_size } ],
    }))
    .unwrap()
}

/// Pushes one image to `name` and tags it with every tag in `tags` (as a caller who may push).
pub async fn seed_image(registry: &Registry, name: &str, tags: &[String]) {
    let first = registry.push_image(name, &tags[0]).await;
    first.assert_allowed(&format!("seeding {name}"));
    let manifest = registry.pull(name, &tags[0]).await;
    manifest.assert_allowed(&format!("seeding {name}"));
    for tag in &tags[1..] {
        registry
            .put_manifest(name, tag, manifest.body.as_bytes())
            .await
            .assert_allowed(&format!("seeding {name}:{tag}"));
    }
}

/// Sends raw bytes to the server and returns (status, whole response text); for requests
/// reqwest would normalise (`..` in paths).
pub async fn raw_request(addr: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------------------------------------
// Forging tokens (attacks): ES256 signatures made with openssl.

/// A P-256 private key (PKCS#8 PEM) written by `openssl genpkey` into `dir`.
pub fn generate_p256_key(dir: &Path, name: &str) -> std::path::PathBuf {
    crate::tools::require_tool("openssl", "openssl");
    let path = dir.join(name);
    crate::tools::run(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(&path),
    )
    .ok();
    path
}

/// A JWT with `header` and `payload`, signed ES256 with the PEM key at `key`.
pub fn sign_es256(key: &Path, header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(payload.to_string().as_bytes())
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let sig = dir.path().join("sig");
    std::fs::write(&input, &signing_input).unwrap();
    crate::tools::run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .arg("-out")
            .arg(&sig)
            .arg(&input),
    )
    .ok();
    let der = std::fs::read(&sig).unwrap();
    format!("{signing_input}.{}", base64url(&der_ecdsa_to_raw(&der)))
}

/// ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) → 64-byte r‖s.
fn der_ecdsa_to_raw(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "not a DER sequence");
    let mut i = 2;
    if der[1] & 0x80 != 0 {
        i = 2 + (der[1] & 0x7f) as usize;
    }
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "not a DER integer");
        let len = der[i + 1] as usize;
        let mut int = &der[i + 2..i + 2 + len];
        while int.len() > 32 && int[0] == 0 {
            int = &int[1..];
        }
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
