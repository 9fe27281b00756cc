//! A username and secret as a client presented them, parsed once at the edge.
//!
//! Whatever a client sends is refused here — before any database query, throttling state or
//! password hash sees it — unless both parts are at most [`MAX_CREDENTIAL_BYTES`] long and free
//! of control characters. No real credential is longer (usernames are at most 255 characters,
//! tokens 37, generated passwords 24, and the API refuses longer passwords), and a NUL byte is
//! something PostgreSQL cannot even compare. Such a refusal answers exactly like a wrong
//! password, so it tells an attacker nothing. Presented usernames reach the log only through
//! [`oci::preview`] (quoted, escaped, cut to 64 characters).

use std::fmt;

/// The longest username or secret accepted, in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

/// A username and secret of acceptable form (not yet checked against anything).
pub struct Credentials {
    username: String,
    secret: String,
}

/// Why presented credentials were refused before being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedCredentials {
    #[error("the username is empty")]
    EmptyUsername,
    #[error("the username or secret is longer than {MAX_CREDENTIAL_BYTES} bytes")]
    TooLong,
    #[error("the username or secret contains control characters")]
    ControlCharacters,
}

/// Whether `s` could be part of a real credential: at most [`MAX_CREDENTIAL_BYTES`] bytes and
/// without control characters (NUL included). The API applies the same rule to new passwords,
/// so every password it stores can be used to log in.
pub fn acceptable(s: &str) -> Result<(), MalformedCredentials> {
    if s.len() > MAX_CREDENTIAL_BYTES {
        return Err(MalformedCredentials::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(MalformedCredentials::ControlCharacters);
    }
    Ok(())
}

/// The fewest characters a password may have, wherever one is set: the API, the admin CLI
/// and `STOWAGE_ADMIN_PASSWORD`.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// THE rule for a new password: at least [`MIN_PASSWORD_CHARS`] characters, and
/// [`acceptable`] as a credential, so every stored password can be used to log in. The error is
/// a sentence to show after "password".
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("is too short (minimum is {MIN_PASSWORD_CHARS} characters)"));
    }
    if acceptable(password).is_err() {
        return Err(format!(
            "is too long or contains control characters (at most {MAX_CREDENTIAL_BYTES} bytes)"
        ));
    }
    Ok(())
}

impl Credentials {
    pub fn parse(username: &str, secret: &str) -> Result<Credentials, MalformedCredentials> {
        if username.is_empty() {
            return Err(MalformedCredentials::EmptyUsername);
        }
        acceptable(username)?;
        acceptable(secret)?;
        Ok(Credentials { username: username.to_string(), secret: secret.to_string() })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

// Never print the secret, not even by accident in a `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &format_args!("{}", oci::preview(&self.username)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_no_credential_looks_like() {
        assert!(Credentials::parse("alice", "s3cret").is_ok());
        assert!(Credentials::parse("ünïcode", "pässwörd").is_ok());
        let long = "x".repeat(MAX_CREDENTIAL_BYTES);
        assert!(Credentials::parse(&long, &long).is_ok());
        let longer = "x".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert_eq!(Credentials::parse(&longer, "s").err(), Some(MalformedCredentials::TooLong));
        assert_eq!(Credentials::parse("alice", &longer).err(), Some(MalformedCredentials::TooLong));
        // 129 two-byte characters: short in characters, too long in bytes.
        assert!(Credentials::parse(&"é".repeat(129), "s").is_err());
        for bad in ["al\0ice", "alice\n", "a\rb", "\u{1b}[31m", "a\u{7f}", "a\u{85}"] {
            assert_eq!(
                Credentials::parse(bad, "s").err(),
                Some(MalformedCredentials::ControlCharacters),
                "{bad:?}"
            );
            assert!(Credentials::parse("alice", bad).is_err(), "{bad:?}");
        }
        assert_eq!(Credentials::parse("", "s").err(), Some(MalformedCredentials::EmptyUsername));
        // An empty secret is a (wrong) secret, not a malformed one.
        assert!(Credentials::parse("alice", "").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret_nor_a_whole_long_name() {
        let c = Credentials::parse("bob", "hunter2").unwrap();
        assert_eq!(format!("{c:?}"), "Credentials { username: \"bob\" }");
        let long = "y".repeat(MAX_CREDENTIAL_BYTES);
        let c = Credentials::parse(&long, "hunter2").unwrap();
        assert!(format!("{c:?}").len() < 120, "{c:?}");
    }
}
