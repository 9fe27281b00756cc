//! The error codes of the OCI distribution spec, with the HTTP status each one answers with.

/// An OCI distribution error code (`{"errors":[{"code": …}]}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    PaginationNumberInvalid,
    /// A query parameter's value is not what the endpoint takes, such as a `last` that is not
    /// a tag (GitLab's registry extension; the spec has no code for it).
    InvalidQueryParameterValue,
    /// A tag protection rule refused a push or delete (GitLab's extension).
    ProtectedTag,
    /// An immutable tag rule refused moving or deleting a tag (GitLab's extension).
    ImmutableTag,
    /// Deleting a manifest would take protected or immutable tags along (GitLab's extension).
    ProtectedManifest,
    /// The registry itself failed (the spec's catch-all code for server errors).
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::InvalidQueryParameterValue => "INVALID_QUERY_PARAMETER_VALUE",
            ErrorCode::ProtectedTag => "PROTECTED_TAG",
            ErrorCode::ImmutableTag => "IMMUTABLE_TAG",
            ErrorCode::ProtectedManifest => "PROTECTED_MANIFEST",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec (or, where it is silent, CNCF distribution) uses.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationNumberInvalid
            | ErrorCode::InvalidQueryParameterValue => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied
            | ErrorCode::ProtectedTag
            | ErrorCode::ImmutableTag
            | ErrorCode::ProtectedManifest => 403,
            ErrorCode::Unsupported => 415,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::Unknown => 500,
        }
    }
}
