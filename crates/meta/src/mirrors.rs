//! Pull mirrors: which upstream repository a project follows, when it is synced next, and
//! what each run did (migration 0016).

use sqlx::Row;

use crate::store::get_i64;
use crate::{now_millis, MetaError, Store};

/// A project's pull mirror of one upstream repository.
#[derive(Clone, Debug)]
pub struct RegistryMirror {
    pub id: i64,
    pub project_id: i64,
    /// `http(s)://registry/<repository>`.
    pub upstream: String,
    /// The repository here the tags are copied to.
    pub destination: String,
    pub tag_filter: Option<String>,
    pub interval_ms: i64,
    pub next_run_at: i64,
    pub created_at: i64,
}

/// What one sync of a mirror did.
#[derive(Clone, Debug, Default)]
pub struct MirrorRun {
    pub id: i64,
    pub mirror_id: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub tags_added: i64,
    pub tags_moved: i64,
    pub tags_unchanged: i64,
    pub tags_failed: i64,
    pub bytes: i64,
    /// Why the run failed as a whole, or the failures of single tags.
    pub error: Option<String>,
}

const MIRROR_COLUMNS: &str =
    "id, project_id, upstream, destination, tag_filter, interval_ms, next_run_at, created_at";

fn mirror_from_row(row: &sqlx::any::AnyRow) -> RegistryMirror {
    RegistryMirror {
        id: get_i64(row, "id"),
        project_id: get_i64(row, "project_id"),
        upstream: row.get("upstream"),
        destination: row.get("destination"),
        tag_filter: row.get("tag_filter"),
        interval_ms: get_i64(row, "interval_ms"),
        next_run_at: get_i64(row, "next_run_at"),
        created_at: get_i64(row, "created_at"),
    }
}

fn run_from_row(row: &sqlx::any::AnyRow) -> MirrorRun {
    MirrorRun {
        id: get_i64(row, "id"),
        mirror_id: get_i64(row, "mirror_id"),
        started_at: get_i64(row, "started_at"),
        finished_at: get_i64(row, "finished_at"),
        tags_added: get_i64(row, "tags_added"),
        tags_moved: get_i64(row, "tags_moved"),
        tags_unchanged: get_i64(row, "tags_unchanged"),
        tags_failed: get_i64(row, "tags_failed"),
        bytes: get_i64(row, "bytes"),
        error: row.get("error"),
    }
}

impl Store {
    /// Adds a mirror, due at once.
    pub async fn create_registry_mirror(
        &self,
        project_id: i64,
        upstream: &str,
        destination: &str,
        tag_filter: Option<&str>,
        interval_ms: i64,
    ) -> Result<RegistryMirror, MetaError> {
        let now = now_millis();
        let mut w = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO registry_mirrors (project_id, upstream, destination, tag_filter, \
             interval_ms, next_run_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(project_id)
        .bind(upstream)
        .bind(destination)
        .bind(tag_filter)
        .bind(interval_ms)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *w.tx)
        .await?;
        let id = get_i64(&row, "id");
        w.commit().await?;
        self.registry_mirror(project_id, id).await?.ok_or(MetaError::NotFound("registry mirror"))
    }

    pub async fn registry_mirror(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<Option<RegistryMirror>, MetaError> {
        let sql = format!(
            "SELECT {MIRROR_COLUMNS} FROM registry_mirrors WHERE id = $1 AND project_id = $2"
        );
        let row = sqlx::query(&sql).bind(id).bind(project_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(mirror_from_row))
    }

    pub async fn registry_mirrors(
        &self,
        project_id: i64,
    ) -> Result<Vec<RegistryMirror>, MetaError> {
        let sql = format!(
            "SELECT {MIRROR_COLUMNS} FROM registry_mirrors WHERE project_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(&sql).bind(project_id).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(mirror_from_row).collect())
    }

    /// Deletes a mirror and its runs; `false` when there was none.
    pub async fn delete_registry_mirror(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM registry_mirror_runs WHERE mirror_id = $1 AND mirror_id IN \
                     (SELECT id FROM registry_mirrors WHERE project_id = $2)",
        )
        .bind(id)
        .bind(project_id)
        .execute(&mut *w.tx)
        .await?;
        let done = sqlx::query("DELETE FROM registry_mirrors WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Mirrors due at `now`, the longest waiting first.
    pub async fn due_registry_mirrors(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RegistryMirror>, MetaError> {
        let sql = format!(
            "SELECT {MIRROR_COLUMNS} FROM registry_mirrors WHERE next_run_at <= $1 \
             ORDER BY next_run_at, id LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(mirror_from_row).collect())
    }

    /// Records a finished run and when the mirror is due next.
    pub async fn record_mirror_run(
        &self,
        run: &MirrorRun,
        next_run_at: i64,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO registry_mirror_runs (mirror_id, started_at, finished_at, tags_added, \
             tags_moved, tags_unchanged, tags_failed, bytes, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(run.mirror_id)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.tags_added)
        .bind(run.tags_moved)
        .bind(run.tags_unchanged)
        .bind(run.tags_failed)
        .bind(run.bytes)
        .bind(run.error.as_deref())
        .execute(&mut *w.tx)
        .await?;
        sqlx::query("UPDATE registry_mirrors SET next_run_at = $1 WHERE id = $2")
            .bind(next_run_at)
            .bind(run.mirror_id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    /// A mirror's runs, newest first.
    pub async fn mirror_runs(
        &self,
        mirror_id: i64,
        limit: i64,
    ) -> Result<Vec<MirrorRun>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, mirror_id, started_at, finished_at, tags_added, tags_moved, \
             tags_unchanged, tags_failed, bytes, error FROM registry_mirror_runs \
             WHERE mirror_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(mirror_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_from_row).collect())
    }
}
