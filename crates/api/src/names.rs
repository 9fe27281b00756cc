//! Group and project paths. Every project path, plus up to three more segments, becomes an OCI
//! repository name, so a path segment must already be a valid repository path component:
//! lowercase `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`. Checking this at
//! creation means docker never meets a name it cannot push to.

use crate::error::ApiError;

/// Longest full path we accept, leaving room under the 255 characters docker allows for a
/// repository name for up to three image segments below the project.
pub const MAX_FULL_PATH: usize = 200;

/// One validated path segment of a group or project (`platform`, `my-api`, `web.v2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSegment(String);

impl PathSegment {
    pub fn parse(path: &str) -> Result<PathSegment, ApiError> {
        why_invalid(path)
            .map_or(Ok(PathSegment(path.to_string())), |why| Err(ApiError::invalid("path", why)))
    }

    /// The path GitLab would derive from a name: `My API` → `my-api`.
    pub fn from_name(name: &str) -> Result<PathSegment, ApiError> {
        let mut path = String::new();
        for c in name.trim().chars() {
            match c {
                'a'..='z' | '0'..='9' | '.' | '_' => path.push(c),
                'A'..='Z' => path.push(c.to_ascii_lowercase()),
                _ if !path.ends_with('-') => path.push('-'),
                _ => {}
            }
        }
        let path = path.trim_matches(|c| matches!(c, '-' | '.' | '_'));
        PathSegment::parse(path).map_err(|_| {
            ApiError::invalid("path", format!("cannot be derived from the name {name:?}: give a path of lowercase letters and digits"))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `path` is not a valid segment, as a sentence, or `None` when it is valid.
fn why_invalid(path: &str) -> Option<String> {
    const RULE: &str = "Docker image names allow lowercase letters and digits, separated by single '.', '_' or '__', or by dashes";
    if path.is_empty() {
        return Some("must not be empty".into());
    }
    if path.contains('/') {
        return Some(
            "must be a single segment without '/': create a subgroup for each level instead".into(),
        );
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(
            "must be lowercase: Docker image names cannot contain uppercase letters".into(),
        );
    }
    if let Some(c) = path.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-')) {
        return Some(format!("must not contain {c:?}: {RULE}"));
    }
    let first = path.chars().next().unwrap_or('a');
    if !first.is_ascii_alphanumeric() {
        return Some(format!("must start with a lowercase letter or digit: Docker image names cannot start with '{first}'"));
    }
    let last = path.chars().last().unwrap_or('a');
    if !last.is_ascii_alphanumeric() {
        return Some(format!("must end with a lowercase letter or digit: Docker image names cannot end with '{last}'"));
    }
    // Every run of separators between two alphanumeric runs must be `.`, `_`, `__` or `-+`.
    for run in path.split(|c: char| c.is_ascii_alphanumeric()).filter(|r| !r.is_empty()) {
        let valid = matches!(run, "." | "_" | "__") || run.chars().all(|c| c == '-');
        if !valid {
            return Some(format!("must not contain {run:?}: {RULE}"));
        }
    }
    None
}

/// Why `path` cannot be the full path of any group or project (`acme/platform/api`), as a
/// sentence, or `None` when it could be one.
pub fn why_not_full_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("it is empty".into());
    }
    if path.len() > MAX_FULL_PATH {
        return Some(format!(
            "it is {} bytes long, and no full path is longer than {MAX_FULL_PATH}",
            path.len()
        ));
    }
    path.split('/').find_map(|segment| {
        why_invalid(segment).map(|why| format!("segment {} {why}", oci::preview(segment)))
    })
}

/// Checks that `full_path` leaves room for image names below it.
pub fn check_full_path_length(full_path: &str) -> Result<(), ApiError> {
    if full_path.len() > MAX_FULL_PATH {
        return Err(ApiError::invalid(
            "path",
            format!("makes the full path {} characters long; keep it under {MAX_FULL_PATH} so image names stay within Docker's 255-character limit", full_path.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_segments() {
        for ok in ["acme", "a", "0", "my-api", "my--api", "web.v2", "a_b", "a__b", "a.b_c-d"] {
            assert!(PathSegment::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_segments_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("Acme", "lowercase"),
            ("_acme", "start"),
            ("-acme", "start"),
            (".acme", "start"),
            ("acme-", "end"),
            ("acme.", "end"),
            ("acme_", "end"),
            ("a..b", "\"..\""),
            ("a___b", "\"___\""),
            ("a.-b", "\".-\""),
            ("a/b", "'/'"),
            ("a b", "' '"),
        ] {
            let e = PathSegment::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn derived_from_name() {
        assert_eq!(PathSegment::from_name("My API").unwrap().as_str(), "my-api");
        assert_eq!(PathSegment::from_name("  Web  Front!! ").unwrap().as_str(), "web-front");
        assert!(PathSegment::from_name("!!!").is_err());
    }
}
