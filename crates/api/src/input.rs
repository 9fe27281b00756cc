//! Request parameters as GitLab accepts them: a JSON body, a form-encoded body, or the query
//! string (`scopes[]=api` repeats become arrays), all turned into one typed struct. Numbers and
//! booleans may arrive as strings, as they do from forms and shell scripts.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
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
        from_params(params).map(Params)
    }
}

/// Deserializes parameters into `T`; a refusal names the parameter at fault when one alone
/// is (`flag "maybe" is not a boolean`), not just "invalid parameters".
fn from_params<T: DeserializeOwned>(params: Map<String, Value>) -> Result<T, ApiError> {
    match serde_json::from_value::<T>(Value::Object(params.clone())) {
        Ok(value) => Ok(value),
        Err(whole) => {
            for (name, value) in &params {
                let mut alone = Map::new();
                alone.insert(name.clone(), value.clone());
                if let Err(e) = serde_json::from_value::<T>(Value::Object(alone)) {
                    if !e.to_string().starts_with("missing field") {
                        return Err(ApiError::bad_request(format!("{} {e}", preview(name))));
                    }
                }
            }
            Err(ApiError::bad_request(format!("invalid parameters: {whole}")))
        }
    }
}

/// The field names of a struct deriving `Deserialize`, as serde knows them: what a listing
/// accepts is read from its filter struct, so the list in a refusal cannot drift from it.
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

// ---- listings -------------------------------------------------------------------------------

/// Sort direction of a listing (`sort=asc|desc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Asc,
    Desc,
}

/// The filters one listing endpoint accepts (a struct whose fields are the query parameters
/// besides `page`, `per_page`, `order_by` and `sort`), and how it may be ordered.
pub trait ListFilters: DeserializeOwned {
    /// The values `order_by` accepts; the first is the default. Empty: no ordering parameters.
    const ORDER_BY: &'static [&'static str];
    /// The direction when `sort` is not given.
    const SORT: Sort;
}

/// A listing that takes no filters, only pages (and no ordering).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoFilters {}

impl ListFilters for NoFilters {
    const ORDER_BY: &'static [&'static str] = &[];
    const SORT: Sort = Sort::Asc;
}

/// THE extractor of every page-numbered `GET` listing: its filters `T`, the page, and the
/// order. A parameter the listing does not know is refused (400, naming it and listing what is
/// accepted), never ignored: a script filtering by a misspelt or unsupported name must not get
/// everything back as if it had matched. Answers carry GitLab's pagination headers and `Link`
/// URLs that keep the filters, so clients that follow `rel="next"` see the same listing.
pub struct Listing<T> {
    pub filters: T,
    pub page: Page,
    pub order_by: &'static str,
    pub sort: Sort,
    links: PageLinks,
}

const LISTING_PARAMS: &[&str] = &["page", "per_page"];
const ORDER_PARAMS: &[&str] = &["order_by", "sort"];

impl<S: Send + Sync, T: ListFilters> FromRequestParts<S> for Listing<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Map::new();
        if let Some(query) = parts.uri.query() {
            add_form_pairs(&mut params, query.as_bytes());
        }
        refuse_nul(&params)?;
        let fields = field_names::<T>();
        let ordered = !T::ORDER_BY.is_empty();
        let accepted = || {
            let mut all: Vec<&str> = fields.to_vec();
            if ordered {
                all.extend(ORDER_PARAMS);
            }
            all.extend(LISTING_PARAMS);
            all.join(", ")
        };
        for name in params.keys() {
            let known = fields.contains(&name.as_str())
                || LISTING_PARAMS.contains(&name.as_str())
                || (ordered && ORDER_PARAMS.contains(&name.as_str()));
            if !known {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {}: this listing accepts {}",
                    preview(name),
                    accepted()
                )));
            }
        }
        let text =
            |params: &mut Map<String, Value>, name: &str| -> Result<Option<String>, ApiError> {
                match params.remove(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s)),
                    Some(other) => Err(ApiError::bad_request(format!(
                        "{name} {} is not a single value",
                        shown(&other)
                    ))),
                }
            };
        let number =
            |params: &mut Map<String, Value>, name: &str| -> Result<Option<i64>, ApiError> {
                match text(params, name)? {
                    None => Ok(None),
                    Some(t) if t.trim().is_empty() => Ok(None),
                    Some(t) => t.trim().parse().map(Some).map_err(|_| {
                        ApiError::bad_request(format!("{name} {} is not an integer", preview(&t)))
                    }),
                }
            };
        let page = Page::parse(number(&mut params, "page")?, number(&mut params, "per_page")?)?;
        let order_by = match text(&mut params, "order_by")? {
            None => T::ORDER_BY.first().copied().unwrap_or(""),
            Some(o) => T::ORDER_BY.iter().copied().find(|x| *x == o).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "order_by {} is not supported here: use {}",
                    preview(&o),
                    T::ORDER_BY.join(", ")
                ))
            })?,
        };
        let sort = match text(&mut params, "sort")?.map(|s| s.to_ascii_lowercase()) {
            None => T::SORT,
            Some(s) if s == "asc" => Sort::Asc,
            Some(s) if s == "desc" => Sort::Desc,
            Some(s) => {
                return Err(ApiError::bad_request(format!(
                    "sort {} is not supported: use asc or desc",
                    preview(&s)
                )))
            }
        };
        let filters = from_params::<T>(params)?;
        Ok(Listing { filters, page, order_by, sort, links: PageLinks::of(parts) })
    }
}

impl<T> Listing<T> {
    /// Where this listing's pages are, for a listing that pages in the database itself.
    pub fn links(&self) -> &PageLinks {
        &self.links
    }

    /// Sorts `items` by `key` (given the `order_by` value) in the requested direction. The sort
    /// is stable, so give a key that ends in a unique value (an id) for a repeatable order.
    pub fn order<I, K: Ord>(&self, items: &mut [I], key: impl Fn(&I, &str) -> K) {
        items.sort_by(|a, b| {
            let o = key(a, self.order_by).cmp(&key(b, self.order_by));
            match self.sort {
                Sort::Asc => o,
                Sort::Desc => o.reverse(),
            }
        });
    }

    /// The requested page of `items` (all of the listing, filtered and ordered) as the answer,
    /// with the pagination headers.
    pub fn answer<I: serde::Serialize>(&self, items: Vec<I>) -> Response {
        let total = items.len() as i64;
        let offset = usize::try_from(self.page.offset()).unwrap_or(usize::MAX);
        let page: Vec<I> =
            items.into_iter().skip(offset).take(self.page.per_page as usize).collect();
        let mut response = axum::Json(page).into_response();
        self.links.apply(response.headers_mut(), self.page, total);
        response
    }
}

impl<T> Listing<T> {
    /// One page the database already cut (`items`, of `total` in all) as the answer, with the
    /// pagination headers: the same headers as [`Listing::answer`].
    pub fn answer_page<I: serde::Serialize>(&self, items: Vec<I>, total: i64) -> Response {
        let mut response = axum::Json(items).into_response();
        self.links.apply(response.headers_mut(), self.page, total);
        response
    }
}

/// Where a listing's pages are: the absolute URL of the request and its query without the page
/// number, for `Link` headers.
pub struct PageLinks {
    url: String,
    query: Vec<(String, String)>,
}

/// `scheme://host` as the client reached us (`X-Forwarded-Proto` from a proxy, else http).
pub fn origin(headers: &HeaderMap) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| matches!(*v, "http" | "https"))
        .unwrap_or("http");
    format!("{scheme}://{}", request_host(headers))
}

/// The host the client called us by (the `Host` header), for locations in answers.
pub fn request_host(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost")
        .to_string()
}

impl PageLinks {
    pub fn of(parts: &Parts) -> PageLinks {
        // Nested under `/api/v4`, the router sees the path without it; links need all of it.
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let query = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        PageLinks { url: format!("{}{}", origin(&parts.headers), uri.path()), query }
    }

    fn url(&self, page: i64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.query {
            q.append_pair(k, v);
        }
        q.append_pair("page", &page.to_string());
        format!("{}?{}", self.url, q.finish())
    }

    /// GitLab's pagination headers for `page` of `total` items: `X-Total`, `X-Total-Pages`,
    /// `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` and `Link`.
    pub fn apply(&self, h: &mut HeaderMap, page: Page, total: i64) {
        let per_page = page.per_page;
        let total_pages = ((total + per_page - 1) / per_page).max(1);
        let next = (page.number < total_pages).then_some(page.number + 1);
        let prev = (page.number > 1).then(|| (page.number - 1).min(total_pages));
        let mut links = Vec::new();
        if let Some(n) = next {
            links.push(format!("<{}>; rel=\"next\"", self.url(n)));
        }
        if let Some(p) = prev {
            links.push(format!("<{}>; rel=\"prev\"", self.url(p)));
        }
        links.push(format!("<{}>; rel=\"first\"", self.url(1)));
        links.push(format!("<{}>; rel=\"last\"", self.url(total_pages)));
        let value = |text: &str| {
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        h.insert("x-total", value(&total.to_string()));
        h.insert("x-total-pages", value(&total_pages.to_string()));
        h.insert("x-page", value(&page.number.to_string()));
        h.insert("x-per-page", value(&per_page.to_string()));
        h.insert("x-next-page", value(&next.map(|n| n.to_string()).unwrap_or_default()));
        h.insert("x-prev-page", value(&prev.map(|n| n.to_string()).unwrap_or_default()));
        h.insert(axum::http::header::LINK, value(&links.join(", ")));
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

/// THE boolean parser of the API, as GitLab parses booleans: JSON `true`/`false`, the numbers
/// `1`/`0`, or the strings `true`/`false`/`1`/`0` in any case (`True`, as Python's `str(True)`
/// sends it). An empty string is `false`, as from an unchecked form field.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" | "" => Some(false),
        _ => None,
    }
}

/// A boolean parameter: see [`parse_bool`].
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    let parsed = match &value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Some(Value::String(s)) => parse_bool(s),
        Some(_) => None,
    };
    match (parsed, value) {
        (Some(b), _) => Ok(Some(b)),
        (None, Some(other)) => Err(serde::de::Error::custom(format!(
            "{} is not a boolean: use true, false, 1 or 0",
            shown(&other)
        ))),
        (None, None) => Ok(None),
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
