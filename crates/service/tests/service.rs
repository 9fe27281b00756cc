//! The write service on SQLite and PostgreSQL: every event queues the review rows the GC
//! contract names, reviews delete exactly what is dangling, a manifest listed by an index
//! cannot be deleted, and (PostgreSQL) a manifest PUT racing a zero-delay blob review never
//! leaves a referenced blob deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use blobstore::{BlobStore, ResumableSha256};
use bytes::Bytes;
use meta::testing::TestDb;
use meta::{access_level, Backend, NewManifest, UnlinkOutcome};
use oci::{Digest, IndexChild, RepositoryName, Tag};
use service::{Actor, GcSettings, RemovedKind, RequestContext, ServiceError, WriteService};

const ADMIN: Actor = Actor::Level(access_level::ADMIN);
const DAY_MS: i64 = 86_400_000;

fn ctx() -> RequestContext {
    RequestContext::system("tester")
}

struct Env {
    db: TestDb,
    svc: WriteService,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(backend: Backend, review_after: Duration) -> Env {
        let db = TestDb::new(backend, None).await;
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::filesystem(dir.path()).unwrap();
        let svc = WriteService::new(db.store.clone(), blobs, GcSettings { review_after });
        Env { db, svc, _dir: dir }
    }

    /// Uploads `content` into `repo` the way the `/v2` handlers do: one part, then commit.
    async fn upload(&self, repo: &RepositoryName, content: &str) -> Digest {
        let digest = Digest::sha256_of(content.as_bytes());
        let id = uuid_like();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(
            content.as_bytes().to_vec(),
        ))]);
        let part =
            self.svc.blobs().write_part(&id, &ResumableSha256::new(), body, None).await.unwrap();
        let parts = [blobstore::UploadPart { object: part.object, size: part.size }];
        self.svc.commit_upload(repo, &id, &parts, &part.hasher, &digest).await.unwrap();
        self.svc.blobs().delete_upload(&id).await;
        digest
    }

    async fn put(&self, repo: &RepositoryName, m: &NewManifest, tags: &[&str]) {
        let tags: Vec<Tag> = tags.iter().map(|t| t.parse().unwrap()).collect();
        self.svc.put_manifest(repo, ADMIN, m, &tags, &ctx()).await.unwrap();
    }

    async fn blob_events(&self) -> BTreeMap<String, String> {
        let rows = self.db.store.queued_blob_reviews().await.unwrap();
        rows.into_iter().map(|r| (r.digest, r.event)).collect()
    }

    async fn manifest_events(&self) -> BTreeMap<String, String> {
        let rows = self.db.store.queued_manifest_reviews().await.unwrap();
        rows.into_iter().map(|r| (r.digest, r.event)).collect()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

/// A manifest with `label` in its payload, referencing `blobs`, listing `children`, with an
/// optional `subject`.
fn manifest(
    label: &str,
    blobs: &[&Digest],
    children: &[&Digest],
    subject: Option<&Digest>,
) -> NewManifest {
    let payload = format!("{{\"schemaVersion\":2,\"label\":\"{label}\"}}").into_bytes();
    NewManifest {
        digest: Digest::sha256_of(&payload),
        media_type: if children.is_empty() {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/vnd.oci.image.index.v1+json"
        }
        .into(),
        artifact_type: None,
        subject: subject.cloned(),
        config_digest: blobs.first().map(|d| (*d).clone()),
        total_size: payload.len() as i64,
        annotations: None,
        payload,
        blobs: blobs.iter().map(|d| (*d).clone()).collect(),
        children: children
            .iter()
            .map(|d| IndexChild { digest: (*d).clone(), must_exist: true })
            .collect(),
    }
}

fn s(d: &Digest) -> String {
    d.to_string()
}

/// Every event of the GC contract queues the right item with the right event name, due
/// `gc.reviewafter` (plus at most a minute of jitter) later.
async fn events_queue_reviews(backend: Backend) {
    let env = Env::new(backend, Duration::from_secs(24 * 3600)).await;
    let (a, b) = (repo("acme/a"), repo("acme/b"));
    let before = meta::now_millis();
    let layer = env.upload(&a, "layer").await;
    let config = env.upload(&a, "config").await;
    assert_eq!(env.blob_events().await[&s(&layer)], "blob_upload");
    let due = env.db.store.queued_blob_reviews().await.unwrap()[0].review_after;
    let after = meta::now_millis();
    assert!(due >= before + DAY_MS && due <= after + DAY_MS + 60_000, "due {due}");

    assert!(env.svc.mount_blob(&b, &layer).await.unwrap().is_some());
    assert_eq!(env.blob_events().await[&s(&layer)], "blob_mount");

    let m1 = manifest("m1", &[&config, &layer], &[], None);
    env.put(&a, &m1, &["v1"]).await;
    assert_eq!(env.manifest_events().await[&s(&m1.digest)], "manifest_upload");

    // The tag moves: the manifest it left is queued.
    let m2 = manifest("m2", &[&config], &[], None);
    env.put(&a, &m2, &["v1"]).await;
    let events = env.manifest_events().await;
    assert_eq!(events[&s(&m1.digest)], "tag_switch");
    assert_eq!(events[&s(&m2.digest)], "manifest_upload");

    assert!(env.svc.delete_tag(&a, &"v1".parse().unwrap(), ADMIN, &ctx()).await.unwrap());
    assert_eq!(env.manifest_events().await[&s(&m2.digest)], "tag_delete");

    // A manifest delete queues its config and layers.
    assert!(env.svc.delete_manifest(&a, &m1.digest, ADMIN, &ctx()).await.unwrap());
    let events = env.blob_events().await;
    assert_eq!(events[&s(&layer)], "manifest_delete");
    assert_eq!(events[&s(&config)], "manifest_delete");
    assert!(!env.manifest_events().await.contains_key(&s(&m1.digest)), "its own row went");

    // An index delete queues its children and the manifests whose subject it is.
    let child = manifest("child", &[&config], &[], None);
    env.put(&a, &child, &[]).await;
    let index = manifest("index", &[], &[&child.digest], None);
    env.put(&a, &index, &["multi"]).await;
    let signature = manifest("sig", &[&config], &[], Some(&index.digest));
    env.put(&a, &signature, &[]).await;
    assert!(env.svc.delete_manifest(&a, &index.digest, ADMIN, &ctx()).await.unwrap());
    let events = env.manifest_events().await;
    assert_eq!(events[&s(&child.digest)], "index_delete");
    assert_eq!(events[&s(&signature.digest)], "subject_delete");

    // Blob unlink, then repository delete.
    let only_b = env.upload(&b, "only in b").await;
    assert_eq!(env.svc.unlink_blob(&b, &layer).await.unwrap(), UnlinkOutcome::Unlinked);
    assert_eq!(env.blob_events().await[&s(&layer)], "blob_unlink");
    let b_id = env.db.store.repositories_at_or_below("acme/b").await.unwrap()[0].id;
    assert!(env.svc.delete_repository(b_id, &ctx()).await.unwrap());
    assert_eq!(env.blob_events().await[&s(&only_b)], "repository_delete");

    // Every change left its audit row and its event (with a delivery job) in its transaction.
    let filter = meta::events::AuditFilter {
        scope: meta::events::AuditScope::Instance,
        created_after: None,
        created_before: None,
        offset: 0,
        limit: 100,
    };
    let (mut audit, total) = env.db.store.list_audit_events(&filter).await.unwrap();
    audit.reverse();
    let actions: Vec<(&str, &str)> =
        audit.iter().map(|e| (e.action.as_str(), e.target_details.as_str())).collect();
    let (m1d, m2d, childd, indexd, sigd) = (
        format!("acme/a@{}", m1.digest),
        format!("acme/a@{}", m2.digest),
        format!("acme/a@{}", child.digest),
        format!("acme/a@{}", index.digest),
        format!("acme/a@{}", signature.digest),
    );
    assert_eq!(
        actions,
        [
            ("manifest_push", m1d.as_str()),
            ("tag_push", "acme/a:v1"),
            ("manifest_push", m2d.as_str()),
            ("tag_move", "acme/a:v1"),
            ("tag_delete", "acme/a:v1"),
            ("manifest_delete", m1d.as_str()),
            ("manifest_push", childd.as_str()),
            ("manifest_push", indexd.as_str()),
            ("tag_push", "acme/a:multi"),
            ("manifest_push", sigd.as_str()),
            ("manifest_delete", indexd.as_str()),
            ("repository_delete", "acme/b"),
        ]
    );
    assert_eq!(total, 12);
    assert!(audit.iter().all(|e| e.author_name == "tester" && e.outcome == "success"));
    assert_eq!(audit[3].details["from"], s(&m1.digest));
    let mut actions = Vec::new();
    for id in 1..=9 {
        let event = env.db.store.registry_event(id).await.unwrap().expect("event");
        let target = &event.payload["target"];
        actions.push(format!(
            "{} {} {}",
            event.action,
            target["tag"].as_str().unwrap_or("-"),
            target["digest"].as_str().map_or("-", |d| &d[..13])
        ));
    }
    assert_eq!(
        actions,
        [
            format!("push v1 {}", &s(&m1.digest)[..13]),
            format!("push v1 {}", &s(&m2.digest)[..13]),
            "delete v1 -".to_string(),
            format!("delete - {}", &s(&m1.digest)[..13]),
            format!("push - {}", &s(&child.digest)[..13]),
            format!("push multi {}", &s(&index.digest)[..13]),
            format!("push - {}", &s(&signature.digest)[..13]),
            format!("delete - {}", &s(&index.digest)[..13]),
            "delete - -".to_string(),
        ]
    );
    assert!(env.db.store.registry_event(10).await.unwrap().is_none());
    let deliveries = meta::jobs::JobFilter {
        state: None,
        kind: Some(service::events::DELIVERY_JOB.into()),
        limit: 100,
    };
    assert_eq!(env.db.store.list_jobs(&deliveries).await.unwrap().len(), 9);
    env.db.drop_database().await;
}

/// Reviews delete exactly the dangling: children of a tagged index and referrers of a present
/// subject stay; an untagged manifest, one whose subject is gone and an unreferenced blob go,
/// and what a deletion orphans goes on the next pass.
async fn reviews_delete_exactly_dangling(backend: Backend) {
    let env = Env::new(backend, Duration::ZERO).await;
    let r = repo("acme/gc");
    let (la, lb, lp, lone) = (
        env.upload(&r, "layer a").await,
        env.upload(&r, "layer b").await,
        env.upload(&r, "layer p").await,
        env.upload(&r, "unreferenced").await,
    );
    let a = manifest("a", &[&la], &[], None);
    let b = manifest("b", &[&lb], &[], None);
    env.put(&r, &a, &[]).await;
    env.put(&r, &b, &[]).await;
    let index = manifest("index", &[], &[&a.digest, &b.digest], None);
    env.put(&r, &index, &["multi"]).await;
    let signature = manifest("sig of a", &[&la], &[], Some(&a.digest));
    env.put(&r, &signature, &[]).await;
    let orphan_referrer =
        manifest("sig of nothing", &[&la], &[], Some(&Digest::sha256_of(b"gone")));
    env.put(&r, &orphan_referrer, &[]).await;
    let plain = manifest("plain", &[&lp], &[], None);
    env.put(&r, &plain, &[]).await;

    // After the push window: uploads and the children the index relied on are reviewed only
    // then, however short gc.reviewafter is.
    let later = meta::now_millis() + 3_600_000 + 1000;
    let report = env.svc.review_manifests(later, 100).await.unwrap();
    let deleted: Vec<String> = report.deleted.iter().map(|d| d.digest.clone()).collect();
    let mut expected = vec![s(&orphan_referrer.digest), s(&plain.digest)];
    expected.sort();
    let mut got = deleted.clone();
    got.sort();
    assert_eq!(got, expected, "{backend:?}: only the dangling manifests go");
    assert!(report.deleted.iter().all(|d| d.kind == RemovedKind::Manifest
        && d.repository.as_deref() == Some("acme/gc")
        && d.reason == "manifest_upload"));
    assert_eq!(report.reviewed, 6);
    assert_eq!(report.kept, 4);

    let report = env.svc.review_blobs(later, 100).await.unwrap();
    let mut got: Vec<String> = report.deleted.iter().map(|d| d.digest.clone()).collect();
    got.sort();
    let mut expected = vec![s(&lp), s(&lone)];
    expected.sort();
    assert_eq!(got, expected, "{backend:?}: only unreferenced blobs go");
    assert!(env.db.store.blob(&lp).await.unwrap().is_none());
    assert!(env.db.store.repository_blob(&r, &la).await.unwrap().is_some());
    assert_eq!(env.db.store.pending_storage_deletions().await.unwrap(), expected);
    assert!(env.db.store.queued_blob_reviews().await.unwrap().is_empty());

    // Untagging the index makes it dangling; its children then, and the signature with them.
    assert!(env.svc.delete_tag(&r, &"multi".parse().unwrap(), ADMIN, &ctx()).await.unwrap());
    let mut removed = Vec::new();
    for _ in 0..4 {
        let report = env.svc.review_manifests(later, 100).await.unwrap();
        removed.push(report.deleted.iter().map(|d| d.digest.clone()).collect::<Vec<_>>());
    }
    assert_eq!(removed[0], vec![s(&index.digest)]);
    let mut children = removed[1].clone();
    children.sort();
    let mut want = vec![s(&a.digest), s(&b.digest)];
    want.sort();
    assert_eq!(children, want);
    assert_eq!(removed[2], vec![s(&signature.digest)]);
    assert!(removed[3].is_empty());
    let report = env.svc.review_blobs(later, 100).await.unwrap();
    assert_eq!(report.deleted.len(), 2, "{backend:?}: layers a and b");
    assert!(env.db.store.queued_manifest_reviews().await.unwrap().is_empty());
    env.db.drop_database().await;
}

/// A manifest an index of the repository lists is not deleted by digest; the index is named.
async fn listed_manifest_is_not_deleted(backend: Backend) {
    let env = Env::new(backend, Duration::ZERO).await;
    let r = repo("acme/idx");
    let layer = env.upload(&r, "layer").await;
    let child = manifest("child", &[&layer], &[], None);
    env.put(&r, &child, &[]).await;
    let index = manifest("index", &[], &[&child.digest], None);
    env.put(&r, &index, &["latest"]).await;
    match env.svc.delete_manifest(&r, &child.digest, ADMIN, &ctx()).await {
        Err(ServiceError::ManifestReferenced { manifest, index: by, tag }) => {
            assert_eq!(manifest, s(&child.digest));
            assert_eq!(by, s(&index.digest));
            assert_eq!(tag.as_deref(), Some("latest"));
        }
        other => panic!("{backend:?}: expected a refusal, got {other:?}"),
    }
    assert!(env.db.store.manifest_by_digest(&r, &child.digest).await.unwrap().is_some());
    assert!(env.svc.delete_manifest(&r, &index.digest, ADMIN, &ctx()).await.unwrap());
    assert!(env.svc.delete_manifest(&r, &child.digest, ADMIN, &ctx()).await.unwrap());
    env.db.drop_database().await;
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(meta::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(meta::Backend::Postgres).await })*
        }
    };
}
on_both_backends!(
    events_queue_reviews,
    reviews_delete_exactly_dangling,
    listed_manifest_is_not_deleted
);

/// PostgreSQL, many connections: a manifest PUT that references a freshly uploaded blob races
/// a blob review with a zero delay. Whichever wins, a blob that a stored manifest references
/// is never deleted: either the PUT locked the blob first (the review then sees the reference)
/// or the review deleted it first (the PUT then fails with an unknown blob).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_put_races_blob_review_postgres() {
    let env = Env::new(Backend::Postgres, Duration::ZERO).await;
    let r = repo("acme/race");
    let (mut won_put, mut won_gc) = (0, 0);
    let context = ctx();
    for i in 0..60 {
        let layer = env.upload(&r, &format!("layer {i}")).await;
        let m = manifest(&format!("m{i}"), &[&layer], &[], None);
        let tags: Vec<Tag> = vec![format!("t{i}").parse().unwrap()];
        let (put, review) = tokio::join!(
            env.svc.put_manifest(&r, ADMIN, &m, &tags, &context),
            env.svc.review_blobs(meta::now_millis() + 10_000, 100),
        );
        let review = review.unwrap();
        // Whatever is still due gets reviewed too, after both finished.
        env.svc.review_blobs(meta::now_millis() + 10_000, 100).await.unwrap();
        match put {
            Ok(()) => {
                won_put += 1;
                assert!(
                    env.db.store.repository_blob(&r, &layer).await.unwrap().is_some(),
                    "iteration {i}: a stored manifest references a deleted blob ({review:?})"
                );
                assert!(!env
                    .db
                    .store
                    .pending_storage_deletions()
                    .await
                    .unwrap()
                    .contains(&s(&layer)));
            }
            Err(ServiceError::BlobUnknown(d)) => {
                won_gc += 1;
                assert_eq!(d, s(&layer));
                assert!(env.db.store.manifest_by_digest(&r, &m.digest).await.unwrap().is_none());
            }
            Err(e) => panic!("iteration {i}: {e}"),
        }
    }
    eprintln!("manifest PUT first: {won_put}, GC first: {won_gc}");
    env.db.drop_database().await;
}
