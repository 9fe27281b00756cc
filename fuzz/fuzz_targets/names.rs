//! Repository names, tags, references, digests, media types and `oci::preview`: never a panic,
//! and an accepted value is the input, byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{Digest, MediaType, Reference, RepositoryName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = text.parse::<RepositoryName>() {
        assert_eq!(name.as_str(), text);
        assert!(text.len() <= 255);
    }
    if let Ok(tag) = text.parse::<Tag>() {
        assert_eq!(tag.as_str(), text);
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.as_str(), text);
        assert_eq!(format!("{}:{}", digest.algorithm().as_str(), digest.hex()), text);
    }
    match Reference::parse(text) {
        Ok(reference) => assert_eq!(reference.to_string(), text),
        Err(e) => assert!(e.to_string().len() < 1000),
    }
    if let Ok(media_type) = text.parse::<MediaType>() {
        assert_eq!(media_type.as_str(), text);
    }
    assert!(oci::preview(text).len() <= 64 * 10 + 40);
});
