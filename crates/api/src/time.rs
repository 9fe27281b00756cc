//! Timestamps: the database keeps milliseconds since the Unix epoch; the API speaks ISO 8601
//! (`2024-05-01T12:00:00.000Z`) and, for token expiry, GitLab's `YYYY-MM-DD` dates.

use crate::error::ApiError;

/// `2024-05-01T12:34:56.789Z`.
pub fn iso8601(ms: i64) -> String {
    meta::rfc3339(ms)
}

/// `2024-05-01`: the day a token expires (it stops working at 00:00 UTC that day).
pub fn date(ms: i64) -> String {
    meta::rfc3339(ms)[..10].to_string()
}

/// GitLab's `expires_at` (see `service::tokens::parse_expiry_date`, the one parser).
pub fn parse_expiry_date(text: &str) -> Result<i64, ApiError> {
    Ok(::service::tokens::parse_expiry_date(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(date(1_709_164_800_000), "2024-02-29");
        // The parser's own cases are service::tokens's; this is the API's wrapper.
        assert_eq!(parse_expiry_date("2024-02-29").unwrap(), 1_709_164_800_000);
        assert!(parse_expiry_date("2023-02-29").is_err());
    }
}
