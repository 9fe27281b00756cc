//! Real clients against a real server: each test is a user story told with skopeo, buildah,
//! podman or docker, exactly as an operator would type it. Images are built locally (no
//! network): buildah `from scratch` + `copy` + `commit`, or `docker build` of `FROM scratch`.
//!
//! Every tool keeps its state in per-test temporary directories (see `e2e::tools`), and docker
//! tests start a private engine (see `e2e::dockerd`). Docker tests are named `docker_*` so the
//! nextest config can run them one at a time.

use std::collections::BTreeSet;

use e2e::dockerd::Dockerd;
use e2e::tools::{oci_layout_blob, oci_layout_manifests, Containers};
use e2e::{random_bytes, sha256_digest, unique_repo, MetaBackend, TestServer};
use serde_json::Value;

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
    skopeo_copy_round_trip_inspect_list_tags_delete,
    buildah_push_then_podman_pull,
    multi_arch_index_push_and_platform_pull,
    docker_build_push_rmi_pull,
    docker_push_to_second_repository_mounts_layers,
);

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn tags(c: &Containers, image: &str) -> Vec<String> {
    let listed =
        c.skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{image}")]).ok().json();
    let mut tags: Vec<String> = listed["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("list-tags output has no Tags array: {listed}"))
        .iter()
        .map(|t| t.as_str().expect("tag is a string").to_string())
        .collect();
    tags.sort();
    tags
}

fn read_trimmed(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A user keeps images as OCI layouts on disk and moves them through the registry with skopeo:
/// the manifest comes back byte for byte, inspect and list-tags describe what was pushed, and a
/// deleted image is gone while its neighbour stays.
fn skopeo_copy_round_trip_inspect_list_tags_delete(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let c = Containers::new();
    let payload1 = random_bytes(200 * 1024);
    let payload2 = random_bytes(50 * 1024);
    c.build_scratch_image("localhost/e2e-skopeo:v1", "amd64", &[("/payload.bin", &payload1)]);
    c.build_scratch_image("localhost/e2e-skopeo:v2", "amd64", &[("/payload.bin", &payload2)]);
    let layout = c.path("layout");
    let layout_s = layout.to_str().unwrap();
    c.buildah(&["push", "localhost/e2e-skopeo:v1", &format!("oci:{layout_s}:v1")]).ok();
    c.buildah(&["push", "localhost/e2e-skopeo:v2", &format!("oci:{layout_s}:v2")]).ok();
    let local = oci_layout_manifests(&layout);
    let digest_of = |tag: &str| {
        local
            .iter()
            .find(|(_, name)| name.as_deref() == Some(tag))
            .unwrap_or_else(|| panic!("tag {tag} missing from OCI layout index: {local:?}"))
            .0
            .clone()
    };
    let (v1, v2) = (digest_of("v1"), digest_of("v2"));
    assert_ne!(v1, v2);

    let repo = unique_repo("skopeo");
    let image = format!("{}/{repo}", server.addr);
    for tag in ["v1", "v2"] {
        c.skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{layout_s}:{tag}"),
            &format!("docker://{image}:{tag}"),
        ])
        .ok();
    }

    // The registry serves the very manifest bytes that were pushed, by tag and by digest.
    let raw =
        c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}:v1")]).ok();
    assert_eq!(sha256_digest(&raw.output.stdout), v1, "manifest by tag changed in transit");
    let raw_by_digest = c
        .skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}@{v1}")])
        .ok();
    assert_eq!(raw_by_digest.output.stdout, raw.output.stdout);
    let manifest: Value = serde_json::from_slice(&raw.output.stdout).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{manifest}");

    let inspected =
        c.skopeo(&["inspect", "--tls-verify=false", &format!("docker://{image}:v1")]).ok().json();
    assert_eq!(inspected["Digest"], v1.as_str(), "{inspected}");
    assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
    assert_eq!(inspected["Os"], "linux", "{inspected}");
    assert_eq!(inspected["Labels"]["e2e.name"], "localhost/e2e-skopeo:v1", "{inspected}");
    assert_eq!(inspected["Layers"].as_array().map(|l| l.len()), Some(1), "{inspected}");
    assert_eq!(tags(&c, &image), vec!["v1", "v2"]);

    // Copy back out to a fresh layout: same manifest digest, and every blob intact.
    let back = c.path("back");
    c.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}:v1"),
        &format!("oci:{}:v1", back.to_str().unwrap()),
    ])
    .ok();
    let returned = oci_layout_manifests(&back);
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(returned[0].0, v1, "manifest digest changed on the round trip");
    let back_manifest: Value = serde_json::from_slice(&oci_layout_blob(&back, &v1)).unwrap();
    let config_digest = back_manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(oci_layout_blob(&back, config_digest), oci_layout_blob(&layout, config_digest));
    for layer in back_manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert_eq!(oci_layout_blob(&back, d), oci_layout_blob(&layout, d), "layer {d} differs");
    }

    // Delete v1: it disappears from the tag list and cannot be fetched; v2 is untouched.
    c.skopeo(&["delete", "--tls-verify=false", &format!("docker://{image}:v1")]).ok();
    assert_eq!(tags(&c, &image), vec!["v2"]);
    let gone = c
        .skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}:v1")])
        .failed();
    assert!(gone.stderr().to_lowercase().contains("manifest unknown"), "{}", gone.stderr());
    c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}@{v1}")])
        .failed();
    let raw2 =
        c.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}:v2")]).ok();
    assert_eq!(sha256_digest(&raw2.output.stdout), v2);
}

/// A developer builds an image with buildah and pushes it; a teammate pulls it with podman and
/// gets the same image, content included; podman can push it on under another tag.
fn buildah_push_then_podman_pull(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let c = Containers::new();
    let payload = random_bytes(300 * 1024);
    let id = c.build_scratch_image(
        "localhost/e2e-buildah:latest",
        "amd64",
        &[("/app/payload.bin", &payload), ("/app/hello.txt", b"hello from buildah\n")],
    );
    let repo = unique_repo("buildah");
    let image = format!("{}/{repo}", server.addr);
    let digestfile = c.path("digest");
    c.buildah(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digestfile.to_str().unwrap(),
        "localhost/e2e-buildah:latest",
        &format!("docker://{image}:latest"),
    ])
    .ok();
    let digest = read_trimmed(&digestfile);
    assert!(digest.starts_with("sha256:"), "{digest}");

    // Remove the local copy so podman really pulls.
    c.buildah(&["rmi", "localhost/e2e-buildah:latest"]).ok();
    let pulled = c.podman(&["pull", "--tls-verify=false", &format!("{image}:latest")]).ok();
    assert_eq!(
        pulled.stdout().trim().lines().last(),
        Some(id.as_str()),
        "podman pulled another image"
    );
    let inspected = c.podman(&["image", "inspect", &format!("{image}:latest")]).ok().json();
    let img = &inspected[0];
    assert_eq!(img["Id"], id.as_str(), "{img}");
    assert_eq!(img["Digest"], digest.as_str(), "{img}");
    assert_eq!(img["Architecture"], "amd64", "{img}");
    assert_eq!(img["Labels"]["e2e.name"], "localhost/e2e-buildah:latest", "{img}");
    let repo_digests: Vec<&str> =
        img["RepoDigests"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    assert!(repo_digests.contains(&format!("{image}@{digest}").as_str()), "{repo_digests:?}");

    // The files are there, byte for byte.
    let mount =
        c.podman(&["image", "mount", &format!("{image}:latest")]).ok().stdout().trim().to_string();
    let root = std::path::Path::new(&mount);
    assert_eq!(
        std::fs::read(root.join("app/payload.bin")).expect("payload in pulled image"),
        payload
    );
    assert_eq!(std::fs::read(root.join("app/hello.txt")).unwrap(), b"hello from buildah\n");
    c.podman(&["image", "unmount", &format!("{image}:latest")]).ok();

    // Pull by digest works too, and podman can push the image on under a new tag.
    c.podman(&["pull", "--tls-verify=false", &format!("{image}@{digest}")]).ok();
    c.podman(&[
        "push",
        "--tls-verify=false",
        &format!("{image}:latest"),
        &format!("docker://{image}:copy"),
    ])
    .ok();
    assert_eq!(tags(&c, &image), vec!["copy", "latest"]);
}

/// A team publishes one tag for two architectures; each platform's client gets its own image.
fn multi_arch_index_push_and_platform_pull(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let c = Containers::new();
    let amd_id =
        c.build_scratch_image("localhost/e2e-multi:amd64", "amd64", &[("/arch", b"amd64\n")]);
    let arm_id =
        c.build_scratch_image("localhost/e2e-multi:arm64", "arm64", &[("/arch", b"arm64\n")]);
    c.buildah(&["manifest", "create", "localhost/e2e-multi:list"]).ok();
    for arch in ["amd64", "arm64"] {
        c.buildah(&[
            "manifest",
            "add",
            "localhost/e2e-multi:list",
            &format!("containers-storage:localhost/e2e-multi:{arch}"),
        ])
        .ok();
    }
    let repo = unique_repo("multi");
    let image = format!("{}/{repo}", server.addr);
    let digestfile = c.path("digest");
    c.buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        digestfile.to_str().unwrap(),
        "localhost/e2e-multi:list",
        &format!("docker://{image}:multi"),
    ])
    .ok();
    let index_digest = read_trimmed(&digestfile);

    let raw = c
        .skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}:multi")])
        .ok();
    assert_eq!(sha256_digest(&raw.output.stdout), index_digest, "index bytes changed in transit");
    let index = raw.json();
    let media_type = index["mediaType"].as_str().unwrap_or_default();
    assert!(media_type == OCI_INDEX || media_type == DOCKER_LIST, "not an index: {index}");
    let entries = index["manifests"].as_array().expect("index has manifests");
    assert_eq!(entries.len(), 2, "{index}");
    let arches: BTreeSet<&str> =
        entries.iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
    assert_eq!(arches, BTreeSet::from(["amd64", "arm64"]), "{index}");
    let child = |arch: &str| -> String {
        entries
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .and_then(|m| m["digest"].as_str())
            .unwrap()
            .to_string()
    };
    for arch in ["amd64", "arm64"] {
        let d = child(arch);
        let raw_child = c
            .skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}@{d}")])
            .ok();
        assert_eq!(sha256_digest(&raw_child.output.stdout), d, "child {arch} bytes changed");
    }

    // skopeo resolving the index for arm64 copies exactly the arm64 child.
    let out = c.path("arm64-layout");
    c.skopeo(&[
        "--override-arch",
        "arm64",
        "--override-os",
        "linux",
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}:multi"),
        &format!("oci:{}:arm", out.to_str().unwrap()),
    ])
    .ok();
    let copied = oci_layout_manifests(&out);
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].0, child("arm64"), "skopeo picked the wrong child for arm64");
    let m: Value = serde_json::from_slice(&oci_layout_blob(&out, &copied[0].0)).unwrap();
    let config: Value =
        serde_json::from_slice(&oci_layout_blob(&out, m["config"]["digest"].as_str().unwrap()))
            .unwrap();
    assert_eq!(config["architecture"], "arm64", "{config}");

    // podman on each platform gets that platform's image.
    for (arch, id) in [("arm64", &arm_id), ("amd64", &amd_id)] {
        c.podman(&["pull", "--tls-verify=false", "--arch", arch, &format!("{image}:multi")]).ok();
        let img = c.podman(&["image", "inspect", &format!("{image}:multi")]).ok().json();
        assert_eq!(img[0]["Architecture"], arch, "{img}");
        assert_eq!(img[0]["Id"], id.as_str(), "{img}");
    }
}

/// Writes a docker build context with two layers and returns (dir, payload).
fn docker_context(c: &tempfile::TempDir) -> Vec<u8> {
    let payload = random_bytes(256 * 1024);
    std::fs::write(c.path().join("payload.bin"), &payload).unwrap();
    std::fs::write(c.path().join("hello.txt"), format!("hello {}\n", e2e::random_suffix()))
        .unwrap();
    std::fs::write(
        c.path().join("Dockerfile"),
        "FROM scratch\nCOPY payload.bin /payload.bin\nCOPY hello.txt /hello.txt\nLABEL e2e=docker\n",
    )
    .unwrap();
    payload
}

/// `<tag>: digest: sha256:… size: N` from docker push output.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    let prefix = format!("{tag}: digest: ");
    push_output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in docker push output:\n{push_output}"))
        .to_string()
}

/// Someone builds with docker, pushes, deletes the local image and pulls it back: same image
/// ID, same digest, same files.
fn docker_build_push_rmi_pull(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let docker = Dockerd::start(&server.addr);
    let ctx = tempfile::Builder::new().prefix("stowage-docker-ctx-").tempdir().unwrap();
    let payload = docker_context(&ctx);
    let image = format!("{}/{}", server.addr, unique_repo("docker"));
    let tag = format!("{image}:v1");
    docker.build(&tag, ctx.path()).ok();
    let id = docker
        .docker(&["image", "inspect", "--format", "{{.Id}}", &tag])
        .ok()
        .stdout()
        .trim()
        .to_string();

    let push = docker.docker(&["push", &tag]).ok().combined();
    let digest = pushed_digest(&push, "v1");
    assert_eq!(push.matches(": Pushed").count(), 2, "expected two layers uploaded:\n{push}");

    docker.docker(&["rmi", &tag]).ok();
    docker.docker(&["image", "inspect", &tag]).failed();

    let pull = docker.docker(&["pull", &tag]).ok().combined();
    assert!(pull.contains(&format!("Digest: {digest}")), "pull resolved another digest:\n{pull}");
    let inspected = docker.docker(&["image", "inspect", &tag]).ok().json();
    assert_eq!(inspected[0]["Id"], id.as_str(), "pulled image has another ID");
    assert_eq!(inspected[0]["Config"]["Labels"]["e2e"], "docker");
    let repo_digests: Vec<&str> =
        inspected[0]["RepoDigests"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    assert!(repo_digests.contains(&format!("{image}@{digest}").as_str()), "{repo_digests:?}");

    // The layer content survived: copy the file out of a (never started) container.
    let ctr = docker.docker(&["create", &tag, "/none"]).ok().stdout().trim().to_string();
    let out = ctx.path().join("out.bin");
    docker.docker(&["cp", &format!("{ctr}:/payload.bin"), out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&out).unwrap(), payload, "payload changed on the round trip");
    docker.docker(&["rm", &ctr]).ok();

    // And by digest.
    docker.docker(&["rmi", "-f", &id]).ok();
    docker.docker(&["pull", &format!("{image}@{digest}")]).ok();
    let again = docker
        .docker(&["image", "inspect", "--format", "{{.Id}}", &format!("{image}@{digest}")])
        .ok();
    assert_eq!(again.stdout().trim(), id);
}

/// Pushing an image to a second repository of the same registry mounts its layers from the
/// first one instead of uploading them again, and the second repository then serves them.
fn docker_push_to_second_repository_mounts_layers(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let docker = Dockerd::start(&server.addr);
    let ctx = tempfile::Builder::new().prefix("stowage-docker-ctx-").tempdir().unwrap();
    docker_context(&ctx);
    let first_repo = unique_repo("mount-src");
    let second_repo = unique_repo("mount-dst");
    let first = format!("{}/{first_repo}:v1", server.addr);
    let second = format!("{}/{second_repo}:v1", server.addr);
    docker.build(&first, ctx.path()).ok();
    let push1 = docker.docker(&["push", &first]).ok().combined();
    assert_eq!(push1.matches(": Pushed").count(), 2, "{push1}");
    let digest1 = pushed_digest(&push1, "v1");

    docker.docker(&["tag", &first, &second]).ok();
    let push2 = docker.docker(&["push", &second]).ok().combined();
    assert_eq!(pushed_digest(&push2, "v1"), digest1);
    assert_eq!(
        push2.matches(&format!("Mounted from {first_repo}")).count(),
        2,
        "layers were not mounted from {first_repo}:\n{push2}"
    );
    assert!(!push2.contains(": Pushed"), "layers were uploaded again:\n{push2}");

    // The second repository serves the image on its own.
    docker.docker(&["rmi", &first, &second]).ok();
    let pull = docker.docker(&["pull", &second]).ok().combined();
    assert!(pull.contains(&format!("Digest: {digest1}")), "{pull}");
}
