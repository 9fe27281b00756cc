//! The operations surface: what an operator and a load balancer see when a dependency fails
//! and comes back.

mod common;

use std::time::{Duration, Instant};

use common::{header, Registry};
use e2e::db_proxy::DbProxy;
use e2e::{random_bytes, unique_repo, TestServer};
use reqwest::{Client, Method, StatusCode};

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// With PostgreSQL unreachable every request that needs it answers 503 with `Retry-After` and
/// the OCI code `UNKNOWN` (GitLab's message on /api/v4) within `database.connecttimeout`, not
/// after a 30 s hang; `GET /v2/` says so too; once the database is back, service resumes by
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_fast_and_service_resumes_by_itself() {
    let mut proxy = DbProxy::to_test_postgres();
    let server = TestServer::start_postgres_via(
        &proxy.host_port(),
        &[("STOWAGE_DATABASE__CONNECTTIMEOUT", "1s")],
    );
    let registry = Registry { server, http: client() };
    let repo = unique_repo("outage");
    let digest = registry.push_blob(&repo, &random_bytes(1000)).await;
    assert_eq!(registry.get("/v2/").await.status(), StatusCode::OK);

    proxy.cut();
    let blob = format!("/v2/{repo}/blobs/{digest}");
    let requests = [
        (Method::GET, "/v2/".to_string()),
        (Method::HEAD, "/v2/".to_string()),
        (Method::GET, format!("/v2/{repo}/tags/list")),
        (Method::GET, format!("/v2/{repo}/manifests/latest")),
        (Method::HEAD, blob.clone()),
        (Method::POST, format!("/v2/{repo}/blobs/uploads/")),
        (Method::GET, "/v2/_catalog".to_string()),
        (Method::GET, "/api/v4/projects".to_string()),
    ];
    for (method, path) in &requests {
        let started = Instant::now();
        let response = registry.req(method.clone(), path).send().await.expect("request");
        let elapsed = started.elapsed();
        let status = response.status();
        let retry_after = header(&response, "retry-after");
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {body}");
        assert!(elapsed < Duration::from_secs(2), "{method} {path} took {elapsed:?}");
        let seconds: u64 = retry_after
            .unwrap_or_else(|| panic!("{method} {path}: no Retry-After"))
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=30).contains(&seconds), "{method} {path}: Retry-After {seconds}");
        if *method == Method::HEAD {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        if path.starts_with("/api/v4") {
            let message = json["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("503 Service Unavailable"), "{path}: {body}");
        } else {
            assert_eq!(json["errors"][0]["code"], "UNKNOWN", "{method} {path}: {body}");
            assert!(!body.contains("UNSUPPORTED"), "{body}");
        }
    }

    proxy.restore();
    let restored = Instant::now();
    loop {
        let status = registry.get("/v2/").await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(restored.elapsed() < Duration::from_secs(15), "no recovery within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("first success {:?} after the database came back", restored.elapsed());
    assert_eq!(registry.head(&blob).await.status(), StatusCode::OK, "what was stored is served");
    registry.push_blob(&repo, &random_bytes(1000)).await;
}

/// The sum of every sample of `name` whose labels include `labels`, in Prometheus text format;
/// 0 when there is none.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (series_name, mut rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut found = Vec::new();
        while let Some((key, after)) = rest.split_once("=\"") {
            let end = after.find('"').expect("label value ends");
            found.push((key.trim_start_matches(','), &after[..end]));
            rest = &after[end + 1..];
        }
        if labels.iter().all(|l| found.contains(l)) {
            sum += value.parse::<f64>().expect("sample value");
        }
    }
    sum
}

/// `GET /metrics` on the debug address `debug`.
async fn scrape(http: &Client, debug: &str) -> String {
    let response = http.get(format!("{debug}/metrics")).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The JSON log lines (every line must be one JSON object) whose request span has `id`.
fn log_lines_of_request(log: &str, id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("log line is not one JSON object ({e}): {l}"))
        })
        .filter(|line| line["span"]["request_id"] == id)
        .collect()
}

/// The debug address: liveness, readiness that turns red while the database is unreachable
/// and green again after, and Prometheus metrics that move with requests (by route template,
/// never by raw path), bytes, tokens and database figures. Every log line is one JSON object,
/// and every line logged for a request — errors included — carries its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_address_metrics_readiness_and_request_logs() {
    let mut proxy = DbProxy::to_test_postgres();
    let server = TestServer::start_postgres_via(
        &proxy.host_port(),
        &[
            ("STOWAGE_DATABASE__CONNECTTIMEOUT", "1s"),
            ("STOWAGE_HTTP__DEBUG__ADDR", "127.0.0.1:0"),
            ("STOWAGE_AUTH__MODE", "token"),
            ("STOWAGE_LOG__FORMATTER", "json"),
            // Else the generated password is printed (not logged) into the same file.
            ("STOWAGE_ADMIN_PASSWORD", "ops-test-password-1"),
        ],
    );
    let debug = format!(
        "http://{}",
        server.logged_address("debug endpoints at http://").expect("debug address logged")
    );
    let http = client();
    let get = |path: &str| http.get(format!("{debug}{path}")).send();
    let scrape = || scrape(&http, &debug);

    let health = get("/debug/health").await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = get("/debug/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"database": "ok", "storage": "ok"}));
    // The debug routes are not served to clients.
    assert_eq!(http.get(server.url("/metrics")).send().await.unwrap().status(), 404);

    let before = scrape().await;
    let manifest = [("route", "/v2/{name}/manifests/{reference}"), ("method", "GET")];
    let unauthorized = [manifest[0], manifest[1], ("status", "401")];
    for tag in ["a", "b", "c"] {
        let r = http.get(server.url(&format!("/v2/acme/app/manifests/{tag}"))).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let anonymous = http.get(server.url("/jwt/auth?service=container_registry")).send().await;
    assert_eq!(anonymous.unwrap().status(), StatusCode::OK);
    let wrong = http
        .get(server.url("/jwt/auth?service=container_registry"))
        .basic_auth("nobody", Some("wrong"))
        .header("x-request-id", "ops-test-login-42")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&wrong, "x-request-id").as_deref(), Some("ops-test-login-42"));
    let after = scrape().await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(moved("stowage_http_requests_total", &unauthorized), 3.0, "{after}");
    assert_eq!(
        moved("stowage_http_request_duration_seconds_count", &manifest),
        3.0,
        "latency histogram by route and method"
    );
    assert!(metric(&after, "stowage_http_request_duration_seconds_bucket", &manifest) > 0.0);
    assert!(!after.contains("acme/app"), "raw paths never become labels");
    assert!(moved("stowage_http_received_bytes_total", &[]) > 300.0);
    assert!(moved("stowage_http_sent_bytes_total", &[]) > 300.0);
    assert_eq!(moved("stowage_tokens_issued_total", &[("credential", "anonymous")]), 1.0);
    assert_eq!(moved("stowage_token_failures_total", &[("reason", "invalid_credentials")]), 1.0);
    assert_eq!(metric(&after, "stowage_database_up", &[]), 1.0);
    assert!(metric(&after, "stowage_database_pool_connections", &[]) >= 1.0);
    assert!(after.contains("stowage_jobs{state=\"queued\"}"), "{after}");
    assert!(after.contains("stowage_gc_review_queue{kind=\"blob\"}"), "{after}");
    assert!(after.contains("stowage_upload_sessions "), "{after}");
    assert!(metric(&after, "process_resident_memory_bytes", &[]) > 1e6);

    // The failed login's lines — its log line and the access line — carry its request id.
    let lines = log_lines_of_request(&server.log(), "ops-test-login-42");
    assert!(lines.iter().any(|l| l["target"] == "access"), "{lines:?}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "login failed"), "{lines:?}");
    // A request id a client cannot be trusted with is replaced by a fresh one.
    for bad in ["has space", &"x".repeat(200), "semi;colon"] {
        let r = http.get(server.url("/v2/")).header("x-request-id", bad).send().await.unwrap();
        let id = header(&r, "x-request-id").expect("a request id");
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a fresh UUID: {id}");
    }

    // The database goes away: readiness turns red (liveness does not), metrics still answer,
    // and the errors logged while requests fail carry their request ids.
    proxy.cut();
    let ready = get("/debug/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&ready, "retry-after").is_some());
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["storage"], "ok");
    assert!(body["database"].as_str().unwrap().starts_with("unavailable: "), "{body}");
    assert_eq!(get("/debug/health").await.unwrap().status(), StatusCode::OK);
    assert_eq!(metric(&scrape().await, "stowage_database_up", &[]), 0.0);
    let failed = http.get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let id = header(&failed, "x-request-id").expect("request id");
    let lines = log_lines_of_request(&server.log(), &id);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["fields"]["message"] == "the metadata database is unavailable"),
        "{lines:?}"
    );

    proxy.restore();
    let restored = Instant::now();
    while get("/debug/ready").await.unwrap().status() != StatusCode::OK {
        assert!(restored.elapsed() < Duration::from_secs(15), "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&scrape().await, "stowage_database_up", &[]), 1.0);
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    (cert.pem(), signing_key.serialize_pem())
}

/// Writes an OCI layout with one small image tagged `tag` into `dir`.
fn oci_layout(dir: &std::path::Path, tag: &str) {
    use e2e::sha256_digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        serde_json::json!({ "digest": digest, "size": bytes.len() })
    };
    let layer = random_bytes(4096);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut config_descriptor = put(config);
    config_descriptor["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let mut layer_descriptor = put(&layer);
    layer_descriptor["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer_descriptor],
    })
    .to_string();
    let mut manifest_descriptor = put(manifest.as_bytes());
    manifest_descriptor["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_descriptor["annotations"] =
        serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [manifest_descriptor] });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// With `http.tls.certificate` and `http.tls.key` the server speaks HTTPS itself (HTTP/2 by
/// ALPN too): reqwest, curl and skopeo trusting the certificate push and pull through it, and
/// a plain-HTTP request on the port gets no answer. Half a TLS setting stops the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_directly() {
    e2e::tools::require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    // skopeo reads CA certificates from `*.crt` files in a directory.
    let ca_dir = dir.path().join("certs.d");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.crt"), &cert).unwrap();

    let server = TestServer::start_with(
        e2e::MetaBackend::Sqlite,
        &[
            ("STOWAGE_HTTP__TLS__CERTIFICATE", cert_file.to_str().unwrap()),
            ("STOWAGE_HTTP__TLS__KEY", key_file.to_str().unwrap()),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let registry = Registry { server, http };
    assert_eq!(registry.get("/v2/").await.status(), StatusCode::OK);
    let repo = unique_repo("tls");
    let digest = registry.push_blob(&repo, &random_bytes(100_000)).await;
    assert_eq!(registry.head(&format!("/v2/{repo}/blobs/{digest}")).await.status(), 200);

    // An untrusting client is refused by the handshake; plain HTTP gets no HTTP answer.
    assert!(client().get(registry.url("/v2/")).send().await.is_err());
    let plain = format!("http://{}/v2/", registry.server.addr);
    assert!(client().get(&plain).send().await.is_err(), "plain HTTP on the TLS port");

    let curl = std::process::Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(&cert_file)
        .arg(registry.url("/v2/"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "2 200", "{curl:?}");

    e2e::tools::require_tool("skopeo", "skopeo");
    let layout = dir.path().join("layout");
    oci_layout(&layout, "v1");
    let target = format!("docker://{}/{repo}:v1", registry.server.addr);
    let copy = |args: &[&str]| {
        let out = std::process::Command::new("skopeo").args(args).output().expect("run skopeo");
        assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ca = ca_dir.to_str().unwrap();
    let layout_ref = format!("oci:{}:v1", layout.display());
    copy(&["copy", "--dest-cert-dir", ca, &layout_ref, &target]);
    let pulled = dir.path().join("pulled");
    copy(&["copy", "--src-cert-dir", ca, &target, &format!("oci:{}:v1", pulled.display())]);
    assert!(pulled.join("index.json").exists());

    // Half a TLS configuration is refused at start, naming the missing key.
    let (run, _dir) = stowage_config_check(&[("STOWAGE_HTTP__TLS__CERTIFICATE", "/x.pem")]);
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr.contains("http.tls.certificate is set but http.tls.key is not"),
        "{}",
        run.stderr
    );
}

/// `stowage config check` with `env`, in a fresh directory.
fn stowage_config_check(env: &[(&str, &str)]) -> (e2e::cli::Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let run = e2e::cli::run_stowage(&["config", "check"], env, dir.path(), Duration::from_secs(30));
    (run, dir)
}

/// A PATCH whose body the test sends piece by piece: `(sender, response)`.
fn streaming_patch(
    registry: &Registry,
    location: &str,
) -> (
    futures::channel::mpsc::UnboundedSender<Vec<u8>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    use futures::StreamExt;
    let (sender, receiver) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let body = reqwest::Body::wrap_stream(receiver.map(Ok::<_, std::io::Error>));
    let request = registry
        .req(Method::PATCH, location)
        .header("content-type", "application/octet-stream")
        .body(body);
    (sender, tokio::spawn(request.send()))
}

/// On SIGTERM the server stops accepting connections at once, lets a request in progress (a
/// chunk upload still streaming) finish, and exits; a request still running when
/// `http.draintimeout` passes is cut, and its upload session resumes after a restart from the
/// last chunk that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_uploads_stay_resumable() {
    use common::{path_of, with_query};
    let server =
        TestServer::start_with(e2e::MetaBackend::Sqlite, &[("STOWAGE_HTTP__DRAINTIMEOUT", "3s")]);
    let mut registry = Registry { server, http: client() };
    let repo = unique_repo("drain");
    let data = random_bytes(3 * 65536);
    let (first, second, third) = (&data[..65536], &data[65536..131072], &data[131072..]);

    // A chunk in flight when SIGTERM arrives completes; the server then exits.
    let location = registry.start_upload(&repo).await;
    let (sender, response) = streaming_patch(&registry, &location);
    sender.unbounded_send(first[..1000].to_vec()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the request reach the handler
    registry.server.terminate();
    let addr = registry.server.addr.clone();
    let refused = Instant::now();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(refused.elapsed() < Duration::from_secs(2), "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.unbounded_send(first[1000..].to_vec()).unwrap();
    drop(sender);
    let response = response.await.unwrap().expect("the chunk in flight is answered");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range").as_deref(), Some("0-65535"));
    let location = path_of(&header(&response, "location").expect("Location"));
    let status = registry.server.wait_exit(Duration::from_secs(3)).expect("exits after draining");
    assert!(status.success(), "{status}");

    // A chunk still streaming when the drain time is up is cut; the session keeps the
    // chunks that completed.
    registry.restart();
    let (sender, response) = streaming_patch(&registry, &location);
    sender.unbounded_send(second[..1000].to_vec()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    registry.server.terminate();
    registry.server.wait_exit(Duration::from_secs(10)).expect("exits at the drain timeout");
    let waited = stopping.elapsed();
    assert!(waited >= Duration::from_millis(2500), "gave up after {waited:?}, before 3 s");
    assert!(response.await.unwrap().is_err(), "the cut request gets no answer");
    drop(sender);

    registry.restart();
    let status = registry.get(&location).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range").as_deref(), Some("0-65535"), "resumes after the cut");
    let resumed = registry
        .req(Method::PATCH, &location)
        .header("content-type", "application/octet-stream")
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::ACCEPTED);
    let location = path_of(&header(&resumed, "location").unwrap());
    let digest = e2e::sha256_digest(&data);
    let finished = registry
        .req(Method::PUT, &with_query(&location, &format!("digest={digest}")))
        .body(third.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::CREATED);
    let blob = registry.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(blob.bytes().await.unwrap().as_ref(), &data[..]);
}
