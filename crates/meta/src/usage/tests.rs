//! Usage kept by triggers equals a from-scratch recomputation after every step of random
//! pushes and deletes; exclusive sizes; threshold notices; the backfill of migration 0009.

use oci::{Digest, IndexChild, RepositoryName, Tag};
use proptest::prelude::*;
use sqlx::Row;

use super::UsageScope;
use crate::store::get_i64;
use crate::store::testing::TestDb;
use crate::test_writes::Writes;
use crate::{Backend, NewManifest, Store, Visibility};

const REPOS: [&str; 5] = ["a/p1", "a/p1/x", "a/sub/p2", "b/p3", "b/p3/y/z"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];
const BLOB_SIZES: [i64; 6] = [1, 10, 100, 1000, 10_000, 100_000];

fn blob(i: usize) -> Digest {
    Digest::sha256_of(format!("blob {i}").as_bytes())
}

fn manifest(mask: u8, children: Vec<IndexChild>) -> NewManifest {
    let payload = format!("manifest {mask} {}", children.len()).into_bytes();
    NewManifest {
        digest: Digest::sha256_of(&payload),
        media_type: oci::media_type::OCI_MANIFEST.into(),
        artifact_type: None,
        subject: None,
        config_digest: None,
        total_size: payload.len() as i64,
        annotations: None,
        payload,
        blobs: (0..BLOB_SIZES.len()).filter(|i| mask & (1 << i) != 0).map(blob).collect(),
        children,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push { repo: usize, mask: u8, tag: Option<usize> },
    DeleteManifest { repo: usize, mask: u8 },
    DeleteTag { repo: usize, tag: usize },
    DeleteRepository { repo: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let repo = 0..REPOS.len();
    prop_oneof![
        4 => (repo.clone(), 0u8..64, proptest::option::of(0..TAGS.len()))
            .prop_map(|(repo, mask, tag)| Op::Push { repo, mask, tag }),
        2 => (repo.clone(), 0u8..64).prop_map(|(repo, mask)| Op::DeleteManifest { repo, mask }),
        1 => (repo.clone(), 0..TAGS.len()).prop_map(|(repo, tag)| Op::DeleteTag { repo, tag }),
        1 => repo.prop_map(|repo| Op::DeleteRepository { repo }),
    ]
}

struct Tenancy {
    groups: Vec<(i64, &'static str)>,
    projects: Vec<(i64, &'static str)>,
}

async fn tenancy(store: &Store) -> Tenancy {
    let a = store.create_group("a", "a", None, Visibility::Private).await.unwrap();
    let sub = store.create_group("sub", "sub", Some(&a), Visibility::Private).await.unwrap();
    let b = store.create_group("b", "b", None, Visibility::Private).await.unwrap();
    let p1 = store.create_project("p1", "p1", &a, Visibility::Private).await.unwrap();
    let p2 = store.create_project("p2", "p2", &sub, Visibility::Private).await.unwrap();
    let p3 = store.create_project("p3", "p3", &b, Visibility::Private).await.unwrap();
    Tenancy {
        groups: vec![(a.id, "a"), (sub.id, "a/sub"), (b.id, "b")],
        projects: vec![(p1.id, "a/p1"), (p2.id, "a/sub/p2"), (p3.id, "b/p3")],
    }
}

async fn apply(store: &Store, op: &Op) {
    match op {
        Op::Push { repo, mask, tag } => {
            let name: RepositoryName = REPOS[*repo].parse().unwrap();
            let m = manifest(*mask, vec![]);
            for (i, size) in BLOB_SIZES.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    store.link_blob(&name, &blob(i), *size).await.unwrap();
                }
            }
            let tags: Vec<Tag> = tag.iter().map(|t| TAGS[*t].parse().unwrap()).collect();
            store.put_manifest(&name, &m, &tags, &[]).await.unwrap();
        }
        Op::DeleteManifest { repo, mask } => {
            let name: RepositoryName = REPOS[*repo].parse().unwrap();
            store.delete_manifest(&name, &manifest(*mask, vec![]).digest).await.unwrap();
        }
        Op::DeleteTag { repo, tag } => {
            let name: RepositoryName = REPOS[*repo].parse().unwrap();
            store.delete_tag(&name, &TAGS[*tag].parse().unwrap()).await.unwrap();
        }
        Op::DeleteRepository { repo } => {
            if let Some(r) = store.repositories_at_or_below(REPOS[*repo]).await.unwrap().first() {
                if r.name == REPOS[*repo] {
                    store.delete_repository(r.id).await.unwrap();
                }
            }
        }
    }
}

/// Deduplicated bytes of every manifest in the repositories named `path` or below it, straight
/// from the registry tables: the oracle, independent of the usage tables.
async fn direct(store: &Store, path: &str) -> i64 {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS n FROM blobs b WHERE b.digest IN \
         (SELECT mb.blob_digest FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id \
          JOIN repositories r ON r.id = m.repository_id \
          WHERE r.name = $1 OR (r.name > $2 AND r.name < $3))",
    )
    .bind(path)
    .bind(format!("{path}/"))
    .bind(format!("{path}0"))
    .fetch_one(&store.pool)
    .await
    .unwrap();
    get_i64(&row, "n")
}

async fn check(store: &Store, t: &Tenancy, step: &str) {
    for (id, path) in &t.groups {
        assert_eq!(
            store.usage(UsageScope::Group(*id)).await.unwrap(),
            direct(store, path).await,
            "group {path} after {step}"
        );
    }
    for (id, path) in &t.projects {
        assert_eq!(
            store.usage(UsageScope::Project(*id)).await.unwrap(),
            direct(store, path).await,
            "project {path} after {step}"
        );
    }
    for r in store
        .repositories_at_or_below("a")
        .await
        .unwrap()
        .into_iter()
        .chain(store.repositories_at_or_below("b").await.unwrap())
    {
        let own = sqlx::query(
            "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS n FROM blobs b WHERE b.digest IN \
             (SELECT mb.blob_digest FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id \
              WHERE m.repository_id = $1)",
        )
        .bind(r.id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            store.usage(UsageScope::Repository(r.id)).await.unwrap(),
            get_i64(&own, "n"),
            "repository {} after {step}",
            r.name
        );
    }
    let report = store.recompute_usage(None).await.unwrap();
    assert!(report.is_clean(), "recompute found drift after {step}: {report:?}");
}

async fn run_sequence(backend: Backend, ops: Vec<Op>) {
    let db = TestDb::new(backend, None).await;
    let t = tenancy(&db.store).await;
    for (i, op) in ops.iter().enumerate() {
        apply(&db.store, op).await;
        check(&db.store, &t, &format!("step {i}: {op:?}")).await;
    }
    db.drop_database().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn incremental_usage_equals_recompute_sqlite(ops in proptest::collection::vec(op(), 1..25)) {
        runtime().block_on(run_sequence(Backend::Sqlite, ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn incremental_usage_equals_recompute_postgres(ops in proptest::collection::vec(op(), 1..20)) {
        runtime().block_on(run_sequence(Backend::Postgres, ops));
    }
}

async fn exclusive_sizes(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let store = &db.store;
    let t = tenancy(store).await;
    let (a, p1) = (t.groups[0].0, t.projects[0].0);
    // a/p1: mask 0b011 tagged t0 and 0b110 tagged t1; a/sub/p2: 0b100 (shares blob 2).
    for op in [
        Op::Push { repo: 0, mask: 0b011, tag: Some(0) },
        Op::Push { repo: 0, mask: 0b110, tag: Some(1) },
        Op::Push { repo: 2, mask: 0b100, tag: Some(0) },
        Op::Push { repo: 1, mask: 0b1000, tag: Some(2) },
    ] {
        apply(store, &op).await;
    }
    let repo = store.repositories_at_or_below("a/p1").await.unwrap();
    let (r0, r1) = (repo[0].id, repo[1].id);
    assert_eq!(store.usage(UsageScope::Repository(r0)).await.unwrap(), 111);
    assert_eq!(
        store.exclusive_size(UsageScope::Repository(r0), Some(a)).await.unwrap(),
        11,
        "blob 2 is shared with a/sub/p2"
    );
    assert_eq!(store.exclusive_size(UsageScope::Repository(r1), Some(a)).await.unwrap(), 1000);
    assert_eq!(store.exclusive_size(UsageScope::Project(p1), Some(a)).await.unwrap(), 1011);
    // t0 alone holds blob 0; blob 1 is shared with t1's manifest.
    assert_eq!(store.tag_exclusive_size(r0, "t0").await.unwrap(), 1);
    assert_eq!(store.tag_exclusive_size(r0, "t1").await.unwrap(), 0);
    // A second tag on the same manifest: deleting one frees nothing.
    apply(store, &Op::Push { repo: 0, mask: 0b011, tag: Some(2) }).await;
    assert_eq!(store.tag_exclusive_size(r0, "t0").await.unwrap(), 0);
    assert_eq!(store.tag_exclusive_size(r0, "nope").await.unwrap(), 0);
    db.drop_database().await;
}

async fn threshold_notices(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let store = &db.store;
    let t = tenancy(store).await;
    let a = t.groups[0].0;
    assert!(store.set_group_storage_limit(a, Some(1000)).await.unwrap());
    assert!(
        !store.set_group_storage_limit(t.groups[1].0, Some(1)).await.unwrap(),
        "subgroups have no limit"
    );
    let thresholds = |store: &Store| {
        let store = store.clone();
        async move {
            store.storage_notices(a).await.unwrap().iter().map(|n| n.threshold).collect::<Vec<_>>()
        }
    };
    // 100 + 1 + 10 bytes: below 70 %.
    apply(store, &Op::Push { repo: 0, mask: 0b111, tag: Some(0) }).await;
    assert_eq!(thresholds(store).await, Vec::<i64>::new());
    // Limit 150: 111 is 74 %: 70 crossed by the limit change.
    store.set_group_storage_limit(a, Some(150)).await.unwrap();
    assert_eq!(thresholds(store).await, vec![70]);
    // 1000 more bytes: 85, 95 and 100 at once; the same content again crosses nothing.
    apply(store, &Op::Push { repo: 0, mask: 0b1111, tag: Some(1) }).await;
    assert_eq!(thresholds(store).await, vec![70, 85, 95, 100]);
    apply(store, &Op::Push { repo: 2, mask: 0b1111, tag: Some(1) }).await;
    assert_eq!(thresholds(store).await, vec![70, 85, 95, 100], "recorded once");
    let status = store.quota_status(a).await.unwrap().unwrap();
    assert_eq!(status.usage_bytes, 1111);
    assert!(status.check_new_content(true).is_err());
    assert_eq!(store.current_storage_notice(&status).await.unwrap().unwrap().threshold, 100);
    assert!(!store.adds_bytes_to_namespace(a, &[blob(3).as_str()]).await.unwrap());
    assert!(store.adds_bytes_to_namespace(a, &[blob(5).as_str()]).await.unwrap());
    let logged = store.take_unlogged_storage_notices().await.unwrap();
    assert_eq!(logged.len(), 4);
    assert!(logged[3].message().contains("reached 100 %"), "{}", logged[3].message());
    assert!(store.take_unlogged_storage_notices().await.unwrap().is_empty());
    // Below again, then across again: recorded anew.
    for repo in [0, 2] {
        let name: RepositoryName = REPOS[repo].parse().unwrap();
        store.delete_manifest(&name, &manifest(0b1111, vec![]).digest).await.unwrap();
    }
    assert_eq!(store.quota_status(a).await.unwrap().unwrap().usage_bytes, 111);
    apply(store, &Op::Push { repo: 0, mask: 0b1111, tag: Some(1) }).await;
    assert_eq!(thresholds(store).await, vec![70, 85, 95, 100, 85, 95, 100]);
    // The instance default applies to groups without their own limit.
    store.set_default_storage_limit(1).await.unwrap();
    let b = store.quota_status(t.groups[2].0).await.unwrap().unwrap();
    assert_eq!((b.limit_bytes, b.usage_bytes), (Some(1), 0));
    assert!(b.check_new_content(true).is_ok(), "0 of 1 byte used");
    store.set_group_storage_limit(a, Some(0)).await.unwrap();
    assert_eq!(store.quota_status(a).await.unwrap().unwrap().limit_bytes, None);
    db.drop_database().await;
}

/// A database from before usage was kept gets its figures on migration.
async fn backfill(backend: Backend) {
    let db = TestDb::new(backend, Some(9)).await;
    let store = &db.store;
    let a = store.create_group("a", "a", None, Visibility::Private).await.unwrap();
    store.create_project("p1", "p1", &a, Visibility::Private).await.unwrap();
    for op in [
        Op::Push { repo: 0, mask: 0b011, tag: Some(0) },
        Op::Push { repo: 1, mask: 0b110, tag: None },
    ] {
        apply(store, &op).await;
    }
    store.migrate().await.unwrap();
    assert_eq!(store.usage(UsageScope::Group(a.id)).await.unwrap(), 111);
    let rows = sqlx::query("SELECT COUNT(*) AS n FROM usage_repository_scopes")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(rows.get::<i64, _>("n"), 6, "two repositories × repository, project, group");
    assert!(store.recompute_usage(None).await.unwrap().is_clean());
    // Drift is reported and corrected.
    sqlx::query("UPDATE usage_totals SET bytes = 5 WHERE scope_kind = 'group'")
        .execute(&store.pool)
        .await
        .unwrap();
    let report = store.recompute_usage(Some("a")).await.unwrap();
    assert_eq!(report.corrections.len(), 1, "{report:?}");
    assert_eq!((report.corrections[0].stored_bytes, report.corrections[0].actual_bytes), (5, 111));
    assert_eq!(report.corrections[0].path.as_deref(), Some("a"));
    db.drop_database().await;
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Postgres).await })*
        }
    };
}
on_both_backends!(exclusive_sizes, threshold_notices, backfill);
