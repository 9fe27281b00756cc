//! The Docker token service (`GET`/`POST /jwt/auth`): turns credentials and requested scopes
//! into a short-lived registry token that grants what the access policy allows. The `/v2`
//! surface checks those tokens through [`crate::access::Gate`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine;

use meta::events::{AuditActor, AuditEntity, NewAuditEvent, RequestOrigin};

use crate::credentials::Credentials;
use crate::jwt::TokenService;
use crate::policy::{self, AuthError, Identity};
use crate::scope::{ResourceAccess, Scope};
use crate::throttle::LoginLimiter;

/// The address of the client a request comes from: the connection's peer, or — when the peer
/// is a proxy the operator trusts (`http.trusted_proxies`) — the client that proxy reports in
/// `X-Forwarded-For`. The HTTP layer of the binary computes it once per request and puts it in
/// the request's extensions; failed logins are throttled by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Who a request authenticated as, for the access log: the binary's HTTP layer puts an empty
/// slot into every request's extensions, whichever surface authenticates the caller fills it,
/// and the access log line names it.
#[derive(Clone, Debug, Default)]
pub struct ActorSlot(Arc<Mutex<Option<String>>>);

impl ActorSlot {
    pub fn fill(&self, actor: &AuditActor) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(actor.label());
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Fills the request's [`ActorSlot`], if the HTTP layer gave it one.
pub fn note_actor(extensions: &axum::http::Extensions, actor: &AuditActor) {
    if let Some(slot) = extensions.get::<ActorSlot>() {
        slot.fill(actor);
    }
}

/// Where a request comes from, as the audit log and registry events record it: THE one place
/// every surface (`/v2`, `/api/v4`, `/jwt/auth`) reads it from a request.
pub fn request_origin(
    method: &axum::http::Method,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> RequestOrigin {
    origin_of(method, headers, extensions.get::<ClientAddr>().copied())
}

fn origin_of(
    method: &axum::http::Method,
    headers: &HeaderMap,
    client: Option<ClientAddr>,
) -> RequestOrigin {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // Bounded: a header may be kilobytes long; the audit log keeps its start.
            .map(|v| v.chars().take(256).collect())
            .unwrap_or_default()
    };
    RequestOrigin {
        request_id: header("x-request-id"),
        addr: client.map(|c| c.0.to_string()).unwrap_or_default(),
        host: header("host"),
        method: method.to_string(),
        user_agent: header("user-agent"),
    }
}

/// The largest `POST /jwt/auth` form read: a real one is a few hundred bytes. A larger body is
/// refused with 413 (the HTTP layer renders axum's rejection as error JSON).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Shared state of the token service and the `/v2/` guard.
#[derive(Clone)]
pub struct AuthState {
    pub store: meta::Store,
    pub tokens: Arc<TokenService>,
    pub limiter: Arc<LoginLimiter>,
}

/// `/jwt/auth`.
pub fn token_router(state: AuthState) -> Router {
    Router::new()
        .route(
            "/jwt/auth",
            get(token_get).post(token_post).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .layer(axum::middleware::map_response(count_refusals))
        .with_state(state)
}

/// Counts token requests that got no token, by why (`stowage_token_failures_total`); issued
/// tokens are counted where they are issued, by credential kind.
async fn count_refusals(response: Response) -> Response {
    let reason = match response.status().as_u16() {
        200..=299 => return response,
        400 | 413 => "bad_request",
        401 => "invalid_credentials",
        429 => "throttled",
        503 => "unavailable",
        _ => "error",
    };
    metrics::counter!("stowage_token_failures_total", "reason" => reason).increment(1);
    response
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{"code": code, "message": message}],
        "error": code.to_ascii_lowercase(),
        "error_description": message,
    });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// The answer when the database failed while checking credentials or permissions: 503 with
/// `Retry-After` when it is unavailable, else 500; `UNKNOWN` either way. `what` says what could
/// not be done ("check the credentials").
fn database_failed(error: &meta::MetaError, what: &str) -> Response {
    match error.retry_after() {
        Some(wait) => {
            tracing::error!(%error, "the metadata database is unavailable");
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNKNOWN",
                &format!("the registry could not {what}: its database is unavailable; retry in a few seconds"),
            );
            response.headers_mut().insert("retry-after", HeaderValue::from(wait.as_secs().max(1)));
            response
        }
        None => {
            tracing::error!(%error, "{what} failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                &format!("the registry could not {what}"),
            )
        }
    }
}

/// 429 TOOMANYREQUESTS telling the client when to try again.
fn too_many(message: &str, retry_after: Duration) -> Response {
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message);
    let secs = retry_after.as_secs().max(1);
    response.headers_mut().insert("retry-after", HeaderValue::from(secs));
    response
}

/// The one answer to credentials that do not log in, whatever was wrong with them.
fn invalid_credentials() -> Response {
    json_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "invalid username or password (use a personal access token, deploy token or CI job token as the password)",
    )
}

/// The client address the HTTP layer computed; the unspecified address when the router runs
/// without that layer (then all clients share one throttling address, which fails safe).
pub fn client_of(addr: Option<Extension<ClientAddr>>) -> IpAddr {
    addr.map(|Extension(ClientAddr(ip))| ip).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
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

/// Why a login was refused.
#[derive(Debug)]
pub enum LoginRefusal {
    /// Too many failed attempts from this address (or for this username from it): wait.
    Throttled(Duration),
    /// Wrong, malformed or unusable credentials — one answer, whatever was wrong.
    Invalid,
    /// Too many passwords are being checked right now: the sentence says to retry.
    Busy(String),
    /// The database failed while checking.
    Database(meta::MetaError),
}

/// THE login check every surface that accepts a username and secret uses (`/jwt/auth`, the
/// web UI's sign-in form). In order, so that nothing expensive happens for a request that
/// will be refused anyway: the client's address limit; the form of the credentials (bounded
/// length, no control characters); the address-and-username limit; and only then the
/// database and the password pool. `via` names the surface in the audit log.
pub async fn check_login(
    state: &AuthState,
    origin: &RequestOrigin,
    client: IpAddr,
    username: &str,
    secret: &str,
    via: &str,
) -> Result<Identity, LoginRefusal> {
    let throttled = |wait: Duration| {
        tracing::warn!(
            username = %oci::preview(username),
            %client,
            "login refused: too many failed attempts"
        );
        LoginRefusal::Throttled(wait)
    };
    let address = [state.limiter.address_key(client)];
    if let Some(wait) = state.limiter.blocked(&address).await {
        return Err(throttled(wait));
    }
    let credentials = match Credentials::parse(username, secret) {
        Ok(credentials) => credentials,
        Err(why) => {
            state.limiter.failed(&address).await;
            tracing::info!(username = %oci::preview(username), %client, reason = %why, "login refused");
            return Err(LoginRefusal::Invalid);
        }
    };
    let keys = state.limiter.keys(client, credentials.username());
    if let Some(wait) = state.limiter.blocked(&keys).await {
        return Err(throttled(wait));
    }
    match policy::authenticate(&state.store, &credentials).await {
        Ok(Some(identity)) => {
            state.limiter.succeeded(&keys).await;
            audit_login(&state.store, origin, identity.audit_actor(), true, via).await;
            Ok(identity)
        }
        Ok(None) => {
            state.limiter.failed(&keys).await;
            tracing::info!(username = %oci::preview(username), %client, "login failed");
            let actor = AuditActor::system(credentials.username());
            audit_login(&state.store, origin, actor, false, via).await;
            Err(LoginRefusal::Invalid)
        }
        Err(AuthError::Busy(busy)) => {
            tracing::warn!(%client, "login refused: the password pool is full");
            Err(LoginRefusal::Busy(busy.to_string()))
        }
        Err(AuthError::Meta(e)) => Err(LoginRefusal::Database(e)),
    }
}

/// [`check_login`] for `/jwt/auth`: `Err` is the response to send.
async fn login(
    state: &AuthState,
    origin: &RequestOrigin,
    client: IpAddr,
    username: &str,
    secret: &str,
) -> Result<Identity, Response> {
    check_login(state, origin, client, username, secret, "/jwt/auth").await.map_err(|refusal| {
        match refusal {
            LoginRefusal::Throttled(wait) => too_many(
                "too many failed login attempts from this address; wait a few minutes before trying again",
                wait,
            ),
            LoginRefusal::Invalid => invalid_credentials(),
            LoginRefusal::Busy(message) => too_many(&message, Duration::from_secs(1)),
            LoginRefusal::Database(e) => database_failed(&e, "check the credentials"),
        }
    })
}

/// Records a login attempt that reached the credential check (throttled and malformed ones
/// are refused unread, and not recorded: a flood must not become a flood of writes).
async fn audit_login(
    store: &meta::Store,
    origin: &RequestOrigin,
    actor: AuditActor,
    success: bool,
    via: &str,
) {
    let entity = AuditEntity::user(actor.user_id.unwrap_or(0), &actor.name);
    let event = NewAuditEvent {
        actor: &actor,
        origin,
        entity,
        action: "login",
        target_type: "User",
        target_id: actor.user_id.map(|id| id.to_string()).unwrap_or_default(),
        target_details: actor.name.clone(),
        success,
        details: serde_json::json!({ "via": via }),
        at: meta::now_millis(),
    };
    if let Err(e) = store.record_audit(&event).await {
        tracing::warn!(error = %e, "recording a login in the audit log failed");
    }
}

fn too_many_scopes(e: crate::scope::TooManyScopes) -> Response {
    json_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &e.to_string())
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
                let Ok(name) = scope.name.parse::<oci::RepositoryName>() else { continue };
                let allowed = policy::allowed_on_image(store, identity, &name).await?;
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
    let credential = match identity {
        Identity::Anonymous => "anonymous",
        Identity::User { pat: None, .. } => "password",
        Identity::User { pat: Some(_), .. } => "personal_access_token",
        Identity::Deploy(_) => "deploy_token",
        Identity::Job { .. } => "job_token",
    };
    metrics::counter!("stowage_tokens_issued_total", "credential" => credential).increment(1);
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
    client: Option<Extension<ClientAddr>>,
    slot: Option<Extension<ActorSlot>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let origin = origin_of(&axum::http::Method::GET, &headers, client.as_ref().map(|c| c.0));
    let params: Vec<(String, String)> = query
        .as_deref()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let scopes = match Scope::parse_all(
        params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()),
    ) {
        Ok(scopes) => scopes,
        Err(e) => return too_many_scopes(e),
    };
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
            match login(&state, &origin, client_of(client), &user, &secret).await {
                Ok(identity) => identity,
                Err(response) => return response,
            }
        }
    };
    if let Some(Extension(slot)) = &slot {
        slot.fill(&identity.audit_actor());
    }
    let offline = params.iter().any(|(k, v)| k == "offline_token" && v == "true");
    match grant(&state.store, &identity, &scopes).await {
        Ok(access) => token_response(&state, &identity, access, offline),
        Err(e) => database_failed(&e, "check permissions"),
    }
}

/// `POST /jwt/auth`: the OAuth2 form (`grant_type=password` or `refresh_token`) that
/// containerd and buildkit use.
async fn token_post(
    State(state): State<AuthState>,
    client: Option<Extension<ClientAddr>>,
    slot: Option<Extension<ActorSlot>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let origin = origin_of(&axum::http::Method::POST, &headers, client.as_ref().map(|c| c.0));
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let scopes = match Scope::parse_all([field("scope")]) {
        Ok(scopes) => scopes,
        Err(e) => return too_many_scopes(e),
    };
    let identity = match field("grant_type") {
        "password" => {
            match login(&state, &origin, client_of(client), field("username"), field("password"))
                .await
            {
                Ok(identity) => identity,
                Err(response) => return response,
            }
        }
        "refresh_token" => {
            let loaded = match state.tokens.verify_refresh(field("refresh_token")) {
                Ok(claims) => match policy::load_identity(&state.store, &claims.cred).await {
                    Ok(identity) => identity,
                    Err(e) => return database_failed(&e, "check the refresh token"),
                },
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
    if let Some(Extension(slot)) = &slot {
        slot.fill(&identity.audit_actor());
    }
    match grant(&state.store, &identity, &scopes).await {
        Ok(access) => token_response(&state, &identity, access, true),
        Err(e) => database_failed(&e, "check permissions"),
    }
}
