//! `GET /api/v4/admin/registry/gc`: the online-GC figures `stowage gc status` prints, and
//! `POST /api/v4/admin/registry/gc`: a full pass, run as a job (`gc_full_pass`, listed by
//! `GET /admin/jobs`) by whichever instance claims it. Instance admins only (401 without a
//! token, 403 for everyone else).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::background::JobView;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::{int, Params};
use crate::time::iso8601;
use crate::{ApiState, Routes};

pub fn routes() -> Routes {
    Routes::new().get("/admin/registry/gc", gc_status).post("/admin/registry/gc", start_full_pass)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullPassParams {
    #[serde(default, deserialize_with = "int")]
    min_age_seconds: Option<i64>,
}

/// The default `min_age_seconds`: what was pushed within the last hour is left alone, as
/// `stowage gc run` does by default.
const DEFAULT_MIN_AGE_SECONDS: u64 = 3600;

impl FullPassParams {
    fn job(&self) -> Result<gc::FullPassJob, ApiError> {
        let max = gc::FullPassJob::MAX_MIN_AGE_SECONDS;
        let min_age_seconds = match self.min_age_seconds {
            None => DEFAULT_MIN_AGE_SECONDS,
            Some(n) => u64::try_from(n).ok().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::invalid(
                    "min_age_seconds",
                    format!("must be between 0 and {max} (30 days), not {n}"),
                )
            })?,
        };
        Ok(gc::FullPassJob { min_age_seconds })
    }
}

/// Enqueues a full pass and answers 202 with its job.
async fn start_full_pass(
    State(s): State<ApiState>,
    caller: Caller,
    Params(p): Params<FullPassParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let job = p.job()?;
    let id = s.jobs.enqueue(gc::FULL_PASS_JOB, job).await?;
    let job = s.store.job(id).await?.ok_or(ApiError::NotFound("job"))?;
    tracing::info!(job = id, min_age_seconds = ?p.min_age_seconds, "GC full pass requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))).into_response())
}

async fn gc_status(
    State(s): State<ApiState>,
    caller: Caller,
) -> Result<Json<GcStatusView>, ApiError> {
    caller.require_admin()?;
    let status = s.store.gc_status(meta::now_millis()).await?;
    Ok(Json(GcStatusView::new(&status)))
}

/// The figures as JSON (the API's answer and `stowage gc status --json`).
#[derive(Serialize)]
pub struct GcStatusView {
    pub at: String,
    pub review_queues: ReviewQueuesView,
    pub storage_deletions: StorageDeletionsView,
    pub removed: RemovedView,
}

#[derive(Serialize)]
pub struct ReviewQueuesView {
    pub manifests: QueueView,
    pub blobs: QueueView,
}

#[derive(Serialize)]
pub struct QueueView {
    pub queued: i64,
    pub due: i64,
    pub oldest_due: Option<QueuedItemView>,
}

#[derive(Serialize)]
pub struct QueuedItemView {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub event: String,
    pub review_after: String,
    /// How long it has been due, in seconds.
    pub overdue_seconds: i64,
}

#[derive(Serialize)]
pub struct StorageDeletionsView {
    pub pending: i64,
    pub pending_bytes: i64,
    pub due: i64,
    pub failing: i64,
    pub oldest_queued_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Serialize)]
pub struct RemovedView {
    pub last_hour: ActivityView,
    pub last_day: ActivityView,
}

#[derive(Serialize)]
pub struct ActivityView {
    pub manifests: i64,
    pub blobs: i64,
    pub blob_bytes: i64,
    pub storage_objects: i64,
    pub storage_bytes: i64,
    pub leftovers: i64,
    pub leftover_bytes: i64,
    pub failures: i64,
}

impl GcStatusView {
    pub fn new(s: &meta::GcStatus) -> GcStatusView {
        let queue = |q: &meta::ReviewQueueFigures| QueueView {
            queued: q.queued,
            due: q.due,
            oldest_due: q.oldest_due.as_ref().map(|i| QueuedItemView {
                digest: i.digest.clone(),
                repository: i.repository.clone(),
                event: i.event.clone(),
                review_after: iso8601(i.review_after),
                overdue_seconds: (s.now - i.review_after).max(0) / 1000,
            }),
        };
        let activity = |a: &meta::GcActivity| ActivityView {
            manifests: a.manifests_removed,
            blobs: a.blobs_removed,
            blob_bytes: a.blob_bytes_removed,
            storage_objects: a.storage_objects_removed,
            storage_bytes: a.storage_bytes_removed,
            leftovers: a.leftovers_removed,
            leftover_bytes: a.leftover_bytes_removed,
            failures: a.failures,
        };
        GcStatusView {
            at: iso8601(s.now),
            review_queues: ReviewQueuesView {
                manifests: queue(&s.manifests),
                blobs: queue(&s.blobs),
            },
            storage_deletions: StorageDeletionsView {
                pending: s.storage.pending,
                pending_bytes: s.storage.pending_bytes,
                due: s.storage.due,
                failing: s.storage.failing,
                oldest_queued_at: s.storage.oldest_created_at.map(iso8601),
                last_error: s.storage.last_error.clone(),
            },
            removed: RemovedView {
                last_hour: activity(&s.last_hour),
                last_day: activity(&s.last_day),
            },
        }
    }
}
