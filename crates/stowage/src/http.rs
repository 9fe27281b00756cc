//! The HTTP application: every surface's router, plus the layers every request passes
//! (request id, access log).

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

const REQUEST_ID: &str = "x-request-id";

pub fn app(
    registry: registry::Registry,
    api: api::ApiState,
    auth: Option<auth::web::AuthState>,
) -> Router {
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID);
    // The /v2 router makes its own access decisions (`registry.gate`), on the request it parsed.
    let mut app = registry::router(registry).merge(api::router(api));
    if let Some(auth) = auth {
        app = app.merge(auth::web::token_router(auth));
    }
    app.layer(middleware::from_fn(access_log))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(api_version_header))
}

/// Every response says which API it speaks, as Docker clients expect on `/v2/` and errors.
async fn api_version_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response
}

/// One log line per request: method, path, status, response bytes, duration, request id.
async fn access_log(request: Request, next: Next) -> Response {
    // Filtered out (e.g. `RUST_LOG=warn`): skip building the line on this hot path.
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id =
        request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
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
        "request"
    );
    response
}
