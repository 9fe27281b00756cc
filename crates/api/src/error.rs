//! The one error type of the `/api/v4` surface. Every variant renders as GitLab does:
//! `{"message": "..."}`, or `{"message": {"field": ["..."]}}` for a field that failed validation.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential, or one that is unknown, revoked, expired or belongs to a blocked user.
    #[error("401 Unauthorized")]
    Unauthorized,
    /// The personal access token is valid but lacks the `api` scope.
    #[error("403 Forbidden - this personal access token lacks the api scope: create one with the api scope to use the REST API")]
    InsufficientScope,
    /// The caller may see the resource but not do this to it.
    #[error("403 Forbidden")]
    Forbidden,
    /// The caller may not do this, and the reason is worth a sentence.
    #[error("403 Forbidden - {0}")]
    ForbiddenBecause(String),
    /// Nonexistent, or invisible to the caller (the two answer alike, so nothing leaks).
    /// The message names what was not found: `404 Project Not Found`.
    #[error("{0}")]
    NotFound(&'static str),
    /// A request that cannot be understood as a whole (bad JSON, missing parameter).
    #[error("{0}")]
    BadRequest(String),
    /// One field failed validation.
    #[error("{field} {message}")]
    Invalid { field: &'static str, message: String },
    /// The name or path is taken.
    #[error("{0}")]
    Conflict(String),
    /// Too many passwords are being hashed right now (see `auth::secret`).
    #[error("429 Too Many Requests - {0}")]
    Busy(#[from] auth::secret::Busy),
    #[error("internal error: {0}")]
    Internal(#[from] meta::MetaError),
}

impl From<::service::settings::SettingsError> for ApiError {
    fn from(e: ::service::settings::SettingsError) -> Self {
        use ::service::settings::SettingsError;
        match e {
            SettingsError::Invalid { field: Some(field), message } => {
                ApiError::Invalid { field, message }
            }
            SettingsError::Invalid { field: None, message } => ApiError::BadRequest(message),
            SettingsError::Forbidden(why) => ApiError::ForbiddenBecause(why),
            SettingsError::Conflict(why) => ApiError::Conflict(why),
            SettingsError::NotFound => ApiError::NotFound(PROJECT_NOT_FOUND),
            SettingsError::Meta(e) => ApiError::Internal(e),
        }
    }
}

impl From<::service::ServiceError> for ApiError {
    fn from(e: ::service::ServiceError) -> Self {
        use ::service::ServiceError;
        match e {
            ServiceError::Refused(refusal) => ApiError::ForbiddenBecause(refusal.message),
            e @ ServiceError::ManifestReferenced { .. } => {
                ApiError::ForbiddenBecause(e.to_string())
            }
            ServiceError::Meta(e) => ApiError::Internal(e),
            other => ApiError::Internal(meta::MetaError::Conflict(other.to_string())),
        }
    }
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope | ApiError::Forbidden | ApiError::ForbiddenBecause(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(meta::MetaError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Internal(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Invalid { field, message } => json!({ "message": { *field: [message] } }),
            ApiError::Internal(meta::MetaError::Conflict(message)) => json!({ "message": message }),
            ApiError::Internal(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "the metadata database is unavailable");
                json!({ "message": "503 Service Unavailable - the registry's database is \
                                     unavailable; retry in a few seconds" })
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "api request failed");
                json!({ "message": "500 Internal Server Error" })
            }
            other => json!({ "message": other.to_string() }),
        };
        let retry_after = match &self {
            ApiError::Internal(e) => e.retry_after().map(|wait| wait.as_secs().max(1)),
            ApiError::Busy(_) => Some(1),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        response
    }
}

/// What every unknown `/api/v4` route answers.
pub async fn route_not_found() -> ApiError {
    ApiError::NotFound(NOT_FOUND)
}

pub const NOT_FOUND: &str = "404 Not Found";
pub const PROJECT_NOT_FOUND: &str = "404 Project Not Found";
pub const GROUP_NOT_FOUND: &str = "404 Group Not Found";
pub const USER_NOT_FOUND: &str = "404 User Not Found";
pub const MEMBER_NOT_FOUND: &str = "404 Member Not Found";
pub const TOKEN_NOT_FOUND: &str = "404 Token Not Found";
