//! The client of an upstream registry: the Distribution API's manifest and blob reads, with
//! the token dance (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`, anonymous or with
//! the configured credentials), HTTP basic auth when the upstream asks for it, and Docker
//! Hub's `library/` namespace for official images.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

/// Every manifest type the proxy can serve, asked for in one `Accept`: the upstream then
/// answers with what it has (an index stays an index; clients pick their platform).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest read from an upstream.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// How long a manifest request may take in all.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a token lives when the token service does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Where the upstream is and who the proxy is there.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// `https://registry-1.docker.io` (no trailing slash needed).
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long connecting and each read may take before the upstream counts as down.
    pub timeout: Duration,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 429: the upstream rate-limits us.
    #[error("the upstream registry is rate-limiting this proxy (429)")]
    RateLimited { retry_after: Option<u64> },
    /// Timeouts, connection failures, 5xx, refused credentials, nonsense answers.
    #[error("{0}")]
    Failed(String),
}

impl UpstreamError {
    fn failed(what: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Failed(what.to_string())
    }
}

/// A manifest as the upstream served it.
#[derive(Debug)]
pub struct UpstreamManifest {
    pub content_type: Option<String>,
    pub payload: Bytes,
}

/// The client of one upstream registry. Cheap to share.
pub struct Upstream {
    settings: UpstreamSettings,
    http: reqwest::Client,
    /// Set for upstreams that group owners configure: only public addresses may be reached,
    /// and this names the setting that allows local ones.
    public_only: Option<&'static str>,
    /// Bearer tokens by scope, with when they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic,
}

/// Reads `Bearer realm="…",service="…",scope="…"` (quoted values may hold commas) or `Basic`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get("retry-after")?.to_str().ok()?.trim().parse().ok()
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, reqwest::Error> {
        let http = Self::client_builder(&settings).build()?;
        Ok(Upstream { settings, http, public_only: None, tokens: Mutex::new(HashMap::new()) })
    }

    fn client_builder(settings: &UpstreamSettings) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .user_agent(concat!("stowage-dependency-proxy/", env!("CARGO_PKG_VERSION")))
    }

    /// An upstream that a group owner configured: it, its token service and every redirect
    /// may only be on public addresses (see `service::outbound`); `setting` is the one that
    /// would allow local ones, named in refusals.
    pub fn public_only(
        settings: UpstreamSettings,
        setting: &'static str,
    ) -> Result<Upstream, reqwest::Error> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("too many redirects");
            }
            match Self::refusal(attempt.url(), setting) {
                Some(refusal) => attempt.error(refusal),
                None => attempt.follow(),
            }
        });
        let resolver = service::outbound::PublicAddressesOnly { setting };
        let http = Self::client_builder(&settings)
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(resolver))
            .redirect(policy)
            .build()?;
        let tokens = Mutex::new(HashMap::new());
        Ok(Upstream { settings, http, public_only: Some(setting), tokens })
    }

    /// Why `url` may not be reached by a public-only upstream (an address written in it is
    /// not resolved, so the resolver does not see it).
    fn refusal(url: &url::Url, setting: &str) -> Option<String> {
        let host = url.host()?;
        service::outbound::check_host(&host, false)
            .err()
            .map(|_| format!("{host} {}", service::outbound::local_network_refused(setting)))
    }

    fn guard(&self, url: &str) -> Result<(), UpstreamError> {
        let Some(setting) = self.public_only else { return Ok(()) };
        let url = url::Url::parse(url).map_err(UpstreamError::failed)?;
        match Self::refusal(&url, setting) {
            Some(refusal) => Err(UpstreamError::Failed(refusal)),
            None => Ok(()),
        }
    }

    /// Where the upstream is.
    pub fn base_url(&self) -> &url::Url {
        &self.settings.url
    }

    fn is_docker_hub(&self) -> bool {
        matches!(self.settings.url.host_str(), Some("registry-1.docker.io" | "docker.io"))
    }

    /// The image's name upstream: Docker Hub keeps official images under `library/`.
    pub fn upstream_name(&self, image: &str) -> String {
        if self.is_docker_hub() && !image.contains('/') {
            format!("library/{image}")
        } else {
            image.to_string()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.url.as_str().trim_end_matches('/'))
    }

    fn credentials(&self) -> Option<(&str, &str)> {
        Some((self.settings.username.as_deref()?, self.settings.password.as_deref().unwrap_or("")))
    }

    /// Sends `method path` for repository `name`, answering the upstream's auth challenge
    /// once. Returns the final response, whatever its status.
    async fn send(
        &self,
        method: Method,
        name: &str,
        path: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{name}:pull");
        let cached = {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens.get(&scope).filter(|(_, until)| *until > Instant::now()).map(|(t, _)| t.clone())
        };
        let build = |auth: Option<String>| {
            let mut request = self.http.request(method.clone(), self.url(path));
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            request
        };
        self.guard(&self.url(path))?;
        let first = build(cached.map(|t| format!("Bearer {t}")))
            .send()
            .await
            .map_err(|e| UpstreamError::failed(format!("the upstream registry failed: {e}")))?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let auth = match challenge {
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                let scope = asked.unwrap_or(scope);
                let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                format!("Bearer {token}")
            }
            Some(Challenge::Basic) => match self.credentials() {
                Some((user, password)) => {
                    let request = build(None).basic_auth(user, Some(password));
                    return request.send().await.map_err(|e| {
                        UpstreamError::failed(format!("the upstream registry failed: {e}"))
                    });
                }
                None => return Ok(first),
            },
            None => return Ok(first),
        };
        build(Some(auth))
            .send()
            .await
            .map_err(|e| UpstreamError::failed(format!("the upstream registry failed: {e}")))
    }

    /// A token for `scope` from the upstream's token service (anonymous, or with the
    /// configured credentials), cached for its lifetime.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, UpstreamError> {
        let mut url = url::Url::parse(realm).map_err(|e| {
            UpstreamError::failed(format!("the upstream's token realm {realm:?} is no URL: {e}"))
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        self.guard(url.as_str())?;
        let mut request = self.http.get(url).timeout(MANIFEST_TIMEOUT);
        if let Some((user, password)) = self.credentials() {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| {
            UpstreamError::failed(format!("the upstream's token service failed: {e}"))
        })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::RateLimited {
                retry_after: retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::failed(format!(
                "the upstream's token service refused the proxy's credentials ({status})"
            )));
        }
        let body: TokenResponse = response.json().await.map_err(|e| {
            UpstreamError::failed(format!("the upstream's token service answered nonsense: {e}"))
        })?;
        let token = body.token.or(body.access_token).ok_or_else(|| {
            UpstreamError::failed("the upstream's token service answered without a token")
        })?;
        // Used until shortly before it expires.
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .saturating_sub(Duration::from_secs(10));
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_string(), (token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Maps a response's status: `Ok(None)` for 404, errors for what is not a success.
    fn check(response: reqwest::Response) -> Result<Option<reqwest::Response>, UpstreamError> {
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::TOO_MANY_REQUESTS => {
                Err(UpstreamError::RateLimited { retry_after: retry_after(response.headers()) })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(UpstreamError::failed(
                format!("the upstream registry refuses the proxy access ({status})"),
            )),
            _ => Err(UpstreamError::failed(format!("the upstream registry answered {status}"))),
        }
    }

    /// The digest the upstream serves for `reference` now (`HEAD`, which Docker Hub does not
    /// count against its pull limit). `None`: no such manifest.
    pub async fn manifest_digest(
        &self,
        image: &str,
        reference: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let name = self.upstream_name(image);
        let path = format!("/v2/{name}/manifests/{reference}");
        let response = self
            .send(Method::HEAD, &name, &path, Some(MANIFEST_ACCEPT), Some(MANIFEST_TIMEOUT))
            .await?;
        let Some(response) = Self::check(response)? else { return Ok(None) };
        match response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(digest) => Ok(Some(digest.to_string())),
            None => Err(UpstreamError::failed(
                "the upstream registry answered a manifest HEAD without Docker-Content-Digest",
            )),
        }
    }

    /// The manifest of `reference`. `None`: the upstream has none.
    pub async fn manifest(
        &self,
        image: &str,
        reference: &str,
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        let name = self.upstream_name(image);
        let path = format!("/v2/{name}/manifests/{reference}");
        let response = self
            .send(Method::GET, &name, &path, Some(MANIFEST_ACCEPT), Some(MANIFEST_TIMEOUT))
            .await?;
        let Some(response) = Self::check(response)? else { return Ok(None) };
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        if response.content_length().is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
            return Err(UpstreamError::failed("the upstream's manifest is too large"));
        }
        let mut payload = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            UpstreamError::failed(format!("reading the upstream's manifest failed: {e}"))
        })? {
            if payload.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(UpstreamError::failed("the upstream's manifest is too large"));
            }
            payload.extend_from_slice(&chunk);
        }
        Ok(Some(UpstreamManifest { content_type, payload: payload.into() }))
    }

    /// Starts reading blob `digest`: the response, its body not read yet. `None`: the
    /// upstream has no such blob.
    pub async fn blob(
        &self,
        image: &str,
        digest: &str,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let name = self.upstream_name(image);
        let path = format!("/v2/{name}/blobs/{digest}");
        Self::check(self.send(Method::GET, &name, &path, None, None).await?)
    }
}

/// Entries asked for per page of a catalog or tag list.
const PAGE_SIZE: usize = 1000;
/// Largest catalog page, tag list page or referrers index read from an upstream.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
/// Pages followed at most, against an upstream whose `Link` never ends.
const MAX_PAGES: usize = 100_000;

#[derive(serde::Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The next page of a listing: the `<…>` of `Link: <…>; rel="next"`, as a path with its query
/// (an absolute URL is reduced to its path, so pages never leave the upstream).
fn next_page(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let Some((target, params)) = link.trim().split_once(';') else { continue };
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            if !is_next || target.is_empty() {
                continue;
            }
            if target.starts_with('/') {
                return Some(target.to_string());
            }
            let url = url::Url::parse(target).ok()?;
            return Some(match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            });
        }
    }
    None
}

/// Reads a listing's body, at most [`MAX_LISTING_BYTES`].
async fn read_listing(mut response: reqwest::Response, what: &str) -> Result<Bytes, UpstreamError> {
    if response.content_length().is_some_and(|l| l > MAX_LISTING_BYTES as u64) {
        return Err(UpstreamError::failed(format!("the upstream's {what} is too large")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::failed(format!("reading the upstream's {what} failed: {e}")))?
    {
        if body.len() + chunk.len() > MAX_LISTING_BYTES {
            return Err(UpstreamError::failed(format!("the upstream's {what} is too large")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// Listings for copying whole repositories (`stowage import`, pull mirrors): the catalog, tag
/// lists (both paged with `Link`), and the referrers of a manifest.
impl Upstream {
    /// Every repository name in the upstream's `/v2/_catalog`, page by page. A registry without
    /// a catalog (Docker Hub, or one that refuses it to these credentials) is an error that
    /// says to name the repositories instead.
    pub async fn catalog(&self) -> Result<Vec<String>, UpstreamError> {
        let mut names = Vec::new();
        let mut path = format!("/v2/_catalog?n={PAGE_SIZE}");
        for _ in 0..MAX_PAGES {
            // The challenge names the catalog scope (`registry:catalog:*`); the repository
            // name given here only keys the token cache.
            let response =
                self.send(Method::GET, "_catalog", &path, None, Some(MANIFEST_TIMEOUT)).await?;
            let status = response.status();
            if matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                return Err(UpstreamError::failed(format!(
                    "the upstream registry does not list its repositories (/v2/_catalog answered \
                     {status}); name them with --repository"
                )));
            }
            let Some(response) = Self::check(response)? else { break };
            let next = next_page(response.headers());
            let body = read_listing(response, "catalog").await?;
            let page: CatalogPage = serde_json::from_slice(&body).map_err(|e| {
                UpstreamError::failed(format!("the upstream's catalog is not JSON: {e}"))
            })?;
            names.extend(page.repositories.unwrap_or_default());
            match next {
                Some(next) if next != path => path = next,
                _ => break,
            }
        }
        Ok(names)
    }

    /// Every tag of `image`, page by page. `None`: the upstream has no such repository.
    pub async fn tags(&self, image: &str) -> Result<Option<Vec<String>>, UpstreamError> {
        let name = self.upstream_name(image);
        let mut tags = Vec::new();
        let mut path = format!("/v2/{name}/tags/list?n={PAGE_SIZE}");
        for _ in 0..MAX_PAGES {
            let response =
                self.send(Method::GET, &name, &path, None, Some(MANIFEST_TIMEOUT)).await?;
            let Some(response) = Self::check(response)? else {
                return Ok(if tags.is_empty() { None } else { Some(tags) });
            };
            let next = next_page(response.headers());
            let body = read_listing(response, "tag list").await?;
            let page: TagsPage = serde_json::from_slice(&body).map_err(|e| {
                UpstreamError::failed(format!("the upstream's tag list of {name} is not JSON: {e}"))
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) if next != path => path = next,
                _ => break,
            }
        }
        Ok(Some(tags))
    }

    /// The manifests whose `subject` is `digest` in `image`: from the referrers API, or, where
    /// the upstream has none (it answers 404, as distribution 2.8 does), from the index the
    /// referrers tag schema keeps at tag `<algorithm>-<hex>` (distribution-spec, "Referrers
    /// Tag Schema").
    pub async fn referrers(
        &self,
        image: &str,
        digest: &oci::Digest,
    ) -> Result<Vec<oci::Descriptor>, UpstreamError> {
        let name = self.upstream_name(image);
        let mut path = format!("/v2/{name}/referrers/{digest}");
        let mut found = Vec::new();
        for page in 0..MAX_PAGES {
            let response = self
                .send(
                    Method::GET,
                    &name,
                    &path,
                    Some("application/vnd.oci.image.index.v1+json"),
                    Some(MANIFEST_TIMEOUT),
                )
                .await?;
            let Some(response) = Self::check(response)? else {
                if page > 0 {
                    break;
                }
                let tag = digest.as_str().replacen(':', "-", 1);
                return match self.manifest(image, &tag).await? {
                    Some(index) => Ok(index_entries(index.content_type.as_deref(), &index.payload)),
                    None => Ok(Vec::new()),
                };
            };
            let next = next_page(response.headers());
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
            let body = read_listing(response, "referrers index").await?;
            found.extend(index_entries(content_type.as_deref(), &body));
            match next {
                Some(next) if next != path => path = next,
                _ => break,
            }
        }
        Ok(found)
    }
}

/// The manifests an index lists; nothing for what is no index.
fn index_entries(content_type: Option<&str>, payload: &[u8]) -> Vec<oci::Descriptor> {
    match oci::ParsedManifest::parse(content_type, payload) {
        Ok(parsed) => parsed.manifests,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://x/jwt/auth"#),
            Some(Challenge::Bearer {
                realm: "http://x/jwt/auth".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="registry""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn official_docker_hub_images_live_in_library() {
        let upstream = |url: &str| {
            Upstream::new(UpstreamSettings {
                url: url.parse().unwrap(),
                username: None,
                password: None,
                timeout: Duration::from_secs(1),
            })
            .unwrap()
        };
        let hub = upstream("https://registry-1.docker.io");
        assert_eq!(hub.upstream_name("alpine"), "library/alpine");
        assert_eq!(hub.upstream_name("bitnami/redis"), "bitnami/redis");
        assert_eq!(upstream("http://127.0.0.1:5000").upstream_name("alpine"), "alpine");
    }

    #[test]
    fn follows_next_links_within_the_upstream() {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            r#"</v2/_catalog?last=b&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(next_page(&headers).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        headers.insert(
            reqwest::header::LINK,
            r#"<https://elsewhere.example/v2/x/tags/list?last=v2>; rel=next"#.parse().unwrap(),
        );
        assert_eq!(next_page(&headers).as_deref(), Some("/v2/x/tags/list?last=v2"));
        headers
            .insert(reqwest::header::LINK, r#"</v2/_catalog?last=b>; rel="prev""#.parse().unwrap());
        assert_eq!(next_page(&headers), None);
        assert_eq!(next_page(&HeaderMap::new()), None);
    }

    /// A group's upstream never reaches the local network, whether the address is written in
    /// its URL, a name resolves to it, or a token realm points there.
    #[tokio::test]
    async fn public_only_upstreams_never_reach_local_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for url in [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")] {
            let upstream = Upstream::public_only(
                UpstreamSettings {
                    url: url.parse().unwrap(),
                    username: None,
                    password: None,
                    timeout: Duration::from_secs(2),
                },
                "dependency_proxy.allow_local_requests",
            )
            .unwrap();
            match upstream.manifest("alpine", "3").await {
                Err(UpstreamError::Failed(message)) => assert!(
                    message.contains("dependency_proxy.allow_local_requests"),
                    "{url}: {message}"
                ),
                other => panic!("{url}: {other:?}"),
            }
        }
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a connection reached the local listener");
        let upstream = Upstream::public_only(
            UpstreamSettings {
                url: "https://registry.example".parse().unwrap(),
                username: Some("bot".into()),
                password: Some("pw".into()),
                timeout: Duration::from_secs(2),
            },
            "dependency_proxy.allow_local_requests",
        )
        .unwrap();
        let realm = format!("http://127.0.0.1:{port}/token");
        match upstream.fetch_token(&realm, None, "repository:x:pull").await {
            Err(UpstreamError::Failed(message)) => {
                assert!(message.contains("allow_local_requests"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(listener.accept().is_err(), "the token request reached the local listener");
    }
}
