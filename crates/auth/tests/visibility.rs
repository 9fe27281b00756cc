//! The set-based visibility query (`meta::RegistryReader`, used by every listing) agrees with
//! the per-repository policy (`auth::policy::allowed_actions`), on SQLite and PostgreSQL.
//!
//! Random tenancies — nested groups, public/internal/private projects with registry access
//! enabled/private/disabled, users (admins, blocked ones) with memberships on groups and
//! projects at every level, job token allowlists, repositories at and below projects (some too
//! deep to belong to one, some under no project) — and every kind of reader on them: anonymous,
//! users by password and by personal access tokens of every scope set, deploy tokens of
//! projects and groups, CI job tokens with and without a user. For each reader, the projects the
//! query finds readable must be exactly those `allowed_actions` lets it pull, and the catalog
//! query must list exactly the repositories `allowed_on_image` lets it pull.

use auth::access::Action;
use auth::policy::{self, Identity};
use meta::testing::TestDb;
use meta::{
    Backend, DeployToken, Group, JobToken, Project, RegistryAccess, SourceType, Visibility,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

#[derive(Clone, Debug)]
struct Tenancy {
    /// (parent: an earlier group, visibility)
    groups: Vec<(Option<usize>, Visibility)>,
    /// (group, visibility, registry access)
    projects: Vec<(usize, Visibility, RegistryAccess)>,
    /// (admin, blocked)
    users: Vec<(bool, bool)>,
    /// (on a group (else a project), which, user, level)
    members: Vec<(bool, usize, usize, i64)>,
    /// (project, source project whose job tokens it lets pull)
    allowlist: Vec<(usize, usize)>,
}

fn visibility() -> impl Strategy<Value = Visibility> {
    prop_oneof![Just(Visibility::Public), Just(Visibility::Internal), Just(Visibility::Private)]
}

fn registry_access() -> impl Strategy<Value = RegistryAccess> {
    prop_oneof![
        Just(RegistryAccess::Enabled),
        Just(RegistryAccess::Private),
        Just(RegistryAccess::Disabled)
    ]
}

fn tenancy() -> impl Strategy<Value = Tenancy> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), visibility()), 1..5),
        prop::collection::vec((0..8usize, visibility(), registry_access()), 1..7),
        prop::collection::vec((prop::bool::weighted(0.15), prop::bool::weighted(0.2)), 1..5),
        prop::collection::vec(
            (
                any::<bool>(),
                0..8usize,
                0..5usize,
                prop::sample::select(vec![10i64, 20, 30, 40, 50]),
            ),
            0..10,
        ),
        prop::collection::vec((0..8usize, 0..8usize), 0..4),
    )
        .prop_map(|(groups, projects, users, members, allowlist)| {
            let groups: Vec<_> = groups
                .into_iter()
                .enumerate()
                .map(|(i, (parent, nested, v))| ((nested && i > 0).then(|| parent.index(i)), v))
                .collect();
            let g = groups.len();
            let projects: Vec<_> = projects.into_iter().map(|(i, v, a)| (i % g, v, a)).collect();
            let p = projects.len();
            let u = users.len();
            let members = members
                .into_iter()
                .map(|(on_group, i, user, level)| {
                    (on_group, if on_group { i % g } else { i % p }, user % u, level)
                })
                .collect();
            let allowlist = allowlist.into_iter().map(|(a, b)| (a % p, b % p)).collect();
            Tenancy { groups, projects, users, members, allowlist }
        })
}

struct Built {
    groups: Vec<Group>,
    projects: Vec<Project>,
    users: Vec<meta::User>,
}

async fn build(store: &meta::Store, case: usize, t: &Tenancy) -> Built {
    let mut groups: Vec<Group> = Vec::new();
    for (i, (parent, v)) in t.groups.iter().enumerate() {
        let path = if parent.is_none() { format!("c{case}g{i}") } else { format!("g{i}") };
        let parent = parent.map(|p| groups[p].clone());
        groups.push(store.create_group(&path, &path, parent.as_ref(), *v).await.unwrap());
    }
    let mut projects = Vec::new();
    for (i, (g, v, a)) in t.projects.iter().enumerate() {
        let path = format!("p{i}");
        let project = store.create_project(&path, &path, &groups[*g], *v).await.unwrap();
        let project = store.update_project(project.id, None, Some(*a)).await.unwrap().unwrap();
        projects.push(project);
    }
    let mut users = Vec::new();
    for (i, (admin, blocked)) in t.users.iter().enumerate() {
        let name = format!("c{case}u{i}");
        let user = store
            .create_user(&name, &format!("{name}@example.com"), &name, None, *admin)
            .await
            .unwrap();
        if *blocked {
            store.set_user_blocked(user.id, true).await.unwrap();
        }
        users.push(store.user_by_id(user.id).await.unwrap().unwrap());
    }
    for (on_group, i, u, level) in &t.members {
        let (kind, id) = if *on_group {
            (SourceType::Group, groups[*i].id)
        } else {
            (SourceType::Project, projects[*i].id)
        };
        store.set_member(kind, id, users[*u].id, *level).await.unwrap();
    }
    for (project, source) in &t.allowlist {
        store.allow_job_token_source(projects[*project].id, projects[*source].id).await.unwrap();
    }
    Built { groups, projects, users }
}

fn readers(b: &Built) -> Vec<Identity> {
    let mut out = vec![Identity::Anonymous];
    let scope_sets: [&[&str]; 5] = [
        &["read_registry"],
        &["write_registry"],
        &["api"],
        &[],
        &["read_registry", "write_registry"],
    ];
    for user in &b.users {
        out.push(Identity::User { user: user.clone(), pat: None });
        for scopes in scope_sets {
            let scopes = scopes.iter().map(|s| s.to_string()).collect();
            out.push(Identity::User { user: user.clone(), pat: Some((1, scopes)) });
        }
    }
    let deploy = |source_type, source_id, scopes: &[&str]| {
        Identity::Deploy(DeployToken {
            id: 1,
            source_type,
            source_id,
            name: "d".into(),
            username: "d".into(),
            token_hash: String::new(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            revoked: false,
            created_at: 0,
        })
    };
    for scopes in [&["read_registry"][..], &["write_registry"][..]] {
        for p in &b.projects {
            out.push(deploy(SourceType::Project, p.id, scopes));
        }
        for g in &b.groups {
            out.push(deploy(SourceType::Group, g.id, scopes));
        }
    }
    for p in &b.projects {
        let job = |user_id| Identity::Job {
            token: JobToken {
                id: 1,
                project_id: p.id,
                user_id,
                expires_at: i64::MAX,
                created_at: 0,
            },
        };
        out.push(job(None));
        for user in &b.users {
            out.push(job(Some(user.id)));
        }
    }
    out
}

async fn equivalence(backend: Backend) {
    let db = TestDb::new(backend, None).await;
    let store = &db.store;
    // Repositories under no project and too deep below one: never readable.
    db.exec("INSERT INTO repositories (name, created_at) VALUES ('nowhere/x', 0)").await;
    let mut runner = TestRunner::deterministic();
    let cases = 20;
    for case in 0..cases {
        let t = tenancy().new_tree(&mut runner).unwrap().current();
        let built = build(store, case, &t).await;
        for p in &built.projects {
            for suffix in ["", "/a", "/a/b", "/a/b/c", "/a/b/c/d"] {
                db.exec(&format!(
                    "INSERT INTO repositories (name, created_at) VALUES ('{}{suffix}', 0)",
                    p.full_path
                ))
                .await;
            }
        }
        // Compared on this case's projects and repositories (earlier cases' stay in the
        // database, and in the query's answers, which are filtered to these).
        let ids: Vec<i64> = built.projects.iter().map(|p| p.id).collect();
        let prefix = format!("c{case}g");
        let ours = |name: &String| name.starts_with(&prefix) || name.starts_with("nowhere/");
        let all_repositories: Vec<String> = store
            .list_repositories(None, i64::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(ours)
            .collect();
        for identity in readers(&built) {
            let reader = policy::registry_reader(&identity);
            let mut by_query = store.readable_project_ids(&reader).await.unwrap();
            by_query.retain(|id| ids.contains(id));
            let mut by_policy = Vec::new();
            for p in &built.projects {
                let actions = policy::allowed_actions(store, &identity, p).await.unwrap();
                if actions.contains(&Action::Pull) {
                    by_policy.push(p.id);
                }
            }
            by_policy.sort();
            assert_eq!(by_query, by_policy, "{backend:?} case {case}: {t:?}\n{identity:?}");

            let mut catalog = store
                .readable_repository_names(
                    &reader,
                    policy::MAX_EXTRA_SEGMENTS as i64,
                    None,
                    i64::MAX,
                )
                .await
                .unwrap();
            catalog.retain(ours);
            let mut expected = Vec::new();
            for name in &all_repositories {
                let parsed: oci::RepositoryName = name.parse().expect("a valid repository name");
                let actions = policy::allowed_on_image(store, &identity, &parsed).await.unwrap();
                if actions.contains(&Action::Pull) {
                    expected.push(name.clone());
                }
            }
            assert_eq!(catalog, expected, "{backend:?} case {case}: {t:?}\n{identity:?}");
        }
    }
    db.drop_database().await;
}

#[tokio::test]
async fn visibility_query_equals_policy_on_sqlite() {
    equivalence(Backend::Sqlite).await;
}

#[tokio::test]
async fn visibility_query_equals_policy_on_postgres() {
    equivalence(Backend::Postgres).await;
}
