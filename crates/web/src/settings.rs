//! `/<project>/-/settings/packages_and_registries`: a project's cleanup policy (with the
//! preview "this policy would delete these N tags now"), its registry visibility
//! (`container_registry_access_level`), its tag protection and immutable rules, and a
//! read-only list of its deploy tokens.
//!
//! Maintainers and owners only, as in GitLab: a viewer who may not see the project gets the
//! page of a missing one (404), one who may see it but not manage it a 403 page. Every change
//! goes through the services the REST API uses (`service::cleanup`, `service::settings`,
//! `service::protection`), so the page refuses and accepts exactly what `PUT /projects/:id`
//! and the protection rule endpoints do; a refused form comes back with the sentence and the
//! values as typed.

use askama::Template;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use meta::{CleanupPolicy, Project, RegistryAccess, RuleLevels, SourceType};
use service::cleanup::{PolicyChanges, CADENCES, KEEP_N, OLDER_THAN};
use service::protection::NewTagRule;
use service::settings::SettingsError;

use crate::format::relative_time;
use crate::pages::{html, redirect, visible_project, Fields, Layout};
use crate::session::{Viewer, CSRF_FIELD};
use crate::{PageError, WebState};

type Page = Result<Response, PageError>;

/// The most tags the preview names (the count is always exact).
const PREVIEW_LIMIT: usize = 500;

/// The path below a project this page lives at.
pub const SETTINGS_SUFFIX: &str = "/-/settings/packages_and_registries";

/// A refusal of the services, as a page shows it.
fn page_error(e: SettingsError) -> PageError {
    match e {
        SettingsError::Invalid { .. } | SettingsError::Conflict(_) => {
            PageError::BadRequest(e.to_string())
        }
        SettingsError::Forbidden(why) => PageError::Forbidden(why),
        SettingsError::NotFound => PageError::NotFound,
        SettingsError::Meta(e) => PageError::Database(e),
    }
}

/// Who makes a change, for the audit log (and the access log's actor).
pub(crate) fn request_context(viewer: &Viewer, parts: &Parts) -> service::RequestContext {
    let actor = viewer.identity().audit_actor();
    auth::web::note_actor(&parts.extensions, &actor);
    let origin = auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions);
    service::RequestContext { actor, origin }
}

/// The project at `path` and the viewer's role on it, if they may manage its settings.
async fn managed_project(
    state: &WebState,
    viewer: &Viewer,
    path: &str,
) -> Result<(Project, i64), PageError> {
    let project = visible_project(state, viewer, path).await?;
    let level = auth::policy::role_on_project(state.store(), &viewer.identity(), &project).await?;
    service::settings::require_maintainer(level, "changing the settings of a project")
        .map_err(page_error)?;
    Ok((project, level))
}

// ---- the page -------------------------------------------------------------------------------

/// The policy form's values: the saved policy, or what the viewer typed into a refused form.
struct PolicyForm {
    enabled: bool,
    cadence: String,
    keep_n: String,
    older_than: String,
    name_regex: String,
    name_regex_keep: String,
}

impl From<&CleanupPolicy> for PolicyForm {
    fn from(p: &CleanupPolicy) -> PolicyForm {
        PolicyForm {
            enabled: p.enabled,
            cadence: p.cadence.clone(),
            keep_n: p.keep_n.map(|n| n.to_string()).unwrap_or_default(),
            older_than: p.older_than.clone().unwrap_or_default(),
            name_regex: p.name_regex.clone().unwrap_or_default(),
            name_regex_keep: p.name_regex_keep.clone().unwrap_or_default(),
        }
    }
}

struct TagRuleRow {
    id: i64,
    pattern: String,
    immutable: bool,
    push: &'static str,
    delete: &'static str,
}

struct DeployTokenRow {
    id: i64,
    active: bool,
    name: String,
    username: String,
    scopes: String,
    expires: String,
    state: &'static str,
}

struct PreviewRow {
    repository: String,
    name: String,
}

struct Preview {
    count: usize,
    tags: Vec<PreviewRow>,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    project: String,
    action: String,
    notice: Option<String>,
    error: Option<String>,
    /// Which form the error belongs to: `policy`, `access` or `tag_rule`.
    error_form: String,
    policy: PolicyForm,
    next_run: Option<String>,
    last_run: Option<String>,
    cadences: Vec<&'static str>,
    keep_ns: Vec<String>,
    older_thans: Vec<&'static str>,
    access: &'static str,
    preview: Option<Preview>,
    tag_rules: Vec<TagRuleRow>,
    is_owner: bool,
    deploy_tokens: Vec<DeployTokenRow>,
    created_deploy_token: Option<(String, String, String)>,
    deploy_scopes: Vec<&'static str>,
}

/// What to show besides the saved settings.
#[derive(Default)]
struct Shown {
    notice: Option<String>,
    /// (form, sentence) of a refused form.
    error: Option<(&'static str, String)>,
    /// The values typed into a refused policy form.
    typed: Option<PolicyForm>,
    preview: bool,
    /// (name, username, secret) of a deploy token just created.
    created_deploy_token: Option<(String, String, String)>,
}

fn level_label(level: Option<i64>) -> &'static str {
    level.map(meta::rule_level_name).unwrap_or("—")
}

async fn render(
    state: &WebState,
    viewer: &Viewer,
    project: &Project,
    level: i64,
    shown: Shown,
    status: StatusCode,
) -> Page {
    let store = state.store();
    let policy = service::cleanup::policy_of(store, project.id).await.map_err(page_error)?;
    let now = meta::now_millis();
    let preview = if shown.preview {
        let doomed = service::cleanup::dry_run(store, project, now).await.map_err(page_error)?;
        Some(Preview {
            count: doomed.len(),
            tags: doomed
                .into_iter()
                .take(PREVIEW_LIMIT)
                .map(|t| PreviewRow { repository: t.repository, name: t.name })
                .collect(),
            enabled: policy.enabled,
        })
    } else {
        None
    };
    let tag_rules = store
        .tag_protection_rules(project.id)
        .await?
        .into_iter()
        .map(|r| TagRuleRow {
            id: r.id,
            pattern: r.tag_name_pattern,
            immutable: r.immutable,
            push: level_label(r.minimum_access_level_for_push),
            delete: level_label(r.minimum_access_level_for_delete),
        })
        .collect();
    let deploy_tokens = store
        .list_deploy_tokens(SourceType::Project, project.id)
        .await?
        .into_iter()
        .map(|t| DeployTokenRow {
            id: t.id,
            active: !t.revoked && t.expires_at.is_none_or(|at| at > now),
            state: if t.revoked {
                "revoked"
            } else if t.expires_at.is_some_and(|at| at <= now) {
                "expired"
            } else {
                "active"
            },
            name: t.name,
            username: t.username,
            scopes: t.scopes.join(", "),
            expires: t.expires_at.map(|at| meta::rfc3339(at)[..10].to_string()).unwrap_or_default(),
        })
        .collect();
    let (error_form, error) = match shown.error {
        Some((form, message)) => (form.to_string(), Some(message)),
        None => (String::new(), None),
    };
    let page = SettingsPage {
        layout: Layout::new(
            format!("{} · Packages and registries settings", project.full_path),
            viewer,
        ),
        project: project.full_path.clone(),
        action: format!("/{}{SETTINGS_SUFFIX}", project.full_path),
        notice: shown.notice,
        error,
        error_form,
        next_run: policy
            .next_run_at
            .filter(|_| policy.enabled)
            .map(|at| format!("{} ({})", relative_time(at, now), meta::rfc3339(at))),
        last_run: policy.last_run_at.map(|at| {
            format!(
                "{}: {} tags deleted ({})",
                relative_time(at, now),
                policy.last_run_removed.unwrap_or(0),
                policy.last_run_status.as_deref().unwrap_or("finished")
            )
        }),
        policy: shown.typed.unwrap_or_else(|| PolicyForm::from(&policy)),
        cadences: CADENCES.iter().map(|(name, _)| *name).collect(),
        keep_ns: KEEP_N.iter().map(|n| n.to_string()).collect(),
        older_thans: OLDER_THAN.to_vec(),
        access: project.registry_access.as_str(),
        preview,
        tag_rules,
        is_owner: level >= meta::access_level::OWNER,
        deploy_tokens,
        created_deploy_token: shown.created_deploy_token,
        deploy_scopes: service::tokens::DEPLOY_SCOPES.to_vec(),
    };
    Ok(html(status, page.render()))
}

/// `GET` (with `?preview` for the cleanup preview) and `POST` (a form, by its `form` field)
/// of the settings page of the project at `path`.
pub async fn page(
    state: &WebState,
    viewer: &Viewer,
    parts: &Parts,
    body: Body,
    path: &str,
    q: &Fields,
) -> Page {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        let (project, level) = managed_project(state, viewer, path).await?;
        let shown = Shown {
            notice: q.get("saved").and_then(saved_notice).map(str::to_string),
            preview: q.get("preview").is_some(),
            ..Default::default()
        };
        return render(state, viewer, &project, level, shown, StatusCode::OK).await;
    }
    if parts.method != Method::POST {
        return Err(PageError::NotFound);
    }
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
    let form = Fields::parse(&body);
    viewer.check_csrf(form.get(CSRF_FIELD))?;
    let (project, level) = managed_project(state, viewer, path).await?;
    let base = format!("/{}{SETTINGS_SUFFIX}", project.full_path);
    let ctx = request_context(viewer, parts);
    let change = Change { state, level, project: &project, form: &form, ctx: &ctx };
    let outcome = match form.get("form").unwrap_or("") {
        "policy" => save_policy(&change).await.map(|()| "policy"),
        "access" => save_access(&change).await.map(|()| "access"),
        "add_tag_rule" => add_tag_rule(&change).await.map(|()| "tag_rule"),
        "delete_tag_rule" => delete_tag_rule(&change).await.map(|()| "tag_rule_deleted"),
        "create_deploy_token" => match create_deploy_token(&change).await {
            // The secret is shown on the page that answers the form, and never again.
            Ok(created) => {
                let shown = Shown { created_deploy_token: Some(created), ..Default::default() };
                return render(state, viewer, &project, level, shown, StatusCode::CREATED).await;
            }
            Err(e) => Err(e),
        },
        "revoke_deploy_token" => {
            revoke_deploy_token(&change).await.map(|()| "deploy_token_revoked")
        }
        other => {
            return Err(PageError::BadRequest(format!(
                "{} is not a settings form: reload the page and use its buttons",
                oci::preview(other)
            )))
        }
    };
    match outcome {
        // Post/redirect/get: reloading the page does not send the form again. A saved policy
        // is shown with its preview.
        Ok("policy") => Ok(redirect(&format!("{base}?saved=policy&preview=1#cleanup"))),
        Ok(kind) => Ok(redirect(&format!("{base}?saved={kind}"))),
        Err(SettingsError::Invalid { field, message }) => {
            let sentence = SettingsError::Invalid { field, message }.to_string();
            let which = match form.get("form") {
                Some("policy") => "policy",
                Some("access") => "access",
                Some("create_deploy_token") => "deploy_token",
                _ => "tag_rule",
            };
            let typed = (which == "policy").then(|| typed_policy(&form));
            let shown = Shown { error: Some((which, sentence)), typed, ..Default::default() };
            render(state, viewer, &project, level, shown, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(page_error(e)),
    }
}

fn saved_notice(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "policy" => "Cleanup policy saved.",
        "access" => "Container registry visibility saved.",
        "tag_rule" => "Tag rule added.",
        "tag_rule_deleted" => "Tag rule deleted.",
        "deploy_token_revoked" => "Deploy token revoked: it no longer works.",
        _ => return None,
    })
}

/// One settings form, checked and about to be applied.
struct Change<'a> {
    state: &'a WebState,
    /// The viewer's role on the project (maintainer or above: checked).
    level: i64,
    project: &'a Project,
    form: &'a Fields,
    ctx: &'a service::RequestContext,
}

/// The policy form as typed (for showing a refused form again).
fn typed_policy(form: &Fields) -> PolicyForm {
    let text = |name: &str| form.get(name).unwrap_or("").to_string();
    PolicyForm {
        enabled: form.get("enabled").is_some_and(|v| v == "true"),
        cadence: text("cadence"),
        keep_n: text("keep_n"),
        older_than: text("older_than"),
        name_regex: text("name_regex"),
        name_regex_keep: text("name_regex_keep"),
    }
}

/// The policy form: every field is sent (a checkbox that is not checked means disabled), and
/// an empty regex clears it, as GitLab's form does.
async fn save_policy(c: &Change<'_>) -> Result<(), SettingsError> {
    let (state, level, project, form) = (c.state, c.level, c.project, c.form);
    // "no minimum" and "any age" clear the setting.
    let keep_n = match form.get("keep_n").unwrap_or("") {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| {
            SettingsError::invalid(format!(
                "container_expiration_policy_attributes keep_n must be one of {}",
                KEEP_N.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let changes = PolicyChanges {
        enabled: Some(form.get("enabled").is_some_and(|v| v == "true")),
        cadence: form.get("cadence").map(str::to_string),
        keep_n: Some(keep_n),
        older_than: Some(form.get("older_than").filter(|t| !t.is_empty()).map(str::to_string)),
        name_regex: Some(form.get("name_regex").unwrap_or("").to_string()),
        name_regex_keep: Some(form.get("name_regex_keep").unwrap_or("").to_string()),
    };
    let now = meta::now_millis();
    service::cleanup::update_policy(state.store(), level, project, changes, now, c.ctx).await?;
    Ok(())
}

async fn save_access(c: &Change<'_>) -> Result<(), SettingsError> {
    let (state, level, project, form) = (c.state, c.level, c.project, c.form);
    let access: RegistryAccess = service::settings::parse_registry_access(
        form.get("container_registry_access_level").unwrap_or(""),
    )?;
    service::settings::set_registry_access(state.store(), level, project, access).await?;
    Ok(())
}

async fn add_tag_rule(c: &Change<'_>) -> Result<(), SettingsError> {
    let (state, level, project, form) = (c.state, c.level, c.project, c.form);
    let pattern = form.get("tag_name_pattern").unwrap_or("").to_string();
    let new = if form.get("immutable") == Some("true") {
        NewTagRule::Immutable { pattern }
    } else {
        let level_of = |field: &'static str| {
            service::protection::parse_rule_level(field, form.get(field).unwrap_or("")).map(Some)
        };
        let levels = RuleLevels {
            push: level_of("minimum_access_level_for_push")?,
            delete: level_of("minimum_access_level_for_delete")?,
        };
        NewTagRule::Protected { pattern, levels }
    };
    service::protection::create_tag_rule(state.store(), level, project, new, c.ctx).await?;
    Ok(())
}

async fn delete_tag_rule(c: &Change<'_>) -> Result<(), SettingsError> {
    let (state, level, project, form) = (c.state, c.level, c.project, c.form);
    let id =
        form.get("rule_id").and_then(|id| id.parse::<i64>().ok()).ok_or(SettingsError::NotFound)?;
    let rule =
        state.store().tag_protection_rule(project.id, id).await?.ok_or(SettingsError::NotFound)?;
    service::protection::delete_tag_rule(state.store(), level, project, &rule, c.ctx).await
}

fn token_owner(project: &Project) -> service::tokens::TokenOwner {
    service::tokens::TokenOwner {
        source_type: SourceType::Project,
        id: project.id,
        full_path: project.full_path.clone(),
    }
}

/// A project deploy token (`name`, `scopes` repeated, `expires_at`, `username`): answers its
/// name, username and secret.
async fn create_deploy_token(c: &Change<'_>) -> Result<(String, String, String), SettingsError> {
    let new = service::tokens::NewToken {
        name: c.form.get("name").unwrap_or("").to_string(),
        scopes: c.form.all("scopes").into_iter().map(str::to_string).collect(),
        expires_at: c.form.get("expires_at").map(str::to_string),
    };
    let username = c.form.get("username");
    let owner = token_owner(c.project);
    let (token, secret) = service::tokens::create_deploy_token(
        c.state.store(),
        c.level,
        &owner,
        new,
        username,
        c.ctx,
    )
    .await?;
    Ok((token.name, token.username, secret))
}

async fn revoke_deploy_token(c: &Change<'_>) -> Result<(), SettingsError> {
    let id = c.form.get("token_id").and_then(|id| id.parse::<i64>().ok());
    let id = id.ok_or(SettingsError::NotFound)?;
    let owner = token_owner(c.project);
    service::tokens::revoke_deploy_token(c.state.store(), c.level, &owner, id, c.ctx).await
}
