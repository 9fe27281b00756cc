//! What the API and the `stowage admin` CLI can do, with the permission rules applied: every
//! function takes the [`Caller`] it acts for and answers with domain values or an [`ApiError`].
//! HTTP handlers and CLI commands are thin layers over these.
//!
//! Visibility follows GitLab: public things are visible to everyone, internal ones to anyone
//! signed in, private ones to members (directly or through an ancestor group) and admins.
//! Whatever a caller may not see answers exactly like something that does not exist.

use std::time::Duration;

use meta::{
    access_level, Group, JobToken, Project, RegistryAccess, SourceType, Store, User, Visibility,
};

use crate::caller::Caller;
use crate::error::{
    ApiError, GROUP_NOT_FOUND, MEMBER_NOT_FOUND, PROJECT_NOT_FOUND, TOKEN_NOT_FOUND, USER_NOT_FOUND,
};
use crate::input::Ref;
use crate::names::{check_full_path_length, PathSegment};
use crate::views::CI_USERNAME;

pub use ::service::tokens::{DEPLOY_SCOPES, PAT_SCOPES};
/// Longest email address accepted (GitLab's limit).
pub const MAX_EMAIL_LEN: usize = 255;

// ---- who may see and do what ----------------------------------------------------------------

fn visible(caller: &Caller, visibility: Visibility, level: i64) -> bool {
    caller.is_admin()
        || visibility == Visibility::Public
        || (visibility == Visibility::Internal && caller.is_signed_in())
        || level >= access_level::GUEST
}

/// The caller's effective role on a project (admins count as owners).
pub async fn project_level(
    store: &Store,
    caller: &Caller,
    project: &Project,
) -> Result<i64, ApiError> {
    Ok(match caller {
        _ if caller.is_admin() => access_level::OWNER,
        Caller::User(user) => store.effective_access_level(user.id, project).await?,
        _ => access_level::NONE,
    })
}

/// The caller's effective role on a group (admins count as owners).
pub async fn group_level(store: &Store, caller: &Caller, group: &Group) -> Result<i64, ApiError> {
    Ok(match caller {
        _ if caller.is_admin() => access_level::OWNER,
        Caller::User(user) => store.effective_group_access_level(user.id, group).await?,
        _ => access_level::NONE,
    })
}

pub(crate) fn require_level(level: i64, needed: i64, what: &str) -> Result<(), ApiError> {
    if level >= needed {
        Ok(())
    } else {
        Err(ApiError::ForbiddenBecause(format!(
            "{what} needs the {} role or higher",
            role_name(needed)
        )))
    }
}

pub fn role_name(level: i64) -> &'static str {
    match level {
        access_level::GUEST => "guest",
        access_level::REPORTER => "reporter",
        access_level::DEVELOPER => "developer",
        access_level::MAINTAINER => "maintainer",
        access_level::OWNER => "owner",
        _ => "no",
    }
}

/// `30`, `developer` or `Developer` → 30.
pub fn parse_access_level(text: &str) -> Option<i64> {
    let level = match text.to_ascii_lowercase().as_str() {
        "guest" => access_level::GUEST,
        "reporter" => access_level::REPORTER,
        "developer" => access_level::DEVELOPER,
        "maintainer" => access_level::MAINTAINER,
        "owner" => access_level::OWNER,
        other => other.parse().ok()?,
    };
    access_level::is_valid(level).then_some(level)
}

fn check_access_level(level: i64) -> Result<(), ApiError> {
    if access_level::is_valid(level) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "access_level",
            "must be 10 (guest), 20 (reporter), 30 (developer), 40 (maintainer) or 50 (owner)",
        ))
    }
}

fn parse_visibility(text: Option<&str>, default: Visibility) -> Result<Visibility, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => Visibility::parse(t).ok_or_else(|| {
            ApiError::invalid(
                "visibility",
                format!("{t:?} is not a visibility: use private, internal or public"),
            )
        }),
    }
}

fn rank(v: Visibility) -> u8 {
    match v {
        Visibility::Private => 0,
        Visibility::Internal => 1,
        Visibility::Public => 2,
    }
}

/// GitLab never lets something be more visible than the group that holds it.
fn check_visibility_within(visibility: Visibility, group: &Group) -> Result<(), ApiError> {
    if rank(visibility) > rank(group.visibility) {
        return Err(ApiError::invalid(
            "visibility",
            format!(
                "{} is not allowed in the {} group {}: make the group {} first, or choose a lower visibility",
                visibility.as_str(),
                group.visibility.as_str(),
                group.full_path,
                visibility.as_str()
            ),
        ));
    }
    Ok(())
}

// ---- users ----------------------------------------------------------------------------------

pub struct NewUser {
    pub username: String,
    pub email: String,
    pub name: String,
    pub password: Option<String>,
    pub admin: bool,
}

fn check_username(username: &str) -> Result<(), ApiError> {
    let ok_chars =
        username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let ok_ends = username.starts_with(|c: char| c.is_ascii_alphanumeric())
        && username.ends_with(|c: char| c.is_ascii_alphanumeric());
    if username.is_empty() || username.len() > 255 || !ok_chars || !ok_ends {
        return Err(ApiError::invalid(
            "username",
            "may only contain letters, digits, '_', '-' and '.', and must start and end with a letter or digit",
        ));
    }
    if username == CI_USERNAME {
        return Err(ApiError::invalid(
            "username",
            format!("{CI_USERNAME} is reserved for CI job tokens"),
        ));
    }
    Ok(())
}

pub async fn create_user(store: &Store, caller: &Caller, new: NewUser) -> Result<User, ApiError> {
    caller.require_admin()?;
    check_username(&new.username)?;
    check_email(&new.email)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    if store.deploy_token_by_username(&new.username).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "{} is a deploy token's username: choose another",
            new.username
        )));
    }
    let hash = match &new.password {
        Some(p) => Some(hash_new_password(p).await?),
        None => None,
    };
    Ok(store
        .create_user(&new.username, &new.email, new.name.trim(), hash.as_deref(), new.admin)
        .await?)
}

/// Checks a new password against THE rule ([`auth::credentials::check_new_password`]) and
/// hashes it.
pub async fn hash_new_password(password: &str) -> Result<String, ApiError> {
    auth::credentials::check_new_password(password)
        .map_err(|why| ApiError::invalid("password", why))?;
    Ok(auth::secret::hash_password(password).await?)
}

/// What `GET /users` filters by, as GitLab does.
#[derive(Default)]
pub struct UserFilter {
    /// Exactly this username (case-insensitive): zero or one user.
    pub username: Option<String>,
    /// A part of the username or name (or, for admins, the email), case-insensitive.
    pub search: Option<String>,
    pub active: Option<bool>,
    pub blocked: Option<bool>,
    pub admins: Option<bool>,
}

/// The users matching `filter`, by id. Any signed-in user may list users (as in GitLab: one
/// needs to find a user to make them a member); what a non-admin sees of each is the public
/// view, without email.
pub async fn list_users(
    store: &Store,
    caller: &Caller,
    filter: &UserFilter,
) -> Result<Vec<User>, ApiError> {
    caller.require_signed_in()?;
    if filter.admins.is_some() {
        caller.require_admin()?;
    }
    let search = filter.search.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
    let matches = |u: &User| {
        filter.username.as_deref().is_none_or(|name| u.username.eq_ignore_ascii_case(name))
            && search.as_deref().is_none_or(|s| {
                u.username.to_lowercase().contains(s)
                    || u.name.to_lowercase().contains(s)
                    || (caller.is_admin() && u.email.to_lowercase().contains(s))
            })
            && filter.active.is_none_or(|a| a != u.blocked)
            && filter.blocked.is_none_or(|b| b == u.blocked)
            && filter.admins.is_none_or(|a| a == u.is_admin)
    };
    Ok(store.list_users().await?.into_iter().filter(matches).collect())
}

/// What an admin may change of a user (`PUT /users/:id`); `None` leaves it.
#[derive(Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub admin: Option<bool>,
    pub blocked: Option<bool>,
}

/// Changes a user (admins only). Everything is validated before anything is written, so a
/// refused change leaves the user as it was.
pub async fn update_user(
    store: &Store,
    caller: &Caller,
    user_ref: &Ref,
    changes: UserChanges,
) -> Result<User, ApiError> {
    caller.require_admin()?;
    let target = user(store, caller, user_ref).await?;
    let is_me = caller.user().is_some_and(|me| me.id == target.id);
    if is_me && changes.blocked == Some(true) {
        return Err(ApiError::ForbiddenBecause("you cannot block yourself".into()));
    }
    if is_me && changes.admin == Some(false) {
        return Err(ApiError::ForbiddenBecause(
            "you cannot remove your own admin role: ask another admin".into(),
        ));
    }
    let name = changes.name.as_deref().map(str::trim).unwrap_or(&target.name).to_string();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let email = changes.email.clone().unwrap_or_else(|| target.email.clone());
    check_email(&email)?;
    let hash = match &changes.password {
        Some(p) => Some(hash_new_password(p).await?),
        None => None,
    };
    let admin = changes.admin.unwrap_or(target.is_admin);
    if name != target.name || email != target.email || admin != target.is_admin {
        store.update_user_profile(target.id, &name, &email, admin).await?;
    }
    if let Some(hash) = hash {
        store.set_user_password(target.id, &hash).await?;
    }
    if let Some(blocked) = changes.blocked {
        store.set_user_blocked(target.id, blocked).await?;
    }
    store.user_by_id(target.id).await?.ok_or(ApiError::NotFound(USER_NOT_FOUND))
}

fn check_email(email: &str) -> Result<(), ApiError> {
    if !email.contains('@') {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    // Emails are unique, so indexed: PostgreSQL cannot index a value of a few kilobytes,
    // SQLite can. GitLab's limit keeps both backends answering alike.
    if email.len() > MAX_EMAIL_LEN {
        return Err(ApiError::invalid(
            "email",
            format!("is too long (maximum is {MAX_EMAIL_LEN} characters)"),
        ));
    }
    Ok(())
}

/// A user by id, or (for the CLI) by username.
pub async fn user(store: &Store, caller: &Caller, user: &Ref) -> Result<User, ApiError> {
    caller.require_signed_in()?;
    let found = match user {
        Ref::Id(id) => store.user_by_id(*id).await?,
        Ref::Path(username) => store.user_by_username(username).await?,
    };
    found.ok_or(ApiError::NotFound(USER_NOT_FOUND))
}

pub async fn set_user_blocked(
    store: &Store,
    caller: &Caller,
    user_ref: &Ref,
    blocked: bool,
) -> Result<User, ApiError> {
    caller.require_admin()?;
    let target = user(store, caller, user_ref).await?;
    if blocked && caller.user().is_some_and(|me| me.id == target.id) {
        return Err(ApiError::ForbiddenBecause("you cannot block yourself".into()));
    }
    store.set_user_blocked(target.id, blocked).await?;
    store.user_by_id(target.id).await?.ok_or(ApiError::NotFound(USER_NOT_FOUND))
}

// ---- groups ---------------------------------------------------------------------------------

pub struct NewGroup {
    pub name: String,
    pub path: Option<String>,
    pub parent: Option<Ref>,
    pub visibility: Option<String>,
}

/// A group the caller may see.
pub async fn group(store: &Store, caller: &Caller, group: &Ref) -> Result<Group, ApiError> {
    let found = match group {
        Ref::Id(id) => store.group_by_id(*id).await?,
        Ref::Path(path) => store.group_by_full_path(path).await?,
    };
    let group = found.ok_or(ApiError::NotFound(GROUP_NOT_FOUND))?;
    let level = group_level(store, caller, &group).await?;
    if visible(caller, group.visibility, level) {
        Ok(group)
    } else {
        Err(ApiError::NotFound(GROUP_NOT_FOUND))
    }
}

/// What `GET /groups` and `GET /projects` filter by besides visibility, as GitLab does.
#[derive(Default)]
pub struct MembershipFilter {
    /// A part of the name or path (or full path), case-insensitive.
    pub search: Option<String>,
    /// Only what the caller owns (role owner, directly or through a group).
    pub owned: bool,
    /// Only what the caller is a member of (directly or through a group).
    pub membership: bool,
    /// Only what the caller has at least this role in.
    pub min_access_level: Option<i64>,
    pub visibility: Option<Visibility>,
}

impl MembershipFilter {
    /// The least role the caller must hold itself (admins' implicit ownership does not count,
    /// as in GitLab), if the filter asks for one.
    fn least_role(&self) -> Option<i64> {
        [
            self.owned.then_some(access_level::OWNER),
            self.membership.then_some(access_level::GUEST),
            self.min_access_level,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    fn matches_text(&self, name: &str, full_path: &str) -> bool {
        match self.search.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty()) {
            None => true,
            Some(s) => name.to_lowercase().contains(&s) || full_path.to_lowercase().contains(&s),
        }
    }
}

/// A `min_access_level` as given: one of GitLab's roles.
pub fn parse_min_access_level(level: Option<i64>) -> Result<Option<i64>, ApiError> {
    match level {
        Some(l) if !access_level::is_valid(l) => Err(ApiError::invalid(
            "min_access_level",
            "must be 10 (guest), 20 (reporter), 30 (developer), 40 (maintainer) or 50 (owner)",
        )),
        other => Ok(other),
    }
}

/// A `visibility` filter as given.
pub fn parse_visibility_filter(text: Option<&str>) -> Result<Option<Visibility>, ApiError> {
    text.filter(|t| !t.is_empty())
        .map(|t| parse_visibility(Some(t), Visibility::Private))
        .transpose()
}

pub async fn list_groups(
    store: &Store,
    caller: &Caller,
    filter: &MembershipFilter,
) -> Result<Vec<Group>, ApiError> {
    let least_role = filter.least_role();
    if least_role.is_some() {
        caller.require_signed_in()?;
    }
    let mut out = Vec::new();
    for g in store.list_groups().await? {
        if !filter.matches_text(&g.name, &g.full_path)
            || filter.visibility.is_some_and(|v| v != g.visibility)
        {
            continue;
        }
        if let Some(least) = least_role {
            let own = match caller {
                Caller::User(user) => store.effective_group_access_level(user.id, &g).await?,
                _ => access_level::NONE,
            };
            if own < least {
                continue;
            }
        }
        let level = group_level(store, caller, &g).await?;
        if visible(caller, g.visibility, level) {
            out.push(g);
        }
    }
    Ok(out)
}

pub async fn create_group(
    store: &Store,
    caller: &Caller,
    new: NewGroup,
) -> Result<Group, ApiError> {
    caller.require_signed_in()?;
    let name = new.name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let path = match &new.path {
        Some(p) => PathSegment::parse(p)?,
        None => PathSegment::from_name(name)?,
    };
    let parent = match &new.parent {
        Some(r) => Some(group(store, caller, r).await?),
        None => None,
    };
    if let Some(parent) = &parent {
        let level = group_level(store, caller, parent).await?;
        require_level(
            level,
            access_level::MAINTAINER,
            &format!("creating a subgroup of {}", parent.full_path),
        )?;
    }
    let visibility = parse_visibility(new.visibility.as_deref(), Visibility::Private)?;
    if let Some(parent) = &parent {
        check_visibility_within(visibility, parent)?;
        check_full_path_length(&format!("{}/{}", parent.full_path, path.as_str()))?;
    } else {
        check_full_path_length(path.as_str())?;
    }
    let group = store.create_group(name, path.as_str(), parent.as_ref(), visibility).await?;
    // The creator owns what they create (GitLab does the same), unless they already own it
    // through an ancestor.
    if let Caller::User(user) = caller {
        if parent.is_none()
            || store.effective_group_access_level(user.id, &group).await? < access_level::OWNER
        {
            store.set_member(SourceType::Group, group.id, user.id, access_level::OWNER).await?;
        }
    }
    Ok(group)
}

// ---- projects -------------------------------------------------------------------------------

pub struct NewProject {
    pub name: Option<String>,
    pub path: Option<String>,
    pub namespace: Option<Ref>,
    pub visibility: Option<String>,
    pub registry_access: Option<String>,
}

#[derive(Default)]
pub struct ProjectChanges {
    pub visibility: Option<String>,
    pub registry_access: Option<String>,
    /// GitLab's older boolean form of `container_registry_access_level`.
    pub registry_enabled: Option<bool>,
}

/// A project the caller may see.
pub async fn project(store: &Store, caller: &Caller, project: &Ref) -> Result<Project, ApiError> {
    let found = match project {
        Ref::Id(id) => store.project_by_id(*id).await?,
        Ref::Path(path) => store.project_by_full_path(path).await?,
    };
    let project = found.ok_or(ApiError::NotFound(PROJECT_NOT_FOUND))?;
    let level = project_level(store, caller, &project).await?;
    if visible(caller, project.visibility, level) {
        Ok(project)
    } else {
        Err(ApiError::NotFound(PROJECT_NOT_FOUND))
    }
}

/// The group a project lives in.
pub async fn project_group(store: &Store, project: &Project) -> Result<Group, ApiError> {
    store.group_by_id(project.group_id).await?.ok_or(ApiError::NotFound(GROUP_NOT_FOUND))
}

pub async fn list_projects(
    store: &Store,
    caller: &Caller,
    filter: &MembershipFilter,
) -> Result<Vec<Project>, ApiError> {
    let least_role = filter.least_role();
    if least_role.is_some() {
        caller.require_signed_in()?;
    }
    let mut out = Vec::new();
    for p in store.list_projects().await? {
        if !filter.matches_text(&p.name, &p.full_path)
            || filter.visibility.is_some_and(|v| v != p.visibility)
        {
            continue;
        }
        if let Some(least) = least_role {
            let own = match caller {
                Caller::User(user) => store.effective_access_level(user.id, &p).await?,
                _ => access_level::NONE,
            };
            if own < least {
                continue;
            }
        }
        let level = project_level(store, caller, &p).await?;
        if visible(caller, p.visibility, level) {
            out.push(p);
        }
    }
    Ok(out)
}

fn parse_registry_access(text: &str) -> Result<RegistryAccess, ApiError> {
    Ok(::service::settings::parse_registry_access(text)?)
}

pub async fn create_project(
    store: &Store,
    caller: &Caller,
    new: NewProject,
) -> Result<Project, ApiError> {
    caller.require_signed_in()?;
    let namespace = new.namespace.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "namespace_id",
            "is required: every project lives in a group; give the group's id or full path",
        )
    })?;
    let (name, path) = match (new.name.as_deref().map(str::trim), &new.path) {
        (Some(name), Some(path)) if !name.is_empty() => {
            (name.to_string(), PathSegment::parse(path)?)
        }
        (Some(name), None) if !name.is_empty() => (name.to_string(), PathSegment::from_name(name)?),
        (_, Some(path)) => (path.clone(), PathSegment::parse(path)?),
        _ => return Err(ApiError::bad_request("name or path is required")),
    };
    let group = group(store, caller, namespace).await?;
    let level = group_level(store, caller, &group).await?;
    require_level(
        level,
        access_level::MAINTAINER,
        &format!("creating a project in {}", group.full_path),
    )?;
    let visibility = parse_visibility(new.visibility.as_deref(), Visibility::Private)?;
    check_visibility_within(visibility, &group)?;
    let registry_access = new.registry_access.as_deref().map(parse_registry_access).transpose()?;
    check_full_path_length(&format!("{}/{}", group.full_path, path.as_str()))?;
    let mut project = store.create_project(&name, path.as_str(), &group, visibility).await?;
    if registry_access.is_some() {
        project = store.update_project(project.id, None, registry_access).await?.unwrap_or(project);
    }
    if let Caller::User(user) = caller {
        if !user.is_admin
            && store.effective_access_level(user.id, &project).await? < access_level::OWNER
        {
            store.set_member(SourceType::Project, project.id, user.id, access_level::OWNER).await?;
        }
    }
    Ok(project)
}

pub async fn update_project(
    store: &Store,
    caller: &Caller,
    project_ref: &Ref,
    changes: ProjectChanges,
) -> Result<Project, ApiError> {
    caller.require_signed_in()?;
    let current = project(store, caller, project_ref).await?;
    let level = project_level(store, caller, &current).await?;
    ::service::settings::require_maintainer(level, "changing a project's settings")?;
    let visibility = changes
        .visibility
        .as_deref()
        .map(|v| parse_visibility(Some(v), Visibility::Private))
        .transpose()?;
    if let Some(v) = visibility {
        check_visibility_within(v, &project_group(store, &current).await?)?;
    }
    let registry_access = match (&changes.registry_access, changes.registry_enabled) {
        (Some(level), _) => Some(parse_registry_access(level)?),
        (None, Some(true)) => Some(RegistryAccess::Enabled),
        (None, Some(false)) => Some(RegistryAccess::Disabled),
        (None, None) => None,
    };
    store
        .update_project(current.id, visibility, registry_access)
        .await?
        .ok_or(ApiError::NotFound(PROJECT_NOT_FOUND))
}

// ---- members --------------------------------------------------------------------------------

/// What memberships and deploy tokens attach to.
#[derive(Clone, Debug)]
pub enum Source {
    Group(Group),
    Project(Project),
}

impl Source {
    /// What `service::tokens` calls the owner of a deploy token.
    pub fn token_owner(&self) -> ::service::tokens::TokenOwner {
        ::service::tokens::TokenOwner {
            source_type: self.source_type(),
            id: self.id(),
            full_path: self.full_path().to_string(),
        }
    }

    pub fn source_type(&self) -> SourceType {
        match self {
            Source::Group(_) => SourceType::Group,
            Source::Project(_) => SourceType::Project,
        }
    }

    pub fn id(&self) -> i64 {
        match self {
            Source::Group(g) => g.id,
            Source::Project(p) => p.id,
        }
    }

    pub fn full_path(&self) -> &str {
        match self {
            Source::Group(g) => &g.full_path,
            Source::Project(p) => &p.full_path,
        }
    }

    pub async fn level(&self, store: &Store, caller: &Caller) -> Result<i64, ApiError> {
        match self {
            Source::Group(g) => group_level(store, caller, g).await,
            Source::Project(p) => project_level(store, caller, p).await,
        }
    }
}

/// A group or project the caller may see, by its kind.
pub async fn source(
    store: &Store,
    caller: &Caller,
    kind: SourceType,
    r: &Ref,
) -> Result<Source, ApiError> {
    Ok(match kind {
        SourceType::Group => Source::Group(group(store, caller, r).await?),
        SourceType::Project => Source::Project(project(store, caller, r).await?),
    })
}

/// A group or project by full path, whichever it is (the two never share a path).
pub async fn source_by_path(
    store: &Store,
    caller: &Caller,
    path: &str,
) -> Result<Source, ApiError> {
    let r = Ref::Path(path.trim_matches('/').to_string());
    match project(store, caller, &r).await {
        Ok(p) => Ok(Source::Project(p)),
        Err(ApiError::NotFound(_)) => {
            group(store, caller, &r).await.map(Source::Group).map_err(|_| {
                ApiError::bad_request(format!(
                    "{path} is neither a group nor a project you can see"
                ))
            })
        }
        Err(e) => Err(e),
    }
}

pub async fn list_members(
    store: &Store,
    caller: &Caller,
    source: &Source,
) -> Result<Vec<(meta::Member, User)>, ApiError> {
    caller.require_signed_in()?;
    let mut out = Vec::new();
    for m in store.list_members(source.source_type(), source.id()).await? {
        if let Some(user) = store.user_by_id(m.user_id).await? {
            out.push((m, user));
        }
    }
    Ok(out)
}

/// The members of `source` including those inherited from its groups (GitLab's
/// `members/all`): each user once, with their highest role.
pub async fn list_all_members(
    store: &Store,
    caller: &Caller,
    source: &Source,
) -> Result<Vec<(meta::Member, User)>, ApiError> {
    caller.require_signed_in()?;
    let mut sources = Vec::new();
    let group_path = match source {
        Source::Project(p) => {
            sources.push((SourceType::Project, p.id));
            project_group(store, p).await?.full_path
        }
        Source::Group(g) => g.full_path.clone(),
    };
    for g in store.groups_by_full_paths(&meta::path_prefixes(&group_path)).await? {
        sources.push((SourceType::Group, g.id));
    }
    let mut best: std::collections::BTreeMap<i64, meta::Member> = Default::default();
    for (kind, id) in sources {
        for m in store.list_members(kind, id).await? {
            match best.get(&m.user_id) {
                Some(b) if b.access_level >= m.access_level => {}
                _ => {
                    best.insert(m.user_id, m);
                }
            }
        }
    }
    let mut out = Vec::new();
    for m in best.into_values() {
        if let Some(user) = store.user_by_id(m.user_id).await? {
            out.push((m, user));
        }
    }
    Ok(out)
}

async fn existing_member(
    store: &Store,
    source: &Source,
    user_id: i64,
) -> Result<Option<meta::Member>, ApiError> {
    Ok(store
        .list_members(source.source_type(), source.id())
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id))
}

/// Maintainers manage members; only owners touch the owner role.
async fn check_may_manage(
    store: &Store,
    caller: &Caller,
    source: &Source,
    existing: Option<&meta::Member>,
    new_level: Option<i64>,
) -> Result<(), ApiError> {
    caller.require_signed_in()?;
    let level = source.level(store, caller).await?;
    require_level(
        level,
        access_level::MAINTAINER,
        &format!("managing the members of {}", source.full_path()),
    )?;
    let touches_owner = new_level == Some(access_level::OWNER)
        || existing.is_some_and(|m| m.access_level == access_level::OWNER);
    if touches_owner && level < access_level::OWNER {
        return Err(ApiError::ForbiddenBecause(
            "only owners can grant, change or remove the owner role".into(),
        ));
    }
    Ok(())
}

pub async fn add_member(
    store: &Store,
    caller: &Caller,
    source: &Source,
    user_ref: &Ref,
    level: i64,
) -> Result<(meta::Member, User), ApiError> {
    check_access_level(level)?;
    let user = user(store, caller, user_ref).await?;
    let existing = existing_member(store, source, user.id).await?;
    check_may_manage(store, caller, source, existing.as_ref(), Some(level)).await?;
    if existing.is_some() {
        return Err(ApiError::Conflict(format!(
            "{} is already a member of {}: change their role with PUT instead",
            user.username,
            source.full_path()
        )));
    }
    let member = store.set_member(source.source_type(), source.id(), user.id, level).await?;
    Ok((member, user))
}

pub async fn update_member(
    store: &Store,
    caller: &Caller,
    source: &Source,
    user_ref: &Ref,
    level: i64,
) -> Result<(meta::Member, User), ApiError> {
    check_access_level(level)?;
    let user = user(store, caller, user_ref).await?;
    let existing = existing_member(store, source, user.id)
        .await?
        .ok_or(ApiError::NotFound(MEMBER_NOT_FOUND))?;
    check_may_manage(store, caller, source, Some(&existing), Some(level)).await?;
    if existing.access_level == access_level::OWNER && level < access_level::OWNER {
        check_not_last_owner(store, source).await?;
    }
    let member = store.set_member(source.source_type(), source.id(), user.id, level).await?;
    Ok((member, user))
}

pub async fn remove_member(
    store: &Store,
    caller: &Caller,
    source: &Source,
    user_ref: &Ref,
) -> Result<User, ApiError> {
    let user = user(store, caller, user_ref).await?;
    let existing = existing_member(store, source, user.id)
        .await?
        .ok_or(ApiError::NotFound(MEMBER_NOT_FOUND))?;
    check_may_manage(store, caller, source, Some(&existing), None).await?;
    if existing.access_level == access_level::OWNER {
        check_not_last_owner(store, source).await?;
    }
    store.remove_member(source.source_type(), source.id(), user.id).await?;
    Ok(user)
}

/// A top-level group must keep an owner, or nobody but admins could manage it.
async fn check_not_last_owner(store: &Store, source: &Source) -> Result<(), ApiError> {
    if let Source::Group(g) = source {
        if g.parent_id.is_none() {
            let owners = store
                .list_members(SourceType::Group, g.id)
                .await?
                .iter()
                .filter(|m| m.access_level == access_level::OWNER)
                .count();
            if owners <= 1 {
                return Err(ApiError::ForbiddenBecause(format!(
                    "{} would have no owner left: make someone else owner first",
                    g.full_path
                )));
            }
        }
    }
    Ok(())
}

// ---- personal access tokens -----------------------------------------------------------------

pub struct NewPersonalAccessToken {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
}

fn parse_future_expiry(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    Ok(::service::tokens::parse_future_expiry(text)?)
}

/// Creates a token for `user_ref` (admins, or the user themself); returns it with its secret,
/// which is never available again.
pub async fn create_personal_access_token(
    store: &Store,
    caller: &Caller,
    user_ref: &Ref,
    new: NewPersonalAccessToken,
    ctx: &::service::RequestContext,
) -> Result<(meta::PersonalAccessToken, String), ApiError> {
    let owner = user(store, caller, user_ref).await?;
    if !caller.is_admin() && caller.user().map(|u| u.id) != Some(owner.id) {
        return Err(ApiError::ForbiddenBecause(
            "only admins can create tokens for other users".into(),
        ));
    }
    let new = ::service::tokens::NewToken {
        name: new.name,
        scopes: new.scopes,
        expires_at: new.expires_at,
    };
    Ok(::service::tokens::create_personal_access_token(store, owner.id, new, ctx).await?)
}

/// The caller's own tokens, or (admins only) another user's.
pub async fn list_personal_access_tokens(
    store: &Store,
    caller: &Caller,
    user_ref: Option<&Ref>,
) -> Result<Vec<meta::PersonalAccessToken>, ApiError> {
    caller.require_signed_in()?;
    let owner = match (user_ref, caller.user()) {
        (Some(r), _) => {
            let owner = user(store, caller, r).await?;
            if !caller.is_admin() && caller.user().map(|u| u.id) != Some(owner.id) {
                return Err(ApiError::Forbidden);
            }
            owner.id
        }
        (None, Some(me)) => me.id,
        (None, None) => return Err(ApiError::bad_request("name the user whose tokens to list")),
    };
    Ok(store.list_personal_access_tokens(owner).await?)
}

/// A token the caller owns (or any, for admins).
pub async fn personal_access_token(
    store: &Store,
    caller: &Caller,
    id: i64,
) -> Result<meta::PersonalAccessToken, ApiError> {
    caller.require_signed_in()?;
    let user_id = caller.user().map(|u| u.id);
    match ::service::tokens::managed_personal_access_token(store, caller.is_admin(), user_id, id)
        .await
    {
        Ok(token) => Ok(token),
        Err(::service::settings::SettingsError::NotFound) => {
            Err(ApiError::NotFound(TOKEN_NOT_FOUND))
        }
        Err(e) => Err(e.into()),
    }
}

/// Revokes token `id` (the caller's own, or any for admins), recorded for `ctx`; answers it.
pub async fn revoke_personal_access_token(
    store: &Store,
    caller: &Caller,
    id: i64,
    ctx: &::service::RequestContext,
) -> Result<meta::PersonalAccessToken, ApiError> {
    let token = personal_access_token(store, caller, id).await?;
    ::service::tokens::revoke_personal_access_token(store, &token, ctx).await?;
    Ok(token)
}

/// How long a rotated token lives when the request does not say: GitLab's default, a week.
pub const ROTATED_TOKEN_DAYS: i64 = 7;

/// Replaces an active token by a new one with the same name and scopes (the caller's own, or
/// any for admins); the old one stops working at once. Answers the new token and its secret.
pub async fn rotate_personal_access_token(
    store: &Store,
    caller: &Caller,
    id: i64,
    expires_at: Option<&str>,
) -> Result<(meta::PersonalAccessToken, String), ApiError> {
    let token = personal_access_token(store, caller, id).await?;
    if token.revoked || token.expires_at.is_some_and(|at| at <= meta::now_millis()) {
        return Err(ApiError::bad_request(
            "the token is revoked or expired: create a new one instead of rotating it",
        ));
    }
    let expires_at = match parse_future_expiry(expires_at)? {
        Some(at) => at,
        None => {
            let day = 86_400_000;
            (meta::now_millis() / day + ROTATED_TOKEN_DAYS + 1) * day - 1
        }
    };
    let secret = auth::secret::new_token(auth::secret::PAT_PREFIX);
    let hash = auth::secret::token_hash(&secret);
    let new = store.rotate_personal_access_token(&token, &hash, Some(expires_at)).await?;
    Ok((new, secret))
}

// ---- deploy tokens --------------------------------------------------------------------------

pub struct NewDeployToken {
    pub name: String,
    pub scopes: Vec<String>,
    pub username: Option<String>,
    pub expires_at: Option<String>,
}

pub async fn create_deploy_token(
    store: &Store,
    caller: &Caller,
    source: &Source,
    new: NewDeployToken,
    ctx: &::service::RequestContext,
) -> Result<(meta::DeployToken, String), ApiError> {
    caller.require_signed_in()?;
    let level = source.level(store, caller).await?;
    let token = ::service::tokens::NewToken {
        name: new.name,
        scopes: new.scopes,
        expires_at: new.expires_at,
    };
    let owner = source.token_owner();
    let username = new.username.as_deref();
    Ok(::service::tokens::create_deploy_token(store, level, &owner, token, username, ctx).await?)
}

pub async fn list_deploy_tokens(
    store: &Store,
    caller: &Caller,
    source: &Source,
) -> Result<Vec<meta::DeployToken>, ApiError> {
    caller.require_signed_in()?;
    require_level(
        source.level(store, caller).await?,
        access_level::MAINTAINER,
        "managing deploy tokens",
    )?;
    Ok(store.list_deploy_tokens(source.source_type(), source.id()).await?)
}

/// Every deploy token of the instance (admins only), optionally only the active ones.
pub async fn list_all_deploy_tokens(
    store: &Store,
    caller: &Caller,
    active: Option<bool>,
) -> Result<Vec<meta::DeployToken>, ApiError> {
    caller.require_admin()?;
    let now = meta::now_millis();
    let is_active = |t: &meta::DeployToken| !t.revoked && t.expires_at.is_none_or(|at| at > now);
    Ok(store
        .list_all_deploy_tokens()
        .await?
        .into_iter()
        .filter(|t| active.is_none_or(|a| a == is_active(t)))
        .collect())
}

pub async fn revoke_deploy_token(
    store: &Store,
    caller: &Caller,
    source: &Source,
    id: i64,
    ctx: &::service::RequestContext,
) -> Result<(), ApiError> {
    caller.require_signed_in()?;
    let level = source.level(store, caller).await?;
    match ::service::tokens::revoke_deploy_token(store, level, &source.token_owner(), id, ctx).await
    {
        Err(::service::settings::SettingsError::NotFound) => {
            Err(ApiError::NotFound(TOKEN_NOT_FOUND))
        }
        outcome => Ok(outcome?),
    }
}

// ---- CI job tokens and the allowlist --------------------------------------------------------

/// Mints a job token for `project` (developers and above); returns it with its secret.
pub async fn create_job_token(
    store: &Store,
    caller: &Caller,
    project: &Project,
    lifetime: Duration,
) -> Result<(JobToken, String), ApiError> {
    caller.require_signed_in()?;
    require_level(
        project_level(store, caller, project).await?,
        access_level::DEVELOPER,
        "minting a CI job token",
    )?;
    let secret = auth::secret::new_token(auth::secret::JOB_PREFIX);
    let hash = auth::secret::token_hash(&secret);
    let expires_at = meta::now_millis() + lifetime.as_millis() as i64;
    let token =
        store.create_job_token(project.id, caller.user().map(|u| u.id), &hash, expires_at).await?;
    Ok((token, secret))
}

async fn require_allowlist_manager(
    store: &Store,
    caller: &Caller,
    project: &Project,
) -> Result<(), ApiError> {
    caller.require_signed_in()?;
    require_level(
        project_level(store, caller, project).await?,
        access_level::MAINTAINER,
        "managing the job token allowlist",
    )
}

/// The projects whose job tokens may pull from `project`.
pub async fn job_token_allowlist(
    store: &Store,
    caller: &Caller,
    project: &Project,
) -> Result<Vec<Project>, ApiError> {
    require_allowlist_manager(store, caller, project).await?;
    let mut out = Vec::new();
    for id in store.job_token_allowlist(project.id).await? {
        if let Some(p) = store.project_by_id(id).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Lets job tokens of `source` (GitLab's `target_project_id`) pull from `project`.
pub async fn allow_job_token_project(
    store: &Store,
    caller: &Caller,
    project: &Project,
    source: &Ref,
) -> Result<Project, ApiError> {
    require_allowlist_manager(store, caller, project).await?;
    let source = self::project(store, caller, source).await?;
    store.allow_job_token_source(project.id, source.id).await?;
    Ok(source)
}

pub async fn disallow_job_token_project(
    store: &Store,
    caller: &Caller,
    project: &Project,
    source_id: i64,
) -> Result<(), ApiError> {
    require_allowlist_manager(store, caller, project).await?;
    if store.disallow_job_token_source(project.id, source_id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(PROJECT_NOT_FOUND))
    }
}
