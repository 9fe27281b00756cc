//! `Range` (blob GET) and `Content-Range` (upload chunk) headers: never a panic or an
//! overflow; an accepted range lies inside the blob and round-trips. The first 8 bytes of the
//! input are the blob's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{ByteRange, ChunkRange};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(value) = std::str::from_utf8(&data[8..]) else { return };
    if let Ok(r) = ByteRange::parse(value, size) {
        assert!(r.start() < r.end() && r.end() <= size);
        let again = ByteRange::parse(&format!("bytes={}-{}", r.start(), r.end() - 1), size);
        assert_eq!(again, Ok(r));
    }
    if let Ok(c) = ChunkRange::parse(value) {
        assert!(c.start() <= c.last() && c.last() <= oci::range::MAX_POSITION);
        assert_eq!(c.len(), c.last() - c.start() + 1);
        assert_eq!(ChunkRange::parse(&c.to_string()), Ok(c));
    }
});
