//! Listings: `GET /v2/_catalog`, `GET /v2/<name>/tags/list`, `GET /v2/<name>/referrers/<digest>`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oci::{media_type, ErrorCode, MediaType, ParsedManifest, RepositoryName, Tag};

use auth::access::{CatalogAccess, RepositoryAccess};
use oci::Digest;

use crate::error::{RegistryError, Result};
use crate::{Query, Registry};

/// Page size from `?n=`. No `n` means "everything" (up to the cap).
fn page_size(registry: &Registry, query: &Query) -> Result<i64> {
    let cap = registry.limits.max_page;
    match query.get("n") {
        None | Some("") => Ok(cap),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n.min(cap)),
            _ => Err(RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={} is not a page size; use a number from 0 to {cap}", oci::preview(n)),
            )),
        },
    }
}

/// The query parameter `name` parsed as a `T` (a tag, a repository name, a media type), or
/// `None` when absent or empty. Anything else is refused before it reaches a query.
fn query_value<T>(query: &Query, name: &'static str, what: &str) -> Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e: T::Err| {
            RegistryError::new(
                ErrorCode::InvalidQueryParameterValue,
                format!("query parameter {name} must be {what}: {e}"),
            )
            .with_detail(serde_json::json!({ "parameter": name }))
        }),
    }
}

/// A JSON response with a `Link` to the next page when `items` filled the page and more exist.
fn paged_response(body: serde_json::Value, next: Option<String>) -> Response {
    let mut response =
        (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response();
    if let Some(next) = next {
        if let Ok(v) = format!("<{next}>; rel=\"next\"").parse() {
            response.headers_mut().insert("link", v);
        }
    }
    response
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) async fn catalog(
    registry: &Registry,
    query: &Query,
    access: &CatalogAccess,
) -> Result<Response> {
    let n = page_size(registry, query)?;
    let last: Option<RepositoryName> = query_value(query, "last", "a repository name")?;
    let mut names = if n == 0 {
        Vec::new()
    } else if access.sees_everything() {
        registry.store.list_repositories(last.as_ref(), n + 1).await?
    } else {
        access.readable_repositories(last.as_ref(), n + 1).await?
    };
    let next = if names.len() as i64 > n {
        names.truncate(n as usize);
        names.last().map(|l| format!("/v2/_catalog?n={n}&last={}", encode(l)))
    } else {
        None
    };
    Ok(paged_response(serde_json::json!({ "repositories": names }), next))
}

pub(crate) async fn tags(
    registry: &Registry,
    access: &RepositoryAccess,
    query: &Query,
) -> Result<Response> {
    let name = access.name();
    let n = page_size(registry, query)?;
    let last: Option<Tag> = query_value(query, "last", "a tag")?;
    let fetch = if n == 0 { 0 } else { n + 1 };
    let mut tags = registry
        .store
        .list_tags(name, last.as_ref(), fetch)
        .await?
        .ok_or_else(|| RegistryError::name_unknown(name))?;
    let next = if tags.len() as i64 > n {
        tags.truncate(n as usize);
        tags.last().map(|l| format!("/v2/{name}/tags/list?n={n}&last={}", encode(l)))
    } else {
        None
    };
    Ok(paged_response(serde_json::json!({ "name": name.as_str(), "tags": tags }), next))
}

/// The referrers of a manifest as an OCI index. Besides manifests whose `subject` names it,
/// entries of the referrers tag schema's index (tag `<alg>-<hex>`, kept by clients for
/// registries without this API) are included, so both ways of finding referrers agree.
pub(crate) async fn referrers(
    registry: &Registry,
    access: &RepositoryAccess,
    subject: &Digest,
    query: &Query,
) -> Result<Response> {
    let name = access.name();
    let artifact_type: Option<MediaType> =
        query_value(query, "artifactType", "a media type such as application/vnd.example+json")?;
    let artifact_type = artifact_type.as_ref();
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in registry.store.referrers(name, subject, artifact_type).await? {
        seen.insert(r.digest.clone());
        let mut entry = serde_json::json!({
            "mediaType": r.media_type,
            "digest": r.digest,
            "size": r.size,
        });
        if let Some(at) = r.artifact_type {
            entry["artifactType"] = at.into();
        }
        if let Some(annotations) =
            r.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
        {
            entry["annotations"] = annotations;
        }
        manifests.push(entry);
    }
    let fallback_tag: Option<Tag> =
        format!("{}-{}", subject.algorithm().as_str(), subject.hex()).parse().ok();
    if let Some(tag) = fallback_tag {
        if let Some(index) = registry.store.manifest_by_tag(name, &tag).await? {
            if let Ok(parsed) = ParsedManifest::parse(Some(&index.media_type), &index.payload) {
                let entries: Vec<_> = parsed
                    .manifests
                    .into_iter()
                    .filter(|d| seen.insert(d.digest.to_string()))
                    .collect();
                // An entry without an artifactType (written by a client that broke the spec's
                // rule) gets the one the manifest it describes is listed under, when this
                // repository holds it: both ways of finding referrers agree.
                let undeclared: Vec<_> = entries
                    .iter()
                    .filter(|d| d.artifact_type.is_none())
                    .map(|d| d.digest.clone())
                    .collect();
                let stored = if undeclared.is_empty() {
                    Default::default()
                } else {
                    registry.store.artifact_types(name, &undeclared).await?
                };
                for d in entries {
                    let effective = d
                        .artifact_type
                        .clone()
                        .or_else(|| stored.get(d.digest.as_str()).cloned().flatten());
                    if artifact_type.is_some_and(|t| effective.as_deref() != Some(t.as_str())) {
                        continue;
                    }
                    let mut entry = serde_json::json!({
                        "mediaType": d.media_type,
                        "digest": d.digest.as_str(),
                        "size": d.size,
                    });
                    if let Some(at) = effective {
                        entry["artifactType"] = at.into();
                    }
                    if let Some(a) = d.annotations {
                        entry["annotations"] = a;
                    }
                    manifests.push(entry);
                }
            }
        }
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response =
        (StatusCode::OK, [("content-type", media_type::OCI_INDEX)], body.to_string())
            .into_response();
    if artifact_type.is_some() {
        response
            .headers_mut()
            .insert("oci-filters-applied", "artifactType".parse().expect("static"));
    }
    Ok(response)
}
