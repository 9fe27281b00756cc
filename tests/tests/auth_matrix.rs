//! The permission matrix, as a table the test walks cell by cell.
//!
//! Rows are projects — every visibility (public / internal / private) × registry access level
//! (enabled / private / disabled), plus a project beside the group that holds them. Columns
//! are callers: anonymous, a signed-in outsider, members of every role, the instance admin,
//! project and group deploy tokens and a CI job token. Every user column is checked with three
//! credentials: the password, a personal access token with `read_registry` + `write_registry`
//! (same cell), and one with only `read_registry` (at most `r`).
//!
//! Per caller, one token request asks for everything (`pull,push,delete` on every project, a
//! nonexistent repository and the catalog). Then, per cell:
//! - the token's `access` claim grants exactly the cell's actions (never more than allowed);
//! - pull (GET manifest by tag, and the tag list) succeeds iff the cell has `r`;
//! - push (two blob uploads and a manifest PUT) succeeds iff it has `w`;
//! - delete (DELETE a tag) succeeds iff it has `d`;
//! - every refusal is 401/403 with an OCI error body, and is exactly the answer the same
//!   caller gets for a repository that does not exist (no existence leak) — except a refused
//!   push or delete on a project the caller can see (public, internal to signed-in users, or
//!   one it is a member of): that one is about the role and must not claim there is no
//!   project;
//! - the catalog lists exactly the projects the caller may pull.
//!
//! Cells: `-` nothing, `r` pull, `rw` pull + push, `rwd` pull + push + delete.

use std::collections::BTreeSet;

use e2e::gitlab::{
    granted_actions, level, repo_scope, request_token, seed_image, GitLab, Outcome, Registry,
    ADMIN_PASSWORD, ADMIN_TOKEN,
};
use e2e::MetaBackend;
use reqwest::Method;

e2e::backend_tests!(permission_matrix);

/// The callers, in the order of the table's columns.
const COLUMNS: [&str; 13] = [
    "anonymous",
    "outsider",                  // signed in, member of nothing
    "guest",      // guest on group `acme` (and reporter directly on team/private-private)
    "reporter",   // reporter on group `acme`
    "developer",  // developer on group `acme`
    "maintainer", // maintainer directly on every project (not on the group)
    "owner",      // owner of group `acme`
    "admin",      // root
    "deploy:private-private", // project deploy token, read + write, on team/private-private
    "deploy:public-disabled", // project deploy token, read + write, on team/public-disabled
    "deploy-ro:private-enabled", // project deploy token, read only, on team/private-enabled
    "group-deploy:acme/team", // group deploy token, read + write, on group acme/team
    "job:private-enabled", // CI job token of team/private-enabled (allowlisted by
                  // team/internal-private and team/private-disabled)
];

/// (project path below `acme/`, visibility, registry access level, cells in column order).
#[rustfmt::skip]
const MATRIX: [(&str, &str, &str, [&str; 13]); 10] = [
    //                                          anon outsdr guest rep  dev   maint  owner  admin  dt-pp dt-pd dt-ro grp-dt job
    ("team/public-enabled",    "public",   "enabled",  ["r", "r",  "r",  "r", "rw", "rwd", "rwd", "rwd", "r",  "r",  "r",  "rw",  "r" ]),
    ("team/public-private",    "public",   "private",  ["-", "-",  "-",  "r", "rw", "rwd", "rwd", "rwd", "-",  "-",  "-",  "rw",  "-" ]),
    ("team/public-disabled",   "public",   "disabled", ["-", "-",  "-",  "-", "-",  "-",   "-",   "-",   "-",  "-",  "-",  "-",   "-" ]),
    ("team/internal-enabled",  "internal", "enabled",  ["-", "r",  "r",  "r", "rw", "rwd", "rwd", "rwd", "-",  "-",  "-",  "rw",  "-" ]),
    ("team/internal-private",  "internal", "private",  ["-", "-",  "-",  "r", "rw", "rwd", "rwd", "rwd", "-",  "-",  "-",  "rw",  "r" ]),
    ("team/internal-disabled", "internal", "disabled", ["-", "-",  "-",  "-", "-",  "-",   "-",   "-",   "-",  "-",  "-",  "-",   "-" ]),
    ("team/private-enabled",   "private",  "enabled",  ["-", "-",  "-",  "r", "rw", "rwd", "rwd", "rwd", "-",  "-",  "r",  "rw",  "rw"]),
    ("team/private-private",   "private",  "private",  ["-", "-",  "r",  "r", "rw", "rwd", "rwd", "rwd", "rw", "-",  "-",  "rw",  "-" ]),
    ("team/private-disabled",  "private",  "disabled", ["-", "-",  "-",  "-", "-",  "-",   "-",   "-",   "-",  "-",  "-",  "-",   "-" ]),
    // Beside acme/team: the group deploy token of acme/team must not reach it, although
    // its path starts with "acme/team".
    ("team-side",              "private",  "enabled",  ["-", "-",  "-",  "r", "rw", "rwd", "rwd", "rwd", "-",  "-",  "-",  "-",   "-" ]),
];

/// A repository name that maps to no project, in the same namespace.
const NONEXISTENT: &str = "acme/team/does-not-exist";

fn full(project: &str) -> String {
    format!("acme/{project}")
}

/// Caps a cell at `r` (a token with only `read_registry`).
fn read_only(cell: &str) -> &'static str {
    if cell.contains('r') {
        "r"
    } else {
        "-"
    }
}

fn cell_actions(cell: &str) -> Vec<String> {
    let mut v = Vec::new();
    if cell.contains('d') {
        v.push("delete".to_string());
    }
    if cell.contains('r') {
        v.push("pull".to_string());
    }
    if cell.contains('w') {
        v.push("push".to_string());
    }
    v
}

/// One caller: a label, Basic credentials (none: anonymous), and the expected cell per row.
struct Caller {
    label: String,
    cred: Option<(String, String)>,
    cells: Vec<&'static str>,
}

async fn permission_matrix(backend: MetaBackend) {
    let server = e2e::gitlab::start_auth_server(backend, &[]);
    let api = GitLab::root(&server);

    // ---- Tenancy: groups, projects, users, members. ----
    let acme = api.create_group("acme", None, "public").await;
    let team = api.create_group("team", Some(acme), "public").await;
    let mut project_ids = Vec::new();
    for (path, visibility, _, _) in MATRIX {
        let (ns, name) = match path.split_once('/') {
            Some((_, name)) => (team, name),
            None => (acme, path),
        };
        project_ids.push(api.create_project(ns, name, visibility).await);
    }
    let id_of = |path: &str| project_ids[MATRIX.iter().position(|r| r.0 == path).unwrap()];

    let outsider = api.create_user("outsider").await;
    let guest = api.create_user("guest").await;
    let reporter = api.create_user("reporter").await;
    let developer = api.create_user("developer").await;
    let maintainer = api.create_user("maintainer").await;
    let owner = api.create_user("owner").await;
    api.add_member("groups", acme, guest.id, level::GUEST).await;
    api.add_member("groups", acme, reporter.id, level::REPORTER).await;
    api.add_member("groups", acme, developer.id, level::DEVELOPER).await;
    api.add_member("groups", acme, owner.id, level::OWNER).await;
    for id in &project_ids {
        api.add_member("projects", *id, maintainer.id, level::MAINTAINER).await;
    }
    // The effective role is the highest: guest on the group, reporter on this project.
    api.add_member("projects", id_of("team/private-private"), guest.id, level::REPORTER).await;

    let me = api.call(Method::GET, "/user", None).await;
    let root = e2e::gitlab::User {
        id: me["id"].as_i64().expect("GET /user has an id"),
        username: "root".into(),
        password: ADMIN_PASSWORD.into(),
    };
    assert_eq!(me["username"], "root", "{me}");

    // ---- Credentials. ----
    let mut callers: Vec<Caller> = Vec::new();
    let column = |i: usize| MATRIX.iter().map(|r| r.3[i]).collect::<Vec<_>>();
    callers.push(Caller { label: "anonymous".into(), cred: None, cells: column(0) });
    for (i, user) in [&outsider, &guest, &reporter, &developer, &maintainer, &owner, &root]
        .into_iter()
        .enumerate()
    {
        let col = i + 1;
        let rw = api.create_pat(user, &["read_registry", "write_registry"]).await;
        let ro = api.create_pat(user, &["read_registry"]).await;
        callers.push(Caller {
            label: format!("{} (password)", COLUMNS[col]),
            cred: Some((user.username.clone(), user.password.clone())),
            cells: column(col),
        });
        callers.push(Caller {
            label: format!("{} (PAT read+write_registry)", COLUMNS[col]),
            cred: Some((user.username.clone(), rw.token)),
            cells: column(col),
        });
        callers.push(Caller {
            label: format!("{} (PAT read_registry only)", COLUMNS[col]),
            cred: Some((user.username.clone(), ro.token)),
            cells: column(col).into_iter().map(read_only).collect(),
        });
    }
    // root's seeded token has every scope, `api` included (which makes it act as the admin).
    callers.push(Caller {
        label: "admin (seeded PAT with api scope)".into(),
        cred: Some(("root".into(), ADMIN_TOKEN.into())),
        cells: column(7),
    });
    let rw = ["read_registry", "write_registry"];
    let tokens = [
        api.create_deploy_token("projects", id_of("team/private-private"), "deploy-pp", &rw).await,
        api.create_deploy_token("projects", id_of("team/public-disabled"), "deploy-pd", &rw).await,
        api.create_deploy_token(
            "projects",
            id_of("team/private-enabled"),
            "deploy-ro",
            &["read_registry"],
        )
        .await,
        api.create_deploy_token("groups", team, "deploy-group", &rw).await,
        api.create_job_token(id_of("team/private-enabled")).await,
    ];
    for (i, t) in tokens.into_iter().enumerate() {
        let col = 8 + i;
        callers.push(Caller {
            label: COLUMNS[col].to_string(),
            cred: Some((t.username, t.token)),
            cells: column(col),
        });
    }
    let job_project = id_of("team/private-enabled");
    api.allow_job_token(id_of("team/internal-private"), job_project).await;
    api.allow_job_token(id_of("team/private-disabled"), job_project).await;

    // ---- Images, seeded by root while every registry is still enabled. ----
    let http = e2e::gitlab::http_client();
    let everything: Vec<String> = MATRIX
        .iter()
        .map(|r| repo_scope(&full(r.0), "pull,push,delete"))
        .chain([repo_scope(NONEXISTENT, "pull,push,delete"), "registry:catalog:*".to_string()])
        .collect();
    let root_token =
        request_token(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &everything)
            .await
            .expect("root gets a token");
    let root_registry = Registry::new(&server, Some(root_token));
    let mut tags = vec!["latest".to_string()];
    tags.extend((0..callers.len()).map(|i| format!("del-{i}")));
    for (path, ..) in MATRIX {
        seed_image(&root_registry, &full(path), &tags).await;
    }
    for (i, (_, _, access, _)) in MATRIX.iter().enumerate() {
        if *access != "enabled" {
            api.set_registry_access(project_ids[i], access).await;
        }
    }

    // ---- Walk the table. ----
    let mut failures: Vec<String> = Vec::new();
    for (ci, caller) in callers.iter().enumerate() {
        let cred = caller.cred.as_ref().map(|(u, s)| (u.as_str(), s.as_str()));
        let token = match request_token(&http, &server.base, cred, &everything).await {
            Ok(t) => t,
            Err((status, body)) => {
                failures.push(format!("{}: /jwt/auth answered {status}: {body}", caller.label));
                continue;
            }
        };
        let registry = Registry::new(&server, Some(token.clone()));

        // The access claim: exactly the cell, for every row; nothing on a nonexistent name.
        for (ri, (path, ..)) in MATRIX.iter().enumerate() {
            let granted = granted_actions(&token, &full(path));
            let expected = cell_actions(caller.cells[ri]);
            if granted != expected {
                failures.push(format!(
                    "{} on acme/{path}: token grants {granted:?}, expected {expected:?} (cell {:?})",
                    caller.label, caller.cells[ri]
                ));
            }
        }
        let granted = granted_actions(&token, NONEXISTENT);
        if !granted.is_empty() {
            failures.push(format!("{} on {NONEXISTENT}: token grants {granted:?}", caller.label));
        }

        // The catalog: exactly the pullable projects.
        let expected: BTreeSet<String> = MATRIX
            .iter()
            .enumerate()
            .filter(|(ri, _)| caller.cells[*ri].contains('r'))
            .map(|(_, r)| full(r.0))
            .collect();
        match registry.catalog().await {
            Ok(listed) => {
                let listed: BTreeSet<String> = listed.into_iter().collect();
                if listed != expected {
                    failures.push(format!(
                        "{}: catalog lists {listed:?}, expected exactly {expected:?}",
                        caller.label
                    ));
                }
            }
            Err(o) => failures.push(format!(
                "{}: catalog refused ({} {}), expected {expected:?}",
                caller.label, o.status, o.body
            )),
        }

        // What the caller gets for a repository that does not exist, per action.
        let absent_pull = registry.pull(NONEXISTENT, "latest").await;
        let absent_tags = registry.tags(NONEXISTENT).await;
        let absent_push = registry.push_image(NONEXISTENT, "x").await;
        let absent_delete = registry.delete_tag(NONEXISTENT, "latest").await;

        for (ri, (path, visibility, ..)) in MATRIX.iter().enumerate() {
            let name = full(path);
            let cell = caller.cells[ri];
            let visible = sees(&caller.label, visibility, cell);
            let context = format!("{} on {name} (cell {cell:?})", caller.label);
            let checks: [(&str, bool, Outcome, &Outcome); 4] = [
                ("pull", cell.contains('r'), registry.pull(&name, "latest").await, &absent_pull),
                ("tag list", cell.contains('r'), registry.tags(&name).await, &absent_tags),
                (
                    "push",
                    cell.contains('w'),
                    registry.push_image(&name, &format!("push-{ci}")).await,
                    &absent_push,
                ),
                (
                    "delete",
                    cell.contains('d'),
                    registry.delete_tag(&name, &format!("del-{ci}")).await,
                    &absent_delete,
                ),
            ];
            for (action, allowed, outcome, absent) in checks {
                let visible = visible && matches!(action, "push" | "delete");
                let cell = Cell { action, allowed, visible };
                check_cell(&mut failures, &context, cell, &outcome, absent, &name);
            }
        }
    }

    let log = server.log();
    assert!(!log.contains(ADMIN_PASSWORD), "the server log contains root's password");
    for caller in &callers {
        if let Some((_, secret)) = &caller.cred {
            assert!(
                !log.contains(secret.as_str()),
                "the server log contains {}'s secret",
                caller.label
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the permission matrix's checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether caller `label` may know a project with `visibility` (and its cell) exists: members
/// of `acme` or of every project, the admin and the CI job (whose user is root) see all;
/// outsiders see public and internal ones; deploy tokens see the projects they work on.
fn sees(label: &str, visibility: &str, cell: &str) -> bool {
    if label.starts_with("anonymous") {
        false
    } else if label.starts_with("outsider") {
        matches!(visibility, "public" | "internal")
    } else if label.starts_with("deploy") || label.starts_with("group-deploy") {
        cell != "-"
    } else {
        true
    }
}

/// One check of a cell: the action, whether it must succeed, and whether a refusal of it may
/// show that the project exists (a write on a project the caller can see).
struct Cell<'a> {
    action: &'a str,
    allowed: bool,
    visible: bool,
}

fn check_cell(
    failures: &mut Vec<String>,
    context: &str,
    cell: Cell<'_>,
    outcome: &Outcome,
    absent: &Outcome,
    name: &str,
) {
    let Cell { action, allowed, .. } = cell;
    if allowed {
        if !outcome.allowed() {
            failures.push(format!(
                "{context}: {action} refused but should be allowed: {} answered {} {}",
                outcome.what, outcome.status, outcome.body
            ));
        }
        return;
    }
    if outcome.allowed() {
        failures.push(format!(
            "{context}: {action} allowed ({} answered {}) but must be refused",
            outcome.what, outcome.status
        ));
        return;
    }
    if !matches!(outcome.status.as_u16(), 401 | 403) || outcome.error_code().is_none() {
        failures.push(format!(
            "{context}: {action} refused uncleanly: {} answered {} {}",
            outcome.what, outcome.status, outcome.body
        ));
    }
    if cell.visible {
        if outcome.body.contains("no project") {
            failures.push(format!(
                "{context}: {action} refusal claims there is no project at a visible one: {}",
                outcome.body
            ));
        }
    } else if outcome.normalized(name) != absent.normalized(NONEXISTENT) {
        failures.push(format!(
            "{context}: {action} refusal differs from a nonexistent repository's: {:?} vs {:?}",
            outcome.normalized(name),
            absent.normalized(NONEXISTENT)
        ));
    }
}
