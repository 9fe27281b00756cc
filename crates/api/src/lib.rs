//! The GitLab-compatible REST API under `/api/v4`: users, groups, projects, members, personal
//! access tokens, deploy tokens, CI job tokens and the job-token allowlist.
//!
//! Requests authenticate with a personal access token that has the `api` scope, in the
//! `PRIVATE-TOKEN` header or as `Authorization: Bearer`. Errors are `{"message": ...}`.
//! The rules (who may see and do what) live in [`service`], which the `stowage admin` CLI
//! calls too; handlers only translate HTTP. This crate owns no SQL: it calls `meta` and `auth`.

use std::time::Duration;

use axum::Router;

pub mod background;
pub mod caller;
pub mod cleanup;
pub mod dependency_proxy_api;
pub mod error;
pub mod events_api;
pub mod export;
pub mod gc_api;
mod handlers;
pub mod input;
pub mod mirrors_api;
pub mod names;
pub mod protection_api;
pub mod registry_api;
pub mod routing;
pub mod service;
pub mod storage;
pub mod time;
pub mod views;

pub use caller::Caller;
pub use error::ApiError;
pub use routing::Routes;

/// What the API handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: meta::Store,
    /// Every change of registry state goes through it.
    pub writes: ::service::WriteService,
    /// Lifetime of CI job tokens minted through the API.
    pub job_token_lifetime: Duration,
    /// Where background work (repository and bulk tag deletes) is enqueued.
    pub jobs: jobs::Queue,
    /// `webhooks.allow_local_requests`: hooks may target the local network.
    pub hooks_allow_local: bool,
    /// Seals the passwords of the upstreams groups set for their dependency proxy.
    pub dependency_proxy_key: std::sync::Arc<::service::dependency_proxy::CredentialKey>,
    /// `dependency_proxy.allow_local_requests`: group upstreams may be on the local network.
    pub dependency_proxy_allow_local: bool,
}

/// The `/api/v4` router: [`routes`] and GitLab's 404 for everything else.
pub fn router(state: ApiState) -> Router {
    let v4 = routes()
        .into_router()
        .route("/", axum::routing::any(error::route_not_found))
        .route("/{*rest}", axum::routing::any(error::route_not_found))
        .method_not_allowed_fallback(error::route_not_found)
        .with_state(state);
    Router::new().nest("/api/v4", v4)
}

/// Every `/api/v4` route, read top to bottom like GitLab's endpoint table. Registered through
/// [`Routes`], which records what is served for the OpenAPI document's completeness test.
pub fn routes() -> Routes {
    use handlers::*;
    Routes::new()
        .get("/version", version)
        .get("/user", current_user)
        .get("/users", list_users)
        .post("/users", create_user)
        .get("/users/{id}", get_user)
        .put("/users/{id}", update_user)
        .post("/users/{id}/block", block_user)
        .post("/users/{id}/unblock", unblock_user)
        .post("/users/{id}/personal_access_tokens", create_personal_access_token)
        .get("/personal_access_tokens", list_personal_access_tokens)
        .get("/personal_access_tokens/{id}", get_personal_access_token)
        .delete("/personal_access_tokens/{id}", revoke_personal_access_token)
        .post("/personal_access_tokens/{id}/rotate", rotate_personal_access_token)
        .get("/deploy_tokens", list_all_deploy_tokens)
        .get("/groups", list_groups)
        .post("/groups", create_group)
        .get("/groups/{id}", get_group)
        .put("/groups/{id}", update_group)
        .get("/groups/{id}/members", list_members::<OnGroup>)
        .post("/groups/{id}/members", add_member::<OnGroup>)
        .get("/groups/{id}/members/all", list_all_members::<OnGroup>)
        .get("/groups/{id}/members/all/{user_id}", get_any_member::<OnGroup>)
        .put("/groups/{id}/members/{user_id}", update_member::<OnGroup>)
        .delete("/groups/{id}/members/{user_id}", remove_member::<OnGroup>)
        .get("/groups/{id}/deploy_tokens", list_deploy_tokens::<OnGroup>)
        .post("/groups/{id}/deploy_tokens", create_deploy_token::<OnGroup>)
        .delete("/groups/{id}/deploy_tokens/{token_id}", revoke_deploy_token::<OnGroup>)
        .get("/projects", list_projects)
        .post("/projects", create_project)
        .get("/projects/{id}", get_project)
        .put("/projects/{id}", update_project)
        .get("/projects/{id}/members", list_members::<OnProject>)
        .post("/projects/{id}/members", add_member::<OnProject>)
        .get("/projects/{id}/members/all", list_all_members::<OnProject>)
        .get("/projects/{id}/members/all/{user_id}", get_any_member::<OnProject>)
        .put("/projects/{id}/members/{user_id}", update_member::<OnProject>)
        .delete("/projects/{id}/members/{user_id}", remove_member::<OnProject>)
        .get("/projects/{id}/deploy_tokens", list_deploy_tokens::<OnProject>)
        .post("/projects/{id}/deploy_tokens", create_deploy_token::<OnProject>)
        .delete("/projects/{id}/deploy_tokens/{token_id}", revoke_deploy_token::<OnProject>)
        .post("/projects/{id}/job_tokens", create_job_token)
        .get("/projects/{id}/job_token_scope", job_token_scope)
        .get("/projects/{id}/job_token_scope/allowlist", job_token_allowlist)
        .post("/projects/{id}/job_token_scope/allowlist", allow_job_token_project)
        .delete(
            "/projects/{id}/job_token_scope/allowlist/{target_project_id}",
            disallow_job_token_project,
        )
        .merge(protection_api::routes())
        .merge(registry_api::routes())
        .merge(background::routes())
        .merge(gc_api::routes())
        .merge(events_api::routes())
        .merge(dependency_proxy_api::routes())
        .merge(mirrors_api::routes())
}
