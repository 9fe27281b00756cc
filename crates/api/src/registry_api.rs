//! Registry management under `/api/v4`, in GitLab's shapes: a project's (or group's) container
//! repositories, their tags with page-numbered and keyset listings, tag details, deduplicated
//! sizes, single and bulk tag deletion and background repository deletion; plus the OpenAPI
//! document of the whole `/api/v4` surface, built from [`ROUTES`].
//!
//! Reading needs pull on the project (reporter and above for private projects; public ones are
//! readable by anyone), deleting needs maintainer and above — both decided by
//! `auth::policy::allowed_actions`, the same rule the `/v2` token service applies. A private
//! project answers 404 to outsiders, exactly like one that does not exist.
//!
//! Every tag deletion — single or bulk — goes through [`delete_tag`], the one place where
//! rules that may refuse a deletion (protected and immutable tags) are enforced.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Json;
use meta::registry_queries::{RepositoryRecord, TagDetail, TagMarker, TagOrder, TagPageQuery};
use meta::{Project, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::background::{BulkTagDelete, JobCaller, BULK_TAG_DELETE};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::events_api::Audit;
use crate::input::{
    flag, int, numeric_id, request_host, tag_param, ListFilters, Listing, NoFilters, Page, Params,
    Path, Ref, Sort,
};
use crate::routing::Routes;
use crate::service as svc;
use crate::time::iso8601;
use crate::ApiState;

pub const REPOSITORY_NOT_FOUND: &str = "404 Repository Not Found";
pub const TAG_NOT_FOUND: &str = "404 Tag Not Found";

/// The registry management routes, merged into the `/api/v4` router.
pub fn routes() -> Routes {
    Routes::new()
        .get("/projects/{id}/registry/repositories", list_project_repositories)
        .get("/groups/{id}/registry/repositories", list_group_repositories)
        .get("/registry/repositories/{id}", get_repository)
        .get("/registry/repositories/{id}/details", repository_details)
        .get("/registry/repositories/{id}/tags/list", list_tag_details)
        .delete("/projects/{id}/registry/repositories/{repository_id}", delete_repository)
        .get("/projects/{id}/registry/repositories/{repository_id}/tags", list_tags)
        .delete("/projects/{id}/registry/repositories/{repository_id}/tags", bulk_delete_tags)
        .get("/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}", get_tag)
        .delete(
            "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}",
            delete_one_tag,
        )
        .get("/openapi.json", openapi)
}

// ---- who may see and do what ----------------------------------------------------------------

/// The registry actions (`pull`, `push`, `delete`) the caller has on `project`'s images.
async fn registry_actions(
    store: &Store,
    caller: &Caller,
    project: &Project,
) -> Result<Vec<&'static str>, ApiError> {
    let identity = match caller {
        Caller::Operator => {
            return Ok(if project.registry_access == meta::RegistryAccess::Disabled {
                Vec::new()
            } else {
                vec!["pull", "push", "delete"]
            })
        }
        Caller::Anonymous => auth::Identity::Anonymous,
        Caller::User(user) => auth::Identity::User { user: user.clone(), pat: None },
    };
    let actions = auth::policy::allowed_actions(store, &identity, project).await?;
    Ok(actions.into_iter().map(|a| a.as_str()).collect())
}

/// A project whose registry the caller may read. Projects the caller cannot see answer 404;
/// visible ones whose registry they may not read answer 403.
async fn readable_project(
    store: &Store,
    caller: &Caller,
    project_ref: &Ref,
) -> Result<Project, ApiError> {
    let project = svc::project(store, caller, project_ref).await?;
    if registry_actions(store, caller, &project).await?.contains(&"pull") {
        Ok(project)
    } else if project.registry_access == meta::RegistryAccess::Disabled {
        Err(ApiError::ForbiddenBecause(format!(
            "the container registry of {} is disabled",
            project.full_path
        )))
    } else {
        Err(ApiError::ForbiddenBecause(format!(
            "reading the container registry of {} needs the reporter role or higher",
            project.full_path
        )))
    }
}

async fn require_delete(store: &Store, caller: &Caller, project: &Project) -> Result<(), ApiError> {
    if registry_actions(store, caller, project).await?.contains(&"delete") {
        Ok(())
    } else {
        Err(ApiError::ForbiddenBecause(format!(
            "deleting from the container registry of {} needs the maintainer role or higher",
            project.full_path
        )))
    }
}

fn belongs_to(repository: &RepositoryRecord, project: &Project) -> bool {
    repository.name == project.full_path
        || repository
            .name
            .strip_prefix(&project.full_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A repository of a project the caller may read, by the project and the repository's id.
pub async fn project_repository(
    store: &Store,
    caller: &Caller,
    project_ref: &Ref,
    repository_id: i64,
) -> Result<(Project, RepositoryRecord), ApiError> {
    let project = readable_project(store, caller, project_ref).await?;
    match store.repository_by_id(repository_id).await? {
        Some(repository) if belongs_to(&repository, &project) => Ok((project, repository)),
        _ => Err(ApiError::NotFound(REPOSITORY_NOT_FOUND)),
    }
}

/// A repository by id alone; one the caller may not read answers like one that does not exist.
pub async fn repository(
    store: &Store,
    caller: &Caller,
    repository_id: i64,
) -> Result<(Project, RepositoryRecord), ApiError> {
    let not_found = ApiError::NotFound(REPOSITORY_NOT_FOUND);
    let Some(repository) = store.repository_by_id(repository_id).await? else {
        return Err(not_found);
    };
    let Some(project) = auth::policy::project_for_image(store, &repository.name).await? else {
        return Err(not_found);
    };
    match readable_project(store, caller, &Ref::Id(project.id)).await {
        Ok(project) => Ok((project, repository)),
        Err(ApiError::Internal(e)) => Err(ApiError::Internal(e)),
        Err(_) => Err(not_found),
    }
}

/// Who the caller is for the set-based listings (the readable set is one query).
fn registry_reader(caller: &Caller) -> meta::RegistryReader {
    match caller {
        Caller::Operator => meta::RegistryReader::Operator,
        Caller::Anonymous => auth::policy::registry_reader(&auth::Identity::Anonymous),
        Caller::User(user) => {
            auth::policy::registry_reader(&auth::Identity::User { user: user.clone(), pat: None })
        }
    }
}

/// One page of the repositories of every project below `group` whose registry the caller may
/// read, with their projects, and how many there are in all.
pub async fn group_repositories(
    store: &Store,
    caller: &Caller,
    group_ref: &Ref,
    page: Page,
) -> Result<(i64, Vec<(Project, RepositoryRecord)>), ApiError> {
    let group = svc::group(store, caller, group_ref).await?;
    let (total, repositories) = store
        .readable_repositories_below_group(
            &registry_reader(caller),
            &group.full_path,
            page.offset(),
            page.per_page,
        )
        .await?;
    let mut projects: Vec<Project> = Vec::new();
    let mut out = Vec::with_capacity(repositories.len());
    for repository in repositories {
        let Some(project_id) = repository.project_id else { continue };
        let project = match projects.iter().find(|p| p.id == project_id) {
            Some(p) => p.clone(),
            None => match store.project_by_id(project_id).await? {
                Some(p) => {
                    projects.push(p.clone());
                    p
                }
                None => continue,
            },
        };
        out.push((project, repository));
    }
    Ok((total, out))
}

// ---- deleting -------------------------------------------------------------------------------

/// Which delete path a tag deletion comes from: protection rules may treat them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagDeletionOrigin {
    /// `DELETE .../tags/:tag_name`.
    Single,
    /// `DELETE .../tags` (bulk, in the background).
    Bulk,
}

/// THE way the REST API deletes a tag: single and bulk deletes both come here and call the
/// write service's tag delete, which enforces protection and immutable rules inside its
/// transaction. The caller's permission to delete from the project has been checked already.
/// Answers whether the tag existed (a bulk delete also answers `false` for a tag a rule keeps).
pub async fn delete_tag(
    writes: &::service::WriteService,
    caller: &Caller,
    project: &Project,
    repository: &RepositoryRecord,
    tag: &str,
    origin: TagDeletionOrigin,
    ctx: &::service::RequestContext,
) -> Result<bool, ApiError> {
    let (Ok(name), Ok(tag)) =
        (repository.name.parse::<oci::RepositoryName>(), tag.parse::<oci::Tag>())
    else {
        return Ok(false);
    };
    let level = crate::protection_api::rule_level(writes.store(), caller, project).await?;
    match writes.delete_tag(&name, &tag, ::service::Actor::Level(level), ctx).await {
        Ok(deleted) => Ok(deleted),
        // A single delete says which rule refused it; a bulk delete skips the tag and goes on.
        Err(::service::ServiceError::Refused(refusal)) => match origin {
            TagDeletionOrigin::Single => Err(ApiError::ForbiddenBecause(refusal.message)),
            TagDeletionOrigin::Bulk => Ok(false),
        },
        Err(e) => Err(e.into()),
    }
}

/// Which tags a bulk delete removes: GitLab's rules, decided in `service::cleanup`.
pub use ::service::cleanup::{TagCleanup, LATEST};

/// `older_than` of a bulk delete (see `service::cleanup::parse_duration_ms`).
pub fn parse_duration_ms(text: &str) -> Result<i64, ApiError> {
    Ok(::service::cleanup::parse_duration_ms(text)?)
}

/// Deletes the tags `cleanup` selects, one by one through [`delete_tag`]; answers how many
/// went. Runs in the background after a bulk delete request.
pub async fn run_tag_cleanup(
    writes: &::service::WriteService,
    caller: &Caller,
    project: &Project,
    repository: &RepositoryRecord,
    cleanup: &TagCleanup,
    ctx: &::service::RequestContext,
) -> Result<usize, ApiError> {
    let tags = writes.store().tags_with_published(repository.id).await?;
    let mut deleted = 0;
    for name in cleanup.doomed(&tags, meta::now_millis()) {
        let origin = TagDeletionOrigin::Bulk;
        if delete_tag(writes, caller, project, repository, &name, origin, ctx).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

// ---- JSON shapes ----------------------------------------------------------------------------

/// `<host>/<path>`, the host being what the client called us by.
fn location(host: &str, path: &str) -> String {
    format!("{host}/{path}")
}

#[derive(Serialize)]
struct TagSummaryView {
    name: String,
    path: String,
    location: String,
}

impl TagSummaryView {
    fn new(host: &str, repository: &str, tag: &str) -> TagSummaryView {
        let path = format!("{repository}:{tag}");
        TagSummaryView { name: tag.to_string(), location: location(host, &path), path }
    }
}

#[derive(Serialize)]
struct RepositoryView {
    id: i64,
    name: String,
    path: String,
    project_id: i64,
    location: String,
    created_at: String,
    cleanup_policy_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<TagSummaryView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    /// With `size=true`: bytes deleting the repository would free after garbage collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    exclusive_size: Option<i64>,
}

/// What a repository answer may include besides the basics; the filters of the repository
/// listings too (`?tags=true&tags_count=true`).
#[derive(Deserialize, Default)]
pub struct RepositoryExtras {
    #[serde(default, deserialize_with = "flag")]
    tags: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    tags_count: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    size: Option<bool>,
}

impl ListFilters for RepositoryExtras {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Asc;
}

async fn repository_view(
    store: &Store,
    host: &str,
    project: &Project,
    repository: &RepositoryRecord,
    extras: &RepositoryExtras,
) -> Result<RepositoryView, ApiError> {
    let name = repository
        .name
        .strip_prefix(&project.full_path)
        .unwrap_or(&repository.name)
        .trim_start_matches('/')
        .to_string();
    let tags_count = match extras.tags_count {
        Some(true) => Some(repository.tags_count),
        _ => None,
    };
    let tags = match extras.tags {
        Some(true) => {
            let names = store.tag_names_page(repository.id, 0, i64::MAX).await?;
            Some(names.iter().map(|t| TagSummaryView::new(host, &repository.name, t)).collect())
        }
        _ => None,
    };
    // The repository's stored, deduplicated bytes (every manifest, tagged or not, until GC
    // removes it), as GitLab reports `size`; and what deleting it would free.
    let (size, exclusive_size) = match extras.size {
        Some(true) => {
            let scope = meta::UsageScope::Repository(repository.id);
            let namespace = store.repository_namespace(repository.id).await?;
            (Some(store.usage(scope).await?), Some(store.exclusive_size(scope, namespace).await?))
        }
        _ => (None, None),
    };
    Ok(RepositoryView {
        id: repository.id,
        name,
        path: repository.name.clone(),
        project_id: project.id,
        location: location(host, &repository.name),
        created_at: iso8601(repository.created_at),
        cleanup_policy_started_at: None,
        tags_count,
        tags,
        size,
        exclusive_size,
    })
}

#[derive(Serialize)]
struct TagView {
    name: String,
    path: String,
    location: String,
    revision: Option<String>,
    short_revision: Option<String>,
    digest: String,
    created_at: String,
    total_size: i64,
    /// Bytes deleting this tag would free after garbage collection.
    exclusive_size: i64,
}

/// One tag of the keyset listing (GitLab's `/gitlab/v1/` shape).
#[derive(Serialize)]
struct TagDetailView {
    name: String,
    digest: String,
    config_digest: Option<String>,
    media_type: String,
    size_bytes: i64,
    created_at: String,
    updated_at: String,
    published_at: String,
}

impl From<&TagDetail> for TagDetailView {
    fn from(t: &TagDetail) -> TagDetailView {
        TagDetailView {
            name: t.name.clone(),
            digest: t.digest.clone(),
            config_digest: t.config_digest.clone(),
            media_type: t.media_type.clone(),
            size_bytes: t.total_size,
            created_at: iso8601(t.created_at),
            updated_at: iso8601(t.updated_at),
            published_at: iso8601(t.updated_at),
        }
    }
}

// ---- handlers -------------------------------------------------------------------------------

type Answer = Result<Response, ApiError>;

fn repository_id(text: &str) -> Result<i64, ApiError> {
    numeric_id(text, REPOSITORY_NOT_FOUND)
}

async fn list_project_repositories(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    listing: Listing<RepositoryExtras>,
) -> Answer {
    let host = request_host(&headers);
    let project = readable_project(&s.store, &caller, &Ref::parse("id", &id)?).await?;
    let page = listing.page;
    let (total, repositories) =
        s.store.project_repositories_page(project.id, page.offset(), page.per_page).await?;
    let mut out = Vec::with_capacity(repositories.len());
    for repository in &repositories {
        out.push(repository_view(&s.store, &host, &project, repository, &listing.filters).await?);
    }
    Ok(listing.answer_page(out, total))
}

async fn list_group_repositories(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    listing: Listing<RepositoryExtras>,
) -> Answer {
    let host = request_host(&headers);
    let (total, repositories) =
        group_repositories(&s.store, &caller, &Ref::parse("id", &id)?, listing.page).await?;
    let mut out = Vec::with_capacity(repositories.len());
    for (project, repository) in &repositories {
        out.push(repository_view(&s.store, &host, project, repository, &listing.filters).await?);
    }
    Ok(listing.answer_page(out, total))
}

async fn get_repository(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(extras): Params<RepositoryExtras>,
) -> Answer {
    let (project, repository) = repository(&s.store, &caller, repository_id(&id)?).await?;
    let view =
        repository_view(&s.store, &request_host(&headers), &project, &repository, &extras).await?;
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
struct DetailsParams {
    size: Option<String>,
}

async fn repository_details(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<DetailsParams>,
) -> Answer {
    let (_, repository) = repository(&s.store, &caller, repository_id(&id)?).await?;
    let with_descendants = match p.size.as_deref() {
        None | Some("") | Some("self") => false,
        Some("self_with_descendants") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "size {} is not supported: use self or self_with_descendants",
                oci::preview(other)
            )))
        }
    };
    let size = s.store.deduplicated_size(&repository.name, with_descendants).await?;
    let scope = meta::UsageScope::Repository(repository.id);
    let namespace = s.store.repository_namespace(repository.id).await?;
    let exclusive_size = s.store.exclusive_size(scope, namespace).await?;
    let name = repository.name.rsplit('/').next().unwrap_or(&repository.name).to_string();
    Ok(Json(json!({
        "id": repository.id,
        "name": name,
        "path": repository.name,
        "size_bytes": size,
        "exclusive_size": exclusive_size,
        "created_at": iso8601(repository.created_at),
    }))
    .into_response())
}

async fn delete_repository(
    State(s): State<ApiState>,
    caller: Caller,
    Audit(ctx): Audit,
    Path((id, repo_id)): Path<(String, String)>,
) -> Answer {
    let (project, repository) =
        project_repository(&s.store, &caller, &Ref::parse("id", &id)?, repository_id(&repo_id)?)
            .await?;
    require_delete(&s.store, &caller, &project).await?;
    let level = crate::protection_api::rule_level(&s.store, &caller, &project).await?;
    s.writes.request_repository_deletes(&s.jobs, &[repository], level, &ctx).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_tags(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, repo_id)): Path<(String, String)>,
    listing: Listing<NoFilters>,
) -> Answer {
    let (_, repository) =
        project_repository(&s.store, &caller, &Ref::parse("id", &id)?, repository_id(&repo_id)?)
            .await?;
    let pages = listing.page;
    let total = s.store.count_tags(repository.id).await?;
    let names = s.store.tag_names_page(repository.id, pages.offset(), pages.per_page).await?;
    let host = request_host(&headers);
    let body: Vec<TagSummaryView> =
        names.iter().map(|t| TagSummaryView::new(&host, &repository.name, t)).collect();
    let mut response = Json(body).into_response();
    listing.links().apply(response.headers_mut(), pages, total);
    Ok(response)
}

async fn get_tag(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, repo_id, tag)): Path<(String, String, String)>,
) -> Answer {
    let (_, repository) =
        project_repository(&s.store, &caller, &Ref::parse("id", &id)?, repository_id(&repo_id)?)
            .await?;
    let tag = tag_param("tag_name", &tag)?;
    let detail = s
        .store
        .tag_detail(repository.id, tag.as_str())
        .await?
        .ok_or(ApiError::NotFound(TAG_NOT_FOUND))?;
    let host = request_host(&headers);
    let summary = TagSummaryView::new(&host, &repository.name, &detail.name);
    let revision = detail
        .config_digest
        .as_deref()
        .map(|d| d.split_once(':').map_or(d, |(_, hex)| hex).to_string());
    Ok(Json(TagView {
        name: summary.name,
        path: summary.path,
        location: summary.location,
        short_revision: revision.as_ref().map(|r| r.chars().take(9).collect()),
        revision,
        digest: detail.digest,
        created_at: iso8601(detail.created_at),
        total_size: detail.total_size,
        exclusive_size: s.store.tag_exclusive_size(repository.id, &detail.name).await?,
    })
    .into_response())
}

async fn delete_one_tag(
    State(s): State<ApiState>,
    caller: Caller,
    Audit(ctx): Audit,
    Path((id, repo_id, tag)): Path<(String, String, String)>,
) -> Answer {
    let (project, repository) =
        project_repository(&s.store, &caller, &Ref::parse("id", &id)?, repository_id(&repo_id)?)
            .await?;
    require_delete(&s.store, &caller, &project).await?;
    let tag = tag_param("tag_name", &tag)?;
    let origin = TagDeletionOrigin::Single;
    if delete_tag(&s.writes, &caller, &project, &repository, tag.as_str(), origin, &ctx).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::NotFound(TAG_NOT_FOUND))
    }
}

#[derive(Deserialize)]
struct BulkDeleteParams {
    name_regex_delete: Option<String>,
    /// GitLab's older name for `name_regex_delete`.
    name_regex: Option<String>,
    name_regex_keep: Option<String>,
    #[serde(default, deserialize_with = "int")]
    keep_n: Option<i64>,
    older_than: Option<String>,
}

async fn bulk_delete_tags(
    State(s): State<ApiState>,
    caller: Caller,
    Audit(ctx): Audit,
    Path((id, repo_id)): Path<(String, String)>,
    Params(p): Params<BulkDeleteParams>,
) -> Answer {
    let (project, repository) =
        project_repository(&s.store, &caller, &Ref::parse("id", &id)?, repository_id(&repo_id)?)
            .await?;
    require_delete(&s.store, &caller, &project).await?;
    let job = BulkTagDelete {
        project_id: project.id,
        repository_id: repository.id,
        repository: repository.name,
        caller: JobCaller::of(&caller),
        name_regex_delete: p.name_regex_delete.or(p.name_regex),
        name_regex_keep: p.name_regex_keep,
        keep_n: p.keep_n,
        older_than: p.older_than,
        context: ctx,
    };
    // Refused now, before anything is queued, if the rules are invalid.
    job.cleanup()?;
    s.jobs.enqueue(BULK_TAG_DELETE, job).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
struct KeysetParams {
    #[serde(default, deserialize_with = "int")]
    n: Option<i64>,
    last: Option<String>,
    before: Option<String>,
    sort: Option<String>,
    name: Option<String>,
    name_exact: Option<String>,
}

/// `name`, or `<published_at ms>|name` when ordering by published time; the name must be a
/// valid tag (GitLab's registry refuses others the same way).
fn parse_marker(order: TagOrder, field: &str, text: &str) -> Result<TagMarker, ApiError> {
    if matches!(order, TagOrder::Name | TagOrder::NameDesc) {
        let name = tag_param(field, text)?;
        return Ok(TagMarker { published_at: 0, name: name.as_str().to_string() });
    }
    let (time, name) = text.split_once('|').ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field} must be <published_at in ms>|<tag name> when sorting by published_at: follow the Link header"
        ))
    })?;
    let published_at = time.parse().map_err(|_| {
        ApiError::bad_request(format!("{field} has no valid published_at: {}", oci::preview(time)))
    })?;
    let name = tag_param(field, name)?;
    Ok(TagMarker { published_at, name: name.as_str().to_string() })
}

/// The `name` filter: a part of a tag name, `[A-Za-z0-9._-]{1,128}` as in GitLab's registry.
/// Nothing else could match a tag; and a bounded pattern keeps SQLite's `LIKE` (which refuses
/// patterns over 50 000 bytes) and PostgreSQL's answering alike.
fn name_filter(text: &str) -> Result<String, ApiError> {
    let valid = text.len() <= 128
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(text.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "name {} is not part of a tag name: use 1 to 128 letters, digits, '.', '_' and '-'",
            oci::preview(text)
        )))
    }
}

fn marker_text(order: TagOrder, tag: &TagDetail) -> String {
    match order {
        TagOrder::Name | TagOrder::NameDesc => tag.name.clone(),
        TagOrder::Published | TagOrder::PublishedDesc => format!("{}|{}", tag.updated_at, tag.name),
    }
}

fn marker_of(tag: &TagDetail) -> TagMarker {
    TagMarker { published_at: tag.updated_at, name: tag.name.clone() }
}

/// Query-string encoding of one value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn list_tag_details(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(p): Params<KeysetParams>,
) -> Answer {
    let (_, repository) = repository(&s.store, &caller, repository_id(&id)?).await?;
    let n = p.n.unwrap_or(100);
    if !(1..=1000).contains(&n) {
        return Err(ApiError::bad_request("n must be between 1 and 1000"));
    }
    let sort = p.sort.as_deref().unwrap_or("name");
    let order = match sort {
        "name" => TagOrder::Name,
        "-name" => TagOrder::NameDesc,
        "published_at" => TagOrder::Published,
        "-published_at" => TagOrder::PublishedDesc,
        other => {
            return Err(ApiError::bad_request(format!(
                "sort {} is not supported: use name, -name, published_at or -published_at",
                oci::preview(other)
            )))
        }
    };
    let last = p.last.as_deref().filter(|t| !t.is_empty());
    let before = p.before.as_deref().filter(|t| !t.is_empty());
    if last.is_some() && before.is_some() {
        return Err(ApiError::bad_request("give last or before, not both"));
    }
    let mut query = TagPageQuery {
        order,
        after: last.map(|t| parse_marker(order, "last", t)).transpose()?,
        before: before.map(|t| parse_marker(order, "before", t)).transpose()?,
        name_contains: p.name.as_deref().filter(|t| !t.is_empty()).map(name_filter).transpose()?,
        name_exact: p
            .name_exact
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| tag_param("name_exact", t).map(|t| t.as_str().to_string()))
            .transpose()?,
        limit: n,
    };
    let tags = s.store.tag_details_page(repository.id, &query).await?;

    // Whether anything lies beyond each end of this page: one indexed row each.
    let (mut has_next, mut has_prev) = (false, false);
    if let (Some(first), Some(end)) = (tags.first(), tags.last()) {
        query.limit = 1;
        query.before = None;
        query.after = Some(marker_of(end));
        has_next = !s.store.tag_details_page(repository.id, &query).await?.is_empty();
        query.after = None;
        query.before = Some(marker_of(first));
        has_prev = !s.store.tag_details_page(repository.id, &query).await?.is_empty();
    }
    let mut common = format!("n={n}&sort={}", encode(sort));
    if let Some(name) = &p.name {
        common.push_str(&format!("&name={}", encode(name)));
    }
    if let Some(exact) = &p.name_exact {
        common.push_str(&format!("&name_exact={}", encode(exact)));
    }
    let base = format!("/api/v4/registry/repositories/{}/tags/list", repository.id);
    let mut links = Vec::new();
    if let (true, Some(end)) = (has_next, tags.last()) {
        let marker = encode(&marker_text(order, end));
        links.push(format!("<{base}?{common}&last={marker}>; rel=\"next\""));
    }
    if let (true, Some(first)) = (has_prev, tags.first()) {
        let marker = encode(&marker_text(order, first));
        links.push(format!("<{base}?{common}&before={marker}>; rel=\"previous\""));
    }
    let body: Vec<TagDetailView> = tags.iter().map(TagDetailView::from).collect();
    let mut response = Json(body).into_response();
    if !links.is_empty() {
        let value = HeaderValue::from_str(&links.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

// ---- the OpenAPI document -------------------------------------------------------------------

/// One documented route of `/api/v4`. The table is the source of the OpenAPI document; a unit
/// test checks it against what the router serves (both ways), and the e2e suite checks that
/// every documented operation answers.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    pub method: &'static str,
    /// With `{param}` placeholders, as axum and OpenAPI both write them.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Query or body parameters: (name, type, description).
    pub params: &'static [(&'static str, &'static str, &'static str)],
    /// The success status.
    pub status: u16,
}

const fn route(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str, &'static str)],
    status: u16,
) -> RouteDoc {
    RouteDoc { method, path, tag, summary, params, status }
}

const PAGE: &[(&str, &str, &str)] = &[
    ("page", "integer", "page number, from 1"),
    ("per_page", "integer", "items per page (default 20, at most 100)"),
];
const REPOSITORY_EXTRAS: &[(&str, &str, &str)] = &[
    ("tags", "boolean", "include the tags"),
    ("tags_count", "boolean", "include the number of tags"),
];
const MEMBER: &[(&str, &str, &str)] = &[
    ("user_id", "integer", "the user"),
    ("access_level", "integer", "10 guest, 20 reporter, 30 developer, 40 maintainer, 50 owner"),
];
const AUDIT_SCOPED: &[(&str, &str, &str)] = &[
    ("created_after", "string", "ISO 8601 time or date: events at or after it"),
    ("created_before", "string", "ISO 8601 time or date: events at or before it"),
    ("page", "integer", "page number, from 1"),
    ("per_page", "integer", "items per page (default 20, at most 100)"),
];
const HOOK: &[(&str, &str, &str)] = &[
    ("url", "string", "http or https URL the events are POSTed to (no credentials in it)"),
    ("token", "string", "secret sent as X-Gitlab-Token; never shown again"),
    ("enable_ssl_verification", "boolean", "verify the receiver's TLS certificate (default true)"),
    ("container_registry_events", "boolean", "send registry push and delete events (default true)"),
];
const RULE: &[(&str, &str, &str)] = &[
    ("repository_path_pattern", "string", "repository paths the rule covers (* wildcards)"),
    ("minimum_access_level_for_push", "string", "maintainer, owner or admin (null: no rule)"),
    ("minimum_access_level_for_delete", "string", "maintainer, owner or admin (null: no rule)"),
];
const TAG_RULE: &[(&str, &str, &str)] = &[
    ("tag_name_pattern", "string", "RE2 regex of the tag names the rule covers"),
    ("minimum_access_level_for_push", "string", "maintainer, owner or admin (null: no rule)"),
    ("minimum_access_level_for_delete", "string", "maintainer, owner or admin (null: no rule)"),
    ("immutable", "boolean", "tags matching it can never be moved or deleted"),
];
const MIRROR: &[(&str, &str, &str)] = &[
    (
        "upstream",
        "string",
        "URL of the upstream repository, e.g. https://registry.example.com/team/svc",
    ),
    ("tag_filter", "string", "regex the whole tag name must match (default: every tag)"),
    ("interval", "string", "time between syncs, at least 1m (default 1h)"),
];
const TOKEN: &[(&str, &str, &str)] = &[
    ("name", "string", "what the token is for"),
    ("scopes", "array", "scopes"),
    ("expires_at", "string", "YYYY-MM-DD"),
];

/// Every `/api/v4` operation.
#[rustfmt::skip]
pub const ROUTES: &[RouteDoc] = &[
    route("get", "/version", "meta", "The server's version", &[], 200),
    route("get", "/user", "users", "The current user", &[], 200),
    route("get", "/users", "users", "List users (public fields for non-admins)", &[
        ("username", "string", "exactly this username"), ("search", "string", "part of the username or name"),
        ("active", "boolean", "only active users"), ("blocked", "boolean", "only blocked users"),
        ("admins", "boolean", "only admins (admins)"), ("order_by", "string", "id, name, username or created_at"),
        ("sort", "string", "asc or desc"), ("page", "integer", "page number"), ("per_page", "integer", "items per page"),
    ], 200),
    route("post", "/users", "users", "Create a user (admins)", &[
        ("username", "string", "login name"), ("email", "string", "email address"),
        ("name", "string", "display name"), ("password", "string", "at least 8 characters"),
        ("admin", "boolean", "make an instance admin"),
    ], 201),
    route("get", "/users/{id}", "users", "Get a user", &[], 200),
    route("put", "/users/{id}", "users", "Change a user (admins)", &[
        ("name", "string", "display name"), ("email", "string", "email address"),
        ("password", "string", "at least 8 characters"), ("admin", "boolean", "instance admin"),
        ("state", "string", "active or blocked"),
    ], 200),
    route("post", "/users/{id}/block", "users", "Block a user (admins)", &[], 201),
    route("post", "/users/{id}/unblock", "users", "Unblock a user (admins)", &[], 201),
    route("post", "/users/{id}/personal_access_tokens", "tokens", "Create a personal access token", TOKEN, 201),
    route("get", "/personal_access_tokens", "tokens", "List personal access tokens", &[("user_id", "integer", "whose (admins)")], 200),
    route("get", "/personal_access_tokens/{id}", "tokens", "Get a personal access token (id or self)", &[], 200),
    route("post", "/personal_access_tokens/{id}/rotate", "tokens", "Rotate a personal access token (id or self): a new secret, the old one revoked", &[("expires_at", "string", "YYYY-MM-DD (default: in a week)")], 200),
    route("get", "/deploy_tokens", "tokens", "List every deploy token (admins)", &[("active", "boolean", "only active tokens")], 200),
    route("delete", "/personal_access_tokens/{id}", "tokens", "Revoke a personal access token", &[], 204),
    route("get", "/groups", "groups", "List visible groups", &[], 200),
    route("post", "/groups", "groups", "Create a group", &[
        ("name", "string", "display name"), ("path", "string", "URL path segment"),
        ("parent_id", "integer", "parent group"), ("visibility", "string", "private, internal or public"),
    ], 201),
    route("get", "/groups/{id}", "groups", "Get a group by id or URL-encoded full path; top-level groups show their storage limit, usage, percentage and notice", &[
        ("statistics", "boolean", "include statistics.container_registry_size"),
    ], 200),
    route("put", "/groups/{id}", "groups", "Set a top-level group's container registry storage limit (instance admins)", &[
        ("container_registry_storage_limit", "integer", "bytes, 0 for no limit"),
    ], 200),
    route("get", "/groups/{id}/dependency_proxy", "dependency_proxy", "A top-level group's dependency proxy settings; upstream passwords are never shown (owners)", &[], 200),
    route("put", "/groups/{id}/dependency_proxy", "dependency_proxy", "Change a top-level group's dependency proxy: on or off, its cache cleanup, its own upstreams (owners)", &[
        ("enabled", "boolean", "whether the group's dependency proxy serves pulls (default true)"),
        ("ttl_policy", "object", "{enabled, ttl}: remove cached images not pulled for ttl days (default enabled, 90)"),
        ("upstreams", "array", "[{url, username, password}] tried in order instead of the instance's; [] for the instance's; a password left out is kept"),
    ], 200),
    route("delete", "/groups/{id}/dependency_proxy/cache", "dependency_proxy", "Purge a top-level group's dependency proxy cache (owners)", &[], 202),
    route("get", "/groups/{id}/members", "members", "List a group's members", &[], 200),
    route("get", "/groups/{id}/members/all", "members", "List a group's members, inherited ones included", &[], 200),
    route("get", "/groups/{id}/members/all/{user_id}", "members", "Get a group member, inherited or not", &[], 200),
    route("post", "/groups/{id}/members", "members", "Add a group member", MEMBER, 201),
    route("put", "/groups/{id}/members/{user_id}", "members", "Change a group member's role", MEMBER, 200),
    route("delete", "/groups/{id}/members/{user_id}", "members", "Remove a group member", &[], 204),
    route("get", "/groups/{id}/deploy_tokens", "tokens", "List a group's deploy tokens", &[], 200),
    route("post", "/groups/{id}/deploy_tokens", "tokens", "Create a group deploy token", TOKEN, 201),
    route("delete", "/groups/{id}/deploy_tokens/{token_id}", "tokens", "Revoke a group deploy token", &[], 204),
    route("get", "/projects", "projects", "List visible projects", &[], 200),
    route("post", "/projects", "projects", "Create a project", &[
        ("name", "string", "display name"), ("path", "string", "URL path segment"),
        ("namespace_id", "integer", "the group"), ("visibility", "string", "private, internal or public"),
        ("container_registry_access_level", "string", "enabled, private or disabled"),
    ], 201),
    route("get", "/projects/{id}", "projects", "Get a project by id or URL-encoded full path", &[
        ("statistics", "boolean", "include statistics.container_registry_size and container_registry_exclusive_size"),
    ], 200),
    route("put", "/projects/{id}", "projects", "Change a project's settings (maintainers)", &[
        ("visibility", "string", "private, internal or public"),
        ("container_registry_access_level", "string", "enabled, private or disabled"),
    ], 200),
    route("get", "/projects/{id}/members", "members", "List a project's members", &[], 200),
    route("get", "/projects/{id}/members/all", "members", "List a project's members, inherited ones included", &[], 200),
    route("get", "/projects/{id}/members/all/{user_id}", "members", "Get a project member, inherited or not", &[], 200),
    route("post", "/projects/{id}/members", "members", "Add a project member", MEMBER, 201),
    route("put", "/projects/{id}/members/{user_id}", "members", "Change a project member's role", MEMBER, 200),
    route("delete", "/projects/{id}/members/{user_id}", "members", "Remove a project member", &[], 204),
    route("get", "/projects/{id}/deploy_tokens", "tokens", "List a project's deploy tokens", &[], 200),
    route("post", "/projects/{id}/deploy_tokens", "tokens", "Create a project deploy token", TOKEN, 201),
    route("delete", "/projects/{id}/deploy_tokens/{token_id}", "tokens", "Revoke a project deploy token", &[], 204),
    route("post", "/projects/{id}/job_tokens", "tokens", "Mint a CI job token (developers)", &[], 201),
    route("get", "/projects/{id}/job_token_scope", "tokens", "The CI job token scope settings", &[], 200),
    route("get", "/projects/{id}/job_token_scope/allowlist", "tokens", "Projects whose job tokens may pull from this one", &[], 200),
    route("post", "/projects/{id}/job_token_scope/allowlist", "tokens", "Allow a project's job tokens", &[("target_project_id", "integer", "the project to allow")], 201),
    route("delete", "/projects/{id}/job_token_scope/allowlist/{target_project_id}", "tokens", "Disallow a project's job tokens", &[], 204),
    // ---- registry ----
    route("get", "/projects/{id}/registry/repositories", "registry", "List a project's container repositories", REPOSITORY_EXTRAS, 200),
    route("get", "/groups/{id}/registry/repositories", "registry", "List the container repositories of every readable project below a group", REPOSITORY_EXTRAS, 200),
    route("get", "/registry/repositories/{id}", "registry", "Get a container repository", &[
        ("tags", "boolean", "include the tags"), ("tags_count", "boolean", "include the number of tags"),
        ("size", "boolean", "include the deduplicated size in bytes of the blobs its tags reference"),
    ], 200),
    route("get", "/registry/repositories/{id}/details", "registry", "A repository's deduplicated size_bytes", &[
        ("size", "string", "self (default) or self_with_descendants (include repositories below it)"),
    ], 200),
    route("get", "/registry/repositories/{id}/tags/list", "registry", "List tags with details, keyset-paginated (Link rel=next/previous)", &[
        ("n", "integer", "page size (default 100, at most 1000)"),
        ("last", "string", "marker from the Link header: tags after it"),
        ("before", "string", "marker from the Link header: tags before it"),
        ("sort", "string", "name, -name, published_at or -published_at"),
        ("name", "string", "case-insensitive substring of the tag name"),
        ("name_exact", "string", "exact tag name"),
    ], 200),
    route("delete", "/projects/{id}/registry/repositories/{repository_id}", "registry", "Delete a repository (in the background; maintainers; refused by repository protection rules)", &[], 202),
    route("get", "/projects/{id}/registry/repositories/{repository_id}/tags", "registry", "List a repository's tags (X-Total, X-Total-Pages, X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, Link)", PAGE, 200),
    route("delete", "/projects/{id}/registry/repositories/{repository_id}/tags", "registry", "Delete tags in bulk (in the background; maintainers; never latest)", &[
        ("name_regex_delete", "string", "RE2 regex of the tag names to delete, matched against the whole name (required; name_regex is accepted too)"),
        ("name_regex_keep", "string", "RE2 regex of the tag names to keep"),
        ("keep_n", "integer", "keep this many most recently published matching tags"),
        ("older_than", "string", "delete only tags published longer ago than this: 1h, 7d, 1month"),
    ], 202),
    route("get", "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}", "registry", "Get a tag's details", &[], 200),
    route("delete", "/projects/{id}/registry/repositories/{repository_id}/tags/{tag_name}", "registry", "Delete a tag (maintainers)", &[], 200),
    // ---- protection rules and cleanup policies ----
    route("get", "/projects/{id}/registry/protection/repository/rules", "protection", "List repository protection rules (maintainers)", &[], 200),
    route("post", "/projects/{id}/registry/protection/repository/rules", "protection", "Create a repository protection rule (maintainers)", RULE, 201),
    route("patch", "/projects/{id}/registry/protection/repository/rules/{rule_id}", "protection", "Change a repository protection rule (maintainers)", RULE, 200),
    route("delete", "/projects/{id}/registry/protection/repository/rules/{rule_id}", "protection", "Delete a repository protection rule (maintainers)", &[], 204),
    route("get", "/projects/{id}/registry/protection/tag/rules", "protection", "List tag protection rules (maintainers)", &[], 200),
    route("post", "/projects/{id}/registry/protection/tag/rules", "protection", "Create a tag protection rule (maintainers; owners for immutable ones)", TAG_RULE, 201),
    route("patch", "/projects/{id}/registry/protection/tag/rules/{rule_id}", "protection", "Change a tag protection rule (maintainers)", TAG_RULE, 200),
    route("delete", "/projects/{id}/registry/protection/tag/rules/{rule_id}", "protection", "Delete a tag protection rule (maintainers; owners for immutable ones)", &[], 204),
    route("get", "/projects/{id}/registry/mirrors", "registry", "List the project's pull mirrors (maintainers)", &[], 200),
    route("post", "/projects/{id}/registry/mirrors", "registry", "Follow an upstream repository: synced on schedule by the job queue (maintainers)", MIRROR, 201),
    route("delete", "/projects/{id}/registry/mirrors/{mirror_id}", "registry", "Stop following an upstream repository (maintainers)", &[], 204),
    route("get", "/projects/{id}/registry/mirrors/{mirror_id}/runs", "registry", "A pull mirror's runs, newest first: tags added, moved, unchanged, failed, bytes (maintainers)", &[], 200),
    route("get", "/projects/{id}/registry/cleanup_policy/dry_run", "registry", "The tags the project's cleanup policy would delete now, without deleting them", &[], 200),
    // ---- background jobs ----
    route("get", "/admin/jobs", "admin", "List background jobs, newest first (admins)", &[
        ("state", "string", "queued, running, succeeded, failed or dead"),
        ("kind", "string", "repository_delete, bulk_tag_delete, cleanup_policies, upload_purge, gc_leftovers, gc_full_pass"),
        ("limit", "integer", "at most this many (default 100, at most 1000)"),
    ], 200),
    route("get", "/admin/registry/gc", "admin", "Online garbage collection: queue lengths, the oldest due item, what was removed in the last hour and day, failures, pending storage deletions (instance admins)", &[], 200),
    // ---- events ----
    route("get", "/audit_events", "events", "The instance's audit events, newest first (instance admins; entity_type=Project&entity_id=N: one project's)", AUDIT_SCOPED, 200),
    route("get", "/audit_events/{event_id}", "events", "One audit event (instance admins)", &[], 200),
    route("get", "/groups/{id}/audit_events", "events", "Audit events of a group and everything below it (owners)", AUDIT_SCOPED, 200),
    route("get", "/groups/{id}/audit_events/{event_id}", "events", "One audit event of a group (owners)", &[], 200),
    route("get", "/projects/{id}/audit_events", "events", "Audit events of a project (maintainers)", AUDIT_SCOPED, 200),
    route("get", "/projects/{id}/audit_events/{event_id}", "events", "One audit event of a project (maintainers)", &[], 200),
    route("get", "/groups/{id}/hooks", "events", "List a group's webhooks (owners)", PAGE, 200),
    route("post", "/groups/{id}/hooks", "events", "Add a group webhook (owners)", HOOK, 201),
    route("get", "/groups/{id}/hooks/{hook_id}", "events", "Get a group webhook (owners)", &[], 200),
    route("put", "/groups/{id}/hooks/{hook_id}", "events", "Change a group webhook (owners)", HOOK, 200),
    route("delete", "/groups/{id}/hooks/{hook_id}", "events", "Delete a group webhook (owners)", &[], 204),
    route("get", "/projects/{id}/hooks", "events", "List a project's webhooks (maintainers)", PAGE, 200),
    route("post", "/projects/{id}/hooks", "events", "Add a project webhook (maintainers)", HOOK, 201),
    route("get", "/projects/{id}/hooks/{hook_id}", "events", "Get a project webhook (maintainers)", &[], 200),
    route("put", "/projects/{id}/hooks/{hook_id}", "events", "Change a project webhook (maintainers)", HOOK, 200),
    route("delete", "/projects/{id}/hooks/{hook_id}", "events", "Delete a project webhook (maintainers)", &[], 204),
    route("post", "/admin/registry/gc", "admin", "Run a full garbage-collection pass (mark and sweep) as a background job, gc_full_pass; answers the job (instance admins)", &[
        ("min_age_seconds", "integer", "leave alone what was pushed or linked more recently than this (default 3600, at most 2592000)"),
    ], 202),
    route("get", "/openapi.json", "meta", "This OpenAPI document", &[], 200),
];

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The OpenAPI 3 document of `/api/v4`, from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for r in ROUTES {
        let mut parameters: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let in_query = matches!(r.method, "get" | "delete");
        if in_query {
            for (name, ty, description) in r.params {
                parameters.push(json!({"name": name, "in": "query", "required": false,
                    "description": description, "schema": {"type": ty}}));
            }
        }
        let mut operation = json!({
            "tags": [r.tag],
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}'], "_")),
            "parameters": parameters,
            "responses": {
                r.status.to_string(): {"description": "success"},
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if !in_query && !r.params.is_empty() {
            let properties: serde_json::Map<String, Value> = r
                .params
                .iter()
                .map(|(name, ty, description)| {
                    let schema = if *ty == "array" {
                        json!({"type": "array", "items": {"type": "string"}, "description": description})
                    } else {
                        json!({"type": ty, "description": description})
                    };
                    (name.to_string(), schema)
                })
                .collect();
            operation["requestBody"] = json!({"content": {"application/json": {"schema":
                {"type": "object", "properties": properties}}}});
        }
        paths.entry(r.path).or_default().insert(r.method.to_string(), operation);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Stowage REST API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "GitLab-compatible /api/v4. Authenticate with a personal access token (api scope) in PRIVATE-TOKEN or Authorization: Bearer."},
        "servers": [{"url": "/api/v4"}],
        "components": {
            "securitySchemes": {
                "privateToken": {"type": "apiKey", "in": "header", "name": "PRIVATE-TOKEN"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {"Error": {"type": "object", "properties": {"message": {}}}},
        },
        "security": [{"privateToken": []}, {"bearer": []}, {}],
        "paths": paths,
    })
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI table and the router agree both ways: what is served is documented, what is
    /// documented is served. The router records what it serves ([`crate::routing::Routes`]), so
    /// no route can be added anywhere without this test seeing it.
    #[test]
    fn documented_routes_are_exactly_the_served_ones() {
        use std::collections::BTreeSet;
        let served: BTreeSet<(&str, &str)> = crate::routes().served().iter().copied().collect();
        let documented: BTreeSet<(&str, &str)> =
            ROUTES.iter().map(|r| (r.method, r.path)).collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(undocumented.is_empty(), "served but missing from ROUTES: {undocumented:?}");
        assert!(unserved.is_empty(), "in ROUTES but not served: {unserved:?}");
        assert_eq!(served.len(), crate::routes().served().len(), "a route is registered twice");
    }

    #[test]
    fn document_lists_every_operation() {
        let doc = openapi_document();
        for r in ROUTES {
            assert!(doc["paths"][r.path][r.method].is_object(), "{} {}", r.method, r.path);
        }
    }
}
