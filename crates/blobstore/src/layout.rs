//! The storage key layout: every key the program writes is built here, nowhere else.
//!
//! ```text
//! <root>/
//!   blobs/
//!     sha256/ab/abcdef0123…     one object per blob, named by its digest; written once,
//!     sha512/cd/cdef…           never modified, removed only by garbage collection
//!   uploads/
//!     <upload uuid>/0, 1, 2…    the parts of an upload in progress, one per PATCH/PUT body,
//!                               in order; concatenated (or renamed, for one part) into
//!                               `blobs/…` on commit and deleted on commit, cancel or expiry
//! ```
//!
//! Keys never contain repository or project names: renaming a project or moving a
//! repository changes metadata only, and identical content is stored once for all tenants.
//! Manifests live in the metadata database, not here.

use object_store::path::Path;
use oci::Digest;

/// `blobs/<algorithm>/<first two hex chars>/<hex>`
pub fn blob(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/{}/{}/{}", digest.algorithm().as_str(), &hex[..2], hex))
}

/// `uploads/<uuid>/<part>`
pub fn upload_part(upload_id: &str, part: i64) -> Path {
    Path::from(format!("uploads/{upload_id}/{part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_fan_out_by_digest_prefix() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(blob(&d).as_ref(), format!("blobs/sha256/ab/{}", "ab".repeat(32)));
        assert_eq!(upload_part("u", 3).as_ref(), "uploads/u/3");
    }
}
