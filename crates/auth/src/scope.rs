//! Docker token scopes: `repository:<name>:pull,push`, `registry:catalog:*`.
//!
//! A token request is untrusted and a token is carried on every registry request, so both are
//! bounded here: a scope keeps only the actions the registry knows, each once; scopes naming
//! the same resource are merged; and a request may name at most [`MAX_SCOPES`] resources. With
//! repository names bounded too (255 characters), every token the service issues stays below
//! [`crate::jwt::MAX_TOKEN_BYTES`].

use serde::{Deserialize, Serialize};

/// Resources one token request may name at most.
pub const MAX_SCOPES: usize = 32;

/// The actions a scope may name; anything else is dropped.
pub const KNOWN_ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

/// One entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// What a request asks for in one `scope` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    /// Known actions only ([`KNOWN_ACTIONS`]), each once, in the order first asked.
    pub actions: Vec<String>,
}

/// A token request named more resources than [`MAX_SCOPES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a token request may name at most {MAX_SCOPES} repositories or other resources, this one \
     names more; request a token for the ones this operation needs"
)]
pub struct TooManyScopes;

impl Scope {
    /// Parses `type:name:actions`. The name may itself contain a `:` only for a registry
    /// host with port (`repository:host:5000/x:pull`), so the type is the first field and
    /// the actions the last. Unknown and repeated actions are dropped.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let mut scope = Scope { kind: kind.to_string(), name: name.to_string(), actions: vec![] };
        scope.add_actions(actions.split(','));
        Some(scope)
    }

    fn add_actions<'a>(&mut self, actions: impl IntoIterator<Item = &'a str>) {
        for action in actions.into_iter().map(str::trim) {
            if KNOWN_ACTIONS.contains(&action) && !self.actions.iter().any(|a| a == action) {
                self.actions.push(action.to_string());
            }
        }
    }

    /// Every scope in a list of `scope` parameters (each may hold several, space-separated),
    /// with scopes for the same resource merged into one. Refused when they name more than
    /// [`MAX_SCOPES`] resources.
    pub fn parse_all<'a>(
        params: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, TooManyScopes> {
        let mut scopes: Vec<Scope> = Vec::new();
        for scope in params.into_iter().flat_map(|p| p.split(' ')).filter_map(Scope::parse) {
            let full = scopes.len() == MAX_SCOPES;
            match scopes.iter_mut().find(|s| s.kind == scope.kind && s.name == scope.name) {
                Some(same) => same.add_actions(scope.actions.iter().map(String::as_str)),
                None if full => return Err(TooManyScopes),
                None => scopes.push(scope),
            }
        }
        Ok(scopes)
    }

    pub fn to_challenge(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        let s = Scope::parse("repository:acme/app:pull,push").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "acme/app");
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().actions, vec!["*"]);
        assert_eq!(Scope::parse("repository:host:5000/x:pull").unwrap().name, "host:5000/x");
        assert!(Scope::parse("repository").is_none());
        assert_eq!(
            Scope::parse_all(["repository:a:pull repository:b:push", "bad"]).unwrap().len(),
            2
        );
    }

    #[test]
    fn actions_are_known_and_unique() {
        let many = vec!["pull"; 6_000].join(",");
        let s =
            Scope::parse(&format!("repository:acme/app:{many},push, pull ,admin,,PULL")).unwrap();
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert!(Scope::parse("repository:a:admin").unwrap().actions.is_empty());
        assert_eq!(Scope::parse("repository:a:delete,*,delete").unwrap().actions, ["delete", "*"]);
    }

    #[test]
    fn same_resource_merges_and_the_count_is_bounded() {
        let merged =
            Scope::parse_all(["repository:a:pull", "repository:a:push repository:a:pull"]).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].actions, vec!["pull", "push"]);
        // A thousand copies of one scope are one scope.
        let copies = vec!["repository:a:pull"; 1_000].join(" ");
        assert_eq!(Scope::parse_all([copies.as_str()]).unwrap().len(), 1);
        let at_limit: Vec<String> =
            (0..MAX_SCOPES).map(|i| format!("repository:r{i}:pull")).collect();
        assert_eq!(
            Scope::parse_all(at_limit.iter().map(String::as_str)).unwrap().len(),
            MAX_SCOPES
        );
        let over: Vec<String> = (0..1_000).map(|i| format!("repository:r{i}:pull")).collect();
        assert_eq!(Scope::parse_all(over.iter().map(String::as_str)), Err(TooManyScopes));
    }
}
