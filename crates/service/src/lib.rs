//! The write service: THE place that changes registry state. Upload commit (with the link of
//! a blob that is already stored), cross-repository mount, blob unlink, manifest put with its
//! tags, tag delete, manifest delete and repository delete all run here, each in one metadata
//! transaction that also runs the protection and immutability checks
//! (`meta::RepositoryProtection`) against the state it has locked, and queues for garbage
//! collection whatever the change may have orphaned. The `/v2` handlers, the REST API and
//! cleanup policies call it; none of them writes registry state on its own. The GC review
//! ([`WriteService::review_blobs`], [`WriteService::review_manifests`]) lives here too, because
//! removing a dangling manifest is the same operation as a user's manifest delete.
//!
//! All SQL stays in `meta` (typed operations on `meta::WriteTx`); all bytes in `blobstore`.
//! Publishing an uploaded blob happens inside the transaction that records it (see
//! [`WriteService::commit_upload`]), so garbage collection can never delete bytes that a
//! committed `blobs` row needs.

pub mod cleanup;
pub mod dependency_proxy;
pub mod events;
pub mod mirrors;
pub mod outbound;
pub mod protection;
pub mod repository_delete;
pub mod settings;
pub mod tokens;

use std::time::Duration;

use auth::access::RepositoryAccess;
use blobstore::{BlobError, BlobStore, ResumableSha256};
use events::{record_change, EventAction, EventTarget, RegistryAudit};
pub use events::{EventSettings, RequestContext};
use meta::events::{AuditEntity, NewAuditEvent};
use meta::{
    access_level, BlobRecord, GcEvent, MetaError, NewManifest, PutManifestError, Refusal,
    RefusalKind, RepositoryProtection, ReviewLock, ReviewSchedule, Store, UnlinkOutcome,
};
use oci::{Digest, RepositoryName, Tag};
use rand::Rng;
use serde_json::json;

/// How often a write the database rolled back as a deadlock victim runs in all.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// Garbage-collection settings the write path needs (`gc.reviewafter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSettings {
    /// Delay before a queued item is reviewed; up to 60 s of jitter (at most the delay itself) is
    /// added when not zero.
    pub review_after: Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings { review_after: Duration::from_secs(24 * 3600) }
    }
}

/// How long a push has to finish: the review of an item a writer relies on (a blob whose
/// existence a push checked, a manifest an index or tag is about to point at) is pushed back
/// this far, and a freshly uploaded or mounted blob is not reviewed sooner, however short
/// `gc.reviewafter` is (GitLab: an hour). So "no repository link needs it for an unfinished
/// push" holds even with `gc.reviewafter: 0s`.
const PUSH_WINDOW: Duration = Duration::from_secs(3600);
/// Jitter added to `gc.reviewafter` when it is not zero, so items queued together spread out.
const JITTER_MS: i64 = 60_000;
/// When an item a writer holds is looked at again.
const BUSY_RETRY_MS: i64 = 1_000;
/// How long bytes whose record failed to commit wait before the storage deleter looks at
/// them: longer than any write transaction that may be about to commit a record of them.
pub const ORPHANED_BYTES_DELAY: Duration = Duration::from_secs(3600);

/// Who asks for a write, for protection rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A caller at this access level on the repository's project (GitLab's levels,
    /// `meta::access_level`; `ADMIN` for instance admins and an open registry).
    Level(i64),
    /// A cleanup policy: it deletes no tag that any protection or immutable rule covers.
    CleanupPolicy,
}

impl Actor {
    fn level(self) -> i64 {
        match self {
            Actor::Level(level) => level,
            Actor::CleanupPolicy => access_level::NONE,
        }
    }
}

impl From<&RepositoryAccess> for Actor {
    fn from(access: &RepositoryAccess) -> Actor {
        Actor::Level(access.role())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A protection or immutable rule refuses the change; the message names the rule.
    #[error("{}", .0.message)]
    Refused(Refusal),
    #[error("blob {0} is not in this repository")]
    BlobUnknown(String),
    #[error("manifest {0} referenced by the index is not in this repository")]
    ManifestUnknown(String),
    #[error("tag {0} is immutable and points at another manifest")]
    TagFrozen(String),
    /// A manifest delete refused because an index of the repository lists the manifest.
    #[error("manifest {manifest} is listed by index {index}{}; delete the index or its tags first", tag.as_ref().map(|t| format!(" (tag {t})")).unwrap_or_default())]
    ManifestReferenced { manifest: String, index: String, tag: Option<String> },
    /// The upload session got another chunk, or ended, after the committing request read it
    /// (see [`WriteService::commit_upload_session`]); nothing was stored.
    #[error("the upload session changed while this request completed it")]
    UploadSessionChanged,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl From<PutManifestError> for ServiceError {
    fn from(e: PutManifestError) -> Self {
        match e {
            PutManifestError::BlobUnknown(d) => ServiceError::BlobUnknown(d),
            PutManifestError::ManifestUnknown(d) => ServiceError::ManifestUnknown(d),
            PutManifestError::TagFrozen(t) => ServiceError::TagFrozen(t),
            PutManifestError::Meta(e) => ServiceError::Meta(e),
        }
    }
}

/// What a review pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewReport {
    /// Due review rows looked at.
    pub reviewed: usize,
    pub deleted: Vec<Removed>,
    /// Reviewed items left alone: still referenced, gone already, or held by a writer (those
    /// are looked at again shortly).
    pub kept: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedKind {
    Blob,
    Manifest,
}

/// One item a review deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub kind: RemovedKind,
    pub digest: String,
    /// The manifest's repository; `None` for blobs, which belong to no repository.
    pub repository: Option<String>,
    pub size: i64,
    /// The event that queued the review (`tag_delete`, `manifest_delete`, …).
    pub reason: String,
}

/// The write service. Cheap to clone.
#[derive(Clone)]
pub struct WriteService {
    store: Store,
    blobs: BlobStore,
    gc: GcSettings,
    events: EventSettings,
}

impl WriteService {
    pub fn new(store: Store, blobs: BlobStore, gc: GcSettings) -> WriteService {
        WriteService { store, blobs, gc, events: EventSettings::default() }
    }

    /// The same service, naming this instance in its events as `events` says.
    pub fn with_events(mut self, events: EventSettings) -> WriteService {
        self.events = events;
        self
    }

    pub fn event_settings(&self) -> &EventSettings {
        &self.events
    }

    /// Records a write that was refused (a protection rule, an index that lists the manifest)
    /// in the audit log. Its transaction was rolled back, so this is a write of its own; a
    /// failure to record is logged, and the refusal still answered.
    async fn audit_refusal(
        &self,
        ctx: &RequestContext,
        repo: &RepositoryName,
        action: &str,
        target: (&str, String),
        error: &ServiceError,
    ) {
        let project = match auth::policy::project_for_image(&self.store, repo.as_str()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "recording a refused write in the audit log failed");
                return;
            }
        };
        let entity = match &project {
            Some(p) => AuditEntity::project(p.id, &p.full_path),
            None => AuditEntity::instance(),
        };
        let event = NewAuditEvent {
            actor: &ctx.actor,
            origin: &ctx.origin,
            entity,
            action,
            target_type: target.0,
            target_details: target.1.clone(),
            target_id: target.1,
            success: false,
            details: json!({ "error": error.to_string() }),
            at: meta::now_millis(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "recording a refused write in the audit log failed");
        }
    }

    /// Writes a pull event when `notifications.events.pull` asks for them (no audit row: a
    /// pull changes nothing). A failure is logged; the pull is answered anyway.
    pub async fn record_pull(&self, ctx: &RequestContext, target: &EventTarget<'_>) {
        if !self.events.pull_events {
            return;
        }
        let now = meta::now_millis();
        let project = match auth::policy::project_for_image(&self.store, target.repository).await {
            Ok(p) => p.map(|p| p.id),
            Err(e) => {
                tracing::warn!(error = %e, "recording a pull event failed");
                return;
            }
        };
        let payload = events::event_json(&self.events, ctx, EventAction::Pull, target, now);
        let recorded = self
            .store
            .record_registry_event(
                project,
                EventAction::Pull.as_str(),
                &payload,
                |id| events::delivery_job(id, now),
                now,
            )
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording a pull event failed");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn gc_settings(&self) -> GcSettings {
        self.gc
    }

    /// When rows queued at `now` fall due, and how far a relied-on item's review is pushed.
    fn schedule_at(&self, now: i64) -> ReviewSchedule {
        let delay = self.gc.review_after.as_millis().min(i64::MAX as u128 / 4) as i64;
        // Spreads reviews queued together; never more than the delay itself, so a short
        // `gc.reviewafter` (seconds, in tests and small installations) stays short.
        let jitter_max = JITTER_MS.min(delay);
        let jitter = if delay > 0 { rand::thread_rng().gen_range(0..=jitter_max) } else { 0 };
        let postpone = PUSH_WINDOW.as_millis() as i64;
        ReviewSchedule { now, due: now + delay + jitter, postpone_to: now + postpone }
    }

    /// The schedule for a blob a push just stored or mounted: reviewed no sooner than the
    /// push window, so its manifest can still arrive.
    fn pushed_blob_schedule(&self) -> ReviewSchedule {
        let schedule = self.schedule();
        ReviewSchedule { due: schedule.due.max(schedule.postpone_to), ..schedule }
    }

    fn schedule(&self) -> ReviewSchedule {
        self.schedule_at(meta::now_millis())
    }

    async fn protection(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<RepositoryProtection>, MetaError> {
        self.store.protection_for_repository(repo.as_str()).await
    }

    // ---- blobs --------------------------------------------------------------------------

    /// Completes an upload: joins and verifies the parts into a staging object (outside any
    /// transaction: it may take long), then, in one transaction, records the blob (or locks
    /// the row of the blob already stored), cancels a pending deletion of its bytes, publishes
    /// the bytes, links the blob to `repo`, queues it for review (`blob_upload`) and ends the
    /// upload session's row (its parts in storage are the caller's to delete). A
    /// [`BlobError::DigestMismatch`] means the content is not what the client named.
    pub async fn commit_upload(
        &self,
        repo: &RepositoryName,
        upload_id: &str,
        parts: &[blobstore::UploadPart],
        hasher: &ResumableSha256,
        digest: &Digest,
    ) -> Result<(), ServiceError> {
        self.commit(repo, upload_id, None, parts, hasher, digest).await
    }

    /// [`commit_upload`](Self::commit_upload) of a `/v2` upload session read at
    /// `recorded_size` bytes, whose `parts` may end with a last chunk the session never
    /// recorded (a `PUT` with a body): the session ends only if it still holds
    /// `recorded_size` bytes, in the transaction that publishes the blob. A chunk another
    /// request appended meanwhile, or an end that came first, is
    /// [`ServiceError::UploadSessionChanged`] and stores nothing.
    pub async fn commit_upload_session(
        &self,
        repo: &RepositoryName,
        upload_id: &str,
        recorded_size: i64,
        parts: &[blobstore::UploadPart],
        hasher: &ResumableSha256,
        digest: &Digest,
    ) -> Result<(), ServiceError> {
        self.commit(repo, upload_id, Some(recorded_size), parts, hasher, digest).await
    }

    async fn commit(
        &self,
        repo: &RepositoryName,
        upload_id: &str,
        recorded_size: Option<i64>,
        parts: &[blobstore::UploadPart],
        hasher: &ResumableSha256,
        digest: &Digest,
    ) -> Result<(), ServiceError> {
        let staged = self.blobs.stage_upload(upload_id, parts, hasher, digest).await?;
        let size = hasher.len() as i64;
        let schedule = self.pushed_blob_schedule();
        let mut w = match self.store.write_tx().await {
            Ok(w) => w,
            Err(e) => {
                staged.discard().await;
                return Err(e.into());
            }
        };
        let recorded =
            record_blob(&mut w, repo, digest, size, GcEvent::BlobUpload, &schedule).await;
        let recorded = match recorded {
            // The session ends with the commit that publishes its blob (one commit, not two);
            // its parts in storage are the caller's to remove afterwards.
            Ok(()) => match recorded_size {
                None => w.end_upload(upload_id).await.map(|_| ()).map_err(ServiceError::from),
                Some(size) => match w.end_upload_at(upload_id, size).await {
                    Ok(meta::EndedUpload::Ended) => Ok(()),
                    Ok(meta::EndedUpload::Moved | meta::EndedUpload::Gone) => {
                        Err(ServiceError::UploadSessionChanged)
                    }
                    Err(e) => Err(e.into()),
                },
            },
            Err(e) => Err(e.into()),
        };
        if let Err(e) = recorded {
            staged.discard().await;
            return Err(e);
        }
        // Inside the transaction: a deleter of these bytes that started before waited for
        // `store_blob`; one that starts later finds the blobs row.
        staged.publish().await?;
        if let Err(e) = w.commit().await {
            self.collect_orphaned_bytes(digest, size).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// The bytes of `digest` were published but the transaction recording them failed to
    /// commit: queue them for the storage deleter, which deletes them only if no `blobs` row
    /// needs them by then. Not before [`ORPHANED_BYTES_DELAY`]: a concurrent push of the same
    /// digest may have a `blobs` row that is not committed yet. If the database cannot take
    /// even that, the bytes stay (harmless, and overwritten by the next push of the digest)
    /// and the log says so.
    async fn collect_orphaned_bytes(&self, digest: &Digest, size: i64) {
        let at = meta::now_millis() + ORPHANED_BYTES_DELAY.as_millis() as i64;
        match self.store.gc_queue_orphaned_bytes(digest.as_str(), size, at).await {
            Ok(()) => tracing::warn!(
                %digest, size,
                "a blob's bytes were stored but its record failed to commit; queued them for garbage collection"
            ),
            Err(e) => tracing::error!(
                %digest, size, error = %e,
                "a blob's bytes were stored but its record failed to commit, and queueing them for garbage collection failed too; they stay in storage"
            ),
        }
    }

    /// Links blob `digest`, stored already, into `repo` (a cross-repository mount; the caller
    /// has checked that it may read a repository holding it) and queues it for review
    /// (`blob_mount`). `None`: the blob is not stored (any more).
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, ServiceError> {
        let schedule = self.pushed_blob_schedule();
        let mut w = self.store.write_tx().await?;
        let Some(blob) = w.lock_blob(digest.as_str(), &schedule).await? else { return Ok(None) };
        let repo_id = w.ensure_repository(repo).await?;
        w.link_blob(repo_id, digest.as_str()).await?;
        w.queue_blob_review(digest.as_str(), GcEvent::BlobMount, &schedule).await?;
        w.commit().await?;
        Ok(Some(blob))
    }

    /// Removes the link between `repo` and the blob unless a manifest of `repo` references it
    /// (`DELETE /v2/<name>/blobs/<digest>`); queues the blob for review (`blob_unlink`).
    pub async fn unlink_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<UnlinkOutcome, ServiceError> {
        let schedule = self.schedule();
        let mut w = self.store.write_tx().await?;
        let outcome = w.unlink_blob(repo, digest, &schedule).await?;
        if outcome == UnlinkOutcome::Unlinked {
            w.commit().await?;
        }
        Ok(outcome)
    }

    // ---- manifests and tags -------------------------------------------------------------

    /// Stores a manifest (parsed and validated by the surface) and points `tags` at it, after
    /// the protection rules allowed `actor` to push it and to create or move each tag as the
    /// locked tag rows say. Queues the manifest (`manifest_upload`) and the manifest a moved
    /// tag left (`tag_switch`).
    /// A push PostgreSQL rolls back as a deadlock victim runs again (see `retry_deadlocks`).
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        actor: Actor,
        manifest: &NewManifest,
        tags: &[Tag],
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let result =
            retry_deadlocks(|| self.put_manifest_once(repo, actor, manifest, tags, ctx)).await;
        if let Err(e @ (ServiceError::Refused(_) | ServiceError::TagFrozen(_))) = &result {
            let target = match tags.first() {
                Some(tag) => ("Tag", format!("{repo}:{tag}")),
                None => ("Manifest", format!("{repo}@{}", manifest.digest)),
            };
            self.audit_refusal(ctx, repo, "manifest_push", target, e).await;
        }
        result
    }

    async fn put_manifest_once(
        &self,
        repo: &RepositoryName,
        actor: Actor,
        manifest: &NewManifest,
        tags: &[Tag],
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let protection = self.protection(repo).await?;
        let frozen: Vec<Tag> = match &protection {
            Some(p) => tags.iter().filter(|t| p.is_immutable(t.as_str())).cloned().collect(),
            None => Vec::new(),
        };
        let schedule = self.schedule();
        let mut w = self.store.write_tx().await?;
        let repo_id = w.ensure_repository(repo).await?;
        let mut previous = Vec::with_capacity(tags.len());
        for tag in tags {
            previous.push(w.tag_target(repo_id, tag.as_str()).await?);
        }
        if let Some(protection) = &protection {
            let level = actor.level();
            if tags.is_empty() {
                protection.check_push(None, false, level).map_err(ServiceError::Refused)?;
            }
            for (tag, current) in tags.iter().zip(&previous) {
                let moves = current.as_deref().is_some_and(|d| d != manifest.digest.as_str());
                protection
                    .check_push(Some(tag.as_str()), moves, level)
                    .map_err(ServiceError::Refused)?;
            }
        }
        w.put_manifest(repo_id, manifest, tags, &frozen, &schedule).await?;
        let digest = manifest.digest.as_str();
        let size = manifest.payload.len() as i64;
        let target = |tag| EventTarget {
            repository: repo.as_str(),
            media_type: &manifest.media_type,
            digest,
            size,
            tag,
        };
        let untagged = target(None);
        let manifest_audit = RegistryAudit {
            action: "manifest_push",
            target_type: "Manifest",
            target_id: digest.to_string(),
            target_details: format!("{repo}@{digest}"),
            details: json!({ "media_type": manifest.media_type, "size": size }),
        };
        // One push event per manifest put, per tag when it was pushed by tag (as distribution).
        let event = tags.is_empty().then_some((EventAction::Push, &untagged));
        record_change(
            &mut w,
            &self.events,
            ctx,
            manifest_audit,
            event,
            repo.as_str(),
            schedule.now,
        )
        .await?;
        for (tag, current) in tags.iter().zip(&previous) {
            let action = match current.as_deref() {
                None => "tag_push",
                Some(old) if old != digest => "tag_move",
                Some(_) => "tag_push",
            };
            let audit = RegistryAudit {
                action,
                target_type: "Tag",
                target_id: tag.to_string(),
                target_details: format!("{repo}:{tag}"),
                details: json!({ "from": current, "to": digest }),
            };
            let tagged = target(Some(tag.as_str()));
            let event = Some((EventAction::Push, &tagged));
            record_change(&mut w, &self.events, ctx, audit, event, repo.as_str(), schedule.now)
                .await?;
        }
        w.commit().await?;
        Ok(())
    }

    /// THE tag delete, for `/v2`, the REST API (single and bulk) and cleanup policies: inside
    /// one transaction it locks the tag, asks the protection rules whether `actor` may delete
    /// it ([`ServiceError::Refused`] if not), deletes it and queues its manifest for review
    /// (`tag_delete`). Answers whether the tag existed.
    pub async fn delete_tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        actor: Actor,
        ctx: &RequestContext,
    ) -> Result<bool, ServiceError> {
        let result =
            retry_deadlocks(|| self.delete_tags_once(repo, std::slice::from_ref(tag), actor, ctx))
                .await;
        if let Err(e @ ServiceError::Refused(_)) = &result {
            self.audit_refusal(ctx, repo, "tag_delete", ("Tag", format!("{repo}:{tag}")), e).await;
        }
        result.map(|deleted| !deleted.is_empty())
    }

    /// Several tags of one repository deleted together (the tag page's multi-select): all or
    /// nothing. In one transaction every named tag is locked and checked as [`Self::delete_tag`]
    /// checks one; if the rules refuse any of them, none is deleted and the refusal (naming the
    /// tag and its rule) is the answer. Answers the tags that existed and are now deleted.
    pub async fn delete_tags(
        &self,
        repo: &RepositoryName,
        tags: &[Tag],
        actor: Actor,
        ctx: &RequestContext,
    ) -> Result<Vec<Tag>, ServiceError> {
        let result = retry_deadlocks(|| self.delete_tags_once(repo, tags, actor, ctx)).await;
        if let Err(e @ ServiceError::Refused(_)) = &result {
            let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
            let target = format!("{repo}:{}", names.join(","));
            self.audit_refusal(ctx, repo, "tag_delete", ("Tag", target), e).await;
        }
        result
    }

    async fn delete_tags_once(
        &self,
        repo: &RepositoryName,
        tags: &[Tag],
        actor: Actor,
        ctx: &RequestContext,
    ) -> Result<Vec<Tag>, ServiceError> {
        let protection = self.protection(repo).await?;
        let schedule = self.schedule();
        let mut w = self.store.write_tx().await?;
        let Some(repo_id) = w.repository_id(repo).await? else { return Ok(Vec::new()) };
        // Every tag is checked before any is deleted; a refusal names every refused tag.
        let mut existing = Vec::with_capacity(tags.len());
        let mut refusals: Vec<Refusal> = Vec::new();
        for tag in tags {
            let Some(digest) = w.tag_target(repo_id, tag.as_str()).await? else { continue };
            if let Some(protection) = &protection {
                if let Err(refusal) = check_tag_delete(protection, tag, actor) {
                    refusals.push(refusal);
                }
            }
            existing.push((tag, digest));
        }
        if let Some(refusal) = Refusal::all(refusals) {
            return Err(ServiceError::Refused(refusal));
        }
        let mut deleted = Vec::with_capacity(existing.len());
        for (tag, digest) in existing {
            if !w.delete_tag(repo_id, tag.as_str(), &schedule).await? {
                continue;
            }
            let audit = RegistryAudit {
                action: "tag_delete",
                target_type: "Tag",
                target_id: tag.to_string(),
                target_details: format!("{repo}:{tag}"),
                details: json!({ "digest": digest }),
            };
            // Distribution's tag delete event names the repository and the tag only.
            let target = EventTarget {
                repository: repo.as_str(),
                tag: Some(tag.as_str()),
                ..Default::default()
            };
            let event = Some((EventAction::Delete, &target));
            record_change(&mut w, &self.events, ctx, audit, event, repo.as_str(), schedule.now)
                .await?;
            deleted.push(tag.clone());
        }
        w.commit().await?;
        Ok(deleted)
    }

    /// Deletes manifest `digest` of `repo` with the tags pointing at it, unless a protection
    /// rule refuses it for `actor` or an index of the repository lists it
    /// ([`ServiceError::ManifestReferenced`]); queues its blobs, children and referrers.
    /// Answers whether it existed.
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        actor: Actor,
        ctx: &RequestContext,
    ) -> Result<bool, ServiceError> {
        let result = retry_deadlocks(|| self.delete_manifest_once(repo, digest, actor, ctx)).await;
        if let Err(e @ (ServiceError::Refused(_) | ServiceError::ManifestReferenced { .. })) =
            &result
        {
            let target = ("Manifest", format!("{repo}@{digest}"));
            self.audit_refusal(ctx, repo, "manifest_delete", target, e).await;
        }
        result
    }

    async fn delete_manifest_once(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        actor: Actor,
        ctx: &RequestContext,
    ) -> Result<bool, ServiceError> {
        let protection = self.protection(repo).await?;
        let schedule = self.schedule();
        let mut w = self.store.write_tx().await?;
        let Some(repo_id) = w.repository_id(repo).await? else { return Ok(false) };
        let Some(m) = w.manifest_for_delete(repo_id, digest.as_str()).await? else {
            return Ok(false);
        };
        if let Some(protection) = &protection {
            let tags = w.manifest_tags(m.id).await?;
            protection
                .check_manifest_delete(&tags, actor.level())
                .map_err(ServiceError::Refused)?;
        }
        if let Some(index) = w.listing_index(&m).await? {
            return Err(ServiceError::ManifestReferenced {
                manifest: m.digest,
                index: index.digest,
                tag: index.tag,
            });
        }
        w.delete_manifest(&m, &schedule).await?;
        let audit = RegistryAudit {
            action: "manifest_delete",
            target_type: "Manifest",
            target_id: m.digest.clone(),
            target_details: format!("{repo}@{}", m.digest),
            details: json!({ "size": m.size }),
        };
        let target = EventTarget {
            repository: repo.as_str(),
            digest: &m.digest,
            size: m.size,
            ..Default::default()
        };
        let event = Some((EventAction::Delete, &target));
        record_change(&mut w, &self.events, ctx, audit, event, repo.as_str(), schedule.now).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Deletes a repository's metadata (tags, manifests, links, the repository) and queues
    /// every blob that was linked to it (`repository_delete`). The caller decided that the
    /// actor may. Answers whether it existed.
    pub async fn delete_repository(
        &self,
        repository_id: i64,
        ctx: &RequestContext,
    ) -> Result<bool, ServiceError> {
        let schedule = self.schedule();
        let mut w = self.store.write_tx().await?;
        let name = w.repository_name(repository_id).await?;
        let deleted = w.delete_repository(repository_id, &schedule).await?;
        if let (true, Some(name)) = (deleted, name) {
            let audit = RegistryAudit {
                action: "repository_delete",
                target_type: "Repository",
                target_id: repository_id.to_string(),
                target_details: name.clone(),
                details: json!({}),
            };
            let target = EventTarget { repository: &name, ..Default::default() };
            let event = Some((EventAction::Delete, &target));
            record_change(&mut w, &self.events, ctx, audit, event, &name, schedule.now).await?;
        }
        w.commit().await?;
        Ok(deleted)
    }

    // ---- garbage-collection reviews -----------------------------------------------------

    /// Reviews at most `limit` blob review rows due at `now_ms`, in one transaction and as one
    /// set (`meta::WriteTx::review_blob_batch`): each blob no manifest references any more is
    /// deleted (links, row; its bytes are queued in `gc_storage_deletions`), with a
    /// `gc_events` row and a log line; one a writer holds is looked at again shortly.
    pub async fn review_blobs(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ServiceError> {
        let mut w = self.store.background_write_tx().await?;
        let items = w.claim_blob_reviews(now_ms, limit as i64).await?;
        let batch = w.review_blob_batch(&items, now_ms, now_ms + BUSY_RETRY_MS).await?;
        w.commit().await?;
        let report = ReviewReport {
            reviewed: items.len(),
            kept: batch.kept + batch.busy,
            deleted: batch
                .removed
                .into_iter()
                .map(|(blob, reason)| Removed {
                    kind: RemovedKind::Blob,
                    digest: blob.digest,
                    repository: None,
                    size: blob.size,
                    reason,
                })
                .collect(),
        };
        log_removed(&report);
        Ok(report)
    }

    /// Reviews at most `limit` manifest review rows due at `now_ms`, in one transaction: each
    /// dangling manifest (untagged, listed by no index of its repository, and without a
    /// subject present there) is deleted exactly as a user's manifest delete deletes it, which
    /// queues its blobs, children and referrers in turn.
    pub async fn review_manifests(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ServiceError> {
        let mut report = ReviewReport::default();
        let schedule = self.schedule_at(now_ms);
        let mut w = self.store.background_write_tx().await?;
        for item in w.claim_manifest_reviews(now_ms, limit as i64).await? {
            report.reviewed += 1;
            match w.lock_manifest_for_review(item.manifest_id).await? {
                ReviewLock::Busy => {
                    w.postpone_manifest_review(item.manifest_id, now_ms + BUSY_RETRY_MS).await?;
                    report.kept += 1;
                }
                ReviewLock::Gone => {
                    w.finish_manifest_review(item.manifest_id).await?;
                    report.kept += 1;
                }
                ReviewLock::Locked(m) => {
                    if !w.manifest_is_dangling(&m).await? {
                        w.finish_manifest_review(m.id).await?;
                        report.kept += 1;
                        continue;
                    }
                    let repository = w.repository_name(m.repository_id).await?;
                    w.delete_manifest(&m, &schedule).await?;
                    w.record_gc_event(&meta::GcEventRecord {
                        at: now_ms,
                        kind: meta::GC_EVENT_MANIFEST,
                        digest: &m.digest,
                        repository: repository.as_deref(),
                        size: m.size,
                        reason: &item.event,
                        outcome: meta::GC_OUTCOME_DELETED,
                    })
                    .await?;
                    report.deleted.push(Removed {
                        kind: RemovedKind::Manifest,
                        digest: m.digest,
                        repository,
                        size: m.size,
                        reason: item.event,
                    });
                }
            }
        }
        w.commit().await?;
        log_removed(&report);
        Ok(report)
    }
}

/// Runs a write transaction again when PostgreSQL rolled it back as a deadlock victim (a GC
/// review may wait on a review row the write holds while the write waits on one the review
/// holds): the user's write wins; at most [`DEADLOCK_ATTEMPTS`] runs.
/// Whether `actor` may delete `tag` under `protection`: the rule every tag delete applies.
fn check_tag_delete(
    protection: &RepositoryProtection,
    tag: &Tag,
    actor: Actor,
) -> Result<(), Refusal> {
    match actor {
        Actor::Level(level) => protection.check_tag_delete(tag.as_str(), level),
        Actor::CleanupPolicy if protection.protects_from_cleanup(tag.as_str()) => Err(Refusal {
            kind: RefusalKind::Tag,
            message: format!(
                "tag {tag} is covered by a protection or immutable rule: cleanup policies keep it"
            ),
        }),
        Actor::CleanupPolicy => Ok(()),
    }
}

async fn retry_deadlocks<T, F, Fut>(mut run: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let mut attempts = 1;
    loop {
        match run().await {
            Err(ServiceError::Meta(e)) if e.is_deadlock() && attempts < DEADLOCK_ATTEMPTS => {
                tracing::info!(
                    attempts,
                    "a write lost a deadlock with garbage collection; retrying"
                );
                attempts += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Records blob `digest` (or locks its row), cancels a pending deletion of its bytes, links
/// it into `repo` and queues it for review.
async fn record_blob(
    w: &mut meta::WriteTx<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    size: i64,
    event: GcEvent,
    schedule: &ReviewSchedule,
) -> Result<(), MetaError> {
    let repo_id = w.ensure_repository(repo).await?;
    w.store_blob(digest, size, schedule).await?;
    w.link_blob(repo_id, digest.as_str()).await?;
    w.queue_blob_review(digest.as_str(), event, schedule).await
}

fn log_removed(report: &ReviewReport) {
    for r in &report.deleted {
        match r.kind {
            RemovedKind::Blob => tracing::info!(
                digest = %r.digest, size = r.size, reason = %r.reason,
                "garbage collection deleted a blob"
            ),
            RemovedKind::Manifest => tracing::info!(
                digest = %r.digest, repository = r.repository.as_deref().unwrap_or(""),
                size = r.size, reason = %r.reason, "garbage collection deleted a manifest"
            ),
        }
    }
}
