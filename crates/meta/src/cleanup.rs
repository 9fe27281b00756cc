//! Cleanup policies: one per project, with the progress of its current or last run, and the
//! queries a run needs (a project's repositories, a repository's tags by published time).
//! Which tags a policy deletes is decided by the API crate's `cleanup` module.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};
use crate::{now_millis, path_prefixes, Project};

/// A project's cleanup policy as stored. Option strings are GitLab's (`cadence` `1d`…,
/// `older_than` `7d`…); the API validates them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub project_id: i64,
    pub enabled: bool,
    pub cadence: String,
    pub keep_n: Option<i64>,
    pub older_than: Option<String>,
    pub name_regex: Option<String>,
    pub name_regex_keep: Option<String>,
    pub next_run_at: Option<i64>,
    /// `unscheduled`, `scheduled`, `unfinished` (stopped by its budget; resumes) or `finished`.
    pub run_status: String,
    /// The repository an unfinished run stopped in.
    pub run_cursor: Option<String>,
    pub run_started_at: Option<i64>,
    /// Tags removed so far by the current (unfinished) run.
    pub run_removed: i64,
    pub last_run_at: Option<i64>,
    pub last_run_removed: Option<i64>,
    pub last_run_status: Option<String>,
}

impl CleanupPolicy {
    /// GitLab's defaults for a project that never saved a policy.
    pub fn default_for(project_id: i64) -> CleanupPolicy {
        CleanupPolicy {
            project_id,
            enabled: false,
            cadence: "1d".into(),
            keep_n: Some(10),
            older_than: Some("90d".into()),
            name_regex: Some(".*".into()),
            name_regex_keep: None,
            next_run_at: None,
            run_status: "unscheduled".into(),
            run_cursor: None,
            run_started_at: None,
            run_removed: 0,
            last_run_at: None,
            last_run_removed: None,
            last_run_status: None,
        }
    }
}

/// A tag with the time it was last pushed or moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedTag {
    pub name: String,
    pub published_at: i64,
}

fn policy_from_row(r: &AnyRow) -> CleanupPolicy {
    CleanupPolicy {
        project_id: get_i64(r, "project_id"),
        enabled: get_i64(r, "enabled") != 0,
        cadence: r.get("cadence"),
        keep_n: r.get::<Option<i64>, _>("keep_n"),
        older_than: r.get("older_than"),
        name_regex: r.get("name_regex"),
        name_regex_keep: r.get("name_regex_keep"),
        next_run_at: r.get::<Option<i64>, _>("next_run_at"),
        run_status: r.get("run_status"),
        run_cursor: r.get("run_cursor"),
        run_started_at: r.get::<Option<i64>, _>("run_started_at"),
        run_removed: get_i64(r, "run_removed"),
        last_run_at: r.get::<Option<i64>, _>("last_run_at"),
        last_run_removed: r.get::<Option<i64>, _>("last_run_removed"),
        last_run_status: r.get("last_run_status"),
    }
}

impl Store {
    pub async fn cleanup_policy(
        &self,
        project_id: i64,
    ) -> Result<Option<CleanupPolicy>, MetaError> {
        let row = sqlx::query("SELECT * FROM cleanup_policies WHERE project_id = $1")
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(policy_from_row))
    }

    /// Creates or replaces a project's policy, settings and run state alike.
    pub async fn save_cleanup_policy(&self, p: &CleanupPolicy) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query("DELETE FROM cleanup_policies WHERE project_id = $1")
            .bind(p.project_id)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query(
            "INSERT INTO cleanup_policies (project_id, enabled, cadence, keep_n, older_than, \
             name_regex, name_regex_keep, next_run_at, run_status, run_cursor, run_started_at, \
             run_removed, last_run_at, last_run_removed, last_run_status, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(p.project_id)
        .bind(i64::from(p.enabled))
        .bind(&p.cadence)
        .bind(p.keep_n)
        .bind(p.older_than.as_deref())
        .bind(p.name_regex.as_deref())
        .bind(p.name_regex_keep.as_deref())
        .bind(p.next_run_at)
        .bind(&p.run_status)
        .bind(p.run_cursor.as_deref())
        .bind(p.run_started_at)
        .bind(p.run_removed)
        .bind(p.last_run_at)
        .bind(p.last_run_removed)
        .bind(p.last_run_status.as_deref())
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(())
    }

    /// Enabled policies whose next run is due at `now`, and runs that stopped unfinished.
    pub async fn due_cleanup_policies(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<CleanupPolicy>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM cleanup_policies WHERE enabled = 1 AND \
             (run_status = 'unfinished' OR next_run_at <= $1) \
             ORDER BY next_run_at, project_id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(policy_from_row).collect())
    }

    /// Names of the repositories of `project` (its path and below, not those of a project
    /// nested deeper), in name order, starting at `from` when given.
    pub async fn project_repository_names(
        &self,
        project: &Project,
        from: Option<&str>,
    ) -> Result<Vec<String>, MetaError> {
        // `path/` .. `path0` is every name below `path/` ('0' follows '/').
        let below = format!("{}/", project.full_path);
        let end = format!("{}0", project.full_path);
        let rows = sqlx::query(
            "SELECT name FROM repositories WHERE (name = $1 OR (name >= $2 AND name < $3)) \
             AND name >= $4 ORDER BY name",
        )
        .bind(&project.full_path)
        .bind(&below)
        .bind(&end)
        .bind(from.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.get("name");
            let owner = self.longest_project_match(&path_prefixes(&name)).await?;
            if owner.is_some_and(|o| o.id == project.id) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every tag of repository `name`, newest published first, ties by name.
    pub async fn published_tags(&self, name: &str) -> Result<Vec<PublishedTag>, MetaError> {
        let rows = sqlx::query(
            "SELECT t.name, t.updated_at FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 ORDER BY t.updated_at DESC, t.name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PublishedTag { name: r.get("name"), published_at: get_i64(r, "updated_at") })
            .collect())
    }
}
