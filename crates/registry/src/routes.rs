//! Every route of the `/v2/` API, in the order of the spec's endpoint table.
//!
//! | endpoint | method | handler |
//! |---|---|---|
//! | `/v2/` | GET, HEAD | [`base`] |
//! | `/v2/<name>/blobs/<digest>` | GET, HEAD, DELETE | [`blobs`] |
//! | `/v2/<name>/blobs/uploads/` | POST | [`uploads::start`] |
//! | `/v2/<name>/blobs/uploads/<id>` | GET, PATCH, PUT, DELETE | [`uploads`] |
//! | `/v2/<name>/manifests/<reference>` | GET, HEAD, PUT, DELETE | [`manifests`] |
//! | `/v2/<name>/tags/list` | GET | [`listing::tags`] |
//! | `/v2/<name>/referrers/<digest>` | GET | [`listing::referrers`] |
//! | `/v2/_catalog` | GET | [`listing::catalog`] |
//!
//! Repository names may have any number of `/`-separated components, so the router cannot
//! match them with path patterns; one catch-all takes every `/v2/…` request and
//! [`Route::parse`] reads the raw path from its end, where the endpoint's fixed segments are.
//!
//! Each request is parsed exactly once, into typed values, before anything else happens. The
//! raw path is never decoded: every name, tag, digest and upload id has exactly one spelling,
//! so a path with percent-encoded bytes, empty or dot segments, or a name outside the OCI
//! grammar is refused (400 `NAME_INVALID`, 404 for what is no endpoint at all) instead of being
//! read another way somewhere else. The parsed name then goes to the access decision
//! ([`auth::Gate`]), which hands back a proof carrying it; handlers take that proof and read
//! the name from it, so they act on exactly the name that was authorized, and cannot run
//! without a decision.

use auth::access::{Action, Refusal};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use oci::{Digest, ErrorCode, Reference, RepositoryName};

use crate::error::{RegistryError, Result};
use crate::{blobs, listing, manifests, proxied, uploads, Query, Registry};

pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
        .with_state(registry)
}

/// A `/v2/…` request, parsed: what it addresses and what it does there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Repository { name: RepositoryName, op: Operation },
}

/// What a request does to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    GetBlob { digest: Digest, head: bool },
    DeleteBlob { digest: Digest },
    StartUpload,
    UploadStatus { id: UploadId },
    PatchUpload { id: UploadId },
    FinishUpload { id: UploadId },
    CancelUpload { id: UploadId },
    GetManifest { reference: Reference, head: bool },
    PutManifest { reference: Reference },
    DeleteManifest { reference: Reference },
    Tags,
    Referrers { subject: Digest },
}

impl Operation {
    /// The access the operation needs.
    pub fn action(&self) -> Action {
        use Operation::*;
        match self {
            GetBlob { .. } | GetManifest { .. } | Tags | Referrers { .. } => Action::Pull,
            DeleteBlob { .. } | DeleteManifest { .. } => Action::Delete,
            StartUpload
            | UploadStatus { .. }
            | PatchUpload { .. }
            | FinishUpload { .. }
            | CancelUpload { .. }
            | PutManifest { .. } => Action::Push,
        }
    }

    /// The upload session the operation continues, if any.
    pub fn upload(&self) -> Option<&UploadId> {
        use Operation::*;
        match self {
            UploadStatus { id }
            | PatchUpload { id }
            | FinishUpload { id }
            | CancelUpload { id } => Some(id),
            _ => None,
        }
    }
}

/// An upload session id: a UUID in its canonical form (lowercase, hyphenated), the only
/// spelling the registry hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id for a new session.
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(s: &str) -> Option<UploadId> {
        let canonical = uuid::Uuid::parse_str(s).ok()?.hyphenated().to_string();
        (canonical == s).then_some(UploadId(canonical))
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn name_invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::NameInvalid, message)
}

fn not_an_endpoint(path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameInvalid,
        format!("{path} is not an endpoint of the registry API; check the repository name"),
    )
    .with_status(StatusCode::NOT_FOUND)
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} is not supported on this endpoint"),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

pub(crate) fn parse_digest(digest: &str) -> Result<Digest> {
    digest
        .parse()
        .map_err(|e: oci::DigestError| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn parse_reference(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| match e {
        oci::ReferenceError::Digest(e) => {
            RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
        }
        oci::ReferenceError::Tag(e) => {
            RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
                .with_detail(serde_json::json!({"tag": oci::preview(reference)}))
        }
    })
}

pub(crate) fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!(
            "upload {} is not in progress here: it finished, was cancelled or expired; start a new one",
            oci::preview(id)
        ),
    )
}

impl Route {
    /// Parses a request's method and raw (undecoded) path, `/v2` included.
    pub fn parse(method: &Method, path: &str) -> Result<Route> {
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => {
                return match *method {
                    Method::GET | Method::HEAD => Ok(Route::Base),
                    _ => Err(method_not_allowed(method)),
                }
            }
            Some(rest) => rest.strip_prefix('/').ok_or_else(|| not_an_endpoint(path))?,
            None => return Err(not_an_endpoint(path)),
        };
        if rest.contains('%') {
            return Err(name_invalid(
                "the path contains percent-encoded bytes; registry paths never need them: \
                 repository names, tags and digests are plain ASCII",
            ));
        }
        if rest == "_catalog" {
            return match *method {
                Method::GET => Ok(Route::Catalog),
                _ => Err(method_not_allowed(method)),
            };
        }
        // `<name>/blobs/uploads/` (the spec's spelling) starts an upload: its empty last
        // segment is the only one allowed.
        let upload_start = rest.strip_suffix("/blobs/uploads/");
        let segments: Vec<&str> = match upload_start {
            Some(name) => name.split('/').chain(["blobs", "uploads"]).collect(),
            None => rest.split('/').collect(),
        };
        if let Some(bad) = segments.iter().find(|s| s.is_empty() || **s == "." || **s == "..") {
            let what = if bad.is_empty() { "an empty segment" } else { "a dot segment" };
            return Err(name_invalid(format!(
                "the path has {what}; repository names are lowercase components separated by single '/'"
            )));
        }
        let n = segments.len();
        let tail = |k: usize| segments.get(n.wrapping_sub(k)).copied().unwrap_or("");
        // (name components, endpoint) from the end; the precedence keeps names that contain
        // `blobs` or `manifests` components routable.
        let (name_len, kind) = if n >= 3 && tail(2) == "blobs" && tail(1) == "uploads" {
            (n - 2, "upload-start")
        } else if n >= 3 && tail(2) == "tags" && tail(1) == "list" {
            (n - 2, "tags")
        } else if n >= 4 && tail(3) == "blobs" && tail(2) == "uploads" {
            (n - 3, "upload")
        } else if n >= 3 && matches!(tail(2), "blobs" | "manifests" | "referrers") {
            (n - 2, tail(2))
        } else {
            return Err(not_an_endpoint(path));
        };
        let name: RepositoryName = segments[..name_len]
            .join("/")
            .parse()
            .map_err(|e: oci::NameError| name_invalid(e.to_string()))?;
        let last = tail(1);
        let head = *method == Method::HEAD;
        let op = match (kind, method.clone()) {
            ("blobs", Method::GET | Method::HEAD) => {
                Operation::GetBlob { digest: parse_digest(last)?, head }
            }
            ("blobs", Method::DELETE) => Operation::DeleteBlob { digest: parse_digest(last)? },
            ("upload-start", Method::POST) => Operation::StartUpload,
            ("upload", m) => {
                let id = UploadId::parse(last).ok_or_else(|| upload_unknown(last));
                match m {
                    Method::GET => Operation::UploadStatus { id: id? },
                    Method::PATCH => Operation::PatchUpload { id: id? },
                    Method::PUT => Operation::FinishUpload { id: id? },
                    Method::DELETE => Operation::CancelUpload { id: id? },
                    _ => return Err(method_not_allowed(method)),
                }
            }
            ("manifests", Method::GET | Method::HEAD) => {
                Operation::GetManifest { reference: parse_reference(last)?, head }
            }
            ("manifests", Method::PUT) => {
                Operation::PutManifest { reference: parse_reference(last)? }
            }
            ("manifests", Method::DELETE) => {
                Operation::DeleteManifest { reference: parse_reference(last)? }
            }
            ("tags", Method::GET) => Operation::Tags,
            ("referrers", Method::GET) => Operation::Referrers { subject: parse_digest(last)? },
            _ => return Err(method_not_allowed(method)),
        };
        Ok(Route::Repository { name, op })
    }

    /// The endpoint as a path template (`/v2/{name}/blobs/{digest}`): a label for metrics
    /// that does not grow with names, digests and upload ids.
    pub fn template(&self) -> &'static str {
        use Operation::*;
        match self {
            Route::Base => "/v2/",
            Route::Catalog => "/v2/_catalog",
            Route::Repository { op, .. } => match op {
                GetBlob { .. } | DeleteBlob { .. } => "/v2/{name}/blobs/{digest}",
                StartUpload => "/v2/{name}/blobs/uploads/",
                UploadStatus { .. }
                | PatchUpload { .. }
                | FinishUpload { .. }
                | CancelUpload { .. } => "/v2/{name}/blobs/uploads/{id}",
                GetManifest { .. } | PutManifest { .. } | DeleteManifest { .. } => {
                    "/v2/{name}/manifests/{reference}"
                }
                Tags => "/v2/{name}/tags/list",
                Referrers { .. } => "/v2/{name}/referrers/{digest}",
            },
        }
    }

    /// The path this route was parsed from: parsing accepts exactly one spelling per route.
    pub fn path(&self) -> String {
        use Operation::*;
        let (name, op) = match self {
            Route::Base => return "/v2/".into(),
            Route::Catalog => return "/v2/_catalog".into(),
            Route::Repository { name, op } => (name, op),
        };
        let tail = match op {
            GetBlob { digest, .. } | DeleteBlob { digest } => format!("blobs/{digest}"),
            StartUpload => "blobs/uploads/".into(),
            UploadStatus { id }
            | PatchUpload { id }
            | FinishUpload { id }
            | CancelUpload { id } => {
                format!("blobs/uploads/{id}")
            }
            GetManifest { reference, .. }
            | PutManifest { reference }
            | DeleteManifest { reference } => format!("manifests/{reference}"),
            Tags => "tags/list".into(),
            Referrers { subject } => format!("referrers/{subject}"),
        };
        format!("/v2/{name}/{tail}")
    }
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A refused request: 401 with the challenge that starts the token flow.
fn refused(registry: &Registry, refusal: Refusal) -> RegistryError {
    let challenge = registry.gate.challenge(&refusal);
    let error = match refusal {
        Refusal::Failed(e) => return RegistryError::from(e),
        Refusal::Unauthenticated { .. } => {
            RegistryError::new(ErrorCode::Unauthorized, "authentication required")
        }
        // Worded the same whether or not a project (or group) exists, so private ones stay
        // invisible.
        Refusal::Denied { scope }
            if scope.name.parse::<RepositoryName>().is_ok_and(|n| n.dependency_proxy().is_some()) =>
        {
            RegistryError::new(
                ErrorCode::Denied,
                "requested access to the resource is denied: a group's dependency proxy serves \
                 pulls only, to guests of the group and above, its deploy tokens and CI jobs \
                 (anyone for a public group)",
            )
        }
        Refusal::Denied { .. } => RegistryError::new(
            ErrorCode::Denied,
            "requested access to the resource is denied: images live at <project path>[/up to 3 more levels] \
             of a project you have access to (pull: reporter, push: developer, delete: maintainer)",
        ),
        Refusal::NoProject { message, .. } => RegistryError::new(ErrorCode::Denied, message),
    };
    let error = error.with_status(StatusCode::UNAUTHORIZED);
    match challenge {
        Some(value) => error.with_header("www-authenticate", value),
        None => error,
    }
}

/// The endpoint a `/v2` response answered, as [`Route::template`]; set on every response of a
/// request that parsed, for the HTTP layer's metrics.
#[derive(Clone, Copy, Debug)]
pub struct RouteTemplate(pub &'static str);

/// The one handler of every `/v2` request: parse, decide, then run the operation.
async fn dispatch(State(registry): State<Registry>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = match Route::parse(&parts.method, parts.uri.path()) {
        Ok(route) => route,
        Err(error) => return error.into_response(),
    };
    let template = RouteTemplate(route.template());
    let mut response = match run(&registry, route, parts, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(template);
    response
}

/// Counts upload requests in progress on this instance (`stowage_uploads_in_progress`).
struct UploadInProgress;

impl UploadInProgress {
    fn start() -> UploadInProgress {
        metrics::gauge!("stowage_uploads_in_progress").increment(1.0);
        UploadInProgress
    }
}

impl Drop for UploadInProgress {
    fn drop(&mut self) {
        metrics::gauge!("stowage_uploads_in_progress").decrement(1.0);
    }
}

async fn run(
    registry: &Registry,
    route: Route,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response> {
    let token = bearer(&parts.headers);
    let r = registry;
    let (name, op) = match route {
        Route::Base => {
            // Clients and load balancers read `/v2/` as "is the registry up": without its
            // database it is not.
            r.store.ping().await?;
            r.gate.base(token).map_err(|e| refused(r, e))?;
            return Ok(base());
        }
        Route::Catalog => {
            let access = r.gate.catalog(token).await.map_err(|e| refused(r, e))?;
            let query = Query::parse(parts.uri.query());
            return listing::catalog(r, &query, &access).await;
        }
        Route::Repository { name, op } => (name, op),
    };
    let upload = op.upload().map(UploadId::as_str);
    let access =
        r.gate.repository(name, op.action(), upload, token).await.map_err(|e| refused(r, e))?;
    auth::web::note_actor(&parts.extensions, access.actor());
    let ctx = service::RequestContext {
        actor: access.actor().clone(),
        origin: auth::web::request_origin(&parts.method, &parts.headers, &parts.extensions),
    };
    let query = Query::parse(parts.uri.query());
    let headers = &parts.headers;
    use Operation::*;
    match op {
        GetBlob { digest, head } => match proxied::pull_through(r, &access) {
            Some(proxy) => proxied::blob(r, proxy, &access, &digest, headers, head).await,
            None => blobs::get(r, &access, &digest, headers, head).await,
        },
        DeleteBlob { digest } => blobs::delete(r, &access, &digest).await,
        StartUpload => {
            let _uploading = UploadInProgress::start();
            uploads::start(r, &access, &query, headers, body).await
        }
        UploadStatus { id } => uploads::status(r, &access, &id).await,
        PatchUpload { id } => {
            let _uploading = UploadInProgress::start();
            uploads::patch(r, &access, &id, headers, body).await
        }
        FinishUpload { id } => {
            let _uploading = UploadInProgress::start();
            uploads::finish(r, &access, &id, &query, headers, body).await
        }
        CancelUpload { id } => uploads::cancel(r, &access, &id).await,
        GetManifest { reference, head } => match proxied::pull_through(r, &access) {
            Some(proxy) => proxied::manifest(proxy, &access, &reference, headers, head).await,
            None => manifests::get(r, &access, &reference, headers, head, &ctx).await,
        },
        PutManifest { reference } => {
            manifests::put(r, &access, &reference, &query, headers, body, &ctx).await
        }
        DeleteManifest { reference } => manifests::delete(r, &access, &reference, &ctx).await,
        Tags => listing::tags(r, &access, &query).await,
        Referrers { subject } => listing::referrers(r, &access, &subject, &query).await,
    }
}

/// `GET /v2/`: tells clients this is a registry speaking the v2 API.
fn base() -> Response {
    (StatusCode::OK, [("content-type", "application/json")], "{}").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(method: Method, path: &str) -> Result<Route> {
        Route::parse(&method, path)
    }

    fn repo(name: &str, op: Operation) -> Route {
        Route::Repository { name: name.parse().unwrap(), op }
    }

    #[test]
    fn parses_paths_from_their_end() {
        let digest: Digest = D.parse().unwrap();
        assert_eq!(parse(Method::GET, "/v2/").unwrap(), Route::Base);
        assert_eq!(parse(Method::GET, "/v2").unwrap(), Route::Base);
        assert_eq!(parse(Method::GET, "/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse(Method::GET, "/v2/a/b/c/d/e/f/g/h/i/manifests/latest").unwrap(),
            repo(
                "a/b/c/d/e/f/g/h/i",
                Operation::GetManifest {
                    reference: Reference::parse("latest").unwrap(),
                    head: false
                }
            )
        );
        assert_eq!(
            parse(Method::PUT, "/v2/x/blobs/manifests/v1").unwrap(),
            repo("x/blobs", Operation::PutManifest { reference: Reference::parse("v1").unwrap() })
        );
        assert_eq!(
            parse(Method::POST, "/v2/x/blobs/uploads/").unwrap(),
            repo("x", Operation::StartUpload)
        );
        assert_eq!(
            parse(Method::POST, "/v2/x/blobs/uploads").unwrap(),
            repo("x", Operation::StartUpload)
        );
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            parse(Method::PATCH, &format!("/v2/x/y/blobs/uploads/{id}")).unwrap(),
            repo("x/y", Operation::PatchUpload { id: UploadId(id.clone()) })
        );
        assert_eq!(
            parse(Method::HEAD, &format!("/v2/x/blobs/{D}")).unwrap(),
            repo("x", Operation::GetBlob { digest: digest.clone(), head: true })
        );
        assert_eq!(parse(Method::GET, "/v2/x/tags/list").unwrap(), repo("x", Operation::Tags));
        assert_eq!(
            parse(Method::GET, &format!("/v2/x/referrers/{D}")).unwrap(),
            repo("x", Operation::Referrers { subject: digest })
        );
    }

    #[test]
    fn other_spellings_are_refused() {
        let id = uuid::Uuid::new_v4().to_string();
        for (method, path, status, code) in [
            (Method::GET, "/v2/acme/%61pp/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme%2Fapp/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/_c%61talog", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme//app/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2//acme/app/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/./app/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/x/../app/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/app/tags/list/", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/app/manifests/", 400, "NAME_INVALID"),
            (Method::GET, "/v2/Acme/app/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/аpp/tags/list", 400, "NAME_INVALID"),
            (Method::GET, "/v2/acme/app/other/x", 404, "NAME_INVALID"),
            (Method::GET, "/v2/acme", 404, "NAME_INVALID"),
            (Method::GET, "/v2x/acme/app/tags/list", 404, "NAME_INVALID"),
            (Method::POST, "/v2/acme/app/tags/list", 405, "UNSUPPORTED"),
            (Method::GET, "/v2/acme/app/blobs/sha256:00", 400, "DIGEST_INVALID"),
            (
                Method::GET,
                &format!("/v2/x/blobs/uploads/{}", id.to_uppercase()),
                404,
                "BLOB_UPLOAD_UNKNOWN",
            ),
            (Method::GET, &format!("/v2/x/blobs/uploads/{{{id}}}"), 404, "BLOB_UPLOAD_UNKNOWN"),
        ] {
            let e = parse(method.clone(), path).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code.as_str()), (status, code), "{method} {path}");
        }
    }

    #[test]
    fn rendering_gives_back_the_parsed_path() {
        let id = uuid::Uuid::new_v4().to_string();
        for (method, path) in [
            (Method::GET, "/v2/".to_string()),
            (Method::GET, "/v2/_catalog".to_string()),
            (Method::GET, "/v2/a/b-c/tags/list".to_string()),
            (Method::POST, "/v2/a/blobs/uploads/".to_string()),
            (Method::PUT, format!("/v2/a/blobs/uploads/{id}")),
            (Method::DELETE, format!("/v2/a/blobs/{D}")),
            (Method::GET, format!("/v2/a/referrers/{D}")),
            (Method::PUT, "/v2/a/manifests/v1.0".to_string()),
        ] {
            assert_eq!(parse(method, &path).unwrap().path(), path);
        }
    }
}
