//! Timestamps: the database keeps milliseconds since the Unix epoch; the API speaks ISO 8601
//! (`2024-05-01T12:00:00.000Z`) and, for token expiry, GitLab's `YYYY-MM-DD` dates.

use crate::error::ApiError;

const MS_PER_DAY: i64 = 86_400_000;

/// `2024-05-01T12:34:56.789Z`.
pub fn iso8601(ms: i64) -> String {
    meta::rfc3339(ms)
}

/// `2024-05-01`: the day a token expires (it stops working at 00:00 UTC that day).
pub fn date(ms: i64) -> String {
    meta::rfc3339(ms)[..10].to_string()
}

/// Parses GitLab's `expires_at` (`YYYY-MM-DD`, or an ISO 8601 date-time `YYYY-MM-DDT…` whose
/// date part is used) into the millisecond timestamp of that day's start, UTC. Digits only:
/// `+024-01-01` is not another spelling of year 24.
pub fn parse_expiry_date(text: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::invalid(
            "expires_at",
            format!("{} is not a date: use YYYY-MM-DD", oci::preview(text)),
        )
    };
    let (day, rest) = match text.get(..10) {
        Some(day) => (day, &text[10..]),
        None => return Err(bad()),
    };
    if !(rest.is_empty() || rest.starts_with('T')) {
        return Err(bad());
    }
    let number = |digits: &str| -> Result<u32, ApiError> {
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let mut parts = day.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            (i64::from(number(y)?), number(m)?, number(d)?)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * MS_PER_DAY)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(date(1_709_164_800_000), "2024-02-29");
        assert_eq!(parse_expiry_date("2024-02-29").unwrap(), 1_709_164_800_000);
        assert_eq!(parse_expiry_date("2024-02-29T10:00:00Z").unwrap(), 1_709_164_800_000);
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "tomorrow",
            "2024-1-01",
            "",
            "+024-01-01",
            "2024-+1-01",
            "2024-01-+1",
            "2024-02-29garbage",
            "2024-02-29 10:00",
        ] {
            assert!(parse_expiry_date(bad).is_err(), "{bad}");
        }
    }
}
