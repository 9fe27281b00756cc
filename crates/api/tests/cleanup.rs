//! Cleanup policies run in-process against a real metadata store, with an injected clock:
//! keep_n, older_than, both regexes, `latest`, protected and immutable tags surviving, a run
//! cut by its budget resuming where it stopped, and the dry run equal to what a run deletes.
//! SQLite always; PostgreSQL too when `STOWAGE_TEST_PG` (or the default local server) answers.

use std::collections::BTreeSet;
use std::time::Duration;

use api::cleanup::{dry_run, run_due_policies, update_policy, CleanupBudget};
use api::Caller;
use meta::{NewManifest, Project, RuleLevels, Store, Visibility};
use serde_json::json;

const DAY: i64 = 86_400_000;

struct Db {
    store: Store,
    _dir: tempfile::TempDir,
    /// (server URL, database) of a PostgreSQL database to drop afterwards.
    pg: Option<(String, String)>,
}

impl Db {
    async fn close(self) {
        self.store.close().await;
        if let Some((server, name)) = self.pg {
            let _ = std::process::Command::new("psql")
                .arg(format!("{server}/postgres"))
                .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {name}")])
                .output();
        }
    }
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    Db { store: Store::connect(&url).await.expect("sqlite store"), _dir: dir, pg: None }
}

/// A fresh PostgreSQL database, or `None` when no server answers.
async fn postgres() -> Option<Db> {
    let server = std::env::var("STOWAGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("stowage_cleanup_{}", uuid_like());
    let created = std::process::Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .ok()?;
    if !created.status.success() {
        eprintln!("skipping PostgreSQL: {}", String::from_utf8_lossy(&created.stderr));
        return None;
    }
    let store = Store::connect(&format!("{server}/{name}")).await.expect("postgres store");
    Some(Db { store, _dir: tempfile::tempdir().expect("tempdir"), pg: Some((server, name)) })
}

/// The write service over `store` (these tests store no blob bytes).
fn writes(store: &Store) -> service::WriteService {
    let blobs =
        blobstore::BlobStore::filesystem(&std::env::temp_dir().join("stowage-cleanup-blobs"))
            .expect("blob store");
    service::WriteService::new(store.clone(), blobs, Default::default())
}

fn uuid_like() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}_{}", nanos, std::process::id())
}

async fn project(store: &Store, group: &str, path: &str) -> Project {
    let group = match store.group_by_full_path(group).await.unwrap() {
        Some(g) => g,
        None => store.create_group(group, group, None, Visibility::Private).await.unwrap(),
    };
    store.create_project(path, path, &group, Visibility::Private).await.unwrap()
}

/// Pushes a distinct manifest (no blobs) under `tag`; tags pushed later are newer.
async fn push(store: &Store, repo: &str, tag: &str) {
    let payload =
        format!("{{\"schemaVersion\":2,\"tag\":\"{tag}\",\"repo\":\"{repo}\"}}").into_bytes();
    let manifest = NewManifest {
        digest: oci::Digest::sha256_of(&payload),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        config_digest: None,
        total_size: payload.len() as i64,
        annotations: None,
        payload,
        blobs: Vec::new(),
        children: Vec::new(),
    };
    let name: oci::RepositoryName = repo.parse().unwrap();
    let admin = service::Actor::Level(meta::access_level::ADMIN);
    let ctx = service::RequestContext::default();
    writes(store)
        .put_manifest(&name, admin, &manifest, &[tag.parse().unwrap()], &ctx)
        .await
        .unwrap();
    // Distinct published times, so "newest" is unambiguous.
    tokio::time::sleep(Duration::from_millis(3)).await;
}

async fn tags(store: &Store, repo: &str) -> BTreeSet<String> {
    store.published_tags(repo).await.unwrap().into_iter().map(|t| t.name).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn unlimited() -> CleanupBudget {
    CleanupBudget { max_tags: 10_000, max_duration: Duration::from_secs(600) }
}

async fn keep_rules_and_protection(store: &Store) {
    let app = project(store, "acme", "app").await;
    let repo = "acme/app";
    for tag in ["v1.0", "release-1"] {
        push(store, repo, tag).await;
    }
    let numbered: Vec<String> = (1..=12).map(|i| format!("t{i:02}")).collect();
    for tag in &numbered {
        push(store, repo, tag).await;
    }
    for tag in ["keep-me", "latest"] {
        push(store, repo, tag).await;
    }
    push(store, "acme/app/sub", "old").await;
    push(store, "acme/app/sub", "latest").await;
    store
        .create_tag_protection_rule(
            app.id,
            "^v",
            &RuleLevels { push: Some(40), delete: Some(40) },
            false,
        )
        .await
        .unwrap();
    store
        .create_tag_protection_rule(app.id, "^release-", &RuleLevels::default(), true)
        .await
        .unwrap();

    let now = meta::now_millis();
    let attributes = json!({"enabled": true, "cadence": "1d", "keep_n": 5, "older_than": "7d",
                            "name_regex": ".*", "name_regex_keep": "keep-.*"});
    let policy = update_policy(store, &Caller::Operator, &app, attributes, now).await.unwrap();
    assert_eq!(policy.next_run_at, Some(now + DAY));

    // Not due yet: nothing runs.
    let report = run_due_policies(&writes(store), now + DAY / 2, unlimited()).await.unwrap();
    assert_eq!(report.tags_removed, 0);
    assert_eq!(report.policies_finished, 0);

    // Due, but nothing is older than 7 days yet: the run finishes having removed nothing.
    assert!(dry_run(store, &app, now + DAY + 1).await.unwrap().is_empty());
    let report = run_due_policies(&writes(store), now + DAY + 1, unlimited()).await.unwrap();
    assert_eq!((report.policies_finished, report.tags_removed), (1, 0));
    let policy = store.cleanup_policy(app.id).await.unwrap().unwrap();
    assert_eq!(policy.last_run_removed, Some(0));
    assert_eq!(policy.next_run_at, Some(now + 2 * DAY + 1));

    // Ten days on: of the candidates (all but latest and keep-me), the 5 newest stay
    // (t08..t12); v1.0 and release-1 are older but protected; `sub` keeps its only candidate
    // `old` (keep_n 5).
    let later = now + 10 * DAY;
    let planned: BTreeSet<String> = dry_run(store, &app, later)
        .await
        .unwrap()
        .into_iter()
        .map(|t| format!("{}:{}", t.repository, t.name))
        .collect();
    let expected: BTreeSet<String> = (1..=7).map(|i| format!("acme/app:t{i:02}")).collect();
    assert_eq!(planned, expected, "dry run");
    let report = run_due_policies(&writes(store), later, unlimited()).await.unwrap();
    assert_eq!((report.policies_finished, report.tags_removed), (1, 7));
    let mut kept = set(&["latest", "keep-me", "v1.0", "release-1"]);
    kept.extend(numbered[7..].iter().cloned());
    assert_eq!(tags(store, repo).await, kept, "what the run left equals what the dry run spared");
    assert_eq!(tags(store, "acme/app/sub").await, set(&["old", "latest"]));
    let policy = store.cleanup_policy(app.id).await.unwrap().unwrap();
    assert_eq!(policy.last_run_removed, Some(7));
    assert_eq!(policy.last_run_status.as_deref(), Some("finished"));
    assert_eq!(policy.run_status, "scheduled");

    // keep_n 1 and a narrower delete regex: only t-tags go, the newest t-tag stays.
    let attributes = json!({"keep_n": 1, "name_regex": "t.*", "name_regex_keep": ""});
    update_policy(store, &Caller::Operator, &app, attributes, later).await.unwrap();
    let report = run_due_policies(&writes(store), later + 20 * DAY, unlimited()).await.unwrap();
    assert_eq!(report.tags_removed, 4);
    assert_eq!(tags(store, repo).await, set(&["latest", "keep-me", "v1.0", "release-1", "t12"]));

    // Invalid settings are refused.
    for bad in [
        json!({"cadence": "2d"}),
        json!({"keep_n": 3}),
        json!({"older_than": "1d"}),
        json!({"name_regex": "("}),
    ] {
        assert!(
            update_policy(store, &Caller::Operator, &app, bad.clone(), later).await.is_err(),
            "{bad}"
        );
    }
}

async fn budget_cut_runs_resume(store: &Store) {
    let b = project(store, "budget", "b").await;
    for repo in ["budget/b/r1", "budget/b/r2"] {
        for i in 1..=6 {
            push(store, repo, &format!("x{i}")).await;
        }
    }
    let now = meta::now_millis();
    let attributes = json!({"enabled": true, "cadence": "7d", "keep_n": 1, "older_than": "7d", "name_regex": "x.*"});
    update_policy(store, &Caller::Operator, &b, attributes, now).await.unwrap();
    let at = now + 8 * DAY;
    let planned = dry_run(store, &b, at).await.unwrap();
    assert_eq!(planned.len(), 10);

    let budget = CleanupBudget { max_tags: 4, max_duration: Duration::from_secs(600) };
    let first = run_due_policies(&writes(store), at, budget).await.unwrap();
    assert_eq!((first.tags_removed, first.policies_unfinished), (4, 1));
    let policy = store.cleanup_policy(b.id).await.unwrap().unwrap();
    assert_eq!(policy.run_status, "unfinished");
    assert_eq!(policy.run_cursor.as_deref(), Some("budget/b/r1"));
    assert_eq!(policy.run_removed, 4);

    // The next pass resumes (even though next_run_at has not changed) where it stopped.
    let second = run_due_policies(&writes(store), at + 1000, budget).await.unwrap();
    assert_eq!((second.tags_removed, second.policies_unfinished), (4, 1));
    let third = run_due_policies(&writes(store), at + 2000, budget).await.unwrap();
    assert_eq!((third.tags_removed, third.policies_finished), (2, 1));
    let policy = store.cleanup_policy(b.id).await.unwrap().unwrap();
    assert_eq!(policy.last_run_removed, Some(10));
    assert_eq!(policy.run_status, "scheduled");
    assert_eq!(policy.next_run_at, Some(at + 2000 + 7 * DAY));
    for repo in ["budget/b/r1", "budget/b/r2"] {
        assert_eq!(tags(store, repo).await, set(&["x6"]), "{repo}");
    }
    // Finished: not due again until the next cadence.
    let idle = run_due_policies(&writes(store), at + 3000, budget).await.unwrap();
    assert_eq!(idle.tags_removed + idle.policies_finished, 0);
}

#[tokio::test]
async fn sqlite_cleanup_policies() {
    let db = sqlite().await;
    keep_rules_and_protection(&db.store).await;
    budget_cut_runs_resume(&db.store).await;
    db.close().await;
}

#[tokio::test]
async fn postgres_cleanup_policies() {
    let Some(db) = postgres().await else { return };
    keep_rules_and_protection(&db.store).await;
    budget_cut_runs_resume(&db.store).await;
    db.close().await;
}
