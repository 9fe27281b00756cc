//! `/api/v4` parameter parsers: group and project references, path segments, expiry dates
//! and durations. Never a panic; refusals are 400s; accepted values keep their invariants.
#![no_main]

use api::input::Ref;
use api::names::PathSegment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Ref::parse("id", text) {
        Ok(Ref::Path(path)) => {
            assert_eq!(path, text);
            assert!(path.parse::<oci::RepositoryName>().is_ok(), "{path:?}");
        }
        Ok(Ref::Id(id)) => assert_eq!(text.parse::<i64>().ok(), Some(id)),
        Err(e) => assert_eq!(e.status(), 400),
    }
    if let Ok(segment) = PathSegment::parse(text) {
        assert!(!segment.as_str().contains('/'));
    }
    if let Ok(segment) = PathSegment::from_name(text) {
        assert!(PathSegment::parse(segment.as_str()).is_ok());
    }
    if let Ok(ms) = api::time::parse_expiry_date(text) {
        assert_eq!(api::time::date(ms), text[..10]);
    }
    if let Ok(ms) = api::registry_api::parse_duration_ms(text) {
        assert!(ms >= 0);
    }
});
