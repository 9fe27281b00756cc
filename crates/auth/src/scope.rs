//! Docker token scopes: `repository:<name>:pull,push`, `registry:catalog:*`.

use serde::{Deserialize, Serialize};

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
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses `type:name:actions`. The name may itself contain a `:` only for a registry
    /// host with port (`repository:host:5000/x:pull`), so the type is the first field and
    /// the actions the last.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(Scope { kind: kind.to_string(), name: name.to_string(), actions })
    }

    /// Every scope in a list of `scope` parameters; each may hold several, space-separated.
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        params.into_iter().flat_map(|p| p.split(' ')).filter_map(Scope::parse).collect()
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
        assert!(Scope::parse("repository").is_none());
        assert_eq!(Scope::parse_all(["repository:a:pull repository:b:push", "bad"]).len(), 2);
    }
}
