//! Content digests: `algorithm:hex`, as the OCI image spec defines them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// The digest algorithms the registry accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    // Each holds the refused text as `crate::preview` shows it: quoted and cut short.
    #[error("digest {0} is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm {0} is not supported: use sha256 or sha512")]
    UnsupportedAlgorithm(String),
    #[error("digest {0} must have {1} lowercase hex characters after the algorithm")]
    BadHex(String, usize),
}

/// A validated digest such as `sha256:e3b0…`. Stored in its canonical string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex-encoded part after the `:`.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Digest {
        Digest { text: format!("sha256:{}", hex::encode(bytes)), algorithm: Algorithm::Sha256 }
    }

    pub fn from_sha512_bytes(bytes: &[u8]) -> Digest {
        Digest { text: format!("sha512:{}", hex::encode(bytes)), algorithm: Algorithm::Sha512 }
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::from_sha256_bytes(sha2::Sha256::digest(data).into())
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        match algorithm {
            Algorithm::Sha256 => Digest::sha256_of(data),
            Algorithm::Sha512 => Digest::from_sha512_bytes(&sha2::Sha512::digest(data)),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) =
            s.split_once(':').ok_or_else(|| DigestError::Malformed(crate::preview(s)))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "" => return Err(DigestError::Malformed(crate::preview(s))),
            other => return Err(DigestError::UnsupportedAlgorithm(crate::preview(other))),
        };
        let want = algorithm.hex_len();
        if hex.len() != want
            || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadHex(crate::preview(s), want));
        }
        Ok(Digest { text: s.to_string(), algorithm })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_and_sha512() {
        let empty = Digest::sha256_of(b"");
        assert_eq!(
            empty.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(empty.as_str().parse::<Digest>().unwrap(), empty);
        let d512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(d512.as_str().parse::<Digest>().unwrap().algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "sha256",
            "sha256:xyz",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
            ":abc",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be refused");
        }
        let huge = format!("sha256:{}", "a".repeat(100_000));
        assert!(huge.parse::<Digest>().unwrap_err().to_string().len() < 300);
    }
}
