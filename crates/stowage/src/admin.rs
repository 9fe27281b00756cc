//! `stowage admin`: the operator's command line for users, groups, projects, members and
//! tokens, plus `ci-env` and the Kubernetes pull-secret helper. It acts as the operator (an
//! admin that is no user) through the same service functions as the REST API, so the rules
//! and validations are the API's; output is the API's JSON.

use std::time::Duration;

use anyhow::Context;
use api::input::Ref;
use api::service as svc;
use api::views::*;
use api::Caller;
use clap::{Args, Subcommand};
use meta::Store;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create, list, block and unblock users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create and list groups (`acme`, `acme/platform`).
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Create, list and change projects (`acme/platform/api`).
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Add, remove and list members of a group or project.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Personal access tokens, deploy tokens and CI job tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user (an instance admin with --admin).
    Create {
        /// The new user's username.
        #[arg(required_unless_present = "username_flag")]
        username: Option<String>,
        /// Same as the positional USERNAME (kept for scripts written before it).
        #[arg(long = "username", hide = true, conflicts_with = "username")]
        username_flag: Option<String>,
        #[arg(long)]
        email: String,
        /// Display name (default: the username).
        #[arg(long)]
        name: Option<String>,
        /// At least 8 characters; without it the user can only sign in with tokens.
        #[arg(long, env = "STOWAGE_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Make the user an instance admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users as JSON.
    List,
    /// Set a user's password, read from stdin (one line): `stowage admin users set-password root`.
    SetPassword { username: String },
    /// Block a user: no sign-in, no tokens, no registry access until unblocked.
    Block { username: String },
    /// Unblock a blocked user.
    Unblock { username: String },
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// Create a group; a path with `/` creates a subgroup of an existing group.
    Create {
        full_path: String,
        #[arg(long)]
        name: Option<String>,
        /// private, internal or public.
        #[arg(long, default_value = "private")]
        visibility: String,
    },
    /// List groups as JSON.
    List,
    /// Change a group's settings: `--storage-limit 20GiB` (0: no limit) on a top-level group.
    Update {
        group: String,
        /// Container registry storage limit: 20GiB, 500MB, bytes; 0 for no limit.
        #[arg(long, value_parser = parse_byte_size_arg)]
        storage_limit: Option<u64>,
    },
}

fn parse_byte_size_arg(text: &str) -> Result<u64, String> {
    crate::config::parse_byte_size(text).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Create a project inside an existing group: `acme/platform/api`.
    Create {
        full_path: String,
        #[arg(long)]
        name: Option<String>,
        /// private, internal or public.
        #[arg(long, default_value = "private")]
        visibility: String,
        /// enabled, private or disabled.
        #[arg(long)]
        registry_access_level: Option<String>,
    },
    /// List projects as JSON.
    List,
    /// Change a project's visibility or container registry access level.
    Update {
        project: String,
        /// private, internal or public.
        #[arg(long)]
        visibility: Option<String>,
        /// enabled, private or disabled.
        #[arg(long)]
        registry_access_level: Option<String>,
    },
    /// List exactly the tags the project's cleanup policy would delete (deletes nothing).
    CleanupDryRun {
        project: String,
        /// Preview a run on this day (YYYY-MM-DD, 00:00 UTC) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MembersCommand {
    /// Add a user to a group or project (or change their role).
    Add {
        /// Full path of the group or project.
        path: String,
        username: String,
        /// guest, reporter, developer, maintainer, owner, or 10..50.
        role: String,
    },
    /// Remove a user's direct membership of a group or project.
    Remove {
        /// Full path of the group or project.
        path: String,
        username: String,
    },
    /// List the direct members of a group or project.
    List {
        /// Full path of the group or project.
        path: String,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// A user's personal access tokens: create, list, revoke.
    #[command(subcommand)]
    Personal(PersonalTokensCommand),
    /// Deploy tokens of a group or project: create, list, revoke.
    #[command(subcommand)]
    Deploy(DeployTokensCommand),
    /// Short-lived CI job tokens.
    #[command(subcommand)]
    Job(JobTokensCommand),
}

#[derive(Args)]
pub struct Expiry {
    /// Last day is the day before this date (YYYY-MM-DD); default: never expires.
    #[arg(long)]
    expires_at: Option<String>,
}

#[derive(Subcommand)]
pub enum PersonalTokensCommand {
    /// Create a token; it is printed once and never again.
    Create {
        /// The username whose token it is.
        #[arg(required_unless_present = "user_flag")]
        user: Option<String>,
        /// Same as the positional USER (kept for scripts written before it).
        #[arg(long = "user", hide = true, conflicts_with = "user")]
        user_flag: Option<String>,
        #[arg(long)]
        name: String,
        /// Comma-separated: api, read_registry, write_registry.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// List a user's personal access tokens (never their secrets).
    List {
        /// The username whose tokens to list.
        #[arg(required_unless_present = "user_flag")]
        user: Option<String>,
        /// Same as the positional USER (kept for scripts written before it).
        #[arg(long = "user", hide = true, conflicts_with = "user")]
        user_flag: Option<String>,
    },
    /// Revoke a personal access token by id.
    Revoke { id: i64 },
}

#[derive(Subcommand)]
pub enum DeployTokensCommand {
    /// Create a deploy token on a group or project; it is printed once and never again.
    Create {
        /// Full path of the group or project.
        path: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: read_registry, write_registry.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Default: stowage+deploy-token-<random>.
        #[arg(long)]
        username: Option<String>,
        #[command(flatten)]
        expiry: Expiry,
        /// Print a Kubernetes image pull Secret with this name instead of JSON.
        #[arg(long)]
        kubernetes_secret: Option<String>,
        /// Namespace of the Kubernetes Secret.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// List the deploy tokens of a group or project (never their secrets).
    List {
        /// Full path of the group or project.
        path: String,
    },
    /// Revoke a deploy token of a group or project by id.
    Revoke {
        /// Full path of the group or project.
        path: String,
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum JobTokensCommand {
    /// Mint a short-lived CI credential for a project (username `stowage-ci-token`).
    Create {
        project: String,
        /// How long it works: 90s, 30m, 1h…
        #[arg(long, default_value = "1h", value_parser = parse_lifetime)]
        lifetime: Duration,
    },
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text).map_err(|e| format!("{e:#}"))
}

/// The one subject a command acts on, given positionally or by its older flag spelling.
fn subject(positional: Option<String>, flag: Option<String>) -> String {
    // clap makes exactly one of them present (required_unless_present + conflicts_with).
    positional.or(flag).unwrap_or_default()
}

/// A new password from stdin: the first line, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    use std::io::BufRead;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("new password (then Enter):");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("no password on stdin: pipe it in, e.g. `printf '%s' \"$PW\" | stowage admin users set-password root`");
    }
    Ok(password.to_string())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", api::views::pretty(value));
    Ok(())
}

fn path_ref(path: &str) -> Ref {
    Ref::Path(path.trim_matches('/').to_string())
}

/// Splits `acme/platform/api` into (`acme/platform`, `api`).
fn split_parent(full_path: &str) -> (Option<&str>, &str) {
    match full_path.trim_matches('/').rsplit_once('/') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, full_path.trim_matches('/')),
    }
}

pub async fn run(
    cmd: AdminCommand,
    store: &Store,
    config_external_url: &str,
) -> anyhow::Result<()> {
    let op = &Caller::Operator;
    match cmd {
        AdminCommand::Users(cmd) => match cmd {
            UsersCommand::Create { username, username_flag, email, name, password, admin } => {
                let username = subject(username, username_flag);
                let name = name.unwrap_or_else(|| username.clone());
                let user = svc::create_user(
                    store,
                    op,
                    svc::NewUser { username, email, name, password, admin },
                )
                .await?;
                print_json(&UserView::new(&user, true))
            }
            UsersCommand::List => print_json(
                &svc::list_users(store, op, &Default::default())
                    .await?
                    .iter()
                    .map(|u| UserView::new(u, true))
                    .collect::<Vec<_>>(),
            ),
            UsersCommand::SetPassword { username } => {
                let changes = svc::UserChanges {
                    password: Some(password_from_stdin()?),
                    ..Default::default()
                };
                let user = svc::update_user(store, op, &path_ref(&username), changes).await?;
                eprintln!("password of {} changed", user.username);
                print_json(&UserView::new(&user, true))
            }
            UsersCommand::Block { username } => print_json(&UserView::new(
                &svc::set_user_blocked(store, op, &path_ref(&username), true).await?,
                true,
            )),
            UsersCommand::Unblock { username } => print_json(&UserView::new(
                &svc::set_user_blocked(store, op, &path_ref(&username), false).await?,
                true,
            )),
        },
        AdminCommand::Groups(cmd) => match cmd {
            GroupsCommand::Create { full_path, name, visibility } => {
                let (parent, path) = split_parent(&full_path);
                let new = svc::NewGroup {
                    name: name.unwrap_or_else(|| path.to_string()),
                    path: Some(path.to_string()),
                    parent: parent.map(path_ref),
                    visibility: Some(visibility),
                };
                print_json(&GroupView::from(&svc::create_group(store, op, new).await?))
            }
            GroupsCommand::List => print_json(
                &svc::list_groups(store, op, &Default::default())
                    .await?
                    .iter()
                    .map(GroupView::from)
                    .collect::<Vec<_>>(),
            ),
            GroupsCommand::Update { group, storage_limit } => {
                let Some(bytes) = storage_limit else {
                    anyhow::bail!(
                        "nothing to change: give --storage-limit (e.g. 20GiB, 0 for none)"
                    );
                };
                let group = api::storage::set_group_storage_limit(
                    store,
                    op,
                    &path_ref(&group),
                    bytes as i64,
                )
                .await?;
                print_json(&api::storage::group_view(store, &group, true).await?)
            }
        },
        AdminCommand::Projects(cmd) => match cmd {
            ProjectsCommand::Create { full_path, name, visibility, registry_access_level } => {
                let (Some(group), path) = split_parent(&full_path) else {
                    anyhow::bail!(
                        "{full_path} has no group: projects live in a group, e.g. acme/{full_path}"
                    );
                };
                let new = svc::NewProject {
                    name: Some(name.unwrap_or_else(|| path.to_string())),
                    path: Some(path.to_string()),
                    namespace: Some(path_ref(group)),
                    visibility: Some(visibility),
                    registry_access: registry_access_level,
                };
                let project = svc::create_project(store, op, new).await?;
                print_json(&ProjectView::new(&project, &svc::project_group(store, &project).await?))
            }
            ProjectsCommand::List => {
                let mut out = Vec::new();
                for p in svc::list_projects(store, op, &Default::default()).await? {
                    out.push(ProjectView::new(&p, &svc::project_group(store, &p).await?));
                }
                print_json(&out)
            }
            ProjectsCommand::Update { project, visibility, registry_access_level } => {
                let changes = svc::ProjectChanges {
                    visibility,
                    registry_access: registry_access_level,
                    registry_enabled: None,
                };
                let project = svc::update_project(store, op, &path_ref(&project), changes).await?;
                print_json(&ProjectView::new(&project, &svc::project_group(store, &project).await?))
            }
            ProjectsCommand::CleanupDryRun { project, at } => {
                let project = svc::project(store, op, &path_ref(&project)).await?;
                let now = match at {
                    Some(day) => api::time::parse_expiry_date(&day)?,
                    None => meta::now_millis(),
                };
                let doomed = api::cleanup::dry_run(store, &project, now).await?;
                print_json(&doomed)
            }
        },
        AdminCommand::Members(cmd) => match cmd {
            MembersCommand::Add { path, username, role } => {
                let level = svc::parse_access_level(&role).with_context(|| {
                    format!("{role:?} is not a role: use guest, reporter, developer, maintainer or owner")
                })?;
                let source = svc::source_by_path(store, op, &path).await?;
                let user = path_ref(&username);
                let (member, user) = match svc::add_member(store, op, &source, &user, level).await {
                    Err(api::ApiError::Conflict(_)) => {
                        svc::update_member(store, op, &source, &user, level).await?
                    }
                    other => other?,
                };
                print_json(&MemberView::new(&member, &user))
            }
            MembersCommand::Remove { path, username } => {
                let source = svc::source_by_path(store, op, &path).await?;
                svc::remove_member(store, op, &source, &path_ref(&username)).await?;
                println!("removed {username} from {}", source.full_path());
                Ok(())
            }
            MembersCommand::List { path } => {
                let source = svc::source_by_path(store, op, &path).await?;
                let members = svc::list_members(store, op, &source).await?;
                print_json(&members.iter().map(|(m, u)| MemberView::new(m, u)).collect::<Vec<_>>())
            }
        },
        AdminCommand::Tokens(TokensCommand::Personal(cmd)) => match cmd {
            PersonalTokensCommand::Create { user, user_flag, name, scopes, expiry } => {
                let user = subject(user, user_flag);
                let new =
                    svc::NewPersonalAccessToken { name, scopes, expires_at: expiry.expires_at };
                let (token, secret) =
                    svc::create_personal_access_token(store, op, &path_ref(&user), new, &cli_ctx())
                        .await?;
                print_json(&PersonalAccessTokenView::new(&token, Some(secret)))
            }
            PersonalTokensCommand::List { user, user_flag } => {
                let user = subject(user, user_flag);
                let tokens =
                    svc::list_personal_access_tokens(store, op, Some(&path_ref(&user))).await?;
                print_json(
                    &tokens
                        .iter()
                        .map(|t| PersonalAccessTokenView::new(t, None))
                        .collect::<Vec<_>>(),
                )
            }
            PersonalTokensCommand::Revoke { id } => {
                svc::revoke_personal_access_token(store, op, id, &cli_ctx()).await?;
                println!("revoked personal access token {id}");
                Ok(())
            }
        },
        AdminCommand::Tokens(TokensCommand::Deploy(cmd)) => match cmd {
            DeployTokensCommand::Create {
                path,
                name,
                scopes,
                username,
                expiry,
                kubernetes_secret,
                namespace,
            } => {
                let source = svc::source_by_path(store, op, &path).await?;
                let new =
                    svc::NewDeployToken { name, scopes, username, expires_at: expiry.expires_at };
                let (token, secret) =
                    svc::create_deploy_token(store, op, &source, new, &cli_ctx()).await?;
                match kubernetes_secret {
                    Some(secret_name) => {
                        let host = api::export::registry_host(config_external_url);
                        print!(
                            "{}",
                            self::kubernetes_secret(
                                &secret_name,
                                &namespace,
                                &host,
                                &token.username,
                                &secret
                            )
                        );
                        Ok(())
                    }
                    None => print_json(&DeployTokenView::new(&token, Some(secret))),
                }
            }
            DeployTokensCommand::List { path } => {
                let source = svc::source_by_path(store, op, &path).await?;
                let tokens = svc::list_deploy_tokens(store, op, &source).await?;
                print_json(
                    &tokens.iter().map(|t| DeployTokenView::new(t, None)).collect::<Vec<_>>(),
                )
            }
            DeployTokensCommand::Revoke { path, id } => {
                let source = svc::source_by_path(store, op, &path).await?;
                svc::revoke_deploy_token(store, op, &source, id, &cli_ctx()).await?;
                println!("revoked deploy token {id} of {}", source.full_path());
                Ok(())
            }
        },
        AdminCommand::Tokens(TokensCommand::Job(JobTokensCommand::Create {
            project,
            lifetime,
        })) => {
            let project = svc::project(store, op, &path_ref(&project)).await?;
            let (token, secret) = svc::create_job_token(store, op, &project, lifetime).await?;
            print_json(&JobTokenView {
                token: secret,
                username: CI_USERNAME,
                project_id: token.project_id,
                expires_at: api::time::iso8601(token.expires_at),
            })
        }
    }
}

/// `export CI_REGISTRY=…` lines (plus `CI_REGISTRY_IMAGE`, `CI_REGISTRY_USER`,
/// `CI_REGISTRY_PASSWORD`) for a fresh job token on `project_path`; for
/// `eval "$(stowage ci-env --project acme/platform/api)"`.
pub async fn ci_env(
    store: &Store,
    project_path: &str,
    registry_host: &str,
    lifetime: Duration,
) -> anyhow::Result<String> {
    Ok(api::export::ci_env(store, project_path, registry_host, lifetime).await?)
}

/// A `kubernetes.io/dockerconfigjson` Secret manifest for pulling from `registry_host`.
pub fn kubernetes_secret(
    name: &str,
    namespace: &str,
    registry_host: &str,
    username: &str,
    token: &str,
) -> String {
    api::export::kubernetes_secret(name, namespace, registry_host, username, token)
}

/// `host[:port]` from the configured external URL.
pub fn registry_host(external_url: &str) -> String {
    api::export::registry_host(external_url)
}

/// Who the audit log names for changes made with `stowage admin`.
fn cli_ctx() -> service::RequestContext {
    service::RequestContext::system("(stowage admin)")
}
