//! Pull mirrors of a project (maintainers and above):
//!
//! | endpoint | method |
//! |---|---|
//! | `/projects/:id/registry/mirrors` | GET, POST |
//! | `/projects/:id/registry/mirrors/:mirror_id` | DELETE |
//! | `/projects/:id/registry/mirrors/:mirror_id/runs` | GET |
//!
//! A mirror follows one upstream repository (`upstream`: its URL, e.g.
//! `https://registry.example.com/team/svc`) into `<project>/<repository path>` (the rule of
//! every push, `auth::policy::project_for_image`), copying the tags `tag_filter` matches every
//! `interval`. The syncs run as a periodic job in the binary, with the copy engine of
//! `stowage import`; this module only keeps the settings and shows the runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meta::access_level;
use meta::mirrors::{MirrorRun, RegistryMirror};
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::{Params, Path, Ref};
use crate::routing::Routes;
use crate::service as svc;
use crate::time::iso8601;
use crate::ApiState;

const MIRROR_NOT_FOUND: &str = "404 Mirror Not Found";
/// Shortest interval between two syncs of a mirror.
const MIN_INTERVAL_MS: i64 = 60_000;
/// Longest tag filter accepted.
const MAX_FILTER_LEN: usize = 255;

pub fn routes() -> Routes {
    Routes::new()
        .get("/projects/{id}/registry/mirrors", list_mirrors)
        .post("/projects/{id}/registry/mirrors", create_mirror)
        .delete("/projects/{id}/registry/mirrors/{mirror_id}", delete_mirror)
        .get("/projects/{id}/registry/mirrors/{mirror_id}/runs", list_runs)
}

type Answer = Result<Response, ApiError>;

/// `:id` as a project the caller maintains (or administers).
async fn maintained_project(
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<meta::Project, ApiError> {
    caller.require_signed_in()?;
    let project = svc::project(&s.store, caller, &Ref::parse("id", id)?).await?;
    let level = crate::protection_api::rule_level(&s.store, caller, &project).await?;
    if level < access_level::MAINTAINER {
        return Err(ApiError::ForbiddenBecause(
            "managing pull mirrors needs the maintainer role or higher".into(),
        ));
    }
    Ok(project)
}

#[derive(Serialize)]
pub struct MirrorView {
    pub id: i64,
    pub project_id: i64,
    pub upstream: String,
    pub repository: String,
    pub tag_filter: Option<String>,
    pub interval_seconds: i64,
    pub next_run_at: String,
    pub created_at: String,
}

impl From<&RegistryMirror> for MirrorView {
    fn from(m: &RegistryMirror) -> Self {
        MirrorView {
            id: m.id,
            project_id: m.project_id,
            upstream: m.upstream.clone(),
            repository: m.destination.clone(),
            tag_filter: m.tag_filter.clone(),
            interval_seconds: m.interval_ms / 1000,
            next_run_at: iso8601(m.next_run_at),
            created_at: iso8601(m.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct RunView {
    pub id: i64,
    pub started_at: String,
    pub finished_at: String,
    pub tags_added: i64,
    pub tags_moved: i64,
    pub tags_unchanged: i64,
    pub tags_failed: i64,
    pub bytes: i64,
    pub error: Option<String>,
}

impl From<&MirrorRun> for RunView {
    fn from(r: &MirrorRun) -> Self {
        RunView {
            id: r.id,
            started_at: iso8601(r.started_at),
            finished_at: iso8601(r.finished_at),
            tags_added: r.tags_added,
            tags_moved: r.tags_moved,
            tags_unchanged: r.tags_unchanged,
            tags_failed: r.tags_failed,
            bytes: r.bytes,
            error: r.error.clone(),
        }
    }
}

#[derive(Deserialize)]
pub struct MirrorParams {
    upstream: Option<String>,
    tag_filter: Option<String>,
    interval: Option<String>,
}

async fn list_mirrors(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let project = maintained_project(&s, &caller, &id).await?;
    let mirrors = s.store.registry_mirrors(project.id).await?;
    Ok(Json(mirrors.iter().map(MirrorView::from).collect::<Vec<_>>()).into_response())
}

async fn create_mirror(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<MirrorParams>,
) -> Answer {
    let project = maintained_project(&s, &caller, &id).await?;
    let upstream = p.upstream.unwrap_or_default();
    if upstream.is_empty() {
        return Err(ApiError::bad_request("upstream is missing"));
    }
    let (base, repository) = ::service::mirrors::split_upstream(&upstream)
        .map_err(|message| ApiError::Invalid { field: "upstream", message })?;
    if let Some(host) = base.host() {
        ::service::outbound::check_host(&host, s.hooks_allow_local).map_err(|message| {
            ApiError::Invalid { field: "upstream", message: message.to_string() }
        })?;
    }
    let tag_filter = p.tag_filter.filter(|f| !f.is_empty());
    if let Some(filter) = &tag_filter {
        if filter.len() > MAX_FILTER_LEN {
            return Err(ApiError::Invalid {
                field: "tag_filter",
                message: format!("is too long (at most {MAX_FILTER_LEN} characters)"),
            });
        }
        regex::RegexBuilder::new(filter).size_limit(1 << 20).build().map_err(|e| {
            ApiError::Invalid { field: "tag_filter", message: format!("is not a valid regex: {e}") }
        })?;
    }
    let interval = p.interval.unwrap_or_else(|| "1h".into());
    let interval_ms =
        crate::registry_api::parse_duration_ms(&interval).map_err(|_| ApiError::Invalid {
            field: "interval",
            message: format!(
                "{} is not a duration: use a number and a unit, e.g. 30m, 1h or 1d",
                oci::preview(&interval)
            ),
        })?;
    if interval_ms < MIN_INTERVAL_MS {
        return Err(ApiError::Invalid { field: "interval", message: "must be at least 1m".into() });
    }
    let destination = format!("{}/{repository}", project.full_path);
    match auth::policy::project_for_image(&s.store, &destination).await? {
        Some(p) if p.id == project.id => {}
        _ => {
            return Err(ApiError::Invalid {
                field: "upstream",
                message: format!(
                    "names {repository}, which would be {destination}: more than {} levels \
                     below the project, or no repository of it",
                    auth::policy::MAX_EXTRA_SEGMENTS
                ),
            })
        }
    }
    let mirror = s
        .store
        .create_registry_mirror(
            project.id,
            upstream.trim_end_matches('/'),
            &destination,
            tag_filter.as_deref(),
            interval_ms,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(MirrorView::from(&mirror))).into_response())
}

fn mirror_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound(MIRROR_NOT_FOUND))
}

async fn delete_mirror(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, mirror)): Path<(String, String)>,
) -> Answer {
    let project = maintained_project(&s, &caller, &id).await?;
    if !s.store.delete_registry_mirror(project.id, mirror_id(&mirror)?).await? {
        return Err(ApiError::NotFound(MIRROR_NOT_FOUND));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_runs(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, mirror)): Path<(String, String)>,
) -> Answer {
    let project = maintained_project(&s, &caller, &id).await?;
    let mirror = s
        .store
        .registry_mirror(project.id, mirror_id(&mirror)?)
        .await?
        .ok_or(ApiError::NotFound(MIRROR_NOT_FOUND))?;
    let runs = s.store.mirror_runs(mirror.id, 100).await?;
    Ok(Json(runs.iter().map(RunView::from).collect::<Vec<_>>()).into_response())
}
