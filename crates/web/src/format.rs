//! Sizes and times as people read them.

/// `1.5 MiB`, `312 B`.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `just now`, `5 minutes ago`, `3 days ago` for a time `ms` before `now` (both ms since
/// the epoch).
pub fn relative_time(ms: i64, now: i64) -> String {
    // A time to come (a scheduled run): "in 7 days".
    if ms - now >= 60_000 {
        let ago = relative_time(now, ms);
        return format!("in {}", ago.trim_end_matches(" ago"));
    }
    let secs = (now - ms).max(0) / 1000;
    let (n, unit) = match secs {
        0..=59 => return "just now".to_string(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=2_591_999 => (secs / 86_400, "day"),
        2_592_000..=31_535_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `sha256:0123456789ab` — the algorithm and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", &hex[..hex.len().min(12)]),
        None => digest.chars().take(19).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn times() {
        assert_eq!(relative_time(1_000, 1_500), "just now");
        assert_eq!(relative_time(0, 60_000), "1 minute ago");
        assert_eq!(relative_time(0, 7_200_000), "2 hours ago");
        assert_eq!(relative_time(0, 3 * 86_400_000), "3 days ago");
        assert_eq!(relative_time(7 * 86_400_000, 0), "in 7 days");
        assert_eq!(relative_time(3_600_000, 0), "in 1 hour");
    }

    #[test]
    fn digests() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "sha256:0123456789ab");
    }
}
