//! Authentication and authorization: who a caller is (password, personal access token, deploy
//! token, CI job token, or nobody), what they may do with a repository (the access policy over
//! projects, roles, visibility and registry access level), and the Docker token service that
//! turns both into short-lived signed JWTs which the `/v2/` layer verifies.
//!
//! Secrets are only ever stored hashed and compared in constant time; nothing here logs one.
//! Presented credentials are bounded and parsed before anything looks at them, failed logins
//! are throttled per client address (shared by the instances through Redis when configured),
//! requests are rate limited per credential and client address ([`ratelimit`]), and password
//! hashing runs on a bounded pool of its own,
//! so neither guessing nor flooding can lock users out or slow the registry down.
//! This crate owns no SQL (it calls `meta`) and no blob bytes.

pub mod access;
pub mod credentials;
pub mod jwt;
pub mod policy;
pub mod ratelimit;
pub mod scope;
pub mod secret;
pub mod throttle;
pub mod web;

pub use access::{Action, Gate};
pub use policy::Identity;
pub use web::{ActorSlot, ClientAddr};

/// The username CI job tokens log in with.
pub const CI_USERNAME: &str = "stowage-ci-token";

/// Whether `username` is the one every CI job token shares (`stowage-ci-token`, or GitLab's
/// `gitlab-ci-token`, which CI templates written for GitLab use).
pub fn is_ci_username(username: &str) -> bool {
    username == CI_USERNAME || username == "gitlab-ci-token"
}
