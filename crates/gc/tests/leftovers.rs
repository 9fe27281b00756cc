//! The leftovers sweep on the filesystem: old interrupted writes next to blobs and old upload
//! objects without a session go (logged and recorded); blobs, live sessions and anything
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

on_both_backends!(old_leftovers_go_and_everything_else_stays);
