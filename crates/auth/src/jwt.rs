//! Registry tokens: ES256 JWTs signed with a key that every instance shares.
//!
//! The key comes from a PKCS#8 PEM file named in the configuration, or is generated on the
//! first start and kept in the metadata database, so N instances verify each other's tokens.
//! Verification pins the algorithm (an `alg: none` or HMAC token is refused) and checks
//! signature, issuer, audience, expiry and not-before.

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
    verified: std::sync::Mutex<std::collections::HashMap<String, Claims>>,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub service: String,
    pub lifetime: Duration,
}

/// Verified tokens remembered at most.
const VERIFIED_TOKENS: usize = 10_000;

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
            verified: Default::default(),
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
        let now = now_secs();
        if let Some(claims) = self.verified.lock().expect("token cache lock").get(token) {
            if claims.exp > now && claims.nbf <= now {
                return Ok(claims.clone());
            }
        }
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &self.decoding,
            &self.validation(&self.service, false),
        )?
        .claims;
        let mut cache = self.verified.lock().expect("token cache lock");
        if cache.len() >= VERIFIED_TOKENS {
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= VERIFIED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    /// Verifies everything but expiry (for continuing an upload started with this token).
    pub fn verify_ignoring_expiry(
        &self,
        token: &str,
    ) -> Result<Claims, jsonwebtoken::errors::Error> {
        Ok(jsonwebtoken::decode::<Claims>(
            token,
            &self.decoding,
            &self.validation(&self.service, true),
        )?
        .claims)
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let aud = format!("{}:refresh", self.service);
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation(&aud, false))?
            .claims)
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
}
