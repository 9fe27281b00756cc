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

/// An upstream a top-level group set for its dependency proxy, as stored: the password sealed
/// (see `service::dependency_proxy::CredentialKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupUpstream {
    pub url: String,
    pub username: Option<String>,
    pub sealed_password: Option<Vec<u8>>,
}

/// A top-level group's dependency proxy settings (the defaults when it never changed them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyProxySettings {
    pub enabled: bool,
    /// The cache cleanup (GitLab's `ttl_policy`): manifests not pulled for `ttl_days` go.
    pub ttl_enabled: bool,
    pub ttl_days: i64,
    /// Tried in order instead of the instance's upstreams; empty: the instance's.
    pub upstreams: Vec<GroupUpstream>,
}

/// Days after which an unused cached manifest is removed unless the group says otherwise.
pub const DEFAULT_PROXY_TTL_DAYS: i64 = 90;

impl Default for DependencyProxySettings {
    fn default() -> Self {
        DependencyProxySettings {
            enabled: true,
            ttl_enabled: true,
            ttl_days: DEFAULT_PROXY_TTL_DAYS,
            upstreams: Vec::new(),
        }
    }
}

/// A change of a group's settings; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct DependencyProxySettingsUpdate {
    pub enabled: Option<bool>,
    pub ttl_enabled: Option<bool>,
    pub ttl_days: Option<i64>,
    /// Replaces the whole list.
    pub upstreams: Option<Vec<GroupUpstream>>,
}

fn group_upstream(row: &AnyRow) -> GroupUpstream {
    GroupUpstream {
        url: row.get("url"),
        username: row.get("username"),
        sealed_password: row.get("sealed_password"),
    }
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

    /// The dependency proxy settings of top-level group `group_id`.
    pub async fn dependency_proxy_settings(
        &self,
        group_id: i64,
    ) -> Result<DependencyProxySettings, MetaError> {
        let row = sqlx::query(
            "SELECT enabled, ttl_enabled, ttl_days FROM dependency_proxy_settings \
             WHERE namespace_id = $1",
        )
        .bind(group_id)
        .fetch_optional(&self.pool)
        .await?;
        let mut settings = DependencyProxySettings::default();
        if let Some(r) = row {
            settings.enabled = get_i64(&r, "enabled") != 0;
            settings.ttl_enabled = get_i64(&r, "ttl_enabled") != 0;
            settings.ttl_days = get_i64(&r, "ttl_days");
        }
        settings.upstreams = self.group_upstreams(group_id).await?;
        Ok(settings)
    }

    /// The upstreams top-level group `group_id` set, in order.
    pub async fn group_upstreams(&self, group_id: i64) -> Result<Vec<GroupUpstream>, MetaError> {
        let rows = sqlx::query(
            "SELECT url, username, sealed_password FROM dependency_proxy_upstreams \
             WHERE namespace_id = $1 ORDER BY position",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(group_upstream).collect())
    }

    /// The upstreams the top-level group at `group_path` set, in order, with its id (`None`:
    /// no such top-level group).
    pub async fn group_upstreams_by_path(
        &self,
        group_path: &str,
    ) -> Result<Option<(i64, Vec<GroupUpstream>)>, MetaError> {
        let row =
            sqlx::query("SELECT id FROM namespaces WHERE full_path = $1 AND parent_id IS NULL")
                .bind(group_path)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let id = get_i64(&row, "id");
        Ok(Some((id, self.group_upstreams(id).await?)))
    }

    /// Changes the dependency proxy settings of top-level group `group_id` in one transaction.
    pub async fn update_dependency_proxy_settings(
        &self,
        group_id: i64,
        update: &DependencyProxySettingsUpdate,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO dependency_proxy_settings (namespace_id, enabled) VALUES ($1, 1) \
             ON CONFLICT (namespace_id) DO NOTHING",
        )
        .bind(group_id)
        .execute(&mut *w.tx)
        .await?;
        let columns = [
            ("enabled", update.enabled.map(i64::from)),
            ("ttl_enabled", update.ttl_enabled.map(i64::from)),
            ("ttl_days", update.ttl_days),
        ];
        for (column, value) in columns {
            let Some(value) = value else { continue };
            sqlx::query(&format!(
                "UPDATE dependency_proxy_settings SET {column} = $1 WHERE namespace_id = $2"
            ))
            .bind(value)
            .bind(group_id)
            .execute(&mut *w.tx)
            .await?;
        }
        if let Some(upstreams) = &update.upstreams {
            sqlx::query("DELETE FROM dependency_proxy_upstreams WHERE namespace_id = $1")
                .bind(group_id)
                .execute(&mut *w.tx)
                .await?;
            for (position, u) in upstreams.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO dependency_proxy_upstreams \
                     (namespace_id, position, url, username, sealed_password) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(group_id)
                .bind(position as i64)
                .bind(&u.url)
                .bind(u.username.clone())
                .bind(u.sealed_password.clone())
                .execute(&mut *w.tx)
                .await?;
            }
        }
        w.commit().await
    }

    /// The cache cleanup settings of the top-level groups that changed them, by group path:
    /// `(path, ttl_enabled, ttl_days)`. Every other group has the defaults.
    pub async fn dependency_proxy_ttl_policies(
        &self,
    ) -> Result<Vec<(String, bool, i64)>, MetaError> {
        let rows = sqlx::query(
            "SELECT n.full_path, s.ttl_enabled, s.ttl_days FROM dependency_proxy_settings s \
             JOIN namespaces n ON n.id = s.namespace_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("full_path"), get_i64(r, "ttl_enabled") != 0, get_i64(r, "ttl_days")))
            .collect())
    }

    /// Cached manifests last pulled before `before`, oldest first, after `after` (the last
    /// one of the previous page: `(last_used_at, repository, reference)`), at most `limit`:
    /// the cache cleanup's candidates, without their payloads.
    pub async fn unused_proxy_manifests(
        &self,
        before: i64,
        after: Option<&ProxyManifest>,
        limit: i64,
    ) -> Result<Vec<ProxyManifest>, MetaError> {
        let (used, repository, reference) = match after {
            Some(m) => (m.last_used_at, m.repository.as_str(), m.reference.as_str()),
            None => (i64::MIN, "", ""),
        };
        let rows = sqlx::query(
            "SELECT repository, reference, digest, media_type, validated_at, last_used_at \
             FROM dependency_proxy_manifests WHERE last_used_at < $1 \
             AND (last_used_at > $2 OR (last_used_at = $2 AND (repository > $3 \
                  OR (repository = $3 AND reference > $4)))) \
             ORDER BY last_used_at, repository, reference LIMIT $5",
        )
        .bind(before)
        .bind(used)
        .bind(repository)
        .bind(reference)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| ProxyManifest {
                repository: row.get("repository"),
                reference: row.get("reference"),
                digest: row.get("digest"),
                media_type: row.get("media_type"),
                payload: Vec::new(),
                validated_at: get_i64(row, "validated_at"),
                last_used_at: get_i64(row, "last_used_at"),
            })
            .collect())
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

    /// Forgets the manifest cached for `reference` of `repo` if it was not pulled since
    /// `before` (a pull in the meantime keeps it). `true`: it was forgotten.
    pub async fn delete_unused_proxy_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        before: i64,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "DELETE FROM dependency_proxy_manifests \
             WHERE repository = $1 AND reference = $2 AND last_used_at < $3",
        )
        .bind(repo)
        .bind(reference)
        .bind(before)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;

    fn record(repository: &str, reference: &str, last_used_at: i64) -> ProxyManifest {
        ProxyManifest {
            repository: repository.into(),
            reference: reference.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            payload: b"{}".to_vec(),
            validated_at: last_used_at,
            last_used_at,
        }
    }

    /// The cleanup's candidates come in pages that together hold every unused record once,
    /// ties on `last_used_at` included; a record pulled meanwhile is not forgotten.
    async fn unused_records_page_and_stay_when_pulled(backend: crate::Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let mut w = store.write_tx().await.unwrap();
        let mut expected = Vec::new();
        for (i, repo) in ["g/dependency_proxy/containers/a", "g/dependency_proxy/containers/b"]
            .iter()
            .enumerate()
        {
            for (j, reference) in ["1", "2", "latest"].iter().enumerate() {
                // Ties: two records per timestamp.
                let used = 1_000 + ((i * 3 + j) as i64 / 2);
                w.put_proxy_manifest(&record(repo, reference, used)).await.unwrap();
                expected.push((repo.to_string(), reference.to_string()));
            }
        }
        w.put_proxy_manifest(&record("g/dependency_proxy/containers/c", "new", 5_000))
            .await
            .unwrap();
        w.commit().await.unwrap();

        let mut seen = Vec::new();
        let mut after: Option<ProxyManifest> = None;
        loop {
            let page = store.unused_proxy_manifests(2_000, after.as_ref(), 2).await.unwrap();
            assert!(page.len() <= 2);
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            seen.extend(page.into_iter().map(|m| (m.repository, m.reference)));
        }
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);

        let repo: RepositoryName = "g/dependency_proxy/containers/a".parse().unwrap();
        store.touch_proxy_manifest(&repo, "1", 1_000_000).await.unwrap();
        let mut w = store.write_tx().await.unwrap();
        assert!(!w.delete_unused_proxy_manifest(repo.as_str(), "1", 2_000).await.unwrap());
        assert!(w.delete_unused_proxy_manifest(repo.as_str(), "2", 2_000).await.unwrap());
        w.commit().await.unwrap();
        let left: Vec<String> =
            store.proxy_manifests(&repo).await.unwrap().into_iter().map(|m| m.reference).collect();
        assert_eq!(left, vec!["1".to_string(), "latest".to_string()]);
        db.drop_database().await;
    }

    mod sqlite {
        #[tokio::test]
        async fn unused_records_page_and_stay_when_pulled() {
            super::unused_records_page_and_stay_when_pulled(crate::Backend::Sqlite).await
        }
    }

    mod postgres {
        #[tokio::test]
        async fn unused_records_page_and_stay_when_pulled() {
            super::unused_records_page_and_stay_when_pulled(crate::Backend::Postgres).await
        }
    }
}
