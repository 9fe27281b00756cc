//! The one error type of the `/v2/` surface: every handler returns it with `?`, and it renders
//! as the OCI error JSON with the spec's status code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oci::ErrorCode;

#[derive(Debug)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers, such as `Range` on a 416 so the client knows where to resume.
    pub headers: Vec<(&'static str, String)>,
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> RegistryError {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> RegistryError {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> RegistryError {
        self.headers.push((name, value));
        self
    }

    /// A failure of the server itself: logged in full, reported to the client briefly.
    pub fn internal(error: impl std::fmt::Display) -> RegistryError {
        tracing::error!(%error, "internal error");
        RegistryError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Unknown,
            message: "the registry failed to complete the request; see its log for the cause"
                .into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// The metadata database is unavailable: 503 with `Retry-After`, so clients (and load
    /// balancers) back off and retry instead of giving up on a server error.
    pub fn unavailable(error: &meta::MetaError, retry_after: std::time::Duration) -> RegistryError {
        tracing::error!(%error, "the metadata database is unavailable");
        RegistryError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unknown,
            message: "the registry's database is unavailable; retry in a few seconds".into(),
            detail: None,
            headers: vec![("retry-after", retry_after.as_secs().max(1).to_string())],
        }
    }

    pub fn name_unknown(name: &oci::RepositoryName) -> RegistryError {
        RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known to this registry"),
        )
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(detail) = self.detail {
            error["detail"] = detail;
        }
        let body = serde_json::json!({ "errors": [error] }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

impl From<meta::MetaError> for RegistryError {
    fn from(e: meta::MetaError) -> Self {
        match e.retry_after() {
            Some(wait) => RegistryError::unavailable(&e, wait),
            None => RegistryError::internal(e),
        }
    }
}

/// A protection or immutable rule's refusal, with the OCI code for its kind.
pub(crate) fn refused(refusal: meta::Refusal) -> RegistryError {
    let code = match refusal.kind {
        meta::RefusalKind::Repository => ErrorCode::Denied,
        meta::RefusalKind::Tag => ErrorCode::ProtectedTag,
        meta::RefusalKind::Immutable => ErrorCode::ImmutableTag,
        meta::RefusalKind::Manifest => ErrorCode::ProtectedManifest,
    };
    RegistryError::new(code, refusal.message)
}

impl From<service::ServiceError> for RegistryError {
    fn from(e: service::ServiceError) -> Self {
        use service::ServiceError;
        match e {
            ServiceError::Refused(refusal) => refused(refusal),
            ServiceError::ManifestReferenced { ref manifest, ref index, ref tag } => {
                let detail = serde_json::json!({ "digest": manifest, "index": index, "tag": tag });
                RegistryError::new(ErrorCode::Denied, e.to_string()).with_detail(detail)
            }
            ServiceError::BlobUnknown(d) => RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("blob {d} is not stored in this registry"),
            )
            .with_detail(serde_json::json!({ "digest": d })),
            e @ (ServiceError::ManifestUnknown(_) | ServiceError::TagFrozen(_)) => {
                RegistryError::internal(e)
            }
            e @ ServiceError::UploadSessionChanged => {
                RegistryError::new(ErrorCode::RangeInvalid, e.to_string())
            }
            ServiceError::Meta(e) => e.into(),
            ServiceError::Blob(e) => e.into(),
        }
    }
}

impl From<blobstore::BlobError> for RegistryError {
    fn from(e: blobstore::BlobError) -> Self {
        use blobstore::BlobError;
        match e {
            BlobError::DigestMismatch { expected, computed } => RegistryError::new(
                ErrorCode::DigestInvalid,
                format!(
                    "uploaded content has digest {computed}, not {expected}; nothing was stored"
                ),
            ),
            BlobError::TooLarge { limit } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("the upload exceeds the {limit}-byte limit of this registry"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            BlobError::Body(msg) => RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the request body could not be read to the end ({msg}); resend the chunk"),
            ),
            other => RegistryError::internal(other),
        }
    }
}
