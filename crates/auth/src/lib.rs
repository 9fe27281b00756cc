//! Authentication and authorization: who a caller is (password, personal access token, deploy
//! token, CI job token, or nobody), what they may do with a repository (the access policy over
//! projects, roles, visibility and registry access level), and the Docker token service that
//! turns both into short-lived signed JWTs which the `/v2/` layer verifies.
//!
//! Secrets are only ever stored hashed and compared in constant time; nothing here logs one.
//! This crate owns no SQL (it calls `meta`) and no blob bytes.

pub mod access;
pub mod jwt;
pub mod policy;
pub mod scope;
pub mod secret;
pub mod web;

pub use access::{Action, Gate};
pub use policy::Identity;

/// The username CI job tokens log in with.
pub const CI_USERNAME: &str = "stowage-ci-token";
