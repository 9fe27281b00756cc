//! The Docker token service (`GET`/`POST /jwt/auth`) and the layer that guards `/v2/`.
//!
//! `/v2/` requests need a bearer token whose `access` claim covers what the request does;
//! without one they get 401 with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
//! challenge, which makes docker, podman, skopeo and containerd fetch a token on their own.
//!
//! Long pushes: a token is checked when a request starts, so one long PATCH never fails
//! midway. A push in many chunks may outlive its token; a request continuing an upload
//! session is accepted with an *expired* token as long as the token is otherwise valid
//! (signature, issuer, audience), grants `push` on that repository, and the session was
//! started before the token expired. The session's own lifetime (idle purge) bounds this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use registry::{Action, ReadFilter, Requirement};

use crate::jwt::{Claims, TokenService};
use crate::policy::{self, Identity};
use crate::scope::{ResourceAccess, Scope};

/// Failed logins allowed per user within [`LOGIN_WINDOW`].
const MAX_USER_FAILURES: u32 = 10;
/// Failed logins allowed per client address: higher, since many users (a CI runner, an
/// office behind NAT) may share one address and one user's typos must not lock them all out.
const MAX_ADDRESS_FAILURES: u32 = 50;
const LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// Counts failed logins per key (`user:<name>`, `ip:<addr>`) in fixed windows.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// A limiter key (`user:<name>`, `ip:<addr>`) with the failures it allows per window.
type LimitKey = (String, u32);

impl LoginLimiter {
    fn blocked(&self, keys: &[LimitKey]) -> bool {
        let map = self.failures.lock().expect("limiter lock");
        keys.iter().any(|(k, max)| {
            map.get(k).is_some_and(|(n, since)| *n >= *max && since.elapsed() < LOGIN_WINDOW)
        })
    }

    fn failed(&self, keys: &[LimitKey]) {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < LOGIN_WINDOW);
        }
        for (k, _) in keys {
            let entry = map.entry(k.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= LOGIN_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }
}

/// Shared state of the token service and the `/v2/` guard.
#[derive(Clone)]
pub struct AuthState {
    pub store: meta::Store,
    pub tokens: Arc<TokenService>,
    /// The token endpoint URL clients are sent to; `None`: derived from each request's Host.
    pub realm: Option<String>,
    pub limiter: Arc<LoginLimiter>,
}

/// `/jwt/auth`.
pub fn token_router(state: AuthState) -> Router {
    Router::new().route("/jwt/auth", get(token_get).post(token_post)).with_state(state)
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{"code": code, "message": message}],
        "error": code.to_ascii_lowercase(),
        "error_description": message,
    });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn client_ip(info: Option<&axum::Extension<ConnectInfo<SocketAddr>>>) -> String {
    info.map(|axum::Extension(ConnectInfo(addr))| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Username and secret from `Authorization: Basic …`; `Err` when the header is malformed.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ()> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))
    else {
        return Err(());
    };
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (user, secret) = text.split_once(':').ok_or(())?;
    Ok(Some((user.to_string(), secret.to_string())))
}

/// Checks credentials with rate limiting. `Err` is the response to send.
async fn login(
    state: &AuthState,
    username: &str,
    secret: &str,
    ip: &str,
) -> Result<Identity, Response> {
    let keys = [
        (format!("user:{username}"), MAX_USER_FAILURES),
        (format!("ip:{ip}"), MAX_ADDRESS_FAILURES),
    ];
    if state.limiter.blocked(&keys) {
        tracing::warn!(username, ip, "login refused: too many failed attempts");
        return Err(json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many failed login attempts; wait a few minutes before trying again",
        ));
    }
    match policy::authenticate(&state.store, username, secret).await {
        Ok(Some(identity)) => Ok(identity),
        Ok(None) => {
            state.limiter.failed(&keys);
            tracing::info!(username, ip, "login failed");
            Err(json_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid username or password (use a personal access token, deploy token or CI job token as the password)",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "login check failed");
            Err(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the registry could not check the credentials",
            ))
        }
    }
}

/// The requested scopes the identity is allowed, each cut down to its allowed actions.
/// Never an error for a partial grant, never more than asked.
async fn grant(
    store: &meta::Store,
    identity: &Identity,
    scopes: &[Scope],
) -> Result<Vec<ResourceAccess>, meta::MetaError> {
    let mut out: Vec<ResourceAccess> = Vec::new();
    for scope in scopes {
        let granted: Vec<String> = match scope.kind.as_str() {
            "repository" => {
                if scope.name.parse::<oci::RepositoryName>().is_err() {
                    continue;
                }
                let allowed = policy::allowed_on_image(store, identity, &scope.name).await?;
                scope
                    .actions
                    .iter()
                    .filter(|a| {
                        let a = a.as_str();
                        allowed.iter().any(|x| x.as_str() == a) || (a == "*" && allowed.len() == 3)
                    })
                    .cloned()
                    .collect()
            }
            // Anyone may list; the listing shows only what the caller may read.
            "registry" if scope.name == "catalog" => {
                scope.actions.iter().filter(|a| *a == "*").cloned().collect()
            }
            _ => Vec::new(),
        };
        if granted.is_empty() {
            continue;
        }
        match out.iter_mut().find(|r| r.kind == scope.kind && r.name == scope.name) {
            Some(existing) => {
                for a in granted {
                    if !existing.actions.contains(&a) {
                        existing.actions.push(a);
                    }
                }
            }
            None => out.push(ResourceAccess {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions: granted,
            }),
        }
    }
    Ok(out)
}

fn token_response(
    state: &AuthState,
    identity: &Identity,
    access: Vec<ResourceAccess>,
    refresh: bool,
) -> Response {
    let issued = state.tokens.issue(&identity.subject(), &identity.credential_ref(), access);
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": meta::rfc3339(issued.issued_at as i64 * 1000),
    });
    if refresh && !matches!(identity, Identity::Anonymous) {
        body["refresh_token"] =
            state.tokens.issue_refresh(&identity.subject(), &identity.credential_ref()).into();
    }
    (
        StatusCode::OK,
        [("content-type", "application/json"), ("cache-control", "no-store")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /jwt/auth?service=&scope=&account=&offline_token=` with optional Basic credentials.
async fn token_get(
    State(state): State<AuthState>,
    info: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let params: Vec<(String, String)> = query
        .as_deref()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let identity = match basic_credentials(&headers) {
        Err(()) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "malformed Authorization header",
            )
        }
        Ok(None) => Identity::Anonymous,
        Ok(Some((user, secret))) => {
            match login(&state, &user, &secret, &client_ip(info.as_ref())).await {
                Ok(identity) => identity,
                Err(response) => return response,
            }
        }
    };
    let scopes =
        Scope::parse_all(params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
    let offline = params.iter().any(|(k, v)| k == "offline_token" && v == "true");
    match grant(&state.store, &identity, &scopes).await {
        Ok(access) => token_response(&state, &identity, access, offline),
        Err(e) => {
            tracing::error!(error = %e, "granting scopes failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the registry could not check permissions",
            )
        }
    }
}

/// `POST /jwt/auth`: the OAuth2 form (`grant_type=password` or `refresh_token`) that
/// containerd and buildkit use.
async fn token_post(
    State(state): State<AuthState>,
    info: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let identity = match field("grant_type") {
        "password" => {
            match login(&state, field("username"), field("password"), &client_ip(info.as_ref()))
                .await
            {
                Ok(identity) => identity,
                Err(response) => return response,
            }
        }
        "refresh_token" => {
            let loaded = match state.tokens.verify_refresh(field("refresh_token")) {
                Ok(claims) => {
                    policy::load_identity(&state.store, &claims.cred).await.ok().flatten()
                }
                Err(_) => None,
            };
            match loaded {
                Some(identity) => identity,
                None => {
                    return json_error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "the refresh token is invalid, expired or revoked; log in again",
                    )
                }
            }
        }
        other => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                &format!("grant_type {other:?} is not supported: use password or refresh_token"),
            )
        }
    };
    let scopes = Scope::parse_all([field("scope")]);
    match grant(&state.store, &identity, &scopes).await {
        Ok(access) => token_response(&state, &identity, access, true),
        Err(e) => {
            tracing::error!(error = %e, "granting scopes failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the registry could not check permissions",
            )
        }
    }
}

fn realm(state: &AuthState, headers: &HeaderMap) -> String {
    if let Some(realm) = &state.realm {
        return realm.clone();
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}/jwt/auth")
}

/// 401 with the challenge that starts the token flow. `denied` marks a valid token that does
/// not cover the request.
fn challenge(
    state: &AuthState,
    headers: &HeaderMap,
    scope: Option<&Scope>,
    denied: bool,
) -> Response {
    let mut value =
        format!("Bearer realm=\"{}\",service=\"{}\"", realm(state, headers), state.tokens.service);
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{}\"", scope.to_challenge()));
    }
    let mut response = if denied {
        value.push_str(",error=\"insufficient_scope\"");
        // Worded the same whether or not a project exists, so private projects stay invisible.
        json_error(
            StatusCode::UNAUTHORIZED,
            "DENIED",
            "requested access to the resource is denied: images live at <project path>[/up to 3 more levels] \
             of a project you have access to (pull: reporter, push: developer, delete: maintainer)",
        )
    } else {
        json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert("www-authenticate", v);
    }
    response
}

fn covers(claims: &Claims, kind: &str, name: &str, action: &str) -> bool {
    claims.access.iter().any(|a| {
        a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
    })
}

/// Applies the access policy to listings and mounts for the token's credential.
struct PolicyFilter {
    store: meta::Store,
    identity: Identity,
}

#[async_trait::async_trait]
impl registry::RepositoryFilter for PolicyFilter {
    async fn can_pull(&self, name: &str) -> bool {
        match policy::allowed_on_image(&self.store, &self.identity, name).await {
            Ok(actions) => actions.contains(&Action::Pull),
            Err(e) => {
                tracing::warn!(error = %e, "permission check failed; hiding the repository");
                false
            }
        }
    }
}

async fn attach_filter(state: &AuthState, claims: &Claims, request: &mut Request) -> bool {
    match policy::load_identity(&state.store, &claims.cred).await {
        Ok(Some(identity)) => {
            let filter = PolicyFilter { store: state.store.clone(), identity };
            request.extensions_mut().insert(ReadFilter(Arc::new(filter)));
            true
        }
        _ => false,
    }
}

/// The `/v2/` guard: a middleware in front of the registry router.
pub async fn guard(State(state): State<AuthState>, mut request: Request, next: Next) -> Response {
    let requirement = registry::requirement(request.method(), request.uri().path());
    if requirement == Requirement::None {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    let verified = bearer.as_deref().map(|t| state.tokens.verify(t));
    match requirement {
        Requirement::None => next.run(request).await,
        Requirement::Base => match verified {
            Some(Ok(_)) => next.run(request).await,
            _ => challenge(&state, request.headers(), None, false),
        },
        Requirement::Catalog => {
            let scope = Scope {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            };
            match verified {
                Some(Ok(claims)) if covers(&claims, "registry", "catalog", "*") => {
                    if attach_filter(&state, &claims, &mut request).await {
                        next.run(request).await
                    } else {
                        challenge(&state, request.headers(), Some(&scope), false)
                    }
                }
                Some(Ok(_)) => challenge(&state, request.headers(), Some(&scope), true),
                _ => challenge(&state, request.headers(), Some(&scope), false),
            }
        }
        Requirement::Repository { name, action, upload } => {
            let actions = match action {
                Action::Push => vec!["pull".to_string(), "push".to_string()],
                other => vec![other.as_str().to_string()],
            };
            let scope = Scope { kind: "repository".into(), name: name.to_string(), actions };
            match verified {
                Some(Ok(claims))
                    if covers(&claims, "repository", name.as_str(), action.as_str()) =>
                {
                    let mounting = request.method() == Method::POST
                        && request.uri().query().is_some_and(|q| q.contains("mount="));
                    if mounting && !attach_filter(&state, &claims, &mut request).await {
                        return challenge(&state, request.headers(), Some(&scope), false);
                    }
                    let writes_manifest = matches!(action, Action::Delete)
                        || (action == Action::Push && request.uri().path().contains("/manifests/"));
                    if writes_manifest {
                        match actor(&state, &claims, &name).await {
                            Some(actor) => {
                                request.extensions_mut().insert(actor);
                            }
                            None => {
                                return challenge(&state, request.headers(), Some(&scope), false)
                            }
                        }
                    }
                    next.run(request).await
                }
                Some(Ok(_)) => challenge(&state, request.headers(), Some(&scope), true),
                Some(Err(e))
                    if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature)
                        && upload.is_some() =>
                {
                    let token = bearer.as_deref().unwrap_or("");
                    if continues_upload(&state, token, &name, upload.as_deref().unwrap_or("")).await
                    {
                        next.run(request).await
                    } else {
                        challenge(&state, request.headers(), Some(&scope), false)
                    }
                }
                _ => challenge(&state, request.headers(), Some(&scope), false),
            }
        }
    }
}

/// The caller's role on the project `name` belongs to, for rules like tag protection.
/// Deploy tokens have no role (0); CI job tokens act as developers of their own project.
async fn actor(
    state: &AuthState,
    claims: &Claims,
    name: &oci::RepositoryName,
) -> Option<registry::Actor> {
    let identity = policy::load_identity(&state.store, &claims.cred).await.ok()??;
    let access_level = match &identity {
        Identity::User { user, .. } if user.is_admin => registry::Actor::ADMIN,
        Identity::User { user, .. } => {
            let project = policy::project_for_image(&state.store, name.as_str()).await.ok()??;
            state.store.effective_access_level(user.id, &project).await.ok()?
        }
        Identity::Job { .. } => meta::access_level::DEVELOPER,
        Identity::Deploy(_) | Identity::Anonymous => meta::access_level::NONE,
    };
    Some(registry::Actor { access_level })
}

/// Whether an expired token may continue upload `id` (see the module docs).
async fn continues_upload(
    state: &AuthState,
    token: &str,
    name: &oci::RepositoryName,
    id: &str,
) -> bool {
    let Ok(claims) = state.tokens.verify_ignoring_expiry(token) else { return false };
    if !covers(&claims, "repository", name.as_str(), "push") {
        return false;
    }
    match state.store.upload(id).await {
        Ok(Some(upload)) => {
            upload.repository == name.as_str() && upload.created_at <= claims.exp as i64 * 1000
        }
        _ => false,
    }
}
