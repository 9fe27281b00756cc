//! What the settings of a project and a user's tokens share: who may change a project's
//! settings ([`require_maintainer`]), the refusal every settings change answers with
//! ([`SettingsError`]), and the registry access level (`container_registry_access_level`).
//! The REST API and the web UI both call these; each maps [`SettingsError`] to its own
//! answer (a JSON 400/403, or the form again with the sentence).

use meta::events::{AuditEntity, NewAuditEvent};
use meta::{access_level, MetaError, Project, RegistryAccess, Store};
use serde_json::Value;

use crate::RequestContext;

/// Why a settings change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Input the user must fix; `field` names the parameter when one alone is to blame (the
    /// API says `<field> <message>`).
    #[error("{}", match .field { Some(f) => format!("{f} {message}"), None => message.clone() })]
    Invalid { field: Option<&'static str>, message: String },
    /// The caller may see the project but not do this; the sentence names the role needed.
    #[error("{0}")]
    Forbidden(String),
    /// The name is taken; the sentence says what to choose instead.
    #[error("{0}")]
    Conflict(String),
    /// Nothing there, or nothing the caller may see.
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl SettingsError {
    /// A refusal of the request as a whole.
    pub fn invalid(message: impl Into<String>) -> SettingsError {
        SettingsError::Invalid { field: None, message: message.into() }
    }

    /// A refusal of one field.
    pub fn field(field: &'static str, message: impl Into<String>) -> SettingsError {
        SettingsError::Invalid { field: Some(field), message: message.into() }
    }
}

/// THE rule for a project's settings (cleanup policy, registry visibility, protection rules,
/// deploy tokens): the maintainer role or higher. `level` is the caller's effective role
/// (instance admins rank as owners or above); `what` completes "… needs the maintainer role".
pub fn require_maintainer(level: i64, what: &str) -> Result<(), SettingsError> {
    if level >= access_level::MAINTAINER {
        Ok(())
    } else {
        Err(SettingsError::Forbidden(format!("{what} needs the maintainer role or higher")))
    }
}

/// `container_registry_access_level`: `enabled`, `private` or `disabled`.
pub fn parse_registry_access(text: &str) -> Result<RegistryAccess, SettingsError> {
    RegistryAccess::parse(text).ok_or_else(|| {
        SettingsError::field(
            "container_registry_access_level",
            format!("{text:?} is not an access level: use enabled, private or disabled"),
        )
    })
}

/// Sets `project`'s registry access level for a caller at `level`; answers the project as
/// changed.
pub async fn set_registry_access(
    store: &Store,
    level: i64,
    project: &Project,
    access: RegistryAccess,
) -> Result<Project, SettingsError> {
    require_maintainer(level, "changing a project's settings")?;
    store.update_project(project.id, None, Some(access)).await?.ok_or(SettingsError::NotFound)
}

/// What a settings change acted on, for the audit log.
pub struct Changed<'a> {
    pub entity: AuditEntity,
    /// `cleanup_policy_change`, `token_create`, `protection_rule_delete`…
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub target_details: String,
    pub details: Value,
}

/// Records a settings change made for `ctx` in the audit log: the one place every surface's
/// settings changes are written down. A failure to record is logged, not answered.
pub async fn record_change(store: &Store, ctx: &RequestContext, changed: Changed<'_>) {
    let event = NewAuditEvent {
        actor: &ctx.actor,
        origin: &ctx.origin,
        entity: changed.entity,
        action: changed.action,
        target_type: changed.target_type,
        target_id: changed.target_id,
        target_details: changed.target_details,
        success: true,
        details: changed.details,
        at: meta::now_millis(),
    };
    if let Err(e) = store.record_audit(&event).await {
        tracing::warn!(error = %e, action = changed.action, "recording an audit event failed");
    }
}
