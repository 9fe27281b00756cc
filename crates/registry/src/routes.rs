//! Every route of the `/v2/` API, in the order of the spec's endpoint table.
//!
//! Repository names may have any number of `/`-separated components, so the router cannot
//! match them with path patterns; instead one catch-all parses the path from its end, where
//! the endpoint's fixed segments are, and hands the rest over as the repository name.
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

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use oci::{ErrorCode, RepositoryName};

use crate::error::{RegistryError, Result};
use crate::{blobs, listing, manifests, uploads, Registry};

pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*path}", any(dispatch))
        .with_state(registry)
}

/// `GET /v2/`: tells clients this is a registry speaking the v2 API.
async fn base() -> Response {
    (StatusCode::OK, [("content-type", "application/json")], "{}").into_response()
}

/// What a `/v2/…` path addresses, before the method is considered.
#[derive(Debug, PartialEq)]
enum Endpoint<'a> {
    Catalog,
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Tags { name: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

fn parse_endpoint(path: &str) -> Option<Endpoint<'_>> {
    if path == "_catalog" {
        return Some(Endpoint::Catalog);
    }
    // `name/blobs/uploads/` and `name/blobs/uploads` start an upload.
    for suffix in ["/blobs/uploads/", "/blobs/uploads"] {
        if let Some(name) = path.strip_suffix(suffix) {
            return Some(Endpoint::UploadStart { name });
        }
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Endpoint::Tags { name });
    }
    let (head, last) = path.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Endpoint::Manifest { name, reference: last }),
        "referrers" => Some(Endpoint::Referrers { name, digest: last }),
        "blobs" => Some(Endpoint::Blob { name, digest: last }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Endpoint::Upload { name, id: last })
        }
        _ => None,
    }
}

/// What a request needs to be allowed, for the authorization layer in front of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `/v2/`: any authenticated caller.
    Base,
    /// `/v2/_catalog`: the `registry:catalog:*` scope (the listing is then filtered).
    Catalog,
    /// An action on one repository; `upload` names the upload session a request continues.
    Repository { name: RepositoryName, action: Action, upload: Option<String> },
    /// Not an endpoint, or a malformed name: the router answers with the error itself.
    None,
}

/// Repository actions, as in token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// The access `method` on `path` (the full request path, `/v2/…`) requires.
pub fn requirement(method: &Method, path: &str) -> Requirement {
    let Some(rest) = path.strip_prefix("/v2") else { return Requirement::None };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Requirement::Base;
    }
    let Some(endpoint) = parse_endpoint(rest) else { return Requirement::None };
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (name, action, upload) = match endpoint {
        Endpoint::Catalog => return Requirement::Catalog,
        Endpoint::Blob { name, .. } | Endpoint::Manifest { name, .. } if read => {
            (name, Action::Pull, None)
        }
        Endpoint::Blob { name, .. } | Endpoint::Manifest { name, .. }
            if *method == Method::DELETE =>
        {
            (name, Action::Delete, None)
        }
        Endpoint::Manifest { name, .. } => (name, Action::Push, None),
        Endpoint::Blob { .. } => return Requirement::None,
        Endpoint::UploadStart { name } => (name, Action::Push, None),
        Endpoint::Upload { name, id } => (name, Action::Push, Some(id.to_string())),
        Endpoint::Tags { name } | Endpoint::Referrers { name, .. } => (name, Action::Pull, None),
    };
    match name.parse() {
        Ok(name) => Requirement::Repository { name, action, upload },
        Err(_) => Requirement::None,
    }
}

pub(crate) fn parse_name(name: &str) -> Result<RepositoryName> {
    name.parse()
        .map_err(|e: oci::NameError| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))
}

/// The catch-all: parses the path and calls the handler for (endpoint, method).
#[allow(clippy::too_many_arguments)] // one axum extractor per request part
async fn dispatch(
    State(registry): State<Registry>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    filter: Option<axum::Extension<crate::ReadFilter>>,
    actor: Option<axum::Extension<crate::Actor>>,
    body: Body,
) -> Result<Response> {
    let actor = actor.map(|axum::Extension(a)| a);
    let query = crate::Query::parse(query.as_deref());
    let filter = filter.map(|axum::Extension(f)| f);
    let filter = filter.as_ref();
    let not_found = || {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!("/v2/{path} is not an endpoint of the registry API; check the repository name"),
        )
        .with_status(StatusCode::NOT_FOUND)
    };
    let endpoint = parse_endpoint(&path).ok_or_else(not_found)?;
    let r = &registry;
    let m = &method;
    match endpoint {
        Endpoint::Catalog if m == Method::GET => listing::catalog(r, &query, filter).await,
        Endpoint::Blob { name, digest } => {
            let name = parse_name(name)?;
            match *m {
                Method::GET => blobs::get(r, &name, digest, &headers, false).await,
                Method::HEAD => blobs::get(r, &name, digest, &headers, true).await,
                Method::DELETE => blobs::delete(r, &name, digest).await,
                _ => Err(method_not_allowed(m)),
            }
        }
        Endpoint::UploadStart { name } if m == Method::POST => {
            uploads::start(r, &parse_name(name)?, &query, &headers, body, filter).await
        }
        Endpoint::Upload { name, id } => {
            let name = parse_name(name)?;
            match *m {
                Method::GET => uploads::status(r, &name, id).await,
                Method::PATCH => uploads::patch(r, &name, id, &headers, body).await,
                Method::PUT => uploads::finish(r, &name, id, &query, &headers, body).await,
                Method::DELETE => uploads::cancel(r, &name, id).await,
                _ => Err(method_not_allowed(m)),
            }
        }
        Endpoint::Manifest { name, reference } => {
            let name = parse_name(name)?;
            match *m {
                Method::GET => manifests::get(r, &name, reference, &headers, false).await,
                Method::HEAD => manifests::get(r, &name, reference, &headers, true).await,
                Method::PUT => {
                    manifests::put(r, &name, reference, &query, &headers, body, actor).await
                }
                Method::DELETE => manifests::delete(r, &name, reference, actor).await,
                _ => Err(method_not_allowed(m)),
            }
        }
        Endpoint::Tags { name } if m == Method::GET => {
            listing::tags(r, &parse_name(name)?, &query).await
        }
        Endpoint::Referrers { name, digest } if m == Method::GET => {
            listing::referrers(r, &parse_name(name)?, digest, &query).await
        }
        _ => Err(method_not_allowed(m)),
    }
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} is not supported on this endpoint"),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_from_their_end() {
        assert_eq!(parse_endpoint("_catalog"), Some(Endpoint::Catalog));
        assert_eq!(
            parse_endpoint("a/b/c/d/e/f/g/h/i/manifests/latest"),
            Some(Endpoint::Manifest { name: "a/b/c/d/e/f/g/h/i", reference: "latest" })
        );
        assert_eq!(
            parse_endpoint("x/blobs/manifests/v1"),
            Some(Endpoint::Manifest { name: "x/blobs", reference: "v1" })
        );
        assert_eq!(parse_endpoint("x/blobs/uploads/"), Some(Endpoint::UploadStart { name: "x" }));
        assert_eq!(
            parse_endpoint("x/y/blobs/uploads/abc"),
            Some(Endpoint::Upload { name: "x/y", id: "abc" })
        );
        assert_eq!(
            parse_endpoint("x/blobs/sha256:00"),
            Some(Endpoint::Blob { name: "x", digest: "sha256:00" })
        );
        assert_eq!(parse_endpoint("x/tags/list"), Some(Endpoint::Tags { name: "x" }));
        assert_eq!(
            parse_endpoint("x/referrers/sha256:00"),
            Some(Endpoint::Referrers { name: "x", digest: "sha256:00" })
        );
        assert_eq!(parse_endpoint("x/other/y"), None);
        assert_eq!(parse_endpoint("x"), None);
    }
}
