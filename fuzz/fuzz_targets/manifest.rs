//! `ParsedManifest::parse` with any Content-Type and any body: never a panic, and what it
//! accepts keeps its invariants. The first line of the input is the Content-Type (an empty
//! line: none), the rest the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{IndexValidation, ManifestKind, MediaType, ParsedManifest};

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok().filter(|c| !c.is_empty()), &data[i + 1..]),
        None => (None, data),
    };
    match ParsedManifest::parse(content_type, body) {
        Ok(m) => {
            if let Some(at) = &m.artifact_type {
                assert!(at.parse::<MediaType>().is_ok(), "artifact type {at:?}");
            }
            match m.kind {
                ManifestKind::Image => assert!(m.config.is_some() && m.manifests.is_empty()),
                ManifestKind::Index => assert!(m.config.is_none() && m.layers.is_empty()),
            }
            assert!(m.referenced_size() >= 0);
            let _ = m.required_blobs();
            let _ = m.children(&IndexValidation::All);
        }
        Err(e) => assert!(e.to_string().len() < 2000, "a long refusal: {e}"),
    }
});
