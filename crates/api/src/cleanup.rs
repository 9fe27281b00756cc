//! Cleanup policies (GitLab's `container_expiration_policy`): set with `PUT /projects/:id`
//! (`container_expiration_policy_attributes`), shown by `GET /projects/:id`, previewed with
//! `GET /projects/:id/registry/cleanup_policy/dry_run`, and run by [`run_due_policies`]
//! (a periodic job, see `background`, so that with several instances each pass runs once).
//!
//! A run deletes, per repository of the project, the tags the bulk tag delete would delete
//! with the policy's settings ([`TagCleanup`]: never `latest`; whole-name regexes; the `keep_n`
//! newest kept; only tags older than `older_than`) — except tags any protection or immutable
//! rule covers. Runs are bounded by a [`CleanupBudget`]; a run that exhausts it records the
//! repository it stopped in and resumes there on the next pass. The clock is a parameter, so
//! tests can run policies "in 90 days".

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use axum::Json;
use meta::{access_level, CleanupPolicy, Project, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::{flag, int, Path, Ref};
use crate::registry_api::TagCleanup;
use crate::routing::Routes;
use crate::service as svc;
use crate::time::iso8601;
use crate::ApiState;

/// How cleanup policies appear in the audit log and registry events.
pub const CLEANUP_ACTOR: &str = "(cleanup policy)";

pub const CADENCES: &[(&str, i64)] =
    &[("1d", DAY), ("7d", 7 * DAY), ("14d", 14 * DAY), ("1month", 30 * DAY), ("3month", 90 * DAY)];
pub const KEEP_N: &[i64] = &[1, 5, 10, 25, 50, 100];
pub const OLDER_THAN: &[&str] = &["7d", "14d", "30d", "90d"];
const DAY: i64 = 86_400_000;

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

fn cadence_ms(cadence: &str) -> Option<i64> {
    CADENCES.iter().find(|(name, _)| *name == cadence).map(|(_, ms)| *ms)
}

fn one_of<T: std::fmt::Display>(field: &str, values: &[T]) -> ApiError {
    let list = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    ApiError::bad_request(format!(
        "container_expiration_policy_attributes {field} must be one of {list}"
    ))
}

/// The policy a project runs: its saved one or GitLab's defaults.
pub async fn policy_of(store: &Store, project_id: i64) -> Result<CleanupPolicy, ApiError> {
    Ok(store
        .cleanup_policy(project_id)
        .await?
        .unwrap_or_else(|| CleanupPolicy::default_for(project_id)))
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
    if level < access_level::MAINTAINER {
        return Err(ApiError::ForbiddenBecause(
            "changing a cleanup policy needs the maintainer role or higher".into(),
        ));
    }
    let a: PolicyAttributes = serde_json::from_value(attributes).map_err(|e| {
        ApiError::bad_request(format!("container_expiration_policy_attributes is invalid: {e}"))
    })?;
    let mut p = policy_of(store, project.id).await?;
    let before = (p.enabled, p.cadence.clone());
    if let Some(enabled) = a.enabled {
        p.enabled = enabled;
    }
    if let Some(cadence) = a.cadence {
        if cadence_ms(&cadence).is_none() {
            let names: Vec<&str> = CADENCES.iter().map(|(n, _)| *n).collect();
            return Err(one_of("cadence", &names));
        }
        p.cadence = cadence;
    }
    if let Some(keep_n) = a.keep_n {
        if !KEEP_N.contains(&keep_n) {
            return Err(one_of("keep_n", KEEP_N));
        }
        p.keep_n = Some(keep_n);
    }
    if let Some(older_than) = a.older_than {
        if !OLDER_THAN.contains(&older_than.as_str()) {
            return Err(one_of("older_than", OLDER_THAN));
        }
        p.older_than = Some(older_than);
    }
    if let Some(regex) = a.name_regex_delete.or(a.name_regex) {
        p.name_regex = Some(regex).filter(|r| !r.is_empty());
    }
    if let Some(regex) = a.name_regex_keep {
        p.name_regex_keep = Some(regex).filter(|r| !r.is_empty());
    }
    // Invalid regexes are refused now rather than failing every run.
    tag_cleanup(&p)?;
    if !p.enabled {
        p.next_run_at = None;
        if p.run_status != "unfinished" {
            p.run_status = "unscheduled".into();
        }
    } else if before != (p.enabled, p.cadence.clone()) || p.next_run_at.is_none() {
        p.next_run_at = Some(now + cadence_ms(&p.cadence).unwrap_or(DAY));
        if p.run_status != "unfinished" {
            p.run_status = "scheduled".into();
        }
    }
    Ok(p)
}

/// What a policy deletes, as the bulk tag delete understands it. `None`: a policy without
/// `name_regex` deletes nothing.
fn tag_cleanup(p: &CleanupPolicy) -> Result<Option<TagCleanup>, ApiError> {
    let Some(delete) = p.name_regex.as_deref().filter(|r| !r.is_empty()) else { return Ok(None) };
    TagCleanup::new(Some(delete), p.name_regex_keep.as_deref(), p.keep_n, p.older_than.as_deref())
        .map(Some)
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

/// One tag a policy deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoomedTag {
    pub repository: String,
    pub name: String,
}

/// The tags of `repository` that `cleanup` deletes at `now`, without protected ones.
async fn doomed_in(
    store: &Store,
    project: &Project,
    repository: &str,
    cleanup: &TagCleanup,
    now: i64,
) -> Result<Vec<String>, ApiError> {
    let tags: Vec<(String, i64)> = store
        .published_tags(repository)
        .await?
        .into_iter()
        .map(|t| (t.name, t.published_at))
        .collect();
    let doomed = cleanup.doomed(&tags, now);
    if doomed.is_empty() {
        return Ok(doomed);
    }
    let protection = store.protection_in_project(project.clone(), repository).await?;
    Ok(doomed.into_iter().filter(|t| !protection.protects_from_cleanup(t)).collect())
}

/// Exactly what `project`'s policy would delete if it ran to the end at `now`.
pub async fn dry_run(
    store: &Store,
    project: &Project,
    now: i64,
) -> Result<Vec<DoomedTag>, ApiError> {
    let policy = policy_of(store, project.id).await?;
    let Some(cleanup) = tag_cleanup(&policy)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for repository in store.project_repository_names(project, None).await? {
        for name in doomed_in(store, project, &repository, &cleanup, now).await? {
            out.push(DoomedTag { repository: repository.clone(), name });
        }
    }
    Ok(out)
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
    if svc::project_level(&s.store, &caller, &project).await? < access_level::MAINTAINER {
        return Err(ApiError::ForbiddenBecause(
            "a cleanup policy dry run needs the maintainer role or higher".into(),
        ));
    }
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
        let cleanup = match tag_cleanup(&policy) {
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
                for tag in doomed_in(store, &project, &repository, &cleanup, now).await? {
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
