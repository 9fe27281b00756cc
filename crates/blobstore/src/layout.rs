//! The storage key layout: every key the program writes is built here, nowhere else.
//!
//! ```text
//! <root>/
//!   blobs/
//!     sha256/ab/abcdef0123…     one object per blob, named by its digest. Only a commit
//!     sha512/cd/cdef…           puts one here, and only bytes it has verified against the
//!                               digest; it replaces whatever object was there before, so an
//!                               object planted or damaged under a digest never outlives the
//!                               next upload of the right bytes. Removed only by garbage
//!                               collection.
//!     sha256/ab/abcdef0123…#1   (filesystem only) object_store's temporary file of a write
//!                               to the key before `#`, renamed over it when complete. Left
//!                               behind only by a crash; the GC leftovers sweep removes old
//!                               ones (see [`interrupted_write`])
//!                               An object here without a `blobs` row (a crash between
//!                               publishing the bytes and committing the row) is found by
//!                               the same sweep through [`blob_digest_of`] and queued for
//!                               the storage deleter
//!   uploads/
//!     <upload uuid>/            everything one upload session stores; removed whole on
//!                               commit, cancel or expiry (the purge lists this prefix)
//!       <object uuid>           one part: the body of one PATCH/PUT, written by that request
//!                               alone under a fresh name and never written again. It counts
//!                               only once the metadata database lists it as a part of the
//!                               session; a request that loses the race for the session's
//!                               offset deletes its own object and nothing else
//!       publish-<uuid>          a commit's private staging object on the filesystem: the
//!                               parts joined (or, for one part, hard-linked), checked, then
//!                               renamed into `blobs/…`. Left behind only by a crash, and
//!                               then removed with its session
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

/// The digest whose blob object `key` is (`blobs/<algorithm>/<xx>/<hex>` with `xx` the first
/// two characters of `hex`), the inverse of [`blob`]; `None` for any other key.
pub fn blob_digest_of(key: &str) -> Option<Digest> {
    let parts: Vec<&str> = key.split('/').collect();
    let [top, algorithm, fanout, hex] = parts.as_slice() else { return None };
    if *top != "blobs" || fanout.len() != 2 || !hex.starts_with(fanout) {
        return None;
    }
    let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
    (blob(&digest).as_ref() == key).then_some(digest)
}

/// `blobs/`: the prefix under which every blob is stored.
pub fn blobs() -> Path {
    Path::from("blobs")
}

/// Whether `key` (relative to the storage root) is the temporary file of an interrupted
/// write next to a blob: `blobs/<algorithm>/<xx>/<hex>#<n>`. object_store's filesystem
/// backend writes `<key>#<n>` and renames it over `<key>` when the write completes, so only a
/// crash (kill -9 during a commit or `put`) leaves one behind, and object_store's own
/// listings skip them. Nothing else under `blobs/` ever has this shape.
pub fn interrupted_write(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let [top, algorithm, fanout, name] = parts.as_slice() else { return false };
    let Some((hex, n)) = name.split_once('#') else { return false };
    *top == "blobs"
        && matches!(*algorithm, "sha256" | "sha512")
        && fanout.len() == 2
        && hex.starts_with(fanout)
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// The upload session an object under `uploads/` belongs to: `uploads/<id>/…` → `<id>`.
pub fn upload_session_of(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    (parts.next() == Some("uploads")).then_some(())?;
    parts.next().filter(|id| !id.is_empty())
}

/// `uploads/`: the prefix under which every upload session keeps its objects.
pub fn uploads() -> Path {
    Path::from("uploads")
}

/// `uploads/<upload uuid>/`: everything one upload session stores.
pub fn upload_dir(upload_id: &str) -> Path {
    Path::from(format!("uploads/{upload_id}"))
}

/// `uploads/<upload uuid>/<object>`: one part, or one commit's staging object.
pub fn upload_object(upload_id: &str, object: &str) -> Path {
    debug_assert!(!object.is_empty() && !object.contains('/'), "object {object:?}");
    Path::from(format!("uploads/{upload_id}/{object}"))
}

/// A fresh name for a part: nobody else ever writes under it.
pub(crate) fn new_part_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh name for a commit's staging object; never equal to a part's name.
pub(crate) fn new_staging_name() -> String {
    format!("publish-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_fan_out_by_digest_prefix() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(blob(&d).as_ref(), format!("blobs/sha256/ab/{}", "ab".repeat(32)));
        assert_eq!(upload_object("u", "p1").as_ref(), "uploads/u/p1");
        assert_eq!(upload_dir("u").as_ref(), "uploads/u");
    }

    #[test]
    fn interrupted_writes_are_told_from_blobs() {
        let hex = "ab".repeat(32);
        assert!(interrupted_write(&format!("blobs/sha256/ab/{hex}#1")));
        assert!(interrupted_write(&format!("blobs/sha256/ab/{hex}#42")));
        assert!(!interrupted_write(&format!("blobs/sha256/ab/{hex}")), "a blob");
        assert!(!interrupted_write(&format!("blobs/sha256/cd/{hex}#1")), "wrong fan-out");
        assert!(!interrupted_write(&format!("blobs/sha256/ab/{hex}#x")));
        assert!(!interrupted_write(&format!("blobs/sha256/ab/{hex}#")));
        assert!(!interrupted_write(&format!("uploads/ab/{hex}#1")));
        assert!(!interrupted_write(&format!("blobs/md5/ab/{hex}#1")));
        assert!(!interrupted_write(&format!("blobs/sha256/ab/../{hex}#1")));
        assert_eq!(upload_session_of("uploads/u1/p"), Some("u1"));
        assert_eq!(upload_session_of("uploads/u1"), Some("u1"));
        assert_eq!(upload_session_of("blobs/u1/p"), None);
    }

    #[test]
    fn blob_keys_name_their_digest_and_nothing_else_does() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(blob_digest_of(blob(&d).as_ref()), Some(d.clone()));
        let hex = "ab".repeat(32);
        for other in [
            format!("blobs/sha256/ab/{hex}#1"),
            format!("blobs/sha256/cd/{hex}"),
            format!("blobs/sha256/ab/{}", &hex[..60]),
            format!("blobs/SHA256/ab/{hex}"),
            format!("blobs/sha256/ab/{}", hex.to_uppercase()),
            format!("uploads/sha256/ab/{hex}"),
            format!("blobs/sha256/ab/{hex}/x"),
            format!("blobs/md5/ab/{hex}"),
            "blobs/sha256".to_string(),
        ] {
            assert_eq!(blob_digest_of(&other), None, "{other}");
        }
    }

    #[test]
    fn every_attempt_gets_its_own_name() {
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|_| new_part_name())
            .chain((0..1000).map(|_| new_staging_name()))
            .collect();
        assert_eq!(names.len(), 2000);
    }
}
