//! Request parameters as GitLab accepts them: a JSON body, a form-encoded body, or the query
//! string (`scopes[]=api` repeats become arrays), all turned into one typed struct. Numbers and
//! booleans may arrive as strings, as they do from forms and shell scripts.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use oci::preview;

use crate::error::ApiError;

/// The request's parameters, parsed into `T`.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Map::new();
        if let Some(query) = req.uri().query() {
            add_form_pairs(&mut params, query.as_bytes());
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if content_type.starts_with("application/x-www-form-urlencoded") {
            add_form_pairs(&mut params, &body);
        } else if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(fields)) => params.extend(fields),
                Ok(_) => return Err(ApiError::bad_request("the request body must be a JSON object")),
                Err(e) => {
                    return Err(ApiError::bad_request(format!(
                        "the request body is not valid JSON ({e}): send a JSON object with Content-Type: application/json"
                    )))
                }
            }
        }
        refuse_nul(&params)?;
        serde_json::from_value(Value::Object(params))
            .map(Params)
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))
    }
}

/// Path parameters, like axum's `Path`, but a path that cannot be decoded (invalid UTF-8 in
/// `%FF`) is refused as every other bad request is: `{"message": ...}`, not plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// No parameter may hold a NUL character: PostgreSQL cannot store one in text (it fails the
/// query) while SQLite can, so letting one through would make the backends disagree. Checked
/// once here, for every parameter of every endpoint, before anything reaches `meta`.
fn refuse_nul(params: &Map<String, Value>) -> Result<(), ApiError> {
    fn nul_at(value: &Value, at: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(|v| nul_at(v, at)),
            Value::Object(fields) => fields.iter().any(|(k, v)| {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                let found = k.contains('\0') || nul_at(v, at);
                if !found {
                    at.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    for (name, value) in params {
        let mut at = name.clone();
        if name.contains('\0') || nul_at(value, &mut at) {
            return Err(ApiError::bad_request(format!(
                "parameter {} contains a NUL character (%00 or \\u0000), which no parameter accepts",
                preview(&at)
            )));
        }
    }
    Ok(())
}

fn add_form_pairs(params: &mut Map<String, Value>, encoded: &[u8]) {
    for (key, value) in url::form_urlencoded::parse(encoded) {
        match key.strip_suffix("[]") {
            Some(key) => {
                match params.entry(key.to_string()).or_insert_with(|| Value::Array(Vec::new())) {
                    Value::Array(items) => items.push(Value::String(value.into_owned())),
                    other => *other = Value::Array(vec![Value::String(value.into_owned())]),
                }
            }
            None => {
                params.insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
}

/// A JSON value as a refusal shows it: cut short like any untrusted text.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 64 {
        text
    } else {
        preview(&text)
    }
}

/// An integer given as a JSON number or a string of digits.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| serde::de::Error::custom("expected an integer"))
        }
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{} is not an integer", preview(&s)))),
        Some(other) => {
            Err(serde::de::Error::custom(format!("{} is not an integer", shown(&other))))
        }
    }
}

/// A boolean given as JSON `true`/`false` or the strings `true`/`false`/`1`/`0`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "1") => Ok(Some(true)),
        Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "") => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!("{} is not a boolean", shown(&other)))),
    }
}

/// A list given as a JSON array or a comma-separated string (`api,read_registry`).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()))
        }
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => {
                    Err(serde::de::Error::custom(format!("{} is not a string", shown(&other))))
                }
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(serde::de::Error::custom(format!("{} is not a list", shown(&other)))),
    }
}

/// How a path parameter names a group or project: `42` or `acme/platform` (URL-encoded as
/// `acme%2Fplatform` in the request path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    Id(i64),
    Path(String),
}

impl Ref {
    /// THE parser of group and project references from requests (path `:id`, `parent_id`,
    /// `namespace_id`, `target_project_id`): digits are an id, anything else must be a full
    /// path that could exist — valid segments, no control characters, not longer than any
    /// path — or the request is refused (400, naming `param`) before it reaches a query.
    pub fn parse(param: &str, text: &str) -> Result<Ref, ApiError> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = text.parse::<i64>() {
                return Ok(Ref::Id(id));
            }
            // Too large for an id: as a path it names nothing, and answers so.
        }
        // One spelling per path: `/acme/app/` is not another name for `acme/app`.
        match crate::names::why_not_full_path(text) {
            None => Ok(Ref::Path(text.to_string())),
            Some(why) => Err(ApiError::bad_request(format!(
                "{param} {} is neither a numeric id nor a URL-encoded full path: {why}",
                preview(text)
            ))),
        }
    }
}

/// A tag name given as a parameter (`tag_name`, keyset markers, `name_exact`); anything that
/// is not a valid tag is refused (400, naming `param`), as no tag could match it.
pub fn tag_param(param: &str, text: &str) -> Result<oci::Tag, ApiError> {
    text.parse().map_err(|e: oci::NameError| ApiError::bad_request(format!("{param}: {e}")))
}

/// One page of a page-numbered listing (`?page=&per_page=`), as GitLab counts them:
/// `per_page` defaults to 20 and is held to 1..=100, a `page` below 1 is page 1. Pages past
/// [`Page::MAX`] are refused, so the row offset can never overflow (PostgreSQL refuses a
/// negative OFFSET, SQLite does not) and stays a number a database can skip to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub number: i64,
    pub per_page: i64,
}

impl Page {
    pub const MAX: i64 = 1_000_000;
    pub const MAX_PER_PAGE: i64 = 100;

    pub fn parse(page: Option<i64>, per_page: Option<i64>) -> Result<Page, ApiError> {
        let per_page = per_page.unwrap_or(20).clamp(1, Page::MAX_PER_PAGE);
        let number = page.unwrap_or(1).max(1);
        if number > Page::MAX {
            return Err(ApiError::bad_request(format!(
                "page must be at most {}: for more, ask for larger pages (per_page up to {})",
                Page::MAX,
                Page::MAX_PER_PAGE
            )));
        }
        Ok(Page { number, per_page })
    }

    /// Rows before this page: at most `(MAX - 1) * MAX_PER_PAGE`, far below `i64::MAX`.
    pub fn offset(&self) -> i64 {
        (self.number - 1) * self.per_page
    }
}

/// A numeric path parameter (user id, token id); anything else names nothing.
pub fn numeric_id(text: &str, not_found: &'static str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| ApiError::NotFound(not_found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(Ref::parse("id", "42").unwrap(), Ref::Id(42));
        assert_eq!(Ref::parse("id", "acme/platform").unwrap(), Ref::Path("acme/platform".into()));
        // Too large for an id, but digits are a valid path segment: found by path, or not.
        assert!(matches!(Ref::parse("id", "99999999999999999999").unwrap(), Ref::Path(_)));
        for bad in [
            "",
            "a\0b",
            "a\nb",
            "a\u{7f}b",
            "-1",
            "+1",
            "Acme",
            "a//b",
            "/acme",
            "acme/",
            "/",
            "a/../b",
            "a b",
            "a%2Fb",
            &"a".repeat(100_000),
        ] {
            let e = Ref::parse("namespace_id", bad).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
            let message = e.to_string();
            assert!(message.starts_with("namespace_id "), "{message}");
            assert!(message.len() < 500, "no echo of long input: {}", message.len());
        }
    }

    #[test]
    fn pages() {
        assert_eq!(Page::parse(None, None).unwrap(), Page { number: 1, per_page: 20 });
        assert_eq!(Page::parse(Some(-5), Some(0)).unwrap(), Page { number: 1, per_page: 1 });
        assert_eq!(Page::parse(Some(3), Some(i64::MAX)).unwrap().offset(), 200);
        assert_eq!(Page::parse(Some(Page::MAX), Some(100)).unwrap().offset(), 99_999_900);
        for huge in [Page::MAX + 1, i64::MAX] {
            assert!(Page::parse(Some(huge), Some(100)).is_err());
        }
    }

    #[test]
    fn nul_is_refused_anywhere() {
        let params = |v: Value| v.as_object().unwrap().clone();
        assert!(refuse_nul(&params(serde_json::json!({"a": "b", "n": 1, "l": ["x"]}))).is_ok());
        for (v, at) in [
            (serde_json::json!({"name": "a\0"}), "name"),
            (serde_json::json!({"scopes": ["api", "\0"]}), "scopes"),
            (serde_json::json!({"p": {"q": {"r": "\0"}}}), "p.q.r"),
            (serde_json::json!({"p": {"k\0": 1}}), "p.k"),
        ] {
            let e = refuse_nul(&params(v)).unwrap_err().to_string();
            assert!(e.contains(at), "{e}");
        }
    }
}
