//! Properties of what a token request and a registry request carry: `scope` parameters
//! (`Scope::parse`, `Scope::parse_all`) and registry tokens (`TokenService::verify`), over
//! generated input.
//!
//! - A parsed scope names a type and a resource and only known actions, each once, and
//!   renders back (`to_challenge`) to a string that parses to the same scope; a request
//!   names at most `MAX_SCOPES` resources, each once.
//! - Nothing verifies but the service's own untouched tokens: not arbitrary strings, not a
//!   real token with any one byte changed or cut short, not one with bytes added, not a huge one.

use std::time::Duration;

use auth::jwt::{TokenService, MAX_TOKEN_BYTES};
use auth::scope::{ResourceAccess, Scope, KNOWN_ACTIONS, MAX_SCOPES};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn scope_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(repository|registry|repository\\(plugin\\)|)?:[a-z0-9/:._-]{0,12}:((pull|push|delete|\\*|PULL|admin| pull |)(,|, )?){0,5}",
        "[a-z:, *]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn a_scope_names_a_resource_and_known_actions_once(text in scope_text()) {
        if let Some(scope) = Scope::parse(&text) {
            prop_assert!(!scope.kind.is_empty() && !scope.name.is_empty());
            prop_assert!(!scope.kind.contains(':'));
            for (i, action) in scope.actions.iter().enumerate() {
                prop_assert!(KNOWN_ACTIONS.contains(&action.as_str()), "{action:?}");
                prop_assert!(!scope.actions[..i].contains(action), "{action:?} twice");
            }
            prop_assert_eq!(Scope::parse(&scope.to_challenge()), Some(scope));
        }
    }

    #[test]
    fn a_request_names_each_resource_once_and_at_most_max_scopes(
        params in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    (0..40usize, "(pull|push|delete|\\*|x)(,(pull|push))?")
                        .prop_map(|(i, a)| format!("repository:r{i}:{a}")),
                    scope_text(),
                ],
                0..6,
            )
            .prop_map(|scopes| scopes.join(" ")),
            0..12,
        )
    ) {
        let resources: std::collections::BTreeSet<(String, String)> = params
            .iter()
            .flat_map(|p| p.split(' '))
            .filter_map(Scope::parse)
            .map(|s| (s.kind, s.name))
            .collect();
        match Scope::parse_all(params.iter().map(String::as_str)) {
            Ok(scopes) => {
                prop_assert_eq!(scopes.len(), resources.len());
                prop_assert!(scopes.len() <= MAX_SCOPES);
            }
            Err(e) => {
                prop_assert!(resources.len() > MAX_SCOPES, "{} resources refused: {e}", resources.len());
            }
        }
    }
}

/// A token service with a key of its own, kept in a scratch SQLite database as a server
/// without a key file keeps it, and a token it issued for `alice`.
fn service() -> (TokenService, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let service = runtime.block_on(async {
        let store = meta::Store::connect(&url).await.unwrap();
        TokenService::load(&store, None, "stowage", "container_registry", Duration::from_secs(600))
            .await
            .unwrap()
    });
    let access = vec![ResourceAccess {
        kind: "repository".into(),
        name: "acme/app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let token = service.issue("alice", "user:1", access).token;
    (service, token, dir)
}

#[test]
fn tokens_that_were_not_issued_do_not_verify() {
    let (service, real, _dir) = service();
    assert_eq!(service.verify(&real).unwrap().sub, "alice");
    let mut runner = proptest::test_runner::TestRunner::new(config(3000));
    // Any one byte changed (to any other printable character), anywhere.
    runner
        .run(&(0..real.len(), 0x20u8..0x7f), |(at, byte)| {
            let mut bytes = real.clone().into_bytes();
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(service.verify(&tampered).is_err(), "{tampered}");
            Ok(())
        })
        .unwrap();
    // Cut short, or with something added.
    runner
        .run(&(0..real.len(), "[A-Za-z0-9_.=-]{1,8}"), |(cut, extra)| {
            let (appended, prepended) = (format!("{real}{extra}"), format!("{extra}{real}"));
            prop_assert!(service.verify(&real[..cut]).is_err());
            prop_assert!(service.verify(&appended).is_err(), "{}", appended);
            prop_assert!(service.verify(&prepended).is_err(), "{}", prepended);
            Ok(())
        })
        .unwrap();
    // Arbitrary strings, including JWT-shaped ones.
    runner
        .run(
            &prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,90}",
            ],
            |text| {
                prop_assert!(service.verify(&text).is_err(), "{text}");
                Ok(())
            },
        )
        .unwrap();
    // Huge: refused unread, however it is made.
    for len in [MAX_TOKEN_BYTES + 1, 1 << 20] {
        let huge = format!("{real}{}", "A".repeat(len));
        assert!(service.verify(&huge).is_err());
    }
    // The real token still verifies after all that (nothing was cached wrongly).
    assert_eq!(service.verify(&real).unwrap().sub, "alice");
}
