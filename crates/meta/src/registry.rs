//! Queries for the registry surface: repositories, blobs, manifests, tags, uploads, referrers.

use oci::{Digest, IndexChild, MediaType, RepositoryName, Tag};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::now_millis;
use crate::store::{get_i64, Backend, MetaError, Store, TagVersion};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: String,
    pub size: i64,
}

/// A stored manifest, as served by GET/HEAD.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub id: i64,
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject_digest: Option<String>,
    pub payload: Vec<u8>,
}

/// A manifest to store; the registry has parsed and validated it already.
#[derive(Clone, Debug)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    /// The effective artifact type (`oci::effective_artifact_type`): the referrers filter
    /// compares it.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub config_digest: Option<Digest>,
    pub total_size: i64,
    /// JSON object of annotations, kept for the referrers listing.
    pub annotations: Option<String>,
    pub payload: Vec<u8>,
    /// Config and distributable layers: each must already be linked to the repository.
    pub blobs: Vec<Digest>,
    /// Index children. Those that exist in the repository are linked in `manifest_references`;
    /// an absent one refuses the manifest if it `must_exist`, else it is recorded by digest in
    /// `manifest_digest_references`.
    pub children: Vec<IndexChild>,
}

#[derive(Debug, thiserror::Error)]
pub enum PutManifestError {
    #[error("blob {0} is not in this repository")]
    BlobUnknown(String),
    #[error("manifest {0} referenced by the index is not in this repository")]
    ManifestUnknown(String),
    #[error("tag {0} is immutable and points at another manifest")]
    TagFrozen(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<sqlx::Error> for PutManifestError {
    fn from(e: sqlx::Error) -> Self {
        PutManifestError::Meta(MetaError::Database(e))
    }
}

/// What [`WriteTx::unlink_blob`](crate::WriteTx::unlink_blob) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnlinkOutcome {
    /// The link is gone; the bytes are reclaimed later by GC.
    Unlinked,
    /// The repository does not hold the blob (or does not exist).
    NotLinked,
    /// A manifest of the repository references the blob, so it stays linked: unlinking it
    /// would leave that manifest (and every tag on it) pointing at content that is gone.
    Referenced {
        /// The referencing manifest's digest (a tagged one when there is one).
        manifest: String,
        /// A tag pointing at that manifest, if any.
        tag: Option<String>,
        /// Whether the blob is the manifest's config rather than one of its layers.
        as_config: bool,
    },
}

/// One entry of a referrers listing.
#[derive(Clone, Debug)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub annotations: Option<String>,
}

/// A persisted upload session: its bytes so far are its [`UploadPart`]s, `parts` of them.
#[derive(Clone, Debug)]
pub struct UploadRecord {
    pub id: String,
    pub repository: String,
    pub size: i64,
    pub parts: i64,
    pub hash_state: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One part of an upload session: `size` bytes from `start` of the upload, held by the storage
/// object `object` of that session, which one request wrote and nobody else ever writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPart {
    pub start: i64,
    pub size: i64,
    pub object: String,
}

fn upload_from_row(row: &AnyRow) -> UploadRecord {
    UploadRecord {
        id: row.get("id"),
        repository: row.get("repository"),
        size: get_i64(row, "size"),
        parts: get_i64(row, "parts"),
        hash_state: row.get("hash_state"),
        created_at: get_i64(row, "created_at"),
        updated_at: get_i64(row, "updated_at"),
    }
}

fn manifest_from_row(row: &AnyRow) -> ManifestRecord {
    ManifestRecord {
        id: get_i64(row, "id"),
        digest: row.get("digest"),
        media_type: row.get("media_type"),
        artifact_type: row.get("artifact_type"),
        subject_digest: row.get("subject_digest"),
        payload: row.get("payload"),
    }
}

const MANIFEST_COLUMNS: &str =
    "m.id, m.digest, m.media_type, m.artifact_type, m.subject_digest, m.payload";

impl Store {
    // ---- repositories -------------------------------------------------------------------

    pub async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool, MetaError> {
        Ok(self.repository_id(repo).await?.is_some())
    }

    async fn repository_id(&self, repo: &RepositoryName) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| get_i64(&r, "id")))
    }

    /// Repository names in lexical (byte) order, after `last`, at most `n`.
    pub async fn list_repositories(
        &self,
        last: Option<&RepositoryName>,
        n: i64,
    ) -> Result<Vec<String>, MetaError> {
        let rows =
            sqlx::query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
                .bind(last.map_or("", |l| l.as_str()))
                .bind(n)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }

    // ---- blobs --------------------------------------------------------------------------

    /// The blob, if it is linked to `repo` (the only way a repository may serve it).
    pub async fn repository_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT b.digest, b.size FROM blobs b \
             JOIN repository_blobs rb ON rb.blob_digest = b.digest \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE r.name = $1 AND b.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| BlobRecord { digest: r.get("digest"), size: get_i64(&r, "size") }))
    }

    /// The blob, whatever repository holds it (for storage-level dedup on upload commit).
    pub async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        let row = sqlx::query("SELECT digest, size FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| BlobRecord { digest: r.get("digest"), size: get_i64(&r, "size") }))
    }

    /// Repositories that hold `digest`, for a mount request that names no source.
    pub async fn repositories_with_blob(
        &self,
        digest: &Digest,
        limit: i64,
    ) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query(
            "SELECT r.name FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id \
             WHERE rb.blob_digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }

    // ---- manifests and tags -------------------------------------------------------------

    pub async fn manifest_by_digest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let sql = format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.digest = $2"
        );
        let row = sqlx::query(&sql)
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(manifest_from_row))
    }

    /// The manifest `tag` points at, through the tag cache (see [`TagVersion`]).
    pub async fn manifest_by_tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let cached = self.tag_cache.get(repo.as_str(), tag.as_str());
        let process_generation = match self.backend() {
            Backend::Sqlite => {
                let current = self.tag_cache.generation();
                if let Some((TagVersion::Process(generation), record)) = cached {
                    if generation == current {
                        return Ok(Some(record));
                    }
                }
                Some(current)
            }
            Backend::Postgres => {
                if let Some((version @ TagVersion::Repository { .. }, record)) = cached {
                    if self.repository_tag_version(repo).await? == Some(version) {
                        return Ok(Some(record));
                    }
                }
                None
            }
        };
        // One statement, so the version read is the one the record was read under.
        let sql = format!(
            "SELECT {MANIFEST_COLUMNS}, r.id AS repository_id, r.tag_generation \
             FROM tags t JOIN repositories r ON r.id = t.repository_id \
             JOIN manifests m ON m.id = t.manifest_id WHERE r.name = $1 AND t.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let record = manifest_from_row(&row);
        let version = match process_generation {
            Some(generation) => TagVersion::Process(generation),
            None => TagVersion::Repository {
                id: get_i64(&row, "repository_id"),
                generation: get_i64(&row, "tag_generation"),
            },
        };
        self.tag_cache.put(version, repo.as_str(), tag.as_str(), record.clone());
        Ok(Some(record))
    }

    /// The repository's id and tag generation now (PostgreSQL's tag cache check).
    async fn repository_tag_version(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<TagVersion>, MetaError> {
        let row = sqlx::query("SELECT id, tag_generation FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| TagVersion::Repository {
            id: get_i64(&r, "id"),
            generation: get_i64(&r, "tag_generation"),
        }))
    }

    /// Tags in lexical order after `last`, at most `n`; `None` when the repository is unknown.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&Tag>,
        n: i64,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let Some(repo_id) = self.repository_id(repo).await? else { return Ok(None) };
        let rows = sqlx::query(
            "SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo_id)
        .bind(last.map_or("", |l| l.as_str()))
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows.iter().map(|r| r.get("name")).collect()))
    }

    /// Manifests in `repo` whose `subject` is `digest`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&MediaType>,
    ) -> Result<Vec<Referrer>, MetaError> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.artifact_type, m.annotations, \
             CAST(LENGTH(m.payload) AS BIGINT) AS size \
             FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.subject_digest = $2 \
             AND ($3 = '' OR m.artifact_type = $3) ORDER BY m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type.map_or("", |t| t.as_str()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Referrer {
                digest: r.get("digest"),
                media_type: r.get("media_type"),
                artifact_type: r.get("artifact_type"),
                size: get_i64(r, "size"),
                annotations: r.get("annotations"),
            })
            .collect())
    }

    /// The effective artifact types of those of `digests` that are manifests in `repo`
    /// (digest → artifact type; `None` for a manifest without one). Digests that are not
    /// manifests there are left out.
    pub async fn artifact_types(
        &self,
        repo: &RepositoryName,
        digests: &[Digest],
    ) -> Result<std::collections::HashMap<String, Option<String>>, MetaError> {
        let mut out = std::collections::HashMap::new();
        let Some(repo_id) = self.repository_id(repo).await? else { return Ok(out) };
        // Bounded batches keep every statement under both backends' parameter limits.
        for batch in digests.chunks(200) {
            let sql = format!(
                "SELECT digest, artifact_type FROM manifests \
                 WHERE repository_id = $1 AND digest IN ({})",
                crate::store::placeholders(2, batch.len())
            );
            let mut query = sqlx::query(&sql).bind(repo_id);
            for digest in batch {
                query = query.bind(digest.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                out.insert(row.get("digest"), row.get("artifact_type"));
            }
        }
        Ok(out)
    }

    // ---- upload sessions ----------------------------------------------------------------

    pub async fn create_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        let insert = sqlx::query(
            "INSERT INTO uploads (id, repository, size, parts, hash_state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&upload.id)
        .bind(&upload.repository)
        .bind(upload.size)
        .bind(upload.parts)
        .bind(&upload.hash_state)
        .bind(upload.created_at)
        .bind(upload.updated_at);
        match self.backend() {
            // Without waiting for the WAL flush (`synchronous_commit = off`, this transaction
            // only): a new session lost to a database crash costs its client a retry (the next
            // request on it answers BLOB_UPLOAD_UNKNOWN), never data, and a push saves a disk
            // flush. Every commit that stores or publishes content still waits for its flush.
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
                insert.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }
            // SQLite: through the writer lock, so it waits for other writers instead of
            // failing busy.
            Backend::Sqlite => {
                let mut w = self.write_tx().await?;
                insert.execute(&mut *w.tx).await?;
                w.commit().await
            }
        }
    }

    /// How many upload sessions are open (on every instance), for metrics.
    pub async fn upload_session_count(&self) -> Result<i64, MetaError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM uploads").fetch_one(&self.pool).await?;
        Ok(get_i64(&row, "n"))
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        let row = sqlx::query("SELECT * FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(upload_from_row))
    }

    /// Appends `part` (written from offset `expected_size`) to the session, with the hash state
    /// after it, but only if the session still holds exactly `expected_size` bytes: of two
    /// requests racing from one offset exactly one lands, and the loser learns it (`false`)
    /// and must delete its own object. A zero-length part only marks the session as active.
    /// Sizes only grow and only a non-empty part changes the hash state, so the offset alone
    /// identifies which bytes `hash_state` continues from.
    pub async fn append_upload_part(
        &self,
        id: &str,
        expected_size: i64,
        part: &UploadPart,
        hash_state: &[u8],
    ) -> Result<bool, MetaError> {
        let recorded = i64::from(part.size > 0);
        let mut w = self.write_tx().await?;
        let result = sqlx::query(
            "UPDATE uploads SET size = $1, parts = parts + $2, hash_state = $3, updated_at = $4 \
             WHERE id = $5 AND size = $6",
        )
        .bind(expected_size + part.size)
        .bind(recorded)
        .bind(hash_state)
        .bind(now_millis())
        .bind(id)
        .bind(expected_size)
        .execute(&mut *w.tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        if part.size > 0 {
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, start_offset, size, object) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(expected_size)
            .bind(part.size)
            .bind(&part.object)
            .execute(&mut *w.tx)
            .await?;
        }
        w.commit().await?;
        Ok(true)
    }

    /// The parts holding the first `size` bytes of the upload, in order. Parts are only ever
    /// appended while the session lives, so these are exactly its parts when it held `size`
    /// bytes, even if another request has appended since.
    pub async fn upload_parts(&self, id: &str, size: i64) -> Result<Vec<UploadPart>, MetaError> {
        let rows = sqlx::query(
            "SELECT start_offset, size, object FROM upload_parts \
             WHERE upload_id = $1 AND start_offset < $2 ORDER BY start_offset",
        )
        .bind(id)
        .bind(size)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| UploadPart {
                start: get_i64(r, "start_offset"),
                size: get_i64(r, "size"),
                object: r.get("object"),
            })
            .collect())
    }

    /// Removes the session row and its part list; returns whether it existed (the caller
    /// removes the session's storage objects).
    pub async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let existed = w.end_upload(id).await?;
        w.commit().await?;
        Ok(existed)
    }

    /// Sessions idle since before `updated_before` (milliseconds), oldest first.
    pub async fn idle_uploads(
        &self,
        updated_before: i64,
        limit: i64,
    ) -> Result<Vec<UploadRecord>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2")
                .bind(updated_before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(upload_from_row).collect())
    }
}

impl crate::store::WriteTx<'_> {
    /// Ends upload session `id` (its row and part list) in this transaction; whether it
    /// existed. The write service ends a session in the transaction that commits its blob, so
    /// a push costs one commit less.
    pub async fn end_upload(&mut self, id: &str) -> Result<bool, MetaError> {
        // Also cascaded by the foreign key; explicit so it holds whatever the connection's
        // foreign-key setting.
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        let result = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Ends upload session `id` if it still holds `size` bytes: the commit of a request that
    /// read the session at that size and wrote its last chunk after it. A chunk another
    /// request appended meanwhile (`Moved`), or an end that came first (`Gone`), leaves it.
    pub async fn end_upload_at(&mut self, id: &str, size: i64) -> Result<EndedUpload, MetaError> {
        let result = sqlx::query("DELETE FROM uploads WHERE id = $1 AND size = $2")
            .bind(id)
            .bind(size)
            .execute(&mut *self.tx)
            .await?;
        if result.rows_affected() == 0 {
            let row = sqlx::query("SELECT 1 AS one FROM uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
            return Ok(if row.is_some() { EndedUpload::Moved } else { EndedUpload::Gone });
        }
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(EndedUpload::Ended)
    }
}

/// What [`WriteTx::end_upload_at`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedUpload {
    Ended,
    /// Another request appended a chunk since the session was read.
    Moved,
    /// The session had ended already.
    Gone,
}

#[cfg(test)]
mod tests {
    use oci::{media_type as mt, Digest, IndexChild, RepositoryName, Tag};
    use serde_json::json;

    use super::{NewManifest, PutManifestError};
    use crate::store::testing::TestDb;
    use crate::{Backend, ReviewSchedule, Store};

    fn schedule() -> ReviewSchedule {
        ReviewSchedule::immediate(crate::now_millis())
    }

    async fn link(
        store: &Store,
        repo: &RepositoryName,
        digest: &Digest,
        size: i64,
    ) -> Result<(), crate::MetaError> {
        let mut w = store.write_tx().await?;
        let id = w.ensure_repository(repo).await?;
        w.store_blob(digest, size, &schedule()).await?;
        w.link_blob(id, digest.as_str()).await?;
        w.commit().await
    }

    async fn put(
        store: &Store,
        repo: &RepositoryName,
        m: &NewManifest,
        tags: &[Tag],
        frozen: &[Tag],
    ) -> Result<(), PutManifestError> {
        let mut w = store.write_tx().await?;
        let id = w.ensure_repository(repo).await?;
        w.put_manifest(id, m, tags, frozen, &schedule()).await?;
        Ok(w.commit().await?)
    }

    async fn delete_manifest(
        store: &Store,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, crate::MetaError> {
        let mut w = store.write_tx().await?;
        let Some(id) = w.repository_id(repo).await? else { return Ok(false) };
        let Some(m) = w.manifest_for_delete(id, digest.as_str()).await? else { return Ok(false) };
        w.delete_manifest(&m, &schedule()).await?;
        w.commit().await?;
        Ok(true)
    }

    async fn delete_repository(store: &Store, id: i64) -> Result<bool, crate::MetaError> {
        let mut w = store.write_tx().await?;
        let deleted = w.delete_repository(id, &schedule()).await?;
        w.commit().await?;
        Ok(deleted)
    }

    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

    fn digest_of(label: &str) -> Digest {
        Digest::sha256_of(label.as_bytes())
    }

    /// A row as the code before migration 0006 wrote it, with `artifact_type` as stored then.
    async fn insert_old_row(
        db: &TestDb,
        repo_id: i64,
        media_type: &str,
        artifact_type: Option<&str>,
        subject: &Digest,
        payload: &[u8],
    ) -> String {
        let digest = Digest::sha256_of(payload).to_string();
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, \
             subject_digest, config_digest, total_size, annotations, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL, $7, 0)",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(media_type)
        .bind(artifact_type)
        .bind(subject.as_str())
        .bind(payload.len() as i64)
        .bind(payload.to_vec())
        .execute(&db.store.pool)
        .await
        .expect("insert old-style manifest row");
        digest
    }

    fn image(media_type: &str, config_type: &str, extra: serde_json::Value) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": digest_of("config").as_str(), "size": 2},
            "layers": []
        });
        for (k, v) in extra.as_object().expect("object") {
            m[k] = v.clone();
        }
        serde_json::to_vec(&m).expect("JSON")
    }

    /// Migration 0006 gives rows stored before it the effective artifact type, so the referrers
    /// listing and its filter see them as new rows are seen.
    async fn backfill_of_artifact_types(backend: Backend) {
        let db = TestDb::new(backend, Some(6)).await;
        let repo: RepositoryName = "old/rows".parse().unwrap();
        // Written as the code before 0006 did (the GC tables of 0007 do not exist yet).
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, 0)")
            .bind(repo.as_str())
            .execute(&db.store.pool)
            .await
            .unwrap();
        let repo_id = db.store.repository_id(&repo).await.unwrap().unwrap();
        let subject = digest_of("subject");
        let plain_oci = image(mt::OCI_MANIFEST, OCI_CONFIG, json!({}));
        let plain_docker = image(mt::DOCKER_MANIFEST, DOCKER_CONFIG, json!({}));
        let declared_empty = image(
            mt::OCI_MANIFEST,
            CUSTOM_CONFIG,
            json!({"artifactType": "", "annotations": {"n": "1"}}),
        );
        let declared =
            image(mt::OCI_MANIFEST, OCI_CONFIG, json!({"artifactType": "application/x.sbom"}));
        // jsonb would refuse this escape; the migration must not.
        let nul_escape = image(
            mt::OCI_MANIFEST,
            OCI_CONFIG,
            json!({"annotations": {"k": "a\u{0}b", "l": "c\\u0000d"}}),
        );
        let index_empty = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "artifactType": "", "manifests": []}),
        )
        .unwrap();
        let index_none = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": [], "annotations": {}}),
        )
        .unwrap();
        let rows = [
            (mt::OCI_MANIFEST, None, &plain_oci, Some(OCI_CONFIG)),
            (mt::DOCKER_MANIFEST, None, &plain_docker, Some(DOCKER_CONFIG)),
            (mt::OCI_MANIFEST, Some(""), &declared_empty, Some(CUSTOM_CONFIG)),
            (mt::OCI_MANIFEST, Some("application/x.sbom"), &declared, Some("application/x.sbom")),
            (mt::OCI_MANIFEST, None, &nul_escape, Some(OCI_CONFIG)),
            (mt::OCI_INDEX, Some(""), &index_empty, None),
            (mt::OCI_INDEX, None, &index_none, None),
        ];
        let mut expected = std::collections::BTreeMap::new();
        for (media_type, stored, payload, effective) in rows {
            let digest = insert_old_row(&db, repo_id, media_type, stored, &subject, payload).await;
            expected.insert(digest, effective.map(str::to_string));
        }
        assert!(
            String::from_utf8_lossy(&nul_escape).contains("\\u0000"),
            "the payload carries the escape"
        );

        db.store.migrate().await.expect("migration 0006 runs over old rows");
        let listed: std::collections::BTreeMap<_, _> = db
            .store
            .referrers(&repo, &subject, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.digest, r.artifact_type))
            .collect();
        assert_eq!(listed, expected, "{backend:?}");
        let filtered: Vec<String> = db
            .store
            .referrers(&repo, &subject, Some(&OCI_CONFIG.parse().unwrap()))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.digest)
            .collect();
        let mut want = vec![
            Digest::sha256_of(&plain_oci).to_string(),
            Digest::sha256_of(&nul_escape).to_string(),
        ];
        want.sort();
        assert_eq!(filtered, want, "{backend:?}: the filter matches backfilled rows");
        db.drop_database().await;
    }

    fn new_manifest(payload: &[u8], blobs: Vec<Digest>, children: Vec<IndexChild>) -> NewManifest {
        NewManifest {
            digest: Digest::sha256_of(payload),
            media_type: if children.is_empty() { mt::OCI_MANIFEST } else { mt::OCI_INDEX }.into(),
            artifact_type: None,
            subject: None,
            config_digest: None,
            total_size: payload.len() as i64,
            annotations: None,
            payload: payload.to_vec(),
            blobs,
            children,
        }
    }

    async fn digest_references(db: &TestDb) -> Vec<(i64, String)> {
        let rows = sqlx::query(
            "SELECT parent_id, child_digest FROM manifest_digest_references ORDER BY child_digest",
        )
        .fetch_all(&db.store.pool)
        .await
        .unwrap();
        use sqlx::Row;
        rows.iter()
            .map(|r| (crate::store::get_i64(r, "parent_id"), r.get("child_digest")))
            .collect()
    }

    /// An index may list manifests the repository does not hold (when validation allows it);
    /// they are kept by digest, so a child pushed later counts for usage as a linked one does,
    /// and a deleted child stays listed.
    async fn sparse_index_references(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let repo: RepositoryName = "sparse/index".parse().unwrap();
        let (blob_a, blob_b) = (digest_of("layer a"), digest_of("layer b"));
        link(store, &repo, &blob_a, 1000).await.unwrap();
        link(store, &repo, &blob_b, 30).await.unwrap();
        let a = new_manifest(b"manifest a", vec![blob_a.clone()], vec![]);
        let b = new_manifest(b"manifest b", vec![blob_b.clone()], vec![]);
        put(store, &repo, &a, &[], &[]).await.unwrap();

        let child =
            |m: &NewManifest, must_exist| IndexChild { digest: m.digest.clone(), must_exist };
        let refused = new_manifest(b"index 0", vec![], vec![child(&a, true), child(&b, true)]);
        let tag: Tag = "multi".parse().unwrap();
        match put(store, &repo, &refused, std::slice::from_ref(&tag), &[]).await {
            Err(PutManifestError::ManifestUnknown(d)) => assert_eq!(d, b.digest.to_string()),
            other => panic!("an absent required child refuses the index: {other:?}"),
        }
        assert!(store.manifest_by_tag(&repo, &tag).await.unwrap().is_none(), "nothing written");

        let index = new_manifest(b"index 1", vec![], vec![child(&a, true), child(&b, false)]);
        put(store, &repo, &index, std::slice::from_ref(&tag), &[]).await.unwrap();
        let index_id = store.manifest_by_tag(&repo, &tag).await.unwrap().unwrap().id;
        assert_eq!(digest_references(&db).await, vec![(index_id, b.digest.to_string())]);
        assert_eq!(store.deduplicated_size("sparse/index", false).await.unwrap(), 1000);

        // The absent child arrives later, untagged: the tagged index makes it count.
        put(store, &repo, &b, &[], &[]).await.unwrap();
        assert_eq!(store.deduplicated_size("sparse/index", false).await.unwrap(), 1030);

        // A listed child is deleted: the index keeps listing it by digest; pushed again, it
        // counts again.
        assert!(delete_manifest(store, &repo, &a.digest).await.unwrap());
        let mut expected = vec![(index_id, a.digest.to_string()), (index_id, b.digest.to_string())];
        expected.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(digest_references(&db).await, expected);
        assert_eq!(store.deduplicated_size("sparse/index", false).await.unwrap(), 30);
        put(store, &repo, &a, &[], &[]).await.unwrap();
        assert_eq!(store.deduplicated_size("sparse/index", false).await.unwrap(), 1030);

        // Deleting the index removes what it recorded.
        assert!(delete_manifest(store, &repo, &index.digest).await.unwrap());
        assert!(digest_references(&db).await.is_empty());
        assert_eq!(store.deduplicated_size("sparse/index", false).await.unwrap(), 0);

        // And deleting the repository removes the rows of its indexes.
        put(store, &repo, &index, std::slice::from_ref(&tag), &[]).await.unwrap();
        assert!(delete_manifest(store, &repo, &b.digest).await.unwrap());
        assert_eq!(digest_references(&db).await.len(), 1);
        let repo_id = store.repository_id(&repo).await.unwrap().unwrap();
        assert!(delete_repository(store, repo_id).await.unwrap());
        assert!(digest_references(&db).await.is_empty());
        db.drop_database().await;
    }

    macro_rules! on_both_backends {
        ($($name:ident),*) => {
            mod sqlite {
                $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Sqlite).await })*
            }
            mod postgres {
                $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Postgres).await })*
            }
        };
    }
    on_both_backends!(backfill_of_artifact_types, sparse_index_references);
}
