//! Registry tokens (`TokenService::verify`) with arbitrary strings, and real tokens with
//! bytes written over them: never a panic, and nothing but the service's own untouched
//! token verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use auth::jwt::TokenService;
use auth::scope::ResourceAccess;
use libfuzzer_sys::fuzz_target;

/// A token service with a key of its own (kept in a scratch SQLite database, as a server
/// without a key file keeps it), and one token it issued.
fn service() -> &'static (TokenService, String) {
    static SERVICE: OnceLock<(TokenService, String)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let db = std::env::temp_dir().join(format!("stowage-fuzz-jwt-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&db);
        let service = runtime.block_on(async {
            let store = meta::Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();
            let lifetime = Duration::from_secs(3600);
            TokenService::load(&store, None, "stowage", "container_registry", lifetime)
                .await
                .unwrap()
        });
        let access = vec![ResourceAccess {
            kind: "repository".into(),
            name: "acme/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
        let token = service.issue("alice", "pat:1", access).token;
        assert!(service.verify(&token).is_ok());
        (service, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let (service, real) = service();
    if let Ok(text) = std::str::from_utf8(data) {
        if text != real {
            assert!(service.verify(text).is_err(), "an arbitrary string verified: {text:?}");
        }
    }
    // The real token with the input's bytes written over it, where its first byte says.
    if let Some((&at, patch)) = data.split_first() {
        let mut tampered = real.as_bytes().to_vec();
        let at = at as usize * tampered.len() / 256;
        for (i, b) in patch.iter().enumerate() {
            if let Some(slot) = tampered.get_mut(at + i) {
                *slot = *b;
            }
        }
        if let Ok(tampered) = String::from_utf8(tampered) {
            if tampered != *real {
                assert!(
                    service.verify(&tampered).is_err(),
                    "a tampered token verified: {tampered}"
                );
            }
        }
    }
});
