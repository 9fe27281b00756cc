//! Shared helpers for the raw-HTTP API tests (`tests/api_*.rs`): a registry handle with a
//! reqwest client, blob/manifest push helpers, manifest JSON builders, OCI error assertions,
//! `Location`/`Link`/`Range` parsing and a raw-TCP request helper for requests reqwest cannot
//! send (un-normalised paths, truncated bodies).
#![allow(dead_code)]

use std::time::Duration;

use e2e::{random_bytes, sha256_digest, MetaBackend, TestServer};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_NONDISTRIBUTABLE_LAYER: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Digest of the two-byte empty JSON object `{}` (the OCI "empty descriptor").
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// An `Accept` header listing every manifest type a modern client understands.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// True when the tests run against an external registry (`STOWAGE_TEST_REGISTRY`).
pub fn external() -> bool {
    std::env::var("STOWAGE_TEST_REGISTRY").is_ok()
}

/// A registry under test plus an HTTP client that does not follow redirects.
pub struct Registry {
    pub server: TestServer,
    pub http: Client,
}

impl Registry {
    pub fn start(backend: MetaBackend) -> Registry {
        Registry::start_with(backend, &[])
    }

    /// Starts a registry with extra `STOWAGE_*` environment variables (settings).
    pub fn start_with(backend: MetaBackend, env: &[(&str, &str)]) -> Registry {
        Registry::start_on(backend, e2e::BlobBackend::from_env(), env)
    }

    /// Starts a registry storing its blobs on `storage`.
    pub fn start_on(
        backend: MetaBackend,
        storage: e2e::BlobBackend,
        env: &[(&str, &str)],
    ) -> Registry {
        let server = TestServer::start_on(backend, storage, env);
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("reqwest client");
        Registry { server, http }
    }

    /// Absolute URL of `path` (which may also be an absolute `Location` from an earlier
    /// response; only its path and query are kept, so it survives a restart on a new port).
    pub fn url(&self, path: &str) -> String {
        self.server.url(&path_of(path))
    }

    pub fn restart(&mut self) {
        self.server.restart();
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("GET")
    }

    pub async fn head(&self, path: &str) -> Response {
        self.req(Method::HEAD, path).send().await.expect("HEAD")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.req(Method::DELETE, path).send().await.expect("DELETE")
    }

    /// `POST /v2/<repo>/blobs/uploads/`, asserting 202; returns the upload `Location` as a path.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0")
            .body(Vec::new())
            .send()
            .await
            .expect("POST upload");
        let status = resp.status();
        let location = header(&resp, "location");
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::ACCEPTED, "start upload in {repo}: {text}");
        path_of(&location.expect("upload POST response has a Location header"))
    }

    /// Pushes `data` with POST + PUT `?digest=` (the path every registry supports); returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let location = self.start_upload(repo).await;
        let resp = self
            .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "finish upload of {digest} in {repo}: {text}");
        digest
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: media_type`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Pushes a manifest, asserting 201 and the `Docker-Content-Digest`; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let digest = sha256_digest(body);
        let resp = self.put_manifest(repo, reference, media_type, body).await;
        let status = resp.status();
        let dcd = header(&resp, "docker-content-digest");
        let location = header(&resp, "location");
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "PUT manifest {repo}:{reference}: {text}");
        assert_eq!(dcd.as_deref(), Some(digest.as_str()), "Docker-Content-Digest of PUT manifest");
        assert!(location.is_some(), "PUT manifest response has a Location header");
        digest
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .expect("GET manifest")
    }

    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", ACCEPT_ALL)
            .send()
            .await
            .expect("HEAD manifest")
    }

    /// Status of `HEAD /v2/<repo>/blobs/<digest>`.
    pub async fn blob_status(&self, repo: &str, digest: &str) -> StatusCode {
        self.head(&format!("/v2/{repo}/blobs/{digest}")).await.status()
    }

    /// Pushes a random config and layer and an OCI image manifest referencing them,
    /// by `reference` (a tag) or, when `None`, by its digest.
    pub async fn push_image(&self, repo: &str, reference: Option<&str>) -> Image {
        let image = Image::random(repo);
        self.push_blob(repo, &image.config).await;
        self.push_blob(repo, &image.layer).await;
        let reference = reference.map(str::to_string).unwrap_or_else(|| image.digest.clone());
        self.push_manifest(repo, &reference, OCI_MANIFEST, &image.manifest).await;
        image
    }

    /// Lists the tags of `repo` (asserting 200); `query` like `n=2&last=b` or empty.
    pub async fn tags(&self, repo: &str, query: &str) -> (Vec<String>, Option<String>) {
        let path = if query.is_empty() {
            format!("/v2/{repo}/tags/list")
        } else {
            format!("/v2/{repo}/tags/list?{query}")
        };
        let resp = self.get(&path).await;
        let status = resp.status();
        let link = header(&resp, "link");
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert_eq!(v["name"].as_str(), Some(repo), "tags list name: {text}");
        (string_list(&v["tags"]), link)
    }

    /// True when a file or directory under the server's data dir has `needle` in its name
    /// (always false against an external registry, whose storage we cannot see).
    pub fn data_dir_mentions(&self, needle: &str) -> bool {
        if external() {
            return false;
        }
        fn walk(dir: &std::path::Path, needle: &str) -> bool {
            let Ok(entries) = std::fs::read_dir(dir) else { return false };
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().contains(needle)
                    || (e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                        && walk(&e.path(), needle))
            })
        }
        walk(self.server.data_dir(), needle)
    }
}

/// A pushed (or ready-to-push) OCI image with one config and one layer.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// A fresh image with random content (not pushed).
    pub fn random(label: &str) -> Image {
        let layer = random_bytes(2048);
        let layer_digest = sha256_digest(&layer);
        let config = config_json(&layer_digest, label);
        let config_digest = sha256_digest(&config);
        let manifest = to_bytes(&oci_image_manifest(
            descriptor(OCI_CONFIG, &config),
            vec![descriptor(OCI_LAYER, &layer)],
        ));
        let digest = sha256_digest(&manifest);
        Image { config, config_digest, layer, layer_digest, manifest, digest }
    }

    pub fn descriptor(&self) -> Value {
        descriptor(OCI_MANIFEST, &self.manifest)
    }
}

/// An image config blob (unique per call).
pub fn config_json(diff_id: &str, label: &str) -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "e2e.label": label, "e2e.nonce": e2e::random_suffix() } },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] }
    }))
}

/// A descriptor for `data` with `media_type`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256_digest(data), "size": data.len() })
}

/// The OCI empty descriptor (`{}`, inline data `e30=`).
pub fn empty_descriptor() -> Value {
    json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": "e30=" })
}

/// An OCI image manifest with `config` and `layers`.
pub fn oci_image_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers })
}

/// An OCI image index over `manifests`.
pub fn oci_index(manifests: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests })
}

pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialize JSON")
}

/// `tags`/`repositories` as strings; `null` or missing counts as empty.
pub fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|t| t.as_str().expect("list entries are strings").to_string())
            .collect(),
        other => panic!("expected a list of strings, got {other}"),
    }
}

/// A response header as a string.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string())
}

/// The path and query of a URL that may be absolute (`http://host/...`) or relative.
pub fn path_of(location: &str) -> String {
    let rest = location.strip_prefix("http://").or_else(|| location.strip_prefix("https://"));
    match rest {
        Some(rest) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => location.to_string(),
    }
}

/// Appends `query` (`k=v`) to a URL/path that may already have a query string.
pub fn with_query(location: &str, query: &str) -> String {
    if location.contains('?') {
        format!("{location}&{query}")
    } else {
        format!("{location}?{query}")
    }
}

/// Parses an upload `Range` header (`0-N`, tolerating a `bytes=` prefix) into `(start, end)`.
pub fn parse_range(value: &str) -> (u64, u64) {
    let v = value.trim().trim_start_matches("bytes=");
    let (a, b) = v.split_once('-').unwrap_or_else(|| panic!("bad Range header {value:?}"));
    (
        a.parse().unwrap_or_else(|_| panic!("bad Range header {value:?}")),
        b.parse().unwrap_or_else(|_| panic!("bad Range header {value:?}")),
    )
}

/// Asserts the response's upload `Range` header is `0-<end>`.
pub fn assert_upload_range(resp: &Response, end: u64) {
    let range = header(resp, "range").expect("upload response has a Range header");
    assert_eq!(parse_range(&range), (0, end), "Range header {range:?}");
}

/// The target of a `Link: <url>; rel="next"` header, as a path.
pub fn link_next(link: &str) -> String {
    assert!(
        link.contains("rel=\"next\"") || link.contains("rel=next"),
        "Link without rel=\"next\": {link}"
    );
    let start = link.find('<').unwrap_or_else(|| panic!("Link without <url>: {link}"));
    let end = link.find('>').unwrap_or_else(|| panic!("Link without <url>: {link}"));
    path_of(&link[start + 1..end])
}

/// The decoded value of query parameter `key` in `url`.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 query value")
}

/// Asserts `resp` has one of `statuses` and an OCI error body
/// (`{"errors":[{"code","message"}]}`, every message non-empty) with one of `codes`.
/// Returns the parsed body.
pub async fn assert_oci_error(resp: Response, statuses: &[u16], codes: &[&str]) -> Value {
    let status = resp.status().as_u16();
    let what = format!("{} {}", resp.url().path(), resp.url().query().unwrap_or(""));
    let text = resp.text().await.unwrap_or_default();
    assert!(
        statuses.contains(&status),
        "{what}: expected status in {statuses:?} with code in {codes:?}, got {status}: {text}"
    );
    check_error_body(&text, codes, &what)
}

/// Checks an OCI error body; see [`assert_oci_error`].
pub fn check_error_body(text: &str, codes: &[&str], what: &str) -> Value {
    if let Some(problem) = error_body_problem(text, codes, what) {
        panic!("{problem}");
    }
    serde_json::from_str(text).expect("checked above")
}

/// What is wrong with an OCI error body (`None` when it is well-formed with a code in `codes`).
pub fn error_body_problem(text: &str, codes: &[&str], what: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(format!("{what}: error body is not JSON ({e}): {text:?}")),
    };
    let Some(errors) = v["errors"].as_array() else {
        return Some(format!("{what}: error body has no errors array: {text}"));
    };
    if errors.is_empty() {
        return Some(format!("{what}: empty errors array: {text}"));
    }
    for e in errors {
        let Some(code) = e["code"].as_str() else {
            return Some(format!("{what}: error without code: {text}"));
        };
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            return Some(format!("{what}: error code {code:?} is not UPPER_SNAKE"));
        }
        if e["message"].as_str().unwrap_or_default().trim().is_empty() {
            return Some(format!("{what}: error {code} has no message: {text}"));
        }
    }
    if !errors.iter().any(|e| codes.contains(&e["code"].as_str().unwrap_or_default())) {
        return Some(format!("{what}: expected an error code in {codes:?}, got {text}"));
    }
    None
}

/// Asserts the status (for HEAD and other body-less responses).
pub fn assert_status(resp: &Response, expected: u16) {
    assert_eq!(
        resp.status().as_u16(),
        expected,
        "{} {}: unexpected status",
        resp.url().path(),
        resp.url().query().unwrap_or("")
    );
}

/// A response read off a raw TCP connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request verbatim (the path is not normalised) and reads the response.
pub async fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request head");
    stream.write_all(body).await.expect("write request body");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .expect("raw response within 60 s")
        .expect("read raw response");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    RawResponse { status, head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Sends a request head announcing `Content-Length: declared` and only `partial` of the body,
/// then drops the connection (a client that died mid-upload).
pub async fn send_truncated(addr: &str, method: &str, path: &str, declared: usize, partial: &[u8]) {
    assert!(partial.len() < declared);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write head");
    stream.write_all(partial).await.expect("write partial body");
    stream.flush().await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stream.shutdown().await;
    drop(stream);
    // Give the server time to notice the dropped connection and clean up.
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// Asserts a request with a malformed name/path was refused with a client error: 400 with an
/// OCI error in `codes`, or 404 (for paths that cannot route); never 2xx, 3xx or 5xx.
pub fn assert_refused(resp: &RawResponse, codes: &[&str], what: &str) {
    if let Some(problem) = refused_problem(resp, codes, what) {
        panic!("{problem}");
    }
}

/// See [`assert_refused`]; `None` when the response is a proper refusal.
pub fn refused_problem(resp: &RawResponse, codes: &[&str], what: &str) -> Option<String> {
    let text = resp.body_text();
    if resp.status != 400 && resp.status != 404 {
        return Some(format!(
            "{what}: expected 400 (or 404 when it cannot route), got {}: {text}",
            resp.status
        ));
    }
    if resp.status == 400 {
        error_body_problem(&text, codes, what)
    } else if serde_json::from_str::<Value>(&text).is_ok() {
        // A 404 with a JSON body must still be a well-formed OCI error.
        let mut allowed = codes.to_vec();
        allowed.extend(["NAME_UNKNOWN", "NAME_INVALID", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"]);
        error_body_problem(&text, &allowed, what)
    } else {
        None
    }
}

/// Like [`raw_request`], but writes the body while reading the response, so an answer the
/// server sends before reading the whole body (e.g. 413 on a too-large Content-Length) is
/// still seen even when the server then closes the connection under the writer.
pub async fn raw_request_early_answer(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let writer = tokio::spawn(async move {
        // Errors (broken pipe, reset) are expected when the server answers early.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response within 60 s"),
        }
    }
    writer.abort();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("{method} {path}: no complete response: {:?}", String::from_utf8_lossy(&buf))
    });
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    RawResponse { status, head, body }
}
