//! Object store servers for tests: a real S3 API (moto) and Azure Blob API (Azurite), each
//! started on a free port and stopped when dropped. Both are installed by `scripts/setup`; a
//! missing one fails the test that needs it, never skips it. Shared by this crate's
//! behavioural suite and the end-to-end tests (feature `test-servers`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{AzureSettings, S3Settings};

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running object store server; killed on drop.
pub struct ObjectStoreServer {
    child: Child,
    pub port: u16,
    _data: Option<tempfile::TempDir>,
}

impl Drop for ObjectStoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `program` and waits until it accepts connections on `port`.
fn start(
    program: &str,
    args: &[&str],
    port: u16,
    data: Option<tempfile::TempDir>,
) -> ObjectStoreServer {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}): install it with scripts/setup (the object store suite needs it)")
        });
    let mut server = ObjectStoreServer { child, port, _data: data };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{program} exited with {status} before listening on port {port}");
        }
        assert!(Instant::now() < deadline, "{program} did not listen on port {port} within 60s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Sends one HTTP/1.1 request and returns the status code.
fn http(port: u16, request: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// GETs `url` (plain http on loopback); its status and body.
pub fn get(url: &str) -> (u16, Vec<u8>) {
    let url = url::Url::parse(url).unwrap();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(80));
    let mut stream = TcpStream::connect(&host).unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response[(split + 4).min(response.len())..].to_vec())
}

impl ObjectStoreServer {
    /// moto's S3 server (`moto_server`, PyPI `moto[server]`).
    pub fn moto() -> ObjectStoreServer {
        let port = free_port();
        start("moto_server", &["-H", "127.0.0.1", "-p", &port.to_string()], port, None)
    }

    /// Azurite's Blob service (npm `azurite`), storing in a temporary directory.
    pub fn azurite() -> ObjectStoreServer {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let location = data.path().display().to_string();
        let args =
            ["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location", &location];
        start(
            "azurite-blob",
            &[&args[..], &["--silent", "--skipApiVersionCheck"]].concat(),
            port,
            Some(data),
        )
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` on this moto server; S3 settings for it (path-style, test keys).
    pub fn s3_bucket(&self, bucket: &str) -> S3Settings {
        let status = http(
            self.port,
            &format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            ),
        );
        assert_eq!(status, 200, "creating bucket {bucket}");
        S3Settings {
            bucket: bucket.into(),
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint()),
            force_path_style: true,
            access_key: Some("testing".into()),
            secret_key: Some("testing".into()),
            ..Default::default()
        }
    }

    /// Creates `container` on this Azurite; Azure settings for it (the development account).
    pub fn azure_container(&self, container: &str) -> AzureSettings {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let version = "2021-08-06";
        // Shared Key: the verb, eleven empty standard headers, then x-ms-* headers and the
        // resource (Azurite's path-style: /<account>/<account>/<container>).
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let signature = sign(AZURITE_KEY, &to_sign);
        let status = http(
            self.port,
            &format!(
                "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\n\
                 Host: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
                 Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            ),
        );
        assert_eq!(status, 201, "creating container {container}");
        AzureSettings {
            account_name: AZURITE_ACCOUNT.into(),
            account_key: Some(AZURITE_KEY.into()),
            container: container.into(),
            endpoint: Some(format!("{}/{AZURITE_ACCOUNT}", self.endpoint())),
            ..Default::default()
        }
    }
}

/// HMAC-SHA256 of `message` under the base64 `key`, base64-encoded.
fn sign(key: &str, message: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD.decode(key).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
