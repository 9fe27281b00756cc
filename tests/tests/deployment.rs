//! The deployment files in `deploy/`, exercised as an operator would: the container image is
//! built with buildah (through `scripts/container-image`) and run with podman, then used with
//! skopeo; the systemd unit passes `systemd-analyze verify`; the Kubernetes manifests pass a
//! strict schema validation and carry a configuration `stowage config check` accepts.
//!
//! No network: the image's base is assembled locally from the libraries the binary links
//! (what the default distroless base provides), instead of pulling it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::tools::{require_tool, run, Containers};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The shared libraries (and the dynamic loader) `binary` needs, from `ldd`.
fn linked_libraries(binary: &Path) -> Vec<String> {
    let out = run(Command::new("ldd").arg(binary)).ok().stdout();
    out.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// A stand-in for `gcr.io/distroless/cc-debian12:nonroot`: the binary's libraries and a
/// `nonroot` user (65532), nothing else (no shell).
fn build_base_image(c: &Containers, name: &str) {
    let ctr = c.buildah(&["from", "scratch"]).ok().stdout().trim().to_string();
    for lib in linked_libraries(&e2e::stowage_bin()) {
        let real = std::fs::canonicalize(&lib).unwrap();
        c.buildah(&["copy", &ctr, real.to_str().unwrap(), &lib]).ok();
    }
    let passwd = c.path("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    c.buildah(&["copy", &ctr, passwd.to_str().unwrap(), "/etc/passwd"]).ok();
    c.buildah(&["commit", "-q", "--rm", &ctr, name]).ok();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn container_image_builds_runs_serves_and_stops_gracefully() {
    let c = Containers::new();
    build_base_image(&c, "localhost/stowage-test-base:cc");
    let mut build = Command::new(repo_root().join("scripts/container-image"));
    c.apply_env(&mut build);
    build
        .args(["--binary", e2e::stowage_bin().to_str().unwrap()])
        .args(["--base", "localhost/stowage-test-base:cc", "--tag", "localhost/stowage:e2e", "--"])
        .args(c.storage_arg_list());
    run(&mut build).ok();

    // What the image says about itself: unprivileged, the binary as entrypoint, serving.
    let config = c.podman(&["image", "inspect", "localhost/stowage:e2e"]).ok().json();
    let config = &config[0]["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/stowage"]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert!(config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "STOWAGE_DATA_DIR=/var/lib/stowage"));
    // Small: the image adds the binary and nothing else to its base.
    let size = |image: &str| {
        c.podman(&["image", "inspect", "--format", "{{.Size}}", image])
            .ok()
            .stdout()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let binary = std::fs::metadata(e2e::stowage_bin()).unwrap().len();
    let added = size("localhost/stowage:e2e") - size("localhost/stowage-test-base:cc");
    assert!(added <= binary + 64 * 1024, "the image adds {added} bytes to a {binary}-byte binary");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let password = "Container-e2e-passw0rd";
    let name = format!("stowage-e2e-{}", e2e::random_suffix());
    c.podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-e",
        &format!("STOWAGE_HTTP_ADDR=127.0.0.1:{port}"),
        "-e",
        &format!("STOWAGE_HTTP__HOST={base}"),
        "-e",
        &format!("STOWAGE_ADMIN_PASSWORD={password}"),
        "localhost/stowage:e2e",
    ])
    .ok();
    let stop_and_remove = || {
        let _ = c.podman(&["rm", "-f", &name]);
    };
    let started = Instant::now();
    let status = loop {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}/v2/"))
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        if status == "401" || started.elapsed() > Duration::from_secs(60) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if status != "401" {
        let logs = c.podman(&["logs", &name]).output;
        stop_and_remove();
        panic!("the container never answered GET /v2/ with 401 (last: {status}): {logs:?}");
    }

    // The admin CLI inside the container acts on the container's database.
    c.podman(&["exec", &name, "stowage", "admin", "groups", "create", "acme"]).ok();
    c.podman(&["exec", &name, "stowage", "admin", "projects", "create", "acme/app"]).ok();

    // A push and a pull through the container, with the token flow.
    c.build_scratch_image(
        "localhost/deploy-probe:1",
        "amd64",
        &[("/hello", b"from the container test")],
    );
    let layout = c.path("probe-layout");
    c.buildah(&["push", "localhost/deploy-probe:1", &format!("oci:{}:v1", layout.display())]).ok();
    let creds = format!("root:{password}");
    let dest = format!("docker://127.0.0.1:{port}/acme/app:v1");
    c.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", layout.display()),
        &dest,
    ])
    .ok();
    let inspected =
        c.skopeo(&["inspect", "--tls-verify=false", "--creds", &creds, &dest]).ok().json();
    assert_eq!(inspected["Name"], format!("127.0.0.1:{port}/acme/app"));
    assert_eq!(inspected["Labels"]["e2e.name"], "localhost/deploy-probe:1");

    // SIGTERM stops it cleanly and at once (nothing in flight), exit code 0.
    let stopping = Instant::now();
    c.podman(&["stop", "-t", "30", &name]).ok();
    let took = stopping.elapsed();
    let state = c.podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]).ok().stdout();
    let logs = c.podman(&["logs", &name]).ok().combined();
    stop_and_remove();
    assert_eq!(state.trim(), "0", "{logs}");
    assert!(took < Duration::from_secs(20), "stopping took {took:?}: {logs}");
    assert!(logs.contains("listening on http://127.0.0.1:"), "{logs}");
    assert!(!logs.contains(password), "the password leaked into the log");
}

/// `systemd-analyze verify` on the unit, with its binary path pointing at the built binary
/// (the unit names /usr/local/bin/stowage, where the README installs it): no complaint at all.
#[test]
fn systemd_unit_verifies() {
    require_tool("systemd-analyze", "systemd");
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/stowage.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/stowage serve"));
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let file = dir.path().join("stowage.service");
        std::fs::write(
            &file,
            text.replace("/usr/local/bin/stowage", e2e::stowage_bin().to_str().unwrap()),
        )
        .unwrap();
        run(Command::new("systemd-analyze").arg("verify").arg(&file))
    };
    let verified = verify(&unit);
    assert!(verified.success() && verified.combined().trim().is_empty(), "{}", verified.combined());
    // The check can fail: a broken directive is reported.
    let broken = verify(&unit.replace("Type=exec", "Type=sometimes"));
    assert!(broken.combined().contains("Failed to parse service type"), "{}", broken.combined());
}

/// The Kubernetes manifests pass a strict schema validation (unknown fields refused), and the
/// configuration they give the pods (the ConfigMap's file plus the Deployment's variables,
/// with placeholder secrets) is one `stowage config check` accepts: the example cannot drift
/// from the configuration keys the binary knows.
#[test]
fn kubernetes_manifests_validate_and_configure_a_valid_registry() {
    let manifests = repo_root().join("deploy/kubernetes/stowage.yaml");
    let validated = run(Command::new("kubernetes-validate").arg("--strict").arg(&manifests));
    assert!(validated.success(), "kubernetes-validate:\n{}", validated.combined());
    for kind in ["namespace", "configmap", "deployment", "service", "poddisruptionbudget"] {
        assert!(validated.combined().contains(&format!("passed for resource {kind}/")), "{kind}");
    }

    // The pods' configuration, as Kubernetes would hand it over.
    let extract = r#"
import json, sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yml"]
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
env = {}
for container in pod["initContainers"] + pod["containers"]:
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = "placeholder-" + var["valueFrom"]["secretKeyRef"]["key"]
print(json.dumps({"config": config, "env": env, "args": [c["args"] for c in pod["initContainers"] + pod["containers"]]}))
"#;
    let out = run(Command::new("python3").arg("-c").arg(extract).arg(&manifests)).ok();
    let pods = out.json();
    assert_eq!(pods["args"], serde_json::json!([["migrate"], ["serve"]]));
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yml");
    std::fs::write(&config_file, pods["config"].as_str().unwrap()).unwrap();
    let mut check = Command::new(e2e::stowage_bin());
    check.args(["config", "check"]).current_dir(dir.path());
    for (key, _) in std::env::vars() {
        if key.starts_with("STOWAGE_") {
            check.env_remove(key);
        }
    }
    for (key, value) in pods["env"].as_object().unwrap() {
        let value = value.as_str().unwrap();
        let value = match key.as_str() {
            "STOWAGE_CONFIG" => config_file.to_str().unwrap().to_string(),
            "STOWAGE_DATABASE_URL" => {
                "postgres://stowage:placeholder@127.0.0.1:5432/stowage".into()
            }
            _ => value.to_string(),
        };
        check.env(key, value);
    }
    let checked = run(&mut check);
    assert!(
        checked.success(),
        "stowage config check refused the manifests' configuration:\n{}",
        checked.combined()
    );
    assert_eq!(checked.stdout().trim(), "configuration is valid");
}
