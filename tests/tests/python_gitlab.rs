//! GitLab API fidelity, judged by GitLab's own client library: `tests/python/gitlab_client.py`
//! drives a real server through python-gitlab's objects (users, groups, projects, members,
//! tokens, the job token scope, the container registry) and asserts what a script would see,
//! exact refusals included. python-gitlab is installed by `scripts/setup` (pinned).

use std::process::Command;

use e2e::gitlab::{start_auth_server, ADMIN_TOKEN};
use e2e::{backend_tests, MetaBackend};

backend_tests!(python_gitlab_scripts_work_unchanged);

async fn python_gitlab_scripts_work_unchanged(backend: MetaBackend) {
    let probe = Command::new("python3").args(["-c", "import gitlab, requests"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => panic!("python3 with python-gitlab is missing: run scripts/setup"),
    }
    let server = start_auth_server(backend, &[]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("gitlab_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("STOWAGE_URL", &server.base)
            .env("STOWAGE_TOKEN", ADMIN_TOKEN)
            .output()
            .map(|out| (out, server))
    })
    .await
    .expect("join")
    .expect("run python3");
    let (out, _server) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the python-gitlab script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("every check passed"), "{stdout}\n{stderr}");
}
