//! Registry tokens: ES256 JWTs signed with a key that every instance shares.
//!
//! The key comes from a PKCS#8 PEM file named in the configuration, or is generated on the
//! first start and kept in the metadata database, so N instances verify each other's tokens.
//! Verification pins the algorithm (an `alg: none` or HMAC token is refused) and checks
//! signature, issuer, audience, expiry and not-before. A token longer than any this service
//! issues ([`MAX_TOKEN_BYTES`]) is refused before it is parsed.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

use crate::scope::ResourceAccess;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("the signing key is not a PKCS#8 P-256 (ES256) private key")]
    Invalid,
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
}

/// The claims of a registry token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    /// Which credential the token was issued for (`user:1`, `pat:3`, `deploy:2`, `job:7`,
    /// `anonymous`), so the registry can apply the same policy when filtering listings.
    #[serde(default)]
    pub cred: String,
}

/// A token handed to a client.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: u64,
}

pub struct TokenService {
    /// Tokens whose signature and claims were verified, until they expire: verifying an ES256
    /// signature costs more than serving a manifest, and clients reuse a token many times.
    verified: std::sync::Mutex<VerifiedTokens>,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub service: String,
    pub lifetime: Duration,
}

/// The longest token verified. Every token this service issues is shorter: a subject of at
/// most 256 bytes and at most [`crate::scope::MAX_SCOPES`] resources of at most 255 characters
/// with the four known actions come to about 14 KiB (the test `largest_token_fits` builds
/// one); anything longer was not made here and is refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verified tokens remembered at most.
const CACHED_TOKENS: usize = 10_000;
/// Estimated memory the remembered tokens may take at most.
const CACHED_BYTES: usize = 16 * 1024 * 1024;
/// How often expired tokens are swept out even when the cache is not full.
const SWEEP_EVERY_SECS: u64 = 60;

/// Verified tokens by the SHA-256 of the token (so a cached token costs 32 bytes of key
/// whatever its length), bounded by count and by estimated bytes. Expired entries are swept
/// every minute; when still over a bound, the entries that expire soonest go first.
struct VerifiedTokens {
    entries: std::collections::HashMap<[u8; 32], (Claims, usize)>,
    bytes: usize,
    next_sweep: u64,
    max_entries: usize,
    max_bytes: usize,
}

impl VerifiedTokens {
    fn new(max_entries: usize, max_bytes: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: Default::default(),
            bytes: 0,
            next_sweep: 0,
            max_entries,
            max_bytes,
        }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// What keeping `claims` costs, roughly: the structures, their strings and the map slot.
    fn estimated_bytes(claims: &Claims) -> usize {
        use std::mem::size_of;
        let strings = [&claims.iss, &claims.sub, &claims.aud, &claims.jti, &claims.cred]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        let access = claims
            .access
            .iter()
            .map(|a| {
                size_of::<ResourceAccess>()
                    + a.kind.len()
                    + a.name.len()
                    + a.actions.iter().map(|x| size_of::<String>() + x.len()).sum::<usize>()
            })
            .sum::<usize>();
        size_of::<([u8; 32], (Claims, usize))>() + 16 + strings + access
    }

    fn get(&self, token: &str, now: u64) -> Option<Claims> {
        let (claims, _) = self.entries.get(&Self::key(token))?;
        (claims.exp > now && claims.nbf <= now).then(|| claims.clone())
    }

    fn insert(&mut self, token: &str, claims: Claims, now: u64) {
        let size = Self::estimated_bytes(&claims);
        if size > self.max_bytes {
            return;
        }
        let full = self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes;
        if full || now >= self.next_sweep {
            self.sweep(now, size);
        }
        if let Some((_, old)) = self.entries.insert(Self::key(token), (claims, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
    }

    /// Drops expired entries; then, while adding `incoming` bytes would overflow a bound, the
    /// soonest-expiring tenth at a time (so a full cache is not sorted on every insert).
    fn sweep(&mut self, now: u64, incoming: usize) {
        self.next_sweep = now + SWEEP_EVERY_SECS;
        self.entries.retain(|_, (c, _)| c.exp > now);
        self.bytes = self.entries.values().map(|(_, size)| size).sum();
        let over = |t: &Self| t.entries.len() >= t.max_entries || t.bytes + incoming > t.max_bytes;
        if !over(self) {
            return;
        }
        let mut by_expiry: Vec<(u64, [u8; 32])> =
            self.entries.iter().map(|(k, (c, _))| (c.exp, *k)).collect();
        by_expiry.sort_unstable();
        let batch = (by_expiry.len() / 10).max(1);
        let mut evicted = 0;
        for (_, key) in by_expiry {
            if !over(self) && evicted >= batch {
                break;
            }
            if let Some((_, size)) = self.entries.remove(&key) {
                self.bytes -= size;
                evicted += 1;
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// PKCS#8 DER from a PEM file's base64 body.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()
}

impl TokenService {
    fn from_der(
        der: &[u8],
        kid: Option<String>,
        issuer: &str,
        service: &str,
        lifetime: Duration,
    ) -> Result<TokenService, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| KeyError::Invalid)?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = kid.unwrap_or_else(|| {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(&public)[..12])
        });
        Ok(TokenService {
            verified: std::sync::Mutex::new(VerifiedTokens::new(CACHED_TOKENS, CACHED_BYTES)),
            kid,
            encoding: EncodingKey::from_ec_der(der),
            decoding: DecodingKey::from_ec_der(&public),
            issuer: issuer.to_string(),
            service: service.to_string(),
            lifetime,
        })
    }

    /// Uses the PEM key at `key_file`, or the shared key in the database (created if none).
    pub async fn load(
        store: &meta::Store,
        key_file: Option<&str>,
        issuer: &str,
        service: &str,
        lifetime: Duration,
    ) -> Result<TokenService, KeyError> {
        if let Some(path) = key_file {
            let pem =
                std::fs::read_to_string(path).map_err(|e| KeyError::Read(path.to_string(), e))?;
            let der = pem_to_der(&pem).ok_or(KeyError::Invalid)?;
            return TokenService::from_der(&der, None, issuer, service, lifetime);
        }
        let key = match store.signing_key().await? {
            Some(key) => key,
            None => {
                let rng = ring::rand::SystemRandom::new();
                let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Invalid)?;
                let candidate =
                    TokenService::from_der(der.as_ref(), None, issuer, service, lifetime)?;
                store
                    .ensure_signing_key(&meta::SigningKey {
                        kid: candidate.kid.clone(),
                        algorithm: "ES256".into(),
                        private_der: der.as_ref().to_vec(),
                    })
                    .await?
            }
        };
        TokenService::from_der(&key.private_der, Some(key.kid), issuer, service, lifetime)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a token for `subject` granting `access`, with audience `aud`.
    fn sign(
        &self,
        subject: &str,
        cred: &str,
        aud: &str,
        access: Vec<ResourceAccess>,
        lifetime: Duration,
    ) -> IssuedToken {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: aud.to_string(),
            exp: now + lifetime.as_secs().max(1),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            cred: cred.to_string(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("ES256 signing with a valid key");
        IssuedToken { token, expires_in: lifetime.as_secs().max(1), issued_at: now }
    }

    /// A registry access token.
    pub fn issue(&self, subject: &str, cred: &str, access: Vec<ResourceAccess>) -> IssuedToken {
        self.sign(subject, cred, &self.service, access, self.lifetime)
    }

    /// A long-lived refresh token (OAuth2 `refresh_token` grant), audience `<service>:refresh`.
    pub fn issue_refresh(&self, subject: &str, cred: &str) -> String {
        self.sign(
            subject,
            cred,
            &format!("{}:refresh", self.service),
            Vec::new(),
            Duration::from_secs(30 * 86400),
        )
        .token
    }

    fn validation(&self, aud: &str, allow_expired: bool) -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        v.validate_exp = !allow_expired;
        v
    }

    /// Verifies a registry access token.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidToken.into());
        }
        let now = now_secs();
        if let Some(claims) = self.verified.lock().expect("token cache lock").get(token, now) {
            return Ok(claims);
        }
        let claims = self.decode(token, &self.service, false)?;
        self.verified.lock().expect("token cache lock").insert(token, claims.clone(), now);
        Ok(claims)
    }

    fn decode(
        &self,
        token: &str,
        aud: &str,
        allow_expired: bool,
    ) -> Result<Claims, jsonwebtoken::errors::Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidToken.into());
        }
        Ok(jsonwebtoken::decode::<Claims>(
            token,
            &self.decoding,
            &self.validation(aud, allow_expired),
        )?
        .claims)
    }

    /// Verifies everything but expiry (for continuing an upload started with this token).
    pub fn verify_ignoring_expiry(
        &self,
        token: &str,
    ) -> Result<Claims, jsonwebtoken::errors::Error> {
        self.decode(token, &self.service, true)
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        self.decode(token, &format!("{}:refresh", self.service), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        let rng = ring::rand::SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        TokenService::from_der(
            der.as_ref(),
            None,
            "stowage",
            "container_registry",
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_tampering() {
        let s = service();
        let access = vec![ResourceAccess {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let t = s.issue("alice", "user:1", access.clone());
        let claims = s.verify(&t.token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, access);
        let header = jsonwebtoken::decode_header(&t.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(s.kid()));

        // Another key's token, a refresh token used as access token, and `alg: none` fail.
        assert!(service().verify(&t.token).is_err() || service().kid() == s.kid());
        assert!(s.verify(&s.issue_refresh("alice", "user:1")).is_err());
        let parts: Vec<&str> = t.token.split('.').collect();
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(s.verify(&format!("{none_header}.{}.", parts[1])).is_err());
        // A changed payload breaks the signature.
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&serde_json::json!({"iss":"stowage","sub":"root","aud":"container_registry","exp":9999999999u64,"nbf":0,"iat":0,"jti":"x","access":[]})).unwrap());
        assert!(s.verify(&format!("{}.{forged}.{}", parts[0], parts[2])).is_err());
    }

    #[test]
    fn expiry() {
        let s = service();
        let t = s.sign("bob", "user:2", "container_registry", Vec::new(), Duration::from_secs(1));
        let mut claims: Claims = s.verify(&t.token).unwrap();
        claims.exp = now_secs() - 60;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(s.kid.clone());
        let expired = jsonwebtoken::encode(&header, &claims, &s.encoding).unwrap();
        assert!(s.verify(&expired).is_err());
        assert_eq!(s.verify_ignoring_expiry(&expired).unwrap().sub, "bob");
    }

    /// The largest token the service can issue (longest subject, the most scopes, the longest
    /// names, every action) verifies: it fits [`MAX_TOKEN_BYTES`].
    #[test]
    fn largest_token_fits() {
        let s = service();
        // Repository names are at most 255 characters (grants are only made for names that
        // parse as one).
        let longest = 255;
        assert!("a".repeat(longest).parse::<oci::RepositoryName>().is_ok());
        assert!("a".repeat(longest + 1).parse::<oci::RepositoryName>().is_err());
        let access: Vec<ResourceAccess> = (0..crate::scope::MAX_SCOPES)
            .map(|i| ResourceAccess {
                kind: "repository".into(),
                name: format!("{i:02}{}", "a".repeat(longest - 2)),
                actions: crate::scope::KNOWN_ACTIONS.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        let subject = "u".repeat(crate::credentials::MAX_CREDENTIAL_BYTES);
        let t = s.issue(&subject, "pat:1234567890", access);
        assert!(t.token.len() <= MAX_TOKEN_BYTES, "{} bytes", t.token.len());
        assert!(t.token.len() > MAX_TOKEN_BYTES / 2, "the bound is not loose: {}", t.token.len());
        assert_eq!(s.verify(&t.token).unwrap().sub, subject);
        // Something longer was not made here: refused without being read.
        let padded = format!("{}{}", t.token, "A".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(
            s.verify(&padded).unwrap_err().kind(),
            jsonwebtoken::errors::ErrorKind::InvalidToken
        ));
    }

    fn claims(exp: u64, name_len: usize) -> Claims {
        Claims {
            iss: "stowage".into(),
            sub: "alice".into(),
            aud: "container_registry".into(),
            exp,
            nbf: 0,
            iat: 0,
            jti: uuid::Uuid::new_v4().to_string(),
            access: vec![ResourceAccess {
                kind: "repository".into(),
                name: "n".repeat(name_len),
                actions: vec!["pull".into()],
            }],
            cred: "user:1".into(),
        }
    }

    #[test]
    fn the_cache_is_bounded_by_count() {
        let mut cache = VerifiedTokens::new(100, usize::MAX);
        for i in 0..1_000u64 {
            cache.insert(&format!("token-{i}"), claims(1_000 + i, 10), 10);
            assert!(cache.entries.len() <= 100);
            assert!(i < 100 || cache.entries.len() >= 90, "{} entries", cache.entries.len());
        }
        // The latest (longest-lived) tokens are the ones kept.
        assert!(cache.get("token-999", 10).is_some());
        assert!(cache.get("token-0", 10).is_none());
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let one = VerifiedTokens::estimated_bytes(&claims(0, 10_000));
        assert!(one > 10_000);
        let mut cache = VerifiedTokens::new(usize::MAX, 20 * one);
        for i in 0..500u64 {
            cache.insert(&format!("big-{i}"), claims(1_000 + i, 10_000), 10);
            assert!(cache.bytes <= 20 * one, "{} bytes", cache.bytes);
            let counted: usize = cache.entries.values().map(|(_, size)| size).sum();
            assert_eq!(cache.bytes, counted);
            // A full cache drops a tenth, not everything.
            assert!(i < 20 || cache.entries.len() >= 17, "{} entries", cache.entries.len());
        }
    }

    #[test]
    fn expired_entries_are_swept_and_never_served() {
        let mut cache = VerifiedTokens::new(1_000, usize::MAX);
        for i in 0..100 {
            cache.insert(&format!("short-{i}"), claims(20, 10), 10);
        }
        assert!(cache.get("short-1", 10).is_some());
        assert!(cache.get("short-1", 20).is_none(), "an expired token is served from the cache");
        // The next insert after the sweep interval drops every expired entry.
        cache.insert("late", claims(1_000, 10), 10 + SWEEP_EVERY_SECS);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.bytes, VerifiedTokens::estimated_bytes(&claims(1_000, 10)));
    }
}
