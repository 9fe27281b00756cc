//! A private Docker engine for one test.
//!
//! `dockerd` runs as root with its own data root, exec root, pidfile, config file and unix
//! socket in a short temporary directory under /tmp, with all host networking features off
//! (`--bridge=none`, no iptables, no forwarding/masquerading), so the host network is untouched
//! and several engines never collide. It trusts the registry under test as an insecure
//! (plain HTTP) registry. It is started under `setpriv --pdeathsig SIGKILL`, so it dies with the
//! test process even if that is killed; dockerd in turn kills its managed containerd.
//! Dropping [`Dockerd`] stops it (SIGTERM, then SIGKILL), unmounts anything left under its
//! directories and removes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{require_tool, run, Ran};

/// The docker client matching Debian's dockerd (/usr/local/bin/docker may be another version).
pub const DOCKER_CLI: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Prefix of the engines' directories in /tmp.
const DIR_PREFIX: &str = "stowdk";

pub struct Dockerd {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd trusting `insecure_registry` (`host:port`) and waits until it answers.
    pub fn start(insecure_registry: &str) -> Dockerd {
        require_tool(DOCKERD, "docker.io");
        require_tool(DOCKER_CLI, "docker.io");
        require_tool("containerd", "containerd");
        require_tool("setpriv", "util-linux");
        assert!(is_root(), "the docker tests start a private dockerd and must run as root");
        // Short path: containerd's sockets live under the exec root and unix socket paths
        // are limited to 108 bytes.
        sweep_stale_dirs();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("owner.pid"), std::process::id().to_string()).unwrap();
        for sub in ["data", "x", "cfg"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        std::fs::write(d.join("cfg/config.json"), "{}").unwrap();
        let socket = d.join("d.sock");
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "SIGKILL", "--", DOCKERD])
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--insecure-registry")
            .arg(insecure_registry)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Ok(driver) = std::env::var("STOWAGE_TEST_DOCKER_STORAGE_DRIVER") {
            cmd.arg("--storage-driver").arg(driver);
        }
        let child = cmd.spawn().expect("start dockerd");
        let mut dockerd = Dockerd { dir: Some(dir), child: Some(child), socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ran = dockerd.docker(&["info", "--format", "{{.ServerVersion}}"]);
            if ran.success() {
                break;
            }
            if let Some(status) = dockerd.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("dockerd exited with {status} before answering:\n{}", dockerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}\n{}",
                ran.stderr(),
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default()
    }

    /// A command for Debian's docker client talking to this engine, with a private config
    /// directory (no credential helpers, no host credentials) and the classic builder.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir().join("cfg"))
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// Runs `docker <args>` against this engine.
    pub fn docker(&self, args: &[&str]) -> Ran {
        let mut cmd = self.command();
        cmd.args(args);
        run(&mut cmd)
    }

    /// `docker build --network host -t tag dir`.
    pub fn build(&self, tag: &str, context: &Path) -> Ran {
        self.docker(&["build", "--network", "host", "-t", tag, context.to_str().unwrap()])
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM via kill(1) for an orderly shutdown (dockerd stops its containerd).
        // `setpriv` execs dockerd, so the child's pid is dockerd's.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // Kill anything still running from our directories (containerd, shims).
        let dir = self.dir().to_string_lossy().into_owned();
        for _ in 0..50 {
            let leftovers = processes_mentioning(&dir);
            if leftovers.is_empty() {
                break;
            }
            for pid in leftovers {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unmount_under(&dir);
    }
}

/// Unmounts everything mounted at or below `dir` (deepest first).
fn unmount_under(dir: &str) {
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() && self.dir.is_some() {
            let log = self.log();
            let tail: String =
                log.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("---- dockerd log (tail) ----\n{tail}\n---- end of dockerd log ----");
        }
        self.stop();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if dir.close().is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Removes engine directories left behind by test processes that were killed (dockerd itself
/// dies with them, but its mounts and files stay).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(owner) = std::fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let alive =
            owner.trim().parse::<u32>().map(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if alive != Ok(false) {
            continue;
        }
        let dir = path.to_string_lossy().into_owned();
        if !processes_mentioning(&dir).is_empty() {
            continue;
        }
        unmount_under(&dir);
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// PIDs of processes whose command line mentions `needle` (e.g. our private directory).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}
