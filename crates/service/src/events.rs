//! What a registry change leaves behind besides the change: an audit row and, for webhooks and
//! notification endpoints, an event in CNCF distribution's format, both written in the
//! change's transaction (the outbox) with the job that delivers the event. Delivery itself is
//! the binary's (`notifications.rs`): this module decides what an event says.

use meta::events::{AuditActor, AuditEntity, NewAuditEvent, RequestOrigin};
use meta::jobs::NewJob;
use meta::{MetaError, WriteTx};
use serde_json::{json, Value};

/// The job kind that delivers one outbox event to every receiver.
pub const DELIVERY_JOB: &str = "webhook_delivery";
/// Attempts a delivery gets: with the queue's backoff (doubling, capped at `jobs.maxbackoff`),
/// a receiver may be down for about a day before its events are given up.
pub const DELIVERY_ATTEMPTS: i64 = 30;

/// Who asks for a change and from where: what the audit log and events record. Background
/// jobs keep it in their payload, so a change made later is still recorded as the caller's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestContext {
    pub actor: AuditActor,
    pub origin: RequestOrigin,
}

impl RequestContext {
    /// A change made by the server itself (cleanup policies, jobs without a caller).
    pub fn system(name: &str) -> RequestContext {
        RequestContext { actor: AuditActor::system(name), origin: RequestOrigin::default() }
    }
}

/// This instance, as events name their `source`, and which events are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSettings {
    /// `host:port` this instance serves on.
    pub source_addr: String,
    /// Chosen at start: tells instances apart.
    pub instance_id: String,
    /// Whether pulls write events too (`notifications.events.pull`; off by default).
    pub pull_events: bool,
}

/// The subject of a registry event (distribution's `target`).
#[derive(Clone, Debug, Default)]
pub struct EventTarget<'a> {
    pub repository: &'a str,
    pub media_type: &'a str,
    pub digest: &'a str,
    pub size: i64,
    pub tag: Option<&'a str>,
}

/// Push, pull or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    Push,
    Pull,
    Delete,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Push => "push",
            EventAction::Pull => "pull",
            EventAction::Delete => "delete",
        }
    }
}

/// One event in distribution's envelope format (`events[i]`).
pub fn event_json(
    settings: &EventSettings,
    ctx: &RequestContext,
    action: EventAction,
    target: &EventTarget<'_>,
    now: i64,
) -> Value {
    let mut t = json!({ "repository": target.repository });
    if !target.digest.is_empty() {
        t["mediaType"] = json!(target.media_type);
        t["digest"] = json!(target.digest);
        t["size"] = json!(target.size);
        t["length"] = json!(target.size);
        let host =
            if ctx.origin.host.is_empty() { &settings.source_addr } else { &ctx.origin.host };
        t["url"] =
            json!(format!("http://{host}/v2/{}/manifests/{}", target.repository, target.digest));
    }
    if let Some(tag) = target.tag {
        t["tag"] = json!(tag);
    }
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "timestamp": meta::rfc3339(now),
        "action": action.as_str(),
        "target": t,
        "request": {
            "id": ctx.origin.request_id,
            "addr": ctx.origin.addr,
            "host": ctx.origin.host,
            "method": ctx.origin.method,
            "useragent": ctx.origin.user_agent,
        },
        "actor": { "name": ctx.actor.name },
        "source": { "addr": settings.source_addr, "instanceID": settings.instance_id },
    })
}

/// The delivery job of outbox event `event_id`.
pub fn delivery_job(event_id: i64, now: i64) -> NewJob {
    NewJob {
        kind: DELIVERY_JOB.to_string(),
        payload: json!({ "event_id": event_id }),
        dedupe_key: Some(format!("{DELIVERY_JOB}/{event_id}")),
        run_at: now,
        max_attempts: DELIVERY_ATTEMPTS,
    }
}

/// What the audit log says about a registry change.
pub struct RegistryAudit<'a> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub target_details: String,
    pub details: Value,
}

/// Records a registry change inside its transaction `w`: the audit row, and the event with
/// its delivery job. The repository's project (if any) is what both are about.
pub(crate) async fn record_change(
    w: &mut WriteTx<'_>,
    settings: &EventSettings,
    ctx: &RequestContext,
    audit: RegistryAudit<'_>,
    event: Option<(EventAction, &EventTarget<'_>)>,
    repository: &str,
    now: i64,
) -> Result<(), MetaError> {
    let project = w.project_of_repository(repository).await?;
    let entity = match &project {
        Some((id, path)) => AuditEntity::project(*id, path),
        None => AuditEntity::instance(),
    };
    w.record_audit(&NewAuditEvent {
        actor: &ctx.actor,
        origin: &ctx.origin,
        entity,
        action: audit.action,
        target_type: audit.target_type,
        target_id: audit.target_id,
        target_details: audit.target_details,
        success: true,
        details: audit.details,
        at: now,
    })
    .await?;
    if let Some((action, target)) = event {
        let payload = event_json(settings, ctx, action, target, now);
        let project_id = project.map(|(id, _)| id);
        w.record_registry_event(
            project_id,
            action.as_str(),
            &payload,
            |id| delivery_job(id, now),
            now,
        )
        .await?;
    }
    Ok(())
}
