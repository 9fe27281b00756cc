//! Repository names, tags and references, with the grammars of the OCI distribution spec.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// Longest repository name accepted, in bytes (the spec's interoperability limit).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    // `Invalid` and `InvalidTag` hold the refused text as `crate::preview` shows it.
    #[error(
        "repository name {0} is invalid: use path components of lowercase letters and digits, \
         separated by '/', each optionally joined by '.', '_', '__' or '-'"
    )]
    Invalid(String),
    #[error(
        "tag {0} is invalid: a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', \
         and must not start with '.' or '-'"
    )]
    InvalidTag(String),
}

/// A repository name such as `acme/platform/api`, validated against
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: alphanumeric runs joined by a separator (`.`, `_`, `__` or `-+`).
fn valid_component(c: &[u8]) -> bool {
    let mut i = 0;
    loop {
        let start = i;
        while i < c.len() && is_alnum(c[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == c.len() {
            return true;
        }
        let sep_start = i;
        while i < c.len() && !is_alnum(c[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
}

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        if !s.split('/').all(|c| valid_component(c.as_bytes())) {
            return Err(NameError::Invalid(crate::preview(s)));
        }
        Ok(RepositoryName(s.into()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

/// The components between a top-level group and an image of its dependency proxy
/// (GitLab's `<group>/dependency_proxy/containers/<image>`).
pub const DEPENDENCY_PROXY_PATH: &str = "dependency_proxy/containers";

/// A repository name of a top-level group's dependency proxy, read from a parsed
/// [`RepositoryName`]: `<group>/dependency_proxy/containers/<image>`, where `<group>` is one
/// component (a top-level group) and `<image>` the upstream image (`alpine`, `bitnami/redis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DependencyProxyImage<'a> {
    pub group: &'a str,
    pub image: &'a str,
}

impl RepositoryName {
    /// The dependency-proxy image this name addresses, if it is one. The one place that
    /// decides which repository names belong to a dependency proxy.
    pub fn dependency_proxy(&self) -> Option<DependencyProxyImage<'_>> {
        let (group, rest) = self.0.split_once('/')?;
        let image = rest.strip_prefix(DEPENDENCY_PROXY_PATH)?.strip_prefix('/')?;
        (!image.is_empty()).then_some(DependencyProxyImage { group, image })
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok =
            b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(NameError::InvalidTag(crate::preview(s)));
        }
        Ok(Tag(s.into()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// Anything with a `:` is a digest (tags cannot contain one); the rest must be a tag.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            s.parse().map(Reference::Digest).map_err(ReferenceError::Digest)
        } else {
            s.parse().map(Reference::Tag).map_err(ReferenceError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Digest(crate::DigestError),
    #[error(transparent)]
    Tag(NameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_grammar() {
        for good in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e/f/g/h/i",
            "my-app",
            "my--app",
            "my__app",
            "my.app_x",
            "0",
            &"a".repeat(255),
        ] {
            assert!(good.parse::<RepositoryName>().is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "../x",
            "x/",
            "/x",
            "a___b",
            "-a",
            "a-",
            "a..b",
            "a:b",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn dependency_proxy_names() {
        let name = |s: &str| s.parse::<RepositoryName>().unwrap();
        let n = name("acme/dependency_proxy/containers/bitnami/redis");
        assert_eq!(
            n.dependency_proxy(),
            Some(DependencyProxyImage { group: "acme", image: "bitnami/redis" })
        );
        for not in [
            "acme/dependency_proxy/containers",
            "acme/sub/dependency_proxy/containers/alpine",
            "acme/dependency_proxy/containersx/alpine",
            "acme/dependency_proxy/alpine",
            "dependency_proxy/containers/alpine",
        ] {
            assert_eq!(name(not).dependency_proxy(), None, "{not}");
        }
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", "-bad", ".bad", "a:b", "a/b", "a\0b", "a\tb", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
        let e = "a".repeat(100_000).parse::<Tag>().unwrap_err().to_string();
        assert!(e.len() < 300, "a refusal does not echo 100 KB: {} bytes", e.len());
        let d = Digest::sha256_of(b"");
        assert_eq!(Reference::parse(d.as_str()).unwrap(), Reference::Digest(d));
        assert!(matches!(Reference::parse("v1").unwrap(), Reference::Tag(_)));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
