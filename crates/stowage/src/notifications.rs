//! Delivery of registry events (the `webhook_delivery` job) and the pruning of the audit log
//! and the outbox (the periodic `audit_prune` job).
//!
//! The write service puts every event in the outbox (`registry_events`) with a delivery job,
//! in the transaction of the change, so no event is lost across restarts and none blocks a
//! push. One job delivers one event to every receiver — the configured
//! `notifications.endpoints` and the project's and its groups' hooks with
//! `container_registry_events` — in distribution's envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `{"events":[…]}`). Each attempt is
//! recorded (`webhook_deliveries`: status, response code, the start of the body); a receiver
//! that took the event is never sent it again, and while any has not, the job fails and the
//! queue retries it with backoff. Redirects are not followed: an answer other than 2xx is a
//! failure. Hooks (which users configure) reach only public addresses unless
//! `webhooks.allow_local_requests` (see `service::outbound`): the check runs on the address
//! each connection actually uses, so a name that resolves to a local address is refused too.

use std::time::Duration;

use jobs::{JobContext, JobError, Runner};
use meta::events::{DeliveryAttempt, RegistryEvent};
use meta::Store;
use serde::Deserialize;

use crate::config::{parse_duration, Config, Endpoint};

/// Prunes audit events older than `audit.retention` and delivered or given-up outbox events.
pub const AUDIT_PRUNE: &str = "audit_prune";
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Outbox rows are kept this long: past every retry of their delivery.
const OUTBOX_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// The envelope's media type (distribution's).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// How much of a receiver's answer an attempt records.
const RESPONSE_BYTES: usize = 1024;
/// How long a delivery to a hook may take.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The setting that lets hooks reach the local network.
const HOOKS_SETTING: &str = "webhooks.allow_local_requests";

/// A receiver of events.
struct Receiver {
    /// `endpoint:<name>` or `hook:<id>`: what attempts are recorded under.
    key: String,
    url: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    verify_tls: bool,
    /// Only public addresses may be reached (a hook, unless `webhooks.allow_local_requests`).
    public_only: bool,
    /// Failed attempts after which `backoff` is waited between attempts.
    threshold: u32,
    backoff: Duration,
}

/// The configured endpoints, checked once at start.
#[derive(Clone)]
pub struct Notifier {
    store: Store,
    endpoints: std::sync::Arc<Vec<(Endpoint, Duration, Duration)>>,
    /// By `[public_only][verify_tls]`.
    clients: [[reqwest::Client; 2]; 2],
    hooks_allow_local: bool,
}

fn client(verify_tls: bool, public_only: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(!verify_tls)
        .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")));
    if public_only {
        let resolver = service::outbound::PublicAddressesOnly { setting: HOOKS_SETTING };
        builder = builder.no_proxy().dns_resolver(std::sync::Arc::new(resolver));
    }
    Ok(builder.build()?)
}

impl Notifier {
    pub fn new(store: Store, config: &Config) -> anyhow::Result<Notifier> {
        let mut endpoints = Vec::new();
        for e in &config.notifications.endpoints {
            endpoints.push((e.clone(), parse_duration(&e.timeout)?, parse_duration(&e.backoff)?));
        }
        Ok(Notifier {
            store,
            endpoints: std::sync::Arc::new(endpoints),
            clients: [
                [client(false, false)?, client(true, false)?],
                [client(false, true)?, client(true, true)?],
            ],
            hooks_allow_local: config.webhooks.allow_local_requests,
        })
    }

    /// The receivers of `event`: enabled endpoints that do not ignore it, and the hooks of its
    /// project and the project's groups.
    async fn receivers(&self, event: &RegistryEvent) -> Result<Vec<Receiver>, JobError> {
        let media_type = event.payload["target"]["mediaType"].as_str().unwrap_or("");
        let mut out = Vec::new();
        for (e, timeout, backoff) in self.endpoints.iter() {
            let ignored = e.disabled
                || e.ignore.actions.contains(&event.action)
                || (!media_type.is_empty()
                    && e.ignoredmediatypes
                        .iter()
                        .chain(&e.ignore.mediatypes)
                        .any(|m| m == media_type));
            if ignored {
                continue;
            }
            out.push(Receiver {
                key: format!("endpoint:{}", e.name),
                url: e.url.clone(),
                headers: e
                    .headers
                    .iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                    .collect(),
                timeout: *timeout,
                verify_tls: true,
                public_only: false,
                threshold: e.threshold,
                backoff: *backoff,
            });
        }
        if let Some(project_id) = event.project_id {
            for hook in self.store.registry_event_hooks(project_id).await? {
                let mut headers =
                    vec![("X-Gitlab-Event".to_string(), "Registry Event".to_string())];
                if let Some(token) = &hook.token {
                    headers.push(("X-Gitlab-Token".to_string(), token.clone()));
                }
                out.push(Receiver {
                    key: format!("hook:{}", hook.id),
                    url: hook.url,
                    headers,
                    timeout: HOOK_TIMEOUT,
                    verify_tls: hook.enable_ssl_verification,
                    public_only: !self.hooks_allow_local,
                    threshold: 0,
                    backoff: Duration::ZERO,
                });
            }
        }
        Ok(out)
    }

    /// The `webhook_delivery` job: delivers one event to every receiver that has not taken it.
    pub async fn deliver(&self, ctx: JobContext) -> Result<(), JobError> {
        #[derive(Deserialize)]
        struct Payload {
            event_id: i64,
        }
        let Payload { event_id } = ctx.payload()?;
        // Pruned: nothing left to deliver.
        let Some(event) = self.store.registry_event(event_id).await? else { return Ok(()) };
        let attempts = self.store.delivery_attempts(event_id).await?;
        let envelope = serde_json::json!({ "events": [event.payload] }).to_string();
        let now = meta::now_millis();
        let mut pending = Vec::new();
        for receiver in self.receivers(&event).await? {
            let mine: Vec<&DeliveryAttempt> =
                attempts.iter().filter(|a| a.receiver == receiver.key).collect();
            if mine.iter().any(|a| a.delivered) {
                continue;
            }
            // distribution's threshold and backoff: after `threshold` failures, wait `backoff`
            // between attempts.
            let waiting = receiver.threshold > 0
                && mine.len() as u32 >= receiver.threshold
                && mine.last().is_some_and(|a| now - a.at < receiver.backoff.as_millis() as i64);
            if waiting {
                pending.push(receiver.key);
                continue;
            }
            let attempt = self.post(&receiver, &envelope, mine.len() as i64 + 1).await;
            if !attempt.delivered {
                tracing::warn!(receiver = %receiver.key, event = event_id, attempt = attempt.attempt,
                    code = attempt.response_code, response = %attempt.response, "event delivery failed");
                pending.push(receiver.key.clone());
            }
            self.store.record_delivery_attempt(event_id, &attempt).await?;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(JobError::Retry(format!("not delivered yet to {}", pending.join(", "))))
        }
    }

    async fn post(&self, r: &Receiver, envelope: &str, attempt: i64) -> DeliveryAttempt {
        let (delivered, response_code, response) = self.send(r, envelope).await;
        DeliveryAttempt {
            receiver: r.key.clone(),
            attempt,
            delivered,
            response_code,
            response,
            at: meta::now_millis(),
        }
    }

    /// Sends the envelope to `r`: whether it was taken, the answer's status and its start.
    async fn send(&self, r: &Receiver, envelope: &str) -> (bool, Option<i64>, String) {
        let client = &self.clients[usize::from(r.public_only)][usize::from(r.verify_tls)];
        // Addresses written in the URL never reach the resolver: check them here.
        let written = url::Url::parse(&r.url).ok();
        if let Some(host) = written.as_ref().and_then(|u| u.host()) {
            if let Err(why) = service::outbound::check_host(&host, !r.public_only) {
                return (false, None, format!("{host} {why}"));
            }
        }
        let mut request = client
            .post(&r.url)
            .timeout(r.timeout)
            .header("content-type", EVENTS_MEDIA_TYPE)
            .body(envelope.to_string());
        for (k, v) in &r.headers {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(mut answer) => {
                let status = answer.status();
                let mut body = Vec::new();
                // Only the start of the answer is read and kept.
                while body.len() < RESPONSE_BYTES {
                    match answer.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                body.truncate(RESPONSE_BYTES);
                let text = String::from_utf8_lossy(&body).into_owned();
                (status.is_success(), Some(i64::from(status.as_u16())), text)
            }
            Err(e) => (false, None, e.to_string()),
        }
    }
}

/// Registers event delivery and the audit prune on `runner`.
pub fn register(runner: &mut Runner, config: &Config, store: &Store) -> anyhow::Result<()> {
    let notifier = Notifier::new(store.clone(), config)?;
    runner.handle(service::events::DELIVERY_JOB, move |ctx| {
        let notifier = notifier.clone();
        async move { notifier.deliver(ctx).await }
    });
    let retention = config.audit.retention()?;
    let store = store.clone();
    runner.handle(AUDIT_PRUNE, move |ctx| {
        let store = store.clone();
        async move {
            if let Some(retention) = retention {
                let pruned =
                    store.prune_audit_events(ctx.now - retention.as_millis() as i64).await?;
                if pruned > 0 {
                    tracing::info!(pruned, "pruned audit events past audit.retention");
                }
            }
            store.prune_registry_events(ctx.now - OUTBOX_RETENTION.as_millis() as i64).await?;
            Ok(())
        }
    });
    runner.every(AUDIT_PRUNE, PRUNE_INTERVAL, serde_json::json!({}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    /// A name that resolves only to loopback is refused by the resolver itself (the path a
    /// hook's host name takes at connect time, past the check of the URL as written).
    #[tokio::test]
    async fn hook_names_resolving_to_loopback_are_refused() {
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let resolver = service::outbound::PublicAddressesOnly { setting: HOOKS_SETTING };
        let refusal = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(refusal.contains(service::outbound::LOCAL_NETWORK_REFUSED), "{refusal}");
    }
}
