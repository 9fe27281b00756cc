//! Upstream registries for the dependency-proxy tests: Debian's `docker-registry` (CNCF
//! distribution 2.8) on a loopback port with its own storage, and a [`CountingProxy`] in front
//! of any registry that counts the requests passing through and can play an upstream that is
//! down, failing (5xx) or rate-limiting (429).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use crate::tools::require_tool;
use crate::{random_bytes, sha256_digest};

/// A free loopback port (bound and released: good enough on a test machine).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `docker-registry serve`, open (no auth). Killed when dropped.
pub struct Distribution {
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub async fn start() -> Distribution {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        let d = Distribution { base: format!("http://127.0.0.1:{port}"), child, _dir: dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http.get(format!("{}/v2/", d.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return d;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes to a registry over plain HTTP, optionally with a bearer token.
pub struct Pusher {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// What [`Pusher::push_image`] pushed.
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: String,
    pub layer: String,
    pub layer_bytes: Vec<u8>,
}

impl Pusher {
    pub fn new(base: &str, token: Option<String>) -> Pusher {
        Pusher { http: reqwest::Client::new(), base: base.to_string(), token }
    }

    fn req(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn blob(&self, name: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let started = self
            .req(reqwest::Method::POST, format!("{}/v2/{name}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "upload start to {name}");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .req(reqwest::Method::PUT, format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "blob upload to {name}: {}", put.text().await.unwrap());
        digest
    }

    pub async fn manifest(&self, name: &str, reference: &str, media_type: &str, body: &[u8]) {
        let put = self
            .req(reqwest::Method::PUT, format!("{}/v2/{name}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "manifest put to {name}: {}", put.text().await.unwrap());
    }

    /// An OCI image (config + one random layer of `layer_size` bytes) as `name:tag`.
    pub async fn push_image(&self, name: &str, tag: &str, layer_size: usize) -> PushedImage {
        self.push_image_for(name, tag, layer_size, "amd64").await
    }

    pub async fn push_image_for(
        &self,
        name: &str,
        tag: &str,
        layer_size: usize,
        arch: &str,
    ) -> PushedImage {
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "created": format!("{}", crate::random_suffix()),
        }))
        .unwrap();
        let layer_bytes = random_bytes(layer_size);
        let config = self.blob(name, &config_bytes).await;
        let layer = self.blob(name, &layer_bytes).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": config_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer, "size": layer_bytes.len()}],
        }))
        .unwrap();
        let digest = sha256_digest(&manifest);
        self.manifest(name, tag, "application/vnd.oci.image.manifest.v1+json", &manifest).await;
        PushedImage { manifest, digest, config, layer, layer_bytes }
    }
}

/// How a [`CountingProxy`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Forwards to the registry behind it.
    Forward,
    /// Answers every request with this status (503, 429 with `Retry-After: 7`, …).
    Fail(u16),
    /// Closes every connection without an answer, like a registry that is down.
    Down,
}

struct ProxyState {
    target: String,
    mode: Mutex<UpstreamMode>,
    /// How long a blob GET waits before it is forwarded (a slow upstream).
    blob_delay: Mutex<Duration>,
    /// `"GET /v2/…"` → how many times it came through.
    seen: Mutex<HashMap<String, usize>>,
    http: reqwest::Client,
}

/// An HTTP proxy in front of a registry, in this test process, that counts requests.
pub struct CountingProxy {
    pub base: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let method = request.method().clone();
    let path_and_query =
        request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    *state.seen.lock().unwrap().entry(format!("{method} {}", request.uri().path())).or_default() +=
        1;
    let mode = *state.mode.lock().unwrap();
    match mode {
        UpstreamMode::Fail(status) => {
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            if status == 429 {
                response.headers_mut().insert("retry-after", "7".parse().unwrap());
            }
            return response;
        }
        UpstreamMode::Down => {
            // An answer nobody can read: the connection is dropped mid-headers.
            return Response::builder()
                .status(200)
                .header("content-length", "10")
                .body(Body::from_stream(futures::stream::once(async {
                    Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("down"))
                })))
                .unwrap();
        }
        UpstreamMode::Forward => {}
    }
    let delay = *state.blob_delay.lock().unwrap();
    if method == axum::http::Method::GET && request.uri().path().contains("/blobs/") {
        tokio::time::sleep(delay).await;
    }
    let mut upstream = state.http.request(method, format!("{}{path_and_query}", state.target));
    for (name, value) in request.headers() {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX).await.unwrap_or_default();
    let answer = match upstream.body(body).send().await {
        Ok(answer) => answer,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream().map(|r| r.map_err(std::io::Error::other))))
        .unwrap()
}

impl CountingProxy {
    /// A proxy to `target` (`http://127.0.0.1:PORT`) on a loopback port of its own.
    pub async fn start(target: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            target: target.trim_end_matches('/').to_string(),
            mode: Mutex::new(UpstreamMode::Forward),
            blob_delay: Mutex::new(Duration::ZERO),
            seen: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = axum::Router::new().fallback(forward).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy { base: format!("http://{addr}"), state, task }
    }

    pub fn set_mode(&self, mode: UpstreamMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Makes every blob GET wait `delay` before it is forwarded: a slow upstream, so that
    /// concurrent pulls overlap.
    pub fn set_blob_delay(&self, delay: Duration) {
        *self.state.blob_delay.lock().unwrap() = delay;
    }

    /// How many `method path` requests came through (path without the query).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state.seen.lock().unwrap().get(&format!("{method} {path}")).copied().unwrap_or(0)
    }

    /// Every request seen, for failure messages.
    pub fn seen(&self) -> HashMap<String, usize> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
