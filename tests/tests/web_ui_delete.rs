//! The web UI's multi-select deletes and the group page, over raw HTTP as a browser without
//! JavaScript sends them: images of a project deleted together (queued through the same
//! service as the REST API's repository delete, repository protection refusing the whole
//! request), several tags deleted in one confirmation (exactly those, checked with the
//! `/v2` tag list), CSRF and outsiders refused, and a top-level group's storage usage
//! against its quota with the notice `GET /api/v4/groups/:id` reports.

use std::time::{Duration, Instant};

use e2e::backend_tests;
use e2e::gitlab::{seed_image, token_for, Registry, ADMIN_PASSWORD};
use e2e::tenants::{world, World};
use e2e::web::Browser;
use e2e::MetaBackend;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The `/v2` tag list of `name`, read as root: its status and tags.
async fn tags_of(world: &World, name: &str) -> (StatusCode, Vec<String>) {
    let scope = e2e::gitlab::repo_scope(name, "pull");
    let token = world.token(("root", ADMIN_PASSWORD), &[scope]).await;
    let outcome = world.registry(&token).tags(name).await;
    let v: serde_json::Value = serde_json::from_str(&outcome.body).unwrap_or_default();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    (outcome.status, tags)
}

async fn push_tags(world: &World, name: &str, tags: &[&str]) {
    let scope = e2e::gitlab::repo_scope(name, "pull,push");
    let token =
        token_for(&world.http, &world.server.base, Some(("root", ADMIN_PASSWORD)), &[scope]).await;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    seed_image(&Registry::new(&world.server, Some(token)), name, &tags).await;
}

/// Waits (at most 20 s) until the background delete of `name` has run: its tag list answers
/// 404 `NAME_UNKNOWN`.
async fn wait_until_gone(world: &World, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, tags) = tags_of(world, name).await;
        if status == StatusCode::NOT_FOUND {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is still there: {status} {tags:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `<input …>` of the checkbox whose value is `value`.
fn checkbox<'a>(body: &'a str, name: &str, value: &str) -> &'a str {
    let marker = format!("name=\"{name}\" value=\"{value}\"");
    body.split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no checkbox {marker} in {body}"))
        .split('>')
        .next()
        .unwrap()
}

async fn registry_page_deletes_the_selected_images(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    for name in ["acme/a/one", "acme/a/two", "acme/a/three"] {
        push_tags(&w, name, &["v1", "v2"]).await;
    }
    push_tags(&w, "acme/b/other", &["v1"]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    w.api
        .call(
            Method::POST,
            &format!("/projects/{}/registry/protection/repository/rules", w.a),
            Some(json!({"repository_path_pattern": "acme/a/thr*",
                        "minimum_access_level_for_delete": "owner"})),
        )
        .await;
    let one = w.api.repository_id(w.a, "acme/a/one").await.to_string();
    let two = w.api.repository_id(w.a, "acme/a/two").await.to_string();
    let three = w.api.repository_id(w.a, "acme/a/three").await.to_string();
    let other = w.api.repository_id(w.b, "acme/b/other").await.to_string();
    let page = "/acme/a/container_registry";

    let mut browser = Browser::new(&w);
    browser.sign_in("maria", &maria.password).await;
    let listed = browser.get(page).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!checkbox(&listed.body, "repository", &one).contains("disabled"), "{}", listed.body);
    let protected = checkbox(&listed.body, "repository", &three);
    assert!(protected.contains("disabled"), "{protected}");
    assert!(
        listed.body.contains("repository acme/a/three is protected by rule"),
        "the reason is shown: {}",
        listed.body
    );
    let token = browser.csrf().await;

    // No or another session's CSRF token: refused, nothing queued.
    for form in [
        vec![("repository", one.as_str()), ("confirm", "yes")],
        vec![("authenticity_token", "f00d"), ("repository", one.as_str()), ("confirm", "yes")],
    ] {
        let answer = browser.post(page, &form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert!(answer.body.contains("did not come from this site"), "{}", answer.body);
    }

    // Unconfirmed: a page naming what will go; nothing deleted.
    let confirm = browser
        .post(page, &[("authenticity_token", &token), ("repository", &one), ("repository", &two)])
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("Delete 2 images of acme/a?"), "{}", confirm.body);
    for name in ["<code>acme/a/one</code>", "<code>acme/a/two</code>"] {
        assert!(confirm.body.contains(name), "{name}: {}", confirm.body);
    }
    assert!(!confirm.body.contains("acme/a/three"), "{}", confirm.body);

    // A protected image among them: 403 naming the rule, and nothing is queued (one stays).
    let forced = browser
        .post(
            page,
            &[
                ("authenticity_token", &token),
                ("repository", &one),
                ("repository", &three),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);
    assert!(
        forced.body.contains("Nothing was deleted: repository acme/a/three is protected by rule"),
        "{}",
        forced.body
    );
    // The REST API refuses the same repository with the same words.
    let maria_api =
        e2e::gitlab::GitLab::with_token(&w.server, &w.api.create_pat(&maria, &["api"]).await.token);
    let (status, body) = maria_api
        .request(Method::DELETE, &format!("/projects/{}/registry/repositories/{three}", w.a), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.to_string().contains("repository acme/a/three is protected by rule"), "{body}");

    // Another project's image, or no id at all: refused as bad input, nothing queued.
    for bad in [other.as_str(), "x", "-1", "999999999"] {
        let answer = browser
            .post(page, &[("authenticity_token", &token), ("repository", bad), ("confirm", "yes")])
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
    }
    let answer = browser.post(page, &[("authenticity_token", &token), ("confirm", "yes")]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["acme/a/one", "acme/a/three", "acme/b/other"] {
        assert_eq!(tags_of(&w, name).await.0, StatusCode::OK, "{name} is untouched");
    }

    // Confirmed: exactly the selected images go; the others keep every tag.
    let done = browser
        .post(
            page,
            &[
                ("authenticity_token", &token),
                ("repository", &one),
                ("repository", &two),
                ("repository", &one),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Deleting 2 images: acme/a/one, acme/a/two."), "{}", done.body);
    wait_until_gone(&w, "acme/a/one").await;
    wait_until_gone(&w, "acme/a/two").await;
    for name in ["acme/a/three", "acme/a", "acme/b/other"] {
        let (status, tags) = tags_of(&w, name).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert!(!tags.is_empty(), "{name} keeps its tags");
    }
    let after = browser.get(page).await;
    assert!(!after.body.contains("acme/a/one\""), "{}", after.body);

    // A reporter sees no delete controls and is refused by role.
    let mut rita = Browser::new(&w);
    rita.sign_in("rita", &w.rita.password).await;
    let seen = rita.get(page).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains("name=\"repository\""), "{}", seen.body);
    let token = rita.csrf().await;
    let refused = rita
        .post(page, &[("authenticity_token", &token), ("repository", &three), ("confirm", "yes")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("needs the maintainer role or higher"), "{}", refused.body);

    // An outsider gets exactly what a missing project gets.
    let olga = w.api.create_user("olga").await;
    let mut outsider = Browser::new(&w);
    outsider.sign_in("olga", &olga.password).await;
    let token = outsider.csrf().await;
    let form = [("authenticity_token", token.as_str()), ("repository", &three), ("confirm", "yes")];
    let missing = outsider.post("/acme/nope/container_registry", &form).await;
    let hidden = outsider.post(page, &form).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.body, missing.body);
    assert_eq!(tags_of(&w, "acme/a/three").await.0, StatusCode::OK);
}

async fn tag_page_deletes_exactly_the_selected_tags(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    push_tags(&w, "acme/a/app", &["t1", "t2", "t3", "t4", "t5"]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    let repo = w.api.repository_id(w.a, "acme/a/app").await;
    let page = format!("/acme/a/container_registry/{repo}?sort=-name");
    let mut browser = Browser::new(&w);
    browser.sign_in("maria", &maria.password).await;
    let token = browser.csrf().await;

    let confirm =
        browser.post(&page, &[("authenticity_token", &token), ("tag", "t2"), ("tag", "t4")]).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("Delete 2 tags of acme/a/app?"), "{}", confirm.body);
    assert_eq!(tags_of(&w, "acme/a/app").await.1.len(), 5, "nothing deleted before confirming");

    let done = browser
        .post(
            &page,
            &[
                ("authenticity_token", &token),
                ("tag", "t2"),
                ("tag", "t4"),
                ("tag", "t4"),
                ("tag", "gone"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Deleted 2 tags: t2, t4."), "{}", done.body);
    assert!(done.body.contains("Tag gone does not exist (any more)."), "{}", done.body);
    assert_eq!(tags_of(&w, "acme/a/app").await.1, ["t1", "t3", "t5"]);
    // The page after the delete keeps the view (sorted by name, descending).
    let t5 = done.body.find("data-tag=\"t5\"").unwrap();
    let t1 = done.body.find("data-tag=\"t1\"").unwrap();
    assert!(t5 < t1, "still sorted -name");

    // Bad names are refused before anything is deleted.
    let bad = browser
        .post(
            &page,
            &[("authenticity_token", &token), ("tag", "t1"), ("tag", "<b>"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad.body.contains("<b>"), "{}", bad.body);
    assert_eq!(tags_of(&w, "acme/a/app").await.1, ["t1", "t3", "t5"]);
}

async fn group_page_shows_usage_quota_and_notice(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let acme = w.api.call(Method::GET, "/groups/acme", None).await["id"].as_i64().unwrap();
    let sub = w.api.create_group("sub", Some(acme), "private").await;
    let secret = w.api.create_group("secret", Some(acme), "private").await;
    let tools = w.api.create_project(sub, "tools", "private").await;
    w.api.add_member("groups", sub, w.alice.id, 30).await;
    push_tags(&w, "acme/sub/tools", &["v1"]).await;
    let markup = "<script>alert(1)</script>";
    let (renamed, _) = w
        .api
        .request(Method::PUT, &format!("/groups/{sub}"), Some(json!({ "name": markup })))
        .await;

    // No limit yet: usage, and no notice.
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;
    let page = alice.get("/acme").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("no storage limit"), "{}", page.body);
    assert!(!page.body.contains("storage-notice"), "{}", page.body);
    // The subgroup she belongs to, with its size; not the private one she does not.
    assert!(page.body.contains("href=\"/acme/sub\""), "{}", page.body);
    assert!(!page.body.contains("acme/secret"), "{}", page.body);
    assert!(page.body.contains("acme/sub/tools"), "{}", page.body);
    if renamed.is_success() {
        assert!(!page.body.contains(markup), "{}", page.body);
        assert!(
            page.body.contains("&lt;script&gt;alert(1)") || page.body.contains("&#60;script&#62;"),
            "{}",
            page.body
        );
    }
    let _ = (tools, secret);

    // A limit a little above the usage: between 85 and 95 %.
    let g = w.api.call(Method::GET, &format!("/groups/{acme}"), None).await;
    let usage = g["container_registry_storage_usage"].as_i64().unwrap();
    assert!(usage > 0, "{g}");
    let limit = usage * 100 / 90;
    let g = w
        .api
        .call(
            Method::PUT,
            &format!("/groups/{acme}"),
            Some(json!({ "container_registry_storage_limit": limit })),
        )
        .await;
    let g = if g["container_registry_storage_notice"].is_null() {
        w.api.call(Method::GET, &format!("/groups/{acme}"), None).await
    } else {
        g
    };
    let notice = g["container_registry_storage_notice"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("the API reports a notice: {g}"))
        .to_string();
    assert_eq!(g["container_registry_storage_notice"]["threshold"], 85, "{g}");
    let page = alice.get("/acme").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&notice), "the API's notice {notice:?} in {}", page.body);
    let percentage = format!("{:.1} %", usage as f64 * 100.0 / limit as f64);
    assert!(page.body.contains(&percentage), "{percentage} in {}", page.body);
    assert!(page.body.contains("id=\"storage-meter\""), "{}", page.body);
    // Subgroups have no limit of their own.
    let sub_page = alice.get("/acme/sub").await;
    assert_eq!(sub_page.status, StatusCode::OK);
    assert!(!sub_page.body.contains("id=\"storage\""), "{}", sub_page.body);

    // Full: the 100 % notice.
    w.api
        .call(
            Method::PUT,
            &format!("/groups/{acme}"),
            Some(json!({ "container_registry_storage_limit": usage })),
        )
        .await;
    let g = w.api.call(Method::GET, &format!("/groups/{acme}"), None).await;
    let full = g["container_registry_storage_notice"]["message"].as_str().unwrap().to_string();
    assert!(full.contains("reached 100 %"), "{g}");
    let page = alice.get("/acme").await;
    assert!(page.body.contains(&full), "{full:?} in {}", page.body);
    assert!(page.body.contains("100.0 %"), "{}", page.body);
    assert!(page.body.contains("New content cannot be pushed"), "{}", page.body);

    // A private group is, to anonymous visitors and outsiders, a missing one.
    let anonymous = Browser::new(&w);
    let missing = anonymous.get("/nope").await;
    let hidden = anonymous.get("/acme/secret").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.body, missing.body);
    let public = anonymous.get("/acme").await;
    assert_eq!(public.status, StatusCode::OK);
    assert!(!public.body.contains("acme/sub"), "{}", public.body);
}

backend_tests!(
    registry_page_deletes_the_selected_images,
    tag_page_deletes_exactly_the_selected_tags,
    group_page_shows_usage_quota_and_notice,
);
