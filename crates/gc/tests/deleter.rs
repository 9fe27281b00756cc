//! The storage deleter on SQLite and PostgreSQL, over an object store whose deletes fail on
//! demand: failures are retried with exponential backoff (capped by gc.maxbackoff) and no item
//! is ever lost; a blob published again keeps its bytes; two deleters at once delete each
//! object exactly once.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::flaky_blobs;
use gc::{DeleterReport, StorageDeleter};
use meta::testing::TestDb;
use meta::Backend;
use oci::Digest;

fn digest(label: &str) -> Digest {
    Digest::sha256_of(label.as_bytes())
}

fn key(d: &Digest) -> String {
    blobstore::layout::blob(d).to_string()
}

/// Stores `label`'s bytes as a blob and queues them for deletion, due at `due`.
async fn doomed(db: &TestDb, blobs: &blobstore::BlobStore, label: String, due: i64) -> Digest {
    let d = digest(&label);
    blobs.put_small(&d, Bytes::from(label.as_bytes().to_vec())).await.unwrap();
    db.exec(&format!(
        "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
         VALUES ('{d}', {}, {due}, {due})",
        label.len()
    ))
    .await;
    d
}

async fn failures_retry_with_backoff_and_nothing_is_lost(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, flaky) = flaky_blobs();
    let max_backoff = Duration::from_secs(60);
    let deleter =
        StorageDeleter::new(db.store.clone(), blobs.clone(), max_backoff).with_batch(10, 4);
    let items: Vec<Digest> =
        futures::future::join_all((0..5).map(|i| doomed(&db, &blobs, format!("blob {i}"), 1_000)))
            .await;
    // A digest whose object can never be deleted: it backs off up to the maximum.
    let stubborn = doomed(&db, &blobs, "stubborn".into(), 1_000).await;
    flaky.always_fail.lock().unwrap().insert(key(&stubborn));

    assert_eq!(deleter.delete_due(999).await.unwrap(), DeleterReport::default(), "none due");
    flaky.fail_next.store(3, Ordering::SeqCst); // storage goes down for three deletes
    let first = deleter.delete_due(1_000).await.unwrap();
    assert_eq!((first.claimed, first.deleted, first.failed), (6, 2, 4));
    let pending = db.store.gc_storage_deletions(100).await.unwrap();
    assert_eq!(pending.len(), 4, "every failure is kept");
    for row in &pending {
        assert_eq!((row.attempts, row.next_attempt_at), (1, 3_000), "2^1 s later");
        assert!(row.last_error.as_deref().unwrap().contains("storage is down"), "{row:?}");
    }
    assert_eq!(deleter.delete_due(2_999).await.unwrap().claimed, 0, "backing off");

    let second = deleter.delete_due(3_000).await.unwrap();
    assert_eq!((second.claimed, second.deleted, second.failed), (4, 3, 1));
    for item in &items {
        assert_eq!(blobs.size(item).await.unwrap(), None, "{item} is gone from storage");
    }
    assert_eq!(blobs.size(&stubborn).await.unwrap(), Some(8), "still there, still queued");
    let mut now = 3_000;
    let mut waits = Vec::new();
    for _ in 0..8 {
        let row = db.store.gc_storage_deletions(10).await.unwrap().remove(0);
        waits.push(row.next_attempt_at - now);
        now = row.next_attempt_at;
        assert_eq!(deleter.delete_due(now).await.unwrap().failed, 1);
    }
    assert_eq!(waits, [4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
    let row = db.store.gc_storage_deletions(10).await.unwrap().remove(0);
    assert_eq!(row.attempts, 10);

    let status = db.store.gc_status(now).await.unwrap();
    assert_eq!(status.storage.pending, 1);
    assert_eq!(status.storage.failing, 1);
    assert_eq!(status.last_hour.storage_objects_removed, 5);
    assert_eq!(status.last_hour.storage_bytes_removed, 5 * 6);
    assert_eq!(status.last_hour.failures, 4 + 1 + 8);

    // Storage is back: the operator's `gc run` retries at once.
    flaky.always_fail.lock().unwrap().clear();
    db.store.gc_storage_deletions_due_now(now).await.unwrap();
    let last = deleter.drain(now).await.unwrap();
    assert_eq!((last.deleted, last.failed), (1, 0));
    assert_eq!(db.store.gc_storage_deletions(10).await.unwrap(), vec![]);
    assert_eq!(blobs.size(&stubborn).await.unwrap(), None);
    db.drop_database().await;
}

async fn a_blob_pushed_again_keeps_its_bytes(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, flaky) = flaky_blobs();
    let deleter = StorageDeleter::new(db.store.clone(), blobs.clone(), Duration::from_secs(60));
    let back = doomed(&db, &blobs, "pushed again".into(), 0).await;
    // Its `blobs` row is back (the write path also cancels the pending deletion; this is the
    // deleter's own guard for a row that came back while it held the claim).
    db.exec(&format!("INSERT INTO blobs (digest, size, created_at) VALUES ('{back}', 12, 0)"))
        .await;
    let report = deleter.drain(10).await.unwrap();
    assert_eq!((report.republished, report.deleted), (1, 0));
    assert_eq!(flaky.deletes_of(&key(&back)), 0, "storage untouched");
    assert_eq!(blobs.size(&back).await.unwrap(), Some(12));
    assert_eq!(db.store.gc_storage_deletions(10).await.unwrap(), vec![], "row dropped");
    // An object that is already gone counts as deleted.
    let gone = doomed(&db, &blobs, "gone already".into(), 0).await;
    blobs.delete_blob(&gone).await.unwrap();
    assert_eq!(deleter.drain(10).await.unwrap().deleted, 1);
    db.drop_database().await;
}

async fn two_deleters_delete_each_object_once(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, flaky) = flaky_blobs();
    let items: Vec<Digest> =
        futures::future::join_all((0..40).map(|i| doomed(&db, &blobs, format!("b{i}"), 0))).await;
    let deleter = |_| {
        StorageDeleter::new(db.store.clone(), blobs.clone(), Duration::from_secs(60))
            .with_batch(5, 4)
    };
    let (one, two) = (deleter(1), deleter(2));
    let (a, b) = tokio::join!(one.drain(100), two.drain(100));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.deleted + b.deleted, 40);
    for item in &items {
        assert_eq!(flaky.deletes_of(&key(item)), 1, "{item}");
    }
    assert_eq!(db.store.gc_storage_deletions(100).await.unwrap(), vec![]);
    assert_eq!(db.store.gc_status(100).await.unwrap().last_hour.storage_objects_removed, 40);
    db.drop_database().await;
}

/// Makes every transaction that links one of `digests` to a repository fail at COMMIT (after
/// the write service has published the bytes): a deferred constraint on both backends.
async fn fail_commits_linking(db: &TestDb, backend: Backend, digests: &[&Digest]) {
    let list: Vec<String> = digests.iter().map(|d| format!("'{d}'")).collect();
    let list = list.join(", ");
    match backend {
        Backend::Postgres => {
            db.exec(
                "CREATE FUNCTION injected_commit_failure() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected commit failure'; END $$",
            )
            .await;
            db.exec(&format!(
                "CREATE CONSTRAINT TRIGGER injected_commit_failure AFTER INSERT ON repository_blobs \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.blob_digest IN ({list})) \
                 EXECUTE FUNCTION injected_commit_failure()"
            ))
            .await;
        }
        Backend::Sqlite => {
            db.exec("CREATE TABLE injected_parent (id INTEGER PRIMARY KEY)").await;
            db.exec(
                "CREATE TABLE injected_child (parent INTEGER \
                 REFERENCES injected_parent (id) DEFERRABLE INITIALLY DEFERRED)",
            )
            .await;
            db.exec(&format!(
                "CREATE TRIGGER injected_commit_failure AFTER INSERT ON repository_blobs \
                 WHEN NEW.blob_digest IN ({list}) BEGIN INSERT INTO injected_child VALUES (1); END"
            ))
            .await;
        }
    }
}

/// Uploads `content` into `repo` through the write service, as the `/v2` handlers do.
async fn upload(
    svc: &service::WriteService,
    repo: &str,
    content: &str,
) -> Result<Digest, service::ServiceError> {
    let digest = digest(content);
    let id = format!("upload-{}", meta::now_millis());
    let body =
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(content.as_bytes().to_vec()))]);
    let hasher = blobstore::ResumableSha256::new();
    let part = svc.blobs().write_part(&id, &hasher, body, None).await.unwrap();
    let parts = [blobstore::UploadPart { object: part.object, size: part.size }];
    let repo: oci::RepositoryName = repo.parse().unwrap();
    let committed = svc.commit_upload(&repo, &id, &parts, &part.hasher, &digest).await;
    svc.blobs().delete_upload(&id).await;
    committed.map(|()| digest)
}

/// Bytes published inside a transaction whose commit then fails have no `blobs` row: they
/// are queued for the storage deleter (an hour out, after any concurrent writer), which
/// removes them. Bytes of a blob that is stored after all (here: stored before, and the
/// failed commit only linked it elsewhere) stay.
async fn bytes_of_a_failed_commit_are_collected(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, flaky) = flaky_blobs();
    let svc = service::WriteService::new(db.store.clone(), blobs.clone(), Default::default());
    let deleter = StorageDeleter::new(db.store.clone(), blobs.clone(), Duration::from_secs(60));
    let orphan = digest("published, never recorded");
    let stored = upload(&svc, "acme/a", "stored before").await.unwrap();
    fail_commits_linking(&db, backend, &[&orphan, &stored]).await;

    let before = meta::now_millis();
    let failed = upload(&svc, "acme/a", "published, never recorded").await;
    assert!(failed.is_err(), "the commit fails: {failed:?}");
    assert!(upload(&svc, "acme/b", "stored before").await.is_err(), "linking it fails");
    assert_eq!(blobs.size(&orphan).await.unwrap(), Some(25), "published before the commit");
    assert!(db.store.blob(&orphan).await.unwrap().is_none(), "but never recorded");
    let pending = db.store.gc_storage_deletions(10).await.unwrap();
    let mut queued: Vec<String> = pending.iter().map(|p| p.digest.clone()).collect();
    queued.sort();
    let mut want = vec![orphan.to_string(), stored.to_string()];
    want.sort();
    assert_eq!(queued, want);
    let hour = service::ORPHANED_BYTES_DELAY.as_millis() as i64;
    for p in &pending {
        assert!(p.next_attempt_at >= before + hour, "not before a concurrent writer: {p:?}");
    }
    let soon = before + hour - 1;
    assert_eq!(deleter.drain(soon).await.unwrap().claimed, 0, "nothing due yet");

    let report = deleter.drain(meta::now_millis() + hour).await.unwrap();
    assert_eq!((report.deleted, report.republished), (1, 1), "{report:?}");
    assert_eq!(blobs.size(&orphan).await.unwrap(), None, "the orphaned bytes are gone");
    assert_eq!(flaky.deletes_of(&key(&stored)), 0, "a stored blob's bytes are untouched");
    assert_eq!(blobs.size(&stored).await.unwrap(), Some(13));
    assert_eq!(db.store.gc_storage_deletions(10).await.unwrap(), vec![]);
    db.drop_database().await;
}

on_both_backends!(
    failures_retry_with_backoff_and_nothing_is_lost,
    a_blob_pushed_again_keeps_its_bytes,
    two_deleters_delete_each_object_once,
    bytes_of_a_failed_commit_are_collected,
);
