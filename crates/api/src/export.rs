//! Credentials handed to other tools: the `CI_REGISTRY*` variables a CI job logs in with, and
//! a Kubernetes image pull secret for a deploy token.

use std::time::Duration;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::Ref;
use crate::service;
use crate::views::CI_USERNAME;

/// `host[:port]` of the registry as clients address it, from the external URL
/// (`https://registry.example.com/` → `registry.example.com`).
pub fn registry_host(external_url: &str) -> String {
    match url::Url::parse(external_url) {
        Ok(u) if u.host_str().is_some() => match u.port() {
            Some(port) => format!("{}:{port}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_string(),
        },
        _ => external_url.trim_end_matches('/').to_string(),
    }
}

/// Mints a job token for `project_path` (as the operator) and renders the CI variables as
/// `export KEY='value'` lines, ready for `eval "$(stowage ci-env --project …)"`.
pub async fn ci_env(
    store: &meta::Store,
    project_path: &str,
    registry_host: &str,
    lifetime: Duration,
) -> Result<String, ApiError> {
    let caller = Caller::Operator;
    let project =
        service::project(store, &caller, &Ref::Path(project_path.trim_matches('/').to_string()))
            .await?;
    let (_, secret) = service::create_job_token(store, &caller, &project, lifetime).await?;
    Ok(ci_env_lines(registry_host, &project.full_path, &secret))
}

pub fn ci_env_lines(registry_host: &str, project_path: &str, token: &str) -> String {
    [
        ("CI_REGISTRY", registry_host.to_string()),
        ("CI_REGISTRY_IMAGE", format!("{registry_host}/{project_path}")),
        ("CI_REGISTRY_USER", CI_USERNAME.to_string()),
        ("CI_REGISTRY_PASSWORD", token.to_string()),
    ]
    .iter()
    .map(|(key, value)| format!("export {key}={}\n", shell_quote(value)))
    .collect()
}

/// `value` in single quotes, safe for any POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A `kubernetes.io/dockerconfigjson` Secret that lets a cluster pull from `registry_host`
/// with `username`/`token` (e.g. a deploy token with `read_registry`).
pub fn kubernetes_secret(
    name: &str,
    namespace: &str,
    registry_host: &str,
    username: &str,
    token: &str,
) -> String {
    let auth = base64(format!("{username}:{token}").as_bytes());
    let config = serde_json::json!({
        "auths": { registry_host: { "username": username, "password": token, "auth": auth } }
    });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  namespace: {}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        yaml_string(name),
        yaml_string(namespace),
        base64(config.to_string().as_bytes())
    )
}

/// A YAML scalar: plain when it is a safe Kubernetes name, JSON-quoted otherwise.
fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphabetic());
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Standard base64 with padding (RFC 4648), as Kubernetes `data` fields and Docker's `auth` use.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn ci_env_is_shell_safe() {
        let env = ci_env_lines("reg.example:5000", "acme/api", "stwj_x'y");
        assert!(env.contains("export CI_REGISTRY='reg.example:5000'\n"));
        assert!(env.contains("export CI_REGISTRY_IMAGE='reg.example:5000/acme/api'\n"));
        assert!(env.contains("export CI_REGISTRY_USER='stowage-ci-token'\n"));
        assert!(env.contains(r"export CI_REGISTRY_PASSWORD='stwj_x'\''y'"));
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("https://registry.example.com/"), "registry.example.com");
        assert_eq!(registry_host("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn kubernetes_secret_shape() {
        let yaml = kubernetes_secret("pull", "default", "reg.example", "u", "t");
        assert!(yaml.contains("type: kubernetes.io/dockerconfigjson\n"));
        let encoded = yaml.lines().find_map(|l| l.strip_prefix("  .dockerconfigjson: ")).unwrap();
        assert_eq!(
            encoded,
            base64(br#"{"auths":{"reg.example":{"auth":"dTp0","password":"t","username":"u"}}}"#)
        );
    }
}
