//! Content-addressed blob storage over the `object_store` crate, with resumable uploads.
//!
//! This crate owns every storage key the program uses (see [`layout`]) and moves bytes:
//! it streams upload bodies through SHA-256 into storage, verifies digests on commit, and
//! streams blobs (whole or by range) back out. It holds no layer in memory and knows
//! nothing of repositories, tags or HTTP: the metadata store decides who may see a blob.
//! [`backend`] turns configured settings into a store (filesystem, S3, Azure, GCS, memory)
//! and is the only place that knows the object_store builders.

pub mod backend;
pub mod hash;
pub mod layout;
#[cfg(any(test, feature = "test-servers"))]
pub mod test_servers;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload, PutPayloadMut};
use oci::{Algorithm, Digest};
use sha2::Digest as _;

pub use backend::{Backend, PartSizes};
pub use hash::ResumableSha256;

/// Bytes read from a local blob file per blocking read when streaming it out.
const READ_CHUNK: usize = 1024 * 1024;
/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("storage error: {0}")]
    Storage(#[from] object_store::Error),
    #[error("the request body ended early or failed: {0}")]
    Body(String),
    #[error("the upload is larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
    #[error("uploaded content has digest {computed}, not the {expected} the client gave")]
    DigestMismatch { expected: String, computed: String },
    #[error("the upload's saved hash state is corrupt")]
    CorruptState,
    #[error("upload part {0} is missing from storage")]
    PartMissing(String),
    #[error("the upload's stored parts do not match its record: {0}")]
    Inconsistent(String),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// A blob's bytes as a stream, with the total size of the object.
pub struct BlobRead {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, BlobError>>,
}

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// For the filesystem backend: its root, so upload parts can be written by a dedicated
    /// thread (see [`BlobStore::write_part`]).
    local_root: Option<Arc<std::path::PathBuf>>,
    /// For object stores that can presign URLs (S3, GCS, Azure).
    signer: Option<Presigner>,
    /// Part sizes of multipart writes to object stores.
    part_sizes: PartSizes,
}

/// Signs URLs for objects under the store's root prefix.
#[derive(Clone)]
struct Presigner {
    signer: Arc<dyn Signer>,
    prefix: Option<object_store::path::Path>,
    /// Set when redirects are on.
    expiry: Option<std::time::Duration>,
}

impl BlobStore {
    /// Blobs on the local filesystem under `root` (created if missing).
    pub fn filesystem(root: &Path) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(root)
            .map_err(|e| BlobError::Body(format!("cannot create {}: {e}", root.display())))?;
        let root = std::fs::canonicalize(root)?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(BlobStore {
            store: Arc::new(fs),
            local_root: Some(Arc::new(root)),
            signer: None,
            part_sizes: PartSizes::default(),
        })
    }

    /// Blobs in any `object_store` backend (S3, GCS, Azure, memory…).
    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore { store, local_root: None, signer: None, part_sizes: PartSizes::default() }
    }

    /// The same store writing multipart uploads in parts of `sizes`.
    pub fn with_part_sizes(mut self, sizes: PartSizes) -> BlobStore {
        self.part_sizes = sizes;
        self
    }

    /// The same store answering [`redirect_url`](Self::redirect_url) with URLs valid for
    /// `expiry` (distribution's `storage.redirect`). Backends that cannot presign ignore it.
    pub fn with_redirects(mut self, expiry: std::time::Duration) -> BlobStore {
        if let Some(presigner) = &mut self.signer {
            presigner.expiry = Some(expiry);
        }
        self
    }

    /// A presigned URL that lets its holder GET the blob straight from the object store, or
    /// `None` when redirects are off or the backend cannot presign (the filesystem, memory):
    /// then the registry serves the bytes itself.
    pub async fn redirect_url(&self, digest: &Digest) -> Result<Option<url::Url>, BlobError> {
        let Some(presigner) = &self.signer else { return Ok(None) };
        let Some(expiry) = presigner.expiry else { return Ok(None) };
        let key = layout::blob(digest);
        let path = match &presigner.prefix {
            Some(prefix) => prefix.parts().chain(key.parts()).collect(),
            None => key,
        };
        Ok(Some(presigner.signer.signed_url(http::Method::GET, &path, expiry).await?))
    }

    /// Size of the stored blob, or `None` if storage does not have it.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&layout::blob(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams the blob, or the byte `range` of it (end exclusive).
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, BlobError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = self.store.get_opts(&layout::blob(digest), options).await?;
        let size = result.meta.size;
        let range = result.range.clone();
        let stream = match result.payload {
            // object_store would read local files 8 KiB at a time, each through its own
            // spawn_blocking (a thread hand-off per 8 KiB: pulls ran at ~240 MB/s).
            object_store::GetResultPayload::File(file, _path) => {
                // One blocking thread reads ahead (up to READ_AHEAD chunks) while the
                // connection sends, instead of one spawn_blocking per 8 KiB chunk.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BlobError>>(READ_AHEAD);
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let (mut pos, end) = (range.start, range.end);
                    while pos < end {
                        let n = (end - pos).min(READ_CHUNK as u64) as usize;
                        let mut buf = bytes::BytesMut::zeroed(n);
                        let item = match file.read_exact_at(&mut buf, pos) {
                            Ok(()) => Ok(buf.freeze()),
                            Err(e) => Err(BlobError::Body(format!("cannot read blob: {e}"))),
                        };
                        let failed = item.is_err();
                        if tx.blocking_send(item).is_err() || failed {
                            return;
                        }
                        pos += n as u64;
                    }
                });
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|i| (i, rx)) },
                )
                .boxed()
            }
            object_store::GetResultPayload::Stream(s) => {
                s.map(|r| r.map_err(BlobError::from)).boxed()
            }
        };
        Ok(BlobRead { size, stream })
    }

    /// Streams `body` into a new object of upload `upload_id` that this call alone ever
    /// writes, continuing the session's hash state `hasher` over exactly the bytes written.
    /// The part counts only once the caller records it in the metadata database; a caller
    /// that cannot (it lost the race for the session's offset) removes it with
    /// [`discard_part`](Self::discard_part). On any failure nothing is left behind.
    pub async fn write_part<S, E>(
        &self,
        upload_id: &str,
        hasher: &ResumableSha256,
        body: S,
        limit: Option<u64>,
    ) -> Result<WrittenPart, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let object = layout::new_part_name();
        let key = layout::upload_object(upload_id, &object);
        if let Some(root) = &self.local_root {
            let path = root.join(key.as_ref());
            let (size, hasher) = write_local_part(path, hasher.clone(), body, limit).await?;
            return Ok(WrittenPart { object, size, hasher });
        }
        // A multipart upload becomes visible only when finished, and under a name nobody else
        // uses: a request dropped half-way leaves no object.
        let upload = self.store.put_multipart(&key).await?;
        let mut writer = PartWriter::new(upload, self.part_sizes);
        let mut working = hasher.clone();
        let mut written = 0u64;
        let mut body = std::pin::pin!(body);
        let outcome: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                written += chunk.len() as u64;
                if let Some(limit) = limit {
                    if written > limit {
                        return Err(BlobError::TooLarge { limit });
                    }
                }
                working.update(&chunk);
                writer.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok(WrittenPart { object, size: written, hasher: working })
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Turns `parts` (the session's parts as the metadata database lists them, in order)
    /// into the blob `expected`. `hasher` is the session's SHA-256 over all parts, continued
    /// by each part's writer as it wrote; for SHA-512 the joined bytes are hashed.
    ///
    /// What becomes the blob is exactly what was hashed: the parts are private objects that
    /// nobody writes once recorded, they are joined into a private staging object (or, on
    /// the filesystem, one part is hard-linked as it is) whose size is checked, and only that
    /// object is published under the digest. Publication replaces any object already there,
    /// so an existing object is never trusted for being present. Two commits of the same
    /// digest publish identical bytes and both succeed. Deletes nothing of the session: the
    /// caller ends it (and removes its objects) whatever the outcome.
    pub async fn commit_upload(
        &self,
        upload_id: &str,
        parts: &[UploadPart],
        hasher: &ResumableSha256,
        expected: &Digest,
    ) -> Result<(), BlobError> {
        self.stage_upload(upload_id, parts, hasher, expected).await?.publish().await
    }

    /// The first half of [`commit_upload`](Self::commit_upload): joins and verifies the parts
    /// into a private staging object (on object stores: an unfinished multipart upload at the
    /// blob's key) without publishing anything. The write service publishes the result inside
    /// the metadata transaction that records the blob, so bytes appear only together with the
    /// row that protects them from garbage collection. Dropping the [`StagedBlob`] without
    /// publishing leaves its staging object to the session's cleanup; call
    /// [`StagedBlob::discard`] to remove it at once.
    pub async fn stage_upload(
        &self,
        upload_id: &str,
        parts: &[UploadPart],
        hasher: &ResumableSha256,
        expected: &Digest,
    ) -> Result<StagedBlob, BlobError> {
        let total: u64 = parts.iter().map(|p| p.size).sum();
        if total != hasher.len() {
            return Err(BlobError::Inconsistent(format!(
                "upload {upload_id}: the parts hold {total} bytes but {} were hashed",
                hasher.len()
            )));
        }
        if expected.algorithm() == Algorithm::Sha256 {
            let computed = Digest::from_sha256_bytes(hasher.finalize());
            if &computed != expected {
                return Err(BlobError::DigestMismatch {
                    expected: expected.to_string(),
                    computed: computed.to_string(),
                });
            }
        }
        match &self.local_root {
            Some(root) => {
                let job = LocalCommit {
                    root: root.to_path_buf(),
                    upload_id: upload_id.to_string(),
                    parts: parts.to_vec(),
                    total,
                    expected: expected.clone(),
                };
                tokio::task::spawn_blocking(move || {
                    let staging = job
                        .path(&layout::upload_object(&job.upload_id, &layout::new_staging_name()));
                    match job.stage(&staging) {
                        Ok(()) => Ok(StagedBlob(Staged::Local { job, staging })),
                        Err(e) => {
                            let _ = std::fs::remove_file(&staging);
                            Err(e)
                        }
                    }
                })
                .await
                .map_err(|e| BlobError::Body(format!("commit thread failed: {e}")))?
            }
            None => {
                let writer =
                    self.stage_through_object_store(upload_id, parts, total, expected).await?;
                let again = Restage {
                    blobs: self.clone(),
                    upload_id: upload_id.to_string(),
                    parts: parts.to_vec(),
                    total,
                    expected: expected.clone(),
                };
                Ok(StagedBlob(Staged::Multipart(Box::new(writer), again)))
            }
        }
    }

    /// The object_store commit (S3, GCS, Azure, memory): the parts are streamed through the
    /// digest's hash into a multipart upload at the blob's key, which is completed (published,
    /// atomically replacing any object there) only if the hash matches and aborted otherwise.
    /// Verifying costs a re-read of the parts; a server-side copy could not be verified (and
    /// S3's stops at 5 GiB).
    async fn stage_through_object_store(
        &self,
        upload_id: &str,
        parts: &[UploadPart],
        total: u64,
        expected: &Digest,
    ) -> Result<PartWriter, BlobError> {
        let upload = self.store.put_multipart(&layout::blob(expected)).await?;
        let mut writer = PartWriter::new(upload, self.part_sizes);
        let mut hash = ContentHash::new(expected.algorithm());
        let outcome: Result<(), BlobError> = async {
            let mut written = 0u64;
            for part in parts {
                let key = layout::upload_object(upload_id, &part.object);
                let mut stream = match self.store.get(&key).await {
                    Ok(get) => get.into_stream(),
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(BlobError::PartMissing(key.to_string()))
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut in_part = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    in_part += chunk.len() as u64;
                    hash.update(&chunk);
                    writer.write(chunk).await?;
                }
                if in_part != part.size {
                    return Err(BlobError::Inconsistent(format!(
                        "{key} holds {in_part} bytes, not the {} recorded",
                        part.size
                    )));
                }
                written += in_part;
            }
            debug_assert_eq!(written, total);
            let computed = hash.finish();
            if &computed != expected {
                return Err(BlobError::DigestMismatch {
                    expected: expected.to_string(),
                    computed: computed.to_string(),
                });
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(writer),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Removes every object of an upload session: its parts, also those of requests that
    /// lost a race or were cut off, and staging objects of interrupted commits. Storage is
    /// listed rather than trusting the metadata. Best effort: what is left is garbage that
    /// [`idle_upload_sessions`](Self::idle_upload_sessions) finds again.
    pub async fn delete_upload(&self, upload_id: &str) {
        if let Some(root) = &self.local_root {
            let dir = root.join(layout::upload_dir(upload_id).as_ref());
            let outcome = tokio::task::spawn_blocking(move || {
                // A request still writing a part may create a file while the directory is
                // being emptied; try again rather than leave it.
                let mut tries = 0;
                loop {
                    match std::fs::remove_dir_all(&dir) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                        Err(_) if tries < 3 => tries += 1,
                        other => return other,
                    }
                }
            })
            .await;
            if let Ok(Err(e)) = outcome {
                tracing::warn!(upload = upload_id, error = %e, "could not delete upload objects");
            }
            return;
        }
        let prefix = layout::upload_dir(upload_id);
        let objects: Vec<_> = self.store.list(Some(&prefix)).collect().await;
        for object in objects {
            let result = match object {
                Ok(meta) => self.store.delete(&meta.location).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(upload = upload_id, error = %e, "could not delete upload object");
                }
            }
        }
    }

    /// Removes the part `object` of upload `upload_id`, written by a request that must not
    /// count (a short chunk, or one that lost the race for the session's offset). A request
    /// only ever discards the part it wrote itself.
    pub async fn discard_part(&self, upload_id: &str, object: &str) {
        let key = layout::upload_object(upload_id, object);
        if let Err(e) = self.store.delete(&key).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!(upload = upload_id, object, error = %e, "could not delete upload part");
            }
        }
    }

    /// Upload sessions that have objects in storage none of which changed since `cutoff`.
    /// For the purge: sessions the metadata database no longer knows (a crash between
    /// ending a session and removing its objects, a request dropped mid-write) are found
    /// only this way. Only the `uploads/` prefix is listed, never the blobs.
    pub async fn idle_upload_sessions(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<String>, BlobError> {
        Ok(self.idle_upload_session_usage(cutoff).await?.into_iter().map(|s| s.id).collect())
    }

    /// [`idle_upload_sessions`](Self::idle_upload_sessions) with the bytes each one stores.
    pub async fn idle_upload_session_usage(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<StoredUploadSession>, BlobError> {
        if let Some(root) = &self.local_root {
            let uploads = root.join(layout::uploads().as_ref());
            return tokio::task::spawn_blocking(move || idle_local_sessions(&uploads, cutoff))
                .await
                .map_err(|e| BlobError::Body(format!("listing thread failed: {e}")))?
                .map_err(BlobError::from);
        }
        let cutoff_millis =
            cutoff.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let mut newest: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
        let mut objects = self.store.list(Some(&layout::uploads()));
        while let Some(meta) = objects.next().await {
            let meta = meta?;
            if let Some(session) = layout::upload_session_of(meta.location.as_ref()) {
                let modified = meta.last_modified.timestamp_millis();
                let entry = newest.entry(session.to_string()).or_insert((modified, 0));
                entry.0 = entry.0.max(modified);
                entry.1 += meta.size;
            }
        }
        Ok(newest
            .into_iter()
            .filter(|(_, (t, _))| *t < cutoff_millis)
            .map(|(id, (_, bytes))| StoredUploadSession { id, bytes })
            .collect())
    }

    /// Removes the blob's object. Idempotent: an object that is already gone is a success
    /// (some backends, like S3, cannot tell). Only garbage collection calls this, after the
    /// blob's metadata is gone.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), BlobError> {
        match self.store.delete(&layout::blob(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every blob object (a key [`layout::blob_digest_of`] names) last changed before
    /// `cutoff`, as the backend lists `blobs/` (on object stores, pages of a bucket listing;
    /// on the filesystem, a directory walk), streamed: nothing is collected in memory. For
    /// the leftovers sweep, which looks for bytes no `blobs` row records; no request lists
    /// blobs.
    pub fn blob_objects(
        &self,
        cutoff: std::time::SystemTime,
    ) -> BoxStream<'static, Result<StoredBlob, BlobError>> {
        let cutoff_millis = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
            .unwrap_or(0);
        self.store
            .list(Some(&layout::blobs()))
            .filter_map(move |object| async move {
                match object {
                    Err(e) => Some(Err(e.into())),
                    Ok(meta) => {
                        let digest = layout::blob_digest_of(meta.location.as_ref())?;
                        (meta.last_modified.timestamp_millis() < cutoff_millis)
                            .then_some(Ok(StoredBlob { digest, size: meta.size }))
                    }
                }
            })
            .boxed()
    }

    /// Temporary files of interrupted writes next to blobs (see
    /// [`layout::interrupted_write`]) last changed before `cutoff`. Only the filesystem
    /// backend leaves these; other backends' unfinished multipart uploads are invisible to
    /// listings (expire them with a bucket lifecycle rule), so this finds none there.
    pub async fn interrupted_writes(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<StoredObject>, BlobError> {
        let Some(root) = self.local_root.clone() else { return Ok(Vec::new()) };
        tokio::task::spawn_blocking(move || local_interrupted_writes(&root, cutoff))
            .await
            .map_err(|e| BlobError::Body(format!("listing thread failed: {e}")))?
            .map_err(BlobError::from)
    }

    /// Removes the interrupted write `key` found by
    /// [`interrupted_writes`](Self::interrupted_writes); refuses any other key, so a blob can
    /// never be removed this way. `false` if it was gone already.
    pub async fn delete_interrupted_write(&self, key: &str) -> Result<bool, BlobError> {
        if !layout::interrupted_write(key) {
            return Err(BlobError::Inconsistent(format!("{key} is not an interrupted write")));
        }
        let Some(root) = &self.local_root else { return Ok(false) };
        match std::fs::remove_file(root.join(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores small content (a manifest fetched as a blob, test fixtures) in one call, after
    /// checking that it is the content `digest` names.
    pub async fn put_small(&self, digest: &Digest, bytes: Bytes) -> Result<(), BlobError> {
        let computed = Digest::of(digest.algorithm(), &bytes);
        if &computed != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.to_string(),
                computed: computed.to_string(),
            });
        }
        self.store.put(&layout::blob(digest), PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }
}

/// A verified upload, joined but not yet published under its digest (see
/// [`BlobStore::stage_upload`]).
pub struct StagedBlob(Staged);

enum Staged {
    Local { job: LocalCommit, staging: std::path::PathBuf },
    Multipart(Box<PartWriter>, Restage),
}

/// What it takes to stage an object store commit again.
struct Restage {
    blobs: BlobStore,
    upload_id: String,
    parts: Vec<UploadPart>,
    total: u64,
    expected: Digest,
}

/// Azure keeps one list of uncommitted blocks per blob name: when two commits of the same
/// digest race, the first to publish discards the other's blocks (`InvalidBlockList`). The
/// loser stages again from its parts (identical bytes) and publishes that.
fn lost_a_publish_race(e: &BlobError) -> bool {
    matches!(e, BlobError::Storage(e) if e.to_string().contains("InvalidBlockList"))
}

impl StagedBlob {
    /// Publishes the staged bytes under the blob's key, atomically replacing any object there.
    pub async fn publish(self) -> Result<(), BlobError> {
        match self.0 {
            Staged::Local { job, staging } => tokio::task::spawn_blocking(move || {
                let outcome = job.publish(&staging);
                if outcome.is_err() {
                    let _ = std::fs::remove_file(&staging);
                }
                outcome
            })
            .await
            .map_err(|e| BlobError::Body(format!("commit thread failed: {e}")))?,
            Staged::Multipart(writer, again) => {
                let mut outcome = (*writer).finish().await;
                for _ in 0..3 {
                    if !outcome.as_ref().is_err_and(lost_a_publish_race) {
                        break;
                    }
                    let Restage { blobs, upload_id, parts, total, expected } = &again;
                    let writer = blobs
                        .stage_through_object_store(upload_id, parts, *total, expected)
                        .await?;
                    outcome = writer.finish().await;
                }
                outcome
            }
        }
    }

    /// Removes the staged bytes without publishing them.
    pub async fn discard(self) {
        match self.0 {
            Staged::Local { staging, .. } => {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(staging)).await;
            }
            Staged::Multipart(writer, _) => {
                let _ = (*writer).abort().await;
            }
        }
    }
}

/// Streams bytes into a multipart upload in parts sized by [`PartSizes`] (growing, so any
/// size fits under S3's 10 000 parts), with at most two parts in flight: memory per write is
/// bounded by three parts whatever the object's size. Each part is sent once.
struct PartWriter {
    upload: Box<dyn MultipartUpload>,
    sizes: PartSizes,
    /// Parts handed to storage so far.
    sent: usize,
    buffer: PutPayloadMut,
    in_flight: tokio::task::JoinSet<Result<(), object_store::Error>>,
}

/// Parts uploading at once per write.
const PARTS_IN_FLIGHT: usize = 2;

impl PartWriter {
    fn new(upload: Box<dyn MultipartUpload>, sizes: PartSizes) -> PartWriter {
        PartWriter {
            upload,
            sizes,
            sent: 0,
            buffer: PutPayloadMut::new(),
            in_flight: tokio::task::JoinSet::new(),
        }
    }

    async fn write(&mut self, mut chunk: Bytes) -> Result<(), BlobError> {
        while !chunk.is_empty() {
            let size = self.sizes.of(self.sent);
            let take = (size - self.buffer.content_length()).min(chunk.len());
            self.buffer.push(chunk.split_to(take));
            if self.buffer.content_length() == size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), BlobError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_one().await?;
        }
        let payload = std::mem::take(&mut self.buffer).freeze();
        self.in_flight.spawn(self.upload.put_part(payload));
        self.sent += 1;
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), BlobError> {
        match self.in_flight.join_next().await {
            Some(Ok(result)) => Ok(result?),
            Some(Err(e)) => Err(BlobError::Io(std::io::Error::other(e))),
            None => Ok(()),
        }
    }

    /// Sends the last part, waits for all, and completes the upload (the object appears).
    async fn finish(mut self) -> Result<(), BlobError> {
        if self.buffer.content_length() > 0 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        self.upload.complete().await?;
        Ok(())
    }

    async fn abort(mut self) -> Result<(), BlobError> {
        self.in_flight.abort_all();
        self.upload.abort().await?;
        Ok(())
    }
}

/// One part of an upload session, as the metadata database lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPart {
    /// The part's object name within its session (see [`layout::upload_object`]).
    pub object: String,
    pub size: u64,
}

/// What one write attempt stored: its own object, how many bytes, and the session's hash
/// state continued over exactly those bytes.
#[derive(Debug)]
pub struct WrittenPart {
    pub object: String,
    pub size: u64,
    pub hasher: ResumableSha256,
}

/// The hash of a digest's algorithm, over bytes as they are written.
enum ContentHash {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl ContentHash {
    fn new(algorithm: Algorithm) -> ContentHash {
        match algorithm {
            Algorithm::Sha256 => ContentHash::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => ContentHash::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            ContentHash::Sha256(h) => h.update(data),
            ContentHash::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> Digest {
        match self {
            ContentHash::Sha256(h) => Digest::from_sha256_bytes(h.finalize().into()),
            ContentHash::Sha512(h) => Digest::from_sha512_bytes(&h.finalize()),
        }
    }
}

/// Creates `path` for writing, failing if it exists: a part or staging object is only ever
/// written through the handle that created it. Creates the session's directory if missing,
/// also when a concurrent cleanup removes it in between.
fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut tries = 0;
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => {
                tries += 1;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            other => return other,
        }
    }
}

/// What the writer thread of [`write_local_part`] receives.
enum Feed {
    Chunk(Bytes),
    /// The body ended normally. A channel closed without it means the request failed or was
    /// dropped half-way, and the thread removes its file.
    End,
}

/// Streams `body` into the new local file `path` through one blocking thread that hashes and
/// writes each chunk while the next one is received: no 8 MiB staging buffers, no copy
/// besides the kernel's, and hashing overlaps the network. The file is closed before this
/// returns, so a recorded part is never written again. Same contract as `write_part`.
async fn write_local_part<S, E>(
    path: std::path::PathBuf,
    mut working: ResumableSha256,
    body: S,
    limit: Option<u64>,
) -> Result<(u64, ResumableSha256), BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    use std::io::Write;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Feed>(16);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<ResumableSha256> {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, create_private_file(&path)?);
        let mut receive = || -> std::io::Result<()> {
            loop {
                match rx.blocking_recv() {
                    Some(Feed::Chunk(chunk)) => {
                        working.update(&chunk);
                        file.write_all(&chunk)?;
                    }
                    Some(Feed::End) => return file.flush(),
                    None => return Err(std::io::Error::other("the body ended early")),
                }
            }
        };
        let outcome = receive();
        drop(file);
        match outcome {
            Ok(()) => Ok(working),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    });
    let mut written = 0u64;
    let mut body = std::pin::pin!(body);
    let received: Result<(), BlobError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            written += chunk.len() as u64;
            if let Some(limit) = limit {
                if written > limit {
                    return Err(BlobError::TooLarge { limit });
                }
            }
            if tx.send(Feed::Chunk(chunk)).await.is_err() {
                return Ok(()); // the writer failed; its error is reported below
            }
        }
        let _ = tx.send(Feed::End).await;
        Ok(())
    }
    .await;
    drop(tx);
    let stored = writer.await.map_err(|e| BlobError::Body(format!("writer thread failed: {e}")));
    match (received, stored) {
        (Ok(()), Ok(Ok(hashed))) => Ok((written, hashed)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(Err(io))) => Err(BlobError::Io(io)),
    }
}

/// A commit on the filesystem, run on a blocking thread.
struct LocalCommit {
    root: std::path::PathBuf,
    upload_id: String,
    parts: Vec<UploadPart>,
    total: u64,
    expected: Digest,
}

impl LocalCommit {
    fn path(&self, key: &object_store::path::Path) -> std::path::PathBuf {
        self.root.join(key.as_ref())
    }

    /// Builds the private staging object from the parts and checks it.
    fn stage(&self, staging: &std::path::Path) -> Result<(), BlobError> {
        let source =
            |part: &UploadPart| self.path(&layout::upload_object(&self.upload_id, &part.object));
        let missing = |part: &UploadPart| {
            BlobError::PartMissing(layout::upload_object(&self.upload_id, &part.object).to_string())
        };
        let linked = match self.parts.as_slice() {
            // One part is the blob as it is: link it (no copy). Its writer closed it before
            // it was recorded and nobody opens it for writing again.
            [part] => match std::fs::hard_link(source(part), staging) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing(part)),
                Err(_) => false, // no hard links here: copy below
            },
            _ => false,
        };
        if !linked {
            let mut out = create_private_file(staging)?;
            for part in &self.parts {
                let mut input = match std::fs::File::open(source(part)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(missing(part))
                    }
                    Err(e) => return Err(e.into()),
                };
                // copy_file_range where the kernel offers it.
                let copied = std::io::copy(&mut input, &mut out)?;
                if copied != part.size {
                    return Err(BlobError::Inconsistent(format!(
                        "{} holds {copied} bytes, not the {} recorded",
                        source(part).display(),
                        part.size
                    )));
                }
            }
        }
        let staged = std::fs::metadata(staging)?.len();
        if staged != self.total {
            return Err(BlobError::Inconsistent(format!(
                "the joined upload {} holds {staged} bytes, not {}",
                self.upload_id, self.total
            )));
        }
        if self.expected.algorithm() != Algorithm::Sha256 {
            // The SHA-256 state was carried through the writes; other digests are computed
            // over the staging object itself, which is exactly what gets published.
            let mut hash = ContentHash::new(self.expected.algorithm());
            let mut file = std::fs::File::open(staging)?;
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
            let computed = hash.finish();
            if computed != self.expected {
                return Err(BlobError::DigestMismatch {
                    expected: self.expected.to_string(),
                    computed: computed.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Renames the staging object over the blob's key: atomic, and it replaces any object
    /// already there (identical bytes from a concurrent commit, or a bad object).
    fn publish(&self, staging: &std::path::Path) -> Result<(), BlobError> {
        let target = self.path(&layout::blob(&self.expected));
        let mut tries = 0;
        loop {
            // The fan-out directory may be missing, or removed by a concurrent delete that
            // emptied it.
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::rename(staging, &target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                other => return Ok(other?),
            }
        }
    }
}

/// An upload session's objects in storage: its id and the bytes they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUploadSession {
    pub id: String,
    pub bytes: u64,
}

/// One object found in storage: its key (relative to the storage root) and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
}

/// A blob object in storage: its digest and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
}

/// Upload session directories under `uploads` whose entries all changed before `cutoff`.
fn idle_local_sessions(
    uploads: &std::path::Path,
    cutoff: std::time::SystemTime,
) -> std::io::Result<Vec<StoredUploadSession>> {
    let entries = match std::fs::read_dir(uploads) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut idle = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        let mut newest = meta.modified()?;
        let mut bytes = 0;
        for inner in std::fs::read_dir(&dir)?.flatten() {
            if let Ok(meta) = inner.metadata() {
                bytes += meta.len();
                if let Ok(modified) = meta.modified() {
                    newest = newest.max(modified);
                }
            }
        }
        if newest < cutoff {
            idle.push(StoredUploadSession {
                id: entry.file_name().to_string_lossy().into_owned(),
                bytes,
            });
        }
    }
    Ok(idle)
}

/// Files under `<root>/blobs/<algorithm>/<xx>/` that [`layout::interrupted_write`] names and
/// that last changed before `cutoff`.
fn local_interrupted_writes(
    root: &std::path::Path,
    cutoff: std::time::SystemTime,
) -> std::io::Result<Vec<StoredObject>> {
    fn dirs(path: &std::path::Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(path) {
            Ok(entries) => Ok(entries.flatten().collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    let mut found = Vec::new();
    let blobs = layout::blobs();
    for algorithm in dirs(&root.join(blobs.as_ref()))? {
        for fanout in dirs(&algorithm.path())? {
            for file in dirs(&fanout.path())? {
                let key = format!(
                    "{}/{}/{}/{}",
                    blobs.as_ref(),
                    algorithm.file_name().to_string_lossy(),
                    fanout.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                if !layout::interrupted_write(&key) {
                    continue;
                }
                let Ok(meta) = file.metadata() else { continue };
                if meta.is_file() && meta.modified()? < cutoff {
                    found.push(StoredObject { key, size: meta.len() });
                }
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

#[cfg(test)]
mod tests {
    //! One suite for every backend: each test runs on the filesystem (the local fast paths)
    //! and on object_store's in-memory store (the S3/GCS/Azure code path).
    use super::*;
    use crate::backend::Backend as Backend_;
    use futures::stream;

    struct Backend {
        store: BlobStore,
        /// How to open another store on the same storage (another instance, in spirit).
        reopen: Box<dyn Fn() -> BlobStore + Send + Sync>,
        _dir: Option<tempfile::TempDir>,
        _server: Option<test_servers::ObjectStoreServer>,
    }

    /// Parts as small as S3 allows, so a few MiB cross several parts.
    const SMALL_PARTS: PartSizes = PartSizes { first: backend::MIN_PART_SIZE };

    fn filesystem() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Backend {
            store: BlobStore::filesystem(&root).unwrap(),
            reopen: Box::new(move || BlobStore::filesystem(&root).unwrap()),
            _dir: Some(dir),
            _server: None,
        }
    }

    fn memory() -> Backend {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let store = BlobStore::from_object_store(memory.clone()).with_part_sizes(SMALL_PARTS);
        Backend {
            store,
            reopen: Box::new(move || {
                BlobStore::from_object_store(memory.clone()).with_part_sizes(SMALL_PARTS)
            }),
            _dir: None,
            _server: None,
        }
    }

    /// Opens `backend` through the configuration path, probing it first as `serve` does.
    fn configured(backend: Backend_, server: test_servers::ObjectStoreServer) -> Backend {
        tokio::runtime::Handle::current().block_on(backend.probe()).unwrap();
        let store = BlobStore::open(&backend).unwrap();
        Backend {
            store,
            reopen: Box::new(move || BlobStore::open(&backend).unwrap()),
            _dir: None,
            _server: Some(server),
        }
    }

    fn s3() -> Backend {
        let server = test_servers::ObjectStoreServer::moto();
        let mut settings = server.s3_bucket("suite");
        settings.root = Some("registry/root".into());
        settings.chunk_size = Some(SMALL_PARTS.first);
        configured(Backend_::S3(settings), server)
    }

    fn azure() -> Backend {
        let server = test_servers::ObjectStoreServer::azurite();
        let mut settings = server.azure_container("suite");
        settings.root = Some("registry".into());
        configured(Backend_::Azure(settings), server)
    }

    impl Backend {
        /// Every key under `prefix`, plus (filesystem) every directory: nothing may be left.
        async fn keys(&self, prefix: &str) -> Vec<String> {
            if let Some(root) = &self.store.local_root {
                fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
                    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let path = entry.path();
                        out.push(path.strip_prefix(root).unwrap().display().to_string());
                        if path.is_dir() {
                            walk(&path, root, out);
                        }
                    }
                }
                let mut out = Vec::new();
                walk(&root.join(prefix), root, &mut out);
                return out;
            }
            let listed: Vec<_> = self.store.store.list(Some(&prefix.into())).collect().await;
            listed.into_iter().map(|m| m.unwrap().location.to_string()).collect()
        }

        /// Every test ends its upload sessions: nothing of them may remain in storage.
        async fn assert_no_upload_leftovers(&self) {
            assert_eq!(self.keys("uploads").await, Vec::<String>::new(), "upload leftovers");
        }

        /// Puts `bytes` straight at the blob key of `digest`, bypassing every check (an
        /// attacker's object, or one damaged on disk).
        async fn plant(&self, digest: &Digest, bytes: &[u8]) {
            let payload = PutPayload::from(bytes.to_vec());
            self.store.store.put(&layout::blob(digest), payload).await.unwrap();
        }
    }

    macro_rules! on_every_backend {
        ($($name:ident),* $(,)?) => {
            on_every_backend!(@backend filesystem, $($name),*);
            on_every_backend!(@backend memory, $($name),*);
            on_every_backend!(@backend s3, $($name),*);
            on_every_backend!(@backend azure, $($name),*);
        };
        (@backend $backend:ident, $($name:ident),*) => {
            mod $backend {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = tokio::task::spawn_blocking(super::$backend).await.unwrap();
                    super::$name(&backend).await;
                    backend.assert_no_upload_leftovers().await;
                })*
            }
        };
    }

    on_every_backend!(
        multi_part_upload_commits_and_reads_back_by_range,
        single_and_empty_uploads_commit,
        sha512_digest_is_computed_over_what_is_published,
        every_write_has_its_own_object_and_discarding_touches_only_it,
        a_write_still_running_after_the_commit_cannot_touch_the_blob,
        commit_replaces_a_bad_object_under_the_digest,
        concurrent_commits_of_one_session_both_publish_the_same_bytes,
        digest_mismatch_publishes_nothing,
        missing_part_is_reported_not_papered_over,
        parts_that_disagree_with_the_hash_are_refused,
        failed_body_leaves_nothing_and_keeps_the_hash,
        idle_sessions_are_found_by_listing_uploads,
        put_small_checks_the_digest,
        deleting_a_blob_is_idempotent,
        an_upload_continues_on_another_instance_across_several_parts,
        two_sessions_commit_the_same_digest_at_once,
        redirects_only_when_enabled_and_the_backend_presigns,
    );

    /// A session started on one instance is continued and committed by another (only the
    /// saved hash state and the part list travel, as through the metadata database), and a
    /// blob larger than a part crosses part boundaries intact, ranges included.
    async fn an_upload_continues_on_another_instance_across_several_parts(b: &Backend) {
        let data = pattern(2 * SMALL_PARTS.first + 1_234_567, 10);
        let digest = Digest::sha256_of(&data);
        let split = SMALL_PARTS.first + 99;
        let (p1, hasher) = write(&b.store, "moved", &ResumableSha256::new(), &data[..split]).await;
        let saved = hasher.to_bytes();
        let other = (b.reopen)();
        let hasher = ResumableSha256::from_bytes(&saved).unwrap();
        let (p2, hasher) = write(&other, "moved", &hasher, &data[split..]).await;
        other.commit_upload("moved", &[p1, p2], &hasher, &digest).await.unwrap();
        other.delete_upload("moved").await;
        assert_eq!(b.store.size(&digest).await.unwrap(), Some(data.len() as u64));
        assert_eq!(read_all(&b.store, &digest, None).await, data);
        let boundary = SMALL_PARTS.first as u64;
        for range in [boundary - 10..boundary + 10, 0..1, data.len() as u64 - 1..data.len() as u64]
        {
            let (start, end) = (range.start as usize, range.end as usize);
            assert_eq!(read_all(&other, &digest, Some(range)).await, &data[start..end]);
        }
    }

    /// Two pushes of the same layer in parallel (two sessions, possibly two instances): both
    /// commits succeed and the blob holds the bytes.
    async fn two_sessions_commit_the_same_digest_at_once(b: &Backend) {
        let data = pattern(300_000, 11);
        let digest = Digest::sha256_of(&data);
        let other = (b.reopen)();
        let start = ResumableSha256::new();
        let ((p1, h1), (p2, h2)) = tokio::join!(
            write(&b.store, "same-1", &start, &data),
            write(&other, "same-2", &start, &data),
        );
        let (p1, p2) = ([p1], [p2]);
        let (c1, c2) = tokio::join!(
            b.store.commit_upload("same-1", &p1, &h1, &digest),
            other.commit_upload("same-2", &p2, &h2, &digest),
        );
        c1.unwrap();
        c2.unwrap();
        assert_eq!(read_all(&b.store, &digest, None).await, data);
        b.store.delete_upload("same-1").await;
        other.delete_upload("same-2").await;
    }

    async fn redirects_only_when_enabled_and_the_backend_presigns(b: &Backend) {
        let digest = Digest::sha256_of(b"presigned");
        b.store.put_small(&digest, Bytes::from_static(b"presigned")).await.unwrap();
        assert_eq!(b.store.redirect_url(&digest).await.unwrap(), None, "off by default");
        let redirecting = (b.reopen)().with_redirects(std::time::Duration::from_secs(60));
        let url = redirecting.redirect_url(&digest).await.unwrap();
        match &b._server {
            None => assert_eq!(url, None, "the filesystem and memory serve bytes themselves"),
            Some(_) => {
                let (status, body) = test_servers::get(url.unwrap().as_str());
                assert_eq!(status, 200);
                assert!(body.ends_with(b"presigned"), "{}", String::from_utf8_lossy(&body));
            }
        }
    }

    async fn deleting_a_blob_is_idempotent(b: &Backend) {
        let store = &b.store;
        let digest = Digest::sha256_of(b"doomed");
        store.put_small(&digest, Bytes::from_static(b"doomed")).await.unwrap();
        store.delete_blob(&digest).await.unwrap();
        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.delete_blob(&digest).await.expect("gone already: still a success");
        assert_eq!(b.keys("blobs").await, Vec::<String>::new(), "no empty directories left");
        let sessions = store.idle_upload_session_usage(std::time::SystemTime::now()).await;
        assert_eq!(sessions.unwrap(), Vec::new());
    }

    /// A crash during a filesystem write leaves `<hex>#<n>` next to the blob; only such files,
    /// and only old ones, are reported, and nothing else can be removed through that door.
    #[tokio::test]
    async fn interrupted_writes_are_found_on_the_filesystem() {
        let b = filesystem();
        let root = b.store.local_root.clone().unwrap();
        let blob = Digest::sha256_of(b"kept");
        b.store.put_small(&blob, Bytes::from_static(b"kept")).await.unwrap();
        let stale = format!("{}#1", layout::blob(&Digest::sha256_of(b"stale")));
        let fresh = format!("{}#2", layout::blob(&blob));
        for (key, bytes) in [(&stale, 5usize), (&fresh, 3)] {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![0u8; bytes]).unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(root.join(&stale))
            .unwrap()
            .set_modified(hour_ago - std::time::Duration::from_secs(1))
            .unwrap();
        let found = b.store.interrupted_writes(hour_ago).await.unwrap();
        assert_eq!(found, vec![StoredObject { key: stale.clone(), size: 5 }]);
        let now = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(b.store.interrupted_writes(now).await.unwrap().len(), 2);
        let blob_key = layout::blob(&blob).to_string();
        assert!(b.store.delete_interrupted_write(&blob_key).await.is_err(), "never a blob");
        assert!(b.store.delete_interrupted_write(&stale).await.unwrap());
        assert!(!b.store.delete_interrupted_write(&stale).await.unwrap());
        assert_eq!(read_all(&b.store, &blob, None).await, b"kept");
        // The in-memory backend (and S3 & co.) has none to report.
        assert_eq!(memory().store.interrupted_writes(now).await.unwrap(), Vec::new());
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, String>> + Send {
        let parts: Vec<Result<Bytes, String>> =
            data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        stream::iter(parts)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| ((i % 251) as u8) ^ seed).collect()
    }

    async fn read_all(store: &BlobStore, digest: &Digest, range: Option<Range<u64>>) -> Vec<u8> {
        let mut read = store.read(digest, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = read.stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn recorded(written: &WrittenPart) -> UploadPart {
        UploadPart { object: written.object.clone(), size: written.size }
    }

    /// Writes `data` as one part continuing `hasher`; returns the part and the new state.
    async fn write(
        store: &BlobStore,
        upload: &str,
        hasher: &ResumableSha256,
        data: &[u8],
    ) -> (UploadPart, ResumableSha256) {
        let written = store.write_part(upload, hasher, chunks(data, 7_000), None).await.unwrap();
        assert_eq!(written.size, data.len() as u64);
        (recorded(&written), written.hasher)
    }

    async fn multi_part_upload_commits_and_reads_back_by_range(b: &Backend) {
        let store = &b.store;
        let data = pattern(300_000, 0);
        let digest = Digest::sha256_of(&data);
        let (p1, hasher) = write(store, "u1", &ResumableSha256::new(), &data[..100_000]).await;
        // Resume from saved state, as a second request on another instance would.
        let hasher = ResumableSha256::from_bytes(&hasher.to_bytes()).unwrap();
        let (p2, hasher) = write(store, "u1", &hasher, &data[100_000..]).await;
        assert_ne!(p1.object, p2.object);
        store.commit_upload("u1", &[p1, p2], &hasher, &digest).await.unwrap();
        assert_eq!(store.size(&digest).await.unwrap(), Some(300_000));
        assert_eq!(read_all(store, &digest, None).await, data);
        assert_eq!(read_all(store, &digest, Some(10..20)).await, &data[10..20]);
        // Commit leaves the session's objects to the caller, who removes them all.
        store.delete_upload("u1").await;
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
        assert_eq!(read_all(store, &digest, None).await, data, "the blob outlives its parts");
    }

    async fn single_and_empty_uploads_commit(b: &Backend) {
        let store = &b.store;
        let data = pattern(70_001, 1);
        let digest = Digest::sha256_of(&data);
        let (part, hasher) = write(store, "one", &ResumableSha256::new(), &data).await;
        store.commit_upload("one", &[part], &hasher, &digest).await.unwrap();
        store.delete_upload("one").await;
        assert_eq!(read_all(store, &digest, None).await, data);

        let empty = Digest::sha256_of(b"");
        store.commit_upload("none", &[], &ResumableSha256::new(), &empty).await.unwrap();
        store.delete_upload("none").await;
        assert_eq!(store.size(&empty).await.unwrap(), Some(0));
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    async fn sha512_digest_is_computed_over_what_is_published(b: &Backend) {
        let store = &b.store;
        for (upload, split) in [("s1", None), ("s2", Some(5))] {
            let data = b"sha512 content, in one part or two";
            let digest = Digest::of(Algorithm::Sha512, data);
            let mut parts = Vec::new();
            let mut hasher = ResumableSha256::new();
            for piece in match split {
                None => vec![&data[..]],
                Some(at) => vec![&data[..at], &data[at..]],
            } {
                let (part, next) = write(store, upload, &hasher, piece).await;
                parts.push(part);
                hasher = next;
            }
            store.commit_upload(upload, &parts, &hasher, &digest).await.unwrap();
            assert_eq!(read_all(store, &digest, None).await, data);
            let wrong = Digest::of(Algorithm::Sha512, b"something else");
            let err = store.commit_upload(upload, &parts, &hasher, &wrong).await.unwrap_err();
            assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
            assert_eq!(store.size(&wrong).await.unwrap(), None);
            store.delete_upload(upload).await;
        }
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    /// Two requests racing from the same offset: each has its own object, the loser removes
    /// only its own, and the winner's part still commits to the right bytes.
    async fn every_write_has_its_own_object_and_discarding_touches_only_it(b: &Backend) {
        let store = &b.store;
        let (a, b_bytes) = (pattern(50_000, 2), pattern(50_000, 3));
        let start = ResumableSha256::new();
        let (winner, winner_hash) = write(store, "race", &start, &a).await;
        let (loser, _) = write(store, "race", &start, &b_bytes).await;
        assert_ne!(winner.object, loser.object);
        store.discard_part("race", &loser.object).await;
        let digest = Digest::sha256_of(&a);
        store.commit_upload("race", &[winner], &winner_hash, &digest).await.unwrap();
        assert_eq!(read_all(store, &digest, None).await, a);
        store.delete_upload("race").await;
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    /// The poisoning: a slow request is still writing when another one's bytes are
    /// committed. Whatever the slow one writes afterwards never reaches the blob.
    async fn a_write_still_running_after_the_commit_cannot_touch_the_blob(b: &Backend) {
        let store = b.store.clone();
        let good = pattern(200_000, 4);
        let digest = Digest::sha256_of(&good);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        // First half now, then wait; the rest (other bytes) after the commit.
        let slow_body = stream::once(async move {
            let _ = started.send(());
            Ok::<_, String>(Bytes::from(vec![0xEE; 100_000]))
        })
        .chain(stream::once(async move {
            let _ = released.await;
            Ok(Bytes::from(vec![0xEE; 100_000]))
        }));
        let slow = {
            let store = store.clone();
            tokio::spawn(async move {
                store.write_part("poison", &ResumableSha256::new(), slow_body, None).await
            })
        };
        has_started.await.unwrap();
        let (part, hasher) = write(&store, "poison", &ResumableSha256::new(), &good).await;
        store.commit_upload("poison", &[part], &hasher, &digest).await.unwrap();
        release.send(()).unwrap();
        let loser = slow.await.unwrap().unwrap();
        store.discard_part("poison", &loser.object).await;
        assert_eq!(read_all(&store, &digest, None).await, good);
        store.delete_upload("poison").await;
        assert_eq!(read_all(&store, &digest, None).await, good);
    }

    async fn commit_replaces_a_bad_object_under_the_digest(b: &Backend) {
        let store = &b.store;
        let good = pattern(120_000, 5);
        let digest = Digest::sha256_of(&good);
        b.plant(&digest, &pattern(120_000, 6)).await; // same size, wrong bytes
        for upload in ["again1", "again2"] {
            let (part, hasher) = write(store, upload, &ResumableSha256::new(), &good).await;
            store.commit_upload(upload, &[part], &hasher, &digest).await.unwrap();
            store.delete_upload(upload).await;
            assert_eq!(read_all(store, &digest, None).await, good);
            b.plant(&digest, b"short and wrong").await; // damaged after a push, too
        }
        // Multi-part commits replace it as well.
        let (p1, h) = write(store, "again3", &ResumableSha256::new(), &good[..1]).await;
        let (p2, h) = write(store, "again3", &h, &good[1..]).await;
        store.commit_upload("again3", &[p1, p2], &h, &digest).await.unwrap();
        assert_eq!(read_all(store, &digest, None).await, good);
        store.delete_upload("again3").await;
    }

    async fn concurrent_commits_of_one_session_both_publish_the_same_bytes(b: &Backend) {
        let store = &b.store;
        let data = pattern(400_000, 7);
        let digest = Digest::sha256_of(&data);
        for split in [None, Some(123_456)] {
            let upload = format!("twice-{split:?}");
            let mut parts = Vec::new();
            let mut hasher = ResumableSha256::new();
            let pieces = match split {
                None => vec![&data[..]],
                Some(at) => vec![&data[..at], &data[at..]],
            };
            for piece in pieces {
                let (part, next) = write(store, &upload, &hasher, piece).await;
                parts.push(part);
                hasher = next;
            }
            let (one, two) = tokio::join!(
                store.commit_upload(&upload, &parts, &hasher, &digest),
                store.commit_upload(&upload, &parts, &hasher, &digest),
            );
            one.unwrap();
            two.unwrap();
            assert_eq!(read_all(store, &digest, None).await, data);
            store.delete_upload(&upload).await;
        }
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    async fn digest_mismatch_publishes_nothing(b: &Backend) {
        let store = &b.store;
        let (part, hasher) = write(store, "u2", &ResumableSha256::new(), b"hello").await;
        let wrong = Digest::sha256_of(b"other");
        let err = store.commit_upload("u2", &[part], &hasher, &wrong).await.unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert_eq!(store.size(&wrong).await.unwrap(), None);
        assert_eq!(b.keys("blobs").await, Vec::<String>::new());
        store.delete_upload("u2").await;
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    async fn missing_part_is_reported_not_papered_over(b: &Backend) {
        let store = &b.store;
        let data = pattern(10_000, 8);
        let digest = Digest::sha256_of(&data);
        let (p1, h1) = write(store, "gone", &ResumableSha256::new(), &data[..5_000]).await;
        let (p2, h2) = write(store, "gone", &h1, &data[5_000..]).await;
        let (only, h) = write(store, "gone", &ResumableSha256::new(), &data).await;
        store.discard_part("gone", &p1.object).await;
        store.discard_part("gone", &only.object).await;
        for (parts, hasher) in [(vec![only], &h), (vec![p1, p2], &h2)] {
            let err = store.commit_upload("gone", &parts, hasher, &digest).await.unwrap_err();
            assert!(matches!(err, BlobError::PartMissing(_)), "{err}");
        }
        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.delete_upload("gone").await;
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    async fn parts_that_disagree_with_the_hash_are_refused(b: &Backend) {
        let store = &b.store;
        let data = pattern(10_000, 9);
        let (part, hasher) = write(store, "odd", &ResumableSha256::new(), &data).await;
        // A record claiming fewer bytes than the hash covers.
        let short = UploadPart { size: 9_999, ..part.clone() };
        let digest = Digest::sha256_of(&data);
        let err = store.commit_upload("odd", &[short], &hasher, &digest).await.unwrap_err();
        assert!(matches!(err, BlobError::Inconsistent(_)), "{err}");
        // A part whose object holds other bytes than recorded (hash and record agree).
        let mut h = ResumableSha256::new();
        h.update(&data);
        h.update(b"x");
        let claimed = UploadPart { size: 10_001, ..part };
        let digest = Digest::from_sha256_bytes(h.finalize());
        let err = store.commit_upload("odd", &[claimed], &h, &digest).await.unwrap_err();
        assert!(matches!(err, BlobError::Inconsistent(_)), "{err}");
        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.delete_upload("odd").await;
        assert_eq!(b.keys("uploads").await, Vec::<String>::new());
    }

    async fn failed_body_leaves_nothing_and_keeps_the_hash(b: &Backend) {
        let store = &b.store;
        let start = ResumableSha256::new();
        let body = stream::iter(vec![Ok(Bytes::from_static(b"abc")), Err("connection reset")]);
        let err = store.write_part("u3", &start, body, None).await.unwrap_err();
        assert!(matches!(err, BlobError::Body(_)), "{err}");
        let err = store.write_part("u3", &start, chunks(&[0u8; 100], 10), Some(50)).await;
        assert!(matches!(err.unwrap_err(), BlobError::TooLarge { limit: 50 }));
        // A request dropped half-way (the client went away) leaves nothing either.
        let pending = stream::iter(vec![Ok::<_, String>(Bytes::from_static(b"abc"))])
            .chain(stream::pending());
        let dropped = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            store.write_part("u3", &start, pending, None),
        )
        .await;
        assert!(dropped.is_err(), "the body never ends");
        // The writer thread notices the dropped request and removes its file.
        let mut left = b.keys("uploads/u3").await;
        for _ in 0..100 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            left = b.keys("uploads/u3").await;
        }
        assert_eq!(left, Vec::<String>::new());
        store.delete_upload("u3").await;
    }

    async fn idle_sessions_are_found_by_listing_uploads(b: &Backend) {
        let store = &b.store;
        let now = std::time::SystemTime::now;
        assert_eq!(store.idle_upload_sessions(now()).await.unwrap(), Vec::<String>::new());
        write(store, "s-a", &ResumableSha256::new(), b"a").await;
        write(store, "s-b", &ResumableSha256::new(), b"b").await;
        let later = now() + std::time::Duration::from_secs(5);
        let mut idle = store.idle_upload_sessions(later).await.unwrap();
        idle.sort();
        assert_eq!(idle, ["s-a", "s-b"]);
        let earlier = now() - std::time::Duration::from_secs(3600);
        assert_eq!(store.idle_upload_sessions(earlier).await.unwrap(), Vec::<String>::new());
        store.delete_upload("s-a").await;
        assert_eq!(store.idle_upload_sessions(later).await.unwrap(), ["s-b"]);
        store.delete_upload("s-b").await;
    }

    async fn put_small_checks_the_digest(b: &Backend) {
        let store = &b.store;
        let digest = Digest::sha256_of(b"small");
        let err = store.put_small(&digest, Bytes::from_static(b"other")).await.unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.put_small(&digest, Bytes::from_static(b"small")).await.unwrap();
        assert_eq!(read_all(store, &digest, None).await, b"small");
    }
}
