//! A top-level group's dependency proxy: `GET /groups/:id/dependency_proxy` shows its
//! settings (upstream passwords never), `PUT` changes them: `enabled` (on by default, as
//! GitLab's), `ttl_policy` (`{enabled, ttl}`: the cache cleanup, GitLab's), `upstreams` (the
//! group's own, tried in order instead of the instance's; checked and sealed by
//! `service::dependency_proxy::group_upstreams`); `DELETE /groups/:id/dependency_proxy/cache`
//! purges what it cached (202, as GitLab). All need the owner role on the group.

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
use ::service::dependency_proxy::UpstreamInput;

type Answer = Result<Response, ApiError>;

pub fn routes() -> Routes {
    Routes::new()
        .get("/groups/{id}/dependency_proxy", show_settings)
        .put("/groups/{id}/dependency_proxy", update_settings)
        .delete("/groups/{id}/dependency_proxy/cache", purge_cache)
}

/// Longest cache time-to-live a group may set, in days (ten years).
const MAX_TTL_DAYS: i64 = 3650;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, deserialize_with = "flag")]
    enabled: Option<bool>,
    #[serde(default)]
    ttl_policy: Option<TtlPolicy>,
    #[serde(default)]
    upstreams: Option<Vec<UpstreamInput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlPolicy {
    #[serde(default, deserialize_with = "flag")]
    enabled: Option<bool>,
    /// Days.
    #[serde(default)]
    ttl: Option<i64>,
}

#[derive(Serialize)]
struct SettingsView {
    enabled: bool,
    ttl_policy: TtlPolicyView,
    upstreams: Vec<UpstreamView>,
}

#[derive(Serialize)]
struct TtlPolicyView {
    enabled: bool,
    ttl: i64,
}

/// An upstream as shown: never its password, only whether one is stored.
#[derive(Serialize)]
struct UpstreamView {
    url: String,
    username: Option<String>,
    password_set: bool,
}

impl From<meta::DependencyProxySettings> for SettingsView {
    fn from(s: meta::DependencyProxySettings) -> Self {
        SettingsView {
            enabled: s.enabled,
            ttl_policy: TtlPolicyView { enabled: s.ttl_enabled, ttl: s.ttl_days },
            upstreams: s
                .upstreams
                .into_iter()
                .map(|u| UpstreamView {
                    url: u.url,
                    username: u.username,
                    password_set: u.sealed_password.is_some(),
                })
                .collect(),
        }
    }
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

async fn show_settings(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let group =
        owned_top_level_group(&s, &caller, &id, "reading the dependency proxy settings").await?;
    let settings = s.store.dependency_proxy_settings(group.id).await?;
    Ok(Json(SettingsView::from(settings)).into_response())
}

async fn update_settings(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<Settings>,
) -> Answer {
    let group = owned_top_level_group(&s, &caller, &id, "changing the dependency proxy").await?;
    if p.enabled.is_none() && p.ttl_policy.is_none() && p.upstreams.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give enabled, ttl_policy ({enabled, ttl}) or upstreams",
        ));
    }
    let mut update =
        meta::DependencyProxySettingsUpdate { enabled: p.enabled, ..Default::default() };
    if let Some(ttl) = &p.ttl_policy {
        if ttl.enabled.is_none() && ttl.ttl.is_none() {
            return Err(ApiError::invalid("ttl_policy", "needs enabled or ttl (days)"));
        }
        if let Some(days) = ttl.ttl {
            if !(1..=MAX_TTL_DAYS).contains(&days) {
                return Err(ApiError::invalid(
                    "ttl_policy",
                    format!("ttl must be a number of days from 1 to {MAX_TTL_DAYS}"),
                ));
            }
        }
        update.ttl_enabled = ttl.enabled;
        update.ttl_days = ttl.ttl;
    }
    if let Some(input) = &p.upstreams {
        let current = s.store.group_upstreams(group.id).await?;
        let upstreams = ::service::dependency_proxy::group_upstreams(
            &s.dependency_proxy_key,
            group.id,
            &current,
            input,
            s.dependency_proxy_allow_local,
        )
        .map_err(|e| ApiError::invalid("upstreams", e))?;
        update.upstreams = Some(upstreams);
    }
    s.store.update_dependency_proxy_settings(group.id, &update).await?;
    let settings = s.store.dependency_proxy_settings(group.id).await?;
    Ok(Json(SettingsView::from(settings)).into_response())
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
