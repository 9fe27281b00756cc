//! The JSON shapes the API answers with: GitLab's field names, ISO 8601 timestamps. The CLI
//! prints the same shapes, so scripts can use either.

use meta::{DeployToken, Group, Member, PersonalAccessToken, Project, RegistryAccess, User};
use serde::Serialize;
use serde_json::Value;

use crate::time::{date, iso8601};

/// The username every CI job token logs in with.
pub const CI_USERNAME: &str = "stowage-ci-token";

#[derive(Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_admin: Option<bool>,
    pub created_at: String,
}

fn state(blocked: bool) -> &'static str {
    if blocked {
        "blocked"
    } else {
        "active"
    }
}

impl UserView {
    /// `private` adds what only the user themself and admins may see.
    pub fn new(user: &User, private: bool) -> UserView {
        UserView {
            id: user.id,
            username: user.username.clone(),
            name: user.name.clone(),
            state: state(user.blocked),
            email: private.then(|| user.email.clone()),
            is_admin: private.then_some(user.is_admin),
            created_at: iso8601(user.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct GroupView {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub full_name: String,
    pub parent_id: Option<i64>,
    pub visibility: &'static str,
    pub created_at: String,
    /// With `statistics=true`: `container_registry_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Value>,
    /// Quota figures of a top-level group (single-group answers only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub storage: Option<GroupStorageView>,
}

/// A top-level group's container registry storage: limit (0 = none), usage, percentage and
/// the notice of the threshold it is at.
#[derive(Serialize)]
pub struct GroupStorageView {
    pub container_registry_storage_limit: i64,
    /// Where the limit comes from: `group` (its own setting) or `instance` (the default).
    pub container_registry_storage_limit_source: &'static str,
    pub container_registry_storage_usage: i64,
    pub container_registry_storage_percentage: Option<f64>,
    pub container_registry_storage_notice: Option<Value>,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> GroupView {
        GroupView {
            id: g.id,
            name: g.name.clone(),
            path: g.path.clone(),
            full_path: g.full_path.clone(),
            full_name: g.full_path.replace('/', " / "),
            parent_id: g.parent_id,
            visibility: g.visibility.as_str(),
            created_at: iso8601(g.created_at),
            statistics: None,
            storage: None,
        }
    }
}

#[derive(Serialize)]
pub struct NamespaceView {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub kind: &'static str,
    pub full_path: String,
    pub parent_id: Option<i64>,
}

#[derive(Serialize)]
pub struct ProjectView {
    pub id: i64,
    pub name: String,
    pub name_with_namespace: String,
    pub path: String,
    pub path_with_namespace: String,
    pub namespace: NamespaceView,
    pub visibility: &'static str,
    pub container_registry_access_level: &'static str,
    pub container_registry_enabled: bool,
    /// `<registry host>/<full path>`: where this project's images are pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_registry_image_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_expiration_policy: Option<crate::cleanup::PolicyView>,
    pub created_at: String,
    /// With `statistics=true`: `container_registry_size` and `container_registry_exclusive_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Value>,
}

impl ProjectView {
    pub fn new(project: &Project, group: &Group) -> ProjectView {
        ProjectView {
            id: project.id,
            name: project.name.clone(),
            name_with_namespace: format!(
                "{} / {}",
                group.full_path.replace('/', " / "),
                project.name
            ),
            path: project.path.clone(),
            path_with_namespace: project.full_path.clone(),
            namespace: NamespaceView {
                id: group.id,
                name: group.name.clone(),
                path: group.path.clone(),
                kind: "group",
                full_path: group.full_path.clone(),
                parent_id: group.parent_id,
            },
            visibility: project.visibility.as_str(),
            container_registry_access_level: project.registry_access.as_str(),
            container_registry_enabled: project.registry_access != RegistryAccess::Disabled,
            container_registry_image_prefix: None,
            container_expiration_policy: None,
            created_at: iso8601(project.created_at),
            statistics: None,
        }
    }
}

#[derive(Serialize)]
pub struct MemberView {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: &'static str,
    pub access_level: i64,
    pub created_at: String,
}

impl MemberView {
    pub fn new(member: &Member, user: &User) -> MemberView {
        MemberView {
            id: user.id,
            username: user.username.clone(),
            name: user.name.clone(),
            state: state(user.blocked),
            access_level: member.access_level,
            created_at: iso8601(member.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct PersonalAccessTokenView {
    pub id: i64,
    pub name: String,
    pub revoked: bool,
    pub created_at: String,
    pub scopes: Vec<String>,
    pub user_id: i64,
    pub last_used_at: Option<String>,
    pub active: bool,
    pub expires_at: Option<String>,
    /// Only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl PersonalAccessTokenView {
    pub fn new(t: &PersonalAccessToken, token: Option<String>) -> PersonalAccessTokenView {
        let expired = t.expires_at.is_some_and(|at| meta::now_millis() >= at);
        PersonalAccessTokenView {
            id: t.id,
            name: t.name.clone(),
            revoked: t.revoked,
            created_at: iso8601(t.created_at),
            scopes: t.scopes.clone(),
            user_id: t.user_id,
            last_used_at: t.last_used_at.map(iso8601),
            active: !t.revoked && !expired,
            expires_at: t.expires_at.map(date),
            token,
        }
    }
}

#[derive(Serialize)]
pub struct DeployTokenView {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
    pub revoked: bool,
    pub expired: bool,
    /// Only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl DeployTokenView {
    pub fn new(t: &DeployToken, token: Option<String>) -> DeployTokenView {
        DeployTokenView {
            id: t.id,
            name: t.name.clone(),
            username: t.username.clone(),
            expires_at: t.expires_at.map(iso8601),
            scopes: t.scopes.clone(),
            revoked: t.revoked,
            expired: t.expires_at.is_some_and(|at| meta::now_millis() >= at),
            token,
        }
    }
}

#[derive(Serialize)]
pub struct JobTokenView {
    pub token: String,
    pub username: &'static str,
    pub project_id: i64,
    pub expires_at: String,
}

#[derive(Serialize)]
pub struct AllowlistEntryView {
    pub source_project_id: i64,
    pub target_project_id: i64,
}

/// Indented JSON of a view, as the CLI prints it.
pub fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"message\": \"cannot render: {e}\"}}"))
}
