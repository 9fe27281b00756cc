//! README.md stays true: its "Try it" block runs, literally, on a fresh directory (only the
//! port is changed and the already-built binary is used instead of `cargo build --release`),
//! and it links only to files inside the repository.

use std::path::Path;
use std::process::Command;

use e2e::tools::{require_tool, run};

fn readme() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(root.join("README.md")).unwrap()
}

/// The first ```sh block after `heading`.
fn shell_block(text: &str, heading: &str) -> String {
    let section = &text[text.find(heading).unwrap_or_else(|| panic!("no {heading:?}"))..];
    let start = section.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_string()
}

#[test]
fn try_it_runs_literally() {
    require_tool("buildah", "buildah");
    require_tool("skopeo", "skopeo");
    require_tool("curl", "curl");
    let block = shell_block(&readme(), "## Try it");
    assert!(block.starts_with("cargo build --release\n"), "{block}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = e2e::stowage_bin();
    let script = block
        .replacen("cargo build --release\n", "", 1)
        .replace("./target/release/stowage", bin.to_str().unwrap())
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{port}"));

    // A fresh directory, with buildah and skopeo on private state there.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["root", "run", "tmp"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            d.join("root").display(),
            d.join("run").display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("auth.json"), "{}").unwrap();
    std::fs::write(d.join("containers.conf"), "[containers]\ndefault_ulimits = []\n").unwrap();
    let wrapped =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&wrapped)
        .current_dir(d)
        .env("STOWAGE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
        .env("CONTAINERS_CONF", d.join("containers.conf"))
        .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
        .env("TMPDIR", d.join("tmp"))
        .env("BUILDAH_ISOLATION", "chroot")
        .env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("STOWAGE_") && key != "STOWAGE_BIN" {
            cmd.env_remove(key);
        }
    }
    let ran = run(&mut cmd);
    assert!(ran.success(), "the README's Try it failed:\n{}", ran.combined());
    let tags: serde_json::Value =
        serde_json::from_str(&ran.stdout()[ran.stdout().rfind("{\n").expect("list-tags JSON")..])
            .expect("list-tags prints JSON last");
    assert_eq!(tags["Repository"], format!("127.0.0.1:{port}/acme/app"));
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));
}

#[test]
fn links_stay_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = readme();
    let mut broken = Vec::new();
    // Markdown link targets that are not URLs must be files of the repository.
    for (i, _) in text.match_indices("](") {
        let target = &text[i + 2..];
        let target = &target[..target.find(')').unwrap_or(0)];
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with('#')
        {
            continue;
        }
        if target.starts_with("..") || !root.join(target).exists() {
            broken.push(target.to_string());
        }
    }
    // Files named in prose (`something.md`, `deploy/…`) exist too.
    for word in text.split(|c: char| c == '`' || c.is_whitespace()) {
        let word = word.trim_matches(|c: char| ",.;:()".contains(c));
        if (word.ends_with(".md") || word.starts_with("deploy/"))
            && !word.contains('*')
            && (word.starts_with("..") || !root.join(word).exists())
        {
            broken.push(word.to_string());
        }
    }
    assert!(
        broken.is_empty(),
        "README.md names files outside the repository or missing: {broken:?}"
    );
}
