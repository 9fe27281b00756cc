//! Tag-name regexes users give (tag protection patterns, cleanup policies, bulk deletes):
//! never a panic, compile size bounded, matching stays linear. The first line is the delete
//! pattern, the second the keep pattern, the rest tag names to match, one per line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let delete = lines.next().unwrap_or("");
    let keep = lines.next();
    let tags: Vec<(String, i64)> = lines.map(|t| (t.to_string(), 0)).collect();
    if let Ok(re) = meta::compile_tag_pattern(delete) {
        for (tag, _) in &tags {
            let _ = re.is_match(tag);
        }
    }
    match api::registry_api::TagCleanup::new(Some(delete), keep, None, None) {
        Ok(cleanup) => {
            assert!(meta::tag_regex(delete).is_ok(), "{delete:?} is not a regex on its own");
            for name in cleanup.doomed(&tags, 0) {
                assert_ne!(name, "latest");
            }
        }
        Err(e) => assert_eq!(e.status(), 400),
    }
});
