//! The leftovers sweep: old interrupted writes next to blobs and old upload objects without a
//! session go (logged and recorded); blob objects without a `blobs` row are queued for the
//! storage deleter, on the filesystem and on S3 (moto); blobs, live sessions and anything
//! younger than the safe age stay.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gc::{Leftover, LeftoverKind, LeftoverSweep};
use meta::testing::TestDb;
use meta::Backend;
use oci::Digest;

fn age(path: &std::path::Path, by: Duration) {
    let when = SystemTime::now() - by;
    std::fs::File::open(path).unwrap().set_modified(when).unwrap();
}

fn write(root: &std::path::Path, key: &str, bytes: usize, old: bool) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![7u8; bytes]).unwrap();
    if old {
        age(&path, Duration::from_secs(7200));
        age(path.parent().unwrap(), Duration::from_secs(7200));
    }
}

async fn old_leftovers_go_and_everything_else_stays(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let blobs = blobstore::BlobStore::filesystem(root).unwrap();
    let blob = Digest::sha256_of(b"a blob");
    blobs.put_small(&blob, Bytes::from_static(b"a blob")).await.unwrap();
    let blob_key = blobstore::layout::blob(&blob).to_string();
    write(root, &format!("{blob_key}#1"), 100, true);
    write(root, &format!("{blob_key}#2"), 10, false);
    let other = blobstore::layout::blob(&Digest::sha256_of(b"never committed")).to_string();
    write(root, &format!("{other}#1"), 50, true);
    write(root, "uploads/orphan/part-a", 30, true);
    write(root, "uploads/orphan/part-b", 12, true);
    write(root, "uploads/young-orphan/part", 5, false);
    write(root, "uploads/live/part", 7, true);
    let now = meta::now_millis();
    db.store
        .create_upload(&meta::UploadRecord {
            id: "live".into(),
            repository: "a/app".into(),
            size: 7,
            parts: 1,
            hash_state: vec![],
            created_at: now - 7_200_000,
            updated_at: now - 7_200_000,
        })
        .await
        .unwrap();

    let sweep = LeftoverSweep::new(db.store.clone(), blobs.clone(), Duration::from_secs(3600));
    let mut found = sweep.find(now).await.unwrap();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    let mut expected = vec![
        Leftover { key: format!("{blob_key}#1"), size: 100, kind: LeftoverKind::InterruptedWrite },
        Leftover { key: format!("{other}#1"), size: 50, kind: LeftoverKind::InterruptedWrite },
        Leftover {
            key: "uploads/orphan".into(),
            size: 42,
            kind: LeftoverKind::UploadWithoutSession,
        },
    ];
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(found, expected);
    assert!(root.join(format!("{blob_key}#1")).exists(), "finding removes nothing");

    let report = sweep.sweep(now).await.unwrap();
    assert_eq!((report.removed, report.removed_bytes, report.failed), (3, 192, 0));
    assert!(!root.join(format!("{blob_key}#1")).exists());
    assert!(!root.join(format!("{other}#1")).exists());
    assert!(!root.join("uploads/orphan").exists());
    assert!(root.join(format!("{blob_key}#2")).exists(), "too young");
    assert!(root.join("uploads/young-orphan/part").exists(), "too young");
    assert!(root.join("uploads/live/part").exists(), "its session lives");
    assert_eq!(blobs.size(&blob).await.unwrap(), Some(6), "the blob stays");
    let status = db.store.gc_status(now).await.unwrap();
    assert_eq!(status.last_hour.leftovers_removed, 3);
    assert_eq!(status.last_hour.leftover_bytes_removed, 192);
    assert_eq!(sweep.sweep(now).await.unwrap().removed, 0, "nothing left");
    db.drop_database().await;
}

/// A blob store on the filesystem or on a bucket of a moto S3 server, with what keeps it
/// alive (the directory, the server) until dropped.
fn storage(s3: bool) -> (Box<dyn std::any::Any>, blobstore::BlobStore) {
    if s3 {
        let server = blobstore::test_servers::ObjectStoreServer::moto();
        let settings = server.s3_bucket("leftovers");
        let blobs = blobstore::BlobStore::open(&blobstore::Backend::S3(settings)).unwrap();
        (Box::new(server), blobs)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let blobs = blobstore::BlobStore::filesystem(dir.path()).unwrap();
        (Box::new(dir), blobs)
    }
}

/// Writes one upload part of `bytes` into session `id`, as a PATCH does.
async fn upload_part(blobs: &blobstore::BlobStore, id: &str, bytes: &'static [u8]) {
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from_static(bytes)) });
    let hasher = blobstore::ResumableSha256::new();
    blobs.write_part(id, &hasher, body, None).await.unwrap();
}

/// Bytes a crash left between publishing an upload and committing its `blobs` row are found
/// by listing the blob objects (a directory walk, or an S3 bucket listing) and queued for the
/// storage deleter an hour later, which removes them; recorded blobs, bytes already queued and
/// anything younger than the safe age stay. Upload objects without a session go on S3 too.
async fn blob_objects_without_a_record_are_found_and_deleted(backend: Backend, s3: bool) {
    let db = TestDb::new(backend, None).await;
    let (_storage, blobs) = storage(s3);
    let put = |label: &'static str| {
        let blobs = blobs.clone();
        async move {
            let d = Digest::sha256_of(label.as_bytes());
            blobs.put_small(&d, Bytes::from_static(label.as_bytes())).await.unwrap();
            d
        }
    };
    let recorded = put("a recorded blob").await;
    common::link_blob(&db.store, &"a/app".parse().unwrap(), &recorded, 15).await;
    let orphan = put("bytes of a push killed before its commit").await;
    let queued = put("bytes already queued for deletion").await;
    db.exec(&format!(
        "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
         VALUES ('{queued}', 33, 0, 0)"
    ))
    .await;
    upload_part(&blobs, "gone-session", b"a part nobody owns").await;
    upload_part(&blobs, "live", b"a part of a live upload").await;
    let now = meta::now_millis();
    db.store
        .create_upload(&meta::UploadRecord {
            id: "live".into(),
            repository: "a/app".into(),
            size: 23,
            parts: 1,
            hash_state: vec![],
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();

    let sweep = LeftoverSweep::new(db.store.clone(), blobs.clone(), Duration::from_secs(3600));
    assert_eq!(sweep.find(now).await.unwrap(), vec![], "everything is younger than an hour");
    // Two hours on (object stores keep their own timestamps, so the clock moves instead).
    let later = now + 7_200_000;
    let mut found = sweep.find(later).await.unwrap();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    let orphan_key = blobstore::layout::blob(&orphan).to_string();
    let mut expected = vec![
        Leftover { key: orphan_key.clone(), size: 40, kind: LeftoverKind::BlobWithoutRecord },
        Leftover {
            key: "uploads/gone-session".into(),
            size: 18,
            kind: LeftoverKind::UploadWithoutSession,
        },
    ];
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(found, expected);

    let report = sweep.sweep(later).await.unwrap();
    assert_eq!((report.removed, report.removed_bytes, report.failed), (1, 18, 0));
    assert_eq!((report.queued, report.queued_bytes), (1, 40));
    assert_eq!(blobs.size(&orphan).await.unwrap(), Some(40), "queued, not deleted yet");
    let pending = db.store.gc_storage_deletions(10).await.unwrap();
    let row = pending.iter().find(|d| d.digest == orphan.as_str()).expect("queued");
    assert_eq!((row.size, row.next_attempt_at), (40, later + 3_600_000), "an hour later");
    assert_eq!(sweep.sweep(later).await.unwrap().queued, 0, "queued once");

    // The storage deleter removes the bytes when the row is due, unless a push recorded the
    // blob meanwhile (then it keeps them).
    let deleter = gc::StorageDeleter::new(db.store.clone(), blobs.clone(), Duration::from_secs(60));
    let done = deleter.drain(later + 3_600_000).await.unwrap();
    assert_eq!(done.deleted, 2, "{done:?}");
    assert_eq!(blobs.size(&orphan).await.unwrap(), None);
    assert_eq!(blobs.size(&queued).await.unwrap(), None);
    assert_eq!(blobs.size(&recorded).await.unwrap(), Some(15), "a recorded blob stays");
    let live =
        blobs.idle_upload_sessions(std::time::SystemTime::now() + Duration::from_secs(86_400));
    assert_eq!(live.await.unwrap(), vec!["live".to_string()], "the live session's part stays");
    assert_eq!(sweep.find(later).await.unwrap(), vec![], "nothing left");

    // Bytes whose push records them after the sweep queued them stay: recording a blob
    // cancels a pending deletion of its bytes.
    let late = put("bytes whose row commits late").await;
    assert_eq!(sweep.sweep(later + 7_200_000).await.unwrap().queued, 1);
    common::link_blob(&db.store, &"a/app".parse().unwrap(), &late, 28).await;
    assert_eq!(db.store.gc_storage_deletions(10).await.unwrap(), vec![], "cancelled");
    let kept = deleter.drain(later + 7_200_000 + 3_600_000).await.unwrap();
    assert_eq!((kept.claimed, kept.deleted), (0, 0), "{kept:?}");
    assert_eq!(blobs.size(&late).await.unwrap(), Some(28));
    db.drop_database().await;
}

async fn blob_objects_without_a_record_on_the_filesystem(backend: Backend) {
    blob_objects_without_a_record_are_found_and_deleted(backend, false).await
}

async fn blob_objects_without_a_record_on_s3(backend: Backend) {
    blob_objects_without_a_record_are_found_and_deleted(backend, true).await
}

on_both_backends!(
    old_leftovers_go_and_everything_else_stays,
    blob_objects_without_a_record_on_the_filesystem,
    blob_objects_without_a_record_on_s3
);
