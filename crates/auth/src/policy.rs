//! Who a caller is, and what they may do with a repository.
//!
//! An image name belongs to the project with the longest full path that prefixes it, and may
//! have at most [`MAX_EXTRA_SEGMENTS`] more components. The rules follow GitLab:
//!
//! | caller | pull | push | delete |
//! |---|---|---|---|
//! | anyone, incl. anonymous | public project, registry access `enabled` | – | – |
//! | any signed-in user | also internal projects, access `enabled` | – | – |
//! | member, reporter+ | yes (also access `private`) | developer+ | maintainer+ |
//! | instance admin | yes | yes | yes |
//! | deploy token | `read_registry` (its project or group) | `write_registry` | – |
//! | CI job token | own project; projects allowlisting it | own project | – |
//!
//! Deploy and job tokens also pull what anonymous callers may (public projects). A job token
//! minted by a user acts with that user's current rights, as in GitLab: it stops working when
//! the user is blocked, and pulls or pushes only what the user still may (push on its own
//! project needs the user to be a developer there; pulls elsewhere need the allowlist and the
//! user's read access).
//!
//! Registry access `disabled` refuses everything to everyone. A personal access token limits
//! its user further by scope: pull needs `read_registry`, push and delete need both
//! `read_registry` and `write_registry`; `api` implies both.

use crate::access::Action;
use crate::credentials::Credentials;
use meta::events::{AuditActor, TokenKind};
use meta::{
    access_level as level, DeployToken, JobToken, MetaError, PersonalAccessToken, Project,
    RegistryAccess, RegistryReader, SourceType, Store, User, Visibility,
};
use oci::RepositoryName;

/// How many components an image name may have below its project's path.
pub const MAX_EXTRA_SEGMENTS: usize = 3;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub enum Identity {
    Anonymous,
    /// A person, by password (`pat: None`) or personal access token (with its scopes).
    User {
        user: User,
        pat: Option<(i64, Vec<String>)>,
    },
    Deploy(DeployToken),
    Job {
        token: JobToken,
    },
}

impl Identity {
    /// The token subject: a username, a deploy token's username, or the CI user.
    pub fn subject(&self) -> String {
        match self {
            Identity::Anonymous => String::new(),
            Identity::User { user, .. } => user.username.clone(),
            Identity::Deploy(d) => d.username.clone(),
            Identity::Job { .. } => crate::CI_USERNAME.to_string(),
        }
    }

    /// A stable reference to the credential, carried in tokens (`cred` claim).
    pub fn credential_ref(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".into(),
            Identity::User { user, pat: None } => format!("user:{}", user.id),
            Identity::User { pat: Some((id, _)), .. } => format!("pat:{id}"),
            Identity::Deploy(d) => format!("deploy:{}", d.id),
            Identity::Job { token } => format!("job:{}", token.id),
        }
    }
}

impl Identity {
    /// Who this is, as the audit log and registry events name it.
    pub fn audit_actor(&self) -> AuditActor {
        let name = self.subject();
        match self {
            Identity::Anonymous => AuditActor::anonymous(),
            Identity::User { user, pat } => AuditActor {
                user_id: Some(user.id),
                name,
                token: Some(match pat {
                    Some((id, _)) => (TokenKind::PersonalAccessToken, Some(*id)),
                    None => (TokenKind::Password, None),
                }),
            },
            Identity::Deploy(d) => AuditActor {
                user_id: None,
                name,
                token: Some((TokenKind::DeployToken, Some(d.id))),
            },
            Identity::Job { token } => AuditActor {
                user_id: token.user_id,
                name,
                token: Some((TokenKind::JobToken, Some(token.id))),
            },
        }
    }
}

/// Who a verified token names, without loading the credential (reads): its `cred` claim and
/// subject.
pub fn actor_of_claims(cred: &str, subject: &str) -> AuditActor {
    let (kind, id) = match cred.split_once(':') {
        Some((kind, id)) => (kind, id.parse::<i64>().ok()),
        None => return AuditActor::anonymous(),
    };
    let (user_id, token) = match kind {
        "user" => (id, TokenKind::Password),
        "pat" => (None, TokenKind::PersonalAccessToken),
        "deploy" => (None, TokenKind::DeployToken),
        "job" => (None, TokenKind::JobToken),
        _ => return AuditActor::anonymous(),
    };
    let token_id = if kind == "user" { None } else { id };
    AuditActor { user_id, name: subject.to_string(), token: Some((token, token_id)) }
}

fn now_ms() -> i64 {
    meta::now_millis()
}

fn expired(expires_at: Option<i64>) -> bool {
    expires_at.is_some_and(|e| e <= now_ms())
}

/// Re-loads the identity a token's `cred` claim names, checking it is still valid (user not
/// blocked, token not revoked or expired). `None` when it no longer is.
pub async fn load_identity(store: &Store, cred: &str) -> Result<Option<Identity>, MetaError> {
    let (kind, id) = match cred.split_once(':') {
        Some((k, id)) => (k, id.parse::<i64>().unwrap_or(-1)),
        None if cred == "anonymous" => return Ok(Some(Identity::Anonymous)),
        None => return Ok(None),
    };
    Ok(match kind {
        "user" => store
            .user_by_id(id)
            .await?
            .filter(|u| !u.blocked)
            .map(|user| Identity::User { user, pat: None }),
        "pat" => active_personal_access_token(store, PatLookup::Id(id))
            .await?
            .map(|(pat, user)| Identity::User { user, pat: Some((pat.id, pat.scopes)) }),
        "deploy" => {
            store.deploy_token_by_id(id).await?.filter(deploy_token_active).map(Identity::Deploy)
        }
        "job" => store
            .job_token_by_id(id)
            .await?
            .filter(job_token_active)
            .map(|token| Identity::Job { token }),
        _ => None,
    })
}

/// How a personal access token is looked up.
#[derive(Clone, Copy)]
pub enum PatLookup<'a> {
    /// By the secret a client presented.
    Secret(&'a str),
    /// By id, from a registry token's `cred` claim.
    Id(i64),
}

/// The personal access token, with its user, if it may be used now: it exists, is neither
/// revoked nor expired, and its user exists and is not blocked. The one place that decides
/// whether a personal access token is valid — for logins, for registry tokens issued from one,
/// and for the REST API. What a valid token may do (its scopes) is each caller's question.
pub async fn active_personal_access_token(
    store: &Store,
    lookup: PatLookup<'_>,
) -> Result<Option<(PersonalAccessToken, User)>, MetaError> {
    let pat = match lookup {
        PatLookup::Id(id) => store.personal_access_token_by_id(id).await?,
        PatLookup::Secret(secret) => {
            let hash = crate::secret::token_hash(secret);
            store
                .personal_access_token_by_hash(&hash)
                .await?
                .filter(|(_, stored)| crate::secret::hashes_equal(stored, &hash))
                .map(|(pat, _)| pat)
        }
    };
    let Some(pat) = pat.filter(|p| !p.revoked && !expired(p.expires_at)) else {
        return Ok(None);
    };
    Ok(store.user_by_id(pat.user_id).await?.filter(|u| !u.blocked).map(|user| (pat, user)))
}

fn deploy_token_active(token: &DeployToken) -> bool {
    !token.revoked && !expired(token.expires_at)
}

fn job_token_active(token: &JobToken) -> bool {
    token.expires_at > now_ms()
}

/// The project an image name belongs to, if any (and if the name is not too deep below it).
/// Never a project for the images of a dependency proxy
/// (`<group>/dependency_proxy/containers/…`), even if a project `<group>/dependency_proxy`
/// exists: only the proxy writes there.
pub async fn project_for_image(store: &Store, name: &str) -> Result<Option<Project>, MetaError> {
    if name.parse::<RepositoryName>().is_ok_and(|n| n.dependency_proxy().is_some()) {
        return Ok(None);
    }
    let prefixes = meta::path_prefixes(name);
    let Some(project) = store.longest_project_match(&prefixes).await? else { return Ok(None) };
    let extra = name.split('/').count() - project.full_path.split('/').count();
    Ok((extra <= MAX_EXTRA_SEGMENTS).then_some(project))
}

fn has_scope(scopes: &[String], wanted: &str) -> bool {
    scopes.iter().any(|s| s == wanted || s == "api")
}

/// The actions on `project`'s images that `identity` may take.
pub async fn allowed_actions(
    store: &Store,
    identity: &Identity,
    project: &Project,
) -> Result<Vec<Action>, MetaError> {
    if project.registry_access == RegistryAccess::Disabled {
        return Ok(Vec::new());
    }
    let open = project.registry_access == RegistryAccess::Enabled;
    let mut actions = Vec::new();
    // What anonymous callers may do, every credential may do too.
    if open
        && project.visibility == Visibility::Public
        && !matches!(identity, Identity::User { .. })
    {
        actions.push(Action::Pull);
    }
    match identity {
        Identity::Anonymous => {}
        Identity::User { user, pat } => {
            if user.blocked {
                return Ok(Vec::new());
            }
            let role = user_role(store, user, project).await?;
            let visible_to_users =
                open && matches!(project.visibility, Visibility::Public | Visibility::Internal);
            if role >= level::REPORTER || visible_to_users {
                actions.push(Action::Pull);
            }
            if role >= level::DEVELOPER {
                actions.push(Action::Push);
            }
            if role >= level::MAINTAINER {
                actions.push(Action::Delete);
            }
            if let Some((_, scopes)) = pat {
                let read = has_scope(scopes, "read_registry");
                let write = read && has_scope(scopes, "write_registry");
                actions.retain(|a| match a {
                    Action::Pull => read,
                    Action::Push | Action::Delete => write,
                });
            }
        }
        Identity::Deploy(token) => {
            let covers = match token.source_type {
                SourceType::Project => token.source_id == project.id,
                SourceType::Group => match store.group_by_id(token.source_id).await? {
                    Some(group) => project.full_path.starts_with(&format!("{}/", group.full_path)),
                    None => false,
                },
            };
            if covers {
                if token.scopes.iter().any(|s| s == "read_registry")
                    && !actions.contains(&Action::Pull)
                {
                    actions.push(Action::Pull);
                }
                if token.scopes.iter().any(|s| s == "write_registry") {
                    actions.push(Action::Push);
                }
            }
        }
        Identity::Job { token } => {
            let minted_by = match token.user_id {
                Some(id) => match store.user_by_id(id).await? {
                    Some(user) if !user.blocked => Some(user),
                    // The user who started the job is gone or blocked: the token is worthless.
                    _ => return Ok(Vec::new()),
                },
                None => None,
            };
            // What the user behind the job may do on `project` (an operator-minted token has
            // no user and acts as a developer of its own project).
            let user_actions = match &minted_by {
                Some(user) => {
                    Box::pin(allowed_actions(
                        store,
                        &Identity::User { user: user.clone(), pat: None },
                        project,
                    ))
                    .await?
                }
                None => vec![Action::Pull, Action::Push],
            };
            if token.project_id == project.id {
                actions = [Action::Pull, Action::Push]
                    .into_iter()
                    .filter(|a| user_actions.contains(a))
                    .collect();
            } else if !actions.contains(&Action::Pull)
                && user_actions.contains(&Action::Pull)
                && store.job_token_allowed(project.id, token.project_id).await?
            {
                actions.push(Action::Pull);
            }
        }
    }
    Ok(actions)
}

/// Who `identity` is for the set-based listings: [`meta::RegistryReader`], whose SQL
/// predicate is the set form of the pull rule of [`allowed_actions`] (kept equal by the
/// property test `tests/visibility.rs`). Change one, change both.
pub fn registry_reader(identity: &Identity) -> RegistryReader {
    match identity {
        Identity::Anonymous => RegistryReader::Anonymous,
        Identity::User { user, pat } => RegistryReader::User {
            user_id: user.id,
            is_admin: user.is_admin,
            blocked: user.blocked,
            read_scope: pat.as_ref().is_none_or(|(_, scopes)| has_scope(scopes, "read_registry")),
        },
        Identity::Deploy(token) => RegistryReader::Deploy {
            source_type: token.source_type,
            source_id: token.source_id,
            read_scope: token.scopes.iter().any(|s| s == "read_registry"),
        },
        Identity::Job { token } => {
            RegistryReader::Job { project_id: token.project_id, user_id: token.user_id }
        }
    }
}

async fn user_role(store: &Store, user: &User, project: &Project) -> Result<i64, MetaError> {
    if user.is_admin {
        Ok(level::ADMIN)
    } else {
        store.effective_access_level(user.id, project).await
    }
}

/// The access level `identity` has on `project` for rules such as tag protection: a user's
/// role (instance admins above owners); a CI job token's user's role (an operator-minted job
/// token counts as a developer); deploy tokens and anonymous callers have none.
pub async fn role_on_project(
    store: &Store,
    identity: &Identity,
    project: &Project,
) -> Result<i64, MetaError> {
    match identity {
        Identity::User { user, .. } if !user.blocked => user_role(store, user, project).await,
        Identity::Job { token } => match token.user_id {
            None => Ok(level::DEVELOPER),
            Some(id) => match store.user_by_id(id).await? {
                Some(user) if !user.blocked => user_role(store, &user, project).await,
                _ => Ok(level::NONE),
            },
        },
        Identity::User { .. } | Identity::Deploy(_) | Identity::Anonymous => Ok(level::NONE),
    }
}

/// The actions on image `name` that `identity` may take (none if no project holds it). The
/// images of a group's dependency proxy follow [`dependency_proxy_actions`].
pub async fn allowed_on_image(
    store: &Store,
    identity: &Identity,
    name: &RepositoryName,
) -> Result<Vec<Action>, MetaError> {
    if let Some(image) = name.dependency_proxy() {
        return dependency_proxy_actions(store, identity, image.group).await;
    }
    match project_for_image(store, name.as_str()).await? {
        Some(project) => allowed_actions(store, identity, &project).await,
        None => Ok(Vec::new()),
    }
}

/// The actions `identity` may take on the images of top-level group `group_path`'s dependency
/// proxy: pull or nothing (its content is written by the proxy alone). As GitLab: the guest
/// role on the group (or instance admin), a deploy token of the group with `read_registry`, or
/// a CI job token whose user is a guest of the group (an operator-minted one: whose project is
/// in the group); anonymous callers, and every credential, only if the group is public. A
/// missing group, a subgroup or a disabled proxy allows nothing, so a private group's proxy
/// answers exactly like a missing one.
pub async fn dependency_proxy_actions(
    store: &Store,
    identity: &Identity,
    group_path: &str,
) -> Result<Vec<Action>, MetaError> {
    let Some(group) = store.group_by_full_path(group_path).await? else { return Ok(Vec::new()) };
    if group.parent_id.is_some() || !store.dependency_proxy_enabled(group.id).await? {
        return Ok(Vec::new());
    }
    let group = &group;
    let guest_of_group = |user: User| async move {
        Ok::<bool, MetaError>(
            !user.blocked
                && (user.is_admin
                    || store.effective_group_access_level(user.id, group).await? >= level::GUEST),
        )
    };
    let allowed = match identity {
        _ if group.visibility == Visibility::Public => match identity {
            Identity::User { pat: Some((_, scopes)), user } => {
                !user.blocked && has_scope(scopes, "read_registry")
            }
            Identity::User { user, .. } => !user.blocked,
            _ => true,
        },
        Identity::Anonymous => false,
        Identity::User { user, pat } => {
            let scoped = pat.as_ref().is_none_or(|(_, scopes)| has_scope(scopes, "read_registry"));
            scoped && guest_of_group(user.clone()).await?
        }
        Identity::Deploy(token) => {
            token.source_type == SourceType::Group
                && token.source_id == group.id
                && token.scopes.iter().any(|s| s == "read_registry")
        }
        Identity::Job { token } => match token.user_id {
            Some(id) => match store.user_by_id(id).await? {
                Some(user) => guest_of_group(user).await?,
                None => false,
            },
            None => match store.project_by_id(token.project_id).await? {
                Some(project) => project.full_path.starts_with(&format!("{}/", group.full_path)),
                None => false,
            },
        },
    };
    Ok(if allowed { vec![Action::Pull] } else { Vec::new() })
}

/// Why credentials could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too many passwords are being checked right now: try again in a moment.
    #[error(transparent)]
    Busy(#[from] crate::secret::Busy),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What the secret must still be checked against once the username is known.
enum Check {
    /// The secret was a valid token: no password hash to verify.
    Token(Identity),
    /// A user's password (argon2).
    Password(User, String),
    /// Nothing the secret could match.
    Nothing,
}

/// Checks a username/secret pair: a CI job token (username `stowage-ci-token` or
/// `gitlab-ci-token`), a deploy token (its username), a personal access token (its owner's
/// username) or a password. `None` for anything invalid — one answer, so a caller cannot tell
/// which part was wrong.
///
/// Every failure costs one argon2 verification — against the user's password hash, or against
/// [`crate::secret::DUMMY_HASH`] when there is none to check (unknown or blocked user, a token
/// username with a wrong secret) — so the time a refusal takes does not tell blocked users,
/// token usernames and real accounts apart. A valid token is accepted without argon2: tokens
/// are long and random, a SHA-256 lookup is enough.
pub async fn authenticate(
    store: &Store,
    credentials: &Credentials,
) -> Result<Option<Identity>, AuthError> {
    let secret = credentials.secret();
    match check_for(store, credentials.username(), secret).await? {
        Check::Token(identity) => Ok(Some(identity)),
        Check::Password(user, hash) => Ok(crate::secret::verify_password(secret, &hash)
            .await?
            .then_some(Identity::User { user, pat: None })),
        Check::Nothing => {
            crate::secret::verify_password(secret, crate::secret::DUMMY_HASH).await?;
            Ok(None)
        }
    }
}

async fn check_for(store: &Store, username: &str, secret: &str) -> Result<Check, MetaError> {
    use crate::secret::{hashes_equal, token_hash};
    if crate::is_ci_username(username) {
        return Ok(match store.job_token_by_hash(&token_hash(secret)).await? {
            Some(token) if job_token_active(&token) => Check::Token(Identity::Job { token }),
            _ => Check::Nothing,
        });
    }
    if let Some(deploy) = store.deploy_token_by_username(username).await? {
        let ok =
            hashes_equal(&deploy.token_hash, &token_hash(secret)) && deploy_token_active(&deploy);
        return Ok(if ok { Check::Token(Identity::Deploy(deploy)) } else { Check::Nothing });
    }
    let Some(user) = store.user_by_username(username).await? else { return Ok(Check::Nothing) };
    // Any secret may be a personal access token (seeded admin tokens carry no prefix); the
    // lookup is by hash, so trying it first costs one indexed query.
    if let Some((pat, owner)) =
        active_personal_access_token(store, PatLookup::Secret(secret)).await?
    {
        if owner.id == user.id {
            store.touch_personal_access_token(pat.id).await?;
            return Ok(Check::Token(Identity::User {
                user: owner,
                pat: Some((pat.id, pat.scopes)),
            }));
        }
    }
    Ok(match user.password_hash.clone() {
        Some(hash) if !user.blocked => Check::Password(user, hash),
        _ => Check::Nothing,
    })
}

/// The user whose rights a credential carries: the user, or the user who started a CI job.
/// Deploy tokens, operator-minted job tokens and anonymous callers have none.
async fn acting_user(store: &Store, identity: &Identity) -> Result<Option<User>, MetaError> {
    Ok(match identity {
        Identity::User { user, .. } => Some(user.clone()),
        Identity::Job { token } => match token.user_id {
            Some(id) => store.user_by_id(id).await?,
            None => None,
        },
        Identity::Deploy(_) | Identity::Anonymous => None,
    }
    .filter(|u| !u.blocked))
}

/// Whether `identity` may know that a group or project with `visibility` exists, given the
/// acting user's membership level there (`level` is only asked for private ones).
async fn may_see<F>(
    identity: &Identity,
    user: Option<&User>,
    visibility: Visibility,
    level: F,
) -> Result<bool, MetaError>
where
    F: std::future::Future<Output = Result<i64, MetaError>>,
{
    Ok(match visibility {
        Visibility::Public => true,
        Visibility::Internal => user.is_some(),
        Visibility::Private => match (identity, user) {
            (_, Some(user)) if user.is_admin => true,
            (_, Some(_)) => level.await? >= level::GUEST,
            _ => false,
        },
    })
}

/// When a write (push, delete) to image `name` is refused because the caller has no project
/// there, the message that says so and names the fix; `None` when the refusal is about rights
/// on a project the caller can see (the generic denial explains roles), or for anonymous
/// callers (who must log in first).
///
/// Private projects and groups stay invisible: to a caller who may not see one, a name under
/// it gets exactly the answer a name with nothing there gets.
pub async fn missing_project_hint(
    store: &Store,
    cred: &str,
    name: &str,
) -> Result<Option<String>, MetaError> {
    // A dependency proxy's names are nobody's to push to: the generic denial explains them.
    if name.parse::<RepositoryName>().is_ok_and(|n| n.dependency_proxy().is_some()) {
        return Ok(None);
    }
    let Some(identity) = load_identity(store, cred).await? else { return Ok(None) };
    if matches!(identity, Identity::Anonymous) {
        return Ok(None);
    }
    let user = acting_user(store, &identity).await?;
    let missing = format!(
        "no project at {name} that you can push to: create it with \
         `stowage admin projects create {name}` or in the UI"
    );
    if let Some(project) = project_for_image(store, name).await? {
        let seen = match &user {
            Some(u) => {
                may_see(&identity, Some(u), project.visibility, async {
                    store.effective_access_level(u.id, &project).await
                })
                .await?
            }
            // A deploy or operator job token sees the projects it works on.
            None => !allowed_actions(store, &identity, &project).await?.is_empty(),
        };
        return Ok((!seen).then_some(missing));
    }
    if let Some(group) = store.group_by_full_path(name).await? {
        let seen = may_see(&identity, user.as_ref(), group.visibility, async {
            match &user {
                Some(u) => store.effective_group_access_level(u.id, &group).await,
                None => Ok(level::NONE),
            }
        })
        .await?;
        if seen {
            return Ok(Some(format!(
                "{name} is a group, not a project: images live in projects, e.g. \
                 {name}/<project>; create one with `stowage admin projects create \
                 {name}/<project>` or in the UI"
            )));
        }
    }
    Ok(Some(missing))
}

/// Whether `user` (or an anonymous visitor) may know that `project` exists: public projects
/// for everyone, internal ones for signed-in users, private ones for members (guest and
/// above, directly or through a group) and instance admins. Blocked users see what anonymous
/// visitors see. The web UI asks this before showing anything of a project, and answers
/// exactly as for a missing one when it is `false`.
pub async fn user_may_see_project(
    store: &Store,
    user: Option<&User>,
    project: &Project,
) -> Result<bool, MetaError> {
    let user = user.filter(|u| !u.blocked);
    may_see(&Identity::Anonymous, user, project.visibility, async {
        match user {
            Some(u) => store.effective_access_level(u.id, project).await,
            None => Ok(level::NONE),
        }
    })
    .await
}

/// [`user_may_see_project`] for a group.
pub async fn user_may_see_group(
    store: &Store,
    user: Option<&User>,
    group: &meta::Group,
) -> Result<bool, MetaError> {
    let user = user.filter(|u| !u.blocked);
    may_see(&Identity::Anonymous, user, group.visibility, async {
        match user {
            Some(u) => store.effective_group_access_level(u.id, group).await,
            None => Ok(level::NONE),
        }
    })
    .await
}
