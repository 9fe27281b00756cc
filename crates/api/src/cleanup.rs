//! Cleanup policies (GitLab's `container_expiration_policy`) on the REST API: set with
//! `PUT /projects/:id` (`container_expiration_policy_attributes`), shown by `GET /projects/:id`,
//! previewed with `GET /projects/:id/registry/cleanup_policy/dry_run`, and run by
//! [`run_due_policies`] (a periodic job, see `background`, so that with several instances each
//! pass runs once).
//!
//! What a policy may be and which tags it deletes is decided in `service::cleanup` (shared
//! with the web UI's settings page); this module parses the API's input, applies the
//! caller's role, and runs due policies. Runs are bounded by a [`CleanupBudget`]; a run that
//! exhausts it records the repository it stopped in and resumes there on the next pass. The
//! clock is a parameter, so tests can run policies "in 90 days".

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use ::service::cleanup::{cadence_ms, doomed_in, tag_cleanup, PolicyChanges, DAY_MS as DAY};
use axum::Json;
use meta::{CleanupPolicy, Project, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use ::service::cleanup::{DoomedTag, CADENCES, KEEP_N, OLDER_THAN};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::{flag, int, Path, Ref};
use crate::routing::Routes;
use crate::service as svc;
use crate::time::iso8601;
use crate::ApiState;

/// How cleanup policies appear in the audit log and registry events.
pub const CLEANUP_ACTOR: &str = "(cleanup policy)";

pub fn routes() -> Routes {
    Routes::new().get("/projects/{id}/registry/cleanup_policy/dry_run", dry_run_handler)
}

// ---- settings -------------------------------------------------------------------------------

/// `container_expiration_policy_attributes`; absent fields stay as they are.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyAttributes {
    #[serde(default, deserialize_with = "flag")]
    pub enabled: Option<bool>,
    pub cadence: Option<String>,
    #[serde(default, deserialize_with = "int")]
    pub keep_n: Option<i64>,
    pub older_than: Option<String>,
    pub name_regex: Option<String>,
    /// GitLab's newer name for `name_regex`.
    pub name_regex_delete: Option<String>,
    pub name_regex_keep: Option<String>,
}

impl From<PolicyAttributes> for PolicyChanges {
    fn from(a: PolicyAttributes) -> PolicyChanges {
        PolicyChanges {
            enabled: a.enabled,
            cadence: a.cadence,
            keep_n: a.keep_n.map(Some),
            older_than: a.older_than.map(Some),
            name_regex: a.name_regex_delete.or(a.name_regex),
            name_regex_keep: a.name_regex_keep,
        }
    }
}

/// The policy a project runs: its saved one or GitLab's defaults.
pub async fn policy_of(store: &Store, project_id: i64) -> Result<CleanupPolicy, ApiError> {
    Ok(::service::cleanup::policy_of(store, project_id).await?)
}

/// Applies `attributes` (a JSON object) to `project`'s policy at time `now` and saves it. The
/// caller must be a maintainer or above.
pub async fn update_policy(
    store: &Store,
    caller: &Caller,
    project: &Project,
    attributes: Value,
    now: i64,
) -> Result<CleanupPolicy, ApiError> {
    let policy = plan_policy_update(store, caller, project, attributes, now).await?;
    store.save_cleanup_policy(&policy).await?;
    Ok(policy)
}

/// The policy `update_policy` would save, fully validated, without saving it: a request that
/// changes a project and its policy checks the policy before changing anything.
pub async fn plan_policy_update(
    store: &Store,
    caller: &Caller,
    project: &Project,
    attributes: Value,
    now: i64,
) -> Result<CleanupPolicy, ApiError> {
    let level = svc::project_level(store, caller, project).await?;
    ::service::settings::require_maintainer(level, "changing a cleanup policy")?;
    let a: PolicyAttributes = serde_json::from_value(attributes).map_err(|e| {
        ApiError::bad_request(format!("container_expiration_policy_attributes is invalid: {e}"))
    })?;
    Ok(::service::cleanup::plan_policy_update(store, level, project, a.into(), now).await?)
}

/// `container_expiration_policy` in project answers.
#[derive(Serialize)]
pub struct PolicyView {
    pub cadence: String,
    pub enabled: bool,
    pub keep_n: Option<i64>,
    pub older_than: Option<String>,
    pub name_regex: Option<String>,
    pub name_regex_delete: Option<String>,
    pub name_regex_keep: Option<String>,
    pub next_run_at: Option<String>,
    /// `unscheduled`, `scheduled`, `unfinished` (a run stopped by its budget; it resumes).
    pub cleanup_status: String,
    pub last_run_at: Option<String>,
    pub last_run_status: Option<String>,
    pub last_run_deleted_tags_count: Option<i64>,
}

impl From<&CleanupPolicy> for PolicyView {
    fn from(p: &CleanupPolicy) -> PolicyView {
        PolicyView {
            cadence: p.cadence.clone(),
            enabled: p.enabled,
            keep_n: p.keep_n,
            older_than: p.older_than.clone(),
            name_regex: p.name_regex.clone(),
            name_regex_delete: p.name_regex.clone(),
            name_regex_keep: p.name_regex_keep.clone(),
            next_run_at: p.next_run_at.map(iso8601),
            cleanup_status: p.run_status.clone(),
            last_run_at: p.last_run_at.map(iso8601),
            last_run_status: p.last_run_status.clone(),
            last_run_deleted_tags_count: p.last_run_removed,
        }
    }
}

/// The view of `project`'s policy, for `GET /projects/:id`.
pub async fn policy_view(store: &Store, project_id: i64) -> Result<PolicyView, ApiError> {
    Ok(PolicyView::from(&policy_of(store, project_id).await?))
}

// ---- deciding -------------------------------------------------------------------------------

/// Exactly what `project`'s policy would delete if it ran to the end at `now`.
pub async fn dry_run(
    store: &Store,
    project: &Project,
    now: i64,
) -> Result<Vec<DoomedTag>, ApiError> {
    Ok(::service::cleanup::dry_run(store, project, now).await?)
}

#[derive(Serialize)]
struct DryRunView {
    project_id: i64,
    enabled: bool,
    tags_count: usize,
    tags: Vec<DoomedTag>,
}

async fn dry_run_handler(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_signed_in()?;
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let level = svc::project_level(&s.store, &caller, &project).await?;
    ::service::settings::require_maintainer(level, "a cleanup policy dry run")?;
    let tags = dry_run(&s.store, &project, meta::now_millis()).await?;
    let enabled = policy_of(&s.store, project.id).await?.enabled;
    Ok(Json(DryRunView { project_id: project.id, enabled, tags_count: tags.len(), tags })
        .into_response())
}

// ---- running --------------------------------------------------------------------------------

/// How much one scheduler pass may do; what is left resumes on the next pass.
#[derive(Clone, Copy, Debug)]
pub struct CleanupBudget {
    pub max_tags: usize,
    pub max_duration: Duration,
}

impl Default for CleanupBudget {
    fn default() -> Self {
        CleanupBudget { max_tags: 1_000, max_duration: Duration::from_secs(60) }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub policies_finished: usize,
    /// Policies stopped by the budget (they resume on the next pass).
    pub policies_unfinished: usize,
    pub tags_removed: usize,
}

/// Runs the policies due at `now`, within `budget`. Safe to call from several instances:
/// deleting a tag twice is harmless.
pub async fn run_due_policies(
    writes: &::service::WriteService,
    now: i64,
    budget: CleanupBudget,
) -> Result<RunReport, ApiError> {
    let store = writes.store();
    let started = Instant::now();
    let mut report = RunReport::default();
    for mut policy in store.due_cleanup_policies(now, 100).await? {
        let Some(project) = store.project_by_id(policy.project_id).await? else { continue };
        if policy.run_status != "unfinished" {
            policy.run_started_at = Some(now);
            policy.run_removed = 0;
            policy.run_cursor = None;
        }
        let cleanup = match tag_cleanup(&policy).map_err(ApiError::from) {
            Ok(cleanup) => cleanup,
            Err(e) => {
                tracing::warn!(project = project.id, error = %e, "cleanup policy cannot run");
                finish(store, &mut policy, now, "failed").await?;
                continue;
            }
        };
        let mut stopped = false;
        if let Some(cleanup) = cleanup {
            let repositories =
                store.project_repository_names(&project, policy.run_cursor.as_deref()).await?;
            'repositories: for repository in repositories {
                let name: oci::RepositoryName = match repository.parse() {
                    Ok(name) => name,
                    Err(_) => continue,
                };
                let doomed = doomed_in(store, &project, &repository, &cleanup, now).await?;
                for tag in doomed {
                    if report.tags_removed >= budget.max_tags
                        || started.elapsed() >= budget.max_duration
                    {
                        policy.run_cursor = Some(repository.clone());
                        stopped = true;
                        break 'repositories;
                    }
                    let Ok(tag) = tag.parse::<oci::Tag>() else { continue };
                    let actor = ::service::Actor::CleanupPolicy;
                    let ctx = ::service::RequestContext::system(CLEANUP_ACTOR);
                    match writes.delete_tag(&name, &tag, actor, &ctx).await {
                        Ok(true) => {
                            report.tags_removed += 1;
                            policy.run_removed += 1;
                        }
                        // Gone meanwhile, or a rule created meanwhile keeps it.
                        Ok(false) | Err(::service::ServiceError::Refused(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if stopped {
            policy.run_status = "unfinished".into();
            store.save_cleanup_policy(&policy).await?;
            report.policies_unfinished += 1;
            // The budget is spent: later policies wait for the next pass.
            break;
        }
        finish(store, &mut policy, now, "finished").await?;
        report.policies_finished += 1;
    }
    Ok(report)
}

async fn finish(
    store: &Store,
    p: &mut CleanupPolicy,
    now: i64,
    status: &str,
) -> Result<(), ApiError> {
    p.last_run_at = Some(now);
    p.last_run_removed = Some(p.run_removed);
    p.last_run_status = Some(status.into());
    p.run_removed = 0;
    p.run_cursor = None;
    p.run_status = "scheduled".into();
    p.next_run_at = Some(now + cadence_ms(&p.cadence).unwrap_or(DAY));
    store.save_cleanup_policy(p).await?;
    Ok(())
}
