//! Raw-HTTP tests of tag listing and the catalog: lexical order, `n`/`last` pagination,
//! `Link` headers and the edges (`n=0`, `last` past the end, unknown repository).

mod common;

use common::*;
use e2e::{backend_tests, unique_repo, MetaBackend};
use serde_json::Value;

backend_tests!(
    tags_in_lexical_order,
    tags_pagination_follows_link,
    tags_pagination_edges,
    tags_of_unknown_repository,
    catalog_pagination,
);

/// Pushes one image to `repo` and tags it with every tag in `tags`.
async fn tag_image(reg: &Registry, repo: &str, tags: &[&str]) {
    let image = reg.push_image(repo, Some(tags[0])).await;
    for tag in &tags[1..] {
        reg.push_manifest(repo, tag, OCI_MANIFEST, &image.manifest).await;
    }
}

async fn tags_in_lexical_order(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("lexical");
    let pushed = ["v2", "latest", "c10", "1.0", "_x", "c2", "b", "c1", "a-1", "a.1", "a_1"];
    tag_image(&reg, &repo, &pushed).await;
    let mut expected: Vec<String> = pushed.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let (tags, link) = reg.tags(&repo, "").await;
    assert_eq!(tags, expected);
    assert!(link.is_none(), "a complete list has no Link: {link:?}");

    // n larger than the number of tags: everything, no Link.
    let (tags, link) = reg.tags(&repo, "n=100").await;
    assert_eq!(tags, expected);
    assert!(link.is_none(), "a complete list has no Link: {link:?}");
}

async fn tags_pagination_follows_link(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("pages");
    let all: Vec<String> = (1..=7).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = all.iter().rev().map(String::as_str).collect();
    tag_image(&reg, &repo, &refs).await;

    // First page by hand.
    let (page, link) = reg.tags(&repo, "n=3").await;
    assert_eq!(page, all[..3].to_vec());
    let link = link.expect("a partial page has a Link header");
    let next = link_next(&link);
    assert!(next.starts_with(&format!("/v2/{repo}/tags/list?")), "Link target {next}");
    assert_eq!(query_param(&next, "n").as_deref(), Some("3"), "Link keeps n: {next}");
    assert_eq!(query_param(&next, "last").as_deref(), Some("t03"), "Link names last: {next}");

    // Follow the Links to the end.
    let mut seen = page;
    let mut next = Some(next);
    let mut pages = 1;
    while let Some(path) = next.take() {
        let resp = reg.get(&path).await;
        assert_status(&resp, 200);
        let link = header(&resp, "link");
        let v: Value = resp.json().await.unwrap();
        let page = string_list(&v["tags"]);
        let remaining = all.len() - seen.len();
        assert_eq!(page.len(), remaining.min(3), "page {pages} respects n=3: {page:?}");
        seen.extend(page);
        next = link.map(|l| link_next(&l));
        pages += 1;
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, all, "pages together list every tag once, in order");

    // `last` on its own, and `last` with `n`.
    let (page, _) = reg.tags(&repo, "last=t05").await;
    assert_eq!(page, all[5..].to_vec());
    let (page, link) = reg.tags(&repo, "n=2&last=t02").await;
    assert_eq!(page, all[2..4].to_vec());
    assert!(link.is_some(), "more tags follow t04");
    // `last` need not be an existing tag.
    let (page, _) = reg.tags(&repo, "n=2&last=t025").await;
    assert_eq!(page, all[2..4].to_vec());
}

async fn tags_pagination_edges(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("edges");
    tag_image(&reg, &repo, &["a", "b", "c"]).await;

    let (page, link) = reg.tags(&repo, "n=0").await;
    assert!(page.is_empty(), "n=0 returns an empty list, got {page:?}");
    assert!(link.is_none(), "n=0 has no Link header: {link:?}");

    let (page, link) = reg.tags(&repo, "last=zzz").await;
    assert!(page.is_empty(), "last past the end returns an empty list, got {page:?}");
    assert!(link.is_none(), "{link:?}");
    let (page, link) = reg.tags(&repo, "n=5&last=c").await;
    assert!(page.is_empty(), "last = final tag returns an empty list, got {page:?}");
    assert!(link.is_none(), "{link:?}");

    // n exactly the number of tags.
    let (page, _) = reg.tags(&repo, "n=3").await;
    assert_eq!(page, vec!["a", "b", "c"]);
    let (page, link) = reg.tags(&repo, "n=1").await;
    assert_eq!(page, vec!["a"]);
    assert!(link.is_some(), "a partial page has a Link");

    // A nonsense n is a client error, never a server error.
    for bad in ["n=-1", "n=abc"] {
        let resp = reg.get(&format!("/v2/{repo}/tags/list?{bad}")).await;
        let status = resp.status().as_u16();
        assert!(status == 200 || status == 400, "tags/list?{bad}: {status}");
    }
}

async fn tags_of_unknown_repository(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let repo = unique_repo("nothing-here");
    let resp = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_oci_error(resp, &[404], &["NAME_UNKNOWN"]).await;
}

async fn catalog_pagination(backend: MetaBackend) {
    let reg = Registry::start(backend);
    let prefix = unique_repo("catalog");
    let ours: Vec<String> = (0..5).map(|i| format!("{prefix}/r{i}")).collect();
    for repo in ours.iter().rev() {
        reg.push_image(repo, Some("latest")).await;
    }

    // The whole catalog in one go.
    let resp = reg.get("/v2/_catalog").await;
    assert_status(&resp, 200);
    let v: Value = resp.json().await.unwrap();
    let everything = string_list(&v["repositories"]);
    for repo in &ours {
        assert_eq!(everything.iter().filter(|r| *r == repo).count(), 1, "{repo} listed once");
    }

    // Page through with n=2, following Links.
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some("/v2/_catalog?n=2".to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let resp = reg.get(&path).await;
        assert_status(&resp, 200);
        let link = header(&resp, "link");
        let v: Value = resp.json().await.unwrap();
        let page = string_list(&v["repositories"]);
        assert!(page.len() <= 2, "catalog page respects n=2: {page:?}");
        if let Some(link) = &link {
            assert_eq!(page.len(), 2, "a page with a Link is full: {page:?}");
            let target = link_next(link);
            assert!(target.starts_with("/v2/_catalog?"), "catalog Link target {target}");
            assert_eq!(query_param(&target, "n").as_deref(), Some("2"), "Link keeps n: {target}");
            assert_eq!(
                query_param(&target, "last").as_ref(),
                page.last(),
                "Link names last: {target}"
            );
        }
        seen.extend(page);
        next = link.map(|l| link_next(&l));
        pages += 1;
        assert!(pages < 10_000, "catalog pagination does not end");
    }
    for pair in seen.windows(2) {
        assert!(pair[0] < pair[1], "catalog pages are in order without repeats: {pair:?}");
    }
    for repo in &ours {
        assert_eq!(
            seen.iter().filter(|r| *r == repo).count(),
            1,
            "{repo} appears exactly once across pages"
        );
    }

    // `last` continues right after the named repository.
    let resp = reg.get(&format!("/v2/_catalog?n=2&last={}", ours[1])).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(string_list(&v["repositories"]), ours[2..4].to_vec());

    // Past the end: empty, no Link.
    let resp = reg.get("/v2/_catalog?n=10&last=zzzzzzzz").await;
    assert_status(&resp, 200);
    assert!(header(&resp, "link").is_none());
    let v: Value = resp.json().await.unwrap();
    assert!(string_list(&v["repositories"]).is_empty(), "{v}");

    // n=0: empty, no Link.
    let resp = reg.get("/v2/_catalog?n=0").await;
    assert_status(&resp, 200);
    assert!(header(&resp, "link").is_none(), "n=0 has no Link");
    let v: Value = resp.json().await.unwrap();
    assert!(string_list(&v["repositories"]).is_empty(), "n=0 lists nothing: {v}");
}
