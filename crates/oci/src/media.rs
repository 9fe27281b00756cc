//! Media types as the OCI image spec requires them: RFC 6838 names (section 4.2), `type/subtype`
//! without parameters, as in the spec's JSON schema:
//! `^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`.

use std::fmt;
use std::str::FromStr;

/// Longest type or subtype name RFC 6838 allows.
const MAX_NAME: usize = 127;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{shown} is not a media type: use type/subtype, each 1 to 127 letters, digits and !#$&^_.+- \
     starting with a letter or digit (e.g. application/vnd.example.sbom.v1+json)"
)]
pub struct MediaTypeError {
    /// The refused text, cut short and quoted for messages.
    shown: String,
}

/// A validated media type such as `application/vnd.oci.image.manifest.v1+json`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MediaType(String);

impl MediaType {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One RFC 6838 `restricted-name`.
fn restricted_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c))
}

impl FromStr for MediaType {
    type Err = MediaTypeError;

    fn from_str(s: &str) -> Result<Self, MediaTypeError> {
        match s.split_once('/') {
            Some((kind, subtype)) if restricted_name(kind) && restricted_name(subtype) => {
                Ok(MediaType(s.to_string()))
            }
            _ => Err(MediaTypeError { shown: crate::preview(s) }),
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc6838_names() {
        for good in [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.container.image.v1+json",
            "application/spdx+json",
            "text/plain",
            "a/b",
            "application/vnd.example!#$&^_.+-x",
            &format!("{}/{}", "a".repeat(127), "b".repeat(127)),
        ] {
            assert!(good.parse::<MediaType>().is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "application",
            "application/",
            "/json",
            "a/b/c",
            "application/json; charset=utf-8",
            "a\0b/c",
            "a/b\0",
            "a/b\n",
            " a/b",
            "a/.b",
            "a/b c",
            "applicatión/json",
            &format!("{}/b", "a".repeat(128)),
            &format!("a/{}", "b".repeat(100_000)),
        ] {
            let e = bad.parse::<MediaType>().unwrap_err().to_string();
            assert!(e.len() < 400, "the message stays short for {} bytes: {e}", bad.len());
        }
    }
}
