//! The dependency proxy's own state: which top-level groups have it enabled, the manifests it
//! fetched from upstreams (served to clients, revalidated after a time-to-live), and the
//! leases that make one instance fetch a blob while the others wait.
//!
//! The blobs and manifests it caches are ordinary registry content of repositories named
//! `<group>/dependency_proxy/containers/<image>` (written by the write service), so usage, GC
//! and the UI treat them like everything else; the rows here say what the upstream said.

use oci::RepositoryName;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{get_i64, MetaError, Store, WriteTx};

/// A manifest as the upstream served it for one reference (a tag or a digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyManifest {
    pub repository: String,
    /// The tag or digest the manifest was pulled by.
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub payload: Vec<u8>,
    /// When the upstream last confirmed (or served) this manifest for the reference.
    pub validated_at: i64,
    /// When a client last pulled it through the proxy.
    pub last_used_at: i64,
}

fn proxy_manifest(row: &AnyRow) -> ProxyManifest {
    ProxyManifest {
        repository: row.get("repository"),
        reference: row.get("reference"),
        digest: row.get("digest"),
        media_type: row.get("media_type"),
        payload: row.get("payload"),
        validated_at: get_i64(row, "validated_at"),
        last_used_at: get_i64(row, "last_used_at"),
    }
}

/// `[lower, upper)` of the repository names below `prefix/` (see `registry_queries`: a range
/// on the unique index instead of `LIKE`, whose `_` our paths contain).
fn name_range(prefix: &str) -> (String, String) {
    (format!("{prefix}/"), format!("{prefix}0"))
}

/// The prefix of every repository of a top-level group's dependency proxy.
pub fn dependency_proxy_prefix(group_path: &str) -> String {
    format!("{group_path}/{}", oci::DEPENDENCY_PROXY_PATH)
}

impl Store {
    /// Whether the dependency proxy of the top-level group `group_id` is enabled (it is
    /// unless it was turned off).
    pub async fn dependency_proxy_enabled(&self, group_id: i64) -> Result<bool, MetaError> {
        let row =
            sqlx::query("SELECT enabled FROM dependency_proxy_settings WHERE namespace_id = $1")
                .bind(group_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_none_or(|r| get_i64(&r, "enabled") != 0))
    }

    pub async fn set_dependency_proxy_enabled(
        &self,
        group_id: i64,
        enabled: bool,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO dependency_proxy_settings (namespace_id, enabled) VALUES ($1, $2) \
             ON CONFLICT (namespace_id) DO UPDATE SET enabled = excluded.enabled",
        )
        .bind(group_id)
        .bind(enabled as i64)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// The manifest cached for `reference` (a tag or a digest) of `repo`.
    pub async fn proxy_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<ProxyManifest>, MetaError> {
        let row = sqlx::query(
            "SELECT * FROM dependency_proxy_manifests WHERE repository = $1 AND reference = $2",
        )
        .bind(repo.as_str())
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(proxy_manifest))
    }

    /// Every manifest cached for `repo`.
    pub async fn proxy_manifests(
        &self,
        repo: &RepositoryName,
    ) -> Result<Vec<ProxyManifest>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM dependency_proxy_manifests WHERE repository = $1 ORDER BY reference",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(proxy_manifest).collect())
    }

    /// Records a pull of a cached manifest (at most once a minute per reference: a pull is
    /// not worth a write each time).
    pub async fn touch_proxy_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
        now: i64,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "UPDATE dependency_proxy_manifests SET last_used_at = $1 \
             WHERE repository = $2 AND reference = $3 AND last_used_at < $4",
        )
        .bind(now)
        .bind(repo.as_str())
        .bind(reference)
        .bind(now - 60_000)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// Takes the lease on fetching blob `digest` of `repo` for `holder` until `expires_at`,
    /// if nobody holds an unexpired one. `true`: this holder fetches.
    pub async fn claim_proxy_fetch(
        &self,
        repo: &RepositoryName,
        digest: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO dependency_proxy_fetches (repository, digest, holder, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (repository, digest) DO UPDATE \
             SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE dependency_proxy_fetches.expires_at < $5 \
             OR dependency_proxy_fetches.holder = excluded.holder",
        )
        .bind(repo.as_str())
        .bind(digest)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `holder`'s lease on fetching blob `digest` of `repo`.
    pub async fn release_proxy_fetch(
        &self,
        repo: &RepositoryName,
        digest: &str,
        holder: &str,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM dependency_proxy_fetches \
             WHERE repository = $1 AND digest = $2 AND holder = $3",
        )
        .bind(repo.as_str())
        .bind(digest)
        .bind(holder)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// The repositories of the dependency proxy of top-level group `group_path`, as
    /// `(id, name)`.
    pub async fn dependency_proxy_repositories(
        &self,
        group_path: &str,
    ) -> Result<Vec<(i64, String)>, MetaError> {
        let (lower, upper) = name_range(&dependency_proxy_prefix(group_path));
        let rows = sqlx::query(
            "SELECT id, name FROM repositories WHERE name > $1 AND name < $2 ORDER BY name",
        )
        .bind(lower)
        .bind(upper)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (get_i64(r, "id"), r.get("name"))).collect())
    }

    /// Repositories with a cached manifest none of whose references was pulled since
    /// `before` (the cache cleanup's candidates), at most `limit`.
    pub async fn unused_dependency_proxy_repositories(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query(
            "SELECT repository FROM dependency_proxy_manifests GROUP BY repository \
             HAVING MAX(last_used_at) < $1 ORDER BY repository LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("repository")).collect())
    }
}

impl WriteTx<'_> {
    /// Stores (or replaces) the manifest the upstream served for a reference.
    pub async fn put_proxy_manifest(&mut self, m: &ProxyManifest) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO dependency_proxy_manifests (repository, reference, digest, media_type, \
             payload, validated_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (repository, reference) DO UPDATE SET digest = excluded.digest, \
             media_type = excluded.media_type, payload = excluded.payload, \
             validated_at = excluded.validated_at, last_used_at = excluded.last_used_at",
        )
        .bind(&m.repository)
        .bind(&m.reference)
        .bind(&m.digest)
        .bind(&m.media_type)
        .bind(m.payload.clone())
        .bind(m.validated_at)
        .bind(m.last_used_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records that the upstream still serves the cached manifest of `reference` at `now`.
    pub async fn mark_proxy_manifest_validated(
        &mut self,
        repo: &RepositoryName,
        reference: &str,
        now: i64,
    ) -> Result<(), MetaError> {
        sqlx::query(
            "UPDATE dependency_proxy_manifests SET validated_at = $1, last_used_at = $1 \
             WHERE repository = $2 AND reference = $3",
        )
        .bind(now)
        .bind(repo.as_str())
        .bind(reference)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Forgets every cached manifest of `repo`.
    pub async fn delete_proxy_manifests(&mut self, repo: &str) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM dependency_proxy_manifests WHERE repository = $1")
            .bind(repo)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
