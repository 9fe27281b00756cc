//! The HTTP application: every surface's router, plus the layers every request passes
//! (security headers, request id, client address, access log, JSON errors). The `/v2` router makes its own
//! access decisions.
//!
//! Answers the HTTP machinery gives by itself — axum's rejections (a path that does not decode
//! to UTF-8, a query or body it cannot parse), 404 for unknown paths, 405, 413 — are rewritten
//! here into the error JSON of the surface the path belongs to, so no client ever gets plain
//! text. The few answers hyper writes before a request reaches the application (a request line
//! or header it cannot parse) are rewritten with [`automatic_error_response`] by the server loop.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::client_addr::{self, TrustedProxies};

const REQUEST_ID: &str = "x-request-id";

/// Headers every response carries: no content sniffing, no framing. The CSP forbids loading
/// anything — responses are JSON and blobs; the web UI's pages send their own policy.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
];

/// The API version header Docker clients expect on `/v2/` and on errors.
pub const API_VERSION_HEADER: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

pub fn app(
    registry: registry::Registry,
    api: api::ApiState,
    auth: Option<auth::web::AuthState>,
    web: Option<web::WebState>,
    trusted_proxies: TrustedProxies,
    rate_limiter: std::sync::Arc<auth::ratelimit::RateLimiter>,
) -> Router {
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID);
    // The /v2 router makes its own access decisions (`registry.gate`), on the request it parsed.
    let mut app = registry::router(registry).merge(api::router(api));
    if let Some(auth) = auth {
        app = app.merge(auth::web::token_router(auth));
    }
    // The web UI answers only paths no other surface owns, so it can never shadow /v2,
    // /api/v4 or /jwt/auth, whatever a group or project is called.
    let pages = web.map(web::router);
    app.fallback(move |request: Request| other_paths(pages.clone(), request))
        .layer(middleware::from_fn_with_state(rate_limiter, rate_limit))
        .layer(middleware::from_fn(errors_as_json))
        .layer(middleware::from_fn(request_metrics))
        .layer(middleware::from_fn(access_log))
        .layer(middleware::from_fn_with_state(trusted_proxies, client_addr::layer))
        .layer(middleware::from_fn(request_span))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(drop_unusable_request_id))
        .layer(middleware::from_fn(api_version_header))
        .layer(middleware::from_fn(security_headers))
}

/// Refuses a request over its rate limit (`ratelimit.*`, see [`auth::ratelimit`]) with 429
/// `TOOMANYREQUESTS` and `Retry-After`, in the error JSON of its surface; the keys are the
/// client address the client-address layer computed and the credential presented.
async fn rate_limit(
    axum::extract::State(limiter): axum::extract::State<
        std::sync::Arc<auth::ratelimit::RateLimiter>,
    >,
    request: Request,
    next: Next,
) -> Response {
    let surface = Surface::of(request.uri().path());
    let Some(class) = surface.rate_class(request.method()) else {
        return next.run(request).await;
    };
    let client = request
        .extensions()
        .get::<auth::ClientAddr>()
        .map(|c| c.0)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let keys = auth::ratelimit::rate_keys(client, request.headers());
    let Some(wait) = limiter.check(class, &keys).await else {
        return next.run(request).await;
    };
    let detail = "too many requests from this address or credential; retry after the time in \
                  the Retry-After header";
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, surface, request.method(), detail);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// Which error format a path's clients read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `/v2` and below: OCI error JSON, `{"errors":[{"code":…,"message":…}]}`.
    Registry,
    /// `/api/v4`: GitLab's `{"message":…}`.
    Api,
    /// `/jwt/auth`, the Docker token service.
    Token,
    /// Anything else; answered like the API, with an OCI `errors` array as well.
    Other,
}

impl Surface {
    pub fn of(path: &str) -> Surface {
        let under = |prefix: &str| {
            path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v2") {
            Surface::Registry
        } else if under("/api/v4") {
            Surface::Api
        } else if under("/jwt/auth") {
            Surface::Token
        } else {
            Surface::Other
        }
    }

    /// What a request on this surface is rate-limited as: `/v2` reads are pulls, its other
    /// methods pushes; paths of no machine surface are not limited.
    fn rate_class(self, method: &Method) -> Option<auth::ratelimit::RateClass> {
        use auth::ratelimit::RateClass;
        match self {
            Surface::Registry if method == Method::GET || method == Method::HEAD => {
                Some(RateClass::Pull)
            }
            Surface::Registry => Some(RateClass::Push),
            Surface::Token => Some(RateClass::Token),
            Surface::Api => Some(RateClass::Api),
            Surface::Other => None,
        }
    }

    /// Responses that may carry credentials or tokens must not be stored by any cache.
    fn never_cached(self) -> bool {
        matches!(self, Surface::Api | Surface::Token)
    }
}

/// The error JSON for an answer of the HTTP layer itself: OCI's format on `/v2`, GitLab's
/// `{"message": "<status> - <sentence>"}` elsewhere (with the OCI `errors` array too, so any
/// client finds a message). `detail` is the text axum or hyper gave, if any.
pub fn error_body(status: StatusCode, surface: Surface, method: &Method, detail: &str) -> String {
    let code = match status.as_u16() {
        400 if surface == Surface::Registry => "NAME_INVALID",
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 if surface == Surface::Registry => "NAME_UNKNOWN",
        413 => "SIZE_INVALID",
        429 => "TOOMANYREQUESTS",
        s if s >= 500 => "UNKNOWN",
        _ => "UNSUPPORTED",
    };
    let path_not_utf8 = detail.contains("UTF-8") || detail.contains("percent");
    let message = match status.as_u16() {
        400 if path_not_utf8 => "the request path does not decode to UTF-8: percent-encode \
             the UTF-8 bytes of names, tags and ids"
            .to_string(),
        400 if detail.is_empty() => "the request is malformed: check the request line and \
             headers (a path holds ASCII only; percent-encode anything else)"
            .to_string(),
        404 => "there is nothing at this path: the registry serves /v2/, /api/v4/ and /jwt/auth"
            .to_string(),
        405 => format!(
            "{method} is not allowed on this path: the Allow header lists the methods it accepts"
        ),
        413 => "the request body is larger than this server accepts".to_string(),
        414 => "the request path is longer than this server accepts".to_string(),
        431 => "the request headers are larger than this server accepts".to_string(),
        s if s >= 500 => {
            "the server failed to complete the request; see its log for the cause".to_string()
        }
        _ if !detail.is_empty() => format!("the request was refused: {detail}"),
        _ => format!(
            "the request was refused ({})",
            status.canonical_reason().unwrap_or("unknown status")
        ),
    };
    let errors = serde_json::json!([{ "code": code, "message": message }]);
    let body = match surface {
        Surface::Registry => serde_json::json!({ "errors": errors }),
        _ => serde_json::json!({
            "message": format!("{} {} - {message}", status.as_u16(),
                status.canonical_reason().unwrap_or("Error")),
            "errors": errors,
        }),
    };
    body.to_string()
}

/// A path no API route matched: a web page (when the UI is on and the path is not under
/// another surface's prefix), else the surface's JSON 404.
async fn other_paths(pages: Option<Router>, request: Request) -> Response {
    use tower::ServiceExt;
    match pages {
        Some(pages) if !machine_path(request.uri().path()) => match pages.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ => unknown_path(request).await,
    }
}

/// Whether a path belongs to the machine surfaces: under `/v2`, `/api` or `/jwt` however its
/// first segment is spelled (case, percent-encoding). Those names are reserved, so no group is
/// shadowed; a client that misspells an API route gets the surface's JSON 404, never a page.
fn machine_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let decoded = url::form_urlencoded::parse(format!("x={first}").as_bytes())
        .next()
        .map(|(_, v)| v.to_lowercase())
        .unwrap_or_default();
    Surface::of(path) != Surface::Other || matches!(decoded.as_str(), "v2" | "api" | "jwt")
}

/// What a path no surface serves answers.
async fn unknown_path(request: Request) -> Response {
    let surface = Surface::of(request.uri().path());
    json_error(StatusCode::NOT_FOUND, surface, request.method(), "")
}

fn json_error(status: StatusCode, surface: Surface, method: &Method, detail: &str) -> Response {
    let body = error_body(status, surface, method, detail);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Rewrites error answers that are not JSON — axum's rejections and the router's bare 404
/// and 405 — into the surface's error JSON, keeping status and headers (`Allow`, …).
async fn errors_as_json(request: Request, next: Next) -> Response {
    let surface = Surface::of(request.uri().path());
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(&response)
        || is_html(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // axum's rejections are one short line of text, e.g. "Invalid URL: Invalid UTF-8 in `path`".
    let detail = match axum::body::to_bytes(body, 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let body = error_body(status, surface, &method, &detail);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// The web UI's own error pages stay pages.
fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

fn is_json(response: &Response) -> bool {
    let Some(content_type) = response.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// Adds [`SECURITY_HEADERS`] to every response (a handler's own value wins), and
/// `Cache-Control: no-store` to token and API answers and to every 401 — unless the handler
/// chose a `Cache-Control` itself (blobs are immutable and say so).
async fn security_headers(request: Request, next: Next) -> Response {
    let surface = Surface::of(request.uri().path());
    let mut response = next.run(request).await;
    let unauthorized = response.status() == StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if surface.never_cached() || unauthorized {
        headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

/// The answer hyper gives by itself to a request it cannot parse (status 400, 414 or 431 and
/// an empty body), rewritten as this server's error JSON with the security headers. `head` is
/// the response head hyper wrote; `None` if it is not such an answer.
pub fn automatic_error_response(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let status = StatusCode::from_u16(code).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let mut date = None;
    for line in lines.by_ref() {
        let Some((name, value)) = line.split_once(':') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" if value.trim() != "0" => return None,
            "transfer-encoding" => return None,
            "date" => date = Some(value.trim()),
            _ => {}
        }
    }
    // The request could not be read, so its path is unknown: the body carries both formats.
    let body = error_body(status, Surface::Other, &Method::GET, "");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\n{}: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len(),
        API_VERSION_HEADER.0,
        API_VERSION_HEADER.1,
    );
    for (name, value) in SECURITY_HEADERS {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(date) = date {
        out.push_str(&format!("date: {date}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

/// Every response says which API it speaks, as Docker clients expect on `/v2/` and errors.
async fn api_version_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(API_VERSION_HEADER.0, HeaderValue::from_static(API_VERSION_HEADER.1));
    response
}

/// Runs the request inside a `request` span carrying its id, so every line logged while it is
/// handled — the access line, warnings, errors — names the request (the JSON formatter puts
/// it under `span`).
async fn request_span(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let span = tracing::info_span!("request", request_id = %id);
    next.run(request).instrument(span).await
}

/// A request id a client sent is kept (so a proxy's id follows the request through) only if
/// it is a plausible id: at most 128 characters of letters, digits and `-_.:`. Anything else
/// is dropped and a fresh id generated, so no client can stuff its text into every log line.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let usable = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    };
    let headers = request.headers_mut();
    let ids: Vec<&HeaderValue> = headers.get_all(REQUEST_ID).iter().collect();
    if ids.len() > 1 || ids.first().is_some_and(|v| !usable(v)) {
        headers.remove(REQUEST_ID);
    }
    next.run(request).await
}

/// Counts every request by route template, method and status, and records its latency (to
/// the response head). The route is the endpoint's template (`/v2/{name}/blobs/{digest}`,
/// `/api/v4/projects/{id}`), never the raw path, and unusual methods count as `other`, so no
/// client can make the label sets grow.
async fn request_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let matched =
        request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    let route = match response.extensions().get::<registry::RouteTemplate>() {
        Some(template) => template.0.to_string(),
        None => matched.unwrap_or_else(|| "unmatched".to_string()),
    };
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "stowage_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "stowage_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .increment(1);
    response
}

/// One log line per request: method, path, status, response bytes, duration, request id,
/// client address, and who the caller authenticated as (`alice (personal_access_token 3)`).
async fn access_log(mut request: Request, next: Next) -> Response {
    // Filtered out (e.g. `RUST_LOG=warn`): skip building the line on this hot path.
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id =
        request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let client = request.extensions().get::<auth::ClientAddr>().map(|c| c.0);
    // Filled by whichever surface authenticates the caller.
    let actor = auth::ActorSlot::default();
    request.extensions_mut().insert(actor.clone());
    let response = next.run(request).await;
    let bytes = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "access",
        %method,
        %path,
        status = response.status().as_u16(),
        bytes = %bytes,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %request_id,
        client = client.map(tracing::field::display),
        actor = actor.get().map(tracing::field::display),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_classes_follow_path_and_method() {
        use auth::ratelimit::RateClass;
        let class = |method: Method, path: &str| Surface::of(path).rate_class(&method);
        assert_eq!(class(Method::GET, "/v2/a/manifests/x"), Some(RateClass::Pull));
        assert_eq!(class(Method::HEAD, "/v2/"), Some(RateClass::Pull));
        assert_eq!(class(Method::PATCH, "/v2/a/blobs/uploads/x"), Some(RateClass::Push));
        assert_eq!(class(Method::POST, "/jwt/auth"), Some(RateClass::Token));
        assert_eq!(class(Method::GET, "/api/v4/projects"), Some(RateClass::Api));
        assert_eq!(class(Method::GET, "/v2x"), None);
        assert_eq!(class(Method::GET, "/debug/health"), None);
    }

    #[test]
    fn surfaces() {
        assert_eq!(Surface::of("/v2"), Surface::Registry);
        assert_eq!(Surface::of("/v2/a/b/manifests/x"), Surface::Registry);
        assert_eq!(Surface::of("/v2x"), Surface::Other);
        assert_eq!(Surface::of("/api/v4/projects"), Surface::Api);
        assert_eq!(Surface::of("/api/v40"), Surface::Other);
        assert_eq!(Surface::of("/jwt/auth"), Surface::Token);
        assert_eq!(Surface::of("/"), Surface::Other);
    }

    #[test]
    fn hyper_answers_become_json() {
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                     date: Sun, 29 Nov 2026 22:56:34 GMT\r\n\r\n";
        let out = String::from_utf8(automatic_error_response(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("x-content-type-options: nosniff"));
        assert!(head.contains("date: Sun, 29 Nov 2026 22:56:34 GMT"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["errors"][0]["code"], "UNSUPPORTED");
        assert!(json["message"].as_str().unwrap().starts_with("400 Bad Request - "));
        // Anything that is not an empty error answer stays as hyper wrote it.
        assert!(automatic_error_response(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error_response(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n")
            .is_none());
        assert!(automatic_error_response(b"\x00\x00\x12\x04").is_none());
    }
}
