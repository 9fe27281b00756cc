//! Several `stowage serve` processes on one data directory: on SQLite the second one is
//! refused (SQLite mode is one process) while admin commands keep working beside the first;
//! on PostgreSQL both serve, sharing the blob directory and the database.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use e2e::gitlab::http_client;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend, TestServer};

backend_tests!(second_serve_on_the_same_data);

/// A second `stowage serve` with the first one's data directory and database.
struct SecondServe {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecondServe {
    fn start(first: &TestServer) -> SecondServe {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("second.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = first
            .stowage_command(&["serve"])
            .env("STOWAGE_HTTP_ADDR", "127.0.0.1:0")
            .env("STOWAGE_AUTH__MODE", "none")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start a second stowage serve");
        SecondServe { child, log, _dir: dir }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (within a generous bound) until it listens (`Ok(base URL)`) or exits
    /// (`Err((exit code, output))`).
    fn outcome(&mut self) -> Result<String, (Option<i32>, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = self.output();
            if let Some(at) = output.find("listening on http://") {
                let rest = &output[at + "listening on ".len()..];
                return Ok(rest.chars().take_while(|c| !c.is_whitespace()).collect());
            }
            if let Some(status) = self.child.try_wait().expect("poll the second serve") {
                // Let the last write land.
                return Err((status.code(), self.output()));
            }
            assert!(
                Instant::now() < deadline,
                "second serve neither listened nor exited:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SecondServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn push_blob(base: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let resp = http_client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "push to {base}: {}", resp.text().await.unwrap());
    digest
}

async fn pull_blob(base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let resp = http_client().get(format!("{base}/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "pull from {base}");
    resp.bytes().await.unwrap().to_vec()
}

async fn second_serve_on_the_same_data(backend: MetaBackend) {
    let mut first = TestServer::start(backend);
    let repo = unique_repo("instances");
    let data = random_bytes(3000);
    let digest = push_blob(&first.base, &repo, &data).await;

    let mut second = SecondServe::start(&first);
    match backend {
        MetaBackend::Sqlite => {
            let (code, output) = second.outcome().expect_err("a second serve on SQLite is refused");
            assert_eq!(code, Some(1), "refused with a failure exit code:\n{output}");
            let database = first.data_dir().join("data").join("stowage.db");
            let database = database.canonicalize().unwrap_or(database);
            let expected = format!(
                "is using the SQLite database at {}; SQLite mode is one process — use \
                 PostgreSQL (database.url) to run several instances",
                database.display()
            );
            assert!(output.contains("another stowage serve (pid "), "names the holder:\n{output}");
            assert!(output.contains(&expected), "says why and what to do:\n{output}");
            assert!(!output.contains("metadata and storage ready"), "never opened the database");

            // The first one still serves, reads and writes.
            assert_eq!(pull_blob(&first.base, &repo, &digest).await, data);
            let more = random_bytes(1000);
            let more_digest = push_blob(&first.base, &repo, &more).await;
            assert_eq!(pull_blob(&first.base, &repo, &more_digest).await, more);

            // Admin commands work beside it on the same SQLite data.
            let username = format!("admin-beside-{}", &e2e::random_suffix()[..6]);
            let out = first
                .stowage_command(&[
                    "admin",
                    "users",
                    "create",
                    "--username",
                    &username,
                    "--email",
                    &format!("{username}@example.com"),
                ])
                .output()
                .expect("run stowage admin");
            assert!(out.status.success(), "admin users create: {out:?}");
            let out = first.stowage_command(&["admin", "users", "list"]).output().unwrap();
            assert!(out.status.success(), "admin users list: {out:?}");
            assert!(String::from_utf8_lossy(&out.stdout).contains(&username), "{out:?}");

            // The lock dies with its process: after a crash the next serve starts.
            first.restart();
            assert_eq!(pull_blob(&first.base, &repo, &digest).await, data);
        }
        MetaBackend::Postgres => {
            let second_base = second.outcome().unwrap_or_else(|(code, output)| {
                panic!("a second serve on PostgreSQL starts, but exited with {code:?}:\n{output}")
            });
            // Both serve the same data: blobs pushed through either are pulled through both.
            assert_eq!(pull_blob(&second_base, &repo, &digest).await, data);
            let more = random_bytes(1000);
            let more_digest = push_blob(&second_base, &repo, &more).await;
            assert_eq!(pull_blob(&first.base, &repo, &more_digest).await, more);
        }
    }
}
