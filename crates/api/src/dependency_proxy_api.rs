//! A top-level group's dependency proxy: `PUT /groups/:id/dependency_proxy` turns it on or
//! off (`enabled`; on by default, as GitLab's), `DELETE /groups/:id/dependency_proxy/cache`
//! purges what it cached (202, as GitLab). Both need the owner role on the group.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meta::access_level;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::events_api::Audit;
use crate::input::{flag, Params, Path, Ref};
use crate::service::{self as svc, require_level};
use crate::{ApiState, Routes};

type Answer = Result<Response, ApiError>;

pub fn routes() -> Routes {
    Routes::new()
        .put("/groups/{id}/dependency_proxy", update_settings)
        .delete("/groups/{id}/dependency_proxy/cache", purge_cache)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, deserialize_with = "flag")]
    enabled: Option<bool>,
}

#[derive(Serialize)]
struct SettingsView {
    enabled: bool,
}

/// The top-level group `id` names, if the caller may see it and is its owner.
async fn owned_top_level_group(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    what: &str,
) -> Result<meta::Group, ApiError> {
    let group = svc::group(&s.store, caller, &Ref::parse("id", id)?).await?;
    require_level(svc::group_level(&s.store, caller, &group).await?, access_level::OWNER, what)?;
    if group.parent_id.is_some() {
        return Err(ApiError::bad_request(format!(
            "the dependency proxy belongs to top-level groups; use {}",
            group.full_path.split('/').next().unwrap_or(&group.full_path)
        )));
    }
    Ok(group)
}

async fn update_settings(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<Settings>,
) -> Answer {
    let group = owned_top_level_group(&s, &caller, &id, "changing the dependency proxy").await?;
    let Some(enabled) = p.enabled else {
        return Err(ApiError::invalid("enabled", "is missing: true or false"));
    };
    s.store.set_dependency_proxy_enabled(group.id, enabled).await?;
    Ok(Json(SettingsView { enabled }).into_response())
}

async fn purge_cache(
    State(s): State<ApiState>,
    caller: Caller,
    Audit(ctx): Audit,
    Path(id): Path<String>,
) -> Answer {
    let group =
        owned_top_level_group(&s, &caller, &id, "purging the dependency proxy cache").await?;
    s.writes.purge_dependency_proxy(&group.full_path, &ctx).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
