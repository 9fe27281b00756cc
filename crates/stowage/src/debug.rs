//! The debug address (`http.debug.addr`, distribution's key): what a cluster asks an instance,
//! on a listener of its own so that it never competes with clients and is never exposed with
//! them.
//!
//! - `GET /debug/health`: liveness. 200 while the process serves HTTP at all.
//! - `GET /debug/ready`: readiness. 200 when the metadata database and blob storage answer,
//!   else 503 with `Retry-After` and what failed, so a load balancer sends no clients here.
//! - `GET /metrics`: Prometheus text format. Counters and histograms are recorded where things
//!   happen, through the `metrics` facade (HTTP requests by route template, method and status;
//!   bytes received and sent; uploads in progress; tokens issued and refused); figures held in
//!   the database (job queue, GC queues, upload sessions) and the connection pool are sampled
//!   at each scrape.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds (seconds) of every latency histogram: 1 ms to 1 min.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the process-wide Prometheus recorder; before it (and without a debug address)
/// every metric call is a no-op.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// HELP lines, one per metric this process records or samples.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("stowage_http_requests_total", "HTTP requests by route, method and status");
    describe_histogram!(
        "stowage_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response head, by route and method"
    );
    describe_counter!(
        "stowage_http_received_bytes_total",
        Unit::Bytes,
        "Bytes received from clients"
    );
    describe_counter!("stowage_http_sent_bytes_total", Unit::Bytes, "Bytes sent to clients");
    describe_gauge!(
        "stowage_uploads_in_progress",
        "Blob upload requests (POST, PATCH, PUT) this instance is serving now"
    );
    describe_gauge!("stowage_upload_sessions", "Open upload sessions, on every instance");
    describe_counter!("stowage_tokens_issued_total", "Registry tokens issued, by credential kind");
    describe_counter!("stowage_token_failures_total", "Token requests refused, by reason");
    describe_gauge!("stowage_database_pool_connections", "Open metadata database connections");
    describe_gauge!("stowage_database_pool_idle_connections", "Idle database connections");
    describe_gauge!(
        "stowage_database_ping_seconds",
        Unit::Seconds,
        "Round trip of a trivial query, measured at the scrape"
    );
    describe_gauge!("stowage_database_up", "1 when the metadata database answered the scrape");
    describe_gauge!("stowage_jobs", "Jobs in the durable queue, by state");
    describe_gauge!("stowage_gc_review_queue", "Items queued for GC review, by kind");
    describe_gauge!("stowage_gc_review_due", "Items whose GC review is due, by kind");
    describe_gauge!("stowage_gc_storage_deletions_pending", "Storage objects waiting for deletion");
    describe_gauge!(
        "stowage_gc_storage_deletions_pending_bytes",
        Unit::Bytes,
        "Bytes waiting for deletion from storage"
    );
    describe_gauge!("stowage_gc_storage_deletions_failing", "Storage deletions that failed");
    describe_gauge!(
        "stowage_gc_removed_last_hour",
        "What GC removed in the last hour, by kind (manifests, blobs, storage objects)"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of this process"
    );
}

#[derive(Clone)]
struct DebugState {
    registry: registry::Registry,
    metrics: PrometheusHandle,
}

/// The router of the debug address.
pub fn router(registry: registry::Registry, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/debug/health", get(health))
        .route("/debug/ready", get(ready))
        .route("/metrics", get(scrape))
        .with_state(DebugState { registry, metrics })
}

async fn health() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<DebugState>) -> Response {
    let database = state.registry.store.ping().await.err().map(|e| e.to_string());
    let storage = storage_check(&state.registry).await.err();
    let status = |failure: &Option<String>| match failure {
        None => "ok".to_string(),
        Some(why) => format!("unavailable: {why}"),
    };
    let body = serde_json::json!({
        "database": status(&database),
        "storage": status(&storage),
    });
    if database.is_none() && storage.is_none() {
        return json(StatusCode::OK, body);
    }
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
    let wait = meta::UNAVAILABLE_RETRY_AFTER.as_secs();
    response.headers_mut().insert(header::RETRY_AFTER, wait.into());
    response
}

/// Whether blob storage answers: a metadata lookup of an object that need not exist.
async fn storage_check(registry: &registry::Registry) -> Result<(), String> {
    const PROBE: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let digest: oci::Digest = PROBE.parse().map_err(|e: oci::DigestError| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), registry.blobs.size(&digest)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

async fn scrape(State(state): State<DebugState>) -> Response {
    sample(&state.registry.store).await;
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Sets the gauges whose figures live in the database or the pool. A figure the database does
/// not give keeps its last value; `stowage_database_up` says whether this scrape reached it.
async fn sample(store: &meta::Store) {
    use metrics::gauge;
    let (size, idle) = store.pool_figures();
    gauge!("stowage_database_pool_connections").set(size as f64);
    gauge!("stowage_database_pool_idle_connections").set(idle as f64);
    if let Some(rss) = resident_memory_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    let started = Instant::now();
    if store.ping().await.is_err() {
        gauge!("stowage_database_up").set(0.0);
        return;
    }
    gauge!("stowage_database_up").set(1.0);
    gauge!("stowage_database_ping_seconds").set(started.elapsed().as_secs_f64());
    if let Ok(counts) = store.job_counts().await {
        for state in meta::jobs::JobState::ALL {
            let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            gauge!("stowage_jobs", "state" => state.as_str()).set(n as f64);
        }
    }
    if let Ok(n) = store.upload_session_count().await {
        gauge!("stowage_upload_sessions").set(n as f64);
    }
    if let Ok(gc) = store.gc_status(meta::now_millis()).await {
        for (kind, queue) in [("blob", &gc.blobs), ("manifest", &gc.manifests)] {
            gauge!("stowage_gc_review_queue", "kind" => kind).set(queue.queued as f64);
            gauge!("stowage_gc_review_due", "kind" => kind).set(queue.due as f64);
        }
        gauge!("stowage_gc_storage_deletions_pending").set(gc.storage.pending as f64);
        gauge!("stowage_gc_storage_deletions_pending_bytes").set(gc.storage.pending_bytes as f64);
        gauge!("stowage_gc_storage_deletions_failing").set(gc.storage.failing as f64);
        let hour = &gc.last_hour;
        for (kind, n) in [
            ("manifests", hour.manifests_removed),
            ("blobs", hour.blobs_removed),
            ("storage_objects", hour.storage_objects_removed),
            ("leftovers", hour.leftovers_removed),
            ("failures", hour.failures),
        ] {
            gauge!("stowage_gc_removed_last_hour", "kind" => kind).set(n as f64);
        }
    }
}

/// This process's resident set size, from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
