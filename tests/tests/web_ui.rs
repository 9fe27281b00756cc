//! The web UI over raw HTTP, as a browser would drive it without JavaScript: sign-in and
//! sign-out, session cookies and their flags, CSRF tokens on every form, sessions that end at
//! sign-out and when the user is blocked, private projects that look exactly like missing
//! ones, escaping of what users typed, and tag deletion through the write service (with
//! protection rules refusing what the REST API refuses).

use e2e::backend_tests;
use e2e::gitlab::{seed_image, token_for, Registry, ADMIN_PASSWORD};
use e2e::tenants::{world, World};
use e2e::tools::{require_tool, Containers};
use e2e::web::{hidden_value, Browser};
use e2e::MetaBackend;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn tags_of(world: &World, name: &str) -> Vec<String> {
    let scope = e2e::gitlab::repo_scope(name, "pull");
    let token = world.token(("root", ADMIN_PASSWORD), &[scope]).await;
    let outcome = world.registry(&token).tags(name).await;
    let v: serde_json::Value = serde_json::from_str(&outcome.body).unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

async fn push_tags(world: &World, name: &str, tags: &[&str]) {
    let scope = e2e::gitlab::repo_scope(name, "pull,push");
    let token =
        token_for(&world.http, &world.server.base, Some(("root", ADMIN_PASSWORD)), &[scope]).await;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    seed_image(&Registry::new(&world.server, Some(token)), name, &tags).await;
}

async fn sign_in_sets_flagged_cookies(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let mut browser = Browser::new(&w);
    let form = browser.get("/users/sign_in").await;
    let login = form.cookie("_stowage_login_csrf").unwrap();
    assert!(login.contains("HttpOnly") && login.contains("SameSite=Strict"), "{login}");
    assert!(form.body.contains("name=\"username\"") && form.body.contains("name=\"password\""));

    // A wrong password: 401, the form again, no session.
    let wrong = browser.try_sign_in("alice", "not-her-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Invalid username or password."), "{}", wrong.body);
    assert!(wrong.cookie("_stowage_session").is_none());
    // A personal access token is no password here.
    let pat = w.api.create_pat(&w.alice, &["api"]).await;
    let by_token = browser.try_sign_in("alice", &pat.token).await;
    assert_eq!(by_token.status, StatusCode::UNAUTHORIZED);

    let answer = browser.sign_in("alice", &w.alice.password).await;
    assert_eq!(answer.location.as_deref(), Some("/"));
    let cookie = answer.cookie("_stowage_session").unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    // Served over plain HTTP without an https `http.host`: a Secure cookie would never return.
    assert!(!cookie.contains("Secure"), "{cookie}");

    // Signed in: her projects; the other private project is nowhere.
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Signed in as <strong>alice</strong>"), "{}", home.body);
    assert!(home.body.contains("acme/a"));
    assert!(!home.body.contains("acme/b"));
    let all = browser.get("/?scope=all").await;
    assert!(all.body.contains("acme/pub") && all.body.contains("acme/a"));
    assert!(!all.body.contains("acme/b"));
    w.assert_log_free_of(&[&w.alice.password, browser.session.as_deref().unwrap()]);
}

async fn secure_cookie_behind_https(backend: MetaBackend) {
    let w = world(backend, &[("STOWAGE_HTTP__HOST", "https://registry.example.com")]).await;
    let mut browser = Browser::new(&w);
    let answer = browser.sign_in("alice", &w.alice.password).await;
    let cookie = answer.cookie("_stowage_session").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

async fn forms_need_the_session_csrf_token(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    push_tags(&w, "acme/a", &["latest", "v1", "v2"]).await;
    let repo = w.api.repository_id(w.a, "acme/a").await;
    let page = format!("/acme/a/container_registry/{repo}");

    // Sign-in without the form's token, or with one that is not the cookie's: refused.
    let browser = Browser::new(&w);
    let fields = [("username", "root"), ("password", ADMIN_PASSWORD)];
    let missing = browser.post("/users/sign_in", &fields).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.cookie("_stowage_session").is_none());
    let forged = [("username", "root"), ("password", ADMIN_PASSWORD), ("authenticity_token", "00")];
    let forged = browser.post("/users/sign_in", &forged).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let mut root = Browser::new(&w);
    root.sign_in("root", ADMIN_PASSWORD).await;
    let mut other = Browser::new(&w);
    other.sign_in("root", ADMIN_PASSWORD).await;
    let others_token = other.csrf().await;
    let token = root.csrf().await;
    assert_ne!(token, others_token, "every session has its own token");

    for (what, form) in [
        ("no token", vec![("tag", "v1"), ("confirm", "yes")]),
        ("an empty token", vec![("authenticity_token", ""), ("tag", "v1"), ("confirm", "yes")]),
        ("a wrong token", vec![("authenticity_token", "f00d"), ("tag", "v1"), ("confirm", "yes")]),
        (
            "another session's token",
            vec![("authenticity_token", others_token.as_str()), ("tag", "v1"), ("confirm", "yes")],
        ),
    ] {
        let answer = root.post(&page, &form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}");
        assert!(answer.body.contains("did not come from this site"), "{what}: {}", answer.body);
    }
    assert!(tags_of(&w, "acme/a").await.contains(&"v1".to_string()), "nothing was deleted");

    // Without confirmation, the page names what will go and deletes nothing.
    let confirm = root.post(&page, &[("authenticity_token", &token), ("tag", "v1")]).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("<code>v1</code>"), "{}", confirm.body);
    assert!(tags_of(&w, "acme/a").await.contains(&"v1".to_string()));
    // Confirmed: gone for every client.
    let done = root
        .post(&page, &[("authenticity_token", &token), ("tag", "v1"), ("confirm", "yes")])
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Deleted 1 tag: v1."), "{}", done.body);
    let tags = tags_of(&w, "acme/a").await;
    assert!(!tags.contains(&"v1".to_string()) && tags.contains(&"v2".to_string()), "{tags:?}");

    // Sign-out is a form too.
    let out = root.post("/users/sign_out", &[("authenticity_token", "bad")]).await;
    assert_eq!(out.status, StatusCode::FORBIDDEN);
    assert_eq!(root.get(&page).await.status, StatusCode::OK, "still signed in");
}

async fn sessions_end_at_sign_out_and_when_blocked(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let page = "/acme/a/container_registry";
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;
    assert_eq!(alice.get(page).await.status, StatusCode::OK);
    let token = alice.csrf().await;
    let out = alice.post("/users/sign_out", &[("authenticity_token", &token)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let cleared = out.cookie("_stowage_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie, replayed: a stranger's view.
    let replay = alice.get(page).await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
    assert!(alice.get("/").await.body.contains("id=\"sign-in\""));

    let mut again = Browser::new(&w);
    again.sign_in("alice", &w.alice.password).await;
    assert_eq!(again.get(page).await.status, StatusCode::OK);
    w.api.block_user(w.alice.id).await;
    let blocked = again.get(page).await;
    assert_eq!(blocked.status, StatusCode::NOT_FOUND, "a blocked user's session is dead");
    assert!(!again.get("/").await.body.contains("Signed in as"));
    // Blocked users cannot sign in either.
    assert_eq!(
        again.try_sign_in("alice", &w.alice.password).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn private_projects_look_missing(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let repo = w.api.repository_id(w.a, "acme/a").await;
    let olga = w.api.create_user("olga").await;
    let mut outsider = Browser::new(&w);
    outsider.sign_in("olga", &olga.password).await;
    let anonymous = Browser::new(&w);

    let missing = anonymous.get("/acme/nope/container_registry").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Page not found"));
    for browser in [&anonymous, &outsider] {
        for path in [
            "/acme/a".to_string(),
            "/acme/a/container_registry".to_string(),
            format!("/acme/a/container_registry/{repo}"),
            "/acme/a/container_registry?search=a&sort=-published".to_string(),
        ] {
            let answer = browser.get(&path).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(answer.body, missing.body, "{path} says nothing a missing path does not");
        }
        let home = browser.get("/?scope=all").await;
        assert!(home.body.contains("acme/pub"), "{}", home.body);
        assert!(!home.body.contains("acme/a<") && !home.body.contains("acme/a\""));
        assert!(!home.body.contains("acme/b"));
        // A delete attempt is refused before anything else is said.
        let token =
            hidden_value(&browser.get("/").await.body, "authenticity_token").unwrap_or_default();
        let post = browser
            .post(
                &format!("/acme/a/container_registry/{repo}"),
                &[("authenticity_token", &token), ("tag", "latest"), ("confirm", "yes")],
            )
            .await;
        assert!(post.status == StatusCode::NOT_FOUND || post.status == StatusCode::FORBIDDEN);
    }
    assert_eq!(tags_of(&w, "acme/a").await, vec!["latest".to_string()]);

    // A repository id of another project is not reachable through a visible project's path.
    let b_repo = w.api.repository_id(w.b, "acme/b").await;
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;
    let crossed = alice.get(&format!("/acme/a/container_registry/{b_repo}")).await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);
    assert_eq!(crossed.body, missing.body);

    // The public project reads for everyone, with the API's size and tags.
    let public = anonymous.get("/acme/pub/container_registry").await;
    assert_eq!(public.status, StatusCode::OK);
    assert!(public.body.contains("docker pull"), "{}", public.body);
    // Other surfaces keep their JSON answers.
    let v2 = anonymous.get("/v2/nope/tags/list").await;
    assert!(v2.body.starts_with('{'), "{}", v2.body);
    let api = anonymous.get("/api/v4/nope").await;
    assert!(api.body.starts_with('{'), "{}", api.body);
}

/// Whether `<script>alert(1)` appears HTML-escaped (named or numeric entities).
fn escaped(body: &str) -> bool {
    body.contains("&lt;script&gt;alert(1)") || body.contains("&#60;script&#62;alert(1)")
}

async fn what_users_typed_is_shown_as_text(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let anonymous = Browser::new(&w);
    let markup = "<script>alert(1)</script>";
    let search = url::form_urlencoded::byte_serialize(markup.as_bytes()).collect::<String>();
    for path in
        [format!("/?search={search}"), format!("/acme/pub/container_registry?search={search}")]
    {
        let page = anonymous.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains(markup), "{path} echoes markup: {}", page.body);
        assert!(escaped(&page.body), "{path}: {}", page.body);
    }
    let repo = w.api.repository_id(w.a, "acme/a").await;
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;
    let page = alice.get(&format!("/acme/a/container_registry/{repo}?search={search}")).await;
    assert!(!page.body.contains(markup));
    // A project whose display name is markup.
    let (status, project) = w
        .api
        .request(Method::PUT, &format!("/projects/{}", w.a), Some(json!({ "name": markup })))
        .await;
    // Only where the API lets a project's display name be changed.
    if status.is_success() && project["name"] == markup {
        let overview = alice.get("/acme/a").await;
        assert!(!overview.body.contains(markup), "{}", overview.body);
        assert!(escaped(&overview.body), "{}", overview.body);
    }
    // Bad sorts and markers are refused with a sentence, as pages.
    let bad = alice.get(&format!("/acme/a/container_registry/{repo}?sort=%3Cb%3E")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad.body.contains("<b>"));
    let bad = alice.get(&format!("/acme/a/container_registry/{repo}?after=%3Cb%3E")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

async fn protected_tags_cannot_be_deleted(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    push_tags(&w, "acme/a", &["latest", "v1", "release-1", "dev"]).await;
    let maintainer = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maintainer.id, 40).await;
    let rules = format!("/projects/{}/registry/protection/tag/rules", w.a);
    w.api
        .call(
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^v.*", "minimum_access_level_for_push": "maintainer",
                        "minimum_access_level_for_delete": "owner"})),
        )
        .await;
    w.api
        .call(
            Method::POST,
            &rules,
            Some(json!({"tag_name_pattern": "^release-", "immutable": true})),
        )
        .await;
    let repo = w.api.repository_id(w.a, "acme/a").await;
    let page = format!("/acme/a/container_registry/{repo}");

    let mut maria = Browser::new(&w);
    maria.sign_in("maria", &maintainer.password).await;
    let tags = maria.get(&page).await;
    assert_eq!(tags.status, StatusCode::OK);
    let body = &tags.body;
    assert!(body.contains("badge protected"), "{body}");
    assert!(body.contains("badge immutable"), "{body}");
    assert!(body.contains("tag v1 is protected by rule"), "{body}");
    assert!(body.contains("tag release-1 is immutable"), "{body}");
    let v1_box = body.split("value=\"v1\"").nth(1).unwrap().split('>').next().unwrap();
    assert!(v1_box.contains("disabled"), "{v1_box}");
    let dev_box = body.split("value=\"dev\"").nth(1).unwrap().split('>').next().unwrap();
    assert!(!dev_box.contains("disabled"), "{dev_box}");

    // Sent anyway, with a deletable tag among them: refused as a whole by the write service,
    // every rule named, and nothing deleted (not even dev).
    let token = maria.csrf().await;
    let forced = maria
        .post(
            &page,
            &[
                ("authenticity_token", &token),
                ("tag", "dev"),
                ("tag", "v1"),
                ("tag", "release-1"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);
    assert!(
        forced.body.contains("Nothing was deleted: tag v1 is protected by rule &quot;^v.*&quot;")
            || forced
                .body
                .contains("Nothing was deleted: tag v1 is protected by rule &#34;^v.*&#34;"),
        "{}",
        forced.body
    );
    assert!(forced.body.contains("; tag release-1 is immutable"), "{}", forced.body);
    assert!(!forced.body.contains("Deleted"), "{}", forced.body);
    let left = tags_of(&w, "acme/a").await;
    for tag in ["dev", "v1", "release-1", "latest"] {
        assert!(left.contains(&tag.to_string()), "{tag} is still there: {left:?}");
    }

    // A reporter sees the tags and no delete controls; a forced delete is refused by role.
    let mut rita = Browser::new(&w);
    rita.sign_in("rita", &w.rita.password).await;
    let seen = rita.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains("delete-selected"));
    let token = rita.csrf().await;
    let refused = rita
        .post(&page, &[("authenticity_token", &token), ("tag", "dev"), ("confirm", "yes")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("needs the maintainer role or higher"), "{}", refused.body);
    assert!(tags_of(&w, "acme/a").await.contains(&"dev".to_string()));
}

async fn registry_and_tag_pages_list_search_and_page(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    push_tags(&w, "acme/a/web", &refs).await;
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;

    let registry = alice.get("/acme/a/container_registry?search=web").await;
    assert_eq!(registry.status, StatusCode::OK);
    assert!(registry.body.contains(">web</a>"), "{}", registry.body);
    assert!(
        !registry.body.contains("class=\"repository\">acme/a</a>"),
        "filtered out: {}",
        registry.body
    );
    let repo = w.api.repository_id(w.a, "acme/a/web").await;
    assert!(registry.body.contains(&format!("/acme/a/container_registry/{repo}")));

    let first = alice.get(&format!("/acme/a/container_registry/{repo}")).await;
    assert!(first.body.contains("data-tag=\"t00\"") && first.body.contains("data-tag=\"t19\""));
    assert!(!first.body.contains("data-tag=\"t20\""));
    let next = format!("/acme/a/container_registry/{repo}?after=t19");
    assert!(first.body.contains(&next), "{}", first.body);
    let second = alice.get(&next).await;
    assert!(second.body.contains("data-tag=\"t20\"") && second.body.contains("data-tag=\"t24\""));
    assert!(!second.body.contains("data-tag=\"t19\""));
    assert!(second.body.contains("?before=t20"));
    let back = alice.get(&format!("/acme/a/container_registry/{repo}?before=t20")).await;
    assert!(back.body.contains("data-tag=\"t00\"") && back.body.contains("data-tag=\"t19\""));
    let search =
        alice.get(&format!("/acme/a/container_registry/{repo}?search=t1&sort=-name")).await;
    let t19 = search.body.find("data-tag=\"t19\"").unwrap();
    let t10 = search.body.find("data-tag=\"t10\"").unwrap();
    assert!(t19 < t10, "descending by name");
    assert!(!search.body.contains("data-tag=\"t20\""));
    // The digests shown are the registry's.
    let scope = e2e::gitlab::repo_scope("acme/a/web", "pull");
    let token = w.token(("root", ADMIN_PASSWORD), &[scope]).await;
    let pulled = w.registry(&token).pull("acme/a/web", "t00").await;
    let digest = e2e::sha256_digest(pulled.body.as_bytes());
    assert!(first.body.contains(&format!("data-digest=\"{digest}\"")), "{digest}");
}

/// A multi-arch index with an SBOM attached through `subject`: the tag page lists each
/// platform (os/architecture/variant) with its size, and the artifact with its type.
async fn index_platforms_and_attached_artifacts(backend: MetaBackend) {
    let w = world(backend, &[]).await;
    let name = "acme/a/multi";
    let scope = e2e::gitlab::repo_scope(name, "pull,push");
    let token = w.token(("root", ADMIN_PASSWORD), &[scope]).await;
    let registry = w.registry(&token);
    let mut children = Vec::new();
    for (tag, platform) in [
        ("amd", json!({"os": "linux", "architecture": "amd64"})),
        ("arm", json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
    ] {
        registry.push_image(name, tag).await.assert_allowed(tag);
        let manifest = registry.pull(name, tag).await;
        children.push(json!({
            "mediaType": e2e::gitlab::OCI_MANIFEST,
            "digest": e2e::sha256_digest(manifest.body.as_bytes()),
            "size": manifest.body.len(),
            "platform": platform,
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }))
    .unwrap();
    let put = |reference: String, media_type: &'static str, body: Vec<u8>| {
        registry
            .req(Method::PUT, &format!("/v2/{name}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body)
            .send()
    };
    let answer = put("multi".into(), "application/vnd.oci.image.index.v1+json", index.clone())
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED, "{}", answer.text().await.unwrap());
    let empty = registry.upload_blob(name, b"{}").await.unwrap_or_else(|o| panic!("{}", o.body));
    let empty =
        json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2});
    let sbom = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": e2e::gitlab::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom+json",
        "config": empty,
        "layers": [empty],
        "subject": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": e2e::sha256_digest(&index),
            "size": index.len(),
        },
        "annotations": {"org.example.note": "<img src=x onerror=alert(1)>"},
    }))
    .unwrap();
    let answer = put(e2e::sha256_digest(&sbom), e2e::gitlab::OCI_MANIFEST, sbom).await.unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED, "{}", answer.text().await.unwrap());

    let repo = w.api.repository_id(w.a, name).await;
    let mut alice = Browser::new(&w);
    alice.sign_in("alice", &w.alice.password).await;
    let page = alice.get(&format!("/acme/a/container_registry/{repo}?search=multi")).await;
    assert_eq!(page.status, StatusCode::OK);
    for expected in [
        "application/vnd.oci.image.index.v1+json",
        "<span class=\"platform\">linux/amd64</span>",
        "<span class=\"platform\">linux/arm64/v8</span>",
        "<span class=\"artifact-type\">application/vnd.example.sbom+json</span>",
    ] {
        assert!(page.body.contains(expected), "{expected} missing:\n{}", page.body);
    }
    assert!(!page.body.contains("<img"), "{}", page.body);
}

/// Where this test's screenshots go: `$STOWAGE_TEST_RESULTS/screenshots/<test>-<backend>`,
/// by default under `target/test-results`.
fn screenshot_dir(test: &str, backend: MetaBackend) -> std::path::PathBuf {
    let root =
        std::env::var_os("STOWAGE_TEST_RESULTS").map(std::path::PathBuf::from).unwrap_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-results"),
        );
    root.join("screenshots").join(format!("{test}-{backend:?}").to_lowercase())
}

/// Real images pushed with skopeo, then a person's path through the UI in Chromium: sign in,
/// search, tag details whose digests equal `skopeo inspect`'s, select two tags and delete them
/// in one confirmation (gone from `skopeo list-tags`), a protected tag that cannot be deleted,
/// sign out.
async fn browser_round_trip(backend: MetaBackend) {
    require_tool("/usr/bin/chromium", "chromium");
    require_tool("node", "nodejs");
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "npm playwright-core is not installed in {}: run scripts/setup",
        browser_dir.display()
    );
    let w = world(backend, &[]).await;
    let maria = w.api.create_user("maria").await;
    w.api.add_member("projects", w.a, maria.id, 40).await;
    w.api
        .call(
            Method::POST,
            &format!("/projects/{}/registry/protection/tag/rules", w.a),
            Some(json!({"tag_name_pattern": "^stable$", "minimum_access_level_for_push": "maintainer",
                        "minimum_access_level_for_delete": "owner"})),
        )
        .await;

    let c = Containers::new();
    c.build_scratch_image("localhost/e2e-ui:one", "amd64", &[("/one.txt", b"one")]);
    c.build_scratch_image("localhost/e2e-ui:two", "amd64", &[("/two.txt", b"two")]);
    let layout = c.path("layout");
    let layout = layout.to_str().unwrap();
    c.buildah(&["push", "localhost/e2e-ui:one", &format!("oci:{layout}:one")]).ok();
    c.buildah(&["push", "localhost/e2e-ui:two", &format!("oci:{layout}:two")]).ok();
    let image = format!("{}/acme/a/app", w.server.addr);
    let creds = format!("root:{ADMIN_PASSWORD}");
    for (source, tag) in [("one", "v1"), ("two", "v2"), ("one", "stable")] {
        c.skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{layout}:{source}"),
            &format!("docker://{image}:{tag}"),
        ])
        .ok();
    }
    let list_tags = || {
        let v = c
            .skopeo(&[
                "list-tags",
                "--tls-verify=false",
                "--creds",
                &creds,
                &format!("docker://{image}"),
            ])
            .ok()
            .json();
        let mut tags: Vec<String> =
            v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        tags.sort();
        tags
    };
    assert_eq!(list_tags(), ["stable", "v1", "v2"]);

    let mut inspected = Vec::new();
    for tag in ["v1", "v2", "stable"] {
        let reference = format!("docker://{image}:{tag}");
        let args = ["--tls-verify=false", "--creds", &creds, &reference];
        let summary = c.skopeo(&[&["inspect"], &args[..]].concat()).ok().json();
        let raw = c.skopeo(&[&["inspect", "--raw"], &args[..]].concat()).ok().json();
        inspected.push((tag, summary, raw));
    }

    let shots = screenshot_dir("browser_round_trip", backend);
    let mut node = std::process::Command::new("node");
    node.arg(browser_dir.join("web_ui.mjs"))
        .env("STOWAGE_URL", &w.server.base)
        .env("USERNAME", "maria")
        .env("PASSWORD", &maria.password)
        .env("PROJECT", "acme/a")
        .env("IMAGE", "app")
        .env("DELETE_TAGS", "v1,v2")
        .env("PROTECTED_TAG", "stable")
        .env("SCREENSHOTS", &shots);
    let ran = e2e::tools::run(&mut node);
    assert!(
        ran.success(),
        "the browser script failed (screenshots in {}):\n{}",
        shots.display(),
        ran.combined()
    );
    let seen: serde_json::Value = serde_json::from_str(ran.stdout().trim()).unwrap();
    assert_eq!(seen["signed_in_as"], "maria");

    // The digests the page showed are the registry's, as skopeo saw them before the delete.
    for (tag, inspected, raw) in &inspected {
        let shown = &seen["tags"][tag];
        assert_eq!(shown["digest"], inspected["Digest"], "{tag}: {seen}");
        assert_eq!(shown["config_digest"], raw["config"]["digest"], "{tag}: {seen}");
        assert_eq!(shown["media_type"], raw["mediaType"], "{tag}: {seen}");
    }
    let confirm = seen["confirm_lists"].as_str().unwrap();
    assert!(confirm.contains("v1") && confirm.contains("v2"), "{seen}");
    assert!(!confirm.contains("stable"), "{seen}");
    assert_eq!(seen["notice"], "Deleted 2 tags: v1, v2.");
    assert_eq!(seen["tags_after"], json!(["stable"]));
    assert_eq!(list_tags(), ["stable"], "v1 and v2 are gone for every client");
    assert_eq!(seen["protected_disabled"], true);
    let reason = seen["protected_reason"].as_str().unwrap();
    assert!(reason.contains("tag stable is protected by rule"), "{reason}");
    assert_eq!(seen["after_sign_out_status"], "Page not found");
    assert!(shots.join("04-tag-details.png").is_file(), "screenshots saved in {}", shots.display());
}

backend_tests!(
    browser_round_trip,
    index_platforms_and_attached_artifacts,
    sign_in_sets_flagged_cookies,
    secure_cookie_behind_https,
    forms_need_the_session_csrf_token,
    sessions_end_at_sign_out_and_when_blocked,
    private_projects_look_missing,
    what_users_typed_is_shown_as_text,
    protected_tags_cannot_be_deleted,
    registry_and_tag_pages_list_search_and_page,
);
