//! Events on the REST API: the audit log (`GET /audit_events`, `/groups/:id/audit_events`,
//! `/projects/:id/audit_events`, GitLab's shape) and project and group webhooks
//! (`/projects/:id/hooks`, `/groups/:id/hooks`), plus [`Audit`], the request context every
//! handler that changes something records its audit event with.
//!
//! Registry changes are audited by the write service inside their transaction; what this API
//! changes itself (members, tokens, rules, policies, hooks) is recorded here, through
//! [`Audit::record`], right after the change.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meta::access_level;
use meta::events::{AuditActor, AuditEntity, AuditEvent, AuditFilter, AuditScope, NewAuditEvent};
use meta::events::{Webhook, WebhookSettings};
use meta::SourceType;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::handlers::{OnGroup, OnProject, SourceKind};
use crate::input::{flag, numeric_id, ListFilters, Listing, NoFilters, Params, Path, Ref, Sort};
use crate::routing::Routes;
use crate::service::{self as svc, Source};
use crate::time::{iso8601, parse_expiry_date};
use crate::ApiState;

type Answer = Result<Response, ApiError>;

const AUDIT_EVENT_NOT_FOUND: &str = "404 Audit Event Not Found";
const HOOK_NOT_FOUND: &str = "404 Hook Not Found";

pub fn routes() -> Routes {
    Routes::new()
        .get("/audit_events", list_instance_events)
        .get("/audit_events/{event_id}", get_instance_event)
        .get("/groups/{id}/audit_events", list_events::<OnGroup>)
        .get("/groups/{id}/audit_events/{event_id}", get_event::<OnGroup>)
        .get("/projects/{id}/audit_events", list_events::<OnProject>)
        .get("/projects/{id}/audit_events/{event_id}", get_event::<OnProject>)
        .get("/groups/{id}/hooks", list_hooks::<OnGroup>)
        .post("/groups/{id}/hooks", create_hook::<OnGroup>)
        .get("/groups/{id}/hooks/{hook_id}", get_hook::<OnGroup>)
        .put("/groups/{id}/hooks/{hook_id}", update_hook::<OnGroup>)
        .delete("/groups/{id}/hooks/{hook_id}", delete_hook::<OnGroup>)
        .get("/projects/{id}/hooks", list_hooks::<OnProject>)
        .post("/projects/{id}/hooks", create_hook::<OnProject>)
        .get("/projects/{id}/hooks/{hook_id}", get_hook::<OnProject>)
        .put("/projects/{id}/hooks/{hook_id}", update_hook::<OnProject>)
        .delete("/projects/{id}/hooks/{hook_id}", delete_hook::<OnProject>)
}

// ---- the request context --------------------------------------------------------------------

/// Who calls and from where, for the audit log and for the write service.
pub struct Audit(pub ::service::RequestContext);

impl FromRequestParts<ApiState> for Audit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        // Authenticates the caller if no extractor did yet (cached per request).
        Caller::from_request_parts(parts, state).await?;
        let actor = parts.extensions.get::<AuditActor>().cloned().unwrap_or_default();
        let origin = auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions);
        Ok(Audit(::service::RequestContext { actor, origin }))
    }
}

/// What was acted on, for [`Audit::record`].
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: String,
    pub details: String,
}

impl Audit {
    /// Records a change this API made (THE place API handlers write audit events). A failure
    /// to record is logged: the change is made and answered already.
    pub async fn record(
        &self,
        store: &meta::Store,
        entity: AuditEntity,
        action: &str,
        target: Target<'_>,
        details: Value,
    ) {
        let event = NewAuditEvent {
            actor: &self.0.actor,
            origin: &self.0.origin,
            entity,
            action,
            target_type: target.kind,
            target_id: target.id,
            target_details: target.details,
            success: true,
            details,
            at: meta::now_millis(),
        };
        if let Err(e) = store.record_audit(&event).await {
            tracing::warn!(error = %e, action, "recording an audit event failed");
        }
    }

    /// Records a change of a group's or project's settings (members, tokens, hooks, rules).
    pub async fn record_on(
        &self,
        store: &meta::Store,
        source: &Source,
        action: &str,
        target: Target<'_>,
        details: Value,
    ) {
        let entity = AuditEntity::source(source.source_type(), source.id(), source.full_path());
        self.record(store, entity, action, target, details).await
    }
}

// ---- group or project -----------------------------------------------------------------------

/// The role that may read a group's or project's audit log and manage its hooks: maintainers
/// of a project, owners of a group.
fn manager_level(kind: SourceType) -> i64 {
    match kind {
        SourceType::Project => access_level::MAINTAINER,
        SourceType::Group => access_level::OWNER,
    }
}

/// The group or project `id` if the caller may see it (404 otherwise) and has the role to
/// manage its events (403 otherwise).
async fn managed<K: SourceKind>(
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Source, ApiError> {
    caller.require_signed_in()?;
    let source = svc::source(&s.store, caller, K::KIND, &Ref::parse("id", id)?).await?;
    let level = source.level(&s.store, caller).await?;
    let needed = manager_level(K::KIND);
    if level < needed {
        return Err(ApiError::ForbiddenBecause(format!(
            "the audit events and hooks of {} need the {} role or higher",
            source.full_path(),
            svc::role_name(needed)
        )));
    }
    Ok(source)
}

// ---- audit events ---------------------------------------------------------------------------

/// GitLab's audit event.
#[derive(Serialize)]
pub struct AuditEventView {
    id: i64,
    author_id: i64,
    entity_id: i64,
    entity_type: String,
    event_name: String,
    details: Value,
    created_at: String,
}

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> AuditEventView {
        let mut details = json!({
            "author_name": e.author_name,
            "author_class": if e.author_id.is_some() { "User" } else { "Unauthenticated" },
            "target_id": e.target_id,
            "target_type": e.target_type,
            "target_details": e.target_details,
            "entity_path": e.entity_path,
            "ip_address": e.ip_address,
            "request_id": e.request_id,
            "user_agent": e.user_agent,
            "token_kind": e.token_kind,
            "token_id": e.token_id,
            "outcome": e.outcome,
            "custom_message": format!("{} {}", e.action, e.outcome),
            "action": e.action,
        });
        if let (Value::Object(d), Value::Object(extra)) = (&mut details, &e.details) {
            for (k, v) in extra {
                d.entry(k.clone()).or_insert(v.clone());
            }
        }
        AuditEventView {
            id: e.id,
            // GitLab's author of an unauthenticated event is -1.
            author_id: e.author_id.unwrap_or(-1),
            entity_id: e.entity_id,
            entity_type: e.entity_type.clone(),
            event_name: e.action.clone(),
            details,
            created_at: iso8601(e.created_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditListFilters {
    created_after: Option<String>,
    created_before: Option<String>,
    /// GitLab's instance listing filters by entity; accepted, checked, and applied.
    entity_type: Option<String>,
    entity_id: Option<String>,
}

impl ListFilters for AuditListFilters {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Desc;
}

/// `2026-11-30`, `2026-11-30T05:21:09Z` or `2026-11-30T05:21:09.123Z` as milliseconds.
fn parse_time(field: &'static str, text: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            format!(
                "{} is not a time: use ISO 8601, e.g. 2026-11-30T05:21:09Z",
                oci::preview(text)
            ),
        )
    };
    let day = parse_expiry_date(text).map_err(|_| bad())?;
    let Some(time) = text.get(10..).and_then(|t| t.strip_prefix('T')) else { return Ok(day) };
    let time = time.strip_suffix('Z').ok_or_else(bad)?;
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac))
            if (1..=9).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (
                hms,
                frac[..frac.len().min(3)].parse::<i64>().map_err(|_| bad())?
                    * 10i64.pow(3 - frac.len().min(3) as u32),
            )
        }
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let [h, m, s] = parts.as_slice() else { return Err(bad()) };
    let number = |t: &str, max: i64| -> Result<i64, ApiError> {
        if t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse::<i64>().ok().filter(|n| *n <= max).ok_or_else(bad)
        } else {
            Err(bad())
        }
    };
    Ok(day + number(h, 23)? * 3_600_000 + number(m, 59)? * 60_000 + number(s, 59)? * 1000 + millis)
}

async fn answer_events(
    s: &ApiState,
    scope: AuditScope,
    listing: &Listing<AuditListFilters>,
) -> Answer {
    let f = &listing.filters;
    let created_after =
        f.created_after.as_deref().map(|t| parse_time("created_after", t)).transpose()?;
    let created_before =
        f.created_before.as_deref().map(|t| parse_time("created_before", t)).transpose()?;
    let scope = match (&scope, f.entity_type.as_deref(), f.entity_id.as_deref()) {
        (_, None, None) => scope,
        (AuditScope::Instance, Some("Project"), Some(id)) => AuditScope::Project(
            id.parse().map_err(|_| ApiError::invalid("entity_id", "must be a number"))?,
        ),
        (AuditScope::Instance, Some(kind), _) if !matches!(kind, "Project") => {
            return Err(ApiError::invalid(
                "entity_type",
                "is supported as Project (with entity_id) only",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "entity_id",
                "needs entity_type=Project, on /audit_events",
            ))
        }
    };
    let filter = AuditFilter {
        scope,
        created_after,
        created_before,
        offset: listing.page.offset(),
        limit: listing.page.per_page,
    };
    let (events, total) = s.store.list_audit_events(&filter).await?;
    let views: Vec<AuditEventView> = events.iter().map(AuditEventView::from).collect();
    let mut response = Json(views).into_response();
    listing.links().apply(response.headers_mut(), listing.page, total);
    Ok(response)
}

async fn list_instance_events(
    State(s): State<ApiState>,
    caller: Caller,
    listing: Listing<AuditListFilters>,
) -> Answer {
    caller.require_admin()?;
    answer_events(&s, AuditScope::Instance, &listing).await
}

async fn get_instance_event(
    State(s): State<ApiState>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Answer {
    caller.require_admin()?;
    one_event(&s, AuditScope::Instance, &event_id).await
}

fn scope_of(source: &Source) -> AuditScope {
    match source {
        Source::Project(p) => AuditScope::Project(p.id),
        Source::Group(g) => AuditScope::Group { id: g.id, path: g.full_path.clone() },
    }
}

async fn list_events<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    listing: Listing<AuditListFilters>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    if listing.filters.entity_type.is_some() || listing.filters.entity_id.is_some() {
        return Err(ApiError::bad_request(
            "entity_type and entity_id filter the instance listing (/audit_events) only",
        ));
    }
    answer_events(&s, scope_of(&source), &listing).await
}

async fn get_event<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    one_event(&s, scope_of(&source), &event_id).await
}

async fn one_event(s: &ApiState, scope: AuditScope, id: &str) -> Answer {
    let id = numeric_id(id, AUDIT_EVENT_NOT_FOUND)?;
    let event =
        s.store.audit_event(scope, id).await?.ok_or(ApiError::NotFound(AUDIT_EVENT_NOT_FOUND))?;
    Ok(Json(AuditEventView::from(&event)).into_response())
}

// ---- hooks ----------------------------------------------------------------------------------

/// The longest hook URL accepted (GitLab: 2048 characters... in practice; we say so).
const MAX_URL_CHARS: usize = 2048;
/// The longest secret token accepted.
const MAX_TOKEN_CHARS: usize = 1024;

/// A hook URL, checked: absolute `http` or `https` with a host, no credentials in it (use
/// `token`), no whitespace or control characters, at most [`MAX_URL_CHARS`], and not aimed at
/// the local network unless `allow_local` (`webhooks.allow_local_requests`; see
/// [`service::outbound`]).
pub fn hook_url(text: &str, allow_local: bool) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid("url", format!("{} {why}", oci::preview(text)));
    if text.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::invalid("url", format!("is longer than {MAX_URL_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not an http or https URL"));
    }
    let Some(host) = url.host().filter(|h| !matches!(h, url::Host::Domain(""))) else {
        return Err(bad("has no host"));
    };
    if let Err(why) = ::service::outbound::check_host(&host, allow_local) {
        return Err(bad(why));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "must not hold credentials: give the secret as token (sent as X-Gitlab-Token)",
        ));
    }
    Ok(url.to_string())
}

fn hook_token(text: &str) -> Result<Option<String>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_TOKEN_CHARS {
        return Err(ApiError::invalid(
            "token",
            format!("is longer than {MAX_TOKEN_CHARS} characters"),
        ));
    }
    // Sent as a header value: visible ASCII only.
    if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ApiError::invalid("token", "must be printable ASCII (it is sent as a header)"));
    }
    Ok(Some(text.to_string()))
}

#[derive(Deserialize)]
pub struct HookParams {
    url: Option<String>,
    token: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    enable_ssl_verification: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    container_registry_events: Option<bool>,
}

impl HookParams {
    /// The settings these parameters give, over `current` (a change) or the defaults.
    fn settings(
        self,
        current: Option<&Webhook>,
        allow_local: bool,
    ) -> Result<WebhookSettings, ApiError> {
        let url = match (self.url, current) {
            (Some(url), _) => hook_url(&url, allow_local)?,
            (None, Some(hook)) => hook.url.clone(),
            (None, None) => return Err(ApiError::invalid("url", "is required")),
        };
        let token = match (self.token, current) {
            (Some(token), _) => hook_token(&token)?,
            (None, Some(hook)) => hook.token.clone(),
            (None, None) => None,
        };
        Ok(WebhookSettings {
            url,
            token,
            enable_ssl_verification: self
                .enable_ssl_verification
                .or(current.map(|h| h.enable_ssl_verification))
                .unwrap_or(true),
            container_registry_events: self
                .container_registry_events
                .or(current.map(|h| h.container_registry_events))
                .unwrap_or(true),
        })
    }
}

/// GitLab's hook; the token is never shown.
#[derive(Serialize)]
pub struct HookView {
    id: i64,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<i64>,
    enable_ssl_verification: bool,
    container_registry_events: bool,
    push_events: bool,
    tag_push_events: bool,
    created_at: String,
}

impl From<&Webhook> for HookView {
    fn from(h: &Webhook) -> HookView {
        let (project_id, group_id) = match h.source_type {
            SourceType::Project => (Some(h.source_id), None),
            SourceType::Group => (None, Some(h.source_id)),
        };
        HookView {
            id: h.id,
            url: h.url.clone(),
            project_id,
            group_id,
            enable_ssl_verification: h.enable_ssl_verification,
            container_registry_events: h.container_registry_events,
            // Git events: a registry has none.
            push_events: false,
            tag_push_events: false,
            created_at: iso8601(h.created_at),
        }
    }
}

fn hook_target(hook: &Webhook) -> Target<'static> {
    Target { kind: "Hook", id: hook.id.to_string(), details: hook.url.clone() }
}

async fn list_hooks<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    listing: Listing<NoFilters>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    let hooks = s.store.webhooks(K::KIND, source.id()).await?;
    Ok(listing.answer(hooks.iter().map(HookView::from).collect()))
}

async fn hook<K: SourceKind>(
    s: &ApiState,
    source: &Source,
    hook_id: &str,
) -> Result<Webhook, ApiError> {
    let hook_id = numeric_id(hook_id, HOOK_NOT_FOUND)?;
    s.store.webhook(K::KIND, source.id(), hook_id).await?.ok_or(ApiError::NotFound(HOOK_NOT_FOUND))
}

async fn get_hook<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, hook_id)): Path<(String, String)>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    Ok(Json(HookView::from(&hook::<K>(&s, &source, &hook_id).await?)).into_response())
}

async fn create_hook<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path(id): Path<String>,
    Params(p): Params<HookParams>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    let settings = p.settings(None, s.hooks_allow_local)?;
    let hook = s.store.create_webhook(K::KIND, source.id(), &settings).await?;
    audit.record_on(&s.store, &source, "hook_create", hook_target(&hook), json!({})).await;
    Ok((StatusCode::CREATED, Json(HookView::from(&hook))).into_response())
}

async fn update_hook<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, hook_id)): Path<(String, String)>,
    Params(p): Params<HookParams>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    let current = hook::<K>(&s, &source, &hook_id).await?;
    let settings = p.settings(Some(&current), s.hooks_allow_local)?;
    let hook = s
        .store
        .update_webhook(current.id, &settings)
        .await?
        .ok_or(ApiError::NotFound(HOOK_NOT_FOUND))?;
    audit.record_on(&s.store, &source, "hook_update", hook_target(&hook), json!({})).await;
    Ok(Json(HookView::from(&hook)).into_response())
}

async fn delete_hook<K: SourceKind>(
    State(s): State<ApiState>,
    caller: Caller,
    audit: Audit,
    Path((id, hook_id)): Path<(String, String)>,
) -> Answer {
    let source = managed::<K>(&s, &caller, &id).await?;
    let hook = hook::<K>(&s, &source, &hook_id).await?;
    s.store.delete_webhook(hook.id).await?;
    audit.record_on(&s.store, &source, "hook_delete", hook_target(&hook), json!({})).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_urls() {
        assert_eq!(hook_url("http://127.0.0.1:9/x", true).unwrap(), "http://127.0.0.1:9/x");
        let public = hook_url("https://hooks.example/a?b=c", false).unwrap();
        assert_eq!(public, "https://hooks.example/a?b=c");
        for local in ["http://127.0.0.1:9/x", "http://[::1]/", "http://localhost./", "http://0/"] {
            let refused = hook_url(local, false).unwrap_err().to_string();
            assert!(refused.contains("requests to the local network"), "{local}: {refused}");
        }
        for bad in [
            "ftp://x/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "gopher://x/",
            "http://user:pw@x/",
            "http://user@x/",
            "not a url",
            "http://x/\u{0}",
            "http://x/ a",
            "",
        ] {
            assert!(hook_url(bad, true).is_err(), "{bad:?} was accepted");
        }
        assert!(hook_url(&format!("http://x/{}", "a".repeat(3000)), true).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("t", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("t", "1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time("t", "1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(parse_time("t", "1970-01-01T01:02:03.004Z").unwrap(), 3_723_004);
        for bad in [
            "yesterday",
            "1970-01-01T25:00:00Z",
            "1970-01-01T00:00:00",
            "1970-13-01",
            "1970-01-01T0:0:0Z",
        ] {
            assert!(parse_time("t", bad).is_err(), "{bad}");
        }
    }
}
