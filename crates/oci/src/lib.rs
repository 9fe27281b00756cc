//! Pure OCI distribution types: digests, repository names, tags, references, media types,
//! manifest parsing and validation, the byte ranges of blob reads and chunked uploads, and the
//! spec's error codes.
//!
//! Untrusted strings from the wire become these typed values at the edge of the program, so
//! nothing inside handles a raw digest or name. This crate does no I/O and knows nothing of
//! HTTP frameworks, databases or storage.

mod digest;
mod error;
pub mod manifest;
mod media;
mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError};
pub use error::ErrorCode;
pub use manifest::ManifestKind;
pub use manifest::{
    effective_artifact_type, Descriptor, IndexChild, IndexValidation, ManifestError,
    ParsedManifest, Platform,
};
pub use media::{MediaType, MediaTypeError};
pub use name::{
    DependencyProxyImage, NameError, Reference, ReferenceError, RepositoryName, Tag,
    DEPENDENCY_PROXY_PATH,
};
pub use range::{ByteRange, ChunkRange, ChunkRangeError, RangeNotSatisfiable};

/// Characters of untrusted text an error message shows before cutting it short.
const PREVIEW_CHARS: usize = 64;

/// Untrusted text as error messages show it: quoted and escaped (`"a\0b"`), and cut short, so
/// a 100 KB parameter does not come back 100 KB long.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// Media types the registry understands.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

#[cfg(test)]
mod tests {
    #[test]
    fn previews_are_short_and_escaped() {
        assert_eq!(super::preview("a\0b"), "\"a\\0b\"");
        let long = super::preview(&"x".repeat(100_000));
        assert!(long.len() < 100 && long.ends_with("(100000 bytes)"), "{long}");
        assert!(super::preview(&"é".repeat(70)).contains('…'));
    }
}
