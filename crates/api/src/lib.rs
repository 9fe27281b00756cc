//! The GitLab-compatible REST API under `/api/v4`: users, groups, projects, members, personal
//! access tokens, deploy tokens, CI job tokens and the job-token allowlist.
//!
//! Requests authenticate with a personal access token that has the `api` scope, in the
//! `PRIVATE-TOKEN` header or as `Authorization: Bearer`. Errors are `{"message": ...}`.
//! The rules (who may see and do what) live in [`service`], which the `stowage admin` CLI
//! calls too; handlers only translate HTTP. This crate owns no SQL: it calls `meta` and `auth`.

use std::time::Duration;

use axum::routing::{get, post, put};
use axum::Router;

pub mod caller;
pub mod cleanup;
pub mod error;
pub mod export;
mod handlers;
pub mod input;
pub mod names;
pub mod protection_api;
pub mod registry_api;
pub mod service;
pub mod time;
pub mod views;

pub use caller::Caller;
pub use error::ApiError;

/// What the API handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: meta::Store,
    /// Lifetime of CI job tokens minted through the API.
    pub job_token_lifetime: Duration,
}

/// Every `/api/v4` route.
pub fn router(state: ApiState) -> Router {
    use handlers::*;
    let v4 = Router::new()
        .route("/user", get(current_user))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/block", post(block_user))
        .route("/users/{id}/unblock", post(unblock_user))
        .route("/users/{id}/personal_access_tokens", post(create_personal_access_token))
        .route("/personal_access_tokens", get(list_personal_access_tokens))
        .route(
            "/personal_access_tokens/{id}",
            get(get_personal_access_token).delete(revoke_personal_access_token),
        )
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{id}", get(get_group))
        .route("/groups/{id}/members", get(list_members::<OnGroup>).post(add_member::<OnGroup>))
        .route(
            "/groups/{id}/members/{user_id}",
            put(update_member::<OnGroup>).delete(remove_member::<OnGroup>),
        )
        .route(
            "/groups/{id}/deploy_tokens",
            get(list_deploy_tokens::<OnGroup>).post(create_deploy_token::<OnGroup>),
        )
        .route(
            "/groups/{id}/deploy_tokens/{token_id}",
            axum::routing::delete(revoke_deploy_token::<OnGroup>),
        )
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(get_project).put(update_project))
        .route(
            "/projects/{id}/members",
            get(list_members::<OnProject>).post(add_member::<OnProject>),
        )
        .route(
            "/projects/{id}/members/{user_id}",
            put(update_member::<OnProject>).delete(remove_member::<OnProject>),
        )
        .route(
            "/projects/{id}/deploy_tokens",
            get(list_deploy_tokens::<OnProject>).post(create_deploy_token::<OnProject>),
        )
        .route(
            "/projects/{id}/deploy_tokens/{token_id}",
            axum::routing::delete(revoke_deploy_token::<OnProject>),
        )
        .route("/projects/{id}/job_tokens", post(create_job_token))
        .route(
            "/projects/{id}/job_token_scope/allowlist",
            get(job_token_allowlist).post(allow_job_token_project),
        )
        .route(
            "/projects/{id}/job_token_scope/allowlist/{target_project_id}",
            axum::routing::delete(disallow_job_token_project),
        )
        .merge(protection_api::routes())
        .merge(registry_api::routes())
        .route("/", axum::routing::any(error::route_not_found))
        .route("/{*rest}", axum::routing::any(error::route_not_found))
        .method_not_allowed_fallback(error::route_not_found)
        .with_state(state);
    Router::new().nest("/api/v4", v4)
}
