//! The one error type of the pages: each renders as a page of its own with the right status.
//! A project the viewer may not see is [`PageError::NotFound`], byte for byte the page of a
//! path where nothing exists.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub enum PageError {
    /// Nothing here, or nothing the viewer may see.
    NotFound,
    /// Visible, but not allowed; the sentence says what would be needed.
    Forbidden(String),
    /// A form without this session's CSRF token.
    Csrf,
    /// Input the page cannot use; the sentence says what to send instead.
    BadRequest(String),
    /// The metadata database failed.
    Database(meta::MetaError),
}

impl From<meta::MetaError> for PageError {
    fn from(e: meta::MetaError) -> Self {
        PageError::Database(e)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "The page could not be found or you don't have permission to view it. \
                 Sign in if it belongs to a private project."
                    .to_string(),
            ),
            PageError::Forbidden(why) => {
                (StatusCode::FORBIDDEN, "Access denied", format!("You cannot do this: {why}."))
            }
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Access denied",
                "The form did not come from this site or your session has ended: reload the \
                 page, sign in again if asked, and retry."
                    .to_string(),
            ),
            PageError::BadRequest(why) => {
                (StatusCode::BAD_REQUEST, "Bad request", format!("{why}."))
            }
            PageError::Database(e) => {
                tracing::error!(error = %e, "a page failed to read the metadata database");
                let status = match e.retry_after() {
                    Some(_) => StatusCode::SERVICE_UNAVAILABLE,
                    None => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (
                    status,
                    "Something went wrong",
                    "The registry could not load this page; try again in a few seconds."
                        .to_string(),
                )
            }
        };
        let page = ErrorPage { status: status.as_u16(), title, message: &message };
        let mut response = crate::pages::html(status, page.render());
        if let PageError::Database(e) = &self {
            if let Some(wait) = e.retry_after() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            }
        }
        response
    }
}
