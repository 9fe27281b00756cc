//! Container registry protection rules, as GitLab serves them:
//!
//! | endpoint | method |
//! |---|---|
//! | `/projects/:id/registry/protection/repository/rules` | GET, POST |
//! | `/projects/:id/registry/protection/repository/rules/:rule_id` | PATCH, DELETE |
//! | `/projects/:id/registry/protection/tag/rules` | GET, POST |
//! | `/projects/:id/registry/protection/tag/rules/:rule_id` | PATCH, DELETE |
//!
//! Maintainers manage protection rules; only owners create and delete immutable tag rules
//! (`{"tag_name_pattern": …, "immutable": true}`), which cannot be edited. Nobody may set a rule
//! above their own level (a maintainer cannot create an `owner` rule). The rules themselves are
//! evaluated in `meta`; the write service (crate `service`) applies them to every change,
//! inside its transaction, with the caller's [`rule_level`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Json;
use meta::{
    access_level, RepositoryProtectionRule, RuleLevels, Store, TagProtectionRule,
    ADMIN_ACCESS_LEVEL,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::events_api::{Audit, Target};
use crate::input::{flag, Params, Path, Ref};
use crate::routing::Routes;
use crate::service as svc;
use crate::ApiState;
use ::service::protection::NewTagRule;
use meta::events::AuditEntity;

/// The routes of this module, merged into the `/api/v4` router.
pub fn routes() -> Routes {
    Routes::new()
        .get("/projects/{id}/registry/protection/repository/rules", list_repository_rules)
        .post("/projects/{id}/registry/protection/repository/rules", create_repository_rule)
        .patch(
            "/projects/{id}/registry/protection/repository/rules/{rule_id}",
            update_repository_rule,
        )
        .delete(
            "/projects/{id}/registry/protection/repository/rules/{rule_id}",
            delete_repository_rule,
        )
        .get("/projects/{id}/registry/protection/tag/rules", list_tag_rules)
        .post("/projects/{id}/registry/protection/tag/rules", create_tag_rule)
        .patch("/projects/{id}/registry/protection/tag/rules/{rule_id}", update_tag_rule)
        .delete("/projects/{id}/registry/protection/tag/rules/{rule_id}", delete_tag_rule)
        .merge(crate::cleanup::routes())
}

type Answer = Result<Response, ApiError>;

const RULE_NOT_FOUND: &str = "404 Protection Rule Not Found";

// ---- who may do what ------------------------------------------------------------------------

/// The caller's level on `project` as protection rules see it: instance admins (and the
/// operator) rank above owners, so `admin` rules bind owners too.
pub async fn rule_level(
    store: &Store,
    caller: &Caller,
    project: &meta::Project,
) -> Result<i64, ApiError> {
    Ok(match caller {
        _ if caller.is_admin() => ADMIN_ACCESS_LEVEL,
        Caller::User(user) => store.effective_access_level(user.id, project).await?,
        _ => access_level::NONE,
    })
}

fn require(level: i64, needed: i64, what: &str) -> Result<(), ApiError> {
    Ok(::service::protection::require(level, needed, what)?)
}

fn require_within(level: i64, levels: &RuleLevels) -> Result<(), ApiError> {
    Ok(::service::protection::require_within(level, levels)?)
}

/// Resolves `:id` to a project the caller may manage rules of (maintainer or above); returns
/// it with the caller's rule level.
async fn managed_project(
    store: &Store,
    caller: &Caller,
    id: &str,
) -> Result<(meta::Project, i64), ApiError> {
    caller.require_signed_in()?;
    let project = svc::project(store, caller, &Ref::parse("id", id)?).await?;
    let level = rule_level(store, caller, &project).await?;
    require(level, access_level::MAINTAINER, "managing container protection rules")?;
    Ok((project, level))
}

fn rule_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound(RULE_NOT_FOUND))
}

/// A duplicate pattern or a full rule list is the user's to fix: 400 with the sentence.
fn meta_refusal(e: meta::MetaError) -> ApiError {
    match e {
        meta::MetaError::Conflict(message) => ApiError::BadRequest(message),
        other => ApiError::Internal(other),
    }
}

// ---- parameters -----------------------------------------------------------------------------

fn parse_rule_level(field: &'static str, text: &str) -> Result<i64, ApiError> {
    Ok(::service::protection::parse_rule_level(field, text)?)
}

fn level_name(level: Option<i64>) -> Option<&'static str> {
    level.map(meta::rule_level_name)
}

/// Distinguishes a field that is absent (`None`) from one that is `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s))),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not a string"))),
    }
}

#[derive(Deserialize)]
pub struct RuleParams {
    repository_path_pattern: Option<String>,
    tag_name_pattern: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    minimum_access_level_for_push: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    minimum_access_level_for_delete: Option<Option<String>>,
    #[serde(default, deserialize_with = "flag")]
    immutable: Option<bool>,
}

impl RuleParams {
    /// The levels given, applied over `current` (what an update starts from).
    fn levels(&self, current: RuleLevels) -> Result<RuleLevels, ApiError> {
        let parse = |field, given: &Option<Option<String>>, current| match given {
            None => Ok(current),
            Some(None) => Ok(None),
            Some(Some(text)) => parse_rule_level(field, text).map(Some),
        };
        Ok(RuleLevels {
            push: parse(
                "minimum_access_level_for_push",
                &self.minimum_access_level_for_push,
                current.push,
            )?,
            delete: parse(
                "minimum_access_level_for_delete",
                &self.minimum_access_level_for_delete,
                current.delete,
            )?,
        })
    }

    fn gives_levels(&self) -> bool {
        matches!(self.minimum_access_level_for_push, Some(Some(_)))
            || matches!(self.minimum_access_level_for_delete, Some(Some(_)))
    }
}

// ---- views ----------------------------------------------------------------------------------

#[derive(Serialize)]
pub struct RepositoryRuleView {
    pub id: i64,
    pub project_id: i64,
    pub repository_path_pattern: String,
    pub minimum_access_level_for_push: Option<&'static str>,
    pub minimum_access_level_for_delete: Option<&'static str>,
}

impl From<&RepositoryProtectionRule> for RepositoryRuleView {
    fn from(r: &RepositoryProtectionRule) -> Self {
        RepositoryRuleView {
            id: r.id,
            project_id: r.project_id,
            repository_path_pattern: r.repository_path_pattern.clone(),
            minimum_access_level_for_push: level_name(r.minimum_access_level_for_push),
            minimum_access_level_for_delete: level_name(r.minimum_access_level_for_delete),
        }
    }
}

#[derive(Serialize)]
pub struct TagRuleView {
    pub id: i64,
    pub project_id: i64,
    pub tag_name_pattern: String,
    pub minimum_access_level_for_push: Option<&'static str>,
    pub minimum_access_level_for_delete: Option<&'static str>,
    pub immutable: bool,
}

impl From<&TagProtectionRule> for TagRuleView {
    fn from(r: &TagProtectionRule) -> Self {
        TagRuleView {
            id: r.id,
            project_id: r.project_id,
            tag_name_pattern: r.tag_name_pattern.clone(),
            minimum_access_level_for_push: level_name(r.minimum_access_level_for_push),
            minimum_access_level_for_delete: level_name(r.minimum_access_level_for_delete),
            immutable: r.immutable,
        }
    }
}

// ---- repository rules -----------------------------------------------------------------------

fn check_repository_rule(
    project: &meta::Project,
    pattern: &str,
    levels: &RuleLevels,
) -> Result<(), ApiError> {
    if pattern.is_empty() {
        return Err(ApiError::bad_request("repository_path_pattern is required"));
    }
    if pattern.len() > 255 {
        return Err(ApiError::bad_request(
            "repository_path_pattern is too long (at most 255 characters)",
        ));
    }
    if !pattern.starts_with(&project.full_path) {
        return Err(ApiError::bad_request(format!(
            "repository_path_pattern must start with the project's full path {}",
            project.full_path
        )));
    }
    if levels.push.is_none() && levels.delete.is_none() {
        return Err(ApiError::bad_request(
            "give minimum_access_level_for_push or minimum_access_level_for_delete (or both)",
        ));
    }
    Ok(())
}

fn rule_target<'a>(kind: &'a str, id: i64, pattern: &str) -> Target<'a> {
    Target { kind, id: id.to_string(), details: pattern.to_string() }
}

async fn audit_rule(
    s: &ApiState,
    audit: &Audit,
    project: &meta::Project,
    action: &str,
    target: Target<'_>,
) {
    let entity = AuditEntity::project(project.id, &project.full_path);
    audit.record(&s.store, entity, action, target, serde_json::json!({})).await;
}

async fn list_repository_rules(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let (project, _) = managed_project(&s.store, &caller, &id).await?;
    let rules = s.store.repository_protection_rules(project.id).await?;
    Ok(Json(rules.iter().map(RepositoryRuleView::from).collect::<Vec<_>>()).into_response())
}

async fn create_repository_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
    Params(p): Params<RuleParams>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let pattern = p.repository_path_pattern.clone().unwrap_or_default();
    let levels = p.levels(RuleLevels::default())?;
    check_repository_rule(&project, &pattern, &levels)?;
    require_within(level, &levels)?;
    let rule = s
        .store
        .create_repository_protection_rule(project.id, &pattern, &levels)
        .await
        .map_err(meta_refusal)?;
    let target = rule_target("RepositoryProtectionRule", rule.id, &rule.repository_path_pattern);
    audit_rule(&s, &audit, &project, "protection_rule_create", target).await;
    Ok((StatusCode::CREATED, Json(RepositoryRuleView::from(&rule))).into_response())
}

async fn update_repository_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, rule)): Path<(String, String)>,
    Params(p): Params<RuleParams>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let mut rule = s
        .store
        .repository_protection_rule(project.id, rule_id(&rule)?)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    let current = RuleLevels {
        push: rule.minimum_access_level_for_push,
        delete: rule.minimum_access_level_for_delete,
    };
    require_within(level, &current)?;
    let levels = p.levels(current)?;
    if let Some(pattern) = p.repository_path_pattern {
        rule.repository_path_pattern = pattern;
    }
    check_repository_rule(&project, &rule.repository_path_pattern, &levels)?;
    require_within(level, &levels)?;
    rule.minimum_access_level_for_push = levels.push;
    rule.minimum_access_level_for_delete = levels.delete;
    let rule = s.store.update_repository_protection_rule(&rule).await.map_err(meta_refusal)?;
    let target = rule_target("RepositoryProtectionRule", rule.id, &rule.repository_path_pattern);
    audit_rule(&s, &audit, &project, "protection_rule_update", target).await;
    Ok(Json(RepositoryRuleView::from(&rule)).into_response())
}

async fn delete_repository_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, rule)): Path<(String, String)>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let rule = s
        .store
        .repository_protection_rule(project.id, rule_id(&rule)?)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    require_within(
        level,
        &RuleLevels {
            push: rule.minimum_access_level_for_push,
            delete: rule.minimum_access_level_for_delete,
        },
    )?;
    s.store.delete_repository_protection_rule(project.id, rule.id).await?;
    let target = rule_target("RepositoryProtectionRule", rule.id, &rule.repository_path_pattern);
    audit_rule(&s, &audit, &project, "protection_rule_delete", target).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- tag rules ------------------------------------------------------------------------------

fn check_tag_pattern(pattern: &str) -> Result<(), ApiError> {
    meta::compile_tag_pattern(pattern).map(|_| ()).map_err(ApiError::BadRequest)
}

async fn list_tag_rules(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let (project, _) = managed_project(&s.store, &caller, &id).await?;
    let rules = s.store.tag_protection_rules(project.id).await?;
    Ok(Json(rules.iter().map(TagRuleView::from).collect::<Vec<_>>()).into_response())
}

async fn create_tag_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
    Params(p): Params<RuleParams>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let pattern = p.tag_name_pattern.clone().unwrap_or_default();
    let new = if p.immutable.unwrap_or(false) {
        require(level, access_level::OWNER, "creating an immutable tag rule")?;
        if p.gives_levels() {
            return Err(ApiError::bad_request(
                "an immutable tag rule has no access levels: nobody may move or delete its tags",
            ));
        }
        NewTagRule::Immutable { pattern }
    } else {
        NewTagRule::Protected { pattern, levels: p.levels(RuleLevels::default())? }
    };
    let rule =
        ::service::protection::create_tag_rule(&s.store, level, &project, new, &audit.0).await?;
    Ok((StatusCode::CREATED, Json(TagRuleView::from(&rule))).into_response())
}

async fn update_tag_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, rule)): Path<(String, String)>,
    Params(p): Params<RuleParams>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let mut rule = s
        .store
        .tag_protection_rule(project.id, rule_id(&rule)?)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    if rule.immutable || p.immutable == Some(true) {
        return Err(ApiError::bad_request(
            "immutable tag rules cannot be edited (and protection rules cannot become immutable): delete the rule and create a new one",
        ));
    }
    let current = RuleLevels {
        push: rule.minimum_access_level_for_push,
        delete: rule.minimum_access_level_for_delete,
    };
    require_within(level, &current)?;
    let levels = p.levels(current)?;
    if levels.push.is_none() || levels.delete.is_none() {
        return Err(ApiError::bad_request(
            "minimum_access_level_for_push and minimum_access_level_for_delete cannot be null",
        ));
    }
    require_within(level, &levels)?;
    if let Some(pattern) = p.tag_name_pattern {
        check_tag_pattern(&pattern)?;
        rule.tag_name_pattern = pattern;
    }
    rule.minimum_access_level_for_push = levels.push;
    rule.minimum_access_level_for_delete = levels.delete;
    let rule = s.store.update_tag_protection_rule(&rule).await.map_err(meta_refusal)?;
    let target = rule_target("TagProtectionRule", rule.id, &rule.tag_name_pattern);
    audit_rule(&s, &audit, &project, "protection_rule_update", target).await;
    Ok(Json(TagRuleView::from(&rule)).into_response())
}

async fn delete_tag_rule(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, rule)): Path<(String, String)>,
) -> Answer {
    let (project, level) = managed_project(&s.store, &caller, &id).await?;
    let rule = s
        .store
        .tag_protection_rule(project.id, rule_id(&rule)?)
        .await?
        .ok_or(ApiError::NotFound(RULE_NOT_FOUND))?;
    ::service::protection::delete_tag_rule(&s.store, level, &project, &rule, &audit.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
