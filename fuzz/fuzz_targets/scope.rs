//! Docker token scopes (`Scope::parse`, `Scope::parse_all`): never a panic, and a parsed
//! scope renders back to a string that parses to the same scope.
#![no_main]

use auth::scope::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(scope) = Scope::parse(text) {
        assert!(!scope.kind.is_empty() && !scope.name.is_empty());
        let again = Scope::parse(&scope.to_challenge());
        if !scope.actions.is_empty() {
            assert_eq!(again.as_ref().map(|s| &s.name), Some(&scope.name));
        }
    }
    let _ = Scope::parse_all(text.split('&'));
});
