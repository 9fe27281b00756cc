//! HTTP handlers: parse the request, call [`crate::service`], shape the answer. No rules here.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meta::SourceType;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::{ApiError, MEMBER_NOT_FOUND, TOKEN_NOT_FOUND, USER_NOT_FOUND};
use crate::events_api::{Audit, Target};
use crate::input::{
    flag, int, list, numeric_id, request_host, ListFilters, Listing, NoFilters, Params, Path, Ref,
    Sort,
};
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

/// The registry host as the client called us (`Host`), for image locations in answers.
pub struct RegistryHost(String);

impl<S: Send + Sync> FromRequestParts<S> for RegistryHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RegistryHost(request_host(&parts.headers)))
    }
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

/// `GET /users` filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserListFilters {
    username: Option<String>,
    search: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    active: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    blocked: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    admins: Option<bool>,
}

impl ListFilters for UserListFilters {
    const ORDER_BY: &'static [&'static str] = &["id", "name", "username", "created_at"];
    const SORT: Sort = Sort::Desc;
}

pub async fn list_users(
    State(s): State<ApiState>,
    caller: Caller,
    listing: Listing<UserListFilters>,
) -> Answer {
    let f = &listing.filters;
    let filter = svc::UserFilter {
        username: f.username.clone(),
        search: f.search.clone(),
        active: f.active,
        blocked: f.blocked,
        admins: f.admins,
    };
    let mut users = svc::list_users(&s.store, &caller, &filter).await?;
    listing.order(&mut users, |u, order_by| match order_by {
        "name" => (u.name.to_lowercase(), u.id),
        "username" => (u.username.clone(), u.id),
        "created_at" => (format!("{:020}", u.created_at), u.id),
        _ => (String::new(), u.id),
    });
    Ok(listing.answer(users.iter().map(|u| UserView::new(u, sees_private(&caller, u))).collect()))
}

/// `PUT /users/:id` (admins): what may change. Anything else is refused, naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    admin: Option<bool>,
    /// `active` or `blocked`, as `GET` shows it.
    state: Option<String>,
}

pub async fn update_user(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<UpdateUser>,
) -> Answer {
    let blocked = match p.state.as_deref() {
        None => None,
        Some("active") => Some(false),
        Some("blocked") => Some(true),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("{} is not a state: use active or blocked", oci::preview(other)),
            ))
        }
    };
    let changes = svc::UserChanges {
        name: p.name,
        email: p.email,
        password: p.password,
        admin: p.admin,
        blocked,
    };
    let user = svc::update_user(&s.store, &caller, &user_ref(&id)?, changes).await?;
    ok(UserView::new(&user, true))
}

/// `GET /version`: what is answering, for clients that check before they call.
pub async fn version() -> Answer {
    ok(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "stowage",
        "product": "stowage",
    }))
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

/// `GET /groups` and `GET /projects` filters (projects add `membership`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupListFilters {
    search: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    owned: Option<bool>,
    #[serde(default, deserialize_with = "int")]
    min_access_level: Option<i64>,
    visibility: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    top_level_only: Option<bool>,
}

impl ListFilters for GroupListFilters {
    const ORDER_BY: &'static [&'static str] = &["name", "path", "id"];
    const SORT: Sort = Sort::Asc;
}

pub async fn list_groups(
    State(s): State<ApiState>,
    caller: Caller,
    listing: Listing<GroupListFilters>,
) -> Answer {
    let f = &listing.filters;
    let filter = svc::MembershipFilter {
        search: f.search.clone(),
        owned: f.owned.unwrap_or(false),
        membership: false,
        min_access_level: svc::parse_min_access_level(f.min_access_level)?,
        visibility: svc::parse_visibility_filter(f.visibility.as_deref())?,
    };
    let mut groups = svc::list_groups(&s.store, &caller, &filter).await?;
    if f.top_level_only == Some(true) {
        groups.retain(|g| g.parent_id.is_none());
    }
    listing.order(&mut groups, |g, order_by| match order_by {
        "name" => (g.name.to_lowercase(), g.id),
        "path" => (g.full_path.clone(), g.id),
        _ => (String::new(), g.id),
    });
    Ok(listing.answer(groups.iter().map(GroupView::from).collect()))
}

#[derive(Deserialize)]
pub struct Statistics {
    #[serde(default, deserialize_with = "flag")]
    statistics: Option<bool>,
}

pub async fn get_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<Statistics>,
) -> Answer {
    let group = svc::group(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    ok(crate::storage::group_view(&s.store, &group, p.statistics == Some(true)).await?)
}

#[derive(Deserialize)]
pub struct UpdateGroup {
    #[serde(default, deserialize_with = "int")]
    container_registry_storage_limit: Option<i64>,
}

/// `PUT /groups/:id`: so far only the storage limit (instance admins).
pub async fn update_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<UpdateGroup>,
) -> Answer {
    let group_ref = Ref::parse("id", &id)?;
    let group = match p.container_registry_storage_limit {
        Some(bytes) => {
            crate::storage::set_group_storage_limit(&s.store, &caller, &group_ref, bytes).await?
        }
        None => {
            return Err(ApiError::bad_request(
                "nothing to change: container_registry_storage_limit (bytes, 0 for no limit) is \
                 the one group setting this API changes",
            ))
        }
    };
    ok(crate::storage::group_view(&s.store, &group, false).await?)
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

/// A project as the API shows it; `host` is the registry host the client called us by.
async fn project_view(
    s: &ApiState,
    host: &RegistryHost,
    project: &meta::Project,
) -> Result<ProjectView, ApiError> {
    let mut view = ProjectView::new(project, &svc::project_group(&s.store, project).await?);
    view.container_registry_image_prefix = Some(format!("{}/{}", host.0, project.full_path));
    view.container_expiration_policy =
        Some(crate::cleanup::policy_view(&s.store, project.id).await?);
    Ok(view)
}

pub async fn create_project(
    State(s): State<ApiState>,
    caller: Caller,
    host: RegistryHost,
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
    created(project_view(&s, &host, &project).await?)
}

/// `GET /projects` filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectListFilters {
    search: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    owned: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    membership: Option<bool>,
    #[serde(default, deserialize_with = "int")]
    min_access_level: Option<i64>,
    visibility: Option<String>,
}

impl ListFilters for ProjectListFilters {
    const ORDER_BY: &'static [&'static str] = &["created_at", "id", "name", "path"];
    const SORT: Sort = Sort::Desc;
}

pub async fn list_projects(
    State(s): State<ApiState>,
    caller: Caller,
    host: RegistryHost,
    listing: Listing<ProjectListFilters>,
) -> Answer {
    let f = &listing.filters;
    let filter = svc::MembershipFilter {
        search: f.search.clone(),
        owned: f.owned.unwrap_or(false),
        membership: f.membership.unwrap_or(false),
        min_access_level: svc::parse_min_access_level(f.min_access_level)?,
        visibility: svc::parse_visibility_filter(f.visibility.as_deref())?,
    };
    let mut projects = svc::list_projects(&s.store, &caller, &filter).await?;
    listing.order(&mut projects, |p, order_by| match order_by {
        "name" => (p.name.to_lowercase(), p.id),
        "path" => (p.full_path.clone(), p.id),
        "created_at" => (format!("{:020}", p.created_at), p.id),
        _ => (String::new(), p.id),
    });
    let mut out = Vec::new();
    for p in &projects {
        out.push(project_view(&s, &host, p).await?);
    }
    Ok(listing.answer(out))
}

pub async fn get_project(
    State(s): State<ApiState>,
    caller: Caller,
    host: RegistryHost,
    Path(id): Path<String>,
    Params(p): Params<Statistics>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let mut view = project_view(&s, &host, &project).await?;
    if p.statistics == Some(true) {
        view.statistics = Some(crate::storage::project_statistics(&s.store, &project).await?);
    }
    ok(view)
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
    audit: Audit,
    host: RegistryHost,
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
        ::service::cleanup::save_policy(&s.store, &project, &policy, &audit.0).await?;
    }
    ok(project_view(&s, &host, &project).await?)
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

/// Members listing filters, as GitLab's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberListFilters {
    /// A part of the username or name.
    query: Option<String>,
    #[serde(default, deserialize_with = "list")]
    user_ids: Option<Vec<String>>,
}

impl ListFilters for MemberListFilters {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Asc;
}

fn member_answer(
    listing: &Listing<MemberListFilters>,
    members: Vec<(meta::Member, meta::User)>,
) -> Answer {
    let f = &listing.filters;
    let query = f.query.as_deref().map(str::to_lowercase).filter(|q| !q.is_empty());
    let ids = f
        .user_ids
        .as_ref()
        .map(|ids| {
            ids.iter()
                .map(|id| id.parse::<i64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ApiError::invalid("user_ids", "must be numeric user ids"))
        })
        .transpose()?;
    let out: Vec<MemberView> = members
        .iter()
        .filter(|(_, u)| {
            query.as_deref().is_none_or(|q| {
                u.username.to_lowercase().contains(q) || u.name.to_lowercase().contains(q)
            }) && ids.as_ref().is_none_or(|ids| ids.contains(&u.id))
        })
        .map(|(m, u)| MemberView::new(m, u))
        .collect();
    Ok(listing.answer(out))
}

pub async fn list_members<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    listing: Listing<MemberListFilters>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    member_answer(&listing, svc::list_members(&s.store, &caller, &source).await?)
}

/// `members/all`: direct and inherited members, each once with their highest role.
pub async fn list_all_members<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    listing: Listing<MemberListFilters>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    member_answer(&listing, svc::list_all_members(&s.store, &caller, &source).await?)
}

/// `members/all/:user_id`: one member, direct or inherited.
pub async fn get_any_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, user)): Path<(String, String)>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let user_id = numeric_id(&user, MEMBER_NOT_FOUND)?;
    let members = svc::list_all_members(&s.store, &caller, &source).await?;
    let (m, u) = members
        .iter()
        .find(|(_, u)| u.id == user_id)
        .ok_or(ApiError::NotFound(MEMBER_NOT_FOUND))?;
    ok(MemberView::new(m, u))
}

pub async fn add_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
    Params(p): Params<MemberParams>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let user_id = p.user_id.ok_or_else(|| ApiError::invalid("user_id", "is required"))?;
    let (m, u) =
        svc::add_member(&s.store, &caller, &source, &Ref::Id(user_id), p.access_level()?).await?;
    let details = json!({ "as": svc::role_name(m.access_level) });
    audit.record_on(&s.store, &source, "member_add", member_target(&u), details).await;
    created(MemberView::new(&m, &u))
}

pub async fn update_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, user)): Path<(String, String)>,
    Params(p): Params<MemberParams>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let (m, u) =
        svc::update_member(&s.store, &caller, &source, &user_ref(&user)?, p.access_level()?)
            .await?;
    let details = json!({ "as": svc::role_name(m.access_level) });
    audit.record_on(&s.store, &source, "member_role_change", member_target(&u), details).await;
    ok(MemberView::new(&m, &u))
}

pub async fn remove_member<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, user)): Path<(String, String)>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let removed = svc::remove_member(&s.store, &caller, &source, &user_ref(&user)?).await?;
    audit.record_on(&s.store, &source, "member_remove", member_target(&removed), json!({})).await;
    no_content()
}

fn member_target(user: &meta::User) -> Target<'static> {
    Target { kind: "User", id: user.id.to_string(), details: user.username.clone() }
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
    audit: Audit,
    Path(id): Path<String>,
    Params(p): Params<CreatePersonalAccessToken>,
) -> Answer {
    let new = svc::NewPersonalAccessToken {
        name: p.name,
        scopes: p.scopes.unwrap_or_default(),
        expires_at: p.expires_at,
    };
    let (token, secret) =
        svc::create_personal_access_token(&s.store, &caller, &user_ref(&id)?, new, &audit.0)
            .await?;
    created(PersonalAccessTokenView::new(&token, Some(secret)))
}

/// `GET /personal_access_tokens` filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenListFilters {
    user_id: Option<String>,
    /// `active` or `inactive` (revoked or expired).
    state: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    revoked: Option<bool>,
    /// A part of the token's name.
    search: Option<String>,
}

impl ListFilters for TokenListFilters {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Asc;
}

pub async fn list_personal_access_tokens(
    State(s): State<ApiState>,
    caller: Caller,
    listing: Listing<TokenListFilters>,
) -> Answer {
    let f = &listing.filters;
    let user = f.user_id.as_deref().map(user_ref).transpose()?;
    let active = match f.state.as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("{} is not a token state: use active or inactive", oci::preview(other)),
            ))
        }
    };
    let search = f.search.as_deref().map(str::to_lowercase).filter(|q| !q.is_empty());
    let tokens = svc::list_personal_access_tokens(&s.store, &caller, user.as_ref()).await?;
    let views: Vec<PersonalAccessTokenView> = tokens
        .iter()
        .map(|t| PersonalAccessTokenView::new(t, None))
        .filter(|v| active.is_none_or(|a| a == v.active))
        .filter(|v| f.revoked.is_none_or(|r| r == v.revoked))
        .filter(|v| search.as_deref().is_none_or(|q| v.name.to_lowercase().contains(q)))
        .collect();
    Ok(listing.answer(views))
}

/// A token by id, or `self`: the token this request authenticated with.
async fn token_id(s: &ApiState, headers: &HeaderMap, id: &str) -> Result<i64, ApiError> {
    if id == "self" {
        Ok(crate::caller::presented_personal_access_token(&s.store, headers).await?.id)
    } else {
        numeric_id(id, TOKEN_NOT_FOUND)
    }
}

pub async fn get_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let id = token_id(&s, &headers, &id).await?;
    let token = svc::personal_access_token(&s.store, &caller, id).await?;
    ok(PersonalAccessTokenView::new(&token, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    expires_at: Option<String>,
}

/// `POST /personal_access_tokens/:id/rotate` (and `self/rotate`): a new secret, the old one
/// revoked.
pub async fn rotate_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(p): Params<RotateToken>,
) -> Answer {
    let id = token_id(&s, &headers, &id).await?;
    let (token, secret) =
        svc::rotate_personal_access_token(&s.store, &caller, id, p.expires_at.as_deref()).await?;
    ::service::tokens::record_token_change(&s.store, &audit.0, "token_rotate", &token).await;
    ok(PersonalAccessTokenView::new(&token, Some(secret)))
}

pub async fn revoke_personal_access_token(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
) -> Answer {
    let id = numeric_id(&id, TOKEN_NOT_FOUND)?;
    svc::revoke_personal_access_token(&s.store, &caller, id, &audit.0).await?;
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
    audit: Audit,
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
    let (token, secret) =
        svc::create_deploy_token(&s.store, &caller, &source, new, &audit.0).await?;
    created(DeployTokenView::new(&token, Some(secret)))
}

/// Deploy token listing filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployTokenListFilters {
    #[serde(default, deserialize_with = "flag")]
    active: Option<bool>,
}

impl ListFilters for DeployTokenListFilters {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Asc;
}

fn deploy_token_answer(
    listing: &Listing<DeployTokenListFilters>,
    tokens: Vec<meta::DeployToken>,
) -> Answer {
    let views: Vec<DeployTokenView> = tokens
        .iter()
        .map(|t| DeployTokenView::new(t, None))
        .filter(|v| listing.filters.active.is_none_or(|a| a == (!v.revoked && !v.expired)))
        .collect();
    Ok(listing.answer(views))
}

pub async fn list_deploy_tokens<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    listing: Listing<DeployTokenListFilters>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    deploy_token_answer(&listing, svc::list_deploy_tokens(&s.store, &caller, &source).await?)
}

/// `GET /deploy_tokens`: every deploy token of the instance (admins).
pub async fn list_all_deploy_tokens(
    State(s): State<ApiState>,
    caller: Caller,
    listing: Listing<DeployTokenListFilters>,
) -> Answer {
    deploy_token_answer(&listing, svc::list_all_deploy_tokens(&s.store, &caller, None).await?)
}

pub async fn revoke_deploy_token<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, token)): Path<(String, String)>,
) -> Answer {
    let source = source::<K>(&s, &caller, &id).await?;
    let token = numeric_id(&token, TOKEN_NOT_FOUND)?;
    svc::revoke_deploy_token(&s.store, &caller, &source, token, &audit.0).await?;
    no_content()
}

// ---- CI job tokens and the allowlist --------------------------------------------------------

pub async fn create_job_token(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let (token, secret) =
        svc::create_job_token(&s.store, &caller, &project, s.job_token_lifetime).await?;
    let target = Target { kind: "JobToken", id: token.id.to_string(), details: String::new() };
    let details = json!({ "expires_at": crate::time::iso8601(token.expires_at) });
    let source = Source::Project(project);
    audit.record_on(&s.store, &source, "token_create", target, details).await;
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
    host: RegistryHost,
    Path(id): Path<String>,
    listing: Listing<NoFilters>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let mut out = Vec::new();
    for p in svc::job_token_allowlist(&s.store, &caller, &project).await? {
        out.push(project_view(&s, &host, &p).await?);
    }
    Ok(listing.answer(out))
}

/// `GET /projects/:id/job_token_scope`: whether job tokens of other projects are limited to
/// the allowlist (always: Stowage has no other mode).
pub async fn job_token_scope(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    let project = svc::project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    svc::job_token_allowlist(&s.store, &caller, &project).await?;
    ok(serde_json::json!({ "inbound_enabled": true, "outbound_enabled": false }))
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
