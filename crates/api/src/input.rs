//! Request parameters as GitLab accepts them: a JSON body, a form-encoded body, or the query
//! string (`scopes[]=api` repeats become arrays), all turned into one typed struct. Numbers and
//! booleans may arrive as strings, as they do from forms and shell scripts.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

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
        serde_json::from_value(Value::Object(params))
            .map(Params)
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))
    }
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
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not an integer"))),
    }
}

/// A boolean given as JSON `true`/`false` or the strings `true`/`false`/`1`/`0`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "1") => Ok(Some(true)),
        Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "") => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not a boolean"))),
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
                other => Err(serde::de::Error::custom(format!("{other} is not a string"))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not a list"))),
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
    pub fn parse(text: &str) -> Ref {
        match text.parse::<i64>() {
            Ok(id) if !text.starts_with('+') && !text.starts_with('-') => Ref::Id(id),
            _ => Ref::Path(text.trim_matches('/').to_string()),
        }
    }
}

/// A numeric path parameter (user id, token id); anything else names nothing.
pub fn numeric_id(text: &str, not_found: &'static str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| ApiError::NotFound(not_found))
}
