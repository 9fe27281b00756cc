//! Real clients against a registry with token authentication: `docker login` with a personal
//! access token, `podman login` and `skopeo login` with a password, a deploy token and a CI job
//! token, the CI flow (`stowage ci-env` → `docker login -u "$CI_REGISTRY_USER" -p
//! "$CI_REGISTRY_PASSWORD" "$CI_REGISTRY"` → push to `$CI_REGISTRY_IMAGE`), anonymous pulls of
//! a public project and refused pulls of a private one. The clients find the token service on
//! their own, from the registry's `WWW-Authenticate` challenge.
//!
//! Docker tests start a private dockerd and are named `docker_*`.

use std::process::Command;

use e2e::dockerd::{Dockerd, DOCKER_CLI};
use e2e::gitlab::{level, start_auth_server, GitLab, Token, User, CI_USERNAME};
use e2e::tools::{run, Containers};
use e2e::{random_bytes, MetaBackend, TestServer};

/// One plain `#[test]` per metadata backend for each named test function taking a backend.
macro_rules! client_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(e2e::MetaBackend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(e2e::MetaBackend::Postgres) } )*
        }
    };
}

client_tests!(
    podman_and_skopeo_login_with_password_deploy_token_and_job_token,
    docker_login_with_pat_anonymous_pull_and_ci_env_flow,
);

/// Group `acme` (public) with a private `acme/app`, a public `acme/pub` and a private
/// `acme/other`; `dev` is developer on the group.
struct World {
    server: TestServer,
    api: GitLab,
    app: i64,
    other: i64,
    dev: User,
    rt: tokio::runtime::Runtime,
}

fn world(backend: MetaBackend) -> World {
    let server = start_auth_server(backend, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = GitLab::root(&server);
    let (app, other, dev) = rt.block_on(async {
        let acme = api.create_group("acme", None, "public").await;
        let app = api.create_project(acme, "app", "private").await;
        api.create_project(acme, "pub", "public").await;
        let other = api.create_project(acme, "other", "private").await;
        let dev = api.create_user("dev").await;
        api.add_member("groups", acme, dev.id, level::DEVELOPER).await;
        (app, other, dev)
    });
    World { server, api, app, other, dev, rt }
}

impl World {
    fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = self.server.log();
        for s in secrets {
            assert!(!log.contains(s), "the server log contains a secret ({}…)", &s[..4]);
        }
    }
}

/// podman and skopeo log in with each credential kind and push and pull what it allows.
fn podman_and_skopeo_login_with_password_deploy_token_and_job_token(backend: MetaBackend) {
    let w = world(backend);
    let addr = w.server.addr.as_str();
    let c = Containers::new();
    c.build_scratch_image(
        "localhost/e2e-auth:v1",
        "amd64",
        &[("/payload.bin", &random_bytes(64 * 1024))],
    );
    let layout = c.path("layout");
    let layout_ref = format!("oci:{}:v1", layout.to_str().unwrap());
    c.buildah(&["push", "localhost/e2e-auth:v1", &layout_ref]).ok();
    let app = format!("{addr}/acme/app");
    let public = format!("{addr}/acme/pub");
    let other = format!("{addr}/acme/other");

    // Without logging in: pushing is refused.
    c.podman(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-auth:v1",
        &format!("docker://{app}:anon"),
    ])
    .failed();

    // podman, password: push to the private and the public project, pull back.
    c.podman(&["login", "--tls-verify=false", "-u", &w.dev.username, "-p", "wrong-password", addr])
        .failed();
    c.podman(&["login", "--tls-verify=false", "-u", &w.dev.username, "-p", &w.dev.password, addr])
        .ok();
    c.podman(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-auth:v1",
        &format!("docker://{app}:password"),
    ])
    .ok();
    c.podman(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-auth:v1",
        &format!("docker://{public}:v1"),
    ])
    .ok();
    c.podman(&["pull", "--tls-verify=false", &format!("{app}:password")]).ok();
    c.podman(&["logout", addr]).ok();

    // Anonymous: the public project pulls, the private one does not.
    c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{public}:v1")]).ok();
    let refused = c
        .skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{app}:password")])
        .failed();
    let err = refused.stderr().to_lowercase();
    assert!(
        err.contains("unauthorized")
            || err.contains("denied")
            || err.contains("authentication required"),
        "anonymous pull of a private image failed for another reason:\n{err}"
    );
    c.podman(&["pull", "--tls-verify=false", &format!("{app}:password")]).failed();

    // skopeo, project deploy token (read + write): push and pull acme/app, nothing on acme/other.
    let deploy: Token = w.rt.block_on(w.api.create_deploy_token(
        "projects",
        w.app,
        "deploy-app",
        &["read_registry", "write_registry"],
    ));
    c.skopeo(&["login", "--tls-verify=false", "-u", &deploy.username, "-p", &deploy.token, addr])
        .ok();
    c.skopeo(&["copy", "--dest-tls-verify=false", &layout_ref, &format!("docker://{app}:deploy")])
        .ok();
    c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{app}:password")]).ok();
    c.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &layout_ref,
        &format!("docker://{other}:deploy"),
    ])
    .failed();
    c.skopeo(&["logout", addr]).ok();

    // A read-only deploy token pulls with podman but cannot push.
    let reader = w.rt.block_on(w.api.create_deploy_token(
        "projects",
        w.app,
        "deploy-read",
        &["read_registry"],
    ));
    c.podman(&["login", "--tls-verify=false", "-u", &reader.username, "-p", &reader.token, addr])
        .ok();
    c.podman(&["pull", "--tls-verify=false", &format!("{app}:deploy")]).ok();
    c.podman(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-auth:v1",
        &format!("docker://{app}:reader"),
    ])
    .failed();
    c.podman(&["logout", addr]).ok();

    // skopeo and podman, CI job token of acme/app: push and pull its own project; acme/other
    // refuses it until acme/other allowlists acme/app, and then only for pulling.
    let job = w.rt.block_on(w.api.create_job_token(w.app));
    assert_eq!(job.username, CI_USERNAME);
    c.skopeo(&["login", "--tls-verify=false", "-u", CI_USERNAME, "-p", &job.token, addr]).ok();
    c.skopeo(&["copy", "--dest-tls-verify=false", &layout_ref, &format!("docker://{app}:job")])
        .ok();
    c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{app}:job")]).ok();
    c.skopeo(&["copy", "--dest-tls-verify=false", &layout_ref, &format!("docker://{other}:job")])
        .failed();
    c.skopeo(&["logout", addr]).ok();
    // Seed acme/other as the developer, then allowlist.
    c.skopeo(&["login", "--tls-verify=false", "-u", &w.dev.username, "-p", &w.dev.password, addr])
        .ok();
    c.skopeo(&["copy", "--dest-tls-verify=false", &layout_ref, &format!("docker://{other}:v1")])
        .ok();
    c.skopeo(&["logout", addr]).ok();
    c.podman(&["login", "--tls-verify=false", "-u", CI_USERNAME, "-p", &job.token, addr]).ok();
    c.podman(&["pull", "--tls-verify=false", &format!("{other}:v1")]).failed();
    w.rt.block_on(w.api.allow_job_token(w.other, w.app));
    c.podman(&["pull", "--tls-verify=false", &format!("{other}:v1")]).ok();
    c.podman(&[
        "push",
        "--tls-verify=false",
        "localhost/e2e-auth:v1",
        &format!("docker://{other}:job"),
    ])
    .failed();
    c.podman(&["pull", "--tls-verify=false", &format!("{app}:job")]).ok();
    c.podman(&["logout", addr]).ok();

    w.assert_log_free_of(&[&w.dev.password, &deploy.token, &reader.token, &job.token]);
}

/// A docker build context: one random payload file.
fn docker_context(dir: &std::path::Path) {
    std::fs::write(dir.join("payload.bin"), random_bytes(128 * 1024)).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY payload.bin /payload.bin\n")
        .unwrap();
}

/// `docker login` with a personal access token, push and pull; after `docker logout` the
/// public image still pulls and the private one does not; then a CI job logs in with the
/// variables `stowage ci-env` prints and pushes to `$CI_REGISTRY_IMAGE`.
fn docker_login_with_pat_anonymous_pull_and_ci_env_flow(backend: MetaBackend) {
    let w = world(backend);
    let addr = w.server.addr.clone();
    let pat = w.rt.block_on(w.api.create_pat(&w.dev, &["read_registry", "write_registry"]));
    let docker = Dockerd::start(&addr);
    let ctx = tempfile::Builder::new().prefix("stowage-docker-ctx-").tempdir().unwrap();
    docker_context(ctx.path());
    let private = format!("{addr}/acme/app:v1");
    let public = format!("{addr}/acme/pub:v1");
    docker.build(&private, ctx.path()).ok();
    docker.docker(&["tag", &private, &public]).ok();

    // Not logged in: push refused.
    let refused = docker.docker(&["push", &private]).failed().combined().to_lowercase();
    assert!(
        refused.contains("denied")
            || refused.contains("unauthorized")
            || refused.contains("authentication required"),
        "{refused}"
    );

    docker.docker(&["login", "-u", &w.dev.username, "-p", &pat.token, &addr]).ok();
    docker.docker(&["push", &private]).ok();
    docker.docker(&["push", &public]).ok();
    docker.docker(&["rmi", &private, &public]).ok();
    docker.docker(&["pull", &private]).ok();
    docker.docker(&["logout", &addr]).ok();
    docker.docker(&["rmi", &private]).ok();

    // Anonymous: public pulls, private does not.
    docker.docker(&["pull", &public]).ok();
    let refused = docker.docker(&["pull", &private]).failed().combined().to_lowercase();
    assert!(
        refused.contains("denied")
            || refused.contains("unauthorized")
            || refused.contains("not found")
            || refused.contains("authentication required"),
        "{refused}"
    );

    // The CI flow: the job's variables from `stowage ci-env`, as a CI runner would use them.
    let ci_env = run(w
        .server
        .stowage_command(&["ci-env", "--project", "acme/app"])
        .env("STOWAGE_HTTP_ADDR", &addr))
    .ok()
    .stdout();
    for var in ["CI_REGISTRY", "CI_REGISTRY_IMAGE", "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD"] {
        assert!(ci_env.contains(&format!("export {var}=")), "ci-env printed no {var}:\n{ci_env}");
    }
    assert!(ci_env.contains(&format!("export CI_REGISTRY='{addr}'")), "{ci_env}");
    assert!(ci_env.contains(&format!("export CI_REGISTRY_IMAGE='{addr}/acme/app'")), "{ci_env}");
    assert!(ci_env.contains(&format!("export CI_REGISTRY_USER='{CI_USERNAME}'")), "{ci_env}");
    let job_secret = ci_env
        .lines()
        .find_map(|l| l.strip_prefix("export CI_REGISTRY_PASSWORD='"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("CI_REGISTRY_PASSWORD line")
        .to_string();
    let docker_cmd = docker.command();
    let mut job = Command::new("sh");
    for (k, v) in docker_cmd.get_envs() {
        match v {
            Some(v) => job.env(k, v),
            None => job.env_remove(k),
        };
    }
    job.env("CI_ENV", &ci_env).env("DOCKER", DOCKER_CLI).env("LOCAL", &private).arg("-ec").arg(
        r#"eval "$CI_ENV"
"$DOCKER" login -u "$CI_REGISTRY_USER" -p "$CI_REGISTRY_PASSWORD" "$CI_REGISTRY"
"$DOCKER" pull "$CI_REGISTRY_IMAGE:v1"
"$DOCKER" tag "$CI_REGISTRY_IMAGE:v1" "$CI_REGISTRY_IMAGE:ci"
"$DOCKER" push "$CI_REGISTRY_IMAGE:ci"
"$DOCKER" tag "$CI_REGISTRY_IMAGE:v1" "$CI_REGISTRY/acme/other:ci"
if "$DOCKER" push "$CI_REGISTRY/acme/other:ci"; then echo "PUSHED TO OTHER PROJECT"; exit 1; fi
"$DOCKER" logout "$CI_REGISTRY"
"#,
    );
    let ran = run(&mut job).ok();
    assert!(!ran.combined().contains("PUSHED TO OTHER PROJECT"), "{}", ran.combined());
    docker.docker(&["rmi", &format!("{addr}/acme/app:ci")]).ok();
    // The CI push is there: a developer pulls it.
    docker.docker(&["login", "-u", &w.dev.username, "-p", &w.dev.password, &addr]).ok();
    docker.docker(&["pull", &format!("{addr}/acme/app:ci")]).ok();
    docker.docker(&["logout", &addr]).ok();
    let _ = w.other;
    w.assert_log_free_of(&[&w.dev.password, &pat.token, &job_secret]);
}
