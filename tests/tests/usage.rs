//! Usage and quotas end to end, on SQLite and PostgreSQL: images pushed through `/v2` show up
//! deduplicated in GitLab's statistics shapes, with what deleting a project, repository or tag
//! would free (`exclusive_size`); a top-level group's storage limit records one notice per
//! threshold crossed and, at 100 %, refuses new content with `DENIED` while pulls, deletes and
//! pushes of content the group already holds keep working.

use e2e::gitlab::{
    encode_path, manifest_json, start_auth_server, token_for, GitLab, Registry, ADMIN_PASSWORD,
};
use e2e::{backend_tests, random_bytes, random_suffix, sha256_digest, MetaBackend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(usage_shapes, quota_thresholds_and_enforcement);

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// A registry client for `root` with push and pull on `repos`.
async fn root_registry(server: &TestServer, repos: &[&str]) -> Registry {
    let http = e2e::gitlab::http_client();
    let scopes: Vec<String> =
        repos.iter().map(|r| e2e::gitlab::repo_scope(r, "pull,push,delete")).collect();
    let token = token_for(&http, &server.base, Some(("root", ADMIN_PASSWORD)), &scopes).await;
    Registry::new(server, Some(token))
}

/// Pushes an image of the shared config and one layer of `layer` bytes as `name:tag`; returns
/// the manifest digest.
async fn push(registry: &Registry, name: &str, tag: &str, layer: &[u8]) -> String {
    let config = registry.upload_blob(name, CONFIG).await.expect("config upload");
    let layer_digest = registry.upload_blob(name, layer).await.expect("layer upload");
    let manifest = manifest_json(&config, CONFIG.len(), &layer_digest, layer.len());
    registry.put_manifest(name, tag, &manifest).await.assert_allowed(&format!("push {name}:{tag}"));
    sha256_digest(&manifest)
}

async fn usage_shapes(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    let api = GitLab::root(&server);
    let top = format!("u{}", &random_suffix()[..8]);
    let group = api.create_group(&top, None, "private").await;
    let sub = api.create_group("sub", Some(group), "private").await;
    let app = api.create_project(group, "app", "private").await;
    let tool = api.create_project(sub, "tool", "private").await;
    let (app_repo, tool_repo) = (format!("{top}/app"), format!("{top}/sub/tool"));
    let registry = root_registry(&server, &[&app_repo, &tool_repo]).await;

    // app:v1 and app:v2 are one image; tool:v1 shares only the config.
    let (c, layer) = (CONFIG.len() as i64, 512i64);
    push(&registry, &app_repo, "v1", &random_bytes(512)).await;
    let v1 = registry.pull(&app_repo, "v1").await;
    registry.put_manifest(&app_repo, "v2", v1.body.as_bytes()).await.assert_allowed("tag v2");
    push(&registry, &tool_repo, "v1", &random_bytes(512)).await;

    // GitLab's statistics shapes; booleans as GitLab reads them.
    let project = api.call(Method::GET, &format!("/projects/{app}?statistics=True"), None).await;
    assert_eq!(project["statistics"]["container_registry_size"], c + layer, "{project}");
    assert_eq!(
        project["statistics"]["container_registry_exclusive_size"], layer,
        "the config is shared with {tool_repo}: {project}"
    );
    let t = api.call(Method::GET, &format!("/projects/{tool}?statistics=true"), None).await;
    assert_eq!(t["statistics"]["container_registry_size"], c + layer, "{t}");
    let plain = api.call(Method::GET, &format!("/projects/{app}"), None).await;
    assert!(plain.get("statistics").is_none(), "statistics only when asked for: {plain}");
    let g = api.call(Method::GET, &format!("/groups/{group}?statistics=1"), None).await;
    assert_eq!(g["statistics"]["container_registry_size"], c + 2 * layer, "{g}");
    assert_eq!(g["container_registry_storage_usage"], c + 2 * layer, "{g}");
    assert_eq!(g["container_registry_storage_limit"], 0, "no limit configured: {g}");
    assert_eq!(g["container_registry_storage_percentage"], Value::Null, "{g}");
    assert_eq!(g["container_registry_storage_notice"], Value::Null, "{g}");
    let s = api
        .call(
            Method::GET,
            &format!("/groups/{}?statistics=TRUE", encode_path(&format!("{top}/sub"))),
            None,
        )
        .await;
    assert_eq!(s["statistics"]["container_registry_size"], c + layer, "{s}");
    assert!(s.get("container_registry_storage_limit").is_none(), "limits are top-level: {s}");
    let (status, body) =
        api.request(Method::GET, &format!("/groups/{group}?statistics=maybe"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Repository: size (GitLab's), size_bytes (details), exclusive_size.
    let rid = api.repository_id(app, &app_repo).await;
    let r = api.call(Method::GET, &format!("/registry/repositories/{rid}?size=true"), None).await;
    assert_eq!(
        (r["size"].clone(), r["exclusive_size"].clone()),
        (json!(c + layer), json!(layer)),
        "{r}"
    );
    let d = api.call(Method::GET, &format!("/registry/repositories/{rid}/details"), None).await;
    assert_eq!(
        (d["size_bytes"].clone(), d["exclusive_size"].clone()),
        (json!(c + layer), json!(layer)),
        "{d}"
    );

    // Tag: v1 and v2 are one manifest, so deleting either frees nothing; once v2 is gone,
    // deleting v1 would free the layer.
    let tag = |t: &'static str| format!("/projects/{app}/registry/repositories/{rid}/tags/{t}");
    assert_eq!(api.call(Method::GET, &tag("v1"), None).await["exclusive_size"], 0);
    api.call(Method::DELETE, &tag("v2"), None).await;
    assert_eq!(api.call(Method::GET, &tag("v1"), None).await["exclusive_size"], layer);

    // Deleting the repository takes its bytes out of every figure.
    api.call(Method::DELETE, &format!("/projects/{app}/registry/repositories/{rid}"), None).await;
    let mut usage = 0;
    for _ in 0..200 {
        // Repository deletion may run in the background.
        let g = api.call(Method::GET, &format!("/groups/{group}?statistics=true"), None).await;
        usage = g["statistics"]["container_registry_size"].as_i64().unwrap();
        if usage == c + layer {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(usage, c + layer, "only {tool_repo} is left");

    // The CLI recomputes from scratch and finds nothing to correct.
    let out = server.stowage_command(&["usage", "recompute"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("no drift"), "{text}");
}

async fn quota_thresholds_and_enforcement(backend: MetaBackend) {
    // An instance default the group overrides below.
    let server = start_auth_server(backend, &[("STOWAGE_QUOTAS__DEFAULT_LIMIT", "1MiB")]);
    let api = GitLab::root(&server);
    let top = format!("q{}", &random_suffix()[..8]);
    let group = api.create_group(&top, None, "private").await;
    let project = api.create_project(group, "app", "private").await;
    let repo = format!("{top}/app");
    let registry = root_registry(&server, &[&repo]).await;

    let g = api.call(Method::GET, &format!("/groups/{group}"), None).await;
    assert_eq!(g["container_registry_storage_limit"], 1 << 20, "{g}");
    assert_eq!(g["container_registry_storage_limit_source"], "instance", "{g}");

    // Only instance admins set limits: the group's owner may not.
    let owner = api.create_user(&format!("own{}", &random_suffix()[..6])).await;
    api.add_member("groups", group, owner.id, e2e::gitlab::level::OWNER).await;
    let owner_api = GitLab::with_token(&server, &api.create_pat(&owner, &["api"]).await.token);
    let (status, body) = owner_api
        .request(
            Method::PUT,
            &format!("/groups/{group}"),
            Some(json!({"container_registry_storage_limit": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // 1000 bytes, through the CLI (1000B) and the API.
    let out = server
        .stowage_command(&["admin", "groups", "update", &top, "--storage-limit", "1KiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["container_registry_storage_limit"], 1024, "{shown}");
    let g = api
        .call(
            Method::PUT,
            &format!("/groups/{group}"),
            Some(json!({"container_registry_storage_limit": "1000"})),
        )
        .await;
    assert_eq!(g["container_registry_storage_limit"], 1000, "{g}");
    assert_eq!(g["container_registry_storage_limit_source"], "group", "{g}");

    // A blob uploaded now, referenced by a manifest only once the group is full: a push in
    // flight when the limit is crossed.
    let spare = random_bytes(10);
    let spare_digest = registry.upload_blob(&repo, &spare).await.expect("spare blob");

    // Each push crosses one threshold: 70 %, 85 %, 95 %, 100 %.
    let c = CONFIG.len();
    let mut digests = Vec::new();
    let mut layers = Vec::new();
    for (i, (total, threshold)) in [(700, 70), (850, 85), (950, 95), (1000, 100)].iter().enumerate()
    {
        let layer_size = if i == 0 { total - c } else { total - [700, 850, 950][i - 1] };
        let layer = random_bytes(layer_size);
        digests.push(push(&registry, &repo, &format!("v{i}"), &layer).await);
        layers.push(layer);
        let g = api.call(Method::GET, &format!("/groups/{group}"), None).await;
        assert_eq!(g["container_registry_storage_usage"], *total, "{g}");
        assert_eq!(g["container_registry_storage_notice"]["threshold"], *threshold, "{g}");
        assert_eq!(g["container_registry_storage_percentage"], json!(*total as f64 / 10.0), "{g}");
        assert_eq!(
            server.logged_storage_notices(&top),
            [70, 85, 95, 100][..=i].to_vec(),
            "one notice per crossing"
        );
    }
    let notice = api.call(Method::GET, &format!("/groups/{group}"), None).await
        ["container_registry_storage_notice"]
        .clone();
    assert!(notice["message"].as_str().unwrap().contains("reached 100 %"), "{notice}");

    // At 100 %: new content is refused with DENIED and a message that says what to do.
    let refused = registry.start_upload(&repo).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.error_code().as_deref(), Some("DENIED"), "{}", refused.body);
    for needle in [format!("group {top}"), "1000 bytes".into(), "delete tags".into()] {
        assert!(refused.body.contains(&needle), "{needle:?} in {}", refused.body);
    }
    // A manifest adding a blob the group does not count yet is refused too.
    let config = sha256_digest(CONFIG);
    let late = manifest_json(&config, c, &spare_digest, spare.len());
    let refused = registry.put_manifest(&repo, "late", &late).await;
    assert_eq!(refused.error_code().as_deref(), Some("DENIED"), "{}", refused.body);
    assert!(refused.body.contains(&format!("group {top}")), "{}", refused.body);

    // Content the group already holds still goes in: a new tag, a new manifest of stored
    // blobs, a monolithic upload of a stored blob.
    let v0 = registry.pull(&repo, "v0").await;
    registry.put_manifest(&repo, "again", v0.body.as_bytes()).await.assert_allowed("retag");
    let remix = manifest_json(&config, c, &sha256_digest(&layers[1]), layers[1].len());
    registry.put_manifest(&repo, "remix", &remix).await.assert_allowed("stored blobs only");
    let layer0 = &layers[0];
    let mono = registry
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(layer0)))
        .header("Content-Type", "application/octet-stream")
        .body(layer0.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(mono.status(), StatusCode::CREATED, "a stored blob uploads again");

    // Pulls and tag deletes work.
    registry.pull(&repo, "v3").await.assert_allowed("pull at 100 %");
    let deleted = registry.delete_tag(&repo, "v3").await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);

    // Deleting the manifest (what GC does once the tag is gone) frees its bytes: below 100 %
    // pushes work again, and crossing 100 % anew is recorded anew.
    assert!(api.repository_id(project, &repo).await > 0);
    let gone = registry.send(Method::DELETE, &format!("/v2/{repo}/manifests/{}", digests[3])).await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{}", gone.body);
    let g = api.call(Method::GET, &format!("/groups/{group}"), None).await;
    assert_eq!(g["container_registry_storage_usage"], 950, "{g}");
    assert_eq!(g["container_registry_storage_notice"]["threshold"], 95, "{g}");
    push(&registry, &repo, "v4", &random_bytes(60)).await;
    assert_eq!(server.logged_storage_notices(&top), vec![70, 85, 95, 100, 100]);

    // No limit: anything goes.
    api.call(
        Method::PUT,
        &format!("/groups/{group}"),
        Some(json!({"container_registry_storage_limit": 0})),
    )
    .await;
    push(&registry, &repo, "v5", &random_bytes(2000)).await;
    let g = api.call(Method::GET, &format!("/groups/{group}"), None).await;
    assert_eq!(g["container_registry_storage_limit"], 0, "{g}");
}
