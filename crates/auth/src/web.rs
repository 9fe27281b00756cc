//! The Docker token service (`GET`/`POST /jwt/auth`): turns credentials and requested scopes
//! into a short-lived registry token that grants what the access policy allows. The `/v2`
//! surface checks those tokens through [`crate::access::Gate`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;

use crate::jwt::TokenService;
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
