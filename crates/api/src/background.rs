//! The REST API's background work, run as durable jobs (crate `jobs`): repository deletes
//! (the job lives in `service::repository_delete`; its handler is registered here) and bulk
//! tag deletes (`DELETE` answers 202 and enqueues one), and cleanup policy passes (a periodic
//! job, so across instances each pass runs once). [`register`] gives a runner the
//! handlers; they are thin wrappers around the functions the API used to spawn, and
//! `GET /api/v4/admin/jobs` lists the queue for instance admins.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobs::{JobContext, JobError, Runner};
use meta::jobs::{Job, JobFilter, JobState};
use meta::Store;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::caller::Caller;
use crate::cleanup::{run_due_policies, CleanupBudget};
use crate::error::ApiError;
use crate::input::{int, Params};
use crate::registry_api::{run_tag_cleanup, TagCleanup};
use crate::time::iso8601;
use crate::{ApiState, Routes};

/// Repository deletes are asked for through the write service (the web UI asks too).
pub use ::service::repository_delete::{RepositoryDelete, REPOSITORY_DELETE};

/// Deletes the tags of one repository that a bulk delete's rules select ([`BulkTagDelete`]).
pub const BULK_TAG_DELETE: &str = "bulk_tag_delete";
/// Runs the cleanup policies that are due (periodic).
pub const CLEANUP_POLICIES: &str = "cleanup_policies";

/// How often cleanup policies are looked at.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Who asked for a job, as it is stored: a user is looked up again when the job runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobCaller {
    User { id: i64 },
    Operator,
    Anonymous,
}

impl JobCaller {
    pub fn of(caller: &Caller) -> JobCaller {
        match caller {
            Caller::User(u) => JobCaller::User { id: u.id },
            Caller::Operator => JobCaller::Operator,
            Caller::Anonymous => JobCaller::Anonymous,
        }
    }

    async fn resolve(&self, store: &Store) -> Result<Caller, JobError> {
        Ok(match self {
            JobCaller::User { id } => match store.user_by_id(*id).await? {
                Some(user) => Caller::User(user),
                None => {
                    return Err(JobError::Permanent(format!(
                        "user {id}, who asked for this job, no longer exists"
                    )))
                }
            },
            JobCaller::Operator => Caller::Operator,
            JobCaller::Anonymous => Caller::Anonymous,
        })
    }
}

/// A bulk tag delete, with the rules as the request gave them (checked before enqueueing).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkTagDelete {
    pub project_id: i64,
    pub repository_id: i64,
    pub repository: String,
    pub caller: JobCaller,
    pub name_regex_delete: Option<String>,
    pub name_regex_keep: Option<String>,
    pub keep_n: Option<i64>,
    pub older_than: Option<String>,
    /// Who asked, for the audit log and the delete events.
    #[serde(default)]
    pub context: ::service::RequestContext,
}

impl BulkTagDelete {
    pub fn cleanup(&self) -> Result<TagCleanup, ApiError> {
        Ok(TagCleanup::new(
            self.name_regex_delete.as_deref(),
            self.name_regex_keep.as_deref(),
            self.keep_n,
            self.older_than.as_deref(),
        )?)
    }
}

/// A failure worth retrying when the database was the trouble; any other refusal would
/// repeat.
fn job_error(e: ApiError) -> JobError {
    match e {
        ApiError::Internal(e) => JobError::retry(e),
        other => JobError::Permanent(other.to_string()),
    }
}

/// Registers the API's job handlers and the cleanup policy schedule on `runner`.
pub fn register(runner: &mut Runner, writes: ::service::WriteService, budget: CleanupBudget) {
    let w = writes.clone();
    runner.handle(REPOSITORY_DELETE, move |ctx| {
        ::service::repository_delete::run_repository_delete(w.clone(), ctx)
    });
    let w = writes.clone();
    runner.handle(BULK_TAG_DELETE, move |ctx| bulk_tag_delete(w.clone(), ctx));
    let w = writes;
    runner.handle(CLEANUP_POLICIES, move |ctx| cleanup_policies(w.clone(), ctx, budget));
    runner.every(CLEANUP_POLICIES, CLEANUP_INTERVAL, json!({}));
}

async fn bulk_tag_delete(writes: ::service::WriteService, ctx: JobContext) -> Result<(), JobError> {
    let store = writes.store();
    let job: BulkTagDelete = ctx.payload()?;
    let cleanup = job.cleanup().map_err(job_error)?;
    let Some(project) = store.project_by_id(job.project_id).await? else { return Ok(()) };
    let Some(repository) = store.repository_by_id(job.repository_id).await? else {
        return Ok(());
    };
    let caller = job.caller.resolve(store).await?;
    let deleted = run_tag_cleanup(&writes, &caller, &project, &repository, &cleanup, &job.context)
        .await
        .map_err(job_error)?;
    tracing::info!(repository = %repository.name, deleted, "bulk tag delete done");
    Ok(())
}

async fn cleanup_policies(
    writes: ::service::WriteService,
    ctx: JobContext,
    budget: CleanupBudget,
) -> Result<(), JobError> {
    let report = run_due_policies(&writes, ctx.now, budget).await.map_err(job_error)?;
    if report.tags_removed > 0 || report.policies_finished > 0 || report.policies_unfinished > 0 {
        tracing::info!(?report, "cleanup policies ran");
    }
    Ok(())
}

// ---- GET /admin/jobs ------------------------------------------------------------------------

pub fn routes() -> Routes {
    Routes::new().get("/admin/jobs", list_jobs)
}

#[derive(Deserialize)]
struct JobParams {
    state: Option<String>,
    kind: Option<String>,
    #[serde(default, deserialize_with = "int")]
    limit: Option<i64>,
}

/// A job as `GET /admin/jobs` and `stowage jobs list --json` show it.
#[derive(Serialize)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub payload: serde_json::Value,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> JobView {
        JobView {
            id: j.id,
            kind: j.kind.clone(),
            state: j.state.to_string(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: iso8601(j.run_at),
            last_error: j.last_error.clone(),
            created_at: iso8601(j.created_at),
            finished_at: j.finished_at.map(iso8601),
            payload: j.payload.clone(),
        }
    }
}

/// The filter of a job listing, checked: `state` one of the five states, `limit` 1..=1000.
pub fn job_filter(
    state: Option<&str>,
    kind: Option<&str>,
    limit: Option<i64>,
) -> Result<JobFilter, ApiError> {
    let state = match state.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state {} is not a job state: use queued, running, succeeded, failed or dead",
                oci::preview(s)
            ))
        })?),
    };
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    Ok(JobFilter { state, kind: kind.filter(|k| !k.is_empty()).map(String::from), limit })
}

async fn list_jobs(
    State(s): State<ApiState>,
    caller: Caller,
    Params(p): Params<JobParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let filter = job_filter(p.state.as_deref(), p.kind.as_deref(), p.limit)?;
    let jobs = s.store.list_jobs(&filter).await?;
    Ok(Json(jobs.iter().map(JobView::from).collect::<Vec<_>>()).into_response())
}
