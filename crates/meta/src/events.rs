//! Events (migration 0010): the audit log (`audit_events`), project and group webhooks
//! (`webhooks`), and the outbox of registry events (`registry_events`) with every delivery
//! attempt (`webhook_deliveries`).
//!
//! A registry change writes its audit row and its outbox row in its own transaction
//! ([`WriteTx::record_audit`], [`WriteTx::record_registry_event`]), so an event exists exactly
//! when the change does; the delivery job is enqueued in that transaction too. This module only
//! stores rows: who may read them, what an event looks like and how it is delivered are decided
//! above (`service`, `api`, the binary).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::jobs::NewJob;
use crate::store::{get_i64, MetaError, Store, WriteTx};
use crate::SourceType;

/// How an actor proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Password,
    PersonalAccessToken,
    DeployToken,
    JobToken,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Password => "password",
            TokenKind::PersonalAccessToken => "personal_access_token",
            TokenKind::DeployToken => "deploy_token",
            TokenKind::JobToken => "job_token",
        }
    }
}

/// Who did something, as the audit log records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// The user; `None` for anonymous callers, deploy tokens and the operator.
    pub user_id: Option<i64>,
    pub name: String,
    pub token: Option<(TokenKind, Option<i64>)>,
}

impl AuditActor {
    pub fn anonymous() -> AuditActor {
        AuditActor { user_id: None, name: String::new(), token: None }
    }

    /// The operator at the server's shell, or a background job acting for nobody.
    pub fn system(name: &str) -> AuditActor {
        AuditActor { user_id: None, name: name.to_string(), token: None }
    }

    /// `alice (personal_access_token 3)`: for the access log.
    pub fn label(&self) -> String {
        let name = if self.name.is_empty() { "anonymous" } else { &self.name };
        match self.token {
            Some((kind, Some(id))) => format!("{name} ({} {id})", kind.as_str()),
            Some((kind, None)) => format!("{name} ({})", kind.as_str()),
            None => name.to_string(),
        }
    }
}

/// Where a request came from: what distribution's events call `request`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOrigin {
    pub request_id: String,
    /// The client address (after trusted proxies).
    pub addr: String,
    /// The `Host` the client called.
    pub host: String,
    pub method: String,
    pub user_agent: String,
}

/// What an audit event is about (the listing it shows up in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntity {
    /// `Project`, `Group`, `User` or `Instance`.
    pub kind: &'static str,
    pub id: i64,
    pub path: String,
}

impl AuditEntity {
    pub fn instance() -> AuditEntity {
        AuditEntity { kind: "Instance", id: 0, path: String::new() }
    }

    pub fn project(id: i64, path: &str) -> AuditEntity {
        AuditEntity { kind: "Project", id, path: path.to_string() }
    }

    pub fn group(id: i64, path: &str) -> AuditEntity {
        AuditEntity { kind: "Group", id, path: path.to_string() }
    }

    pub fn user(id: i64, username: &str) -> AuditEntity {
        AuditEntity { kind: "User", id, path: username.to_string() }
    }

    pub fn source(kind: SourceType, id: i64, path: &str) -> AuditEntity {
        match kind {
            SourceType::Project => AuditEntity::project(id, path),
            SourceType::Group => AuditEntity::group(id, path),
        }
    }
}

/// One audit event to record.
#[derive(Clone, Debug)]
pub struct NewAuditEvent<'a> {
    pub actor: &'a AuditActor,
    pub origin: &'a RequestOrigin,
    pub entity: AuditEntity,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub target_details: String,
    /// Whether it succeeded (a failed login is recorded too).
    pub success: bool,
    pub details: serde_json::Value,
    pub at: i64,
}

/// A recorded audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub created_at: i64,
    pub author_id: Option<i64>,
    pub author_name: String,
    pub token_kind: Option<String>,
    pub token_id: Option<i64>,
    pub entity_type: String,
    pub entity_id: i64,
    pub entity_path: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub target_details: String,
    pub outcome: String,
    pub ip_address: Option<String>,
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

/// Whose audit events a listing shows.
#[derive(Clone, Debug)]
pub enum AuditScope {
    Instance,
    /// Events of the group and of everything below it (by path).
    Group {
        id: i64,
        path: String,
    },
    Project(i64),
}

/// An audit listing: a scope, a time window and a page (newest first).
#[derive(Clone, Debug)]
pub struct AuditFilter {
    pub scope: AuditScope,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub offset: i64,
    pub limit: i64,
}

/// A project or group webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub source_type: SourceType,
    pub source_id: i64,
    pub url: String,
    pub token: Option<String>,
    pub enable_ssl_verification: bool,
    pub container_registry_events: bool,
    pub created_at: i64,
}

/// A webhook's settings, as created or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    pub token: Option<String>,
    pub enable_ssl_verification: bool,
    pub container_registry_events: bool,
}

/// An outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryEvent {
    pub id: i64,
    pub project_id: Option<i64>,
    pub action: String,
    pub payload: serde_json::Value,
    pub created_at: i64,
}

/// One attempt to deliver an event to a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub receiver: String,
    pub attempt: i64,
    pub delivered: bool,
    pub response_code: Option<i64>,
    pub response: String,
    pub at: i64,
}

/// A statement with its bound values, on either backend.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn audit_from_row(r: &AnyRow) -> AuditEvent {
    let details: String = r.get("details");
    AuditEvent {
        id: get_i64(r, "id"),
        created_at: get_i64(r, "created_at"),
        author_id: r.get::<Option<i64>, _>("author_id"),
        author_name: r.get("author_name"),
        token_kind: r.get("token_kind"),
        token_id: r.get::<Option<i64>, _>("token_id"),
        entity_type: r.get("entity_type"),
        entity_id: get_i64(r, "entity_id"),
        entity_path: r.get("entity_path"),
        action: r.get("action"),
        target_type: r.get("target_type"),
        target_id: r.get("target_id"),
        target_details: r.get("target_details"),
        outcome: r.get("outcome"),
        ip_address: r.get("ip_address"),
        request_id: r.get("request_id"),
        user_agent: r.get("user_agent"),
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    }
}

fn webhook_from_row(r: &AnyRow) -> Webhook {
    let source: String = r.get("source_type");
    Webhook {
        id: get_i64(r, "id"),
        source_type: SourceType::parse(&source).unwrap_or(SourceType::Project),
        source_id: get_i64(r, "source_id"),
        url: r.get("url"),
        token: r.get("token"),
        enable_ssl_verification: get_i64(r, "enable_ssl_verification") != 0,
        container_registry_events: get_i64(r, "container_registry_events") != 0,
        created_at: get_i64(r, "created_at"),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

const INSERT_AUDIT: &str = "INSERT INTO audit_events (created_at, author_id, author_name, \
     token_kind, token_id, entity_type, entity_id, entity_path, action, target_type, target_id, \
     target_details, outcome, ip_address, request_id, user_agent, details) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

fn insert_audit<'q>(e: &'q NewAuditEvent<'q>) -> AnyQuery<'q> {
    sqlx::query(INSERT_AUDIT)
        .bind(e.at)
        .bind(e.actor.user_id)
        .bind(e.actor.name.as_str())
        .bind(e.actor.token.map(|(k, _)| k.as_str()))
        .bind(e.actor.token.and_then(|(_, id)| id))
        .bind(e.entity.kind)
        .bind(e.entity.id)
        .bind(e.entity.path.as_str())
        .bind(e.action)
        .bind(e.target_type)
        .bind(e.target_id.as_str())
        .bind(e.target_details.as_str())
        .bind(if e.success { "success" } else { "failure" })
        .bind(non_empty(&e.origin.addr))
        .bind(non_empty(&e.origin.request_id))
        .bind(non_empty(&e.origin.user_agent))
        .bind(e.details.to_string())
}

impl WriteTx<'_> {
    /// Records an audit event in this transaction: it exists if and only if the change does.
    pub async fn record_audit(&mut self, event: &NewAuditEvent<'_>) -> Result<(), MetaError> {
        insert_audit(event).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Adds an event to the outbox and the job that delivers it, in this transaction; answers
    /// the event's id.
    pub async fn record_registry_event(
        &mut self,
        project_id: Option<i64>,
        action: &str,
        payload: &serde_json::Value,
        delivery: impl FnOnce(i64) -> NewJob,
        now: i64,
    ) -> Result<i64, MetaError> {
        let row = sqlx::query(
            "INSERT INTO registry_events (project_id, action, payload, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(project_id)
        .bind(action)
        .bind(payload.to_string())
        .bind(now)
        .fetch_one(&mut *self.tx)
        .await?;
        let id = get_i64(&row, "id");
        self.insert_job(&delivery(id), now).await?;
        Ok(id)
    }

    /// The project whose path is the longest prefix of repository `name` (its owner), if any.
    pub async fn project_of_repository(
        &mut self,
        name: &str,
    ) -> Result<Option<(i64, String)>, MetaError> {
        let prefixes = crate::path_prefixes(name);
        if prefixes.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT id, full_path FROM projects WHERE full_path IN ({}) \
             ORDER BY LENGTH(full_path) DESC LIMIT 1",
            crate::store::placeholders(1, prefixes.len())
        );
        let mut q = sqlx::query(&sql);
        for p in &prefixes {
            q = q.bind(p);
        }
        let row = q.fetch_optional(&mut *self.tx).await?;
        Ok(row.map(|r| (get_i64(&r, "id"), r.get("full_path"))))
    }
}

/// The WHERE clause of an audit listing and its values (from `$1`).
fn audit_where(filter: &AuditFilter) -> (String, Vec<AuditBind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    match &filter.scope {
        AuditScope::Instance => {}
        AuditScope::Project(id) => {
            binds.push(AuditBind::Int(*id));
            clauses.push(format!("entity_type = 'Project' AND entity_id = ${}", binds.len()));
        }
        AuditScope::Group { id, path } => {
            binds.push(AuditBind::Int(*id));
            let id_at = binds.len();
            binds.push(AuditBind::Text(format!("{path}/")));
            let below = binds.len();
            clauses.push(format!(
                "((entity_type = 'Group' AND entity_id = ${id_at}) OR \
                 (entity_type IN ('Group', 'Project') AND \
                  SUBSTR(entity_path, 1, LENGTH(${below})) = ${below}))"
            ));
        }
    }
    if let Some(after) = filter.created_after {
        binds.push(AuditBind::Int(after));
        clauses.push(format!("created_at >= ${}", binds.len()));
    }
    if let Some(before) = filter.created_before {
        binds.push(AuditBind::Int(before));
        clauses.push(format!("created_at <= ${}", binds.len()));
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (clause, binds)
}

enum AuditBind {
    Int(i64),
    Text(String),
}

fn bind_all<'q>(mut q: AnyQuery<'q>, binds: &'q [AuditBind]) -> AnyQuery<'q> {
    for b in binds {
        q = match b {
            AuditBind::Int(i) => q.bind(*i),
            AuditBind::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

/// Binds a hook's settings in the order both of its statements name them.
fn bind_settings<'q>(q: AnyQuery<'q>, settings: &'q WebhookSettings) -> AnyQuery<'q> {
    q.bind(settings.url.as_str())
        .bind(settings.token.as_deref())
        .bind(settings.enable_ssl_verification as i64)
        .bind(settings.container_registry_events as i64)
}

impl Store {
    /// Records an audit event outside a registry change (logins, tokens, members, rules).
    pub async fn record_audit(&self, event: &NewAuditEvent<'_>) -> Result<(), MetaError> {
        insert_audit(event).execute(&self.pool).await?;
        Ok(())
    }

    /// One page of audit events, newest first, and how many match in all.
    pub async fn list_audit_events(
        &self,
        filter: &AuditFilter,
    ) -> Result<(Vec<AuditEvent>, i64), MetaError> {
        let (clause, binds) = audit_where(filter);
        let count_sql = format!("SELECT COUNT(*) AS n FROM audit_events{clause}");
        let total =
            get_i64(&bind_all(sqlx::query(&count_sql), &binds).fetch_one(&self.pool).await?, "n");
        let n = binds.len();
        let sql = format!(
            "SELECT * FROM audit_events{clause} ORDER BY id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), &binds)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await?;
        Ok((rows.iter().map(audit_from_row).collect(), total))
    }

    /// One audit event of `scope`.
    pub async fn audit_event(
        &self,
        scope: AuditScope,
        id: i64,
    ) -> Result<Option<AuditEvent>, MetaError> {
        let filter =
            AuditFilter { scope, created_after: None, created_before: None, offset: 0, limit: 1 };
        let (clause, binds) = audit_where(&filter);
        let joiner = if clause.is_empty() { " WHERE" } else { " AND" };
        let sql = format!("SELECT * FROM audit_events{clause}{joiner} id = ${}", binds.len() + 1);
        let row = bind_all(sqlx::query(&sql), &binds).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(audit_from_row))
    }

    /// Deletes audit events older than `before`; answers how many.
    pub async fn prune_audit_events(&self, before: i64) -> Result<u64, MetaError> {
        let done = sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // ---- webhooks ---------------------------------------------------------------------------

    pub async fn create_webhook(
        &self,
        source_type: SourceType,
        source_id: i64,
        settings: &WebhookSettings,
    ) -> Result<Webhook, MetaError> {
        let q = sqlx::query(
            "INSERT INTO webhooks (source_type, source_id, url, token, enable_ssl_verification, \
             container_registry_events, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING *",
        )
        .bind(source_type.as_str())
        .bind(source_id);
        let row =
            bind_settings(q, settings).bind(crate::now_millis()).fetch_one(&self.pool).await?;
        Ok(webhook_from_row(&row))
    }

    pub async fn webhooks(
        &self,
        source_type: SourceType,
        source_id: i64,
    ) -> Result<Vec<Webhook>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM webhooks WHERE source_type = $1 AND source_id = $2 ORDER BY id",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    pub async fn webhook(
        &self,
        source_type: SourceType,
        source_id: i64,
        id: i64,
    ) -> Result<Option<Webhook>, MetaError> {
        let row = sqlx::query(
            "SELECT * FROM webhooks WHERE source_type = $1 AND source_id = $2 AND id = $3",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    pub async fn update_webhook(
        &self,
        id: i64,
        settings: &WebhookSettings,
    ) -> Result<Option<Webhook>, MetaError> {
        let q = sqlx::query(
            "UPDATE webhooks SET url = $1, token = $2, enable_ssl_verification = $3, \
             container_registry_events = $4 WHERE id = $5 RETURNING *",
        );
        let row = bind_settings(q, settings).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    pub async fn delete_webhook(&self, id: i64) -> Result<bool, MetaError> {
        let done =
            sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// The hooks that receive registry events of project `project_id`: its own and those of
    /// every group above it, with `container_registry_events` on.
    pub async fn registry_event_hooks(&self, project_id: i64) -> Result<Vec<Webhook>, MetaError> {
        let Some(project) = self.project_by_id(project_id).await? else { return Ok(Vec::new()) };
        let groups = crate::path_prefixes(&project.full_path);
        let mut sql = String::from(
            "SELECT * FROM webhooks WHERE container_registry_events = 1 AND \
             ((source_type = 'project' AND source_id = $1)",
        );
        if groups.len() > 1 {
            sql.push_str(&format!(
                " OR (source_type = 'group' AND source_id IN \
                 (SELECT id FROM namespaces WHERE full_path IN ({})))",
                crate::store::placeholders(2, groups.len() - 1)
            ));
        }
        sql.push_str(") ORDER BY id");
        let mut q = sqlx::query(&sql).bind(project_id);
        for g in &groups[..groups.len() - 1] {
            q = q.bind(g.as_str());
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(webhook_from_row).collect())
    }

    // ---- the outbox -------------------------------------------------------------------------

    pub async fn registry_event(&self, id: i64) -> Result<Option<RegistryEvent>, MetaError> {
        let row = sqlx::query("SELECT * FROM registry_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| {
            let payload: String = r.get("payload");
            RegistryEvent {
                id: get_i64(&r, "id"),
                project_id: r.get::<Option<i64>, _>("project_id"),
                action: r.get("action"),
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                created_at: get_i64(&r, "created_at"),
            }
        }))
    }

    /// Records an event outside a registry change (a pull) with its delivery job.
    pub async fn record_registry_event(
        &self,
        project_id: Option<i64>,
        action: &str,
        payload: &serde_json::Value,
        delivery: impl FnOnce(i64) -> NewJob,
        now: i64,
    ) -> Result<i64, MetaError> {
        let mut w = self.write_tx().await?;
        let id = w.record_registry_event(project_id, action, payload, delivery, now).await?;
        w.commit().await?;
        Ok(id)
    }

    /// The delivery attempts of event `event_id`, oldest first.
    pub async fn delivery_attempts(
        &self,
        event_id: i64,
    ) -> Result<Vec<DeliveryAttempt>, MetaError> {
        let rows = sqlx::query("SELECT * FROM webhook_deliveries WHERE event_id = $1 ORDER BY id")
            .bind(event_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeliveryAttempt {
                receiver: r.get("receiver"),
                attempt: get_i64(r, "attempt"),
                delivered: get_i64(r, "delivered") != 0,
                response_code: r.get::<Option<i64>, _>("response_code"),
                response: r.get("response"),
                at: get_i64(r, "created_at"),
            })
            .collect())
    }

    pub async fn record_delivery_attempt(
        &self,
        event_id: i64,
        attempt: &DeliveryAttempt,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (event_id, receiver, attempt, delivered, \
             response_code, response, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event_id)
        .bind(attempt.receiver.as_str())
        .bind(attempt.attempt)
        .bind(attempt.delivered as i64)
        .bind(attempt.response_code)
        .bind(attempt.response.as_str())
        .bind(attempt.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes outbox rows (and their attempts) older than `before`.
    pub async fn prune_registry_events(&self, before: i64) -> Result<u64, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE event_id IN \
             (SELECT id FROM registry_events WHERE created_at < $1)",
        )
        .bind(before)
        .execute(&mut *w.tx)
        .await?;
        let done = sqlx::query("DELETE FROM registry_events WHERE created_at < $1")
            .bind(before)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }
}
