//! HTTP handlers: parse the request, call [`crate::service`], shape the answer. No rules here.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meta::SourceType;
use serde::Deserialize;
use serde_json::Value;

use crate::caller::Caller;
use crate::error::{ApiError, TOKEN_NOT_FOUND, USER_NOT_FOUND};
use crate::input::{flag, int, list, numeric_id, Params, Path, Ref};
use crate::service::{self as svc, Source};
use crate::views::*;
use crate::ApiState;

type Answer = Result<Response, ApiError>;

fn created(body: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn ok(body: impl serde::Serialize) -> Answer {
    Ok(Json(body).into_response())
}

fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_ref(id: &str) -> Result<Ref, ApiError> {
    numeric_id(id, USER_NOT_FOUND).map(Ref::Id)
}

/// A group or project reference given as a number or a path in the body parameter `param`.
fn ref_param(param: &str, value: Option<Value>) -> Result<Option<Ref>, ApiError> {
    match value {
        Some(Value::Number(n)) => Ok(n.as_i64().map(Ref::Id)),
        Some(Value::String(s)) if !s.is_empty() => Ref::parse(param, &s).map(Some),
        _ => Ok(None),
    }
}

// ---- users ----------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    password: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    admin: Option<bool>,
}

pub async fn create_user(
    State(s): State<ApiState>,
    caller: Caller,
    Params(p): Params<CreateUser>,
) -> Answer {
    let new = svc::NewUser {
        username: p.username,
        email: p.email,
        name: p.name,
        password: p.password,
        admin: p.admin.unwrap_or(false),
    };
    let user = svc::create_user(&s.store, &caller, new).await?;
    created(UserView::new(&user, true))
}

pub async fn list_users(State(s): State<ApiState>, caller: Caller) -> Answer {
    let users = svc::list_users(&s.store, &caller).await?;
    ok(users.iter().map(|u| UserView::new(u, true)).collect::<Vec<_>>())
}

fn sees_private(caller: &Caller, user: &meta::User) -> bool {
    caller.is_admin() || caller.user().is_some_and(|me| me.id == user.id)
}

pub async fn get_user(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Answer {
    let user = svc::user(&s.store, &caller, &user_ref(&id)?).await?;
    ok(UserView::new(&user, sees_private(&caller, &user)))
}

pub async fn current_user(caller: Caller) -> Answer {
    let me = caller.user().ok_or(ApiError::Unauthorized)?;
    ok(UserView::new(me, true))
}

pub async fn block_user(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let user = svc::set_user_blocked(&s.store, &caller, &user_ref(&id)?, true).await?;
    created(UserView::new(&user, true))
}

pub async fn unblock_user(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let user = svc::set_user_blocked(&s.store, &caller, &user_ref(&id)?, false).await?;
    created(UserView::new(&user, true))
}

// ---- groups ---------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateGroup {
    #[serde(default)]
    name: String,
    path: Option<String>,
    parent_id: Option<Value>,
    visibility: Option<String>,
}

pub async fn create_group(
    State(s): State<ApiState>,
    caller: Caller,
    Params(p): Params<CreateGroup>,
) -> Answer {
    let name = if p.name.is_empty() { p.path.clone().unwrap_or_default() } else { p.name };
    let new = svc::NewGroup {
        name,
        path: p.path,
        parent: ref_param("parent_id", p.parent_id)?,
        visibility: p.visibility,
    };
    created(GroupView::from(&svc::create_group(&s.store, &caller, new).await?))
}

pub async fn list_groups(State(s): State<ApiState>, caller: Caller) -> Answer {
    ok(svc::list_groups(&s.store, &caller).await?.iter().map(GroupView::from).collect::<Vec<_>>())
}

pub async fn get_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    ok(GroupView::from(&svc::group(&s.store, &caller, &Ref::parse("id", &id)?).await?))
}

// ---- projects -------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateProject {
    name: Option<String>,
    path: Option<String>,
    namespace_id: Option<Value>,
    visibility: Option<String>,
    container_registry_access_level: Option<String>,
}

async fn project_view(s: &ApiState, project: &meta::Project) -> Result<ProjectView, ApiError> {
    let mut view = ProjectView::new(project, &svc::project_group(&s.store, project).await?);
    view.container_expiration_policy =
        Some(crate::cleanup::policy_view(&s.store, project.id).await?);
    Ok(view)
}

pub async fn create_project(
    State(s): State<ApiState>,
    caller: Caller,
    Params(p): Params<CreateProject>,
) -> Answer {
    let new = svc::NewProject {
        name: p.name,
        path: p.path,
        namespace: ref_param("namespace_id", p.namespace_id)?,
        visibility: p.visibility,
        registry_access: p.container_registry_access_level,
    };
    let project = svc::create_project(&s.store, &caller, new).await?;
    created(project_view(&s, &project).await?)
}

pub async fn list_projects(State(s): State<ApiState>, caller: Caller) -> Answer {
    let mut out = Vec::new();
    for p in svc::list_projects(&s.store, &caller).await? {
        out.push(project_view(&s, &p).await?);
    }
    ok(out)
}

pub async fn get_project(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    ok(project_view(&s, &project).await?)
}

#[derive(Deserialize)]
pub struct UpdateProject {
    visibility: Option<String>,
    container_registry_access_level: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    container_registry_enabled: Option<bool>,
    container_expiration_policy_attributes: Option<Value>,
}

pub async fn update_project(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<UpdateProject>,
) -> Answer {
    let changes = svc::ProjectChanges {
        visibility: p.visibility,
        registry_access: p.container_registry_access_level,
        registry_enabled: p.container_registry_enabled,
    };
    // The policy is validated first, so an invalid one leaves the project unchanged too.
    let policy = match p.container_expiration_policy_attributes {
        Some(attributes) => {
            let current = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
            let now = meta::now_millis();
            Some(
                crate::cleanup::plan_policy_update(&s.store, &caller, &current, attributes, now)
                    .await?,
            )
        }
        None => None,
    };
    let project = svc::update_project(&s.store, &caller, &Ref::parse("id", &id)?, changes).await?;
    if let Some(policy) = policy {
        s.store.save_cleanup_policy(&policy).await?;
    }
    ok(project_view(&s, &project).await?)
}

// ---- members --------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct MemberParams {
    #[serde(default, deserialize_with = "int")]
    user_id: Option<i64>,
    #[serde(default, deserialize_with = "int")]
    access_level: Option<i64>,
}

impl MemberParams {
    fn access_level(&self) -> Result<i64, ApiError> {
        self.access_level
            .ok_or_else(|| ApiError::invalid("access_level", "is required: 10, 20, 30, 40 or 50"))
    }
}

/// Which kind of thing a route's `:id` names: members and deploy tokens exist on both.
pub trait SourceKind {
    const KIND: SourceType;
}

/// `/projects/:id/…`
pub struct OnProject;
/// `/groups/:id/…`
pub struct OnGroup;

impl SourceKind for OnProject {
    const KIND: SourceType = SourceType::Project;
}

impl SourceKind for OnGroup {
    const KIND: SourceType = SourceType::Group;
}

async fn source<K: SourceKind>(
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Source, ApiError> {
    svc::source(&s.store, caller, K::KIND, &Ref::parse("id", id)?).await
}

pub async fn list_members<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let members = svc::list_members(&s.store, &caller, &source).await?;
    ok(members.iter().map(|(m, u)| MemberView::new(m, u)).collect::<Vec<_>>())
}

pub async fn add_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<MemberParams>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let user_id = p.user_id.ok_or_else(|| ApiError::invalid("user_id", "is required"))?;
    let (m, u) =
        svc::add_member(&s.store, &caller, &source, &Ref::Id(user_id), p.access_level()?).await?;
    created(MemberView::new(&m, &u))
}

pub async fn update_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, user)): Path<(String, String)>,
    Params(p): Params<MemberParams>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let (m, u) =
        svc::update_member(&s.store, &caller, &source, &user_ref(&user)?, p.access_level()?)
            .await?;
    ok(MemberView::new(&m, &u))
}

pub async fn remove_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, user)): Path<(String, String)>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    svc::remove_member(&s.store, &caller, &source, &user_ref(&user)?).await?;
    no_content()
}

// ---- personal access tokens -----------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreatePersonalAccessToken {
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "list")]
    scopes: Option<Vec<String>>,
    expires_at: Option<String>,
}

pub async fn create_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<CreatePersonalAccessToken>,
) -> Answer {
    let new = svc::NewPersonalAccessToken {
        name: p.name,
        scopes: p.scopes.unwrap_or_default(),
        expires_at: p.expires_at,
    };
    let (token, secret) =
        svc::create_personal_access_token(&s.store, &caller, &user_ref(&id)?, new).await?;
    created(PersonalAccessTokenView::new(&token, Some(secret)))
}

#[derive(Deserialize)]
pub struct TokenFilter {
    user_id: Option<String>,
}

pub async fn list_personal_access_tokens(
    State(s): State<ApiState>,
    caller: Caller,
    Query(f): Query<TokenFilter>,
) -> Answer {
    let user = f.user_id.as_deref().map(user_ref).transpose()?;
    let tokens = svc::list_personal_access_tokens(&s.store, &caller, user.as_ref()).await?;
    ok(tokens.iter().map(|t| PersonalAccessTokenView::new(t, None)).collect::<Vec<_>>())
}

pub async fn get_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let token =
        svc::personal_access_token(&s.store, &caller, numeric_id(&id, TOKEN_NOT_FOUND)?).await?;
    ok(PersonalAccessTokenView::new(&token, None))
}

pub async fn revoke_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    svc::revoke_personal_access_token(&s.store, &caller, numeric_id(&id, TOKEN_NOT_FOUND)?).await?;
    no_content()
}

// ---- deploy tokens --------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateDeployToken {
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "list")]
    scopes: Option<Vec<String>>,
    username: Option<String>,
    expires_at: Option<String>,
}

pub async fn create_deploy_token<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<CreateDeployToken>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let new = svc::NewDeployToken {
        name: p.name,
        scopes: p.scopes.unwrap_or_default(),
        username: p.username,
        expires_at: p.expires_at,
    };
    let (token, secret) = svc::create_deploy_token(&s.store, &caller, &source, new).await?;
    created(DeployTokenView::new(&token, Some(secret)))
}

pub async fn list_deploy_tokens<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let tokens = svc::list_deploy_tokens(&s.store, &caller, &source).await?;
    ok(tokens.iter().map(|t| DeployTokenView::new(t, None)).collect::<Vec<_>>())
}

pub async fn revoke_deploy_token<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, token)): Path<(String, String)>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    svc::revoke_deploy_token(&s.store, &caller, &source, numeric_id(&token, TOKEN_NOT_FOUND)?)
        .await?;
    no_content()
}

// ---- CI job tokens and the allowlist --------------------------------------------------------

pub async fn create_job_token(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let (token, secret) =
        svc::create_job_token(&s.store, &caller, &project, s.job_token_lifetime).await?;
    created(JobTokenView {
        token: secret,
        username: CI_USERNAME,
        project_id: token.project_id,
        expires_at: crate::time::iso8601(token.expires_at),
    })
}

pub async fn job_token_allowlist(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let mut out = Vec::new();
    for p in svc::job_token_allowlist(&s.store, &caller, &project).await? {
        out.push(project_view(&s, &p).await?);
    }
    ok(out)
}

#[derive(Deserialize)]
pub struct AllowlistEntry {
    target_project_id: Option<Value>,
}

pub async fn allow_job_token_project(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<AllowlistEntry>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let target = ref_param("target_project_id", p.target_project_id)?
        .ok_or_else(|| ApiError::invalid("target_project_id", "is required"))?;
    let allowed = svc::allow_job_token_project(&s.store, &caller, &project, &target).await?;
    created(AllowlistEntryView { source_project_id: project.id, target_project_id: allowed.id })
}

pub async fn disallow_job_token_project(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, target)): Path<(String, String)>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let target = numeric_id(&target, crate::error::PROJECT_NOT_FOUND)?;
    svc::disallow_job_token_project(&s.store, &caller, &project, target).await?;
    no_content()
}
