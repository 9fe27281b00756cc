//! Properties of `/v2` request parsing, over generated request paths: valid ones, valid ones
//! with one mutation (a percent-encoded byte, a doubled or trailing slash, a dot segment, a case
//! change, a look-alike character, a NUL, an overlong UTF-8 sequence), and random strings.
//!
//! 1. Parsing never panics, and a path it accepts renders back to exactly itself: every route
//!    has one spelling, so the name a decision is made for is the name in the path, byte for
//!    byte (handlers read the name only from the decision's proof).
//! 2. Through the real router: after a run of generated pushes, the repositories that exist
//!    are exactly the names of the accepted requests, and every refused request was answered
//!    400/404/405 with an OCI error body, never 5xx.

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use registry::{Registry, Route};
use tower::ServiceExt;

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UPLOAD: &str = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f";

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,6}",
        "[a-z0-9]{1,3}(\\.|_|__|-|--)[a-z0-9]{1,3}",
        Just("blobs".to_string()),
        Just("manifests".to_string()),
        Just("uploads".to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

/// A valid request: (method, path).
fn valid_request() -> impl Strategy<Value = (Method, String)> {
    (name(), 0..9usize, "[A-Za-z0-9_][A-Za-z0-9._-]{0,10}").prop_map(|(name, kind, tag)| match kind
    {
        0 => (Method::GET, format!("/v2/{name}/tags/list")),
        1 => (Method::GET, format!("/v2/{name}/manifests/{tag}")),
        2 => (Method::PUT, format!("/v2/{name}/manifests/{DIGEST}")),
        3 => (Method::HEAD, format!("/v2/{name}/blobs/{DIGEST}")),
        4 => (Method::DELETE, format!("/v2/{name}/blobs/{DIGEST}")),
        5 => (Method::POST, format!("/v2/{name}/blobs/uploads/")),
        6 => (Method::PATCH, format!("/v2/{name}/blobs/uploads/{UPLOAD}")),
        7 => (Method::GET, format!("/v2/{name}/referrers/{DIGEST}")),
        _ => (Method::GET, "/v2/_catalog".to_string()),
    })
}

/// One mutation of `path` at a position chosen by `at` (0..1 scaled to the path's length).
fn mutate(path: &str, kind: usize, at: f64, byte: u8) -> String {
    let body = &path[4..]; // after "/v2/"
    if body.is_empty() {
        return path.to_string();
    }
    let i = ((body.len() - 1) as f64 * at) as usize;
    let (before, after) = body.split_at(i);
    let c = after.chars().next().unwrap_or('a');
    let rest = &after[c.len_utf8()..];
    let mutated = match kind {
        // percent-encode the character at i, upper- or lowercase hex
        0 => format!("{before}%{:02X}{rest}", c as u32 & 0xff),
        1 => format!("{before}%{:02x}{rest}", c as u32 & 0xff),
        // any byte, encoded, inserted
        2 => format!("{before}%{byte:02X}{after}"),
        // a doubled slash, a leading slash, a trailing slash
        3 => format!("{before}/{after}"),
        4 => format!("/{body}"),
        5 => format!("{body}/"),
        // dot segments
        6 => format!("{before}./{after}"),
        7 => format!("{before}x/../{after}"),
        8 => format!("./{body}"),
        // case change
        9 => format!("{before}{}{rest}", c.to_ascii_uppercase()),
        // a Cyrillic look-alike, raw
        10 => format!("{before}\u{430}{rest}"),
        // NUL, encoded
        11 => format!("{before}%00{after}"),
        // overlong UTF-8 for the character (two bytes), encoded
        12 => {
            let b = c as u32 & 0x7f;
            format!("{before}%{:02X}%{:02X}{rest}", 0xC0 | (b >> 6), 0x80 | (b & 0x3f))
        }
        // a slash, encoded, instead of the character
        _ => format!("{before}%2F{rest}"),
    };
    format!("/v2/{mutated}")
}

fn request() -> impl Strategy<Value = (Method, String)> {
    prop_oneof![
        valid_request(),
        (valid_request(), 0..14usize, 0.0..1.0f64, any::<u8>())
            .prop_map(|((m, p), kind, at, byte)| (m, mutate(&p, kind, at, byte))),
        ("[a-zA-Z0-9%./_:-]{0,40}").prop_map(|s| (Method::GET, format!("/v2/{s}"))),
    ]
}

/// The path a parsed route may have been written as.
fn spellings_of(route: &Route) -> Vec<String> {
    let canonical = route.path();
    let mut out = vec![canonical.clone()];
    match route {
        Route::Base => out.push("/v2".into()),
        Route::Repository { op: registry::Operation::StartUpload, .. } => {
            out.push(canonical.trim_end_matches('/').to_string())
        }
        _ => {}
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_path_is_the_one_spelling_of_its_route((method, path) in request()) {
        if let Ok(route) = Route::parse(&method, &path) {
            let spellings = spellings_of(&route);
            prop_assert!(
                spellings.contains(&path),
                "{method} {path:?} was accepted as {route:?}, whose spelling is {spellings:?}"
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A registry on a temporary SQLite database and directory, open to everyone (the decision is
/// not what this test is about: which name the handlers act on is).
async fn registry(dir: &std::path::Path) -> Registry {
    let url = format!("sqlite://{}", dir.join("meta.db").display());
    let store = meta::Store::connect(&url).await.unwrap();
    let blobs = blobstore::BlobStore::filesystem(&dir.join("blobs")).unwrap();
    let service = service::WriteService::new(store.clone(), blobs.clone(), Default::default());
    Registry {
        store,
        blobs,
        service,
        limits: Default::default(),
        gate: auth::Gate::Open,
        pull_through: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn handlers_act_only_on_the_name_that_was_parsed(
        pushes in prop::collection::vec(
            (name(), 0..14usize, 0.0..1.0f64, any::<u8>(), any::<bool>()), 1..40)
    ) {
        runtime().block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let registry = registry(dir.path()).await;
            let app = registry::router(registry.clone());
            let mut accepted = std::collections::BTreeSet::new();
            for (name, kind, at, byte, mutated) in pushes {
                // A monolithic upload of the empty blob: it creates the repository it acts on.
                let plain = format!("/v2/{name}/blobs/uploads/");
                let path = if mutated { mutate(&plain, kind, at, byte) } else { plain };
                let Ok(uri) = format!("{path}?digest={DIGEST}").parse::<axum::http::Uri>() else {
                    continue; // not even an HTTP request target
                };
                let parsed = Route::parse(&Method::POST, uri.path());
                let response = app
                    .clone()
                    .oneshot(Request::post(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                match parsed {
                    Ok(Route::Repository { name, .. }) => {
                        assert_eq!(status, 201, "{path}: {}", String::from_utf8_lossy(&body));
                        accepted.insert(name.to_string());
                    }
                    _ => {
                        assert!(matches!(status, 400 | 404 | 405), "{path}: {status}");
                        let v: serde_json::Value = serde_json::from_slice(&body)
                            .unwrap_or_else(|e| panic!("{path}: {status} not JSON ({e})"));
                        assert!(v["errors"][0]["code"].is_string(), "{path}: {v}");
                    }
                }
            }
            let stored: std::collections::BTreeSet<String> = registry
                .store
                .list_repositories(None, 10_000)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(stored, accepted, "repositories created are exactly the accepted names");
        });
    }
}
