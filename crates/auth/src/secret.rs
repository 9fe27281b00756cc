//! Secrets: password hashing (argon2) and random tokens stored as SHA-256 hashes.
//!
//! Tokens carry 190 bits of randomness, so a fast hash is enough to store them safely; the
//! database lookup is by hash, and the final comparison is constant-time. Passwords are
//! low-entropy and get argon2id.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use sha2::Digest;
use subtle::ConstantTimeEq;

/// Prefix of personal access tokens.
pub const PAT_PREFIX: &str = "stwp_";
/// Prefix of deploy tokens.
pub const DEPLOY_PREFIX: &str = "stwd_";
/// Prefix of CI job tokens.
pub const JOB_PREFIX: &str = "stwj_";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random token: `prefix` + 32 alphanumeric characters.
pub fn new_token(prefix: &str) -> String {
    let mut rng = rand::rngs::OsRng;
    let body: String =
        (0..32).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{body}")
}

/// The stored form of a token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two stored hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A generated password for the first admin: 24 alphanumeric characters.
pub fn new_password() -> String {
    new_token("")[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password("correct horse");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        let t = new_token(PAT_PREFIX);
        assert!(t.starts_with(PAT_PREFIX) && t.len() == 37);
        assert_ne!(t, new_token(PAT_PREFIX));
        assert!(hashes_equal(&token_hash(&t), &token_hash(&t)));
        assert!(!hashes_equal(&token_hash(&t), &token_hash("other")));
    }
}
