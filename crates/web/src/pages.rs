//! The pages. Each handler is a straight line: who is looking ([`session::viewer`]), parse the
//! query or form once, ask `auth::policy`, read through `meta`, write through the write
//! service, render.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use auth::access::Action;
use auth::web::{ClientAddr, LoginRefusal};
use meta::registry_queries::{RepositoryRecord, TagMarker, TagOrder, TagPageQuery};
use meta::{Project, ProjectScope, ProjectViewer, RepositoryOrder, UsageScope};

use crate::format::{human_size, relative_time, short_digest};
use crate::session::{self, Viewer, CSRF_FIELD};
use crate::{PageError, WebState};

type Page = Result<Response, PageError>;

/// Rows per page of every listing.
const PER_PAGE: i64 = 20;
/// The most rows a `?per_page=` may ask for.
const MAX_PER_PAGE: i64 = 100;
/// The most tags one delete form may name.
const MAX_TAGS_PER_DELETE: usize = 100;

/// Pages may load the UI's own stylesheet and script, nothing else; forms post only here.
const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A rendered page with the headers every page has: HTML, its content security policy, and
/// `no-store` (pages show what one signed-in viewer may see).
pub(crate) fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    let body = match rendered {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a page template failed to render");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered")
                .into_response();
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The parts of the layout every page shows.
pub struct Layout {
    pub title: String,
    pub username: Option<String>,
    pub csrf: String,
}

impl Layout {
    pub(crate) fn new(title: impl Into<String>, viewer: &Viewer) -> Layout {
        Layout {
            title: title.into(),
            username: viewer.username().map(str::to_string),
            csrf: viewer.csrf_token().to_string(),
        }
    }
}

// ---- input ----------------------------------------------------------------------------------

/// Query or form fields, decoded once.
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(text: &[u8]) -> Fields {
        Fields(url::form_urlencoded::parse(text).into_owned().collect())
    }

    fn query(raw: &Option<String>) -> Fields {
        Fields::parse(raw.as_deref().unwrap_or("").as_bytes())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A search text: trimmed, at most 100 characters.
    fn search(&self) -> String {
        self.get("search").unwrap_or("").trim().chars().take(100).collect()
    }

    /// `?page=` (1-based; anything unusable is page 1).
    fn page(&self) -> i64 {
        self.get("page").and_then(|p| p.parse::<i64>().ok()).filter(|p| *p >= 1).unwrap_or(1)
    }
}

/// `?search=…&sort=…&page=N` as a URL query, for links that keep the current view.
fn view_query(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            out.append_pair(k, v);
        }
    }
    let text = out.finish();
    if text.is_empty() {
        text
    } else {
        format!("?{text}")
    }
}

/// The host the browser reached the registry at, for `docker pull` commands.
fn request_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .unwrap_or("localhost")
        .to_string()
}

fn project_viewer(viewer: &Viewer) -> ProjectViewer {
    ProjectViewer {
        user_id: viewer.user.as_ref().map(|u| u.id),
        is_admin: viewer.user.as_ref().is_some_and(|u| u.is_admin),
    }
}

// ---- sign in and out ------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    login_csrf: String,
    username: String,
    error: Option<String>,
}

fn sign_in_page(
    state: &WebState,
    status: StatusCode,
    username: &str,
    error: Option<String>,
) -> Response {
    let token = session::random_token();
    let page = SignInPage {
        layout: Layout::new("Sign in", &Viewer::default()),
        login_csrf: token.clone(),
        username: username.to_string(),
        error,
    };
    let mut response = html(status, page.render());
    response.headers_mut().append(header::SET_COOKIE, session::login_csrf_cookie(state, &token));
    response
}

pub async fn sign_in_form(State(state): State<WebState>, headers: HeaderMap) -> Page {
    if session::viewer(&state, &headers).await?.user.is_some() {
        return Ok(redirect("/"));
    }
    Ok(sign_in_page(&state, StatusCode::OK, "", None))
}

pub async fn sign_in(
    State(state): State<WebState>,
    client: Option<Extension<ClientAddr>>,
    request: Request,
) -> Page {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
    let form = Fields::parse(&body);
    // Login CSRF: the form must repeat the random value of its SameSite=Strict cookie.
    let expected = session::cookie(&parts.headers, session::LOGIN_CSRF_COOKIE);
    match (expected, form.get(CSRF_FIELD)) {
        (Some(cookie), Some(sent)) if auth::secret::hashes_equal(cookie, sent) => {}
        _ => return Err(PageError::Csrf),
    }
    let username = form.get("username").unwrap_or("");
    let password = form.get("password").unwrap_or("");
    let origin = auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions);
    let checked = auth::web::check_login(
        &state.auth,
        &origin,
        auth::web::client_of(client),
        username,
        password,
        "/users/sign_in",
    )
    .await;
    let invalid = || {
        sign_in_page(
            &state,
            StatusCode::UNAUTHORIZED,
            username,
            Some("Invalid username or password.".into()),
        )
    };
    let user = match checked {
        // The web UI signs people in with their password, as GitLab does: tokens are for
        // clients and scripts.
        Ok(auth::Identity::User { user, pat: None }) => user,
        Ok(_) | Err(LoginRefusal::Invalid) => return Ok(invalid()),
        Err(LoginRefusal::Throttled(wait)) => {
            let mut response = sign_in_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                username,
                Some("Too many failed sign-in attempts: wait a few minutes and try again.".into()),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return Ok(response);
        }
        Err(LoginRefusal::Busy(message)) => {
            let mut response =
                sign_in_page(&state, StatusCode::TOO_MANY_REQUESTS, username, Some(message));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            return Ok(response);
        }
        Err(LoginRefusal::Database(e)) => return Err(PageError::Database(e)),
    };
    auth::web::note_actor(
        &parts.extensions,
        &auth::Identity::User { user: user.clone(), pat: None }.audit_actor(),
    );
    let cookie = session::start(&state, &user).await?;
    let mut response = redirect("/");
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

#[derive(Template)]
#[template(path = "sign_out.html")]
struct SignOutPage {
    layout: Layout,
}

pub async fn sign_out_form(State(state): State<WebState>, headers: HeaderMap) -> Page {
    let viewer = session::viewer(&state, &headers).await?;
    if viewer.user.is_none() {
        return Ok(redirect("/users/sign_in"));
    }
    Ok(html(StatusCode::OK, SignOutPage { layout: Layout::new("Sign out", &viewer) }.render()))
}

pub async fn sign_out(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Page {
    let viewer = session::viewer(&state, &headers).await?;
    if viewer.user.is_some() {
        viewer.check_csrf(Fields::parse(&body).get(CSRF_FIELD))?;
    }
    let cookie = session::end(&state, &viewer).await?;
    let mut response = redirect("/users/sign_in");
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

// ---- explore --------------------------------------------------------------------------------

struct ProjectRow {
    path: String,
    name: String,
    visibility: &'static str,
    size: String,
}

#[derive(Template)]
#[template(path = "explore.html")]
struct ExplorePage {
    layout: Layout,
    heading: String,
    search: String,
    all: bool,
    signed_in: bool,
    projects: Vec<ProjectRow>,
    prev: Option<String>,
    next: Option<String>,
}

async fn project_rows(
    state: &WebState,
    projects: &[Project],
) -> Result<Vec<ProjectRow>, PageError> {
    let mut rows = Vec::with_capacity(projects.len());
    for p in projects {
        rows.push(ProjectRow {
            path: p.full_path.clone(),
            name: p.name.clone(),
            visibility: p.visibility.as_str(),
            size: human_size(state.store().usage(UsageScope::Project(p.id)).await?),
        });
    }
    Ok(rows)
}

/// `GET /`: signed out, the public projects (explore); signed in, the viewer's projects, or
/// with `?scope=all` every project they may see.
pub async fn explore(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Page {
    let viewer = session::viewer(&state, &headers).await?;
    let q = Fields::query(&query);
    let search = q.search();
    let page = q.page();
    let all = viewer.user.is_none() || q.get("scope") == Some("all");
    let scope = if all { ProjectScope::Visible } else { ProjectScope::Member };
    let mut projects = state
        .store()
        .projects_for_viewer(
            project_viewer(&viewer),
            scope,
            "",
            &search,
            PER_PAGE + 1,
            (page - 1) * PER_PAGE,
        )
        .await?;
    let more = projects.len() as i64 > PER_PAGE;
    projects.truncate(PER_PAGE as usize);
    let scope_param = if all && viewer.user.is_some() { "all" } else { "" };
    let link = |n: i64| {
        let n = n.to_string();
        format!("/{}", view_query(&[("scope", scope_param), ("search", &search), ("page", &n)]))
    };
    let heading = match (&viewer.user, all) {
        (None, _) => "Explore projects",
        (Some(_), true) => "All projects you can see",
        (Some(_), false) => "Your projects",
    };
    let rendered = ExplorePage {
        layout: Layout::new(heading, &viewer),
        heading: heading.to_string(),
        signed_in: viewer.user.is_some(),
        all,
        projects: project_rows(&state, &projects).await?,
        prev: (page > 1).then(|| link(page - 1)),
        next: more.then(|| link(page + 1)),
        search,
    }
    .render();
    Ok(html(StatusCode::OK, rendered))
}

// ---- everything under a group or project path ----------------------------------------------

/// What a path below `/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// `/<group or project path>`.
    Overview(&'a str),
    /// `/<project>/container_registry`.
    Registry(&'a str),
    /// `/<project>/container_registry/<repository id>`.
    Repository(&'a str, i64),
    /// `/<project>/-/settings/packages_and_registries` ([`crate::settings`]).
    Settings(&'a str),
}

impl<'a> Target<'a> {
    fn parse(path: &'a str) -> Option<Target<'a>> {
        let path = path.strip_prefix('/')?.trim_end_matches('/');
        if path.is_empty() || path.contains("//") {
            return None;
        }
        // A path is ASCII letters, digits and `._-/` (what group, project and image names
        // allow); anything else names nothing.
        if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)) {
            return None;
        }
        if let Some(project) = path.strip_suffix(crate::settings::SETTINGS_SUFFIX) {
            return Some(Target::Settings(project)).filter(|_| !project.is_empty());
        }
        if let Some(project) = path.strip_suffix("/container_registry") {
            return Some(Target::Registry(project));
        }
        if let Some((project, id)) = path.rsplit_once("/container_registry/") {
            let id = id.parse::<i64>().ok().filter(|id| *id > 0)?;
            return Some(Target::Repository(project, id));
        }
        if path.split('/').any(|s| s == "-" || s == "container_registry") {
            return None;
        }
        Some(Target::Overview(path))
    }
}

/// Everything the explicit routes do not name: group and project pages.
pub async fn by_path(State(state): State<WebState>, request: Request) -> Page {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let target = Target::parse(&path).ok_or(PageError::NotFound)?;
    let viewer = session::viewer(&state, &parts.headers).await?;
    let q = Fields::query(&parts.uri.query().map(str::to_string));
    let reading = parts.method == Method::GET || parts.method == Method::HEAD;
    match target {
        Target::Overview(path) if reading => overview(&state, &viewer, path, &q).await,
        Target::Registry(path) if reading => {
            registry_page(&state, &viewer, &parts.headers, path, &q, Vec::new(), StatusCode::OK)
                .await
        }
        Target::Registry(path) if parts.method == Method::POST => {
            let form = read_form(body).await?;
            viewer.check_csrf(form.get(CSRF_FIELD))?;
            let (project, _) = readable_project(&state, &viewer, path).await?;
            delete_repositories(&state, &viewer, &parts, &project, &q, &form).await
        }
        Target::Repository(path, id) if reading => {
            let (project, repository) = readable_repository(&state, &viewer, path, id).await?;
            tag_page(&state, &viewer, &project, &repository, &q, Vec::new(), StatusCode::OK).await
        }
        Target::Repository(path, id) if parts.method == Method::POST => {
            let form = read_form(body).await?;
            viewer.check_csrf(form.get(CSRF_FIELD))?;
            let (project, repository) = readable_repository(&state, &viewer, path, id).await?;
            delete_tags(&state, &viewer, &parts, &project, &repository, &q, &form).await
        }
        Target::Settings(path) => {
            crate::settings::page(&state, &viewer, &parts, body, path, &q).await
        }
        _ => Err(PageError::NotFound),
    }
}

/// A posted form, at most 256 KiB.
async fn read_form(body: axum::body::Body) -> Result<Fields, PageError> {
    let body = axum::body::to_bytes(body, 256 * 1024)
        .await
        .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
    Ok(Fields::parse(&body))
}

/// The project at `path` if the viewer may know it exists; else the page of a missing one.
pub(crate) async fn visible_project(
    state: &WebState,
    viewer: &Viewer,
    path: &str,
) -> Result<Project, PageError> {
    let project = state.store().project_by_full_path(path).await?.ok_or(PageError::NotFound)?;
    if auth::policy::user_may_see_project(state.store(), viewer.user.as_ref(), &project).await? {
        Ok(project)
    } else {
        Err(PageError::NotFound)
    }
}

/// What the viewer may do with the project's images: the policy `/jwt/auth` and the REST API
/// apply.
async fn registry_actions(
    state: &WebState,
    viewer: &Viewer,
    project: &Project,
) -> Result<Vec<Action>, PageError> {
    Ok(auth::policy::allowed_actions(state.store(), &viewer.identity(), project).await?)
}

/// A project whose registry the viewer may read: 404 when they may not see it, 403 (saying
/// why, in the REST API's words) when they may see it but not its registry.
async fn readable_project(
    state: &WebState,
    viewer: &Viewer,
    path: &str,
) -> Result<(Project, Vec<Action>), PageError> {
    let project = visible_project(state, viewer, path).await?;
    let actions = registry_actions(state, viewer, &project).await?;
    if actions.contains(&Action::Pull) {
        Ok((project, actions))
    } else if project.registry_access == meta::RegistryAccess::Disabled {
        Err(PageError::Forbidden(format!(
            "the container registry of {} is disabled",
            project.full_path
        )))
    } else {
        Err(PageError::Forbidden(format!(
            "reading the container registry of {} needs the reporter role or higher",
            project.full_path
        )))
    }
}

/// Repository `id` of the project at `path`, if the viewer may read that project's registry.
async fn readable_repository(
    state: &WebState,
    viewer: &Viewer,
    path: &str,
    id: i64,
) -> Result<(Project, RepositoryRecord), PageError> {
    let (project, _) = readable_project(state, viewer, path).await?;
    match state.store().repository_by_id(id).await? {
        Some(repository) if belongs_to(&repository, &project) => Ok((project, repository)),
        _ => Err(PageError::NotFound),
    }
}

fn belongs_to(repository: &RepositoryRecord, project: &Project) -> bool {
    repository.name == project.full_path
        || repository
            .name
            .strip_prefix(&project.full_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

struct GroupRow {
    path: String,
    name: String,
    visibility: &'static str,
    size: String,
}

/// A top-level group's storage against its limit, as `GET /api/v4/groups/:id` reports it.
struct QuotaRow {
    usage: String,
    /// `None`: no limit.
    limit: Option<String>,
    percentage: Option<String>,
    /// The percentage for the meter (0 to 100).
    meter: Option<String>,
    /// Which of 70/85/95/100 % the usage is at, for the notice's colour.
    threshold: i64,
    /// The notice of that threshold, in the words the log and the API use.
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    path: String,
    name: String,
    visibility: &'static str,
    is_project: bool,
    size: String,
    subgroups: Vec<GroupRow>,
    projects: Vec<ProjectRow>,
    quota: Option<QuotaRow>,
}

/// `/<group or project path>`.
async fn overview(state: &WebState, viewer: &Viewer, path: &str, q: &Fields) -> Page {
    if let Some(project) = state.store().project_by_full_path(path).await? {
        let project = visible_project(state, viewer, &project.full_path).await?;
        let size = human_size(state.store().usage(UsageScope::Project(project.id)).await?);
        let page = OverviewPage {
            layout: Layout::new(&project.full_path, viewer),
            path: project.full_path.clone(),
            name: project.name.clone(),
            visibility: project.visibility.as_str(),
            is_project: true,
            size,
            subgroups: Vec::new(),
            projects: Vec::new(),
            quota: None,
        };
        return Ok(html(StatusCode::OK, page.render()));
    }
    let group = state.store().group_by_full_path(path).await?.ok_or(PageError::NotFound)?;
    if !auth::policy::user_may_see_group(state.store(), viewer.user.as_ref(), &group).await? {
        return Err(PageError::NotFound);
    }
    let projects = state
        .store()
        .projects_for_viewer(
            project_viewer(viewer),
            ProjectScope::Visible,
            &group.full_path,
            &q.search(),
            MAX_PER_PAGE,
            0,
        )
        .await?;
    let size = human_size(state.store().usage(UsageScope::Group(group.id)).await?);
    let mut subgroups = Vec::new();
    for g in state.store().list_groups().await? {
        if g.parent_id == Some(group.id)
            && auth::policy::user_may_see_group(state.store(), viewer.user.as_ref(), &g).await?
        {
            subgroups.push(GroupRow {
                size: human_size(state.store().usage(UsageScope::Group(g.id)).await?),
                path: g.full_path,
                name: g.name,
                visibility: g.visibility.as_str(),
            });
        }
    }
    let quota = state.store().group_quota(group.id).await?.map(|(status, notice)| QuotaRow {
        usage: human_size(status.usage_bytes),
        limit: status.limit_bytes.map(human_size),
        percentage: status.percentage().map(|p| format!("{p:.1} %")),
        meter: status.percentage().map(|p| format!("{:.1}", p.clamp(0.0, 100.0))),
        threshold: status.level().unwrap_or(0),
        notice: notice.map(|n| n.message()),
    });
    let page = OverviewPage {
        layout: Layout::new(&group.full_path, viewer),
        path: group.full_path.clone(),
        name: group.name.clone(),
        visibility: group.visibility.as_str(),
        is_project: false,
        size,
        subgroups,
        projects: project_rows(state, &projects).await?,
        quota,
    };
    Ok(html(StatusCode::OK, page.render()))
}

// ---- a project's registry -------------------------------------------------------------------

struct RepositoryRow {
    id: i64,
    name: String,
    path: String,
    tags_count: i64,
    size: String,
    published: String,
    published_exact: String,
    /// Why this viewer may not delete the repository (a repository protection rule), if so.
    delete_blocked: Option<String>,
}

#[derive(Template)]
#[template(path = "registry.html")]
struct RegistryPage {
    layout: Layout,
    project: String,
    host: String,
    search: String,
    sort: String,
    repositories: Vec<RepositoryRow>,
    prev: Option<String>,
    next: Option<String>,
    cleanup_notice: Option<String>,
    can_push: bool,
    can_delete: bool,
    notices: Vec<String>,
    errors: Vec<String>,
}

/// `/<project>/container_registry`: the image repositories with tag count, size and last
/// published time; `?search=`, `?sort=name|-name|published|-published`, `?page=`.
async fn registry_page(
    state: &WebState,
    viewer: &Viewer,
    headers: &HeaderMap,
    path: &str,
    q: &Fields,
    notices: Vec<String>,
    status: StatusCode,
) -> Page {
    let (notices, errors) = split_notices(notices);
    let (project, actions) = readable_project(state, viewer, path).await?;
    let can_delete = actions.contains(&Action::Delete);
    // The rules are read once for the page; each row asks the check the delete itself asks.
    let level = auth::policy::role_on_project(state.store(), &viewer.identity(), &project).await?;
    let repository_rules = state.store().repository_protection_rules(project.id).await?;
    let search = q.search();
    let (sort, order) = match q.get("sort").unwrap_or("name") {
        "name" | "" => ("name", RepositoryOrder::Name),
        "-name" => ("-name", RepositoryOrder::NameDesc),
        "published" => ("published", RepositoryOrder::Published),
        "-published" => ("-published", RepositoryOrder::PublishedDesc),
        other => {
            return Err(PageError::BadRequest(format!(
                "sort {} is not supported: use name, -name, published or -published",
                oci::preview(other)
            )))
        }
    };
    let page = q.page();
    let mut summaries = state
        .store()
        .repository_summaries(
            &project.full_path,
            &search,
            order,
            PER_PAGE + 1,
            (page - 1) * PER_PAGE,
        )
        .await?;
    let more = summaries.len() as i64 > PER_PAGE;
    summaries.truncate(PER_PAGE as usize);
    let now = meta::now_millis();
    let mut repositories = Vec::with_capacity(summaries.len());
    for s in summaries {
        let size = state.store().usage(UsageScope::Repository(s.repository.id)).await?;
        let name = s
            .repository
            .name
            .strip_prefix(&project.full_path)
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let protection = meta::RepositoryProtection {
            project: project.clone(),
            repository: s.repository.name.clone(),
            repository_rules: repository_rules
                .iter()
                .filter(|r| r.matches(&s.repository.name))
                .cloned()
                .collect(),
            tag_rules: Vec::new(),
        };
        repositories.push(RepositoryRow {
            delete_blocked: protection.check_repository_delete(level).err().map(|r| r.message),
            id: s.repository.id,
            name: if name.is_empty() { project.full_path.clone() } else { name },
            path: s.repository.name.clone(),
            tags_count: s.tags_count,
            size: human_size(size),
            published: s.last_published.map(|t| relative_time(t, now)).unwrap_or_default(),
            published_exact: s.last_published.map(meta::rfc3339).unwrap_or_default(),
        });
    }
    let link = |n: i64| {
        let n = n.to_string();
        let sort = if sort == "name" { "" } else { sort };
        format!(
            "/{}/container_registry{}",
            project.full_path,
            view_query(&[("search", &search), ("sort", sort), ("page", &n)])
        )
    };
    let cleanup_notice = match state.store().cleanup_policy(project.id).await? {
        Some(policy) if policy.enabled => Some(match policy.next_run_at {
            Some(at) => format!(
                "A cleanup policy removes tags of this project {}; next run {}.",
                policy.cadence,
                meta::rfc3339(at)
            ),
            None => format!("A cleanup policy removes tags of this project {}.", policy.cadence),
        }),
        _ => None,
    };
    let rendered = RegistryPage {
        layout: Layout::new(format!("Container registry · {}", project.full_path), viewer),
        project: project.full_path.clone(),
        host: request_host(headers),
        search: search.clone(),
        sort: sort.to_string(),
        repositories,
        prev: (page > 1).then(|| link(page - 1)),
        next: more.then(|| link(page + 1)),
        cleanup_notice,
        can_push: actions.contains(&Action::Push),
        can_delete,
        notices,
        errors,
    }
    .render();
    Ok(html(status, rendered))
}

struct DoomedRepository {
    id: i64,
    name: String,
}

#[derive(Template)]
#[template(path = "confirm_delete_repositories.html")]
struct ConfirmDeleteRepositoriesPage {
    layout: Layout,
    action: String,
    project: String,
    repositories: Vec<DoomedRepository>,
}

/// `POST /<project>/container_registry` with `repository=<id>` (repeated): first a
/// confirmation page naming the images that will go; with `confirm=yes`, the deletes queued
/// through the write service's repository delete, the call the REST API's
/// `DELETE /projects/:id/registry/repositories/:repository_id` makes, at the viewer's role: if
/// a repository protection rule refuses any of them, nothing is queued and the page answers
/// 403 naming the rule.
/// Refuses a delete form unless the viewer may delete from `project`'s registry (the same
/// access decision that shows or hides the delete controls).
async fn require_registry_delete(
    state: &WebState,
    viewer: &Viewer,
    project: &Project,
) -> Result<(), PageError> {
    if registry_actions(state, viewer, project).await?.contains(&Action::Delete) {
        return Ok(());
    }
    Err(PageError::Forbidden(format!(
        "deleting from the container registry of {} needs the maintainer role or higher",
        project.full_path
    )))
}

async fn delete_repositories(
    state: &WebState,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    project: &Project,
    q: &Fields,
    form: &Fields,
) -> Page {
    require_registry_delete(state, viewer, project).await?;
    let ids = form.all("repository");
    if ids.is_empty() {
        return Err(PageError::BadRequest("select at least one image to delete".into()));
    }
    if ids.len() > MAX_PER_PAGE as usize {
        return Err(PageError::BadRequest(format!(
            "at most {MAX_PER_PAGE} images can be deleted at once"
        )));
    }
    let mut repositories: Vec<RepositoryRecord> = Vec::with_capacity(ids.len());
    for text in ids {
        let id = text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            PageError::BadRequest(format!("{} is not an image id", oci::preview(text)))
        })?;
        if repositories.iter().any(|r| r.id == id) {
            continue;
        }
        // Another project's image is as unknown here as a missing one.
        match state.store().repository_by_id(id).await? {
            Some(repository) if belongs_to(&repository, project) => repositories.push(repository),
            _ => {
                return Err(PageError::BadRequest(format!(
                    "image {id} is not in {}: reload the page and select again",
                    project.full_path
                )))
            }
        }
    }
    let action = format!(
        "{}{}",
        parts.uri.path(),
        parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    if form.get("confirm") != Some("yes") {
        let page = ConfirmDeleteRepositoriesPage {
            layout: Layout::new("Delete images?", viewer),
            action,
            project: project.full_path.clone(),
            repositories: repositories
                .iter()
                .map(|r| DoomedRepository { id: r.id, name: r.name.clone() })
                .collect(),
        };
        return Ok(html(StatusCode::OK, page.render()));
    }
    let identity = viewer.identity();
    let actor = identity.audit_actor();
    auth::web::note_actor(&parts.extensions, &actor);
    let ctx = service::RequestContext {
        actor,
        origin: auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions),
    };
    let level = auth::policy::role_on_project(state.store(), &identity, project).await?;
    let path = project.full_path.as_str();
    let notices = match state
        .writes
        .request_repository_deletes(&state.jobs, &repositories, level, &ctx)
        .await
    {
        Ok(_) => {
            let names: Vec<&str> = repositories.iter().map(|r| r.name.as_str()).collect();
            vec![format!(
                "Deleting {}: {}. They leave this list as soon as the background delete has run.",
                plural(repositories.len(), "image", "images"),
                names.join(", ")
            )]
        }
        Err(service::ServiceError::Refused(refusal)) => {
            let notices = vec![format!(
                "!Nothing was deleted: {}. Leave protected images out and try again.",
                refusal.message
            )];
            return registry_page(
                state,
                viewer,
                &parts.headers,
                path,
                q,
                notices,
                StatusCode::FORBIDDEN,
            )
            .await;
        }
        Err(service::ServiceError::Meta(e)) => return Err(PageError::Database(e)),
        Err(e) => {
            tracing::error!(error = %e, "queueing image deletes from the web UI failed");
            vec!["!The images could not be deleted; try again.".to_string()]
        }
    };
    registry_page(state, viewer, &parts.headers, path, q, notices, StatusCode::OK).await
}

// ---- tag details ----------------------------------------------------------------------------

#[derive(Clone)]
struct PlatformRow {
    platform: String,
    digest: String,
    size: String,
}

#[derive(Clone)]
struct ArtifactRow {
    artifact_type: String,
    digest: String,
    size: String,
}

struct TagRow {
    name: String,
    published: String,
    published_exact: String,
    size: String,
    digest: String,
    digest_short: String,
    config_digest: String,
    config_digest_short: String,
    media_type: String,
    platforms: Vec<PlatformRow>,
    artifacts: Vec<ArtifactRow>,
    immutable: bool,
    protected: bool,
    /// Why this viewer may not delete the tag, if they may not.
    delete_blocked: Option<String>,
}

#[derive(Template)]
#[template(path = "tags.html")]
struct TagsPage {
    layout: Layout,
    project: String,
    repository: String,
    search: String,
    sort: String,
    tags: Vec<TagRow>,
    prev: Option<String>,
    next: Option<String>,
    can_delete: bool,
    notices: Vec<String>,
    errors: Vec<String>,
}

/// The parsed `?sort=`, `?before=`, `?after=` of a tag listing.
fn tag_order(q: &Fields) -> Result<(&'static str, TagOrder), PageError> {
    Ok(match q.get("sort").unwrap_or("name") {
        "name" | "" => ("name", TagOrder::Name),
        "-name" => ("-name", TagOrder::NameDesc),
        "published" => ("published", TagOrder::Published),
        "-published" => ("-published", TagOrder::PublishedDesc),
        other => {
            return Err(PageError::BadRequest(format!(
                "sort {} is not supported: use name, -name, published or -published",
                oci::preview(other)
            )))
        }
    })
}

/// A keyset marker as it appears in `?before=`/`?after=`: the tag name, preceded by its
/// published time in milliseconds and a `.` when the listing is by published time.
fn parse_marker(text: &str, order: TagOrder) -> Result<TagMarker, PageError> {
    let bad = || {
        PageError::BadRequest(format!(
            "{} is not a position in this listing: follow the page's Previous and Next links",
            oci::preview(text)
        ))
    };
    let (published_at, name) = match order {
        TagOrder::Published | TagOrder::PublishedDesc => {
            let (time, name) = text.split_once('.').ok_or_else(bad)?;
            (time.parse::<i64>().map_err(|_| bad())?, name)
        }
        TagOrder::Name | TagOrder::NameDesc => (0, text),
    };
    let name = name.parse::<oci::Tag>().map_err(|_| bad())?;
    Ok(TagMarker { published_at, name: name.as_str().to_string() })
}

fn marker_text(tag: &meta::registry_queries::TagDetail, order: TagOrder) -> String {
    match order {
        TagOrder::Published | TagOrder::PublishedDesc => format!("{}.{}", tag.updated_at, tag.name),
        TagOrder::Name | TagOrder::NameDesc => tag.name.clone(),
    }
}

/// The platforms an index lists (os/architecture/variant), read from its stored payload.
#[derive(serde::Deserialize)]
struct IndexPayload {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<EntryPlatform>,
}

#[derive(serde::Deserialize)]
struct EntryPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The platforms of every index among `tags`, by index digest, with each child's size: two
/// queries for the whole page (the indexes' payloads, then their children's sizes).
async fn platforms_of(
    state: &WebState,
    repository: &RepositoryRecord,
    tags: &[meta::registry_queries::TagDetail],
) -> Result<HashMap<String, Vec<PlatformRow>>, PageError> {
    let mut indexes: Vec<String> =
        tags.iter().filter(|t| is_index(&t.media_type)).map(|t| t.digest.clone()).collect();
    indexes.sort();
    indexes.dedup();
    let payloads = state.store().manifest_payloads(repository.id, &indexes).await?;
    let parsed: Vec<(String, IndexPayload)> = payloads
        .into_iter()
        .filter_map(|(digest, payload)| {
            serde_json::from_slice::<IndexPayload>(&payload).ok().map(|index| (digest, index))
        })
        .collect();
    let mut children: Vec<String> = parsed
        .iter()
        .flat_map(|(_, index)| index.manifests.iter().map(|m| m.digest.clone()))
        .collect();
    children.sort();
    children.dedup();
    let sizes: HashMap<String, i64> =
        state.store().manifest_sizes(repository.id, &children).await?.into_iter().collect();
    Ok(parsed
        .into_iter()
        .map(|(digest, index)| {
            let rows = index
                .manifests
                .into_iter()
                .map(|entry| {
                    let platform = match entry.platform {
                        Some(p) => {
                            let mut text = format!(
                                "{}/{}",
                                p.os.unwrap_or_else(|| "?".into()),
                                p.architecture.unwrap_or_else(|| "?".into())
                            );
                            if let Some(variant) = p.variant.filter(|v| !v.is_empty()) {
                                text.push('/');
                                text.push_str(&variant);
                            }
                            text
                        }
                        None => "unknown".to_string(),
                    };
                    PlatformRow {
                        platform,
                        size: sizes
                            .get(&entry.digest)
                            .map(|s| human_size(*s))
                            .unwrap_or_else(|| "not stored".to_string()),
                        digest: entry.digest,
                    }
                })
                .collect();
            (digest, rows)
        })
        .collect())
}

/// The attached artifacts of every manifest among `tags`, by subject digest: one query.
async fn artifacts_of(
    state: &WebState,
    repository: &RepositoryRecord,
    tags: &[meta::registry_queries::TagDetail],
) -> Result<HashMap<String, Vec<ArtifactRow>>, PageError> {
    let mut subjects: Vec<String> = tags.iter().map(|t| t.digest.clone()).collect();
    subjects.sort();
    subjects.dedup();
    let mut out: HashMap<String, Vec<ArtifactRow>> = HashMap::new();
    for (subject, r) in state.store().referrers_of_subjects(repository.id, &subjects).await? {
        out.entry(subject).or_default().push(ArtifactRow {
            artifact_type: r.artifact_type.unwrap_or_else(|| r.media_type.clone()),
            digest: r.digest,
            size: human_size(r.size),
        });
    }
    Ok(out)
}

/// `/<project>/container_registry/<id>`: one page of the image's tags (keyset: the page
/// costs the same at tag 1 and tag 100 000).
async fn tag_page(
    state: &WebState,
    viewer: &Viewer,
    project: &Project,
    repository: &RepositoryRecord,
    q: &Fields,
    notices: Vec<String>,
    status: StatusCode,
) -> Page {
    let (notices, errors) = split_notices(notices);
    let (sort, order) = tag_order(q)?;
    let search = q.search();
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| (1..=MAX_PER_PAGE).contains(p))
        .unwrap_or(PER_PAGE);
    let before =
        q.get("before").filter(|b| !b.is_empty()).map(|b| parse_marker(b, order)).transpose()?;
    let after =
        q.get("after").filter(|a| !a.is_empty()).map(|a| parse_marker(a, order)).transpose()?;
    let backwards = before.is_some();
    let query = TagPageQuery {
        order,
        after: if backwards { None } else { after.clone() },
        before,
        name_contains: (!search.is_empty()).then(|| search.clone()),
        name_exact: None,
        limit: per_page + 1,
    };
    let mut tags = state.store().tag_details_page(repository.id, &query).await?;
    let more = tags.len() as i64 > per_page;
    let (has_prev, has_next) = if backwards {
        if more {
            tags.remove(0);
        }
        (more, true)
    } else {
        tags.truncate(per_page as usize);
        (after.is_some(), more)
    };
    let actions = registry_actions(state, viewer, project).await?;
    let can_delete = actions.contains(&Action::Delete);
    let level = auth::policy::role_on_project(state.store(), &viewer.identity(), project).await?;
    let protection = state.store().protection_in_project(project.clone(), &repository.name).await?;
    let platforms = platforms_of(state, repository, &tags).await?;
    let artifacts = artifacts_of(state, repository, &tags).await?;
    let now = meta::now_millis();
    let mut rows = Vec::with_capacity(tags.len());
    for tag in &tags {
        let platforms = platforms.get(&tag.digest).cloned().unwrap_or_default();
        let artifacts = artifacts.get(&tag.digest).cloned().unwrap_or_default();
        let immutable = protection.is_immutable(&tag.name);
        let config = tag.config_digest.clone().unwrap_or_default();
        rows.push(TagRow {
            name: tag.name.clone(),
            published: relative_time(tag.updated_at, now),
            published_exact: meta::rfc3339(tag.updated_at),
            size: human_size(tag.total_size),
            digest_short: short_digest(&tag.digest),
            digest: tag.digest.clone(),
            config_digest_short: short_digest(&config),
            config_digest: config,
            media_type: tag.media_type.clone(),
            platforms,
            artifacts,
            immutable,
            protected: !immutable && protection.protects_from_cleanup(&tag.name),
            delete_blocked: if can_delete {
                protection.check_tag_delete(&tag.name, level).err().map(|r| r.message)
            } else {
                Some("deleting tags needs the maintainer role or higher".to_string())
            },
        });
    }
    let base = format!("/{}/container_registry/{}", project.full_path, repository.id);
    let sort_param = if sort == "name" { "" } else { sort };
    let link = |key: &str, marker: String| {
        format!(
            "{base}{}",
            view_query(&[("search", &search), ("sort", sort_param), (key, &marker)])
        )
    };
    let prev = match tags.first() {
        Some(first) if has_prev => Some(link("before", marker_text(first, order))),
        _ => None,
    };
    let next = match tags.last() {
        Some(last) if has_next => Some(link("after", marker_text(last, order))),
        _ => None,
    };
    let rendered = TagsPage {
        layout: Layout::new(format!("{} · tags", repository.name), viewer),
        project: project.full_path.clone(),
        repository: repository.name.clone(),
        search,
        sort: sort.to_string(),
        tags: rows,
        prev,
        next,
        can_delete,
        notices,
        errors,
    }
    .render();
    Ok(html(status, rendered))
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmDeletePage {
    layout: Layout,
    action: String,
    repository: String,
    tags: Vec<String>,
}

/// `POST /<project>/container_registry/<id>` with `tag=…` (repeated): first a confirmation
/// page naming what will go; with `confirm=yes`, the deletion — all the tags in one call of
/// the write service's multi-tag delete, which checks each as the REST API's tag delete does,
/// at the viewer's role: if a protection or immutable rule refuses any of them, nothing is
/// deleted and the page answers 403 naming the rule.
async fn delete_tags(
    state: &WebState,
    viewer: &Viewer,
    parts: &axum::http::request::Parts,
    project: &Project,
    repository: &RepositoryRecord,
    q: &Fields,
    form: &Fields,
) -> Page {
    require_registry_delete(state, viewer, project).await?;
    let names = form.all("tag");
    if names.is_empty() {
        return Err(PageError::BadRequest("select at least one tag to delete".into()));
    }
    if names.len() > MAX_TAGS_PER_DELETE {
        return Err(PageError::BadRequest(format!(
            "at most {MAX_TAGS_PER_DELETE} tags can be deleted at once"
        )));
    }
    let mut tags: Vec<oci::Tag> = Vec::with_capacity(names.len());
    for name in names {
        let tag = name.parse::<oci::Tag>().map_err(|_| {
            PageError::BadRequest(format!("{} is not a tag name", oci::preview(name)))
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let action = format!(
        "{}{}",
        parts.uri.path(),
        parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    if form.get("confirm") != Some("yes") {
        let page = ConfirmDeletePage {
            layout: Layout::new("Delete tags?", viewer),
            action,
            repository: repository.name.clone(),
            tags: tags.iter().map(|t| t.as_str().to_string()).collect(),
        };
        return Ok(html(StatusCode::OK, page.render()));
    }
    let identity = viewer.identity();
    let actor = identity.audit_actor();
    auth::web::note_actor(&parts.extensions, &actor);
    let ctx = service::RequestContext {
        actor,
        origin: auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions),
    };
    let level = auth::policy::role_on_project(state.store(), &identity, project).await?;
    let name: oci::RepositoryName = repository.name.parse().map_err(|_| PageError::NotFound)?;
    // All or nothing: one protected or immutable tag among them refuses the whole delete.
    let deleted = match state
        .writes
        .delete_tags(&name, &tags, service::Actor::Level(level), &ctx)
        .await
    {
        Ok(deleted) => deleted,
        Err(service::ServiceError::Refused(refusal)) => {
            let notices = vec![format!(
                "!Nothing was deleted: {}. Leave protected and immutable tags out and try again.",
                refusal.message
            )];
            return tag_page(state, viewer, project, repository, q, notices, StatusCode::FORBIDDEN)
                .await;
        }
        Err(service::ServiceError::Meta(e)) => return Err(PageError::Database(e)),
        Err(e) => {
            tracing::error!(error = %e, "deleting tags from the web UI failed");
            let notices = vec!["!The tags could not be deleted; try again.".to_string()];
            return tag_page(state, viewer, project, repository, q, notices, StatusCode::OK).await;
        }
    };
    let mut notices = Vec::new();
    if !deleted.is_empty() {
        let names: Vec<&str> = deleted.iter().map(oci::Tag::as_str).collect();
        notices.push(format!("Deleted {}: {}.", plural_tags(deleted.len()), names.join(", ")));
    }
    for tag in tags.iter().filter(|t| !deleted.contains(t)) {
        notices.push(format!("!Tag {} does not exist (any more).", tag.as_str()));
    }
    tag_page(state, viewer, project, repository, q, notices, StatusCode::OK).await
}

/// Notices for a page after a change: those starting with `!` are errors (shown as alerts).
fn split_notices(notices: Vec<String>) -> (Vec<String>, Vec<String>) {
    let (notices, errors): (Vec<String>, Vec<String>) =
        notices.into_iter().partition(|n| !n.starts_with('!'));
    (notices, errors.into_iter().map(|e| e[1..].to_string()).collect())
}

fn plural_tags(n: usize) -> String {
    plural(n, "tag", "tags")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("/acme/app"), Some(Target::Overview("acme/app")));
        assert_eq!(Target::parse("/acme/app/"), Some(Target::Overview("acme/app")));
        assert_eq!(
            Target::parse("/acme/app/container_registry"),
            Some(Target::Registry("acme/app"))
        );
        assert_eq!(
            Target::parse("/acme/app/container_registry/12"),
            Some(Target::Repository("acme/app", 12))
        );
        assert_eq!(Target::parse("/acme/app/container_registry/x"), None);
        assert_eq!(Target::parse("/acme/app/container_registry/-1"), None);
        assert_eq!(Target::parse("/acme/<b>"), None);
        assert_eq!(Target::parse("/acme//app"), None);
        assert_eq!(Target::parse("/acme/-/settings"), None);
        assert_eq!(
            Target::parse("/acme/app/-/settings/packages_and_registries"),
            Some(Target::Settings("acme/app"))
        );
        assert_eq!(Target::parse("/-/settings/packages_and_registries"), None);
        assert_eq!(Target::parse("/"), None);
    }

    #[test]
    fn markers() {
        let m = parse_marker("1700000000000.v1.2", TagOrder::Published).unwrap();
        assert_eq!(m, TagMarker { published_at: 1_700_000_000_000, name: "v1.2".into() });
        let m = parse_marker("v1.2", TagOrder::Name).unwrap();
        assert_eq!(m.name, "v1.2");
        assert!(parse_marker("v1", TagOrder::Published).is_err());
        assert!(parse_marker("<b>", TagOrder::Name).is_err());
    }
}
