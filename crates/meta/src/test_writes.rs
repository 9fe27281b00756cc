//! Registry writes for meta's own tests, through the write transaction's operations (the
//! write service composes the same ones), due for review at once.

use oci::{Digest, RepositoryName, Tag};

use crate::{NewManifest, Store};

/// The registry writes these tests drive, through the write transaction's operations (the
/// write service composes the same ones), due for review at once.
pub(crate) trait Writes {
    async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: i64,
    ) -> Result<(), crate::MetaError>;
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        m: &NewManifest,
        tags: &[Tag],
        frozen: &[Tag],
    ) -> Result<(), crate::PutManifestError>;
    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, crate::MetaError>;
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool, crate::MetaError>;
    async fn delete_repository(&self, id: i64) -> Result<bool, crate::MetaError>;
}

fn schedule() -> crate::ReviewSchedule {
    {
        // Reviews due a day later, as with the default `gc.reviewafter`.
        let now = crate::now_millis();
        crate::ReviewSchedule { now, due: now + 86_400_000, postpone_to: now + 3_600_000 }
    }
}

impl Writes for Store {
    async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: i64,
    ) -> Result<(), crate::MetaError> {
        let mut w = self.write_tx().await?;
        let id = w.ensure_repository(repo).await?;
        w.store_blob(digest, size, &schedule()).await?;
        w.link_blob(id, digest.as_str()).await?;
        w.commit().await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        m: &NewManifest,
        tags: &[Tag],
        frozen: &[Tag],
    ) -> Result<(), crate::PutManifestError> {
        let mut w = self.write_tx().await?;
        let id = w.ensure_repository(repo).await?;
        w.put_manifest(id, m, tags, frozen, &schedule()).await?;
        Ok(w.commit().await?)
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, crate::MetaError> {
        let mut w = self.write_tx().await?;
        let Some(id) = w.repository_id(repo).await? else { return Ok(false) };
        let Some(m) = w.manifest_for_delete(id, digest.as_str()).await? else { return Ok(false) };
        w.delete_manifest(&m, &schedule()).await?;
        w.commit().await?;
        Ok(true)
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool, crate::MetaError> {
        let mut w = self.write_tx().await?;
        let Some(id) = w.repository_id(repo).await? else { return Ok(false) };
        let deleted = w.delete_tag(id, tag.as_str(), &schedule()).await?;
        w.commit().await?;
        Ok(deleted)
    }

    async fn delete_repository(&self, id: i64) -> Result<bool, crate::MetaError> {
        let mut w = self.write_tx().await?;
        let deleted = w.delete_repository(id, &schedule()).await?;
        w.commit().await?;
        Ok(deleted)
    }
}
