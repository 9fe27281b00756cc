//! `/v2` request paths (`Route::parse`): never a panic, and an accepted path is the one
//! spelling of its route. The first byte of the input picks the method, the rest is the path.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use registry::{Operation, Route};

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&m, path)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(path) else { return };
    let method = &METHODS[m as usize % METHODS.len()];
    if let Ok(route) = Route::parse(method, path) {
        let canonical = route.path();
        let other_spelling = match &route {
            Route::Base => path == "/v2",
            Route::Repository { op: Operation::StartUpload, .. } => {
                path == canonical.trim_end_matches('/')
            }
            _ => false,
        };
        assert!(path == canonical || other_spelling, "{method} {path:?} parsed as {canonical}");
    }
});
