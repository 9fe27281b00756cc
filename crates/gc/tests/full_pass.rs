//! `gc run`'s full pass around a scripted reviewer: it marks, drains both queues in batches,
//! repeats while a round removed something, then drains storage deletions and sweeps
//! leftovers; the dry run changes nothing.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{reviewed, ScriptedReviewer};
use gc::{FullPassOptions, ManualClock, Progress, Queue, Removed, RemovedKind, ReviewReport};
use meta::testing::TestDb;
use meta::Backend;
use oci::Digest;

fn removed(kind: RemovedKind, label: &str, size: i64) -> Removed {
    Removed {
        kind,
        digest: Digest::sha256_of(label.as_bytes()).to_string(),
        repository: None,
        size,
        reason: "dangling".into(),
    }
}

async fn a_full_pass_repeats_until_a_round_removes_nothing(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, _flaky) = common::flaky_blobs();
    let repo: oci::RepositoryName = "a/app".parse().unwrap();
    let loose = Digest::sha256_of(b"loose");
    common::link_blob(&db.store, &repo, &loose, 5).await;
    for m in ["sha256:m1", "sha256:m2"] {
        db.exec(&format!(
            "INSERT INTO manifests (repository_id, digest, media_type, total_size, payload, \
             created_at) SELECT id, '{m}', 'x', 10, '', 0 FROM repositories WHERE name = 'a/app'"
        ))
        .await;
    }
    // Bytes the review freed earlier, waiting for the deleter (backing off).
    let freed = Digest::sha256_of(b"freed");
    blobs.put_small(&freed, Bytes::from_static(b"freed")).await.unwrap();
    db.exec(&format!(
        "INSERT INTO gc_storage_deletions (digest, size, attempts, next_attempt_at, created_at) \
         VALUES ('{freed}', 5, 3, 999999999999999, 0)"
    ))
    .await;
    let reviewer = ScriptedReviewer::default();
    let batch = ReviewReport {
        reviewed: 2,
        deleted: vec![
            removed(RemovedKind::Manifest, "m1", 10),
            removed(RemovedKind::Manifest, "m2", 10),
        ],
        kept: 0,
    };
    reviewer
        .then(Queue::Manifests, Ok(batch))
        .then(Queue::Manifests, Ok(reviewed(0)))
        .then(
            Queue::Blobs,
            Ok(ReviewReport {
                reviewed: 1,
                deleted: vec![removed(RemovedKind::Blob, "layer", 1234)],
                kept: 0,
            }),
        )
        .then(Queue::Blobs, Ok(reviewed(0)));
    let now = meta::now_millis() + 10_000;
    let clock = ManualClock::new(now);
    let options = FullPassOptions { min_age: Duration::ZERO, batch: 2, ..Default::default() };
    let mut seen = Vec::new();
    let summary = gc::full_pass(&db.store, &blobs, &reviewer, &clock, &options, &mut |p| {
        seen.push(match p {
            Progress::Marked { round, manifests, blobs } => {
                format!("mark {round} {manifests} {blobs}")
            }
            Progress::Reviewed { queue, report } => {
                format!("{} {}", queue.name(), report.deleted.len())
            }
            Progress::Storage(r) => format!("storage {}", r.deleted),
            Progress::Leftovers(r) => format!("leftovers {}", r.removed),
        })
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            "mark 1 2 1",
            "manifests 2",
            "manifests 0",
            "blobs 1",
            "blobs 0",
            "mark 2 2 1", // the scripted reviewer did not really delete anything
            "manifests 0",
            "blobs 0",
            "storage 1",
            "leftovers 0",
        ]
    );
    assert_eq!(summary.rounds, 2);
    assert_eq!((summary.manifests_removed, summary.blobs_removed), (2, 1));
    assert_eq!(summary.blob_bytes_removed, 1234);
    assert_eq!(summary.storage.deleted, 1, "backing-off deletions are retried at once");
    assert_eq!(blobs.size(&freed).await.unwrap(), None);
    let calls = reviewer.calls();
    assert!(calls.iter().all(|c| c.1 == now && c.2 == 2), "{calls:?}");
    db.drop_database().await;
}

async fn the_dry_run_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let (blobs, _flaky) = common::flaky_blobs();
    let repo: oci::RepositoryName = "a/app".parse().unwrap();
    let loose = Digest::sha256_of(b"loose");
    common::link_blob(&db.store, &repo, &loose, 5).await;
    db.exec(
        "INSERT INTO gc_storage_deletions (digest, size, next_attempt_at, created_at) \
             VALUES ('sha256:abc', 9, 0, 0)",
    )
    .await;
    let clock = ManualClock::new(meta::now_millis() + 10_000);
    let options = FullPassOptions { min_age: Duration::ZERO, ..Default::default() };
    let report = gc::dry_run(&db.store, &blobs, &clock, &options).await.unwrap();
    assert_eq!(
        report.dangling.blobs,
        vec![meta::BlobRecord { digest: loose.to_string(), size: 5 }]
    );
    assert_eq!(report.pending_storage.len(), 1);
    let young = FullPassOptions { min_age: Duration::from_secs(3600), ..Default::default() };
    let report = gc::dry_run(&db.store, &blobs, &clock, &young).await.unwrap();
    assert!(report.dangling.blobs.is_empty(), "too young to mark");
    let status = db.store.gc_status(clock_now(&clock)).await.unwrap();
    assert_eq!((status.blobs.queued, status.storage.pending), (0, 1), "nothing queued or deleted");
    db.drop_database().await;
}

fn clock_now(clock: &ManualClock) -> i64 {
    gc::Clock::now_ms(clock)
}

on_both_backends!(a_full_pass_repeats_until_a_round_removes_nothing, the_dry_run_changes_nothing);
