//! Running `stowage` commands that exit (or must exit) on their own: `config check`, `admin …`,
//! a `serve` that must refuse to start. Output is captured through files so a process that
//! wrongly keeps running can be stopped and reported instead of hanging the test.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or stopped) `stowage` command did.
#[derive(Debug)]
pub struct Run {
    /// `None` when it was still running at the deadline (and was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The exit code; panics (with the output) if the process had to be killed.
    pub fn code(&self) -> i32 {
        self.status
            .unwrap_or_else(|| panic!("stowage did not exit on its own: {self:#?}"))
            .code()
            .unwrap_or(-1)
    }
}

/// Runs `stowage <args>` in `dir` with only the given `STOWAGE_*` variables (the test
/// process's own are removed, so nothing leaks in), killing it after `timeout`.
pub fn run_stowage(args: &[&str], env: &[(&str, &str)], dir: &Path, timeout: Duration) -> Run {
    let out = dir.join(format!("stdout-{}", crate::random_suffix()));
    let err = dir.join(format!("stderr-{}", crate::random_suffix()));
    let mut cmd = Command::new(crate::stowage_bin());
    cmd.args(args).current_dir(dir).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("STOWAGE_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run stowage");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for stowage") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    Run {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        elapsed,
    }
}
