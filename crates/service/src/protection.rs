//! Managing tag protection and immutable rules: who may create or delete which rule. The
//! rules themselves are evaluated in `meta` and applied by the write service; the REST API
//! (`/projects/:id/registry/protection/tag/rules`) and the web UI's settings page both change
//! them through these functions.
//!
//! Maintainers manage protection rules; only owners create and delete immutable rules, which
//! have no levels. Nobody may set or remove a rule above their own level (a maintainer cannot
//! create an `owner` rule), or they could lock themselves out.

use meta::{access_level, Project, RuleLevels, Store, TagProtectionRule, ADMIN_ACCESS_LEVEL};

use meta::events::AuditEntity;
use serde_json::json;

use crate::settings::{record_change, Changed, SettingsError};
use crate::RequestContext;

/// Records a change of a protection rule of `project` in its audit log.
pub async fn record_rule_change(
    store: &Store,
    ctx: &RequestContext,
    project: &Project,
    action: &str,
    target_type: &str,
    (id, pattern): (i64, &str),
) {
    let changed = Changed {
        entity: AuditEntity::project(project.id, &project.full_path),
        action,
        target_type,
        target_id: id.to_string(),
        target_details: pattern.to_string(),
        details: json!({}),
    };
    record_change(store, ctx, changed).await;
}

/// A level of protection: `maintainer`, `owner` or `admin` (GitLab's names).
pub fn parse_rule_level(field: &'static str, text: &str) -> Result<i64, SettingsError> {
    match text {
        "maintainer" => Ok(access_level::MAINTAINER),
        "owner" => Ok(access_level::OWNER),
        "admin" => Ok(ADMIN_ACCESS_LEVEL),
        other => Err(SettingsError::invalid(format!(
            "{field} does not have a valid value: {other:?} is not one of maintainer, owner, admin"
        ))),
    }
}

/// Refuses unless `level` (the caller's rule level: instance admins above owners) reaches
/// `needed`.
pub fn require(level: i64, needed: i64, what: &str) -> Result<(), SettingsError> {
    if level >= needed {
        Ok(())
    } else {
        Err(SettingsError::Forbidden(format!(
            "{what} needs the {} role or higher",
            meta::rule_level_name(needed)
        )))
    }
}

/// A rule may not demand more than its author has, or its author could lock themselves out.
pub fn require_within(level: i64, levels: &RuleLevels) -> Result<(), SettingsError> {
    for needed in [levels.push, levels.delete].into_iter().flatten() {
        if needed > level {
            return Err(SettingsError::Forbidden(format!(
                "you cannot set a minimum access level ({}) above your own",
                meta::rule_level_name(needed)
            )));
        }
    }
    Ok(())
}

/// A duplicate pattern or a full rule list is the user's to fix.
fn refusal(e: meta::MetaError) -> SettingsError {
    match e {
        meta::MetaError::Conflict(message) => SettingsError::invalid(message),
        other => SettingsError::Meta(other),
    }
}

/// A tag rule to create.
#[derive(Clone, Debug)]
pub enum NewTagRule {
    /// Tags matching `pattern` are pushed and deleted only at these levels.
    Protected { pattern: String, levels: RuleLevels },
    /// Tags matching `pattern` never move and are never deleted.
    Immutable { pattern: String },
}

/// Creates a tag rule on `project` for a caller at rule level `level` (maintainers and above;
/// owners for immutable rules), recorded for `ctx`.
pub async fn create_tag_rule(
    store: &Store,
    level: i64,
    project: &Project,
    new: NewTagRule,
    ctx: &RequestContext,
) -> Result<TagProtectionRule, SettingsError> {
    require(level, access_level::MAINTAINER, "managing container protection rules")?;
    let (pattern, levels, immutable) = match new {
        NewTagRule::Immutable { pattern } => {
            require(level, access_level::OWNER, "creating an immutable tag rule")?;
            (pattern, RuleLevels::default(), true)
        }
        NewTagRule::Protected { pattern, levels } => {
            if levels.push.is_none() || levels.delete.is_none() {
                return Err(SettingsError::invalid(
                    "minimum_access_level_for_push and minimum_access_level_for_delete are required (maintainer, owner or admin); for an immutable rule send \"immutable\": true instead",
                ));
            }
            require_within(level, &levels)?;
            (pattern, levels, false)
        }
    };
    meta::compile_tag_pattern(&pattern).map_err(SettingsError::invalid)?;
    let rule = store
        .create_tag_protection_rule(project.id, &pattern, &levels, immutable)
        .await
        .map_err(refusal)?;
    let target = (rule.id, rule.tag_name_pattern.as_str());
    record_rule_change(store, ctx, project, "protection_rule_create", "TagProtectionRule", target)
        .await;
    Ok(rule)
}

/// Deletes `rule` of `project` for a caller at rule level `level`, recorded for `ctx`.
pub async fn delete_tag_rule(
    store: &Store,
    level: i64,
    project: &Project,
    rule: &TagProtectionRule,
    ctx: &RequestContext,
) -> Result<(), SettingsError> {
    require(level, access_level::MAINTAINER, "managing container protection rules")?;
    if rule.immutable {
        require(level, access_level::OWNER, "deleting an immutable tag rule")?;
    }
    require_within(
        level,
        &RuleLevels {
            push: rule.minimum_access_level_for_push,
            delete: rule.minimum_access_level_for_delete,
        },
    )?;
    store.delete_tag_protection_rule(project.id, rule.id).await?;
    let target = (rule.id, rule.tag_name_pattern.as_str());
    record_rule_change(store, ctx, project, "protection_rule_delete", "TagProtectionRule", target)
        .await;
    Ok(())
}
