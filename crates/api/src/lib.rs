//! The GitLab-compatible REST API under `/api/v4`: users, groups, projects, members, personal
//! access tokens, deploy tokens, CI job tokens and the job-token allowlist.
//!
//! Requests authenticate with a personal access token that has the `api` scope, in the
//! `PRIVATE-TOKEN` header or as `Authorization: Bearer`. Errors are `{"message": ...}`.
//! Handlers call `meta` and `auth`; they own no SQL.

use std::time::Duration;

use axum::Router;

/// What the API handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: meta::Store,
    /// Lifetime of CI job tokens minted through the API.
    pub job_token_lifetime: Duration,
}

/// Every `/api/v4` route.
pub fn router(state: ApiState) -> Router {
    Router::new().with_state(state)
}
