//! Running real client tools (skopeo, buildah, podman, docker) from tests.
//!
//! Every tool runs with its state in a per-test temporary directory (containers-storage with the
//! `vfs` driver under `--root`/`--runroot`, a private auth file, a private docker config), so
//! tests never see each other's images and never touch the host's. A missing tool is a test
//! failure that says how to install it, never a silent skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one client command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Panics with an install hint when `program` is not on `PATH` (or not at the absolute path).
#[track_caller]
pub fn require_tool(program: &str, debian_package: &str) {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
            .unwrap_or(false)
    };
    assert!(
        found,
        "`{program}` is not installed; this test needs it. Install it with \
         `apt-get install -y {debian_package}` or run `scripts/setup`."
    );
}

/// The finished output of one command, with convenient accessors.
#[derive(Debug)]
pub struct Ran {
    pub cmdline: String,
    pub output: Output,
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }
    pub fn success(&self) -> bool {
        self.output.status.success()
    }
    fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    /// Panics (showing the command and its output) unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Ran {
        assert!(self.success(), "command failed: {}", self.describe());
        self
    }
    /// Panics unless it failed.
    #[track_caller]
    pub fn failed(self) -> Ran {
        assert!(!self.success(), "command unexpectedly succeeded: {}", self.describe());
        self
    }
    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

/// Runs `cmd` to completion with a timeout, capturing stdout and stderr.
pub fn run(cmd: &mut Command) -> Ran {
    let cmdline = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    eprintln!("$ {cmdline}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{cmdline}`: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!(
                "`{cmdline}` did not finish within {COMMAND_TIMEOUT:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() };
    Ran { cmdline, output }
}

/// A private containers-storage (buildah/podman) and skopeo setup in a temporary directory.
pub struct Containers {
    dir: tempfile::TempDir,
}

impl Containers {
    /// Checks that skopeo, buildah and podman are installed and creates the private state.
    pub fn new() -> Containers {
        require_tool("skopeo", "skopeo");
        require_tool("buildah", "buildah");
        require_tool("podman", "podman");
        let dir = tempfile::Builder::new().prefix("stowage-clients-").tempdir().expect("tempdir");
        for sub in ["root", "run", "tmp", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("auth.json"), "{}").unwrap();
        // podman's default ulimits (nofile and nproc of 1048576) exceed this sandbox's hard
        // limits, so `podman run` would fail to set them: keep the process's own limits.
        std::fs::write(dir.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n")
            .unwrap();
        Containers { dir }
    }

    /// A scratch directory for files and OCI layouts.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("work").join(name)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("BUILDAH_ISOLATION", "chroot")
            .current_dir(self.dir.path().join("work"));
    }

    /// The global arguments that put buildah or podman on this private storage, for scripts
    /// that run them (`scripts/container-image -- <these>`).
    pub fn storage_arg_list(&self) -> Vec<String> {
        let mut cmd = Command::new("true");
        self.storage_args(&mut cmd);
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// Sets this private state's variables on a command run by a script.
    pub fn apply_env(&self, cmd: &mut Command) {
        self.env(cmd);
    }

    fn storage_args(&self, cmd: &mut Command) {
        cmd.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
    }

    /// Runs `buildah <args>` on the private storage.
    pub fn buildah(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("buildah");
        self.env(&mut cmd);
        self.storage_args(&mut cmd);
        cmd.args(args);
        run(&mut cmd)
    }

    /// Runs `podman <args>` on the private storage.
    pub fn podman(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("podman");
        self.env(&mut cmd);
        self.storage_args(&mut cmd);
        cmd.arg("--tmpdir").arg(self.dir.path().join("tmp")).args([
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
        ]);
        cmd.args(args);
        run(&mut cmd)
    }

    /// Runs `skopeo <args>` (no storage of its own; `containers-storage:` refs are not used).
    pub fn skopeo(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("skopeo");
        self.env(&mut cmd);
        cmd.args(args);
        run(&mut cmd)
    }

    /// Builds a single-layer image `name` from scratch holding `files` (path in image, bytes),
    /// with the given architecture, in the private storage. Returns the image ID.
    pub fn build_scratch_image(&self, name: &str, arch: &str, files: &[(&str, &[u8])]) -> String {
        self.build_image(name, "scratch", arch, files)
    }

    /// Builds image `name` on top of `base` (`scratch` or an image in the private storage),
    /// adding one layer holding `files`: images built on one base share its layers.
    /// Returns the image ID.
    pub fn build_image(
        &self,
        name: &str,
        base: &str,
        arch: &str,
        files: &[(&str, &[u8])],
    ) -> String {
        let ctr = self
            .buildah(&["from", "--name", &format!("ctr-{}", crate::random_suffix()), base])
            .ok();
        let ctr = ctr.stdout().trim().to_string();
        for (i, (path, data)) in files.iter().enumerate() {
            let src = self.path(&format!("src-{}-{i}", crate::random_suffix()));
            std::fs::write(&src, data).unwrap();
            self.buildah(&["copy", &ctr, src.to_str().unwrap(), path]).ok();
        }
        self.buildah(&[
            "config",
            "--arch",
            arch,
            "--os",
            "linux",
            "--label",
            &format!("e2e.name={name}"),
            &ctr,
        ])
        .ok();
        let id =
            self.buildah(&["commit", "-q", "--rm", &ctr, name]).ok().stdout().trim().to_string();
        assert_eq!(id.len(), 64, "buildah commit printed no image ID: {id:?}");
        id
    }
}

impl Default for Containers {
    fn default() -> Self {
        Self::new()
    }
}

/// The manifest digests an OCI layout's index.json lists, with their `ref.name` annotations.
pub fn oci_layout_manifests(layout: &Path) -> Vec<(String, Option<String>)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().expect("digest").to_string(),
                m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Reads blob `digest` from an OCI layout and checks that its content matches the digest.
pub fn oci_layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} missing from {}: {e}", layout.display()));
    assert_eq!(crate::sha256_digest(&data), digest, "blob content does not match its digest");
    data
}
