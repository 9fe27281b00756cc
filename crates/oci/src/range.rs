//! Byte ranges in request headers, the two the distribution API uses: `Range: bytes=…` on a
//! blob GET ([`ByteRange`], RFC 9110 section 14.1.2, one range per request) and
//! `Content-Range: <start>-<end>` on an upload chunk ([`ChunkRange`], distribution-spec
//! "Pushing a blob in chunks").
//!
//! Numbers are ASCII digits only (no sign, no `+`), so each range has one meaning, and no
//! value, however long, can overflow: a position past the end of a blob is clamped or refused,
//! never wrapped.

use std::fmt;

/// The largest byte position or size a range may name: sizes are stored as signed 64-bit
/// numbers, and a chunk's length (`end - start + 1`) must fit in a `u64`.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// `1*DIGIT`, saturating at `u64::MAX`: `Some` for digits only, `None` for anything else
/// (empty, a sign, a space, a non-ASCII digit).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// A `Range` header that cannot be served from the blob: malformed, several ranges, or
/// outside it. The registry answers 416 with `Content-Range: bytes */<size>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "range {shown} cannot be served from a blob of {size} bytes: send one range as \
     bytes=<first>-<last>, bytes=<first>- or bytes=-<suffix length>, within the blob"
)]
pub struct RangeNotSatisfiable {
    /// The refused header, cut short and quoted for messages.
    shown: String,
    size: u64,
}

/// One satisfiable byte range of a blob of known size: `start..end`, never empty, never past
/// the blob's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

impl ByteRange {
    /// Parses a `Range` header for a blob of `size` bytes: `bytes=a-b` (`b` past the end is
    /// clamped to the last byte), `bytes=a-`, or `bytes=-n` (the last `n` bytes, all of a
    /// shorter blob). Whitespace around the value and around each number is allowed; several
    /// ranges are not served.
    pub fn parse(value: &str, size: u64) -> Result<ByteRange, RangeNotSatisfiable> {
        let refused = || RangeNotSatisfiable { shown: crate::preview(value), size };
        let spec = value.trim().strip_prefix("bytes=").ok_or_else(refused)?;
        let (first, last) = spec.split_once('-').ok_or_else(refused)?;
        let (first, last) = (first.trim(), last.trim());
        let (start, end) = match (first, last) {
            ("", suffix) => {
                let n = digits(suffix).filter(|&n| n > 0).ok_or_else(refused)?;
                (size.saturating_sub(n), size)
            }
            (first, "") => (digits(first).ok_or_else(refused)?, size),
            (first, last) => {
                let (first, last) =
                    (digits(first).ok_or_else(refused)?, digits(last).ok_or_else(refused)?);
                if last < first {
                    return Err(refused());
                }
                (first, last.saturating_add(1).min(size))
            }
        };
        if start >= end {
            return Err(refused());
        }
        Ok(ByteRange { start, end })
    }

    /// The first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// How many bytes the range holds (at least one).
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true: an empty range is not satisfiable, so it is never parsed.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_range(&self) -> std::ops::Range<u64> {
        self.start..self.end
    }

    /// The `Content-Range` answering this range of a `size`-byte blob: `bytes a-b/size`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end - 1)
    }
}

/// A `Content-Range` header of an upload chunk that is not `<start>-<end>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Content-Range {shown} is not of the form <start>-<end>: two byte positions, the first \
     not after the second, each at most {MAX_POSITION}"
)]
pub struct ChunkRangeError {
    /// The refused header, cut short and quoted for messages.
    shown: String,
}

/// Where an upload chunk claims to go: bytes `start..=end` of the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    start: u64,
    end: u64,
}

impl ChunkRange {
    /// Parses `<start>-<end>`, as the distribution spec writes it, also with the `bytes `
    /// (RFC 9110) or `bytes=` prefix clients send, and a `/<total>` suffix, which is ignored.
    pub fn parse(value: &str) -> Result<ChunkRange, ChunkRangeError> {
        let refused = || ChunkRangeError { shown: crate::preview(value) };
        let trimmed = value.trim();
        let spec = match trimmed.strip_prefix("bytes") {
            Some(rest) => rest.strip_prefix(['=', ' ']).ok_or_else(refused)?,
            None => trimmed,
        };
        let spec = spec.split_once('/').map_or(spec, |(range, _total)| range);
        let (start, end) = spec.split_once('-').ok_or_else(refused)?;
        let position = |text: &str| digits(text.trim()).filter(|&n| n <= MAX_POSITION);
        match (position(start), position(end)) {
            (Some(start), Some(end)) if start <= end => Ok(ChunkRange { start, end }),
            _ => Err(refused()),
        }
    }

    /// The chunk's first byte in the blob.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The chunk's last byte in the blob (inclusive, as the header writes it).
    pub fn last(&self) -> u64 {
        self.end
    }

    /// How many bytes the chunk announces: `end - start + 1`, which cannot overflow.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a chunk range names at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Option<std::ops::Range<u64>> {
        ByteRange::parse(value, size).ok().map(|r| r.as_range())
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-9", 100), Some(0..10));
        assert_eq!(range("bytes=90-", 100), Some(90..100));
        assert_eq!(range("bytes=-10", 100), Some(90..100));
        assert_eq!(range("bytes=-1000", 100), Some(0..100));
        assert_eq!(range("bytes=50-500", 100), Some(50..100));
        assert_eq!(range(" bytes= 1 - 2 ", 100), Some(1..3));
        assert_eq!(range("bytes=0-99999999999999999999999999999", 100), Some(0..100));
        assert_eq!(range(&format!("bytes=0-{}", u64::MAX), u64::MAX), Some(0..u64::MAX));
        assert_eq!(range(&format!("bytes=-{}", u64::MAX), 5), Some(0..5));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=-",
            "bytes=",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=-1-2",
            "bytes=1 2-3",
            "bytes=٣-4",
            "BYTES=0-1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(range(bad, 100), None, "{bad:?}");
        }
        assert_eq!(range("bytes=0-0", 0), None, "nothing is satisfiable in an empty blob");
        assert_eq!(range("bytes=-5", 0), None);
        let e = ByteRange::parse(&format!("bytes={}", "9".repeat(100_000)), 1).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        assert_eq!(ByteRange::parse("bytes=1-2", 10).unwrap().content_range(10), "bytes 1-2/10");
    }

    #[test]
    fn chunk_ranges() {
        let parsed = |v: &str| ChunkRange::parse(v).ok().map(|r| (r.start(), r.last(), r.len()));
        assert_eq!(parsed("0-9"), Some((0, 9, 10)));
        assert_eq!(parsed("bytes 5-5/100"), Some((5, 5, 1)));
        assert_eq!(parsed("bytes=5-6/*"), Some((5, 6, 2)));
        assert_eq!(parsed(" 1 - 2 "), Some((1, 2, 2)));
        let max = MAX_POSITION;
        assert_eq!(parsed(&format!("0-{max}")), Some((0, max, max + 1)));
        for bad in [
            "",
            "5",
            "-5",
            "5-",
            "5-4",
            "-1-5",
            "+1-5",
            "1-+5",
            "*/100",
            "bytesx0-1",
            "bytesbytes=0-1",
            &format!("0-{}", max + 1),
            &format!("0-{}", u64::MAX),
            "0-99999999999999999999999",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        let e = ChunkRange::parse(&"1".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
