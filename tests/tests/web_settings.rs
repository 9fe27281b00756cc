//! The settings pages over raw HTTP, as a browser without JavaScript drives them:
//! `/<project>/-/settings/packages_and_registries` (cleanup policy with its preview, registry
//! visibility, tag protection and immutable rules) for maintainers and owners only, and
//! `/-/user_settings/personal_access_tokens` (create — shown once —, list, revoke). Every
//! change is checked through the REST API and `/jwt/auth`, the surfaces that share its rules.

use std::collections::BTreeSet;

use e2e::backend_tests;
use e2e::gitlab::{request_token, seed_image, token_for, Registry, ADMIN_PASSWORD};
use e2e::tenants::{world, World};
use e2e::tools::require_tool;
use e2e::web::Browser;
use e2e::MetaBackend;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const SETTINGS: &str = "/acme/a/-/settings/packages_and_registries";
const TOKENS: &str = "/-/user_settings/personal_access_tokens";
const MARKUP: &str = "<script>alert(1)</script>";

/// A browser signed in as `username` (the shared raw-HTTP browser of `e2e::web`).
async fn signed_in(world: &World, username: &str, password: &str) -> Browser {
    let mut b = Browser::new(world);
    b.sign_in(username, password).await;
    b
}

/// Whether `<script>alert(1)` appears HTML-escaped (named or numeric entities).
fn escaped(body: &str) -> bool {
    body.contains("&lt;script&gt;alert(1)") || body.contains("&#60;script&#62;alert(1)")
}

async fn push_tags(world: &World, name: &str, tags: &[&str]) {
    let scope = e2e::gitlab::repo_scope(name, "pull,push");
    let token =
        token_for(&world.http, &world.server.base, Some(("root", ADMIN_PASSWORD)), &[scope]).await;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    seed_image(&Registry::new(&world.server, Some(token)), name, &tags).await;
}

async fn policy_of(w: &World) -> Value {
    w.api.call(Method::GET, &format!("/projects/{}", w.a), None).await
        ["container_expiration_policy"]
        .clone()
}

/// `repository:tag` of every tag the preview on `body` lists.
fn previewed(body: &str) -> BTreeSet<String> {
    body.split("<code class=\"doomed\">")
        .skip(1)
        .map(|rest| rest.split("</code>").next().unwrap().to_string())
        .collect()
}

async fn only_maintainers_and_owners(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    let olga = w.api.create_user("olga").await;

    let anonymous = Browser::new(&w);
    let missing = anonymous.get("/acme/nope/-/settings/packages_and_registries").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Outsiders of the private project: exactly the page of a missing one.
    let outsider = signed_in(&w, "olga", &olga.password).await;
    for browser in [&anonymous, &outsider] {
        let answer = browser.get(SETTINGS).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body, missing.body);
    }
    // Developers and reporters see the project but may not manage it: 403, saying why.
    for (name, password) in [("alice", &w.alice.password), ("rita", &w.rita.password)] {
        let b = signed_in(&w, name, password).await;
        let page = b.get(SETTINGS).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{name}");
        assert!(page.body.contains("needs the maintainer role or higher"), "{}", page.body);
        // A form sent anyway changes nothing.
        let token = b.csrf().await;
        let post = b
            .post(
                SETTINGS,
                &[
                    ("authenticity_token", &token),
                    ("form", "access"),
                    ("container_registry_access_level", "disabled"),
                ],
            )
            .await;
        assert_eq!(post.status, StatusCode::FORBIDDEN, "{name}");
    }
    // An outsider's form: the missing page, not a 403.
    let token = outsider.csrf().await;
    let post = outsider
        .post(SETTINGS, &[("authenticity_token", &token), ("form", "policy"), ("name_regex", ".*")])
        .await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
    assert_eq!(post.body, missing.body);

    // Maintainers and owners (and admins) manage it.
    let maria = signed_in(&w, "maria", &maria.password).await;
    let page = maria.get(SETTINGS).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"policy-form\""));
    let root = signed_in(&w, "root", ADMIN_PASSWORD).await;
    assert_eq!(root.get(SETTINGS).await.status, StatusCode::OK);

    // Forms without this session's CSRF token are refused, and change nothing.
    let root_token = root.csrf().await;
    for (what, token) in
        [("no token", None), ("a wrong one", Some("f00d")), ("root's", Some(root_token.as_str()))]
    {
        let mut form = vec![("form", "access"), ("container_registry_access_level", "disabled")];
        if let Some(t) = token {
            form.push(("authenticity_token", t));
        }
        let answer = maria.post(SETTINGS, &form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}");
        assert!(answer.body.contains("did not come from this site"), "{what}: {}", answer.body);
    }
    let project = w.api.call(Method::GET, &format!("/projects/{}", w.a), None).await;
    assert_eq!(project["container_registry_access_level"], "enabled", "{project}");

    // Registry visibility, through the API's rules.
    let token = maria.csrf().await;
    let saved = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "access"),
                ("container_registry_access_level", "private"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let project = w.api.call(Method::GET, &format!("/projects/{}", w.a), None).await;
    assert_eq!(project["container_registry_access_level"], "private", "{project}");
    let bad = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "access"),
                ("container_registry_access_level", "everyone"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("is not an access level: use enabled, private or disabled"),
        "{}",
        bad.body
    );
}

async fn policy_saves_through_the_api_rules_and_previews_the_dry_run(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    push_tags(&w, "acme/a", &["v1", "v2", "v3", "dev", "keep-me"]).await;
    push_tags(&w, "acme/a/sub", &["v9", "old"]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    let maria = signed_in(&w, "maria", &maria.password).await;
    let token = maria.csrf().await;

    // A tag rule added on the page keeps v1 from every cleanup.
    let rule = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "add_tag_rule"),
                ("tag_name_pattern", "^v1$"),
                ("minimum_access_level_for_push", "maintainer"),
                ("minimum_access_level_for_delete", "maintainer"),
            ],
        )
        .await;
    assert_eq!(rule.status, StatusCode::SEE_OTHER, "{}", rule.body);
    let rules = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/protection/tag/rules", w.a), None)
        .await;
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules[0]["tag_name_pattern"], "^v1$");

    let policy = [
        ("authenticity_token", token.as_str()),
        ("form", "policy"),
        ("enabled", "true"),
        ("cadence", "7d"),
        ("keep_n", "1"),
        ("older_than", ""),
        ("name_regex", "v.*|dev|old"),
        ("name_regex_keep", "keep-.*"),
    ];
    let saved = maria.post(SETTINGS, &policy).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let location = saved.location.unwrap();
    assert!(location.contains("preview"), "{location}");

    // The REST API shows what the page saved.
    let p = policy_of(&w).await;
    assert_eq!(p["enabled"], true, "{p}");
    assert_eq!(p["cadence"], "7d");
    assert_eq!(p["keep_n"], 1);
    assert_eq!(p["older_than"], Value::Null);
    assert_eq!(p["name_regex"], "v.*|dev|old");
    assert_eq!(p["name_regex_keep"], "keep-.*");
    assert!(p["next_run_at"].is_string(), "{p}");

    // Recorded in the project's audit log as the API's changes are, with maria as author.
    let events = w
        .api
        .call(Method::GET, &format!("/projects/{}/audit_events?per_page=100", w.a), None)
        .await;
    for name in ["cleanup_policy_change", "protection_rule_create"] {
        let found = events.as_array().unwrap().iter().find(|e| e["event_name"] == name);
        let found = found.unwrap_or_else(|| panic!("no {name} event: {events}"));
        assert_eq!(found["details"]["author_name"], "maria", "{found}");
    }

    // The preview names exactly the tags the API's dry run names.
    let page = maria.get(&location).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Cleanup policy saved."), "{}", page.body);
    let shown = previewed(&page.body);
    let dry = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/cleanup_policy/dry_run", w.a), None)
        .await;
    let expected: BTreeSet<String> = dry["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["repository"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, expected, "{}", page.body);
    // keep_n 1 per image: of acme/a's v2, v3, dev one stays; acme/a/sub keeps one of v9, old.
    assert_eq!(shown.len(), 3, "{shown:?}");
    for kept in ["acme/a:latest", "acme/a:v1", "acme/a:keep-me"] {
        assert!(!shown.contains(kept), "{kept} must stay: {shown:?}");
    }
    assert!(page.body.contains(&format!("would delete {} tags now", shown.len())), "{}", page.body);

    // An invalid regex: the form again, with the sentence and what was typed; nothing saved.
    let mut bad = policy.to_vec();
    bad[6] = ("name_regex", "v(");
    let refused = maria.post(SETTINGS, &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("is not a valid regular expression"), "{}", refused.body);
    assert!(refused.body.contains("value=\"v(\""), "the typed value is kept: {}", refused.body);
    assert_eq!(policy_of(&w).await["name_regex"], "v.*|dev|old");
    // A choice GitLab does not offer is refused the same way.
    let mut bad = policy.to_vec();
    bad[4] = ("keep_n", "3");
    let refused = maria.post(SETTINGS, &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("keep_n must be one of 1, 5, 10, 25, 50, 100"),
        "{}",
        refused.body
    );
    assert_eq!(policy_of(&w).await["keep_n"], 1);

    // Markup in a regex or a rule pattern is shown as text.
    let mut marked = policy.to_vec();
    marked[7] = ("name_regex_keep", MARKUP);
    assert_eq!(maria.post(SETTINGS, &marked).await.status, StatusCode::SEE_OTHER);
    let added = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "add_tag_rule"),
                ("tag_name_pattern", MARKUP),
                ("minimum_access_level_for_push", "maintainer"),
                ("minimum_access_level_for_delete", "maintainer"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = maria.get(SETTINGS).await;
    assert!(!page.body.contains(MARKUP), "{}", page.body);
    assert!(escaped(&page.body), "{}", page.body);

    // Immutable rules are for owners: a maintainer is refused, as by the API.
    let immutable = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "add_tag_rule"),
                ("tag_name_pattern", "^release-"),
                ("immutable", "true"),
            ],
        )
        .await;
    assert_eq!(immutable.status, StatusCode::FORBIDDEN);
    assert!(immutable.body.contains("needs the owner role or higher"), "{}", immutable.body);
    // Deleting the v1 rule through the page: gone for the API too.
    let id = rules[0]["id"].as_i64().unwrap().to_string();
    let deleted = maria
        .post(
            SETTINGS,
            &[("authenticity_token", &token), ("form", "delete_tag_rule"), ("rule_id", &id)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let rules = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/protection/tag/rules", w.a), None)
        .await;
    assert!(rules.as_array().unwrap().iter().all(|r| r["tag_name_pattern"] != "^v1$"), "{rules}");
}

async fn personal_access_tokens_are_shown_once_and_revocable(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    // Signed out: sent to sign in.
    let anonymous = Browser::new(&w);
    let away = anonymous.get(TOKENS).await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert_eq!(away.location.as_deref(), Some("/users/sign_in"));

    let alice = signed_in(&w, "alice", &w.alice.password).await;
    let page = alice.get(TOKENS).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = page.csrf();
    let name = format!("ci {MARKUP}");
    let create = |scopes: Vec<&'static str>, expires: &'static str| {
        let mut form: Vec<(&str, String)> = vec![
            ("authenticity_token", token.clone()),
            ("action", "create".into()),
            ("name", name.clone()),
            ("expires_at", expires.into()),
        ];
        form.extend(scopes.into_iter().map(|s| ("scopes", s.to_string())));
        form
    };
    let send = |form: Vec<(&'static str, String)>| {
        let alice = &alice;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            alice.post(TOKENS, &pairs).await
        }
    };
    // Without the CSRF token: refused, nothing created.
    let forged =
        alice.post(TOKENS, &[("action", "create"), ("name", "x"), ("scopes", "api")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // The API's rules: at least one known scope, a future date.
    let none = send(create(vec![], "")).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(none.body.contains("scopes must name at least one of"), "{}", none.body);
    let past = send(create(vec!["read_registry"], "2001-01-01")).await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST);
    assert!(past.body.contains("expires_at must be a date in the future"), "{}", past.body);
    let listed = w
        .api
        .call(Method::GET, &format!("/personal_access_tokens?user_id={}", w.alice.id), None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 0, "refused forms create nothing: {listed}");

    let created = send(create(vec!["read_registry", "write_registry"], "2099-12-31")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created
        .body
        .split("<code id=\"new-token\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("the new token is shown")
        .to_string();
    assert!(secret.len() > 20, "{secret}");
    assert!(!created.body.contains(MARKUP), "{}", created.body);
    assert!(escaped(&created.body), "{}", created.body);
    // Listed with its scopes and expiry; never shown again.
    let again = alice.get(TOKENS).await;
    assert!(!again.body.contains(&secret), "the secret is shown once");
    assert!(
        again.body.contains("read_registry, write_registry") && again.body.contains("2099-12-31")
    );
    let listed = w
        .api
        .call(Method::GET, &format!("/personal_access_tokens?user_id={}", w.alice.id), None)
        .await;
    assert_eq!(listed[0]["name"], name.as_str(), "{listed}");
    assert_eq!(listed[0]["expires_at"], "2099-12-31", "{listed}");

    // It logs in like `docker login -u alice -p <token>` and pushes to her project.
    let scopes = vec![e2e::gitlab::repo_scope("acme/a", "pull,push")];
    let jwt = request_token(&w.http, &w.server.base, Some(("alice", &secret)), &scopes).await;
    assert!(jwt.is_ok(), "{jwt:?}");

    // Someone else's token id: the page knows no such token.
    let rita_pat = w.api.create_pat(&w.rita, &["read_registry"]).await;
    let rita_id = listed_id(&w, w.rita.id).await;
    let theirs = alice
        .post(
            TOKENS,
            &[("authenticity_token", &token), ("action", "revoke"), ("token_id", &rita_id)],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let still = request_token(&w.http, &w.server.base, Some(("rita", &rita_pat.token)), &[]).await;
    assert!(still.is_ok(), "{still:?}");

    // Revoked on the page: it stops working at once.
    let id = listed[0]["id"].as_i64().unwrap().to_string();
    let revoked = alice
        .post(TOKENS, &[("authenticity_token", &token), ("action", "revoke"), ("token_id", &id)])
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(revoked.body.contains("revoked: it no longer works"), "{}", revoked.body);
    let refused = request_token(&w.http, &w.server.base, Some(("alice", &secret)), &scopes).await;
    assert_eq!(refused.map_err(|(status, _)| status), Err(StatusCode::UNAUTHORIZED));
    // Both changes are in the audit log, with alice as their author.
    let events = w.api.call(Method::GET, "/audit_events?per_page=100", None).await;
    for name in ["token_create", "token_revoke"] {
        let found = events.as_array().unwrap().iter().find(|e| {
            e["event_name"] == name && e["details"]["target_details"] == name_of_token(&listed)
        });
        let found = found.unwrap_or_else(|| panic!("no {name} event: {events}"));
        assert_eq!(found["details"]["author_name"], "alice", "{found}");
    }
}

/// Where this test's screenshots go (the convention of `web_ui.rs`):
/// `$STOWAGE_TEST_RESULTS/screenshots/<test>-<backend>`, by default under
/// `target/test-results`.
fn screenshot_dir(test: &str, backend: MetaBackend) -> std::path::PathBuf {
    let root =
        std::env::var_os("STOWAGE_TEST_RESULTS").map(std::path::PathBuf::from).unwrap_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-results"),
        );
    root.join("screenshots").join(format!("{test}-{backend:?}").to_lowercase())
}

/// In Chromium: a maintainer sets a cleanup policy with the form and sees the preview, which
/// names exactly what the REST API's dry run names; an invalid regex comes back with the
/// sentence.
async fn browser_sets_a_cleanup_policy_and_sees_the_preview(backend: MetaBackend) {
    require_tool("/usr/bin/chromium", "chromium");
    require_tool("node", "nodejs");
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "npm playwright-core is not installed in {}: run scripts/setup",
        browser_dir.display()
    );
    let w = world(backend, &[]).await;
    push_tags(&w, "acme/a/app", &["v1", "v2", "v3", "stable"]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;

    let shots = screenshot_dir("browser_sets_a_cleanup_policy", backend);
    let mut node = std::process::Command::new("node");
    node.arg(browser_dir.join("web_settings.mjs"))
        .env("STOWAGE_URL", &w.server.base)
        .env("USERNAME", "maria")
        .env("PASSWORD", &maria.password)
        .env("PROJECT", "acme/a")
        .env("NAME_REGEX", "v.*")
        .env("SCREENSHOTS", &shots);
    let ran = e2e::tools::run(&mut node);
    assert!(
        ran.success(),
        "the browser script failed (screenshots in {}):\n{}",
        shots.display(),
        ran.combined()
    );
    let seen: Value = serde_json::from_str(ran.stdout().trim()).unwrap();
    assert_eq!(seen["heading"], "Packages and registries", "{seen}");
    assert_eq!(seen["notice"], "Cleanup policy saved.", "{seen}");
    let p = policy_of(&w).await;
    assert_eq!((p["enabled"].clone(), p["name_regex"].clone()), (Value::Bool(true), "v.*".into()));
    let dry = w
        .api
        .call(Method::GET, &format!("/projects/{}/registry/cleanup_policy/dry_run", w.a), None)
        .await;
    let expected: Vec<String> = dry["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["repository"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(expected.len(), 2, "v1..v3 with keep_n 1: two go: {dry}");
    let mut shown: Vec<String> = seen["preview"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    shown.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(shown, expected, "{seen}");
    assert!(
        seen["preview_heading"].as_str().unwrap().contains("would delete 2 tags now"),
        "{seen}"
    );
    assert!(
        seen["invalid"].as_str().unwrap().contains("is not a valid regular expression"),
        "{seen}"
    );
    assert!(shots.join("03-cleanup-preview.png").is_file(), "screenshots in {}", shots.display());
}

async fn project_deploy_tokens_are_shown_once_and_revocable(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    let maria = signed_in(&w, "maria", &maria.password).await;
    let token = maria.csrf().await;
    let form = |name: &'static str, username: &'static str| {
        vec![
            ("authenticity_token", token.clone()),
            ("form", "create_deploy_token".to_string()),
            ("name", name.to_string()),
            ("username", username.to_string()),
            ("scopes", "read_registry".to_string()),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let maria = &maria;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            maria.post(SETTINGS, &pairs).await
        }
    };
    // A username of a user is refused as the API refuses it.
    let taken = post(form("puller", "alice")).await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST, "{}", taken.body);
    assert!(taken.body.contains("alice is already taken by a user"), "{}", taken.body);

    let created = post(form(MARKUP, "k8s-puller")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(!created.body.contains(MARKUP) && escaped(&created.body), "{}", created.body);
    let secret = created
        .body
        .split("<code id=\"new-deploy-token\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("the new deploy token is shown")
        .to_string();
    assert!(!maria.get(SETTINGS).await.body.contains(&secret), "shown once");
    let listed = w.api.call(Method::GET, &format!("/projects/{}/deploy_tokens", w.a), None).await;
    assert_eq!(listed[0]["username"], "k8s-puller", "{listed}");
    assert_eq!(listed[0]["scopes"], serde_json::json!(["read_registry"]), "{listed}");

    // It pulls from this project with docker login's token request.
    let pull = vec![e2e::gitlab::repo_scope("acme/a", "pull")];
    let jwt = request_token(&w.http, &w.server.base, Some(("k8s-puller", &secret)), &pull).await;
    assert!(jwt.is_ok(), "{jwt:?}");
    // Revoked on the page: refused at once.
    let id = listed[0]["id"].as_i64().unwrap().to_string();
    let revoked = maria
        .post(
            SETTINGS,
            &[("authenticity_token", &token), ("form", "revoke_deploy_token"), ("token_id", &id)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let refused =
        request_token(&w.http, &w.server.base, Some(("k8s-puller", &secret)), &pull).await;
    assert_eq!(refused.map_err(|(status, _)| status), Err(StatusCode::UNAUTHORIZED));
    // A token id of another project: nothing to revoke here.
    let other = w
        .api
        .call(
            Method::POST,
            &format!("/projects/{}/deploy_tokens", w.b),
            Some(serde_json::json!({"name": "b", "scopes": ["read_registry"]})),
        )
        .await;
    let other_id = other["id"].as_i64().unwrap().to_string();
    let crossed = maria
        .post(
            SETTINGS,
            &[
                ("authenticity_token", &token),
                ("form", "revoke_deploy_token"),
                ("token_id", &other_id),
            ],
        )
        .await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);
    let b_tokens = w.api.call(Method::GET, &format!("/projects/{}/deploy_tokens", w.b), None).await;
    assert_eq!(b_tokens[0]["revoked"], false, "{b_tokens}");
}

fn name_of_token(listed: &Value) -> Value {
    listed[0]["name"].clone()
}

async fn listed_id(w: &World, user_id: i64) -> String {
    let listed =
        w.api.call(Method::GET, &format!("/personal_access_tokens?user_id={user_id}"), None).await;
    listed[0]["id"].as_i64().unwrap().to_string()
}

backend_tests!(
    browser_sets_a_cleanup_policy_and_sees_the_preview,
    only_maintainers_and_owners,
    policy_saves_through_the_api_rules_and_previews_the_dry_run,
    personal_access_tokens_are_shown_once_and_revocable,
    project_deploy_tokens_are_shown_once_and_revocable,
);
