//! Refusals a person can act on: a push to a path with no project, or to a group's path, says
//! so and names the fix — in the OCI error body and in `WWW-Authenticate`'s
//! `error_description` — while a private project stays indistinguishable from a missing one
//! for outsiders.

use e2e::gitlab::{level, repo_scope, token_for, Outcome};
use e2e::tenants::{self, assert_challenged};
use e2e::{backend_tests, MetaBackend};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(push_without_a_project_names_the_fix);

fn message(o: &Outcome) -> String {
    let v: Value = serde_json::from_str(&o.body).unwrap_or_default();
    v["errors"][0]["message"].as_str().unwrap_or_default().to_string()
}

fn no_project(name: &str) -> String {
    format!(
        "no project at {name} that you can push to: create it with `stowage admin projects \
         create {name}` or in the UI"
    )
}

/// Panics unless `o` is a 401 DENIED carrying `expected` in its body and its challenge.
#[track_caller]
fn assert_explained(o: &Outcome, expected: &str) {
    assert_challenged(o, &o.what);
    assert_eq!(o.error_code().as_deref(), Some("DENIED"), "{}: {}", o.what, o.body);
    assert_eq!(message(o), expected, "{}", o.what);
    let challenge = o.www_authenticate.as_deref().unwrap_or_default();
    assert!(
        challenge
            .ends_with(&format!(",error=\"insufficient_scope\",error_description=\"{expected}\"")),
        "{}: {challenge}",
        o.what
    );
}

async fn push_without_a_project_names_the_fix(backend: MetaBackend) {
    let world = tenants::world(backend, &[]).await;
    // A private group (with a project) alice is no member of, and a private group she is a
    // developer of, with no project yet.
    let secret = world.api.create_group("secret", None, "private").await;
    world.api.create_project(secret, "vault", "private").await;
    let mine = world.api.create_group("mine", None, "private").await;
    world.api.add_member("groups", mine, world.alice.id, level::DEVELOPER).await;

    let names = [
        "acme/nope",
        "acme",
        "acme/b",
        "acme/b/sub",
        "secret",
        "secret/vault",
        "nothing",
        "mine",
        "mine/app",
        "acme/a",
        "acme/pub",
    ];
    let scopes: Vec<String> = names.iter().map(|n| repo_scope(n, "pull,push,delete")).collect();
    let alice =
        world.registry(&world.token((&world.alice.username, &world.alice.password), &scopes).await);
    let rita =
        world.registry(&world.token((&world.rita.username, &world.rita.password), &scopes).await);

    // Nothing there.
    let o = alice.start_upload("acme/nope").await;
    assert_explained(&o, &no_project("acme/nope"));
    let o = alice.delete_tag("acme/nope", "latest").await;
    assert_explained(&o, &no_project("acme/nope"));
    // A group alice can see (public, or hers): it says it is a group.
    for group in ["acme", "mine"] {
        let o = alice.start_upload(group).await;
        assert_explained(
            &o,
            &format!(
                "{group} is a group, not a project: images live in projects, e.g. \
                 {group}/<project>; create one with `stowage admin projects create \
                 {group}/<project>` or in the UI"
            ),
        );
    }
    let o = alice.start_upload("mine/app").await;
    assert_explained(&o, &no_project("mine/app"));

    // Private things alice may not see answer exactly like nothing at all.
    let missing = alice.start_upload("nothing").await;
    assert_explained(&missing, &no_project("nothing"));
    for hidden in ["acme/b", "acme/b/sub", "secret", "secret/vault"] {
        let o = alice.start_upload(hidden).await;
        assert_eq!(o.normalized(hidden), missing.normalized("nothing"), "{hidden}");
    }

    // Projects the caller can see: the refusal is about the role, not a missing project.
    for (who, name) in [(&rita, "acme/a"), (&alice, "acme/pub")] {
        let o = who.start_upload(name).await;
        assert_challenged(&o, name);
        assert!(!message(&o).contains("no project"), "{name}: {}", o.body);
        assert!(!o.www_authenticate.unwrap_or_default().contains("error_description"));
    }
    let o = alice.delete_tag("acme/a", "latest").await;
    assert!(o.status == StatusCode::UNAUTHORIZED && !message(&o).contains("no project"));

    // Anonymous callers are asked to log in, not told about projects.
    let anonymous =
        world.registry(&token_for(&world.http, &world.server.base, None, &scopes).await);
    for name in ["acme/nope", "acme/b"] {
        let o = anonymous.start_upload(name).await;
        assert_challenged(&o, name);
        assert!(!message(&o).contains("no project"), "{name}: {}", o.body);
    }
}
