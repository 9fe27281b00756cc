//! Pure OCI distribution types: digests, repository names, tags, references, media types,
//! manifest parsing and validation, and the spec's error codes.
//!
//! Untrusted strings from the wire become these typed values at the edge of the program, so
//! nothing inside handles a raw digest or name. This crate does no I/O and knows nothing of
//! HTTP frameworks, databases or storage.

mod digest;
mod error;
pub mod manifest;
mod name;

pub use digest::{Algorithm, Digest, DigestError};
pub use error::ErrorCode;
pub use manifest::ManifestKind;
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{NameError, Reference, ReferenceError, RepositoryName, Tag};

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
