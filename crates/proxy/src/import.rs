//! Copying repositories from another registry into this one (`stowage import`): which
//! repositories (the upstream's catalog, or names and glob patterns), where each lands (its
//! path kept beneath the target), and the copy of a tag with everything it needs — the
//! manifests an index lists (children first), the blobs (streamed from the upstream through
//! the digest check into storage, never held whole in memory), and the manifests that refer to
//! it (signatures, SBOMs: the referrers API, or the referrers tag schema where the upstream
//! has no such API). Manifest bytes are stored verbatim, so every digest stays what it was.
//!
//! Every write goes through the write service (a blob upload commit or a link of a blob this
//! registry holds already, a manifest put with its tag), so GC queues, usage, quotas,
//! protection and events stay right. What is here already is not fetched again: a tag that
//! points at the upstream's digest is up to date, a manifest the repository holds is not
//! fetched, a blob stored anywhere in this registry is linked, not downloaded. That makes a
//! re-run after an interruption continue where the last one stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use meta::access_level;
use oci::{Digest, IndexValidation, ParsedManifest, RepositoryName, Tag};
use service::{Actor, RequestContext, WriteService};

use crate::upstream::{Upstream, UpstreamError};

/// How deep referrers of referrers are followed (a signature of an SBOM of an image is 2).
const MAX_REFERRER_DEPTH: usize = 4;
/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

fn ctx() -> RequestContext {
    RequestContext::system("import")
}

/// A repository to copy: its name upstream and the name it gets here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryCopy {
    pub source: String,
    pub destination: RepositoryName,
}

/// Which repositories an import copies, and those it cannot (with why).
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub copies: Vec<RepositoryCopy>,
    /// `(source name, reason)`.
    pub skipped: Vec<(String, String)>,
}

/// Why an import cannot start at all.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "no group or project at {0}: create it first (`stowage admin groups create {0}` or \
         `stowage admin projects create {0}`)"
    )]
    UnknownTarget(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("repository pattern {0:?} is invalid: {1}")]
    Pattern(String, String),
}

/// A `--repository` pattern: `*` matches any run of characters (`/` included), `?` one
/// character; anything else matches itself.
fn pattern_regex(pattern: &str) -> Result<regex::Regex, PlanError> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| PlanError::Pattern(pattern.to_string(), e.to_string()))
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Which upstream repositories `patterns` select: names are taken as they are, globs (and no
/// pattern at all) are matched against the upstream's catalog. Sorted, each once.
pub async fn select_repositories(
    upstream: &Upstream,
    patterns: &[String],
) -> Result<Vec<String>, PlanError> {
    let mut names: Vec<String> = patterns.iter().filter(|p| !is_glob(p)).cloned().collect();
    let globs: Vec<regex::Regex> = patterns
        .iter()
        .filter(|p| is_glob(p))
        .map(|p| pattern_regex(p))
        .collect::<Result<_, _>>()?;
    if patterns.is_empty() || !globs.is_empty() {
        for name in upstream.catalog().await? {
            if patterns.is_empty() || globs.iter().any(|g| g.is_match(&name)) {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Where `source` lands beneath `target` (a group or project path): `<target>/<source>`, in
/// the project with the longest path that prefixes it. A name more than
/// [`auth::policy::MAX_EXTRA_SEGMENTS`] levels below its project is refused, or with `flatten`
/// its extra levels are joined to the last allowed one with `-` (`a/b/c/d/e` → `a/b/c-d-e`).
pub async fn destination(
    store: &meta::Store,
    target: &str,
    source: &str,
    flatten: bool,
) -> Result<RepositoryName, String> {
    let joined = format!("{target}/{source}");
    let Some(project) = store
        .longest_project_match(&meta::path_prefixes(&joined))
        .await
        .map_err(|e| e.to_string())?
    else {
        let first = source.split('/').next().unwrap_or(source);
        return Err(format!(
            "{source} would be {joined}, but there is no project at {target}/{first}: create it \
             with `stowage admin projects create {target}/{first}`, or import into a project"
        ));
    };
    let below: Vec<&str> = joined[project.full_path.len()..]
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let max = auth::policy::MAX_EXTRA_SEGMENTS;
    let name = if below.len() <= max {
        joined.clone()
    } else if flatten {
        let (kept, joined_tail) = below.split_at(max - 1);
        let mut parts: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
        parts.push(joined_tail.join("-"));
        format!("{}/{}", project.full_path, parts.join("/"))
    } else {
        return Err(format!(
            "{source} would be {joined}, {} levels below project {}; at most {max} are allowed: \
             import it with --flatten, or into a deeper project",
            below.len(),
            project.full_path
        ));
    };
    let parsed: RepositoryName =
        name.parse().map_err(|e: oci::NameError| format!("{source} cannot be imported: {e}"))?;
    // The rule every push passes: the name must belong to that project.
    match auth::policy::project_for_image(store, parsed.as_str()).await {
        Ok(Some(p)) if p.id == project.id => Ok(parsed),
        Ok(_) => Err(format!("{source} would be {name}, which is no repository of a project")),
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses a target that is neither a group nor a project.
pub async fn check_target(store: &meta::Store, target: &str) -> Result<(), PlanError> {
    let target = target.trim_matches('/');
    if target.is_empty()
        || (store.group_by_full_path(target).await?.is_none()
            && store.project_by_full_path(target).await?.is_none())
    {
        return Err(PlanError::UnknownTarget(target.to_string()));
    }
    Ok(())
}

/// The plan of an import of `names` into `target`: destinations, and what is skipped.
pub async fn plan(
    store: &meta::Store,
    target: &str,
    names: &[String],
    flatten: bool,
) -> Result<ImportPlan, PlanError> {
    let target = target.trim_matches('/');
    check_target(store, target).await?;
    let mut plan = ImportPlan::default();
    for source in names {
        match destination(store, target, source, flatten).await {
            Ok(dest) => match plan.copies.iter().find(|c| c.destination == dest) {
                Some(other) => plan.skipped.push((
                    source.clone(),
                    format!("{source} would be {dest}, where {} goes already", other.source),
                )),
                None => {
                    plan.copies.push(RepositoryCopy { source: source.clone(), destination: dest })
                }
            },
            Err(reason) => plan.skipped.push((source.clone(), reason)),
        }
    }
    Ok(plan)
}

/// What copying one tag did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagOutcome {
    /// The tag is new here.
    Added(Digest),
    /// The tag pointed at another manifest here and now points at the upstream's.
    Moved {
        from: String,
        to: Digest,
    },
    /// The tag points at the upstream's manifest already.
    UpToDate(Digest),
    /// Dry run: the tag would be added or moved.
    WouldCopy(Digest),
    Failed(String),
}

/// Figures of an import so far, shared by its workers.
#[derive(Debug, Default)]
pub struct CopyCounters {
    /// Blob bytes downloaded from the upstream.
    pub bytes: AtomicU64,
    pub blobs_downloaded: AtomicU64,
    /// Blobs this registry held already, linked into the repository instead of downloaded.
    pub blobs_linked: AtomicU64,
    pub manifests: AtomicU64,
    pub referrers: AtomicU64,
}

impl CopyCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Limits the copy keeps, as a push would (`limits.*`, `validation.manifests.indexes`).
#[derive(Clone, Debug)]
pub struct CopyLimits {
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: Option<u64>,
    pub index_validation: IndexValidation,
}

/// Copies tags of upstream repositories into this registry. Cheap to share.
#[derive(Clone)]
pub struct Copier {
    service: WriteService,
    upstream: Arc<Upstream>,
    limits: CopyLimits,
    /// Why tags here may not be moved to another manifest, when they may not.
    move_refusal: Option<String>,
    /// One download per blob at a time: a worker that needs a blob another one is fetching
    /// waits for it, then links what was stored.
    downloads: Arc<std::sync::Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
    pub counters: Arc<CopyCounters>,
}

fn upstream_error(e: UpstreamError) -> String {
    e.to_string()
}

impl Copier {
    pub fn new(service: WriteService, upstream: Arc<Upstream>, limits: CopyLimits) -> Copier {
        Copier {
            service,
            upstream,
            limits,
            move_refusal: None,
            downloads: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// A copier that adds tags but moves none: a tag here that points at another manifest
    /// than upstream fails with `why`.
    pub fn refusing_moves(mut self, why: String) -> Copier {
        self.move_refusal = Some(why);
        self
    }

    /// The tags of upstream repository `source`; a tag whose name is no valid tag here is
    /// returned as an error of its own.
    pub async fn tags(&self, source: &str) -> Result<Vec<Result<Tag, String>>, String> {
        let tags = self
            .upstream
            .tags(source)
            .await
            .map_err(upstream_error)?
            .ok_or_else(|| format!("the upstream registry has no repository {source}"))?;
        Ok(tags
            .into_iter()
            .map(|t| t.parse::<Tag>().map_err(|e: oci::NameError| format!("{source}: {e}")))
            .collect())
    }

    /// Copies `tag` of `copy.source` to `copy.destination` (or, with `dry_run`, only says
    /// whether it would).
    pub async fn copy_tag(&self, copy: &RepositoryCopy, tag: &Tag, dry_run: bool) -> TagOutcome {
        match self.try_copy_tag(copy, tag, dry_run).await {
            Ok(outcome) => outcome,
            Err(message) => TagOutcome::Failed(message),
        }
    }

    async fn try_copy_tag(
        &self,
        copy: &RepositoryCopy,
        tag: &Tag,
        dry_run: bool,
    ) -> Result<TagOutcome, String> {
        let store = self.service.store();
        let fetched = self
            .upstream
            .manifest(&copy.source, tag.as_str())
            .await
            .map_err(upstream_error)?
            .ok_or_else(|| format!("{}:{tag} is gone from the upstream registry", copy.source))?;
        let digest = Digest::sha256_of(&fetched.payload);
        let current =
            store.manifest_by_tag(&copy.destination, tag).await.map_err(|e| e.to_string())?;
        if current.as_ref().is_some_and(|m| m.digest == digest.as_str()) {
            if !dry_run {
                self.copy_referrers(copy, &digest, 0).await?;
            }
            return Ok(TagOutcome::UpToDate(digest));
        }
        if dry_run {
            return Ok(TagOutcome::WouldCopy(digest));
        }
        if let (Some(previous), Some(why)) = (&current, &self.move_refusal) {
            return Err(format!(
                "{}:{tag} is {} here and {digest} upstream, and was not moved: {why}",
                copy.destination, previous.digest
            ));
        }
        self.store_manifest(
            copy,
            &digest,
            fetched.content_type.as_deref(),
            fetched.payload.to_vec(),
            std::slice::from_ref(tag),
            0,
        )
        .await?;
        self.copy_referrers(copy, &digest, 0).await?;
        Ok(match current {
            Some(previous) => TagOutcome::Moved { from: previous.digest, to: digest },
            None => TagOutcome::Added(digest),
        })
    }

    /// Fetches manifest `digest` of `copy.source`, checking that its bytes have that digest.
    /// `None`: the upstream does not have it.
    async fn fetch_by_digest(
        &self,
        copy: &RepositoryCopy,
        digest: &Digest,
    ) -> Result<Option<(Option<String>, Vec<u8>)>, String> {
        let Some(m) =
            self.upstream.manifest(&copy.source, digest.as_str()).await.map_err(upstream_error)?
        else {
            return Ok(None);
        };
        let computed = Digest::of(digest.algorithm(), &m.payload);
        if computed != *digest {
            return Err(format!(
                "the upstream served manifest {computed} of {} for {digest}",
                copy.source
            ));
        }
        Ok(Some((m.content_type, m.payload.to_vec())))
    }

    /// Stores manifest `digest` (bytes `payload`) with `tags`: first the manifests it lists
    /// and the blobs it needs, then the manifest itself through the write service.
    async fn store_manifest(
        &self,
        copy: &RepositoryCopy,
        digest: &Digest,
        content_type: Option<&str>,
        payload: Vec<u8>,
        tags: &[Tag],
        depth: usize,
    ) -> Result<(), String> {
        let dest = &copy.destination;
        if payload.len() > self.limits.max_manifest_bytes {
            return Err(format!(
                "manifest {digest} of {} is {} bytes; the limit of this registry is {}",
                copy.source,
                payload.len(),
                self.limits.max_manifest_bytes
            ));
        }
        let parsed = ParsedManifest::parse(content_type, &payload)
            .map_err(|e| format!("manifest {digest} of {} is invalid: {e}", copy.source))?;
        let store = self.service.store();
        for child in parsed.children(&self.limits.index_validation) {
            if store
                .manifest_by_digest(dest, &child.digest)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                continue;
            }
            if depth >= MAX_INDEX_DEPTH {
                return Err(format!(
                    "indexes of {} nest more than {MAX_INDEX_DEPTH} deep",
                    copy.source
                ));
            }
            match self.fetch_by_digest(copy, &child.digest).await? {
                Some((child_type, child_payload)) => {
                    Box::pin(self.store_manifest(
                        copy,
                        &child.digest,
                        child_type.as_deref(),
                        child_payload,
                        &[],
                        depth + 1,
                    ))
                    .await?;
                    Box::pin(self.copy_referrers(copy, &child.digest, 0)).await?;
                }
                // A sparse index, as the configured index validation allows.
                None if !child.must_exist => {}
                None => {
                    return Err(format!(
                        "manifest {} listed by {digest} is not in the upstream's {}",
                        child.digest, copy.source
                    ))
                }
            }
        }
        let blobs = parsed.required_blobs();
        self.require_room(dest, &blobs).await?;
        for blob in &blobs {
            self.ensure_blob(copy, blob).await?;
        }
        let new = service::dependency_proxy::new_manifest(
            digest.clone(),
            &parsed,
            payload,
            &self.limits.index_validation,
        );
        self.service
            .put_manifest(dest, Actor::Level(access_level::ADMIN), &new, tags, &ctx())
            .await
            .map_err(|e| format!("storing manifest {digest} in {dest} failed: {e}"))?;
        self.counters.manifests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Refuses content that would add bytes to a namespace at or above its storage quota
    /// (the decision is `meta::QuotaStatus::check_new_content`, as for a push).
    async fn require_room(&self, dest: &RepositoryName, blobs: &[Digest]) -> Result<(), String> {
        let store = self.service.store();
        let Some(status) =
            store.quota_for_repository(dest.as_str()).await.map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if status.check_new_content(true).is_ok() {
            return Ok(());
        }
        let digests: Vec<&str> = blobs.iter().map(|d| d.as_str()).collect();
        let adds = store
            .adds_bytes_to_namespace(status.namespace_id, &digests)
            .await
            .map_err(|e| e.to_string())?;
        status.check_new_content(adds).map_err(|refused| refused.to_string())
    }

    /// Makes blob `digest` part of the destination: nothing to do when it is, linked when this
    /// registry holds it already, else streamed from the upstream into storage, hashed on
    /// the way and committed only if the digest matches.
    async fn ensure_blob(&self, copy: &RepositoryCopy, digest: &Digest) -> Result<(), String> {
        let store = self.service.store();
        let dest = &copy.destination;
        if store.repository_blob(dest, digest).await.map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        let gate = {
            let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
            downloads.entry(digest.clone()).or_default().clone()
        };
        let _only_download = gate.lock().await;
        if store.repository_blob(dest, digest).await.map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        if store.blob(digest).await.map_err(|e| e.to_string())?.is_some()
            && self.service.mount_blob(dest, digest).await.map_err(|e| e.to_string())?.is_some()
        {
            self.counters.blobs_linked.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let response = self
            .upstream
            .blob(&copy.source, digest.as_str())
            .await
            .map_err(upstream_error)?
            .ok_or_else(|| format!("blob {digest} of {} is not in the upstream", copy.source))?;
        let counters = self.counters.clone();
        let body = response.bytes_stream().map(move |chunk| {
            if let Ok(chunk) = &chunk {
                counters.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let blobs = self.service.blobs();
        let upload_id = uuid::Uuid::new_v4().to_string();
        let hasher = blobstore::ResumableSha256::new();
        let committed = match blobs
            .write_part(&upload_id, &hasher, body, self.limits.max_blob_bytes)
            .await
        {
            Ok(part) => {
                let stored = blobstore::UploadPart { object: part.object, size: part.size };
                self.service
                    .commit_upload(dest, &upload_id, &[stored], &part.hasher, digest)
                    .await
                    .map_err(|e| format!("storing blob {digest} of {} failed: {e}", copy.source))
            }
            Err(e) => Err(format!("downloading blob {digest} of {} failed: {e}", copy.source)),
        };
        blobs.delete_upload(&upload_id).await;
        committed?;
        self.counters.blobs_downloaded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copies the manifests that refer to `subject` (and, up to [`MAX_REFERRER_DEPTH`], those
    /// that refer to them), untagged, unless the destination holds them already.
    async fn copy_referrers(
        &self,
        copy: &RepositoryCopy,
        subject: &Digest,
        depth: usize,
    ) -> Result<(), String> {
        if depth >= MAX_REFERRER_DEPTH {
            return Ok(());
        }
        let store = self.service.store();
        let referrers =
            self.upstream.referrers(&copy.source, subject).await.map_err(upstream_error)?;
        for referrer in referrers {
            let digest = referrer.digest;
            let held = store
                .manifest_by_digest(&copy.destination, &digest)
                .await
                .map_err(|e| e.to_string())?;
            if held.is_some() {
                continue;
            }
            let Some((content_type, payload)) = self.fetch_by_digest(copy, &digest).await? else {
                continue;
            };
            Box::pin(self.store_manifest(copy, &digest, content_type.as_deref(), payload, &[], 0))
                .await?;
            self.counters.referrers.fetch_add(1, Ordering::Relaxed);
            Box::pin(self.copy_referrers(copy, &digest, depth + 1)).await?;
        }
        Ok(())
    }
}

/// How many tags of one mirror are copied at once.
const MIRROR_PARALLEL: usize = 4;
/// Longest failure text recorded for a run.
const MAX_RUN_ERROR: usize = 2000;

/// One sync of pull mirror `mirror` (the periodic job): the tags of its upstream repository
/// that its filter matches (the whole name) are copied as `stowage import` copies them — only
/// what changed is transferred — and what happened is returned for the run's record. Tags
/// gone upstream stay.
pub async fn sync_mirror(
    service: WriteService,
    limits: CopyLimits,
    mirror: &meta::mirrors::RegistryMirror,
) -> meta::mirrors::MirrorRun {
    let mut run = meta::mirrors::MirrorRun {
        mirror_id: mirror.id,
        started_at: meta::now_millis(),
        ..Default::default()
    };
    if let Err(e) = sync_into(service, limits, mirror, &mut run).await {
        run.error = Some(e);
    }
    if let Some(error) = &mut run.error {
        if error.len() > MAX_RUN_ERROR {
            let mut end = MAX_RUN_ERROR;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
    }
    run.finished_at = meta::now_millis();
    run
}

async fn sync_into(
    service: WriteService,
    limits: CopyLimits,
    mirror: &meta::mirrors::RegistryMirror,
    run: &mut meta::mirrors::MirrorRun,
) -> Result<(), String> {
    let (base, source) =
        service::mirrors::split_upstream(&mirror.upstream).map_err(|e| format!("upstream {e}"))?;
    let destination: RepositoryName = mirror
        .destination
        .parse()
        .map_err(|e: oci::NameError| format!("the mirror's repository is invalid: {e}"))?;
    let filter = match &mirror.tag_filter {
        Some(f) => Some(
            regex::Regex::new(&format!("^(?:{f})$"))
                .map_err(|e| format!("tag_filter is not a valid regex: {e}"))?,
        ),
        None => None,
    };
    let upstream = Upstream::new(crate::UpstreamSettings {
        url: base,
        username: None,
        password: None,
        timeout: std::time::Duration::from_secs(30),
    })
    .map_err(|e| e.to_string())?;
    let copier = Copier::new(service, Arc::new(upstream), limits);
    let copy = RepositoryCopy { source, destination };
    let tags: Vec<Tag> = copier
        .tags(&copy.source)
        .await?
        .into_iter()
        .filter_map(Result::ok)
        .filter(|t| filter.as_ref().is_none_or(|f| f.is_match(t.as_str())))
        .collect();
    let outcomes: Vec<(Tag, TagOutcome)> = futures::stream::iter(tags)
        .map(|tag| {
            let copier = copier.clone();
            let copy = copy.clone();
            async move {
                let outcome = copier.copy_tag(&copy, &tag, false).await;
                (tag, outcome)
            }
        })
        .buffer_unordered(MIRROR_PARALLEL)
        .collect()
        .await;
    let mut failures = Vec::new();
    for (tag, outcome) in outcomes {
        match outcome {
            TagOutcome::Added(_) => run.tags_added += 1,
            TagOutcome::Moved { .. } => run.tags_moved += 1,
            TagOutcome::UpToDate(_) => run.tags_unchanged += 1,
            TagOutcome::WouldCopy(_) => {}
            TagOutcome::Failed(reason) => {
                run.tags_failed += 1;
                failures.push(format!("{tag}: {reason}"));
            }
        }
    }
    run.bytes = CopyCounters::get(&copier.counters.bytes) as i64;
    if !failures.is_empty() {
        failures.sort();
        run.error = Some(failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        let re = pattern_regex("team/*").unwrap();
        assert!(re.is_match("team/svc"));
        assert!(re.is_match("team/a/b"));
        assert!(!re.is_match("other/team/svc"));
        let re = pattern_regex("svc-?").unwrap();
        assert!(re.is_match("svc-1"));
        assert!(!re.is_match("svc-12"));
        let re = pattern_regex("a.b").unwrap();
        assert!(!re.is_match("axb"), "a dot is a dot");
        assert!(is_glob("x*") && is_glob("x?") && !is_glob("team/svc"));
    }
}
